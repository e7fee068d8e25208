"""The paper's Table-3 ablation on the synthetic benchmark (Sec. 4.2, 4.3).

For each seed: one stage-1 run (phases a, b, c), shared by every setting;
the baseline is that stage-1 model (labelled images only); setup 1 is
stage 2 with `t_train = 0` (pseudo labels = plain prediction refined by the
given tags); DIS settings are stage 2 with `t_train` in e.g. {5, 10, 30}.
Every model is scored on val at every `t_test` in one backbone pass per
image, together with the ensemble of the DIS settings (averaged refined
probabilities). Pseudo-label quality (mIoU against the generator's truth) of
the stage-1 model at each `t_train`, and tag precision / recall / F1 of the
noisy input tags vs the cleaned tags of each model, come from training-mode
latent inference on the weak training images.

`write_results` renders everything to a Markdown page whose every number
comes from the run.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import time

from absl import logging
import numpy as np

from dis_tf import atomic
from dis_tf import diagnosis
from dis_tf import errors
from dis_tf import evaluation
from dis_tf import reports
from dis_tf import selection
from dis_tf import served_labelmap
from dis_tf import tag_cleaning
from dis_tf import training
from dis_tf.classes import VOC_CLASSES
from dis_tf.data import pipeline
from dis_tf.data import web_tags
from dis_tf.modeling import dis_model


@dataclasses.dataclass
class AblationPlan:
  """What to run.

  Attributes:
    seeds: training seeds (stage 1 is trained once per seed).
    t_trains: stage-2 latent steps of the DIS settings (0 = setup 1 is
      always added).
    t_tests: evaluation latent steps.
    eval_limit: score at most this many images of the reported split
      (`config.data.eval_split`; None = all).
    select_limit: at most this many images of the selection split
      (`config.data.select_split`, where t_test and the best t_train are
      chosen; None = all).
    weak_limit: weak images used for pseudo-label / tag-cleaning scores.
    diagnosis_images: selection-split images for `dis_tf.diagnosis` (0 =
      no diagnosis).
  """

  seeds: tuple = (0, 1, 2, 3, 4)
  t_trains: tuple = (5, 10, 30)
  t_tests: tuple = (0, 10, 30)
  eval_limit: int = None
  select_limit: int = None
  weak_limit: int = 150
  diagnosis_images: int = 100


SCORES_FILENAME = "scores.json"


def setting_names(plan):
  return ["baseline", "setup1 (t_train=0)"] + [
      f"DIS t_train={t}" for t in plan.t_trains]


def _train_setting(base_config, seed_dir, name, t_train):
  """Stage 2 from the seed's stage-1 weights; returns the model."""
  config = dataclasses.replace(
      base_config,
      latent=dataclasses.replace(base_config.latent, t_train=t_train),
      model_dir=os.path.join(seed_dir, name))
  stage1 = os.path.join(seed_dir, "stage1", "checkpoints", "phase_c.weights.h5")
  target = os.path.join(config.model_dir, "checkpoints", "phase_c.weights.h5")
  if not os.path.exists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(stage1, target)
  return training.train(config, "semi", verbose=0)


def run_seed(base_config, workdir, seed, plan):
  """Trains and scores every setting of one seed.

  Args:
    base_config: the synthetic `ExperimentConfig` (data paths set).
    workdir: ablation directory; the seed writes to workdir/seed_<seed>.
    seed: the training seed.
    plan: an `AblationPlan`.

  Returns:
    A JSON-able dict of this seed's results, also written to
    workdir/seed_<seed>/scores.json; a restarted run (same workdir) reuses
    that file when it was scored with the same plan. Training resumes
    through each model_dir's checkpoints and backup, so a killed run loses
    at most the unfinished scoring of one seed.
  """
  seed_dir = os.path.join(workdir, f"seed_{seed}")
  scores_path = os.path.join(seed_dir, SCORES_FILENAME)
  saved = _load_seed_scores(scores_path, plan, base_config)
  if saved is not None:
    print(f"[seed {seed}] already scored: {scores_path}", flush=True)
    return saved
  config = dataclasses.replace(
      base_config, train=dataclasses.replace(base_config.train, seed=seed),
      model_dir=os.path.join(seed_dir, "stage1"))
  start = time.time()
  parts = {}

  @contextlib.contextmanager
  def part(label):
    """Prints the part, then its wall time (kept in scores.json)."""
    print(f"[seed {seed}] {label}", flush=True)
    begin = time.time()
    yield
    parts[label] = time.time() - begin
    print(f"[seed {seed}] {label}: {parts[label]:.0f} s", flush=True)

  with part("stage 1 (phases a, b, c)"):
    models = {"baseline": training.train(config, "full", verbose=0)}
  for t_train in (0,) + tuple(plan.t_trains):
    name = "setup1 (t_train=0)" if t_train == 0 else f"DIS t_train={t_train}"
    with part(f"stage 2, {name}"):
      models[name] = _train_setting(config, seed_dir, f"t_train_{t_train}",
                                    t_train)

  if not config.data.select_split:
    raise errors.UserError(
        "The ablation chooses t_test and the best t_train on "
        "config.data.select_split, which is not set.")
  dis_names = [f"DIS t_train={t}" for t in plan.t_trains]
  num_classes = config.model.num_classes
  grids, matrices = {}, None
  for key, split, limit in (("select", config.data.select_split,
                             plan.select_limit),
                            ("val", config.data.eval_split, plan.eval_limit)):
    with part(f"scoring {split}"):
      # One pass scores every final prediction (refinement) at every t.
      grids[key], images = served_labelmap.score_grid(
          models, pipeline.eval_dataset(config, split), plan.t_tests,
          dis_names, limit=limit, num_classes=num_classes,
          per_image=key == "select")
      matrices = matrices or images
  served = served_labelmap.decisions(matrices)
  with part("scoring the served setting through the serving module"):
    names = [evaluation.example_file_name(ex, i) for i, ex in enumerate(
        pipeline.eval_dataset(config, config.data.eval_split))]
    names = names[:plan.eval_limit]
    for name in dis_names:
      served[name]["export_miou"] = served_labelmap.score_through_export(
          models[name], config, names, served[name])
  # The Table-3 rows are the paper's final prediction (tag-refined).
  scores = {key: {name: grid["paper"] for name, grid in grids[key].items()}
            for key in grids}
  with part("pseudo labels and tag cleaning on weak images"):
    weak = weak_scores(models, config, seed_dir, (0,) + tuple(plan.t_trains),
                       plan.weak_limit)
  result = {"seed": seed, "select": scores["select"], "val": scores["val"],
            "weak": weak, "refine": grids, "served": served}
  if plan.diagnosis_images:
    with part("diagnosis of the latent steps"):
      result["diagnosis"] = {
          name: diagnosis.diagnose(
              models[name],
              pipeline.eval_dataset(config, config.data.select_split).take(
                  plan.diagnosis_images),
              t_test=max(plan.t_tests), num_classes=num_classes)
          for name in ["baseline"] + dis_names}
      result["classifier_tags"] = diagnosis.tag_classifier_scores(
          models["baseline"],
          pipeline.weak_eval_dataset(config).take(plan.weak_limit),
          web_tags.load_weak_truth(config.data.weak_dir, load_masks=False),
          tag_threshold=config.latent.tag_threshold)
  result["part_seconds"] = parts
  result["seconds"] = time.time() - start
  atomic.write_text(scores_path, json.dumps(
      {"scoring": _scoring_plan(plan, config), "result": result}))
  return result


