"""The served labelmap: tag refinement x t_test, the choice, the export path.

The research behind RESULTS.md "The served labelmap" (the library never
imports this module). For every model of the ablation it scores, in one
backbone pass per image, each final prediction of `dis_tf.selection.
REFINEMENTS` (no refinement, the paper's tag refinement of Sec. 2.1, and
sigmoid(v3 + b) for the calibrated biases) at each t_test, on the selection
and the reported split; applies the selection rule (`dis_tf.selection.
choose_setting`: the plain t = 0 prediction unless a candidate clears the
paired bootstrap margin) on the selection split; and scores the reported
split once more through the serving module at the chosen setting, from the
JPEG files, as a client sends them (`score_through_export`). It also
compares the canvas rules at t = 0 (`canvas_grid`, `canvas_section`).

Size: about 450 lines because the scoring and the page section read one
per-seed result format; apart, the format would be spelled out twice.
"""

import os

import numpy as np
import tensorflow as tf

from dis_tf import evaluation
from dis_tf import metrics as dis_metrics
from dis_tf import selection
from dis_tf.research import tables
from dis_tf.serving import module as module_lib
from dis_tf.serving import scoring

REFINEMENTS = selection.REFINEMENTS


def score_grid(models, dataset, t_tests, ensemble_members, limit=None,
               num_classes=21, per_image=False):
  """Per-class IoU of each model and the ensemble at each refinement and t.

  Args:
    models: {name: DISModel}.
    dataset: batch-1 evaluation dicts ("image", "mask").
    t_tests: latent step counts.
    ensemble_members: names whose probabilities are averaged (per
      refinement and t) into the "ensemble" row.
    limit: at most this many images.
    num_classes: classes.
    per_image: also return every image's confusion matrix.

  Returns:
    ({row: {refinement name: {str(t): per-class IoU list (None = absent)}}},
    {row: {(t, refinement): int64 [N, C, C]}} if `per_image` else None).
  """
  rows = list(models) + ["ensemble"]
  keys = [(t, r) for t in t_tests for r in REFINEMENTS]
  totals = {(n, k): np.zeros((num_classes, num_classes), np.int64)
            for n in rows for k in keys}
  images = {(n, k): [] for n in rows for k in keys}
  for index, example in enumerate(dataset):
    if limit is not None and index >= limit:
      break
    mask = np.asarray(example["mask"])[0]
    summed = {k: 0.0 for k in keys}
    for name in rows:
      if name == "ensemble":
        maps = summed
      else:
        out = evaluation.predict(models[name], example["image"], t_tests,
                                 refinements=REFINEMENTS)
        maps = {(t, r): out[t]["by_refinement"][r] for t, r in keys}
        if name in ensemble_members:
          summed = {k: summed[k] + maps[k] for k in keys}
      for k in keys:
        one = dis_metrics.ConfusionMatrix(num_classes)
        one.update(mask, np.argmax(maps[k], -1))
        totals[(name, k)] += one.matrix
        if per_image:
          images[(name, k)].append(one.matrix)

  def per_class(matrix):
    iou = selection_per_class_iou(matrix)
    return [None if np.isnan(v) else float(v) for v in iou]

  scores = {name: {evaluation.refinement_name(r): {
      str(t): per_class(totals[(name, (t, r))]) for t in t_tests}
      for r in REFINEMENTS} for name in rows}
  matrices = None
  if per_image:
    matrices = {name: {k: np.asarray(images[(name, k)]) for k in keys}
                for name in rows}
  return scores, matrices


# The canvas rules compared at t = 0 without refinement: the served rule
# (fit into the evaluation canvas), the same rule at the training crop, and
# the square resize of the export before the served-labelmap work (9cffd86).
CANVAS_RULES = ("fit eval", "fit crop", "squash crop")


def canvas_grid(models, dataset, crop_size, limit=None, num_classes=21):
  """Per-class IoU of each model at t = 0, unrefined, under `CANVAS_RULES`.

  Args:
    models: {name: DISModel} (their `eval_crop_size` is the served canvas).
    dataset: batch-1 evaluation dicts ("image", "mask").
    crop_size: the training crop side.
    limit: at most this many images.
    num_classes: classes.

  Returns:
    {row: {rule: per-class IoU list (None = absent)}}.
  """
  totals = {(n, r): np.zeros((num_classes, num_classes), np.int64)
            for n in models for r in CANVAS_RULES}
  for index, example in enumerate(dataset):
    if limit is not None and index >= limit:
      break
    mask = np.asarray(example["mask"])[0]
    image = tf.cast(example["image"], tf.float32)
    size = tuple(mask.shape)
    for name, model in models.items():
      maps = {}
      for rule, scale in (("fit eval", 1.0),
                          ("fit crop", crop_size / model.eval_crop_size)):
        out = evaluation.predict(model, image, [0], scales=(scale,),
                                 refinements=[None])
        maps[rule] = out[0]["probabilities"]
      out = model.infer(tf.image.resize(image, (crop_size, crop_size)), 0)
      maps["squash crop"] = tf.image.resize(
          tf.nn.softmax(out["u3"]), size)[0].numpy()
      for rule in CANVAS_RULES:
        one = dis_metrics.ConfusionMatrix(num_classes)
        one.update(mask, np.argmax(maps[rule], -1))
        totals[(name, rule)] += one.matrix
  return {name: {rule: [None if np.isnan(v) else float(v) for v in
                        selection_per_class_iou(totals[(name, rule)])]
                 for rule in CANVAS_RULES} for name in models}


