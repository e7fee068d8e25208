"""Pseudo labels of the weak images at the start and end of stage 2.

Stage 2 (paper Sec. 3.1) recomputes the pseudo labels of every weak batch
with the model being trained (`DISModel.pseudo_targets`), so the pseudo
labels of the stage-1 model (RESULTS.md, "Pseudo labels of the weak training
images") only say where stage 2 starts. This study scores, on the weak
training images and against the generator's true masks, the pseudo labels
of the stage-1 model and of the final stage-2 model of one or more
`tools/ablation.py` runs, each under four training-mode inferences:

* "t=0": no latent step; the prediction refined by the given tags (what
  setup 1 trains on);
* "tags only": t_train steps on the tag term alone (image weight 0);
* "both": t_train steps on Eq. (1), the paper's step (`latent.update`
  "both");
* "per_pixel": t_train steps on Eq. (1) with the u3 path of v1's gradient
  divided by h * w (`dis_tf.modeling.latent.block_scales`).

It was written for the question RESULTS.md's `train_update=per_pixel` run
left open: that step gives the stage-1 model better pseudo labels than the
paper's step, yet the DIS model trained with it is worse. `tools/
pseudo_label_study.py` writes the page.
"""

import dataclasses
import hashlib
import os

import numpy as np

from dis_tf.research import tables
from dis_tf import errors
from dis_tf import evaluation
from dis_tf import metrics as dis_metrics
from dis_tf import model_dir as model_dir_lib
from dis_tf.classes import IGNORE_LABEL
from dis_tf.data import pipeline
from dis_tf.data import web_tags

STEPS = ("t=0", "tags only", "both", "per_pixel")
# Config overrides of each inference (t=0 is the "both" pass's first output).
_OVERRIDES = {"both": {"latent.train_update": "both"},
              "per_pixel": {"latent.train_update": "per_pixel"},
              "tags only": {"loss.image_weight": 0.0}}


@dataclasses.dataclass
class _Counts:
  """Pixel counts of one model under one inference, over the weak images."""
  confusion: dis_metrics.ConfusionMatrix
  fg_true: int = 0          # labelled pixels whose truth is an object
  fg_pred: int = 0          # labelled pixels predicted as an object
  fg_hit: int = 0           # both
  changed: int = 0          # labelled pixels whose label differs from t=0
  fixed: int = 0            # ... and is now right (was wrong)
  broke: int = 0            # ... and was right (is now wrong)
  pixels: int = 0           # labelled pixels

  def update(self, truth, labels, start):
    valid = truth != IGNORE_LABEL
    truth, labels, start = truth[valid], labels[valid], start[valid]
    self.confusion.update(truth, labels)
    self.fg_true += int(np.sum(truth > 0))
    self.fg_pred += int(np.sum(labels > 0))
    self.fg_hit += int(np.sum((truth > 0) & (labels > 0)))
    moved = labels != start
    self.changed += int(np.sum(moved))
    self.fixed += int(np.sum(moved & (labels == truth)))
    self.broke += int(np.sum(moved & (start == truth)))
    self.pixels += int(truth.size)

  def scores(self):
    """Fractions (0..1): mIoU, foreground precision / recall, and the
    labelled pixels the steps change, fix and break (share of all)."""
    def ratio(a, b):
      return a / b if b else float("nan")
    return {"miou": float(np.nanmean(self.confusion.per_class_iou())),
            "fg_precision": ratio(self.fg_hit, self.fg_pred),
            "fg_recall": ratio(self.fg_hit, self.fg_true),
            "changed": ratio(self.changed, self.pixels),
            "fixed": ratio(self.fixed, self.pixels),
            "broke": ratio(self.broke, self.pixels)}


