"""Evaluation of a DIS model: labelmaps at several t_test, tags, tag cleaning.

The backbone runs once per image (and per flip / scale variant); the latent
loop then continues incrementally from one t_test to the next (t = 0 -> 10 ->
30 takes 10 + 20 steps from the previous (u1, v1)). Plain gradient descent is
memoryless, so this is exactly the result of running t steps from the start,
and every count of `t_tests` is scored in the same pass.

Predictions follow the paper (Sec. 2.1 "Final Prediction"): the tag-refined
class probabilities are upsampled bilinearly to the original image size
(averaged over flips / scales, DeepLab-style multi-scale testing) and
arg-maxed. Segmentation scores come from one confusion matrix over the whole
split with the ignore label 255 (`dis_tf.metrics.ConfusionMatrix`).

Library use (the tools are thin wrappers around these):

  results = evaluate_model(model, dataset, t_tests=(0, 10, 30))
  markdown, csv = format_table3(results, VOC_CLASSES)
"""

import csv
import io
import json
import os
import time
import weakref

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from dis_tf import atomic
from dis_tf import classes
from dis_tf import image_ops
from dis_tf import metrics as dis_metrics
from dis_tf import model_dir as model_dir_lib

# The paper's Table 3 column headers for the VOC classes.
PAPER_SHORT_NAMES = {
    "background": "bg", "aeroplane": "areo", "bicycle": "bike",
    "bird": "bird", "boat": "boat", "bottle": "bottle", "bus": "bus",
    "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "diningtable": "table", "dog": "dog", "horse": "horse",
    "motorbike": "mbike", "person": "person", "pottedplant": "plant",
    "sheep": "sheep", "sofa": "sofa", "train": "train", "tvmonitor": "tv",
}


# ---------------------------------------------------------------------------
# Flag parsing helpers (shared by the tools, so errors name the flag)
# ---------------------------------------------------------------------------


def parse_t_tests(values, flag_name="--t_test"):
  """Parses step counts: "0,10,30", ["0", "10"] or ints -> sorted unique ints.

  Args:
    values: a comma-separated string, or a list of strings / ints.
    flag_name: named in errors.

  Returns:
    Sorted list of unique non-negative ints.

  Raises:
    ValueError: empty, not an integer, or negative.
  """
  if isinstance(values, (str, int)):
    values = [values]
  items = []
  for value in values:
    items.extend(str(value).split(","))
  result = set()
  for item in items:
    item = item.strip()
    if not item:
      continue
    try:
      number = int(item)
    except ValueError:
      raise ValueError(f"{flag_name}: {item!r} is not an integer.") from None
    if number < 0:
      raise ValueError(f"{flag_name}: {number} is negative; step counts "
                       "must be >= 0.")
    result.add(number)
  if not result:
    raise ValueError(f"{flag_name}: no step count given (e.g. 0,10,30).")
  return sorted(result)


def parse_scales(values, flag_name="--scales"):
  """Parses test scales: "0.75,1,1.25" or a list -> tuple of positive floats.

  Args:
    values: a comma-separated string, or a list of strings / floats.
    flag_name: named in errors.

  Returns:
    Tuple of floats, in the given order, duplicates removed.

  Raises:
    ValueError: empty, not a number, or not positive.
  """
  if isinstance(values, (str, int, float)):
    values = [values]
  items = []
  for value in values:
    items.extend(str(value).split(","))
  result = []
  for item in items:
    item = item.strip()
    if not item:
      continue
    try:
      scale = float(item)
    except ValueError:
      raise ValueError(f"{flag_name}: {item!r} is not a number.") from None
    if not np.isfinite(scale) or scale <= 0:
      raise ValueError(f"{flag_name}: {item} must be a positive number.")
    if scale not in result:
      result.append(scale)
  if not result:
    raise ValueError(f"{flag_name}: no scale given (e.g. 0.75,1,1.25).")
  return tuple(result)


# ---------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------

# One compiled latent function per (model, tags given?): the latent loop is
# many small ops, which graph mode runs several times faster than eager. The
# backbone stays eager (its convolutions gain little from tracing, and a
# fresh trace per image size would cost more than it saves).
_LATENT_FNS = weakref.WeakKeyDictionary()


