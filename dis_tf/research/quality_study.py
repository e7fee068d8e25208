"""Which labelmaps to trust: per-image quality signals, measured (issue 28).

DIS reconstructs the image from its own labelmap (subnet-2, paper Sec. 2),
so how well it does is a candidate signal of a labelmap's quality that a
plain segmentation model does not have. This study measures, per image,
before anything is served:

* `reconstruction`: mean squared error ||z3 - I||^2 over the feature cells
  of the fitted image, z3 = subnet-2(softmax(u3)), at t = 0;
* `reconstruction_drop`: that error at t = 0 minus at `t_steps` latent
  steps (how much the steps could improve the fit);
* `entropy`: mean pixel entropy of the final class probabilities;
* `max_probability`: mean pixel max-softmax probability;
* `tag_agreement`: 1 - mean over foreground classes of |[class in the
  labelmap (>= 1% of pixels)] - sigmoid(v3)|, the labelmap's classes
  against the tag prediction;

and two baselines: the mean max-softmax probability of the DIS model and
the mean entropy of a plain segmentation model (phase a: the labelmap
alone, `checkpoints/phase_a.weights.h5`).

A combined score in [0, 1] is a logistic regression of the standardised
parts on "this image's IoU is above the selection split's median", fitted
on the selection split and scored on the reported one (no image is scored
by a fit that saw it). Each part is oriented (higher = more trustworthy) by
its AUROC on the selection split. The per-image IoU is the mIoU of the
image's own confusion matrix (`dis_tf.selection.mean_iou_of`).

Measured on the reported split: AUROC for flagging images below its median
IoU, and the selective-prediction curve (split mIoU of the most-trusted
50%, 80% and 100% of images). The same for the score the library serves
(`served_study`: `dis_tf.quality`'s four parts of the served prediction,
fitted by `quality.fit` as `tools/evaluate.py --select_t_test` fits it),
and two remedies for its trusted half, measured and not served
(`quality_remedies`). The page is `quality_page`'s. The library never
imports this module.
"""

import numpy as np

from dis_tf import evaluation
from dis_tf import metrics as dis_metrics
from dis_tf import quality
from dis_tf import selection
from dis_tf.research import diagnosis
from dis_tf.research import quality_remedies

PARTS = ("reconstruction", "reconstruction_drop", "entropy",
         "max_probability", "tag_agreement")
BASELINES = ("max_probability", "plain_entropy")
COVERAGES = (0.5, 0.8, 1.0)
PRESENT_FRACTION = 0.01


def _entropy(probabilities):
  p = np.maximum(probabilities, 1e-12)
  return float(np.mean(-np.sum(probabilities * np.log(p), -1)))


def image_parts(model, example, t_steps, num_classes):
  """The parts of one image, and its confusion matrix at t = 0.

  Args:
    model: a `DISModel`.
    example: batch-1 dict with "image" (normalised) and "mask".
    t_steps: latent steps of `reconstruction_drop`.
    num_classes: C.

  Returns:
    ({part: float}, int64 [C, C] confusion matrix of the t = 0 labelmap).
  """
  out = evaluation.predict(model, example["image"], [0, t_steps],
                           with_reconstruction=True)
  errors = {t: float(np.mean((out[t]["reconstruction"]
                              - out[t]["image_target"]) ** 2))
            for t in (0, t_steps)}
  probabilities = out[0]["probabilities"]
  labels = probabilities.argmax(-1)
  counts = np.bincount(labels.ravel(), minlength=num_classes) / labels.size
  present = (counts[1:] >= PRESENT_FRACTION).astype(np.float64)
  tags = np.asarray(out[0]["tag_probabilities"][1:], np.float64)
  parts = {
      "reconstruction": errors[0],
      "reconstruction_drop": errors[0] - errors[t_steps],
      "entropy": _entropy(probabilities),
      "max_probability": float(np.mean(probabilities.max(-1))),
      "tag_agreement": 1.0 - float(np.mean(np.abs(present - tags))),
  }
  matrix = dis_metrics.ConfusionMatrix(num_classes)
  matrix.update(np.asarray(example["mask"])[0], labels)
  return parts, matrix.matrix


