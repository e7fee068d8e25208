"""Diagnosis of the latent (u1, v1) inference: what moves, and where to.

Measures, on a trained model and a few labelled images, why test-time
latent steps (paper Sec. 2.1, "Inference in Test") help or hurt:

* `v1_share`: the share of the squared step norm ||A^T g||^2 that goes
  through v1 (the image-level vector added to every position of u2) rather
  than u1, at the start point;
* `step_shift_ratio`: how far the first step moves a pixel's class scores
  through v1, against through u1 (the measured form of the argument for
  the per-pixel step);
* `miou_by_update`: mIoU after `t_test` steps when both blocks move (the
  paper), when only u1 or only v1 moves, and with the per-pixel v1 step
  (`dis_tf.modeling.latent.block_scales`);
* `reconstruction`: does the objective point at the truth? Reconstruction
  error ||z3 - I||^2 when subnet-2 decodes the soft prediction softmax(u3),
  its one-hot argmax, and the ground truth (per-cell class fractions), at
  t = 0 and t = t_test;
* `flips`: the pixels whose label the steps change, binned by the relation
  of the old and new class in the synthetic generator (same hue, c vs
  c +- 10; neighbouring hue; other; to or from background) and by outcome
  (fixed, broke, neither);
* `sweep`: step-size x count at a fixed product, with the objective at ten
  points along the way;
* `tags`: F1 of the tag classifier alone (test mode, no tags given) and of
  the given tags, against the true tags of weak images: what tag cleaning
  can reach.

`tools/ablation.py` runs it on each seed's stage-1 and stage-2 models and
writes the numbers into RESULTS.md.
"""

import os

import numpy as np
import tensorflow as tf

from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf import metrics as dis_metrics
from dis_tf.classes import IGNORE_LABEL
from dis_tf.data import synthetic
from dis_tf.modeling import gram as gram_lib

RELATIONS = ("background", "same_hue", "neighbour_hue", "other")
OUTCOMES = ("fixed", "broke", "neither")
# (step size, steps): the product is that of the default (0.1 x 30).
SWEEP = ((0.03, 100), (0.1, 30), (0.3, 10), (1.0, 3))
# A large logit turns a one-hot map into "probabilities" for subnet-2 (which
# applies softmax to its input).
_ONE_HOT_LOGIT = 100.0


def relation_matrix(num_classes=21):
  """[C, C] index into `RELATIONS` for (old class, new class) pairs.

  Uses the synthetic generator's appearance model: class c has hue index
  (c - 1) % 10, so c and c +- 10 share a hue; hues one step apart (mod 10)
  are neighbours.
  """
  table = np.zeros((num_classes, num_classes), np.int32)
  for a in range(num_classes):
    for b in range(num_classes):
      if a == 0 or b == 0:
        table[a, b] = RELATIONS.index("background")
        continue
      ha, hb = synthetic.class_hue_index(a), synthetic.class_hue_index(b)
      distance = min((ha - hb) % synthetic.NUM_HUES,
                     (hb - ha) % synthetic.NUM_HUES)
      table[a, b] = RELATIONS.index(
          "same_hue" if distance == 0 else
          "neighbour_hue" if distance == 1 else "other")
  return table


def _head_gradients(model, u1, v1, target, tags=None):
  """(gu, gv): the latent objective's gradient with respect to (u3, v3) at
  (u1, v1), the g of a step A A^T g (`dis_tf.modeling.gram`)."""
  u3, v3 = model.subnet1(u1, v1), model.subnet3(u1, v1)
  with tf.GradientTape() as tape:
    tape.watch([u3, v3])
    total = tf.reduce_sum(latent_lib.objective_from_logits(
        model, u3, v3, target, tags, model.image_weight, model.tag_weight))
  return tape.gradient(total, [u3, v3],
                       unconnected_gradients=tf.UnconnectedGradients.ZERO)


