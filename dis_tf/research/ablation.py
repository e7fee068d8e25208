"""The paper's Table-3 ablation on the synthetic benchmark (Sec. 4.2, 4.3).

For each seed: one stage-1 run (phases a, b, c), shared by every setting;
the baseline is that stage-1 model (labelled images only); setup 1 is
stage 2 with `t_train = 0` (pseudo labels = plain prediction refined by the
given tags); DIS settings are stage 2 with `t_train` in e.g. {5, 10, 30}.
Every model is scored on the selection and the reported split at every
`t_test` and every final prediction (`dis_tf.research.served_labelmap`) in
one backbone pass per image, together with the ensemble of the DIS settings
(averaged probabilities). Pseudo-label quality (mIoU against the
generator's truth) of the stage-1 model at each `t_train`, and tag
precision / recall / F1 of the noisy input tags vs the cleaned tags of each
model, come from training-mode latent inference on the weak training
images.

`dis_tf.research.results_page.write_results` renders everything to a
Markdown page whose every number comes from the run.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import time


from dis_tf import atomic
from dis_tf.research import diagnosis
from dis_tf import errors
from dis_tf import evaluation
from dis_tf import model_dir as model_dir_lib
from dis_tf.research import served_labelmap
from dis_tf import tag_cleaning
from dis_tf import training
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
    diagnosis_images: selection-split images for
      `dis_tf.research.diagnosis` (0 = no diagnosis).
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


def row_provenance(seed_dir, plan):
  """Which code trained each row's model, with which training settings.

  Read from each model's phase fingerprints (`model_dir.write_fingerprint`):
  a model reused from an earlier run keeps the record of the run that
  trained it.

  Returns:
    {"rows": {row: {"code": {phase: code_version or None},
    "latent": {latent.* training field: value} of its last phase}},
    "scoring": the `code_version` of this process}.
  """
  layout = {"baseline": ("stage1", "abc")}
  for t in (0,) + tuple(plan.t_trains):
    name = "setup1 (t_train=0)" if t == 0 else f"DIS t_train={t}"
    layout[name] = (f"t_train_{t}", ("semi",))
  rows = {}
  for name, (folder, phases) in layout.items():
    model_dir = os.path.join(seed_dir, folder)
    last = model_dir_lib.read_fingerprint(model_dir, phases[-1]) or {}
    rows[name] = {
        "code": model_dir_lib.phase_code_versions(model_dir, phases),
        "latent": {k: v for k, v in last.get("fields", {}).items()
                   if k.startswith("latent.")}}
  return {"rows": rows, "scoring": model_dir_lib.code_version()}


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

  result_provenance = row_provenance(seed_dir, plan)

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
  canvas = {}
  for key, split, limit in (("select", config.data.select_split,
                             plan.select_limit),
                            ("val", config.data.eval_split, plan.eval_limit)):
    with part(f"canvas rules on {split}"):
      canvas[key] = served_labelmap.canvas_grid(
          models, pipeline.eval_dataset(config, split),
          config.data.crop_size, limit=limit, num_classes=num_classes)
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
            "weak": weak, "refine": grids, "served": served,
            "canvas": canvas, "provenance": result_provenance}
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