def _scoring_plan(plan, config):
  """What a seed's scores depend on besides training (not the seed list)."""
  return {"t_trains": list(plan.t_trains), "t_tests": list(plan.t_tests),
          "eval_limit": plan.eval_limit, "select_limit": plan.select_limit,
          "weak_limit": plan.weak_limit,
          "diagnosis_images": plan.diagnosis_images,
          "eval_split": config.data.eval_split,
          "select_split": config.data.select_split,
          "latent": dataclasses.asdict(config.latent)}


def _load_seed_scores(path, plan, config):
  """A seed's saved result if it was scored with `plan`, else None."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    scoring, result = saved["scoring"], saved["result"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UserError(
        f"{path}: unreadable per-seed scores ({e!r}); delete "
        "it to re-score this seed.") from e
  if scoring != _scoring_plan(plan, config):
    print(f"{path} was scored with {scoring}, not "
          f"{_scoring_plan(plan, config)}; "
          "re-scoring.", flush=True)
    return None
  return result


def weak_scores(models, config, seed_dir, t_trains, limit):
  """Pseudo-label mIoU vs t_train (stage-1 model) and tag cleaning.

  The stage-1 model's pseudo labels are scored twice per t_train: with the
  latent objective of Eq. (1) (image + tag terms) and with the tag term
  alone (image_weight 0), which shows what the reconstruction term adds.

  Args:
    models: {name: DISModel}; "baseline" is the stage-1 model.
    config: the seed's config (data paths).
    seed_dir: where the per-setting outputs go.
    t_trains: t_train values for the pseudo-label curve.
    limit: weak images to use.

  Returns:
    {"pseudo_label_miou": {t_train: mIoU}, "pseudo_label_miou_tags_only":
    {t_train: mIoU}, "stage1_tags": {t_train: scores}, "tags": {name:
    {"before", "after"}}}.
  """
  truth = web_tags.load_weak_truth(config.data.weak_dir)
  stage1 = models["baseline"]
  tags_only = dis_model.DISModel.from_config(
      dict(stage1.get_config(), image_weight=0.0))
  tags_only.set_weights(stage1.get_weights())
  out = {"pseudo_label_miou": {}, "pseudo_label_miou_tags_only": {},
         "stage1_tags": {}, "tags": {}}

  def clean(model, name, t_train):
    return tag_cleaning.clean_tags(
        model, pipeline.weak_eval_dataset(config),
        os.path.join(seed_dir, "weak", name), t_train,
        tag_threshold=config.latent.tag_threshold, truth=truth, limit=limit,
        log_every=10 ** 9)

  for t_train in t_trains:
    report = clean(stage1, f"stage1_t{t_train}", t_train)
    out["pseudo_label_miou"][str(t_train)] = report["labelmap"]["mean_iou"]
    out["stage1_tags"][str(t_train)] = report["after"]
    if t_train == max(t_trains):
      out["tags"]["baseline"] = {"before": report["before"],
                                 "after": report["after"]}
    report = clean(tags_only, f"stage1_tags_only_t{t_train}", t_train)
    out["pseudo_label_miou_tags_only"][str(t_train)] = (
        report["labelmap"]["mean_iou"])
  for name, model in models.items():
    if name == "baseline":
      continue
    t_train = 0 if name.startswith("setup1") else int(name.split("=")[1])
    report = clean(model, name.replace(" ", "_"), t_train)
    out["tags"][name] = {"before": report["before"], "after": report["after"]}
  return out


# --------------------------------------------------------------- reporting
def load_results(path):
  """Reads a results JSON written by `write_results`.

  Returns:
    (seed_results, plan, command, generator_params, config dict or None).
  """
  with open(path) as f:
    saved = json.load(f)
  try:
    plan = AblationPlan(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in saved["plan"].items()})
    return (saved["seeds"], plan, saved["command"], saved["generator"],
            saved.get("config"))
  except (KeyError, TypeError) as e:
    raise errors.UserError(f"{path}: not a results JSON of tools/ablation.py "
                           f"({e!r}).") from e


def _mean_std(values):
  values = np.asarray(values, dtype=np.float64)
  return float(np.nanmean(values)), float(np.nanstd(values))


def _miou(per_class):
  values = np.asarray([np.nan if v is None else v for v in per_class],
                      dtype=np.float64)
  return float(np.nanmean(values)), values


def miou_table(seed_results, plan, split="val"):
  """{(row, t): per-seed mIoU, its mean / std and per-class means}."""
  rows = {}
  for name in setting_names(plan) + ["ensemble"]:
    for t in plan.t_tests:
      mious, per_class = zip(*[_miou(r[split][name][str(t)])
                               for r in seed_results])
      rows[(name, t)] = {
          "miou": _mean_std(mious),
          "per_seed": np.asarray(mious),
          "per_class": np.nanmean(np.stack(per_class), axis=0),
      }
  return rows


def validated(seed_results, plan):
  """Each row's t_test per seed, chosen on the selection split.

  Returns:
    {row: {"t": [t per seed], "per_seed": [reported mIoU at that t],
    "select": [selection mIoU at that t]}}, and the best DIS t_train
    (highest mean selection mIoU at the validated t_test).
  """
  out = {}
  for name in setting_names(plan) + ["ensemble"]:
    chosen, reported, selected = [], [], []
    for r in seed_results:
      scores = {t: _miou(r["select"][name][str(t)])[0] for t in plan.t_tests}
      t = selection.choose_t_test(scores)
      chosen.append(t)
      selected.append(scores[t])
      reported.append(_miou(r["val"][name][str(t)])[0])
    out[name] = {"t": chosen, "per_seed": np.asarray(reported),
                 "select": np.asarray(selected)}
  best = max(plan.t_trains,
             key=lambda t: out[f"DIS t_train={t}"]["select"].mean())
  return out, best


def paired(a, b):
  """Per-seed a - b as 'mean ± std, ahead in k of n seeds (k' behind)'."""
  d = 100.0 * (np.asarray(a) - np.asarray(b))
  # Signs as printed (0.1 mIoU): a rescored identical model differs by
  # float noise, which would otherwise count as ahead or behind.
  shown = np.round(d, 1)
  return (f"{d.mean():+.1f} ± {d.std():.1f} paired per seed, ahead in "
          f"{int(np.sum(shown > 0))} of {d.size} seeds, behind in "
          f"{int(np.sum(shown < 0))} (per seed: "
          + ", ".join(f"{x:+.1f}" for x in d) + ")")