def v1_share(model, u1, v1, target, tags=None):
  """Fraction of ||A^T g||^2 through v1 at (u1, v1), per example.

  Args:
    model: a `DISModel`.
    u1, v1: backbone features.
    target: image target at feature size.
    tags: optional tags (training-mode objective).

  Returns:
    [B] float array in [0, 1].
  """
  gu, gv = _head_gradients(model, u1, v1, target, tags)
  op = gram_lib.GramOperator.from_heads(model)
  full_u, full_v = op.apply(gu, gv)
  part_u, part_v = gram_lib.apply_v1_part(
      model.subnet1.conv.kernel, model.subnet3.dense.kernel, gu, gv)
  inner = lambda a, b: (tf.reduce_sum(a[0] * b[0], [1, 2, 3])
                        + tf.reduce_sum(a[1] * b[1], [1]))
  whole = inner((gu, gv), (full_u, full_v))
  through_v1 = inner((gu, gv), (part_u, part_v))
  return (through_v1 / tf.maximum(whole, 1e-30)).numpy()


def step_shift_ratio(model, u1, v1, target):
  """How far one test-mode step moves a pixel's scores through v1 vs u1.

  Splits the first step on u3, A A^T g (`dis_tf.modeling.gram`), into the
  part through v1 (`gram_lib.apply_v1_part`, the same D-vector added at
  every position) and the part through u1, and compares their mean
  per-pixel L2 norms over the C class scores: the measured form of the
  "a v1 step moves every pixel by about h * w times a u1 step" argument
  behind "per_pixel" (`dis_tf.modeling.latent.block_scales`).

  Args:
    model: a `DISModel`.
    u1, v1: backbone features [B, h, w, D], [B, D].
    target: image target at feature size.

  Returns:
    [B] float array: mean_p ||dU3_v1(p)|| / mean_p ||dU3_u1(p)||, with
    the paper's step (both blocks at one step size).
  """
  gu, gv = _head_gradients(model, u1, v1, target)
  full_u, _ = gram_lib.GramOperator.from_heads(model).apply(gu, gv)
  part_u, _ = gram_lib.apply_v1_part(
      model.subnet1.conv.kernel, model.subnet3.dense.kernel, gu, gv)
  pixel_norm = lambda x: tf.reduce_mean(tf.norm(x, axis=-1), [1, 2])
  return (pixel_norm(part_u)
          / tf.maximum(pixel_norm(full_u - part_u), 1e-30)).numpy()


def _reconstruction_error(model, logits, target):
  z3 = model.subnet2(logits)
  return float(tf.reduce_sum(tf.math.squared_difference(z3, target)))


def _one_hot_logits(labels, num_classes):
  return _ONE_HOT_LOGIT * tf.one_hot(labels, num_classes)


def truth_logits(mask, size, fallback_logits, num_classes):
  """Ground truth at feature size, as logits subnet-2 can decode.

  Each feature cell gets the class fractions of its labelled pixels (area
  average of the one-hot mask, ignore excluded); a cell with no labelled
  pixel keeps the prediction.

  Args:
    mask: [H, W] int labels, 255 = ignore.
    size: (h, w) feature size.
    fallback_logits: [1, h, w, C] logits used where a cell has no label.
    num_classes: C.

  Returns:
    [1, h, w, C] logits (log of the fractions).
  """
  mask = tf.convert_to_tensor(mask)
  valid = tf.cast(tf.not_equal(mask, IGNORE_LABEL), tf.float32)
  one_hot = tf.one_hot(tf.where(mask == IGNORE_LABEL, 0, mask),
                       num_classes) * valid[..., None]
  sums = tf.image.resize(one_hot[None], size, method="area")
  mass = tf.reduce_sum(sums, -1, keepdims=True)
  fractions = sums / tf.maximum(mass, 1e-12)
  logits = tf.math.log(fractions + 1e-6)
  return tf.where(mass > 1e-6, logits, fallback_logits)


class _Runner:
  """Compiled latent calls of one model, one trace per option set."""

  def __init__(self, model):
    self.model = model
    self._fns = {}

  def __call__(self, u1, v1, target, steps, step_size=None,
               update="both", monotone=False, tags=None):
    key = (step_size, update, monotone, tags is not None)
    if key not in self._fns:
      model = self.model

      def run(u1, v1, target, steps, tags=None):
        return model.latent(u1, v1, target, tags=tags, steps=steps,
                            step_size=step_size, update=update,
                            monotone=monotone, return_features=True)
      self._fns[key] = tf.function(run, reduce_retracing=True,
                                   autograph=False)
    args = (u1, v1, target, tf.constant(steps, tf.int32))
    return self._fns[key](*args, **({"tags": tags} if tags is not None
                                    else {}))