def score_model(model_dir, t_train, limit, data_overrides=None):
  """Pseudo-label scores of one trained model under each of `STEPS`.

  Args:
    model_dir: a finished training run (`tools/train.py`).
    t_train: latent steps of the "tags only", "both" and "per_pixel"
      inferences.
    limit: weak images to score (the first `limit` of the web-tag split).
    data_overrides: optional {"data.voc_dir": ..., ...} where the run's
      data now is.

  Returns:
    {step: scores} (`_Counts.scores`), with "num_images".

  Raises:
    UserError: a weak image has no true mask (real web data has none).
  """
  counts = {}
  num_images = 0
  starts = {}
  for step in ("both", "per_pixel", "tags only"):
    config, model = model_dir_lib.load(
        model_dir, dict(data_overrides or {}, **_OVERRIDES[step]))
    truth = web_tags.load_weak_truth(config.data.weak_dir)
    num_classes = config.model.num_classes
    t_tests = [0, t_train] if step == "both" else [t_train]
    for name in ([step, "t=0"] if step == "both" else [step]):
      counts[name] = _Counts(dis_metrics.ConfusionMatrix(num_classes))
    dataset = pipeline.weak_eval_dataset(config).take(limit)
    for index, example in enumerate(dataset):
      file_name = evaluation.example_file_name(example, index)
      record = truth.get(file_name)
      if record is None or record["mask"] is None:
        raise errors.UserError(f"{config.data.weak_dir}: no true mask for "
                         f"{file_name!r}; the study needs the generator's "
                         "truth (dis_tf.data.web_tags.load_weak_truth).")
      given = evaluation.to_numpy(example["tags"]).reshape(1, -1)
      out = evaluation.predict(model, example["image"], t_tests,
                               tags=given.astype(np.float32))
      labels = {t: np.argmax(out[t]["probabilities"], -1) for t in t_tests}
      if step == "both":
        starts[file_name] = labels[0]
        counts["t=0"].update(record["mask"], labels[0], labels[0])
        num_images += 1
      counts[step].update(record["mask"], labels[t_train], starts[file_name])
  result = {step: counts[step].scores() for step in STEPS}
  result["num_images"] = num_images
  return result


def _weights_digest(model_dir):
  """A hash of the weights of model_dir's model.

  Not of model.keras's bytes: a resumed run rewrites model.keras (with a new
  save date) from the same weights.
  """
  digest = hashlib.sha256()
  for weight in model_dir_lib.load_trained_model(model_dir).get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()


def run_labels(workdirs, seed, t_train):
  """{label: workdir}: each run named by its DIS model's training-mode step.

  Raises:
    FileNotFoundError: a workdir lacks the seed's stage-2 run.
  """
  labels = {}
  for workdir in workdirs:
    model_dir = os.path.join(workdir, f"seed_{seed}", f"t_train_{t_train}")
    config = model_dir_lib.load_config(model_dir)
    label = f"train_update={config.latent.train_update}"
    if label in labels:
      label = f"{label} ({workdir})"
    labels[label] = workdir
  return labels


def study_seed(workdirs, seed, t_train, limit, data_overrides=None):
  """Scores the stage-1 and final DIS models of each run for one seed.

  The stage-1 model of each run is scored once per distinct set of weights
  (runs that copied the same stage-1 model share its scores).

  Returns:
    {"stage 1": {label: scores}, "DIS": {label: scores}}.
  """
  out = {"stage 1": {}, "DIS": {}}
  by_digest = {}
  for label, workdir in run_labels(workdirs, seed, t_train).items():
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    stage1 = os.path.join(seed_dir, "stage1")
    digest = _weights_digest(stage1)
    if digest not in by_digest:
      print(f"[seed {seed}] stage 1 of {label}", flush=True)
      by_digest[digest] = score_model(stage1, t_train, limit, data_overrides)
    out["stage 1"][label] = by_digest[digest]
    print(f"[seed {seed}] DIS of {label}", flush=True)
    out["DIS"][label] = score_model(
        os.path.join(seed_dir, f"t_train_{t_train}"), t_train, limit,
        data_overrides)
  return out


# --------------------------------------------------------------- the page
def _values(seeds, model, label, step, key="miou"):
  return np.asarray([s[model][label][step][key] for s in seeds])


