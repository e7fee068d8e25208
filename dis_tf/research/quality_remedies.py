"""Two remedies for the served score's trusted half, measured (issue 28).

QUALITY.md finds that the served score's most-trusted half gains far less
split mIoU than mean per-image IoU: split mIoU weighs each class once, and
the score, fitted on "this image's IoU is above the median", leaves a few
confidently wrong images of some classes in the half. Two changes aimed at
that mechanism, each fitted on the selection split like the served score
(`dis_tf.quality.fit_parts`) and scored on the reported split:

* `class_iou`: a fifth part, the labelmap's predicted classes weighed by
  how well the model segments each class on the selection split: sum over
  classes of (share of the image's scored pixels predicted as the class)
  x (the class's IoU over the selection split). An image whose labelmap
  is made of classes the model gets wrong elsewhere is trusted less.
  Approximation of a measurement: the shares come from the per-image
  confusion matrices, so they leave out the pixels the mask ignores (the
  void band around objects); a served part would count the labelmap's
  own cells.
* `contribution`: the served parts fitted on another label, "this image's
  leave-one-out contribution to the split mIoU (the split's mIoU minus
  that of the split without it) is above the median", the quantity the
  trusted half's split mIoU is made of, in place of the image's own IoU.
* `class_iou+contribution`: both.

Measured, never served: the served score stays `dis_tf.quality`'s; the
page says whether a remedy reaches the +10 target, whether it beats the
served score under the interval rule, and what it costs in AUROC. The
library never imports this module.
"""

import numpy as np

from dis_tf import metrics as dis_metrics
from dis_tf import quality
from dis_tf import selection
from dis_tf.research import reading as reading_lib
from dis_tf.research import tables

REMEDIES = ("class_iou", "contribution", "class_iou+contribution")


def predicted_shares(matrices):
  """[N, C]: each image's share of scored pixels predicted as each class
  (the column sums of its confusion matrix, rows being the truth)."""
  predicted = np.asarray(matrices, np.float64).sum(-2)
  return predicted / np.maximum(predicted.sum(-1, keepdims=True), 1.0)


def class_table(matrices):
  """[C]: each class's IoU over the split of `matrices`; 0 for a class the
  split never shows or predicts (nothing is known of it)."""
  confusion = dis_metrics.ConfusionMatrix(np.asarray(matrices).shape[-1])
  confusion.matrix = np.asarray(matrices).sum(0)
  return np.nan_to_num(confusion.per_class_iou(), nan=0.0)


def contributions(matrices):
  """[N]: the split's mIoU minus its mIoU without each image."""
  matrices = np.asarray(matrices, np.int64)
  total = matrices.sum(0)
  whole = float(selection.mean_iou_of(total))
  return whole - selection.mean_iou_of(total[None] - matrices)


def _fit_and_score(s_x, s_label, r_x):
  """The logistic regression of `quality.fit_parts` (standardised on the
  selection split) fitted to `s_label`; its logit on `r_x`."""
  mean, scale = s_x.mean(0), s_x.std(0) + 1e-12
  weights = quality.fit_logistic((s_x - mean) / scale, s_label)
  return np.c_[(r_x - mean) / scale, np.ones(len(r_x))] @ weights