def selection_per_class_iou(matrix):
  """Per-class IoU of one confusion matrix (NaN for absent classes)."""
  cm = dis_metrics.ConfusionMatrix(len(matrix))
  cm.matrix = np.asarray(matrix, np.int64)
  return cm.per_class_iou()


def decisions(matrices):
  """{row: the `selection.choose_setting` decision} on the selection split."""
  return {name: selection.choose_setting(m) for name, m in matrices.items()}


def score_through_export(model, config, names, decision):
  """mIoU of the served setting through the serving module, from the files.

  The serving module (the SavedModel's computation, built in process) gets
  each image's JPEG file as bytes through `serving_steps`, as a client
  sends it, and is scored against the mask PNGs
  (`dis_tf.serving.scoring.score_voc_files`).

  Args:
    model: a `DISModel`.
    config: the run's `ExperimentConfig` (`data.voc_dir`).
    names: the image ids to score.
    decision: the served setting (`selection.choose_setting`).

  Returns:
    The mIoU (fraction).
  """
  saved = model.tag_refinement
  model.tag_refinement = decision["tag_refinement"]
  try:  # The module traces the refinement in at its first call.
    module = module_lib.build_serving_module(model, decision["t_test"], None)
    return scoring.score_voc_files(
        lambda encoded: module_lib.predict_in_process(
            model, encoded, decision["t_test"], None, module=module),
        os.path.join(config.data.voc_dir, "VOCdevkit", "VOC2012"), names,
        model.num_classes)
  finally:
    model.tag_refinement = saved


# --------------------------------------------------------------- reporting
def paired(a, b):
  """Per-seed a - b: `tables.paired_stats` (shared by every page)."""
  return tables.paired_stats(a, b)


def paired_text(p):
  """`tables.paired_text` of a `paired` result."""
  return tables.paired_text(p)


def _miou(per_class):
  values = np.asarray([np.nan if v is None else v for v in per_class],
                      np.float64)
  return float(np.nanmean(values))


def grid_mious(seed_results, row, split="val"):
  """{(refinement name, t): per-seed mIoU array} of one row."""
  grid = seed_results[0]["refine"][split][row]
  return {(ref, int(t)): np.asarray([
      _miou(r["refine"][split][row][ref][t]) for r in seed_results])
          for ref in grid for t in grid[ref]}


def served_mious(seed_results, row):
  """Per-seed reported mIoU of each seed's served setting of `row`."""
  out = []
  for r in seed_results:
    d = r["served"][row]
    out.append(_miou(r["refine"]["val"][row][d["refinement"]][
        str(d["t_test"])]))
  return np.asarray(out)


def best_fixed(mious):
  """The (refinement, t) with the highest mean reported mIoU (an oracle:
  it looks at the reported split, which the served choice never sees)."""
  return max(mious, key=lambda k: mious[k].mean())


