"""The served quality score: how far to trust one image's labelmap.

DIS reconstructs the image from its own labelmap (subnet-2, paper Sec. 2),
so it can check its labelmap against the image; with the labelmap's
confidence and its agreement with the tag prediction this gives per-image
signals that `docs/results/QUALITY.md` measures. The served score combines
them into one number in [0, 1], higher = more trustworthy: the predicted
probability that the image's IoU is above the median of the selection
split, from a logistic regression fitted there (`fit`, run with the
t_test selection) and written to `config.json` (`quality`) and into the
export, which computes it in the graph (`served_score`) for every
prediction signature.

The parts (`image_parts`), over the feature cells that cover the image
inside its canvas (not the padding), from the served prediction:

* `reconstruction`: mean squared error of z3 = subnet-2(u3) against the
  image target (the image at feature size), at the served steps;
* `entropy`: mean pixel entropy of the final class probabilities;
* `max_probability`: mean pixel max-softmax probability;
* `tag_agreement`: 1 - mean over foreground classes of |[class covers
  >= 1% of the cells] - sigmoid(v3)|.

Choice, and what it leaves out: the reconstruction's drop over latent steps
(QUALITY.md: +14 AUROC points over chance, below the other parts' +30)
needs steps that `serving_default` at t_test = 0 does not run, so it is
not a part: every signature computes the score from the one pass it
serves. A model that was never selected on a held-out split (no
`quality` in its config) serves the mean max-softmax probability, the
baseline the fitted score is measured against; the export's metadata
(`quality_score`) says which of the two a model serves.

Cost: subnet-2 on u3 and four means. Measured on the dilated ResNet101 at
353 x 353, t = 0, random weights, interleaved in one process (7 runs, on
2 cores shared with two training jobs): with the score 0.98x the median
time without it (1.04x the minimum), within the noise of that machine.
"""

import dataclasses
from typing import Optional

import numpy as np

import tensorflow as tf

from dis_tf import errors
from dis_tf import image_ops
from dis_tf import metrics as dis_metrics
from dis_tf import selection
from dis_tf.classes import IGNORE_LABEL

PARTS = ("reconstruction", "entropy", "max_probability", "tag_agreement")
# A labelmap class counts as present when it covers this share of the cells.
PRESENT_FRACTION = 0.01
FALLBACK = "max_probability"


@dataclasses.dataclass
class QualityFit:
  """The fitted score: sigmoid(((parts - mean) / scale) . weights + bias).

  Attributes:
    weights: one per part of `PARTS`.
    bias: the intercept.
    mean: the parts' mean on the selection split.
    scale: their standard deviation there.
    t_test: the latent steps the parts were computed at.
    split: the selection split.
    num_images: its images.
    median_iou: the split's median per-image IoU (the label's threshold).
    auroc: the score's AUROC on the split it was fitted on (in-sample; the
      reported split's is on the results page).
    parts: the part names, in order.
  """

  weights: list
  bias: float
  mean: list
  scale: list
  t_test: int
  split: str
  num_images: int
  median_iou: float
  auroc: float
  parts: tuple = PARTS

  def to_json(self):
    return dict(dataclasses.asdict(self), parts=list(self.parts))

  @classmethod
  def from_json(cls, values):
    """A fit from `to_json`'s dict; None stays None."""
    if values is None:
      return None
    fit = cls(**dict(values, parts=tuple(values["parts"])))
    if fit.parts != PARTS:
      raise errors.UserError(
          f"config.json: the quality score was fitted on the parts "
          f"{fit.parts}; this version computes {PARTS}: select the "
          "setting again (tools/evaluate.py --select_t_test).")
    return fit

  def describe(self):
    """One line: what the score is and where it was fitted."""
    return (f"logistic regression of {', '.join(self.parts)} on "
            f"IoU > {100 * self.median_iou:.1f} (the median), fitted on "
            f"{self.split} ({self.num_images} images) at t={self.t_test}")


def describe(fit):
  """What a model with `fit` (a `QualityFit` or None) serves as quality."""
  if fit is None:
    return (f"{FALLBACK}: the mean max-softmax probability (not fitted: "
            "the setting was never selected on a held-out split)")
  return fit.describe()