def targets(rows, chosen, best_t_train, seed_results, plan, minutes):
  """The issue's targets, each with its numbers and met / missed."""
  pct = lambda x: 100.0 * x
  t0, t_max = min(plan.t_tests), max(plan.t_tests)
  best = f"DIS t_train={best_t_train}"
  lines = []

  def status(ok):
    return "**met**" if ok else "**missed**"

  d = chosen[best]["per_seed"] - rows[(best, t0)]["per_seed"]
  lines.append(
      f"1. Exported DIS model ({best}, chosen on the selection split) at its "
      f"validated t_test (per seed {chosen[best]['t']}) vs t_test={t0}: "
      f"{paired(chosen[best]['per_seed'], rows[(best, t0)]['per_seed'])}. "
      "Target: >= 0 in every seed and >= +1 on average: "
      f"{status(np.all(d >= 0) and d.mean() >= 0.01)}.")
  parts = []
  for t_train in plan.t_trains:
    name = f"DIS t_train={t_train}"
    parts.append(f"{name}: " + paired(rows[(name, t_max)]["per_seed"],
                                      rows[(name, t0)]["per_seed"]))
  d = rows[(best, t_max)]["per_seed"] - rows[(best, t0)]["per_seed"]
  lines.append(
      f"2. t_test={t_max} vs t_test={t0}: " + "; ".join(parts) +
      f". Target (exported model): no worse on average: "
      f"{status(d.mean() >= 0)}.")
  weak = [r["weak"] for r in seed_results]
  parts, ok = [], True
  for t in plan.t_trains:
    both = np.asarray([w["pseudo_label_miou"][str(t)] for w in weak])
    tags = np.asarray([w["pseudo_label_miou_tags_only"][str(t)]
                       for w in weak])
    ok = ok and both.mean() >= tags.mean()
    parts.append(f"t_train={t}: {pct(both.mean()):.1f} vs "
                 f"{pct(tags.mean()):.1f}, {paired(both, tags)}")
  lines.append(
      "3. Pseudo labels of the stage-1 model, image + tag objective vs tag "
      "term alone: " + "; ".join(parts) + f". Target: >=: {status(ok)}.")
  parts, ok = [], True
  for t in plan.t_trains:
    name = f"DIS t_train={t}"
    before = np.asarray([w["tags"][name]["before"]["f1"] for w in weak])
    after = np.asarray([w["tags"][name]["after"]["f1"] for w in weak])
    ok = ok and (after - before).mean() >= 0.05
    parts.append(f"{name}: {pct(before.mean()):.1f} -> "
                 f"{pct(after.mean()):.1f}")
  lines.append("4. Cleaned-tag F1 vs noisy-tag F1 (the given tags): " +
               "; ".join(parts) + f". Target: +5: {status(ok)}.")
  setup1 = "setup1 (t_train=0)"
  d = chosen[best]["per_seed"] - chosen[setup1]["per_seed"]
  lines.append(
      f"5. Best DIS vs setup 1, each at its validated t_test: "
      f"{paired(chosen[best]['per_seed'], chosen[setup1]['per_seed'])}. "
      f"Target: >= +2 and ahead in every seed: "
      f"{status(d.mean() >= 0.02 and np.all(d > 0))}.")
  d = chosen["ensemble"]["per_seed"] - chosen[best]["per_seed"]
  if len(plan.t_trains) < 2:
    # One DIS setting: the "ensemble" is that model, equal by construction.
    lines.append(
        "6. Ensemble of the DIS settings vs the best single: **not "
        f"measured**: this run has one DIS setting (t_train "
        f"{list(plan.t_trains)}), so the ensemble is that model.")
  else:
    ensemble_vs_best = paired(chosen["ensemble"]["per_seed"],
                              chosen[best]["per_seed"])
    # Why an ensemble can lose to its best member: averaging gains over the
    # members' mean, but a weaker member pulls towards its own level.
    members = np.mean([chosen[f"DIS t_train={t}"]["per_seed"]
                       for t in plan.t_trains], axis=0)
    others = [f"DIS t_train={t}" for t in plan.t_trains
              if t != best_t_train]
    gaps = "; ".join(
        f"{best} minus {name}: "
        + paired(chosen[best]["per_seed"], chosen[name]["per_seed"])
        for name in others)
    lines.append(
        f"6. Ensemble of the DIS settings vs the best single, each at its "
        f"validated t_test: {ensemble_vs_best}. "
        f"Target: >=: {status(d.mean() >= 0)}. The ensemble vs the mean of "
        f"its members: {paired(chosen['ensemble']['per_seed'], members)}; "
        f"the members' gap: {gaps}." + (
            "" if d.mean() >= 0 else
            " Averaging beats the best member only where it adds more than "
            "the best member's lead over the members' mean; members of "
            "comparable accuracy whose "
            "errors differ (e.g. the best t_train trained from several "
            "seeds) would be needed, which this run does not measure."))
  base = rows[("baseline", t0)]
  lines.append(
      f"7. Baseline across-seed std: {pct(base['miou'][1]):.1f} mIoU "
      f"(per seed " + ", ".join(f"{pct(x):.1f}" for x in base["per_seed"])
      + f"). Target <= 5: {status(base['miou'][1] <= 0.05)}.")
  lines.append(f"8. Training and scoring time: {minutes:.1f} min for "
               f"{len(seed_results)} seeds on this machine.")
  return "\n".join(lines)