def _latent_fn(model, with_tags):
  fns = _LATENT_FNS.setdefault(model, {})
  key = bool(with_tags)
  if key not in fns:
    # A weak reference: a closure over the model itself would keep the
    # cache key alive and the model would never be freed (ablation tools
    # load many models in one process).
    model_ref = weakref.ref(model)
    if with_tags:
      def run(u1, v1, target, steps, tags):
        return model_ref().latent(u1, v1, target, tags=tags, steps=steps,
                                  return_features=True)
    else:
      def run(u1, v1, target, steps):
        return model_ref().latent(u1, v1, target, steps=steps,
                                  return_features=True)
    fns[key] = tf.function(run, reduce_retracing=True)
  return fns[key]


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


def _variants(flip, scales):
  variants = []
  for scale in scales:
    variants.append((float(scale), False))
    if flip:
      variants.append((float(scale), True))
  return variants


def predict(model, image, t_tests, flip=False, scales=(1.0,), tags=None,
            with_reconstruction=False, compiled=True):
  """DIS predictions at several step counts from one backbone pass per variant.

  Args:
    model: a `DISModel`.
    image: [1, H, W, 3] or [H, W, 3] normalised image.
    t_tests: step counts (any order; duplicates ignored).
    flip: also run the left-right flipped image and average.
    scales: input scale factors; probabilities of every scale are upsampled
      to H x W and averaged (DeepLab multi-scale testing).
    tags: optional [1, C] or [C] tags: training-mode inference (tag
      cleaning); None = test mode.
    with_reconstruction: also return z3 and the image target.
    compiled: run the latent loop in a `tf.function`.

  Returns:
    {t: {"probabilities": float32 [H, W, C] (refined, original size,
    averaged over variants), "tag_probabilities": float32 [C] (averaged,
    background 1), "objective": float (mean latent objective over
    variants)}}; with `with_reconstruction` also "reconstruction" (z3,
    normalised, [h, w, 3], of the unscaled unflipped pass if any, else of
    the first variant) and "image_target" ([h, w, 3], same pass).
  """
  image = tf.cast(_as_batch(image, 4, "image"), tf.float32)
  if tags is not None:
    tags = tf.cast(_as_batch(tags, 2, "tags"), tf.float32)
  t_tests = parse_t_tests(list(t_tests), "t_tests")
  height, width = int(image.shape[1]), int(image.shape[2])
  variants = _variants(flip, scales)
  # The reconstruction shown is that of the plain pass, if there is one.
  shown = (1.0, False) if (1.0, False) in variants else variants[0]
  sums = {t: {"probabilities": 0.0, "tag_probabilities": 0.0,
              "objective": 0.0} for t in t_tests}
  extras = {}
  for scale, flipped in variants:
    x = image
    if scale != 1.0:
      size = (max(1, int(round(height * scale))),
              max(1, int(round(width * scale))))
      x = tf.image.resize(x, size, method=tf.image.ResizeMethod.BILINEAR)
    if flipped:
      x = tf.reverse(x, axis=[2])
    u1, v1 = model.backbone(x, training=False)
    target = image_ops.image_target(x, tf.shape(u1)[1:3])
    done = 0
    for t in t_tests:
      steps = tf.constant(t - done, tf.int32)
      if compiled:
        fn = _latent_fn(model, tags is not None)
        args = (u1, v1, target, steps) + ((tags,) if tags is not None else ())
        out = fn(*args)
      else:
        out = model.latent(u1, v1, target, tags=tags, steps=steps,
                           return_features=True)
      u1, v1, done = out["u1"], out["v1"], t
      probs = tf.image.resize(out["probabilities"], (height, width),
                              method=tf.image.ResizeMethod.BILINEAR)
      if flipped:
        probs = tf.reverse(probs, axis=[2])
      acc = sums[t]
      acc["probabilities"] += probs[0].numpy()
      acc["tag_probabilities"] += out["tag_probabilities"][0].numpy()
      acc["objective"] += float(out["objective"][0])
      if with_reconstruction and (scale, flipped) == shown:
        extras[t] = (model.subnet2(out["u3"])[0].numpy(), target[0].numpy())
  n = float(len(variants))
  results = {}
  for t in t_tests:
    probs = (sums[t]["probabilities"] / n).astype(np.float32)
    results[t] = {
        "probabilities": probs,
        "tag_probabilities": (sums[t]["tag_probabilities"] / n).astype(
            np.float32),
        "objective": sums[t]["objective"] / n,
    }
    if with_reconstruction:
      results[t]["reconstruction"], results[t]["image_target"] = extras[t]
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
                   name_prefix="DIS", log_every=50, compiled=True):
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

  Returns:
    Dict with "settings" (one dict per t, in increasing t: "name", "t_test",
    "pixel_accuracy", "mean_iou", "per_class_iou" (list, NaN for classes
    absent from labels and predictions), "confusion_matrix" (int64
    ndarray), "tags" (precision / recall / F1 / mAP or None), "objective"
    (mean latent objective)), "t_tests", "flip", "scales", "num_images",
    "num_tagged_images", "seconds", "seconds_per_image".
  """
  t_tests = parse_t_tests(list(t_tests), "t_tests")
  scales = parse_scales(list(scales), "scales")
  matrices = {t: dis_metrics.ConfusionMatrix(num_classes) for t in t_tests}
  tag_scores_by_t = {t: [] for t in t_tests}
  objectives = {t: [] for t in t_tests}
  true_tags = []
  num_images = 0
  start = time.time()
  for index, example in enumerate(dataset):
    if limit is not None and num_images >= limit:
      break
    if "image" not in example:
      raise ValueError(f"example {index}: no 'image' key (keys: "
                       f"{sorted(example)}).")
    out = predict(model, example["image"], t_tests, flip=flip,
                  scales=scales, compiled=compiled)
    mask = None
    if "mask" in example:
      mask = to_numpy(example["mask"])
      mask = mask.reshape(mask.shape[-2:])
      shape = out[t_tests[0]]["probabilities"].shape[:2]
      if mask.shape != shape:
        raise ValueError(
            f"{example_file_name(example, index)}: mask shape {mask.shape} "
            f"differs from image shape {shape}.")
    for t in t_tests:
      if mask is not None:
        prediction = np.argmax(out[t]["probabilities"], axis=-1)
        matrices[t].update(mask, prediction)
      tag_scores_by_t[t].append(out[t]["tag_probabilities"])
      objectives[t].append(out[t]["objective"])
    if "tags" in example:
      true_tags.append(to_numpy(example["tags"]).reshape(-1))
    num_images += 1
    if log_every and num_images % log_every == 0:
      logging.info("evaluated %d images (%.2f s/image)", num_images,
                   (time.time() - start) / num_images)
  seconds = time.time() - start
  settings = []
  have_tags = bool(true_tags) and len(true_tags) == num_images
  for t in t_tests:
    matrix = matrices[t]
    tags = None
    if have_tags:
      truth = np.stack(true_tags)
      scores = np.stack(tag_scores_by_t[t])
      predicted = (scores > tag_threshold).astype(np.float32)
      tags = dis_metrics.tag_scores(truth, predicted)
      tags["map"] = dis_metrics.tag_mean_average_precision(truth, scores)
    settings.append({
        "name": setting_name(t, flip, scales, name_prefix),
        "t_test": t,
        "pixel_accuracy": matrix.pixel_accuracy(),
        "mean_iou": matrix.mean_iou(),
        "per_class_iou": [float(v) for v in matrix.per_class_iou()],
        "confusion_matrix": matrix.matrix.copy(),
        "tags": tags,
        "objective": float(np.mean(objectives[t])) if objectives[t] else None,
    })
  return {
      "settings": settings,
      "t_tests": t_tests,
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
# Reports
# ---------------------------------------------------------------------------


def _settings_of(results):
  """Rows from one results dict, a list of them, or a list of settings."""
  if isinstance(results, dict):
    results = [results]
  rows = []
  for item in results:
    if "settings" in item:
      rows.extend(item["settings"])
    else:
      rows.append(item)
  return rows


def _short(name):
  return PAPER_SHORT_NAMES.get(name, name)


def format_table3(results, class_names=classes.VOC_CLASSES,
                  include_background=True, percent=True, digits=1):
  """Per-class IoU in the layout of the paper's Table 3.

  One row per setting, one column per class (the paper's abbreviations for
  VOC), mIoU last. The paper's table omits background; here it is the first
  column unless `include_background=False`, so the row's mIoU is the mean of
  its shown columns (mIoU always includes every class, as in VOC).

  Args:
    results: an `evaluate_model` dict, a list of them, or a list of setting
      dicts (each with "name", "per_class_iou", "mean_iou").
    class_names: class names, index = class id.
    include_background: show the class-0 column.
    percent: scale IoUs to percent, as the paper does.
    digits: decimals.

  Returns:
    (markdown, csv) strings. Classes absent from a split print "-" in
    Markdown and an empty CSV cell.
  """
  rows = _settings_of(results)
  first = 0 if include_background else 1
  headers = ["setting"] + [_short(n) for n in class_names[first:]] + ["mIoU"]
  factor = 100.0 if percent else 1.0

  def cell(value, empty):
    if value is None or not np.isfinite(value):
      return empty
    return f"{factor * value:.{digits}f}"

  md_lines = ["| " + " | ".join(headers) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
  csv_buffer = io.StringIO()
  writer = csv.writer(csv_buffer, lineterminator="\n")
  writer.writerow(headers)
  for row in rows:
    ious = list(row["per_class_iou"])[first:len(class_names)]
    md_cells = [row["name"]] + [cell(v, "-") for v in ious] + [
        cell(row["mean_iou"], "-")]
    csv_cells = [row["name"]] + [cell(v, "") for v in ious] + [
        cell(row["mean_iou"], "")]
    md_lines.append("| " + " | ".join(md_cells) + " |")
    writer.writerow(csv_cells)
  return "\n".join(md_lines) + "\n", csv_buffer.getvalue()


def format_summary(results, percent=True):
  """Markdown table: pixel accuracy, mIoU and tag P / R / F1 / mAP per row.

  Args:
    results: as for `format_table3`.
    percent: scale to percent.

  Returns:
    Markdown string.
  """
  factor = 100.0 if percent else 1.0
  lines = ["| setting | pixel acc | mIoU | tag P | tag R | tag F1 | tag mAP |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for row in _settings_of(results):
    tags = row.get("tags") or {}

    def fmt(value):
      return "-" if value is None else f"{factor * value:.1f}"

    lines.append("| " + " | ".join([
        row["name"], fmt(row.get("pixel_accuracy")), fmt(row.get("mean_iou")),
        fmt(tags.get("precision")), fmt(tags.get("recall")),
        fmt(tags.get("f1")), fmt(tags.get("map"))]) + " |")
  return "\n".join(lines) + "\n"


def to_jsonable(value):
  """Nested dicts / lists / arrays as plain JSON values (NaN, Inf -> None)."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if np.isfinite(value) else None  # JSON has no NaN.
  return value