def section(seed_results, plan, rows):
  """The Markdown section "The served labelmap" (every number computed).

  Args:
    seed_results: `run_seed` results with "refine" and "served".
    plan: the `AblationPlan`.
    rows: the model rows (e.g. baseline, setup 1, DIS t_train=..., and
      "ensemble").

  Returns:
    Markdown text.
  """
  t0, t_max = min(plan.t_tests), max(plan.t_tests)
  ts = sorted(plan.t_tests)
  refs = list(seed_results[0]["refine"]["val"][rows[0]])
  out = [
      "Each model's final prediction is scored without tag refinement "
      "(\"off\": argmax softmax(u3)), with the paper's refinement "
      "(\"paper\": softmax(u3) scaled by sigmoid(v3), Sec. 2.1) and with "
      "two calibrated ones (\"bias=b\": sigmoid(v3 + b)), at every t_test, "
      "from the same backbone pass. Images are fitted into the evaluation "
      "canvas as the export serves them (long side resized, aspect kept, "
      "padded). mIoU on the reported split, mean ± sample sd over "
      f"{len(seed_results)} seeds; the last column is the test-time gain "
      f"t={t_max} minus t={t0} under that refinement, paired per seed.", "",
      "| model | refinement | " + " | ".join(f"t={t}" for t in ts)
      + f" | t={t_max} - t={t0} |",
      "|---|---|" + "---:|" * (len(ts) + 1)]
  for row in rows:
    m = grid_mious(seed_results, row)
    for ref in refs:
      cells = " | ".join(
          f"{100 * m[(ref, t)].mean():.1f} ± "
          f"{100 * m[(ref, t)].std(ddof=1) if len(seed_results) > 1 else 0:.1f}"
          for t in ts)
      gain = paired(m[(ref, t_max)], m[(ref, t0)])
      out.append(f"| {row} | {ref} | {cells} | {paired_text(gain)} |")
  out += [
      "", "### The setting each model serves",
      f"Chosen per seed on the selection split by the rule of "
      f"`dis_tf/selection.py`: {selection.RULE}. \"served - plain\" "
      f"compares it with the network's own prediction (t={t0}, no "
      "refinement) on the reported split; \"served - best fixed\" with the "
      "single setting that is best on the reported split on average (an "
      "oracle, shown to measure what the rule costs).", "",
      "| model | served (t, refinement) per seed | lower end of the "
      "selection interval | served mIoU | served - plain | best fixed | "
      "served - best fixed |", "|---|---|---|---:|---|---|---|"]
  verdicts = {}
  for row in rows:
    m = grid_mious(seed_results, row)
    served = served_mious(seed_results, row)
    plain = m[("off", t0)]
    best = best_fixed(m)
    vs_plain = paired(served, plain)
    vs_best = paired(served, m[best])
    verdicts[row] = (vs_plain, vs_best)
    choices = ", ".join(f"({r['served'][row]['t_test']}, "
                        f"{r['served'][row]['refinement']})"
                        for r in seed_results)
    lows = ", ".join("-" if r["served"][row]["interval"] is None else
                     f"{100 * r['served'][row]['interval']['low']:+.1f}"
                     for r in seed_results)
    out.append(
        f"| {row} | {choices} | {lows} | {100 * served.mean():.1f} | "
        f"{paired_text(vs_plain)} | t={best[1]}, {best[0]} | "
        f"{paired_text(vs_best)} |")
  exported = [row for row in rows
              if all("export_miou" in r["served"].get(row, {})
                     for r in seed_results)]
  if exported:
    out += ["", "### The served setting through the serving module",
            "The reported split's JPEG files sent as bytes through the "
            "serving module (`serving_steps`, the SavedModel's computation "
            "built in process) at the served setting, scored against the "
            "mask PNGs (`dis_tf/serving/scoring.py`), beside the "
            "evaluation's mIoU of the same setting.", "",
            "| model | evaluation per seed | serving module per seed | "
            "largest difference |", "|---|---|---|---:|"]
    for row in exported:
      ev = served_mious(seed_results, row)
      ex = np.asarray([r["served"][row]["export_miou"]
                       for r in seed_results])
      out.append(
          f"| {row} | " + ", ".join(f"{100 * x:.1f}" for x in ev) + " | "
          + ", ".join(f"{100 * x:.1f}" for x in ex)
          + f" | {100 * np.max(np.abs(ev - ex)):.2f} |")
  out += ["", "### Targets (issue: the served labelmap)",
          "Served - best fixed is judged by the rule of the targets above "
          "(the 90% t interval against -0.5)."]
  for row in rows:
    vs_plain, vs_best = verdicts[row]
    never_worse = vs_plain["behind"] == 0
    out.append(
        f"* {row}: served >= plain in every seed: "
        f"{'**met**' if never_worse else '**missed**'} (behind in "
        f"{vs_plain['behind']} of {vs_plain['n']}); served - best fixed "
        f"> -0.5: **{tables.verdict(vs_best, -0.5)}** "
        f"({paired_text(vs_best)}).")
  if exported:
    worst = max(float(np.max(np.abs(
        served_mious(seed_results, row) - np.asarray(
            [r["served"][row]["export_miou"] for r in seed_results]))))
                for row in exported)
    out.append(f"* Serving module = evaluation within 0.3 mIoU: "
               f"{'**met**' if 100 * worst <= 0.3 else '**missed**'} "
               f"(largest difference {100 * worst:.2f}).")
  if all("canvas" in r for r in seed_results):
    out += ["", canvas_section(seed_results, rows)]
  out += ["", "### What the test-time gain consists of",
          gain_reading(seed_results, plan, rows)]
  return "\n".join(out)