def _rows(seeds):
  """(row name, model, label) of the page's tables."""
  labels = list(seeds[0]["DIS"])
  first = seeds[0]["stage 1"]
  shared = all(s["stage 1"][a] == s["stage 1"][labels[0]]
               for s in seeds for a in labels)
  rows = ([("stage 1", "stage 1", labels[0])] if shared else
          [(f"stage 1 of {a}", "stage 1", a) for a in first])
  rows += [(f"DIS trained with {a}", "DIS", a) for a in labels]
  return rows


def format_page(study, command):
  """The Markdown page of a study (`run_study`'s JSON)."""
  seeds = study["results"]
  t_train = study["t_train"]
  rows = _rows(seeds)
  lines = [
      "# Pseudo labels of the weak images at the start and end of stage 2",
      "",
      "Written by `tools/pseudo_label_study.py`; no number on this page is "
      "typed by hand.",
      "",
      f"* Command: `{command}`",
      f"* Seeds: {study['seeds']}; t_train: {t_train}; weak images per seed: "
      f"{seeds[0]['DIS'][rows[-1][2]]['num_images']}",
      "* Runs: " + "; ".join(f"{label}: `{workdir}`"
                             for label, workdir in study["runs"].items()),
      "",
      "Stage 2 recomputes the pseudo labels of each weak batch with the model "
      "being trained, so the stage-1 model's pseudo labels are where stage 2 "
      "starts and the final model's are where it ends. Each model is scored "
      "under four training-mode inferences (given tags, t_train steps): "
      "`t=0` (no step; the prediction refined by the given tags), `tags "
      "only` (the image term off), `both` (Eq. (1), the paper's step) and "
      "`per_pixel` (Eq. (1), v1's u3-path gradient divided by h * w). The "
      "step a run trains with is its `train_update`.",
      "",
      "## Pseudo-label mIoU (mean ± sample sd over seeds)",
      "",
      tables.STD_NOTE,
      "",
      "| model | " + " | ".join(STEPS) + " |",
      "|---|" + "---:|" * len(STEPS),
  ]
  for name, model, label in rows:
    cells = []
    for step in STEPS:
      v = 100 * _values(seeds, model, label, step)
      mean, std = tables.mean_std(v)
      cells.append(f"{mean:.1f} ± {std:.1f}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += [
      "",
      "## Foreground and the pixels the steps change (mean over seeds, %)",
      "",
      "Foreground precision / recall of object vs background; changed, "
      "fixed and broke are shares of the labelled pixels whose label differs "
      "from t=0 (fixed: now right; broke: was right).",
      "",
      "| model | inference | fg precision | fg recall | changed | fixed | "
      "broke |",
      "|---|---|---:|---:|---:|---:|---:|",
  ]
  for name, model, label in rows:
    for step in STEPS:
      cells = [f"{100 * _values(seeds, model, label, step, key).mean():.1f}"
               for key in ("fg_precision", "fg_recall", "changed", "fixed",
                           "broke")]
      lines.append(f"| {name} | {step} | " + " | ".join(cells) + " |")
  lines += ["", "## Paired per seed (mIoU)", ""]
  for name, model, label in rows:
    def v(step, model=model, label=label):
      return _values(seeds, model, label, step)
    for a, b in (("both", "t=0"), ("per_pixel", "t=0"),
                 ("both", "per_pixel"), ("both", "tags only"),
                 ("per_pixel", "tags only")):
      lines.append(f"* {name}, {a} minus {b}: {tables.paired(v(a), v(b))}")
  lines.append("")
  for label in seeds[0]["DIS"]:
    own = label.split("=", 1)[1].split(" ")[0]
    if own not in STEPS:
      continue
    lines.append(
        f"* Stage 2 of {label}, pseudo labels under its own step, final "
        f"model minus stage-1 model: "
        + tables.paired(_values(seeds, "DIS", label, own),
                          _values(seeds, "stage 1", label, own)))
  labels = list(seeds[0]["DIS"])
  for other in labels[1:]:
    lines.append(
        f"* Final models at t=0, trained with {other} minus {labels[0]}: "
        + tables.paired(_values(seeds, "DIS", other, "t=0"),
                          _values(seeds, "DIS", labels[0], "t=0")))
  lines += ["", "## Reading", ""] + _reading(seeds, rows)
  return "\n".join(lines) + "\n"