def results_to_json(results, class_names=classes.VOC_CLASSES, extra=None):
  """A JSON-serialisable copy of `evaluate_model` results (NaN -> null).

  Args:
    results: an `evaluate_model` dict.
    class_names: stored alongside, and used to name per-class IoUs.
    extra: optional dict merged in (e.g. model_dir, split).

  Returns:
    A dict of plain Python values.
  """
  out = to_jsonable(results)
  out["class_names"] = list(class_names)
  for row in out["settings"]:
    row["per_class_iou_by_name"] = dict(zip(class_names, row["per_class_iou"]))
  if extra:
    out.update(to_jsonable(extra))
  return out


def write_reports(results, output_dir, class_names=classes.VOC_CLASSES,
                  extra=None):
  """Writes table3.md, table3.csv, summary.md and results.json.

  Args:
    results: an `evaluate_model` dict.
    output_dir: created if missing.
    class_names: class names.
    extra: merged into the JSON.

  Returns:
    Dict name -> path written.
  """
  os.makedirs(output_dir, exist_ok=True)
  markdown, csv_text = format_table3(results, class_names)
  summary = format_summary(results)
  paths = {
      "table3_md": os.path.join(output_dir, "table3.md"),
      "table3_csv": os.path.join(output_dir, "table3.csv"),
      "summary_md": os.path.join(output_dir, "summary.md"),
      "json": os.path.join(output_dir, "results.json"),
  }
  atomic.write_text(paths["table3_md"], markdown)
  atomic.write_text(paths["table3_csv"], csv_text)
  atomic.write_text(paths["summary_md"], summary)
  atomic.write_text(paths["json"], json.dumps(
      results_to_json(results, class_names, extra), indent=2) + "\n")
  return paths