def canvas_section(seed_results, rows):
  """The Markdown subsection "The canvas" (t = 0, no refinement).

  Args:
    seed_results: `run_seed` results with "canvas" ({split key: the
      `canvas_grid` result}).
    rows: the model rows (those absent from "canvas" are left out).

  Returns:
    Markdown text, with the target "no worse than the squashed path"
    computed from the reported split's paired differences.
  """
  rows = [r for r in rows if r in seed_results[0]["canvas"]["val"]]
  labels = {"select": "selection split", "val": "reported split"}
  out = ["### The canvas",
         "The network's own prediction (t = 0, no refinement) with the "
         "image fitted into the served canvas (\"fit eval\": long side "
         "resized to `data.eval_crop_size`, aspect kept, padded), fitted "
         "into the training crop instead (\"fit crop\"), and squashed to "
         "a crop-sized square (\"squash crop\", the export's rule before "
         "the served-labelmap work). mIoU mean over seeds; the differences "
         "are paired per seed.", "",
         "| model | split | fit eval | fit crop | squash crop | fit eval - "
         "fit crop | fit eval - squash crop |", "|---|---|---:|---:|---:|---|"
         "---|"]
  verdicts = []
  for row in rows:
    for key in ("select", "val"):
      m = {rule: np.asarray([_miou(r["canvas"][key][row][rule])
                             for r in seed_results]) for rule in CANVAS_RULES}
      vs_crop = paired(m["fit eval"], m["fit crop"])
      vs_squash = paired(m["fit eval"], m["squash crop"])
      if key == "val":
        verdicts.append((row, vs_squash))
      out.append(
          f"| {row} | {labels[key]} | "
          + " | ".join(f"{100 * m[rule].mean():.1f}" for rule in CANVAS_RULES)
          + f" | {paired_text(vs_crop)} | {paired_text(vs_squash)} |")
  out += ["", "Target: the served canvas beats the squashed path (paired "
          "fit eval - squash crop on the reported split > 0, by the rule "
          "of the targets: the 90% t interval against 0)."]
  for row, p in verdicts:
    out.append(f"* {row}: **{tables.verdict(p, 0.0)}** ({paired_text(p)}).")
  return "\n".join(out)


def gain_reading(seed_results, plan, rows):
  """Sentences on the refinement and the test-time gain, from the numbers.

  For each DIS row: the refinement's cost at t0 and t_max, and the
  test-time gain with and without it; which branch is written depends on
  whether the steps' gain under the paper's refinement exceeds the gain
  without it by more than the paired interval allows.
  """
  t0, t_max = min(plan.t_tests), max(plan.t_tests)
  lines = []
  for row in rows:
    if not row.startswith("DIS"):
      continue
    m = grid_mious(seed_results, row)
    cost0 = paired(m[("off", t0)], m[("paper", t0)])
    cost_max = paired(m[("off", t_max)], m[("paper", t_max)])
    gain_paper = paired(m[("paper", t_max)], m[("paper", t0)])
    gain_off = paired(m[("off", t_max)], m[("off", t0)])
    # gain_paper - gain_off == cost0 - cost_max, paired per seed.
    undo = paired(m[("off", t0)] - m[("paper", t0)],
                  m[("off", t_max)] - m[("paper", t_max)])
    text = (f"* {row}: the paper's refinement costs {cost0['mean']:+.1f} "
            f"at t={t0} and {cost_max['mean']:+.1f} at t={t_max} (off minus "
            f"paper); the test-time gain is {gain_paper['mean']:+.1f} with "
            f"the refinement and {gain_off['mean']:+.1f} without it. ")
    if undo["low"] > 0:
      text += (f"The steps shrink the refinement's damage by "
               f"{paired_text(undo)}: that part of the gain under the "
               "paper's refinement is the steps undoing the refinement, and "
               f"the network's own gain from the steps is the "
               f"{gain_off['mean']:+.1f} without it.")
    elif undo["high"] < 0:
      text += (f"The refinement costs more after the steps than before "
               f"({paired_text(undo)}): the steps make the tag classifier's "
               "misses worse, and the gain without refinement is the "
               "larger.")
    else:
      text += (f"The refinement's cost does not change measurably with the "
               f"steps ({paired_text(undo)}): the test-time gain is the "
               "network's own, with or without the refinement.")
    if gain_off["low"] > 0:
      text += (f" Without refinement the steps help: "
               f"{paired_text(gain_off)}.")
    elif gain_off["high"] < 0:
      text += (f" Without refinement the steps hurt: "
               f"{paired_text(gain_off)}.")
    else:
      text += (f" Without refinement the steps' effect is within the "
               f"noise of {gain_off['n']} seeds: {paired_text(gain_off)}.")
    lines.append(text)
  return "\n".join(lines)