def reading(seed_results, plan, latent):
  """What the numbers say about the mechanism (every number computed)."""
  if not all("diagnosis" in r for r in seed_results):
    return "(needs the diagnosis: --diagnosis_images > 0)"
  pct = lambda x: 100.0 * x
  mean = lambda f: float(np.mean([f(r) for r in seed_results]))
  name = f"DIS t_train={max(plan.t_trains)}"
  diag = lambda r: r["diagnosis"][name]
  t = diag(seed_results[0])["t_test"]
  miou = lambda key: mean(lambda r: diag(r)["miou"][key])
  rec = lambda key: mean(lambda r: diag(r)["reconstruction"][key])
  flip = lambda rel, o: pct(mean(lambda r: diag(r)["flips"][rel][o]))
  lines = [
      f"* *Test-time steps* ({name}, selection split, mIoU at t=0 "
      f"{pct(miou('t0')):.1f}): after {t} steps of the paper's step "
      f"{pct(miou('both')):.1f}, with v1 frozen {pct(miou('u1')):.1f}, with "
      f"the per-pixel v1 step {pct(miou('per_pixel')):.1f}. v1 takes "
      f"{pct(mean(lambda r: diag(r)['v1_share']['median'])):.0f}% of the "
      "squared step norm and moves every pixel's class scores at once; the "
      "step-size sweep shows the paper's step at the edge of stability "
      "(larger steps raise the objective). Taking that direction out of the "
      "step is what turns the test-time steps from a loss into a gain.",
      f"* *What subnet-2 decodes* ({name}): reconstruction error "
      f"{rec('soft_t0'):.0f} from the soft prediction, "
      f"{rec('argmax_t0'):.0f} from its one-hot argmax, "
      f"{rec('truth'):.0f} from the ground truth, which beats the argmax in "
      f"{pct(rec('truth_beats_argmax_t0')):.0f}% of images. The labels carry "
      "a signal, but most of what the objective rewards is the soft mass, so "
      "the descent edits a colour code and the labels follow only in part.",
      "* *Where the flips go* (paper's step, % of flipped pixels): to or "
      f"from background {flip('background', 'fixed'):.0f} fixed / "
      f"{flip('background', 'broke'):.0f} broke; same-hue pairs "
      f"(c, c+-10) {flip('same_hue', 'fixed'):.0f} fixed / "
      f"{flip('same_hue', 'broke'):.0f} broke. A 1/8-scale reconstruction "
      "cannot tell same-hue classes apart; it can fix missed extent.",
  ]
  weak = [r["weak"] for r in seed_results]
  key = str(max(plan.t_trains))
  both = np.mean([w["pseudo_label_miou"][key] for w in weak])
  tags = np.mean([w["pseudo_label_miou_tags_only"][key] for w in weak])
  train_update = latent.get("train_update", "both")
  if train_update == "both":
    effect = ("In training mode the image term reaches v1 through the same "
              "dominant up(v1) path as at test time. These are the pseudo "
              "labels stage 2 starts from: it recomputes them with the "
              "model it trains, and `tools/pseudo_label_study.py` scores "
              "those of the trained models, per training-mode step "
              "(docs/results/train_update_per_pixel/PSEUDO_LABELS.md).")
  else:
    effect = (f"This run also uses the \"{train_update}\" rule in training "
              "mode (a departure from the paper), so the image term's step "
              "through v1 is rescaled there too.")
  lines.append(
      f"* *Pseudo labels* (stage-1 model, t_train={key}, training-mode step "
      f"\"{train_update}\" as configured): {pct(both):.1f} with the image + "
      f"tag objective vs {pct(tags):.1f} with the tag term alone. " + effect)
  if all("classifier_tags" in r for r in seed_results):
    alone = mean(lambda r: r["classifier_tags"]["classifier"]["f1"])
    given = mean(lambda r: r["classifier_tags"]["given"]["f1"])
    lines.append(
        f"* *Tag cleaning*: the stage-1 tag classifier alone reaches F1 "
        f"{pct(alone):.1f} against the given tags' {pct(given):.1f}. Cleaned "
        "tags start from the given tags and move towards the classifier, so "
        "they can gain only where the classifier is confidently right; with "
        "a classifier this far below the given tags the +5 target needs a "
        "better tag classifier (the paper's is a ResNet101 pretrained on "
        "ImageNet and COCO), not a different cleaning rule.")
  return "\n".join(lines)