def diagnose(model, examples, t_test=30, updates=latent_lib.UPDATES,
             sweep=SWEEP, num_classes=21):
  """Runs the latent diagnosis on labelled images.

  Args:
    model: a trained `DISModel`.
    examples: iterable of batch-1 dicts with "image" (normalised) and
      "mask".
    t_test: step count of the comparisons.
    updates: `dis_tf.modeling.latent.UPDATES` values to compare.
    sweep: (step size, steps) pairs of the step-size sweep.
    num_classes: C.

  Returns:
    A JSON-able dict: "v1_share" (median, mean), "step_shift_ratio"
    (median, mean, and "cells", h * w of the canvas's u1), "miou" ({"t0",
    update: mIoU at t_test}), "reconstruction" (mean errors and the fraction of
    images where the truth reconstructs better than the t=0 argmax),
    "flips" ({relation: {outcome: fraction of flipped pixels}}, "flipped":
    fraction of labelled pixels), "sweep" (list of {"step_size", "steps",
    "miou", "objective": objective / objective at t=0 at ten points}).
  """
  run = _Runner(model)
  relations = relation_matrix(num_classes)
  shares, shifts = [], []
  matrices = {key: dis_metrics.ConfusionMatrix(num_classes)
              for key in ("t0",) + tuple(updates)}
  sweep_matrices = [dis_metrics.ConfusionMatrix(num_classes) for _ in sweep]
  sweep_objectives = [np.zeros(11) for _ in sweep]
  errors = {k: [] for k in ("soft_t0", "argmax_t0", "truth", "soft_t",
                            "argmax_t")}
  flips = np.zeros((len(RELATIONS), len(OUTCOMES)), np.int64)
  labelled = 0

  canvas_size = model.eval_crop_size

  def labels_at(out, shape):
    # Mapped back from the canvas as evaluation maps it.
    probs = image_ops.canvas_to_original(out["probabilities"][0], fitted,
                                         shape, canvas_size)
    return np.argmax(probs.numpy(), -1)

  for example in examples:
    # The image as evaluation and the export see it (fitted into the
    # canvas), so the steps diagnosed are the steps served.
    image, fitted = image_ops.fit_to_canvas(
        tf.cast(example["image"], tf.float32), canvas_size, normalized=True)
    mask = np.asarray(example["mask"])[0]
    valid = mask != IGNORE_LABEL
    labelled += int(valid.sum())
    u1, v1 = model.features(image)
    size = tf.shape(u1)[1:3]
    target = image_ops.image_target(image, size)
    shares.append(float(v1_share(model, u1, v1, target)[0]))
    shifts.append(float(step_shift_ratio(model, u1, v1, target)[0]))

    start = run(u1, v1, target, 0)
    pred0 = labels_at(start, mask.shape)
    matrices["t0"].update(mask, pred0)
    for update in updates:
      out = run(u1, v1, target, t_test, update=update)
      pred = labels_at(out, mask.shape)
      matrices[update].update(mask, pred)
      if update == "both":
        moved = out
        pred_t = pred
    # Reconstruction: soft / argmax / truth decoded by subnet-2.
    u3_0, u3_t = start["u3"], moved["u3"]
    errors["soft_t0"].append(_reconstruction_error(model, u3_0, target))
    errors["argmax_t0"].append(_reconstruction_error(
        model, _one_hot_logits(tf.argmax(u3_0, -1), num_classes), target))
    # The mask placed as the image is in the canvas (padding ignored).
    canvas_mask = tf.pad(
        tf.image.resize(mask[None, ..., None], fitted, method="nearest")[
            0, ..., 0],
        [[0, canvas_size - fitted[0]], [0, canvas_size - fitted[1]]],
        constant_values=IGNORE_LABEL)
    errors["truth"].append(_reconstruction_error(
        model, truth_logits(canvas_mask, size, u3_0, num_classes), target))
    errors["soft_t"].append(_reconstruction_error(model, u3_t, target))
    errors["argmax_t"].append(_reconstruction_error(
        model, _one_hot_logits(tf.argmax(u3_t, -1), num_classes), target))
    # Flipped labelled pixels, by class relation and outcome.
    changed = valid & (pred0 != pred_t)
    old, new, true = pred0[changed], pred_t[changed], mask[changed]
    outcome = np.where(new == true, 0, np.where(old == true, 1, 2))
    np.add.at(flips, (relations[old, new], outcome), 1)
    # Step-size sweep at a fixed step x count, objective at ten points.
    for i, (step_size, steps) in enumerate(sweep):
      points = np.unique(np.linspace(0, steps, 11).round().astype(int))
      u1_k, v1_k, done = u1, v1, 0
      trace = []
      for point in points:
        out = run(u1_k, v1_k, target, int(point - done), step_size=step_size)
        u1_k, v1_k, done = out["u1"], out["v1"], int(point)
        trace.append(float(out["objective"][0]))
      trace = np.interp(np.linspace(0, steps, 11), points, trace)
      sweep_objectives[i] += trace / max(trace[0], 1e-12)
      sweep_matrices[i].update(mask, labels_at(out, mask.shape))

  count = len(shares)
  if not count:
    raise ValueError("diagnose: no examples.")
  truth = np.asarray(errors["truth"])
  total_flips = max(int(flips.sum()), 1)
  return {
      "num_images": count,
      "t_test": int(t_test),
      "v1_share": {"median": float(np.median(shares)),
                   "mean": float(np.mean(shares))},
      "step_shift_ratio": {"median": float(np.median(shifts)),
                           "mean": float(np.mean(shifts)),
                           "cells": int(size[0] * size[1])},
      "miou": {key: m.mean_iou() for key, m in matrices.items()},
      "reconstruction": dict(
          {key: float(np.mean(v)) for key, v in errors.items()},
          truth_beats_argmax_t0=float(np.mean(
              truth < np.asarray(errors["argmax_t0"])))),
      "flipped": float(flips.sum() / max(labelled, 1)),
      "flips": {relation: {outcome: float(flips[r, o] / total_flips)
                           for o, outcome in enumerate(OUTCOMES)}
                for r, relation in enumerate(RELATIONS)},
      "sweep": [{"step_size": step_size, "steps": steps,
                 "miou": sweep_matrices[i].mean_iou(),
                 "objective": (sweep_objectives[i] / count).tolist()}
                for i, (step_size, steps) in enumerate(sweep)],
  }