def _cell_mask(feature_size, fitted_sizes, canvas_size):
  """float32 [B, h, w]: 1 on the cells that cover the fitted image."""
  h, w = feature_size[0], feature_size[1]
  fitted = tf.cast(fitted_sizes, tf.int32)
  rows = (fitted[:, 0] * h + canvas_size - 1) // canvas_size
  cols = (fitted[:, 1] * w + canvas_size - 1) // canvas_size
  row_ok = tf.range(h)[None, :] < rows[:, None]
  col_ok = tf.range(w)[None, :] < cols[:, None]
  return tf.cast(row_ok[:, :, None] & col_ok[:, None, :], tf.float32)


def image_parts(probabilities, tag_probabilities, reconstruction,
                image_target, fitted_sizes, canvas_size):
  """The parts of each image of a batch of canvases (module docstring).

  Args:
    probabilities: [B, h, w, C] final class probabilities.
    tag_probabilities: [B, C] sigmoid(v3), background first.
    reconstruction: [B, h, w, 3] z3 (normalised).
    image_target: [B, h, w, 3] the canvas at feature size.
    fitted_sizes: [B, 2] (height, width) of each image in its canvas.
    canvas_size: the canvas side S (int).

  Returns:
    float32 [B, len(PARTS)].
  """
  probabilities = tf.cast(probabilities, tf.float32)
  mask = _cell_mask(tf.shape(probabilities)[1:3], fitted_sizes, canvas_size)
  cells = tf.maximum(tf.reduce_sum(mask, [1, 2]), 1.0)

  def mean(x):
    return tf.reduce_sum(x * mask, [1, 2]) / cells

  error = tf.reduce_mean(tf.square(tf.cast(reconstruction, tf.float32)
                                   - tf.cast(image_target, tf.float32)), -1)
  entropy = -tf.reduce_sum(
      probabilities * tf.math.log(tf.maximum(probabilities, 1e-12)), -1)
  num_classes = tf.shape(probabilities)[-1]
  labels = tf.one_hot(tf.argmax(probabilities, -1), num_classes)
  shares = tf.reduce_sum(labels * mask[..., None], [1, 2]) / cells[:, None]
  present = tf.cast(shares[:, 1:] >= PRESENT_FRACTION, tf.float32)
  tags = tf.cast(tag_probabilities, tf.float32)[:, 1:]
  agreement = 1.0 - tf.reduce_mean(tf.abs(present - tags), -1)
  return tf.stack([mean(error), mean(entropy),
                   mean(tf.reduce_max(probabilities, -1)), agreement], -1)


def score_from_parts(parts, fit):
  """float32 [B] score in [0, 1] from parts [B, len(PARTS)]; `fit` None:
  the `FALLBACK` part."""
  parts = tf.cast(parts, tf.float32)
  if fit is None:
    return parts[:, PARTS.index(FALLBACK)]
  mean = tf.constant(fit.mean, tf.float32)
  scale = tf.constant(fit.scale, tf.float32)
  weights = tf.constant(fit.weights, tf.float32)
  z = tf.linalg.matvec((parts - mean) / scale, weights) + fit.bias
  return tf.sigmoid(z)


def served_score(model, result, image_target, fitted_sizes, canvas_size,
                 fit):
  """float32 [B]: the score of `model.infer`'s `result` on its canvases."""
  parts = image_parts(result["probabilities"], result["tag_probabilities"],
                      model.subnet2(result["u3"]), image_target,
                      fitted_sizes, canvas_size)
  return score_from_parts(parts, fit)


def score_image(model, image, t_test, quality_fit, canvas_size=None):
  """The served score of one image, computed in this process.

  Args:
    model: a `DISModel` (its final prediction and update as served).
    image: [1, H, W, 3] or [H, W, 3] normalised image.
    t_test: latent steps.
    quality_fit: a `QualityFit`, or None (the fallback).
    canvas_size: the canvas side; None: the model's `eval_crop_size`.

  Returns:
    The score (float).
  """
  image = tf.cast(image, tf.float32)
  if image.shape.rank == 3:
    image = image[None]
  size = int(model.eval_crop_size if canvas_size is None else canvas_size)
  canvas, fitted = image_ops.fit_to_canvas(image, size, normalized=True)
  result = model.infer(canvas, t_test, return_features=True)
  return float(served_score(model, result, result["image_target"],
                            fitted[None], size, quality_fit)[0])


# ----------------------------------------------------------------- fitting
def auroc(scores, positives):
  """P(score of a positive > score of a negative), ties counted half."""
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  pos, neg = scores[positives], scores[~positives]
  if not len(pos) or not len(neg):
    return float("nan")
  greater = (pos[:, None] > neg[None]).mean()
  ties = (pos[:, None] == neg[None]).mean()
  return float(greater + 0.5 * ties)