# ---------------------------------------------------------------------------
# Tag cleaning (training-mode inference on weak images)
# ---------------------------------------------------------------------------


def save_palette_png(labelmap, path):
  """Writes class ids as a mode-"P" PNG with the VOC palette.

  Args:
    labelmap: [H, W] integer ids in 0..255.
    path: output file (parent folders are created).
  """
  labelmap = np.asarray(labelmap)
  if labelmap.min(initial=0) < 0 or labelmap.max(initial=0) > 255:
    raise ValueError(f"{path}: label ids must be in 0..255.")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image = Image.fromarray(labelmap.astype(np.uint8), mode="P")
  image.putpalette(classes.voc_palette().reshape(-1).tolist())
  image.save(path)


def _labelmap_relpath(file_name):
  """labelmaps/<file name without extension>.png, kept inside the folder."""
  rel = os.path.normpath(file_name.replace("\\", "/"))
  if os.path.isabs(rel) or rel.startswith(".."):
    rel = os.path.basename(rel)
  return os.path.join("labelmaps", os.path.splitext(rel)[0] + ".png")


def _ids(multi_hot):
  """Object class ids (>= 1) of a multi-hot vector."""
  return [int(i) for i in np.flatnonzero(np.asarray(multi_hot) > 0.5)
          if i > 0]