def diagnosis_section(seed_results, plan):
  """Markdown tables of `dis_tf.diagnosis` (mean over seeds)."""
  if not all("diagnosis" in r for r in seed_results):
    return "(not run: --diagnosis_images=0)"
  names = list(seed_results[0]["diagnosis"])
  mean = lambda f: float(np.mean([f(r) for r in seed_results]))
  first = seed_results[0]["diagnosis"][names[0]]
  t = first["t_test"]
  out = [f"On {first['num_images']} selection-split images per seed, mean "
         f"over {len(seed_results)} seeds; steps at the model's step size "
         f"unless stated; mIoU after t = {t} steps.", ""]
  updates = [k for k in first["miou"] if k != "t0"]
  out.append("| model | v1 share of the step (median) | mIoU t=0 | "
             + " | ".join(f"t={t}, {u}" for u in updates) + " |")
  out.append("|---|---:|---:|" + "---:|" * len(updates))
  for name in names:
    cells = [mean(lambda r: r["diagnosis"][name]["v1_share"]["median"]),
             mean(lambda r: r["diagnosis"][name]["miou"]["t0"])]
    cells += [mean(lambda r, u=u: r["diagnosis"][name]["miou"][u])
              for u in updates]
    out.append(f"| {name} | " + " | ".join(f"{100 * c:.1f}" for c in cells)
               + " |")
  out += ["", f"Paired per seed, mIoU at t = {t} with each update minus "
          "both blocks at the one step size (the paper):"]
  for name in names:
    b = [r["diagnosis"][name]["miou"]["both"] for r in seed_results]
    for update in updates:
      if update == "both":
        continue
      a = [r["diagnosis"][name]["miou"][update] for r in seed_results]
      out.append(f"* {name}, {update}: {paired(a, b)}")
  out += ["", "Reconstruction error ||z3 - I||^2 per image when subnet-2 "
          "decodes: the soft prediction softmax(u3), its one-hot argmax, "
          "and the ground truth (class fractions per cell); 'truth wins' is "
          "the share of images where the truth reconstructs better than "
          "the t=0 argmax.", "",
          f"| model | soft t=0 | argmax t=0 | truth | soft t={t} | "
          f"argmax t={t} | truth wins |", "|---|---:|---:|---:|---:|---:|---:|"]
  for name in names:
    rec = lambda r, k: r["diagnosis"][name]["reconstruction"][k]
    cells = [mean(lambda r, k=k: rec(r, k)) for k in
             ("soft_t0", "argmax_t0", "truth", "soft_t", "argmax_t")]
    wins = mean(lambda r: rec(r, "truth_beats_argmax_t0"))
    out.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells)
               + f" | {100 * wins:.0f}% |")
  out += ["", f"Labelled pixels whose label the t = {t} steps (both blocks) "
          "change, by the relation of old and new class (generator hues) "
          "and outcome, as % of the flipped pixels:", "",
          "| model | flipped (% of pixels) | " + " | ".join(
              f"{rel} {o}" for rel in diagnosis.RELATIONS
              for o in diagnosis.OUTCOMES) + " |",
          "|---|---:|" + "---:|" * (len(diagnosis.RELATIONS)
                                    * len(diagnosis.OUTCOMES))]
  for name in names:
    cells = [mean(lambda r, rel=rel, o=o:
                  r["diagnosis"][name]["flips"][rel][o])
             for rel in diagnosis.RELATIONS for o in diagnosis.OUTCOMES]
    flipped = mean(lambda r: r["diagnosis"][name]["flipped"])
    out.append(f"| {name} | {100 * flipped:.1f} | " + " | ".join(
        f"{100 * c:.1f}" for c in cells) + " |")
  sweep = first["sweep"]
  out += ["", "Step size x count at a fixed product: mIoU at the end, and "
          "the objective relative to t=0 at 0%, 20%, ..., 100% of the steps:",
          "", "| model | step size x steps | mIoU | objective / objective(0) |",
          "|---|---|---:|---|"]
  for name in names:
    for i, entry in enumerate(sweep):
      miou = mean(lambda r, i=i: r["diagnosis"][name]["sweep"][i]["miou"])
      trace = np.mean([r["diagnosis"][name]["sweep"][i]["objective"]
                       for r in seed_results], axis=0)
      out.append(f"| {name} | {entry['step_size']:g} x {entry['steps']} | "
                 f"{100 * miou:.1f} | " + " ".join(
                     f"{v:.3f}" for v in trace[::2]) + " |")
  if all("classifier_tags" in r for r in seed_results):
    out += ["", "Tag classifier of the stage-1 model alone (test mode, no "
            "tags given, sigmoid(v3) > threshold) vs the given tags, against "
            "the true tags of the weak images:", "",
            "| tags | precision | recall | F1 |", "|---|---:|---:|---:|"]
    for key, label in (("classifier", "classifier alone"),
                       ("given", "given (noisy)")):
      cells = [mean(lambda r, k=k: r["classifier_tags"][key][k])
               for k in ("precision", "recall", "f1")]
      out.append(f"| {label} | " + " | ".join(f"{100 * c:.1f}"
                                              for c in cells) + " |")
  return "\n".join(out)


