"""Tag cleaning: training-mode latent inference on weak (tag-only) images.

The paper's second property of DIS (Sec. 3.1): with the given, noisy tags
in the latent objective, t_train gradient steps on (u1, v1) yield cleaned
tags (sigmoid(v3) > threshold) and a labelmap for every weak image.
`clean_tags` writes both (JSONL + VOC palette PNGs) and, given the truth,
scores the tags before and after cleaning.

`rule="labelmap"` is a departure from the paper: the cleaned tags are the
given tags whose class covers more than `min_area` of the pixels of the
network's own plain labelmap (test mode, t = 0, no refinement), not
sigmoid(v3). The segmentation head, trained on every labelled pixel, tells
which classes an image shows far better than the weak tag head
(docs/results/TAG_CLEANING.md measures both rules on held-out weak images).

`write_cleaned_folder` turns the cleaned tags into a web_tags folder to
train stage 2 again on (`tools/train.py --stage=semi --init_from=RUN`): the
paper's loop feeds cleaned tags back into training, and with the labelmap
rule that pays (docs/results/ITERATED_CLEANING.md).
"""

import json
import os
import shutil
import time

from absl import logging
import numpy as np
from PIL import Image

from dis_tf import atomic
from dis_tf import classes
from dis_tf import evaluation
from dis_tf import metrics as dis_metrics


def save_palette_png(labelmap, path, palette=None):
  """Writes class ids as a mode-"P" PNG with the class colours.

  Args:
    labelmap: [H, W] integer ids in 0..255.
    path: output file (parent folders are created).
    palette: [256, 3] uint8 colours (`ClassSet.palette()`; None: VOC's).
  """
  labelmap = np.asarray(labelmap)
  if labelmap.min(initial=0) < 0 or labelmap.max(initial=0) > 255:
    raise ValueError(f"{path}: label ids must be in 0..255.")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image = Image.fromarray(labelmap.astype(np.uint8), mode="P")
  palette = classes.voc_palette() if palette is None else palette
  image.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
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


RULES = ("paper", "labelmap")


def class_areas(probabilities):
  """[C] share of each class in the arg-max labelmap of [H, W, C]
  `probabilities` (the "labelmap" rule's measure)."""
  probabilities = np.asarray(probabilities)
  labelmap = np.argmax(probabilities, axis=-1)
  return (np.bincount(labelmap.ravel(), minlength=probabilities.shape[-1])
          / labelmap.size)


def clean_tags(model, dataset, output_dir, t_train, tag_threshold=0.5,
               truth=None, limit=None, class_names=classes.VOC_CLASSES,
               log_every=50, compiled=True, palette=None, rule="paper",
               min_area=0.0):
  """Training-mode latent inference on weak images: cleaned tags + labelmaps.

  For each image the given (noisy) tags drive `t_train` latent steps
  (paper Sec. 3.1); the cleaned tags are sigmoid(v3) > `tag_threshold`, the
  labelmap the argmax of the refined probabilities at the original size.

  Writes `output_dir/cleaned_tags.jsonl` (one line per image: "file_name",
  "given_tags", "cleaned_tags" (class ids 1..C-1), their names,
  "tag_probabilities" (list indexed by class id, background 1),
  "labelmap" (path relative to output_dir)) and the labelmaps as palette
  PNGs (the class colours) under `output_dir/labelmaps/`.

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
    palette: [256, 3] uint8 colours of the labelmap PNGs (None: VOC's).
    rule: "paper" (sigmoid(v3) > tag_threshold after the steps) or
      "labelmap" (the given tags whose class covers more than `min_area`
      of the plain labelmap's pixels; see the module docstring).
    min_area: the "labelmap" rule's share of pixels, in [0, 1).

  Returns:
    Dict with "num_images", "jsonl", "labelmap_dir", "seconds" and, with
    truth, "before" / "after" tag precision / recall / F1 (given tags and
    cleaned tags vs the true tags), "after_map" (mAP of the tag
    probabilities), "num_matched" and, if masks are present, "labelmap"
    (pixel accuracy / mIoU of the inferred labelmaps).
  """
  if rule not in RULES:
    raise ValueError(f"rule={rule!r}: expected one of {RULES}.")
  if not 0.0 <= min_area < 1.0:
    raise ValueError(f"min_area={min_area}: must be in [0, 1).")
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
      file_name = evaluation.example_file_name(example, index)
      given = evaluation.to_numpy(example["tags"]).reshape(-1).astype(
          np.float32)
      out = evaluation.predict(model, example["image"], [t_train],
                               tags=given, compiled=compiled)[t_train]
      probs = out["tag_probabilities"]
      if rule == "paper":
        cleaned = (probs > tag_threshold).astype(np.float32)
      else:
        plain = evaluation.predict(model, example["image"], [0],
                                   compiled=compiled,
                                   refinements=[None])[0]["probabilities"]
        areas = class_areas(plain)
        cleaned = ((areas > min_area) & (given > 0.5)).astype(np.float32)
      cleaned[0] = 1.0  # Background is always present.
      labelmap = np.argmax(out["probabilities"], axis=-1).astype(np.uint8)
      rel_png = _labelmap_relpath(file_name)
      save_palette_png(labelmap, os.path.join(output_dir, rel_png), palette)
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
      "rule": rule,
      "min_area": min_area,
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


