"""Evaluation of a DIS model: labelmaps at several t_test, and tag scores.

The backbone runs once per image (and per flip / scale variant, through
`DISModel.infer`; `data.eval_batch_size` images at a time, each in its own
canvas: `predict_batch`); the latent loop then continues incrementally from
one t_test to the next (t = 0 -> 10 -> 30 takes 10 + 20 steps from the previous
(u1, v1)). Plain gradient descent is memoryless, so this is exactly the
result of running t steps from the start, and every count of `t_tests` is
scored in the same pass.

Each image is fitted into the model's canvas (`model.eval_crop_size`, long
side resized, aspect kept, padded: `dis_tf.image_ops.fit_to_canvas`), the
rule the export serves with. The final prediction is the model's
`tag_refinement` (off by default: softmax(u3); or the paper's tag
refinement, Sec. 2.1 "Final Prediction"); the class probabilities are mapped
back bilinearly to the original image size (averaged over flips / scales,
DeepLab-style multi-scale testing) and arg-maxed. Segmentation scores come
from one confusion matrix over the whole split with the ignore label 255
(`dis_tf.metrics.ConfusionMatrix`).

Library use (the tools are thin wrappers around these; the report formats
are in `dis_tf.reports`, tag cleaning in `dis_tf.tag_cleaning`):

  results = evaluate_model(model, dataset, t_tests=(0, 10, 30))
  markdown, csv = reports.format_table3(results, class_set.names)
  # class_set = dis_tf.classes.from_config(config): the run's classes.
  write_summaries(results, summary_dir(model_dir, "val"))  # TensorBoard

Size: over 500 lines because prediction (one image or a batch) and split
scoring share the compiled latent function and the per-image refinement
grid; splitting them would pass those between modules. The TensorBoard
record of an evaluation (the last 60 lines) could live apart; it stays here
beside the results dict it writes.
"""

import os
import time
import weakref

from absl import logging
import numpy as np
import tensorflow as tf

from dis_tf import flags as dis_flags
from dis_tf import image_ops
from dis_tf import metrics as dis_metrics
from dis_tf.modeling.subnets import parse_refinement  # noqa: F401 (API)
from dis_tf.modeling.subnets import refine_labelmap
from dis_tf.modeling.subnets import refinement_name

# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------

# One compiled latent loop per model (and update): the loop is many small
# ops, which graph mode runs several times faster than eager. The backbone
# stays eager (its convolutions gain little from tracing, and a fresh trace
# per image size would cost more than it saves).
_LATENT_FNS = weakref.WeakKeyDictionary()


def _latent_fn(model):
  """`model.latent` in a `tf.function`: one trace per model, mode and update.

  Every call is normalised to the same signature (tensors u1, v1, target,
  steps; the tags or None; the features always returned), so the first
  call (through `model.infer`) and the continuations from one t_test to the
  next share one trace, and images of every size share it too (they are
  fitted into one canvas). Test mode and training mode (tags) trace once
  each. The model's `latent_update` and `latent_train_update` are read
  when the function is made and are part of the cache key: a model whose
  update is changed (`dis_tf.selection` scores each one) gets a function
  for the new one instead of the stale trace of the old.
  """
  updates = (model.latent_update, model.latent_train_update)
  per_model = _LATENT_FNS.setdefault(model, {})
  if updates not in per_model:
    # A weak reference: a closure over the model itself would keep the
    # cache key alive and the model would never be freed (ablation tools
    # load many models in one process).
    model_ref = weakref.ref(model)
    test_update, train_update = updates

    def run(u1, v1, image_target, tags, steps):
      return model_ref().latent(
          u1, v1, image_target, tags=tags, steps=steps, return_features=True,
          update=test_update if tags is None else train_update)
    compiled = tf.function(run, reduce_retracing=True, autograph=False)

    def call(u1, v1, image_target, tags=None, steps=0, return_features=True,
             step_size=None, clip_norm=None, method=None, gram_fields=None):
      # `model.infer` passes the model's own settings as None.
      if not return_features or any(
          v is not None for v in (step_size, clip_norm, method, gram_fields)):
        raise ValueError("The compiled evaluation loop runs the model's own "
                         "latent settings and returns the features.")
      return compiled(u1, v1, image_target, tags,
                      tf.convert_to_tensor(steps, tf.int32))
    call.compiled = compiled
    per_model[updates] = call
  return per_model[updates]