def departures(seed_results, plan, latent):
  """The run's departures from the paper, each with the measurement."""
  lines = []
  diag = [r.get("diagnosis") for r in seed_results]
  have = all(diag)
  if latent.get("update", "both") != "both":
    text = (f"1. *Test-time step* (`latent.update = "
            f"\"{latent.get('update')}\"`, `dis_tf/inference.py: "
            "block_scales`). The paper descends on (u1, v1) with one step "
            "size. Here the u3-path part of v1's gradient is divided by "
            "h * w: up(v1) adds v1 to every position of u2, so that "
            "gradient sums h * w per-position terms and dominates the step.")
    if have:
      names = list(diag[0])
      share = np.mean([d[n]["v1_share"]["median"] for d in diag
                       for n in names])
      sweep = {e["step_size"]: i for i, e in enumerate(diag[0][names[-1]]
                                                       ["sweep"])}
      rising = [f"{size:g}" for size, i in sorted(sweep.items())
                if np.mean([d[names[-1]]["sweep"][i]["objective"][-1]
                            for d in diag]) > 1.0]
      text += (f" Measured on this run's models: v1 carries "
               f"{100 * share:.0f}% of the squared step norm (median over "
               "images, mean over models and seeds)")
      if rising:
        text += (f", and plain steps of size {', '.join(rising)} raise the "
                 f"objective of {names[-1]} instead of lowering it")
      text += (". The choice was made on the selection split with one "
               "seed before this run; the diagnosis table re-measures every "
               "update mode per seed on the selection split, and the "
               "reported split never entered the choice.")
    lines.append(text)
  if latent.get("train_update", "both") != "both":
    lines.append(f"{len(lines) + 1}. *Training-mode step* (`latent."
                 f"train_update = \"{latent.get('train_update')}\"`): the "
                 "same rule for the pseudo labels and cleaned tags.")
  if latent.get("monotone"):
    lines.append(f"{len(lines) + 1}. *Monotone steps* (`latent.monotone`): "
                 "a step that raises the objective is not taken and the "
                 "step size halves.")
  if all("served" in r for r in seed_results):
    lines.append(
        f"{len(lines) + 1}. *Final prediction* (`latent.tag_refinement`, "
        "`dis_tf/modeling/subnets.py: refine_labelmap`). The paper always "
        "refines softmax(u3) by sigmoid(v3). Here the served prediction is "
        "chosen on the selection split among no refinement (the default), "
        "the paper's and two calibrated biases sigmoid(v3 + b), and a "
        "refinement serves only when it clears the bootstrap margin: the "
        "tag classifier trained here misses most present classes, and the "
        "section \"The served labelmap\" measures what the paper's "
        "refinement then costs.")
    lines.append(
        f"{len(lines) + 1}. *Evaluation canvas* (`dis_tf/image_ops.py: "
        "fit_to_canvas`): every image is fitted into the training crop "
        "size (long side resized, aspect kept, padded with the mean "
        "colour), the rule the export serves with; the paper does not say "
        "at which size it tests.")
  lines.append(
      f"{len(lines) + 1}. *Protocol, not method*: t_test and the best "
      "t_train are chosen on a split held out from the reported one (the "
      "paper reports Table 3 without saying where t_test was chosen).")
  return "\n".join(lines)


def plot_curves(rows, plan, path):
  """mIoU vs t_test, one line per t_train setting (PNG)."""
  # Imported here: selecting the Agg backend is a process-wide side effect,
  # taken only when a plot is drawn.
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  figure, axis = plt.subplots(figsize=(5, 3.5), dpi=100)
  ts = sorted(plan.t_tests)
  for name in setting_names(plan) + ["ensemble"]:
    means = [100 * rows[(name, t)]["miou"][0] for t in ts]
    stds = [100 * rows[(name, t)]["miou"][1] for t in ts]
    axis.errorbar(ts, means, yerr=stds, marker="o", capsize=3, label=name)
  axis.set_xlabel("t_test")
  axis.set_ylabel("mIoU on the reported split (%)")
  axis.legend(fontsize=7)
  axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def results_paths(output, results_dir=None):
  """(JSON, plot) paths of the results page `output`.

  Args:
    output: path of the Markdown page (e.g. RESULTS.md).
    results_dir: where the JSON and the plot go; None: `docs/results/`
      next to the page (the repository's RESULTS.md keeps them in
      docs/results/).

  Returns:
    (`<results_dir>/<stem>.json`, `<results_dir>/<stem>_miou_vs_t_test.png`),
    stem the page's lower-case name ("results").
  """
  if results_dir is None:
    results_dir = os.path.join(os.path.dirname(os.path.abspath(output)),
                               "docs", "results")
  stem = os.path.splitext(os.path.basename(output))[0].lower()
  return (os.path.join(results_dir, f"{stem}.json"),
          os.path.join(results_dir, f"{stem}_miou_vs_t_test.png"))