def measure(s_parts, s_matrices, r_parts, r_matrices):
  """The served score and each remedy on one run's reported split.

  Args:
    s_parts: [N_s, len(quality.PARTS)] served parts of the selection split.
    s_matrices: [N_s, C, C] its served labelmaps' confusion matrices.
    r_parts: the same of the reported split.
    r_matrices: the same of the reported split.

  Returns:
    {"served" and each of `REMEDIES`: {"auroc" (against the reported
    split's median per-image IoU, as the served score's), "top_half" (the
    most-trusted half's split mIoU minus the whole split's, a fraction)}}.
  """
  s_parts, r_parts = (np.asarray(x, np.float64) for x in (s_parts, r_parts))
  s_iou, r_iou = (selection.mean_iou_of(m) for m in (s_matrices, r_matrices))
  s_contribution = contributions(s_matrices)
  table = class_table(s_matrices)
  s_class = predicted_shares(s_matrices) @ table
  r_class = predicted_shares(r_matrices) @ table
  by_iou = s_iou > np.median(s_iou)
  by_contribution = s_contribution > np.median(s_contribution)
  with_class = (np.c_[s_parts, s_class], np.c_[r_parts, r_class])
  logits = {
      "served": _fit_and_score(s_parts, by_iou, r_parts),
      "class_iou": _fit_and_score(with_class[0], by_iou, with_class[1]),
      "contribution": _fit_and_score(s_parts, by_contribution, r_parts),
      "class_iou+contribution": _fit_and_score(
          with_class[0], by_contribution, with_class[1]),
  }
  # Imported here: quality_study imports this module (a cycle at import).
  from dis_tf.research.quality_study import selective_miou
  whole = float(selection.mean_iou_of(np.asarray(r_matrices).sum(0)))
  above_median = r_iou > np.median(r_iou)
  return {name: {"auroc": quality.auroc(z, above_median),
                 "top_half": selective_miou(z, r_matrices)["0.5"] - whole}
          for name, z in logits.items()}


def section(result, target_top_half, target_auroc):
  """The page's section on the remedies (`measure` of each run, under
  "served"/"remedies"), and its reading; none for a JSON written before
  they were measured.

  Args:
    result: `quality_study.run_study`'s result.
    target_top_half: the trusted half's target gain (mIoU points).
    target_auroc: the AUROC target (hundredths).

  Returns:
    {"lines": the section, "reading": its reading's lines}.
  """
  runs = [r.get("served", {}).get("remedies") for r in result["runs"]]
  if not all(runs):
    return {"lines": [], "reading": []}
  n = len(runs)
  value = lambda name, key: np.asarray([r[name][key] for r in runs])
  names = ("served",) + REMEDIES
  rows = [[seed] + [f"{r[name]['auroc']:.3f} / {100 * r[name]['top_half']:+.1f}"
                    for name in names]
          for seed, r in zip(result["seeds"], runs)]
  header = ["seed"] + [f"{name}: AUROC / top 50%" for name in names]
  lines = [
      "## Two remedies for the trusted half, measured (not served)",
      "",
      "Two changes to the served score aimed at split mIoU weighing each "
      "class once (a few wrong images of a class in the trusted half move "
      "its IoU a long way), each fitted on the selection split like the "
      "served score and scored on the reported split "
      "(`dis_tf/research/quality_remedies.py`): "
      "`class_iou`, a fifth part (the labelmap's predicted classes, each "
      "weighed by its IoU over the selection split); `contribution`, the "
      "served parts fitted on the image's leave-one-out contribution to "
      "the split mIoU in place of its own IoU; and both. Per seed: AUROC "
      "against the reported split's median IoU, and the most-trusted half's "
      "split mIoU minus the whole split's (points).",
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ] + ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""]
  reading = []
  zero = np.zeros(n)
  for name in REMEDIES:
    top = tables.paired_stats(value(name, "top_half"), zero)
    gain = tables.paired_stats(value(name, "top_half"),
                               value("served", "top_half"))
    auroc = tables.paired_stats(value(name, "auroc"), zero)
    lines.append(
        f"- {name}: most-trusted 50% minus the whole split "
        f"{tables.paired_text(top)}; minus the served score's "
        f"{tables.paired_text(gain)}; AUROC {tables.paired_text(auroc)}.")
    reach = tables.verdict(top, target_top_half)
    reading.append(
        f"- The remedy {name} "
        + {"met": "reaches", "missed": "misses",
           "not resolved": "is not resolved against"}[reach]
        + f" the +{target_top_half:.0f} target ({top['mean']:+.1f}), "
        + reading_lib.by_interval(
            gain, "lifts the trusted half above the served score's",
            "lowers the trusted half below the served score's",
            "is not resolved as different from the served score's "
            "trusted half")
        + f" ({gain['mean']:+.1f}); its AUROC ({auroc['mean'] / 100:.3f}) is "
        + {"met": "above", "missed": "below",
           "not resolved": "not resolved against"}[
               tables.verdict(auroc, target_auroc)]
        + f" {target_auroc / 100:.2f} under the interval rule.")
  lines.append("")
  return {"lines": lines, "reading": reading}