def split_parts(model, examples, t_steps, num_classes, plain_model=None):
  """Parts [N, len(PARTS)], baselines [N, 2] and matrices [N, C, C]."""
  parts, baselines, matrices = [], [], []
  for example in examples:
    p, m = image_parts(model, example, t_steps, num_classes)
    plain = np.nan
    if plain_model is not None:
      probs = evaluation.predict(plain_model, example["image"], [0])[0][
          "probabilities"]
      plain = -_entropy(probs)  # Oriented: higher = more trustworthy.
    parts.append([p[k] for k in PARTS])
    baselines.append([p["max_probability"], plain])
    matrices.append(m)
  return (np.asarray(parts), np.asarray(baselines),
          np.asarray(matrices, np.int64))


def selective_miou(scores, matrices, coverages=COVERAGES):
  """{"0.5": split mIoU of the most-trusted half of the images, ...} (keys
  as JSON keeps them)."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  out = {}
  for c in coverages:
    keep = order[:max(1, int(round(c * len(order))))]
    out[f"{c:g}"] = float(selection.mean_iou_of(matrices[keep].sum(0)))
  return out


def study(select, report):
  """The measurements of one model.

  Args:
    select: (parts, baselines, matrices) of the selection split.
    report: the same of the reported split.

  Returns:
    JSON-able dict: "auroc" ({"score", each part, each baseline}), "signs"
    (each part's orientation, from the selection split), "selective"
    ({"score": {coverage: mIoU}, "max_probability": ...}), "weights" (of
    the standardised parts, then the bias), "num_images" (select, report).
  """
  s_parts, _, s_matrices = select
  r_parts, r_baselines, r_matrices = report
  s_iou = selection.mean_iou_of(s_matrices)
  r_iou = selection.mean_iou_of(r_matrices)
  s_y, r_y = s_iou > np.median(s_iou), r_iou > np.median(r_iou)
  signs = np.asarray([1.0 if quality.auroc(s_parts[:, i], s_y) >= 0.5 else -1.0
                      for i in range(len(PARTS))])
  mean, scale = s_parts.mean(0), s_parts.std(0) + 1e-12
  weights = quality.fit_logistic((s_parts - mean) / scale, s_y)
  z = np.c_[(r_parts - mean) / scale, np.ones(len(r_parts))] @ weights
  score = 1.0 / (1.0 + np.exp(-z))
  result = {"auroc": {"score": quality.auroc(score, r_y)}, "signs": {},
            "selective": {"score": selective_miou(score, r_matrices)},
            "weights": weights.tolist(),
            "num_images": [int(len(s_parts)), int(len(r_parts))]}
  for i, name in enumerate(PARTS):
    result["signs"][name] = float(signs[i])
    result["auroc"][name] = quality.auroc(signs[i] * r_parts[:, i], r_y)
  for i, name in enumerate(BASELINES):
    result["auroc"][name] = (quality.auroc(r_baselines[:, i], r_y)
                             if not np.isnan(r_baselines[:, i]).any()
                             else float("nan"))
  result["selective"]["max_probability"] = selective_miou(r_baselines[:, 0],
                                                          r_matrices)
  return result


def trusted_half(scores, matrices):
  """How the most-trusted half of the images differs from the whole split,
  beyond its split mIoU.

  Returns:
    {"image_mean": mean per-image IoU of the half minus that of the split
    (the quantity the score is fitted to rank), "classes_lower": the number
    of classes whose IoU over the half is lower than over the split: split
    mIoU weighs each class once, so a class left with a few confidently
    wrong images in the half pulls its mIoU down whatever the other images
    gain}.
  """
  matrices = np.asarray(matrices)
  ious = selection.mean_iou_of(matrices)
  order = np.argsort(-np.asarray(scores), kind="stable")
  keep = order[:max(1, int(round(0.5 * len(order))))]

  def per_class(m):
    confusion = dis_metrics.ConfusionMatrix(len(m))
    confusion.matrix = m
    return confusion.per_class_iou()

  whole, half = per_class(matrices.sum(0)), per_class(matrices[keep].sum(0))
  both = ~np.isnan(whole) & ~np.isnan(half)
  return {"image_mean": float(ious[keep].mean() - ious.mean()),
          "classes_lower": int(np.sum(half[both] < whole[both]))}


def served_study(quality_fit, parts, matrices):
  """The served score (`dis_tf.quality`, what the export computes) on the
  reported split.

  Args:
    quality_fit: the `QualityFit` fitted on the selection split, or None
      (the served fallback, the max-softmax probability).
    parts: [N, len(quality.PARTS)] of the reported split at the served
      t_test (`quality.split_parts`).
    matrices: [N, C, C] confusion matrices of the served labelmaps.

  Returns:
    JSON-able dict: "auroc" ({"score", "max_probability"}: the served
    labelmaps' below-median flag), "selective" (the same two, and "oracle":
    the images ranked by their own IoU, what no score can beat by much),
    "trusted_half" (`trusted_half` of the score and of the oracle),
    "t_test", "fitted" (False: the fallback was served).
  """
  ious = selection.mean_iou_of(matrices)
  labels = ious > np.median(ious)
  score = np.asarray(quality.score_from_parts(parts, quality_fit))
  max_probability = parts[:, quality.PARTS.index("max_probability")]
  return {
      "auroc": {"score": quality.auroc(score, labels),
                "max_probability": quality.auroc(max_probability, labels)},
      "selective": {"score": selective_miou(score, matrices),
                    "max_probability": selective_miou(max_probability,
                                                      matrices),
                    "oracle": selective_miou(ious, matrices)},
      "trusted_half": {"score": trusted_half(score, matrices),
                       "oracle": trusted_half(ious, matrices)},
      "t_test": None if quality_fit is None else int(quality_fit.t_test),
      "fitted": quality_fit is not None,
  }


def error_relations(matrices, num_classes):
  """{relation: share of the wrongly labelled pixels} over a split, with the
  generator's class relations (`diagnosis.relation_matrix`): a labelmap
  that swaps two classes of one hue reconstructs about as well as the truth
  (subnet-2 decodes classes into colours), which bounds what the
  reconstruction can see."""
  relations = diagnosis.relation_matrix(num_classes)
  total = np.asarray(matrices).sum(0).astype(np.float64)
  np.fill_diagonal(total, 0.0)
  wrong = max(total.sum(), 1.0)
  return {name: float(total[relations == i].sum() / wrong)
          for i, name in enumerate(diagnosis.RELATIONS)}


def run_model(model_dir, t_steps, data_overrides=None):
  """The study of one trained run on its selection and reported splits."""
  from dis_tf import config as config_lib
  from dis_tf import model_dir as model_dir_lib
  from dis_tf.data import pipeline
  from dis_tf.modeling import dis_model
  config, model = model_dir_lib.load(model_dir, data_overrides)
  plain_config = config_lib.ExperimentConfig.from_dict(config.to_dict())
  plain_config.model.weights = None
  plain = dis_model.build_dis_model(plain_config)
  plain.load_weights(model_dir_lib.phase_weights_path(model_dir, "a"))
  c = config.model.num_classes
  split = lambda name: split_parts(model, pipeline.eval_dataset(config, name),
                                   t_steps, c, plain)
  select, report = split(config.data.select_split), split(
      config.data.eval_split)
  result = study(select, report)
  # The served score through the library's own code (the export computes
  # the same in its graph, tests/test_quality.py), at the run's t_test.
  t_test = int(config.latent.t_test)
  s_parts, s_matrices = quality.split_parts(
      model, pipeline.eval_dataset(config, config.data.select_split), t_test,
      c)
  # `quality.fit`'s fit, from the parts computed once for the remedies too.
  served_fit = quality.fit_parts(s_parts, selection.mean_iou_of(s_matrices),
                                 t_test, config.data.select_split)
  served_parts, served_matrices = quality.split_parts(
      model, pipeline.eval_dataset(config, config.data.eval_split), t_test, c)
  result["served"] = served_study(served_fit, served_parts, served_matrices)
  result["served"]["t_test"] = t_test
  result["served"]["remedies"] = quality_remedies.measure(
      s_parts, s_matrices, served_parts, served_matrices)
  result["error_relations"] = error_relations(report[2], c)
  result["splits"] = [config.data.select_split, config.data.eval_split]
  result["latent_update"] = model.latent_update
  return result


def run_study(model_dirs, seeds, t_steps, data_overrides=None):
  """{"seeds", "t_steps", "runs": [run_model of each model_dir]}."""
  return {"seeds": list(seeds), "t_steps": int(t_steps),
          "runs": [run_model(d, t_steps, data_overrides) for d in model_dirs]}