def reused_trainings(seed_results):
  """The training parts no seed of this run trained (each under 1 s).

  A restarted or extended run (same --workdir) skips finished training
  phases (`dis_tf.training.train`), so its "stage ..." parts take no time;
  the page must say those models come from an earlier run.
  """
  if not all("part_seconds" in r for r in seed_results):
    return []
  return [label for label in seed_results[0]["part_seconds"]
          if label.startswith("stage ")
          and all(r["part_seconds"].get(label, 0.0) < 1.0
                  for r in seed_results)]


def comparison_section(seed_results, plan, label, other_results,
                       other_plan):
  """Markdown: this run minus another run of the same seeds, paired per seed.

  For ablations that change one setting (e.g. `--latent.train_update`) on
  the same benchmark, seeds and stage-1 models: every setting of both runs
  at its validated t_test and at each shared t_test, the pseudo labels and
  the cleaned-tag F1.

  Args:
    seed_results, plan: this run (`load_results`).
    label: how the page names the other run (e.g. its JSON path).
    other_results, other_plan: the other run.

  Returns:
    The section, starting with its heading.

  Raises:
    UserError: the runs do not have the same seeds.
  """
  seeds = [r["seed"] for r in seed_results]
  if [r["seed"] for r in other_results] != seeds:
    raise errors.UserError(
        f"{label}: seeds {[r['seed'] for r in other_results]}, this run "
        f"{seeds}: a paired comparison needs the same seeds.")
  chosen, _ = validated(seed_results, plan)
  other_chosen, _ = validated(other_results, other_plan)
  rows = miou_table(seed_results, plan)
  other_rows = miou_table(other_results, other_plan)
  names = [n for n in setting_names(plan) + ["ensemble"]
           if n in other_chosen]
  t_tests = [t for t in plan.t_tests if t in other_plan.t_tests]
  lines = [f"## Paired against `{label}`",
           "This run minus that one, per seed (mIoU on the reported split).",
           ""]
  for name in names:
    lines.append(f"* {name}, each at its validated t_test: " + paired(
        chosen[name]["per_seed"], other_chosen[name]["per_seed"]))
    for t in t_tests:
      lines.append(f"* {name}, t_test={t}: " + paired(
          rows[(name, t)]["per_seed"], other_rows[(name, t)]["per_seed"]))
  weak, other_weak = seed_results[0]["weak"], other_results[0]["weak"]
  for key, what in (("pseudo_label_miou", "image + tag objective"),
                    ("pseudo_label_miou_tags_only", "tag term only")):
    for t in weak[key]:
      if t in other_weak[key]:
        lines.append(
            f"* pseudo labels ({what}), stage-1 model, t_train={t}: "
            + paired([r["weak"][key][t] for r in seed_results],
                     [r["weak"][key][t] for r in other_results]))
  for name in weak["tags"]:
    if name in other_weak["tags"]:
      lines.append(f"* cleaned-tag F1, {name}: " + paired(
          [r["weak"]["tags"][name]["after"]["f1"] for r in seed_results],
          [r["weak"]["tags"][name]["after"]["f1"] for r in other_results]))
  return "\n".join(lines) + "\n"