def _short(a, b):
  """'+x.x mIoU, ahead in k of n seeds' for per-seed a - b."""
  d = np.round(100.0 * (np.asarray(a) - np.asarray(b)), 1)
  return (f"{d.mean():+.1f} mIoU, ahead in {int(np.sum(d > 0))} of "
          f"{d.size} seeds")


def _reading(seeds, rows):
  """Bullet points stating what the tables show (numbers from the JSON)."""
  out = []
  for name, model, label in rows:
    def v(step, model=model, label=label, key="miou"):
      return _values(seeds, model, label, step, key)
    best = max(("both", "per_pixel"), key=lambda step: v(step).mean())
    other = "per_pixel" if best == "both" else "both"
    out.append(
        f"* *{name}*: the {best} step gives the better pseudo labels "
        f"({best} minus {other}: {_short(v(best), v(other))}). What the "
        f"image term adds ({best} minus tags only): "
        f"{_short(v(best), v('tags only'))}. "
        f"Foreground recall {100 * v('t=0', key='fg_recall').mean():.1f} "
        f"at t=0, {100 * v('both', key='fg_recall').mean():.1f} after the "
        f"paper's step, {100 * v('per_pixel', key='fg_recall').mean():.1f} "
        "after the per-pixel step; precision "
        f"{100 * v('tags only', key='fg_precision').mean():.1f} with the "
        f"tag term alone, {100 * v('both', key='fg_precision').mean():.1f} "
        "with the paper's step.")
  for label in seeds[0]["DIS"]:
    own = label.split("=", 1)[1].split(" ")[0]
    if own not in STEPS:
      continue
    final = _values(seeds, "DIS", label, own)
    start_of_final = _values(seeds, "DIS", label, "t=0")
    text = (f"* *Stage 2 with {label}*: what its own step adds to its final "
            f"model's prediction (t=0): {_short(final, start_of_final)}; "
            "its pseudo labels from the start of stage 2 to the end: "
            f"{_short(final, _values(seeds, 'stage 1', label, own))}.")
    if np.mean(final - start_of_final) < 0.005:
      text += (" At the end the step no longer improves on the model's own "
               "prediction: stage 2 trains on what the model already "
               "predicts (self-training).")
    out.append(text)
  start = max(("both", "per_pixel"),
              key=lambda step: _values(seeds, "stage 1", rows[0][2],
                                       step).mean())
  ends = {max(("both", "per_pixel"),
              key=lambda step, label=label: _values(seeds, "DIS", label,
                                                    step).mean())
          for label in seeds[0]["DIS"]}
  if ends != {start}:
    out.append(
        f"* The step with the better stage-1 pseudo labels ({start}) is not "
        f"the one with the better pseudo labels of the trained models "
        f"({', '.join(sorted(ends))}): the stage-1 model's pseudo labels "
        "do not tell which training-mode step stage 2 should use; the "
        "pseudo labels of the models stage 2 trains do.")
  return out


def run_study(workdirs, seeds, t_train, limit, data_overrides=None):
  """Scores every seed; returns the study's JSON-able dict."""
  runs = run_labels(workdirs, seeds[0], t_train)
  results = [study_seed(workdirs, seed, t_train, limit, data_overrides)
             for seed in seeds]
  return {"seeds": list(seeds), "t_train": t_train, "runs": runs,
          "results": results}


def write(study, output, command):
  """Writes the page and, next to it, its JSON (same name, .json)."""
  return tables.write_page(study, output, command, format_page)


def load(path):
  """(study, command) of a JSON written by `write`."""
  return tables.load_page(path, ("seeds", "t_train", "runs", "results"),
                          "tools/pseudo_label_study.py")