def _as_batch(x, rank, name):
  """Adds the batch axis of a single example; checks batch size 1."""
  x = tf.convert_to_tensor(x)
  if x.shape.rank == rank - 1:
    x = x[None]
  if x.shape.rank != rank:
    raise ValueError(f"{name} must have rank {rank - 1} or {rank} (batch 1), "
                     f"got shape {x.shape}.")
  if x.shape[0] != 1:
    raise ValueError(f"{name}: evaluation takes batch-1 examples (images of "
                     f"different sizes), got batch {x.shape[0]}.")
  return x


def check_finite(image, name="image"):
  """Raises ValueError if `image` holds NaN or Inf values.

  The latent loop rejects non-finite steps and argmax maps NaN to class 0,
  so a NaN image would otherwise be scored silently as background.
  """
  finite = tf.math.is_finite(tf.cast(image, tf.float32))
  if not bool(tf.reduce_all(finite)):
    bad = int(tf.size(finite)) - int(tf.math.count_nonzero(finite))
    raise ValueError(f"{name}: the image has {bad} NaN or Inf value(s) of "
                     f"{int(tf.size(finite))}; evaluation needs finite "
                     "pixels.")


def _variants(flip, scales):
  variants = []
  for scale in scales:
    variants.append((float(scale), False))
    if flip:
      variants.append((float(scale), True))
  return variants


def predict(model, image, t_tests, flip=False, scales=(1.0,), tags=None,
            with_reconstruction=False, compiled=True, refinements=None):
  """DIS predictions at several step counts from one backbone pass per variant.

  The image is fitted into the model's canvas (`model.eval_crop_size`) by
  `dis_tf.image_ops.fit_to_canvas`, the rule the export serves with, and
  the prediction is mapped back to the original size by
  `image_ops.canvas_to_original`. `predict_batch` of one image.

  Args:
    model: a `DISModel`.
    image: [1, H, W, 3] or [H, W, 3] normalised image.
    t_tests: step counts (any order; duplicates ignored).
    flip: also run the left-right flipped image and average.
    scales: canvas scale factors (canvas side round(S * scale));
      probabilities of every scale are mapped to H x W and averaged
      (DeepLab multi-scale testing).
    tags: optional [1, C] or [C] tags: training-mode inference (tag
      cleaning); None = test mode.
    with_reconstruction: also return z3 and the image target.
    compiled: run the latent loop in a `tf.function`.
    refinements: test mode: the final predictions to compute, as
      `tag_refinement` values (None = off, 0.0 = the paper's, b = bias);
      default: the model's own. All come from the same (u3, v3).

  Returns:
    {t: {"probabilities": float32 [H, W, C] (of the first refinement,
    original size, averaged over variants), "by_refinement": {refinement:
    [H, W, C]}, "tag_probabilities": float32 [C] (averaged, background 1),
    "objective": float (mean latent objective over variants)}}; with
    `with_reconstruction` also "reconstruction" (z3, normalised, [h, w, 3]
    over the fitted image, of the unscaled unflipped pass if any, else of
    the first variant) and "image_target" ([h, w, 3], same pass).
  """
  return predict_batch(
      model, [image], t_tests, flip=flip, scales=scales,
      tags=None if tags is None else [tags],
      with_reconstruction=with_reconstruction, compiled=compiled,
      refinements=refinements)[0]