def write_weak_folder(source, out_dir, file_names, tags, class_names,
                      overwrite=False):
  """A copy of the web_tags folder `source` whose annotations.jsonl gives
  each image the object tags `tags[i]` ([N, C] bool; column 0, background,
  is not written) of `file_names[i]`, in the source's order. Returns
  `out_dir`.

  Files are copied, not linked: the reader refuses paths that resolve
  outside its folder (`dis_tf.data.safe_paths`). The copy is written under a
  temporary name and renamed when complete, so a killed run leaves no
  half-written `out_dir`.

  Args:
    overwrite: replace an existing `out_dir` (else it is an error: it may
      be someone's data).

  Raises:
    ValueError: an image of the source has no tags here, or the other way
      round (nothing is dropped or mis-paired), or `out_dir` is `source`.
    UserError: `out_dir` exists and not `overwrite`.
  """
  from dis_tf import errors  # pylint: disable=g-import-not-at-top
  from dis_tf.data import web_tags  # pylint: disable=g-import-not-at-top
  if os.path.abspath(out_dir) == os.path.abspath(source):
    raise ValueError(f"{out_dir}: the copy would overwrite its source.")
  if os.path.exists(out_dir) and not overwrite:
    raise errors.UserError(f"{out_dir} already exists: give a new folder "
                           "for the copy with the cleaned tags.")
  by_name = {os.path.normpath(n): row for n, row in zip(file_names, tags)}
  if len(by_name) != len(file_names):
    raise ValueError("write_weak_folder: repeated file names.")
  with atomic.directory_write(out_dir, replace=True) as tmp_dir:
    shutil.copytree(source, tmp_dir,
                    ignore=shutil.ignore_patterns(web_tags.ANNOTATIONS))
    _write_annotations(source, tmp_dir, by_name, class_names)
  return out_dir


def _write_annotations(source, out_dir, by_name, class_names):
  """out_dir/annotations.jsonl: source's images, in its order, with the
  tags of `by_name` (normalised file name -> [C] bool)."""
  from dis_tf.data import web_tags  # pylint: disable=g-import-not-at-top
  lines, seen = [], set()
  with open(os.path.join(source, web_tags.ANNOTATIONS),
            encoding="utf-8") as f:
    for line in f:
      if not line.strip():
        continue
      image = json.loads(line)["image"]
      key = os.path.normpath(image)
      if key not in by_name:
        raise ValueError(f"{source}: {image} has no cleaned tags (clean "
                         "every image of the folder, without --limit).")
      seen.add(key)
      names = [class_names[c] for c in np.flatnonzero(by_name[key])
               if c > 0]
      lines.append(json.dumps({"image": image, "tags": names}))
  missing = set(by_name) - seen
  if missing:
    raise ValueError(f"{source}: no image {sorted(missing)[0]} in "
                     f"{web_tags.ANNOTATIONS}.")
  atomic.write_text(os.path.join(out_dir, web_tags.ANNOTATIONS),
                    "\n".join(lines) + "\n")


def write_cleaned_folder(weak_dir, out_dir, records, class_names,
                         overwrite=False):
  """A web_tags folder of `weak_dir`'s images with the cleaned tags of
  `records` (the lines of `clean_tags`'s cleaned_tags.jsonl), to train
  stage 2 again on. An image whose cleaned tags are empty keeps its given
  tags: the reader refuses an image without supervision, and its given
  tags are what it was trained on before.

  Returns:
    The images that kept their given tags (count).
  """
  tags = np.zeros((len(records), len(class_names)), bool)
  kept = 0
  for row, record in zip(tags, records):
    ids = record["cleaned_tags"] or record["given_tags"]
    kept += not record["cleaned_tags"]
    row[[0] + list(ids)] = True
  write_weak_folder(weak_dir, out_dir, [r["file_name"] for r in records],
                    tags, class_names, overwrite)
  return kept


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
  cleaned = (f"cleaned (t_train={report['t_train']})"
             if report.get("rule", "paper") == "paper" else
             f"cleaned (labelmap rule, area > {report['min_area']:g})")
  for key, label in (("before", "given (noisy)"), ("after", cleaned)):
    s = report[key]
    lines.append(f"| {label} | {factor * s['precision']:.1f} | "
                 f"{factor * s['recall']:.1f} | {factor * s['f1']:.1f} |")
  text = "\n".join(lines) + "\n"
  if "labelmap" in report:
    text += (f"\nInferred labelmaps vs true masks: pixel accuracy "
             f"{factor * report['labelmap']['pixel_accuracy']:.1f}, mIoU "
             f"{factor * report['labelmap']['mean_iou']:.1f}\n")
  return text