def fit_logistic(x, y, l2=1e-2, iterations=50):
  """Logistic regression by Newton's method (IRLS) with a small L2 penalty
  on the weights (not the bias): a few features, a few hundred images, so
  the exact Newton step is cheap and needs no new dependency.

  Returns:
    weights [F + 1], the last one the bias.
  """
  x = np.c_[np.asarray(x, np.float64), np.ones(len(x))]
  y = np.asarray(y, np.float64)
  w = np.zeros(x.shape[1])
  penalty = l2 * np.r_[np.ones(x.shape[1] - 1), 0.0]
  for _ in range(iterations):
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    gradient = x.T @ (p - y) + penalty * w
    hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
    step = np.linalg.solve(hessian, gradient)
    w -= step
    if np.max(np.abs(step)) < 1e-10:
      break
  return w


def fit_parts(parts, ious, t_test, split):
  """Fits the score to parts [N, len(PARTS)] and per-image IoUs [N].

  Returns:
    A `QualityFit`, or None when the split gives no two classes to tell
    apart (fewer than 2 images, or every IoU equal to the median).
  """
  parts = np.asarray(parts, np.float64)
  ious = np.asarray(ious, np.float64)
  median = float(np.median(ious)) if len(ious) else 0.0
  labels = ious > median
  if len(ious) < 2 or labels.all() or not labels.any():
    return None
  mean, scale = parts.mean(0), parts.std(0) + 1e-12
  weights = fit_logistic((parts - mean) / scale, labels)
  z = np.c_[(parts - mean) / scale, np.ones(len(parts))] @ weights
  return QualityFit(
      weights=[float(v) for v in weights[:-1]], bias=float(weights[-1]),
      mean=[float(v) for v in mean], scale=[float(v) for v in scale],
      t_test=int(t_test), split=str(split), num_images=int(len(parts)),
      median_iou=median, auroc=round(auroc(z, labels), 4))


def split_parts(model, dataset, t_test, num_classes):
  """Parts [N, len(PARTS)] and confusion matrices [N, C, C] of a split.

  Each image goes through the serving computation's steps: fitted into the
  model's canvas (`image_ops.fit_to_canvas`), `model.infer` at `t_test`
  with the model's own final prediction, the parts on the canvas, the
  labelmap mapped back to the image (`image_ops.canvas_to_original`).

  Args:
    model: a `DISModel` (its `tag_refinement` and `latent_update` as served).
    dataset: batch-1 evaluation dicts with "image" (normalised) and "mask".
    t_test: latent steps.
    num_classes: C.
  """
  size = int(model.eval_crop_size)

  @tf.function(autograph=False)
  def canvas_parts(canvas, fitted):
    result = model.infer(canvas, t_test, return_features=True)
    parts = image_parts(result["probabilities"], result["tag_probabilities"],
                        model.subnet2(result["u3"]), result["image_target"],
                        fitted[None], size)
    return parts[0], result["probabilities"][0]

  parts, matrices = [], []
  for example in dataset:
    image = tf.cast(example["image"], tf.float32)
    canvas, fitted = image_ops.fit_to_canvas(image, size, normalized=True)
    p, probabilities = canvas_parts(canvas, fitted)
    original = (int(image.shape[1]), int(image.shape[2]))
    labels = tf.argmax(image_ops.canvas_to_original(
        probabilities, fitted, original, size), -1)
    matrix = dis_metrics.ConfusionMatrix(num_classes, IGNORE_LABEL)
    matrix.update(np.asarray(example["mask"])[0], labels.numpy())
    parts.append(p.numpy())
    matrices.append(matrix.matrix)
  return (np.asarray(parts, np.float64).reshape(-1, len(PARTS)),
          np.asarray(matrices, np.int64))


def fit(model, dataset, t_test, num_classes, split) -> Optional[QualityFit]:
  """Fits the served score on a held-out split (`fit_parts`)."""
  parts, matrices = split_parts(model, dataset, t_test, num_classes)
  return fit_parts(parts, selection.mean_iou_of(matrices), t_test, split)


def record(config, quality_fit):
  """Stores `quality_fit` (None: not fitted) in `config.model_dir`'s
  config.json, where the export and `load_segmenter` read it."""
  config.quality = None if quality_fit is None else quality_fit.to_json()
  config.save(config.model_dir)