def tag_classifier_scores(model, weak_examples, truth, tag_threshold=0.5):
  """F1 of the tag classifier alone vs the given tags, on weak images.

  The classifier alone is test mode at t = 0 (no tags given): sigmoid(v3)
  > threshold. Cleaned tags start from it and from the given tags, so where
  it is no better than the given tags, cleaning has little to gain.

  Args:
    model: a `DISModel`.
    weak_examples: iterable of batch-1 dicts with "image", "tags" (given)
      and "file_name".
    truth: {normalised file name: {"tags": [ids]}} (`web_tags.
      load_weak_truth`).
    tag_threshold: threshold on sigmoid(v3).

  Returns:
    {"classifier": tag scores, "given": tag scores} (precision, recall, f1
    of `dis_tf.metrics.tag_scores`), over the images found in `truth`.
  """
  predicted, given, true = [], [], []
  for index, example in enumerate(weak_examples):
    name = example["file_name"].numpy().reshape(-1)[0].decode("utf-8")
    entry = truth.get(os.path.normpath(name))
    if entry is None:
      raise ValueError(f"weak image #{index} ({name}) has no true tags.")
    image = tf.cast(example["image"], tf.float32)
    u1, v1 = model.features(image)
    probs = tf.nn.sigmoid(model.subnet3(u1, v1))[0].numpy()
    row = np.zeros_like(probs)
    row[0] = 1.0
    row[[int(i) for i in entry["tags"]]] = 1.0
    true.append(row)
    predicted.append((probs > tag_threshold).astype(np.float32))
    given.append(np.asarray(example["tags"])[0].astype(np.float32))
  true, predicted, given = map(np.stack, (true, predicted, given))
  # tag_scores leaves out background (column 0), which is always present.
  return {"classifier": dis_metrics.tag_scores(true, predicted),
          "given": dis_metrics.tag_scores(true, given)}