def predict_batch(model, images, t_tests, flip=False, scales=(1.0,),
                  tags=None, with_reconstruction=False, compiled=True,
                  refinements=None):
  """`predict` for several images, their latent loops run as one batch.

  Each image is fitted into its own canvas (so the images may differ in
  size) and the canvases are stacked: the backbone and the latent steps run
  once per variant for the whole batch. Every latent step is per example
  (its objective, gradient clip and monotone check; `dis_tf.modeling.
  latent`), so an image's prediction does not depend on the others of its
  batch, up to float rounding in the backbone's batched convolutions. At
  batch 1 the loop of the tiny preset is dispatch-bound: on the demo's
  model, 32 images of val[:100] at 30 steps took 39.7 ms per image one at a
  time and 7.7 ms in batches of 16, with the same arg-max on every feature
  cell (2026-12-07, AMD EPYC, 2 cores).

  Args:
    model: a `DISModel`.
    images: a list of [1, H, W, 3] or [H, W, 3] normalised images.
    t_tests: step counts (any order; duplicates ignored).
    flip: also run the left-right flipped images and average.
    scales: canvas scale factors (see `predict`).
    tags: optional list of [1, C] or [C] tags, one per image: training-mode
      inference (tag cleaning); None = test mode.
    with_reconstruction: also return z3 and the image target.
    compiled: run the latent loop in a `tf.function`.
    refinements: test mode: the final predictions to compute (see
      `predict`).

  Returns:
    A list with `predict`'s result for each image, in order.
  """
  if not images:
    raise ValueError("predict_batch: no images.")
  images = [tf.cast(_as_batch(x, 4, "image"), tf.float32) for x in images]
  for i, x in enumerate(images):
    check_finite(x, f"image {i}" if len(images) > 1 else "image")
  if tags is not None:
    if len(tags) != len(images):
      raise ValueError(f"predict_batch: {len(tags)} tags for {len(images)} "
                       "images.")
    tags = tf.concat([tf.cast(_as_batch(x, 2, "tags"), tf.float32)
                      for x in tags], 0)
    if refinements is not None:
      raise ValueError("refinements are for test mode (tags=None); "
                       "training mode refines by the tags as the paper does.")
  if refinements is None:
    refinements = [model.tag_refinement]
  refinements = list(dict.fromkeys(refinements))
  t_tests = dis_flags.parse_t_tests(list(t_tests), "t_tests")
  latent_fn = _latent_fn(model) if compiled else model.latent
  originals = [(int(x.shape[1]), int(x.shape[2])) for x in images]
  variants = _variants(flip, scales)
  # The reconstruction shown is that of the plain pass, if there is one.
  shown = (1.0, False) if (1.0, False) in variants else variants[0]
  sums = [{t: {"by_refinement": {r: 0.0 for r in refinements},
               "tag_probabilities": 0.0, "objective": 0.0} for t in t_tests}
          for _ in images]
  extras = [{} for _ in images]
  for scale, flipped in variants:
    canvas_size = max(8, int(round(model.eval_crop_size * scale)))
    canvases, fitted = [], []
    for x in images:
      x = tf.reverse(x, axis=[2]) if flipped else x
      canvas, size = image_ops.fit_to_canvas(x, canvas_size, normalized=True)
      canvases.append(canvas)
      fitted.append(size)
    x = tf.concat(canvases, 0)
    out, done, matrices = None, 0, [None] * len(images)
    for t in t_tests:
      steps = tf.constant(t - done, tf.int32)
      if out is None:  # The backbone, once per variant.
        out = model.infer(x, steps, tags=tags, return_features=True,
                          latent_fn=latent_fn)
        target = out["image_target"]
      else:  # The descent continues from the previous t's (u1, v1).
        out = latent_fn(out["u1"], out["v1"], target, tags=tags, steps=steps,
                        return_features=True)
      done = t
      for refinement in refinements:
        probs = (out["probabilities"] if tags is not None else
                 refine_labelmap(out["u3"], out["v3"], refinement))
        for i, acc in enumerate(sums):
          if matrices[i] is None:  # One pair per image and variant.
            matrices[i] = image_ops.canvas_to_original_matrices(
                tf.shape(probs)[1:3], fitted[i], originals[i], canvas_size)
          p = image_ops.resize_by_matrices(probs[i], matrices[i])
          if flipped:
            p = tf.reverse(p, axis=[1])
          acc[t]["by_refinement"][refinement] += p.numpy()
      tag_probabilities = out["tag_probabilities"].numpy()
      objective = out["objective"].numpy()
      for i, acc in enumerate(sums):
        acc[t]["tag_probabilities"] += tag_probabilities[i]
        acc[t]["objective"] += float(objective[i])
      if with_reconstruction and (scale, flipped) == shown:
        z3 = model.subnet2(out["u3"]).numpy()
        image_target = target.numpy()
        h, w = int(target.shape[1]), int(target.shape[2])
        for i, size in enumerate(fitted):
          # The feature cells that cover the fitted image, not the padding.
          rows = -(-int(size[0]) * h // canvas_size)
          cols = -(-int(size[1]) * w // canvas_size)
          extras[i][t] = (z3[i, :rows, :cols], image_target[i, :rows, :cols])
  n = float(len(variants))
  results = []
  for i, image_sums in enumerate(sums):
    result = {}
    for t in t_tests:
      by_refinement = {r: (v / n).astype(np.float32)
                       for r, v in image_sums[t]["by_refinement"].items()}
      result[t] = {
          "probabilities": by_refinement[refinements[0]],
          "by_refinement": by_refinement,
          "tag_probabilities": (image_sums[t]["tag_probabilities"] / n
                                ).astype(np.float32),
          "objective": image_sums[t]["objective"] / n,
      }
      if with_reconstruction:
        result[t]["reconstruction"], result[t]["image_target"] = (
            extras[i][t])
    results.append(result)
  return results


def predict_probabilities(model, image, t_tests, flip=False, scales=(1.0,)):
  """Refined class probabilities at the original size, per step count.

  For ensembles: average the returned maps of several models / settings.

  Args:
    model: a `DISModel`.
    image: [1, H, W, 3] or [H, W, 3] normalised image.
    t_tests: step counts.
    flip: average with the flipped image.
    scales: input scales to average over.

  Returns:
    {t: float32 [H, W, C] probabilities (sum to 1 over C)}.
  """
  out = predict(model, image, t_tests, flip=flip, scales=scales)
  return {t: v["probabilities"] for t, v in out.items()}


# ---------------------------------------------------------------------------
# Split evaluation
# ---------------------------------------------------------------------------


def to_numpy(x):
  """A tensor or array-like as a NumPy array."""
  return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def example_file_name(example, index):
  """The example's file name as str, or "#index" when it has none.

  Args:
    example: dict, optionally with "file_name" (bytes / str, any shape with
      one element).
    index: position in the dataset, used when there is no file name.

  Returns:
    str.
  """
  if "file_name" not in example:
    return f"#{index}"
  name = to_numpy(example["file_name"]).reshape(-1)[0]
  return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def setting_name(t, flip=False, scales=(1.0,), prefix="DIS"):
  """Row label of one setting, e.g. "DIS t_ts=30 +flip +MS(0.75,1,1.25)"."""
  name = f"{prefix} t_ts={t}"
  if flip:
    name += " +flip"
  if tuple(scales) != (1.0,):
    name += " +MS(" + ",".join(f"{s:g}" for s in scales) + ")"
  return name


def evaluate_model(model, dataset, t_tests, flip=False, scales=(1.0,),
                   num_classes=21, tag_threshold=0.5, limit=None,
                   name_prefix="DIS", log_every=50, compiled=True,
                   refinements=None, per_image=False, batch_size=1):
  """Scores every step count of `t_tests` over a split in one pass.

  Args:
    model: a `DISModel`.
    dataset: iterable of batch-1 dicts with "image" [1, H, W, 3] (normalised)
      and optionally "mask" [1, H, W] (255 = ignore), "tags" [1, C]
      (ground-truth multi-hot), "file_name" [1].
    t_tests: step counts to score.
    flip: flip averaging.
    scales: multi-scale averaging.
    num_classes: classes of the confusion matrix.
    tag_threshold: sigmoid(v3) threshold giving the predicted tags.
    limit: stop after this many images (None: all).
    name_prefix: prefix of the row labels.
    log_every: log progress every so many images (0: never).
    compiled: run the latent loop in a `tf.function`.
    refinements: the final predictions to score, as `tag_refinement` values
      (None = off, 0.0 = the paper's, b = bias); default: the model's own.
      Every refinement is scored at every t from the same pass.
    per_image: also keep each image's confusion matrix (for the paired
      bootstrap of `dis_tf.selection`).
    batch_size: images whose latent loops run as one batch
      (`predict_batch`; `data.eval_batch_size`). The scores do not depend
      on it up to float rounding.

  Returns:
    Dict with "settings" (one dict per refinement and t, refinements in the
    given order, then increasing t: "name", "t_test", "refinement"
    (`refinement_name`), "pixel_accuracy", "mean_iou", "per_class_iou"
    (list, NaN for classes absent from labels and predictions),
    "confusion_matrix" (int64 ndarray), "tags" (precision / recall / F1 /
    mAP or None), "objective" (mean latent objective), with `per_image`
    "image_matrices" (int64 [N, C, C])), "t_tests", "refinements", "flip",
    "scales", "num_images", "num_tagged_images", "seconds",
    "seconds_per_image".
  """
  t_tests = dis_flags.parse_t_tests(list(t_tests), "t_tests")
  scales = dis_flags.parse_scales(list(scales), "scales")
  if refinements is None:
    refinements = [model.tag_refinement]
  refinements = list(dict.fromkeys(refinements))
  keys = [(r, t) for r in refinements for t in t_tests]
  matrices = {k: dis_metrics.ConfusionMatrix(num_classes) for k in keys}
  image_matrices = {k: [] for k in keys}
  tag_scores_by_t = {t: [] for t in t_tests}
  objectives = {t: [] for t in t_tests}
  true_tags = []
  num_images = 0
  if int(batch_size) < 1:
    raise ValueError(f"batch_size={batch_size} (data.eval_batch_size): "
                     "must be >= 1.")
  start = time.time()

  def score(chunk):
    nonlocal num_images
    outs = predict_batch(model, [example["image"] for _, example in chunk],
                         t_tests, flip=flip, scales=scales, compiled=compiled,
                         refinements=refinements)
    for (index, example), out in zip(chunk, outs):
      mask = None
      if "mask" in example:
        mask = to_numpy(example["mask"])
        mask = mask.reshape(mask.shape[-2:])
        shape = out[t_tests[0]]["probabilities"].shape[:2]
        if mask.shape != shape:
          raise ValueError(
              f"{example_file_name(example, index)}: mask shape "
              f"{mask.shape} differs from image shape {shape}.")
      for refinement, t in keys:
        if mask is not None:
          prediction = np.argmax(out[t]["by_refinement"][refinement],
                                 axis=-1)
          if per_image:
            one = dis_metrics.ConfusionMatrix(num_classes)
            one.update(mask, prediction)
            image_matrices[(refinement, t)].append(one.matrix)
            matrices[(refinement, t)].matrix += one.matrix
          else:
            matrices[(refinement, t)].update(mask, prediction)
      for t in t_tests:
        tag_scores_by_t[t].append(out[t]["tag_probabilities"])
        objectives[t].append(out[t]["objective"])
      if "tags" in example:
        true_tags.append(to_numpy(example["tags"]).reshape(-1))
      num_images += 1
      if log_every and num_images % log_every == 0:
        logging.info("evaluated %d images (%.2f s/image)", num_images,
                     (time.time() - start) / num_images)

  chunk = []
  for index, example in enumerate(dataset):
    if limit is not None and index >= limit:
      break
    if "image" not in example:
      raise ValueError(f"example {index}: no 'image' key (keys: "
                       f"{sorted(example)}).")
    check_finite(example["image"], example_file_name(example, index))
    chunk.append((index, example))
    if len(chunk) == batch_size:
      score(chunk)
      chunk = []
  if chunk:
    score(chunk)
  seconds = time.time() - start
  settings = []
  have_tags = bool(true_tags) and len(true_tags) == num_images
  tags_by_t = {}
  for t in t_tests:
    tags_by_t[t] = None
    if have_tags:
      truth = np.stack(true_tags)
      scores = np.stack(tag_scores_by_t[t])
      predicted = (scores > tag_threshold).astype(np.float32)
      tags_by_t[t] = dis_metrics.tag_scores(truth, predicted)
      tags_by_t[t]["map"] = dis_metrics.tag_mean_average_precision(truth,
                                                                   scores)
  for refinement, t in keys:
    matrix = matrices[(refinement, t)]
    name = setting_name(t, flip, scales, name_prefix)
    if refinement is not None:
      name += f" refine={refinement_name(refinement)}"
    setting = {
        "name": name,
        "t_test": t,
        "refinement": refinement_name(refinement),
        "pixel_accuracy": matrix.pixel_accuracy(),
        "mean_iou": matrix.mean_iou(),
        "per_class_iou": [float(v) for v in matrix.per_class_iou()],
        "confusion_matrix": matrix.matrix.copy(),
        "tags": tags_by_t[t],
        "objective": float(np.mean(objectives[t])) if objectives[t] else None,
    }
    if per_image:
      setting["image_matrices"] = np.asarray(
          image_matrices[(refinement, t)], np.int64).reshape(
              -1, num_classes, num_classes)
    settings.append(setting)
  return {
      "settings": settings,
      "t_tests": t_tests,
      "refinements": [refinement_name(r) for r in refinements],
      "flip": bool(flip),
      "scales": list(scales),
      "num_classes": num_classes,
      "tag_threshold": tag_threshold,
      "num_images": num_images,
      "num_tagged_images": len(true_tags),
      "seconds": seconds,
      "seconds_per_image": seconds / num_images if num_images else None,
  }


# ---------------------------------------------------------------------------
# TensorBoard
# ---------------------------------------------------------------------------


def summary_dir(model_dir, split, flip=False, scales=(1.0,)):
  """The TensorBoard run of an evaluation: one per split and test variant.

  `MODEL_DIR/logs/eval/<split>` (file-name safe: "val[100:]" ->
  "val_100__"), with "_flip" and "_ms<scales>" for flip and multi-scale
  averaging, so that TensorBoard draws the variants of a split as runs
  of one chart.

  Args:
    model_dir: the training run.
    split: the evaluated split.
    flip: flip averaging.
    scales: test scales.

  Returns:
    The directory path.
  """
  name = dis_flags.split_file_name(split)
  if flip:
    name += "_flip"
  if tuple(scales) != (1.0,):
    name += "_ms" + "_".join(f"{s:g}" for s in scales)
  return os.path.join(model_dir, "logs", "eval", name)


SUMMARY_TAGS = {"eval/miou": "mean_iou", "eval/pixel_accuracy":
                "pixel_accuracy"}


def write_summaries(results, log_dir):
  """Writes the mIoU and pixel accuracy of each t_test as TensorBoard scalars.

  Tags `eval/miou` and `eval/pixel_accuracy` (fractions, as in
  results.json), step = t_test: TensorBoard's chart is the curve of mIoU
  against t_test. The event files already in `log_dir` are removed first:
  the latest evaluation of a split and variant replaces the earlier one (as
  its reports do), instead of two points at each step.

  Args:
    results: the dict of `evaluate_model`.
    log_dir: the run directory (see `summary_dir`).

  Returns:
    `log_dir`.
  """
  for old in tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*")):
    tf.io.gfile.remove(old)
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default():
    several = len(results.get("refinements", ())) > 1
    for setting in results["settings"]:
      for tag, key in SUMMARY_TAGS.items():
        value = setting[key]
        if several:  # One curve per final prediction.
          tag = f"{tag}_refine_{setting['refinement']}"
        if value is not None and np.isfinite(value):
          tf.summary.scalar(tag, value, step=setting["t_test"])
  writer.close()
  return log_dir
