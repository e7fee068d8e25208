"""Segmentation and tag metrics with the ignore label 255.

Per-step training metrics are Keras metrics; split-level evaluation
accumulates one confusion matrix over the whole split (`ConfusionMatrix`)
and derives pixel accuracy, per-class IoU and mIoU from it.
"""

import keras
import numpy as np
import tensorflow as tf

from dis_tf.classes import IGNORE_LABEL


@keras.saving.register_keras_serializable(package="dis_tf")
class PixelAccuracy(keras.metrics.Accuracy):
  """Fraction of non-ignored pixels whose predicted id equals the label.

  Args:
    ignore_label: label id that does not count (255).
    **kwargs: forwarded to `keras.metrics.Accuracy`.
  """

  def __init__(self, ignore_label=IGNORE_LABEL, **kwargs):
    kwargs.setdefault("name", "pixel_accuracy")
    super().__init__(**kwargs)
    self.ignore_label = ignore_label

  def update_state(self, y_true, y_pred, sample_weight=None):
    valid = tf.cast(tf.not_equal(y_true, self.ignore_label), tf.float32)
    if sample_weight is not None:
      valid *= tf.cast(sample_weight, tf.float32)
    return super().update_state(y_true, y_pred, sample_weight=valid)

  def get_config(self):
    return {**super().get_config(), "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="dis_tf")
class MeanIoU(keras.metrics.MeanIoU):
  """`keras.metrics.MeanIoU` on class ids with the ignore label 255.

  Args:
    num_classes: number of classes.
    ignore_label: ignored id (255).
    **kwargs: forwarded to `keras.metrics.MeanIoU`.
  """

  def __init__(self, num_classes, ignore_label=IGNORE_LABEL, **kwargs):
    kwargs.setdefault("name", "mean_iou")
    super().__init__(num_classes=num_classes, ignore_class=ignore_label,
                     **kwargs)
    self.ignore_label = ignore_label

  def get_config(self):
    config = super().get_config()
    config.pop("ignore_class", None)
    return {**config, "ignore_label": self.ignore_label}


class ConfusionMatrix:
  """Confusion matrix accumulated over a whole split (NumPy, int64).

  Rows are ground-truth classes, columns predictions; ignored pixels never
  enter. mIoU averages the IoU of the classes that occur in the ground truth
  or the predictions of the split (DeepLab's convention: absent classes are
  not counted as 0).

  Args:
    num_classes: number of classes.
    ignore_label: ignored id (255).
  """

  def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

  def update(self, labels, predictions):
    """Adds a batch of integer label / prediction maps of equal shape."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
      raise ValueError(
          f"labels {labels.shape} and predictions {predictions.shape} differ")
    valid = labels != self.ignore_label
    labels, predictions = labels[valid], predictions[valid]
    bad = (labels < 0) | (labels >= self.num_classes)
    if bad.any():
      raise ValueError(
          f"label ids {sorted(set(labels[bad].tolist()))} are outside "
          f"0..{self.num_classes - 1} and not the ignore label "
          f"{self.ignore_label}")
    self.matrix += np.bincount(
        labels * self.num_classes + predictions,
        minlength=self.num_classes ** 2,
    ).reshape(self.num_classes, self.num_classes)

  def pixel_accuracy(self):
    total = self.matrix.sum()
    return float(np.trace(self.matrix) / total) if total else 0.0

  def per_class_iou(self):
    """IoU per class; NaN for classes absent from labels and predictions."""
    tp = np.diag(self.matrix).astype(np.float64)
    union = self.matrix.sum(0) + self.matrix.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(union > 0, tp / union, np.nan)

  def mean_iou(self):
    iou = self.per_class_iou()
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def tag_scores(true_tags, predicted_tags):
  """Micro precision / recall / F1 of multi-hot object tags.

  Args:
    true_tags: [N, C] 0/1 (background column 0 is excluded).
    predicted_tags: [N, C] 0/1.

  Returns:
    Dict with "precision", "recall", "f1".
  """
  t = np.asarray(true_tags)[:, 1:] > 0.5
  p = np.asarray(predicted_tags)[:, 1:] > 0.5
  tp = float(np.logical_and(t, p).sum())
  precision = tp / p.sum() if p.sum() else 0.0
  recall = tp / t.sum() if t.sum() else 0.0
  f1 = (2 * precision * recall / (precision + recall)
        if precision + recall else 0.0)
  return {"precision": precision, "recall": recall, "f1": f1}


def tag_mean_average_precision(true_tags, scores):
  """Mean over object classes of the average precision of tag scores.

  Classes without a positive example are skipped.

  Args:
    true_tags: [N, C] 0/1 (background column 0 is excluded).
    scores: [N, C] tag probabilities.

  Returns:
    mAP as a float (0.0 when no class has positives).
  """
  t = np.asarray(true_tags)[:, 1:] > 0.5
  s = np.asarray(scores, dtype=np.float64)[:, 1:]
  aps = []
  for c in range(t.shape[1]):
    positives = t[:, c].sum()
    if positives == 0:
      continue
    order = np.argsort(-s[:, c], kind="stable")
    hits = t[order, c]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    aps.append(float((precision_at * hits).sum() / positives))
  return float(np.mean(aps)) if aps else 0.0