def clean_tags(model, dataset, output_dir, t_train, tag_threshold=0.5,
               truth=None, limit=None, class_names=classes.VOC_CLASSES,
               log_every=50, compiled=True):
  """Training-mode latent inference on weak images: cleaned tags + labelmaps.

  For each image the given (noisy) tags drive `t_train` latent steps
  (paper Sec. 3.1); the cleaned tags are sigmoid(v3) > `tag_threshold`, the
  labelmap the argmax of the refined probabilities at the original size.

  Writes `output_dir/cleaned_tags.jsonl` (one line per image: "file_name",
  "given_tags", "cleaned_tags" (class ids 1..C-1), their names,
  "tag_probabilities" (list indexed by class id, background 1),
  "labelmap" (path relative to output_dir)) and the labelmaps as VOC palette
  PNGs under `output_dir/labelmaps/`.

  Args:
    model: a `DISModel`.
    dataset: iterable of batch-1 dicts with "image", "tags" (given, noisy)
      and "file_name".
    output_dir: created if missing.
    t_train: latent steps.
    tag_threshold: threshold of the cleaned tags.
    truth: optional dict file name -> {"tags": [ids], "mask": array or None}
      (`dis_tf.data.web_tags.load_weak_truth`): enables the before / after
      scores.
    limit: stop after this many images.
    class_names: names written next to ids.
    log_every: progress log period (0: never).
    compiled: run the latent loop in a `tf.function`.

  Returns:
    Dict with "num_images", "jsonl", "labelmap_dir", "seconds" and, with
    truth, "before" / "after" tag precision / recall / F1 (given tags and
    cleaned tags vs the true tags), "after_map" (mAP of the tag
    probabilities), "num_matched" and, if masks are present, "labelmap"
    (pixel accuracy / mIoU of the inferred labelmaps).
  """
  os.makedirs(output_dir, exist_ok=True)
  jsonl_path = os.path.join(output_dir, "cleaned_tags.jsonl")
  num_classes = len(class_names)
  given_all, cleaned_all, probs_all, truth_all = [], [], [], []
  matrix = dis_metrics.ConfusionMatrix(num_classes)
  have_masks = False
  missing = []
  num_images = 0
  start = time.time()
  with atomic.atomic_write(jsonl_path) as tmp, \
      open(tmp, "w", encoding="utf-8") as f:
    for index, example in enumerate(dataset):
      if limit is not None and num_images >= limit:
        break
      for key in ("image", "tags"):
        if key not in example:
          raise ValueError(f"example {index}: no {key!r} key (keys: "
                           f"{sorted(example)}).")
      file_name = example_file_name(example, index)
      given = to_numpy(example["tags"]).reshape(-1).astype(np.float32)
      out = predict(model, example["image"], [t_train], tags=given,
                    compiled=compiled)[t_train]
      probs = out["tag_probabilities"]
      cleaned = (probs > tag_threshold).astype(np.float32)
      cleaned[0] = 1.0  # Background is always present.
      labelmap = np.argmax(out["probabilities"], axis=-1).astype(np.uint8)
      rel_png = _labelmap_relpath(file_name)
      save_palette_png(labelmap, os.path.join(output_dir, rel_png))
      record = {
          "file_name": file_name,
          "given_tags": _ids(given),
          "given_tag_names": [class_names[i] for i in _ids(given)],
          "cleaned_tags": _ids(cleaned),
          "cleaned_tag_names": [class_names[i] for i in _ids(cleaned)],
          "tag_probabilities": [round(float(p), 6) for p in probs],
          "labelmap": rel_png.replace(os.sep, "/"),
      }
      f.write(json.dumps(record) + "\n")
      given_all.append(given)
      cleaned_all.append(cleaned)
      probs_all.append(probs)
      if truth is not None:
        entry = truth.get(os.path.normpath(file_name))
        if entry is None:
          missing.append(file_name)
          truth_all.append(None)
        else:
          true = np.zeros(num_classes, np.float32)
          true[0] = 1.0
          true[[int(i) for i in entry["tags"]]] = 1.0
          truth_all.append(true)
          if entry.get("mask") is not None:
            mask = np.asarray(entry["mask"])
            if mask.shape != labelmap.shape:
              raise ValueError(
                  f"{file_name}: true mask shape {mask.shape} differs from "
                  f"the image shape {labelmap.shape}.")
            matrix.update(mask, labelmap)
            have_masks = True
      num_images += 1
      if log_every and num_images % log_every == 0:
        logging.info("cleaned %d images", num_images)
  report = {
      "num_images": num_images,
      "t_train": int(t_train),
      "tag_threshold": tag_threshold,
      "jsonl": jsonl_path,
      "labelmap_dir": os.path.join(output_dir, "labelmaps"),
      "seconds": time.time() - start,
  }
  if truth is not None:
    keep = [i for i, t in enumerate(truth_all) if t is not None]
    report["num_matched"] = len(keep)
    report["missing_truth"] = missing[:20]
    if missing:
      logging.warning("%d images have no truth entry (e.g. %s)",
                      len(missing), missing[0])
    if keep:
      true = np.stack([truth_all[i] for i in keep])
      report["before"] = dis_metrics.tag_scores(
          true, np.stack([given_all[i] for i in keep]))
      report["after"] = dis_metrics.tag_scores(
          true, np.stack([cleaned_all[i] for i in keep]))
      report["after_map"] = dis_metrics.tag_mean_average_precision(
          true, np.stack([probs_all[i] for i in keep]))
    if have_masks:
      report["labelmap"] = {
          "pixel_accuracy": matrix.pixel_accuracy(),
          "mean_iou": matrix.mean_iou(),
          "per_class_iou": [float(v) for v in matrix.per_class_iou()],
      }
  return report