def write_results(seed_results, plan, output, command, generator_params,
                  rendered_by=None, config=None, results_dir=None,
                  compare=None):
  """Writes the results page (Markdown), its plot and a JSON of everything.

  Args:
    seed_results: list of `run_seed` results.
    plan: the `AblationPlan`.
    output: path of the Markdown file (e.g. RESULTS.md).
    command: the command line that produced the results.
    generator_params: the synthetic generator's parameters.
    rendered_by: the command that re-rendered the page from a saved JSON
      (None when the page comes straight from the run).
    config: the run's base `ExperimentConfig` as a dict (its latent
      settings and splits are listed on the page).
    results_dir: where the JSON and the plot go (see `results_paths`).
    compare: optional (label, seed_results, plan) of another run on the
      same seeds: a section of paired differences against it is appended
      (`comparison_section`).
  """
  rows = miou_table(seed_results, plan)
  chosen, best_t_train = validated(seed_results, plan)
  directory = os.path.dirname(os.path.abspath(output))
  os.makedirs(directory, exist_ok=True)
  json_path, plot = results_paths(output, results_dir)
  os.makedirs(os.path.dirname(plot), exist_ok=True)
  # The numbers first: a page that fails to render can be re-rendered from
  # them with --from_json.
  atomic.write_text(
      json_path,
      json.dumps({"plan": dataclasses.asdict(plan), "seeds": seed_results,
                  "command": command, "generator": generator_params,
                  "config": config}, indent=1))
  plot_curves(rows, plan, plot)
  short = [reports.short_name(c) for c in VOC_CLASSES[1:]]
  header = "| setting | t_test | " + " | ".join(short) + " | mIoU |"
  lines = [header, "|---|---:|" + "---:|" * (len(short) + 1)]
  for name in setting_names(plan) + ["ensemble"]:
    for t in sorted(plan.t_tests):
      row = rows[(name, t)]
      cells = " | ".join("–" if np.isnan(v) else f"{100 * v:.1f}"
                         for v in row["per_class"][1:])
      mean, std = row["miou"]
      lines.append(f"| {name} | {t} | {cells} | "
                   f"{100 * mean:.1f} ± {100 * std:.1f} |")
  valid_rows = ["| setting | validated t_test per seed | mIoU (mean ± std) "
                "| per seed |", "|---|---|---:|---|"]
  for name in setting_names(plan) + ["ensemble"]:
    v = chosen[name]["per_seed"]
    valid_rows.append(
        f"| {name} | {chosen[name]['t']} | {100 * v.mean():.1f} ± "
        f"{100 * v.std():.1f} | " + ", ".join(f"{100 * x:.1f}" for x in v)
        + " |")
  weak0 = seed_results[0]["weak"]
  ts = list(weak0["pseudo_label_miou"])
  pseudo = ["| stage-1 model, t_train | " + " | ".join(ts) + " |",
            "|---|" + "---:|" * len(ts)]
  for key, label in (
      ("pseudo_label_miou", "pseudo-label mIoU, image + tag objective (Eq. 1)"),
      ("pseudo_label_miou_tags_only", "pseudo-label mIoU, tag term only"),
  ):
    pseudo.append(f"| {label} | " + " | ".join(
        "{:.1f} ± {:.1f}".format(*[100 * x for x in _mean_std(
            [r["weak"][key][t] for r in seed_results])]) for t in ts) + " |")
  for key in ("precision", "recall", "f1"):
    pseudo.append(f"| cleaned-tag {key} | " + " | ".join(
        "{:.1f}".format(100 * np.mean(
            [r["weak"]["stage1_tags"][t][key] for r in seed_results]))
        for t in ts) + " |")
  tags = ["| model | noisy P | noisy R | noisy F1 | cleaned P | cleaned R | "
          "cleaned F1 |", "|---|---:|---:|---:|---:|---:|---:|"]
  for name in seed_results[0]["weak"]["tags"]:
    cells = []
    for when in ("before", "after"):
      for key in ("precision", "recall", "f1"):
        cells.append(100 * np.mean([r["weak"]["tags"][name][when][key]
                                    for r in seed_results]))
    tags.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
  minutes = sum(r["seconds"] for r in seed_results) / 60
  time_parts = ""
  if all("part_seconds" in r for r in seed_results):
    mean_minutes = {
        label: np.mean([r["part_seconds"][label] for r in seed_results]) / 60
        for label in seed_results[0]["part_seconds"]}
    time_parts = "; per seed (mean): " + ", ".join(
        f"{label} {m:.1f}" for label, m in mean_minutes.items()) + " min"
  reused = reused_trainings(seed_results)
  if reused:
    time_parts += (
        "\n* Trained before this run and reused (their finished phases "
        "were in the workdir, e.g. copied from an earlier run, so this run "
        "skipped them; their times above are the skip): "
        + ", ".join(reused))
  config = config or {}
  data, latent = config.get("data", {}), config.get("latent", {})
  rerendered = "" if rendered_by is None else (
      "\n* Page re-rendered from that run's JSON (no training or scoring) "
      f"by: `{rendered_by}`")
  seeds = [r["seed"] for r in seed_results]
  splits = (f"Settings chosen on `{data.get('select_split')}` "
            f"({plan.select_limit or 'all'} images); every mIoU below is on "
            f"`{data.get('eval_split')}` ({plan.eval_limit or 'all'} "
            "images), which the choice never sees. Weak images for pseudo "
            f"labels / tags: {plan.weak_limit}")
  latent_shown = json.dumps({k: v for k, v in latent.items()
                             if k not in ("t_train", "t_test")},
                            sort_keys=True)
  served_part = ""
  if all("served" in r for r in seed_results):
    served_part = (
        "\n## The served labelmap: tag refinement, t_test and the setting "
        "served\n" + served_labelmap.section(
            seed_results, plan, setting_names(plan) + ["ensemble"]) + "\n")
  page = f"""# Results: the Table-3 ablation on the synthetic benchmark

Written by `tools/ablation.py`; no number on this page is typed by hand.

* Command: `{command}`{rerendered}
* Seeds: {seeds}; t_train: {list(plan.t_trains)}; t_test: {list(plan.t_tests)}
* {splits}
* Latent settings (t_train per row, t_test per column): `{latent_shown}`
* Generator parameters: `{json.dumps(generator_params, sort_keys=True)}`
* Training and scoring time: {minutes:.1f} min on this machine{time_parts}

## Targets (issue: make the dual mechanism pay off)
{targets(rows, chosen, best_t_train, seed_results, plan, minutes)}
{served_part}
## Per-class IoU on the reported split (mean over seeds; mIoU mean ± std)
mIoU averages the 21 classes (background included) that occur in the
ground truth or the predictions; "–" marks a class absent from both.
The baseline is the stage-1 model (labelled images only); setup 1 is stage 2
with pseudo labels from the plain prediction refined by the given tags
(t_train = 0); "ensemble" averages the refined probabilities of the DIS
t_train settings.

{chr(10).join(lines)}

![mIoU vs t_test]({os.path.relpath(plot, directory)})

## At the t_test chosen on the selection split
Each seed's model serves the t_test with the highest mIoU on the selection
split (ties go to fewer steps); the mIoU is on the reported split.

{chr(10).join(valid_rows)}

## Diagnosis of the latent steps
{diagnosis_section(seed_results, plan)}

## Reading: the mechanism behind the targets
{reading(seed_results, plan, latent)}

## Departures from the paper, and why
{departures(seed_results, plan, latent)}

## Pseudo labels of the weak training images vs t_train
Training-mode latent inference with the stage-1 model, scored against the
generator's true masks (labelmaps) and true tags (cleaned tags). At
t_train = 0 nothing is inferred: the cleaned tags are the given tags and
the labelmap is the plain prediction refined with them (setup 1). The
second row drops the reconstruction term from the latent objective, to
show what it adds.

{chr(10).join(pseudo)}

## Noisy vs cleaned tags of the weak training images
"noisy" are the given tags, "cleaned" are sigmoid(v3) > threshold after
training-mode inference with each model (its own t_train; the baseline
uses the largest t_train; at t_train = 0 they are the given tags), both
against the true tags.

{chr(10).join(tags)}
"""
  if compare is not None:
    page += "\n" + comparison_section(seed_results, plan, *compare)
  atomic.write_text(output, page)
  logging.info("Results written to %s", output)
  return page