def format_cleaning_report(report, percent=True):
  """Markdown table of tag P / R / F1 before and after cleaning.

  Args:
    report: a `clean_tags` report with "before" / "after".
    percent: scale to percent.

  Returns:
    Markdown string ("" without truth scores).
  """
  if "before" not in report:
    return ""
  factor = 100.0 if percent else 1.0
  lines = ["| tags | precision | recall | F1 |", "|---|---:|---:|---:|"]
  for key, label in (("before", "given (noisy)"),
                     ("after", f"cleaned (t_train={report['t_train']})")):
    s = report[key]
    lines.append(f"| {label} | {factor * s['precision']:.1f} | "
                 f"{factor * s['recall']:.1f} | {factor * s['f1']:.1f} |")
  text = "\n".join(lines) + "\n"
  if "labelmap" in report:
    text += (f"\nInferred labelmaps vs true masks: pixel accuracy "
             f"{factor * report['labelmap']['pixel_accuracy']:.1f}, mIoU "
             f"{factor * report['labelmap']['mean_iou']:.1f}\n")
  return text


# ---------------------------------------------------------------------------
# Tool helpers
# ---------------------------------------------------------------------------


def load_model_dir(model_dir, data_dir=None, voc_dir=None, weak_dir=None):
  """Loads (config, model) from a training directory with data overrides.

  Args:
    model_dir: a directory written by tools/train.py (--model_dir).
    data_dir: overrides config.data.data_dir if given (--data_dir).
    voc_dir: overrides config.data.voc_dir if given (--voc_dir).
    weak_dir: overrides config.data.weak_dir if given (--weak_dir).

  Returns:
    (ExperimentConfig, DISModel).

  Raises:
    FileNotFoundError: --model_dir is not a finished training directory.
  """
  if not model_dir:
    raise ValueError("--model_dir is required.")
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"--model_dir={model_dir}: no such directory.")
  config, model = model_dir_lib.load(model_dir)
  if data_dir:
    config.data.data_dir = data_dir
  if voc_dir:
    config.data.voc_dir = voc_dir
  if weak_dir:
    config.data.weak_dir = weak_dir
  return config, model
