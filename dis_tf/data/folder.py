"""A plain folder of your own data -> what tools/train.py reads.

The source layout (docs/DATA.md "Your own data"):

  my_data/classes.txt                    the class set (`dis_tf.classes`)
  my_data/labelled/images/<id>.jpg|.png
  my_data/labelled/masks/<id>.png        class ids (255 = ignore): gray,
                                         palette, or RGB in the class colours
  my_data/labelled/train.txt, val.txt    optional split lists (one id a line)
  my_data/weak/<name>.jpg|.png           images with image-level labels only
  my_data/weak/captions.tsv              <name><TAB><caption>, or
  my_data/weak/tags.jsonl                {"image": "<name>", "tags": [...]}

`prepare_folder` checks every file and writes

  out/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}/
  out/VOC2012/classes.txt                the class set (the run reads it)
  out/weak/annotations.jsonl, out/weak/images/, out/weak/classes.txt
  out/prepare_report.json                the counts printed

(`--voc_dir=out --weak_dir=out/weak` for tools/train.py). A JPEG image is
copied byte for byte; a PNG image is stored as a JPEG of quality 95 (the VOC
layout names images <id>.jpg). Masks become palette PNGs in the class
colours. Captions are parsed here, with the class set's lexicon, into the
"tags" of annotations.jsonl (the caption is kept beside them).

Every problem is one `BadFileError` line naming the file (and the line of a
text file); with `skip_bad_files` a problem of one image is skipped and
counted instead (a bad class file is always an error). Nothing is dropped
silently, and images and masks are paired by id only.
"""

import collections
import json
import os
import shutil

import numpy as np
from PIL import Image

from dis_tf import atomic
from dis_tf import classes
from dis_tf import errors
from dis_tf.data import captions
from dis_tf.data import voc
from dis_tf.data import web_tags

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CAPTIONS_FILE = "captions.tsv"
TAGS_FILE = "tags.jsonl"
REPORT_FILE = "prepare_report.json"
BadFileError = voc.BadFileError


class _Problems:
  """Raises a problem, or records it (skip_bad_files)."""

  def __init__(self, skip):
    self.skip = skip
    self.skipped = []

  def bad(self, message):
    if not self.skip:
      raise BadFileError(message)
    self.skipped.append(message)


def _list_images(folder, problems, index_names=()):
  """{stem: file name} of the image files of `folder` (not recursive)."""
  found = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name in index_names or name.startswith(".") or os.path.isdir(path):
      continue
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
      problems.bad(f"{path}: not an image file (expected "
                   f"{', '.join(IMAGE_EXTENSIONS)}).")
      continue
    if stem in found:
      problems.bad(f"{path}: duplicate name: {found[stem]} has the same id "
                   f"{stem!r}.")
      found[stem] = None  # Neither is used: which one is meant?
      continue
    found[stem] = name
  return {k: v for k, v in found.items() if v is not None}


def _read_split_list(path, ids):
  """The ids of a split list (one a line), each an existing labelled id."""
  names = []
  with open(path, encoding="utf-8") as f:
    for line_no, raw in enumerate(f, start=1):
      name = raw.strip()
      if not name or name.startswith("#"):
        continue
      if name not in ids:
        raise BadFileError(f"{path}:{line_no}: {name!r} is not a labelled "
                           "image with a mask.")
      if name in names:
        raise BadFileError(f"{path}:{line_no}: {name!r} is listed twice.")
      names.append(name)
  return names


def split_ids(ids, val_fraction, train_list=None, val_list=None):
  """(train ids, val ids): the lists if given, else a fixed-seed hold-out.

  Args:
    ids: the labelled ids that passed every check.
    val_fraction: fraction of them held out for val (at least one image).
    train_list, val_list: optional split list files.

  Returns:
    Two sorted lists.
  """
  if train_list or val_list:
    if not (train_list and val_list):
      raise errors.UserError(
          f"{train_list or val_list}: give both labelled/train.txt and "
          "labelled/val.txt, or neither (a val split is then held out).")
    train = _read_split_list(train_list, set(ids))
    val = _read_split_list(val_list, set(ids))
    both = sorted(set(train) & set(val))
    if both:
      raise BadFileError(f"{val_list}: {both[:5]} are in {train_list} too.")
    return sorted(train), sorted(val)
  ids = sorted(ids)
  if len(ids) < 2:
    raise errors.UserError(
        f"{len(ids)} labelled image(s) with a mask: at least 2 are needed "
        "(one for train, one for val).")
  if not 0.0 < val_fraction < 1.0:
    raise errors.UserError(f"--val_fraction={val_fraction}: expected a "
                           "number between 0 and 1.")
  order = np.random.default_rng(0).permutation(len(ids))
  num_val = min(len(ids) - 1, max(1, int(round(val_fraction * len(ids)))))
  val = sorted(ids[i] for i in order[:num_val])
  return sorted(set(ids) - set(val)), val


def _check_pair(image_path, mask_path, class_set):
  """Reads and checks one labelled pair: (encoded image, mask ids)."""
  image, _ = voc.read_rgb_image(image_path, None)
  mask = voc.read_label_png(mask_path, None, class_set)
  if mask.shape != image.shape[:2]:
    raise BadFileError(
        f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) "
        f"differs from its image {image_path} "
        f"{image.shape[1]}x{image.shape[0]}.")
  bad = sorted(int(v) for v in np.unique(mask)
               if v >= class_set.num_classes and v != classes.IGNORE_LABEL)
  if bad:
    raise BadFileError(
        f"{mask_path}: mask has class ids {bad} outside the "
        f"{class_set.num_classes} classes of classes.txt (0.."
        f"{class_set.num_classes - 1}, and {classes.IGNORE_LABEL} = "
        "ignore).")
  return image, mask


def _store_image(src, dst, image):
  """Copies a JPEG byte for byte; anything else is written as a JPEG."""
  with Image.open(src) as img:
    fmt = img.format
  if fmt == "JPEG" and image is not None:
    shutil.copyfile(src, dst)
  else:
    Image.fromarray(image).save(dst, format="JPEG", quality=95)


def _read_weak_index(weak_dir, images, lexicon, class_set, problems):
  """The index of the weak images (captions.tsv or tags.jsonl).

  Returns:
    (index path, [(image id, tag ids, caption, "file:line")], the ids of
    every line that names an image, bad ones included).
  """
  tsv = os.path.join(weak_dir, CAPTIONS_FILE)
  jsonl = os.path.join(weak_dir, TAGS_FILE)
  if os.path.isfile(tsv) and os.path.isfile(jsonl):
    raise BadFileError(f"{weak_dir}: has both {CAPTIONS_FILE} and "
                       f"{TAGS_FILE}; keep one index of the weak images.")
  if not (os.path.isfile(tsv) or os.path.isfile(jsonl)):
    raise errors.MissingFileError(
        f"{weak_dir}: no {CAPTIONS_FILE} or {TAGS_FILE} index of the weak "
        "images.")
  path = tsv if os.path.isfile(tsv) else jsonl
  entries, seen, mentioned = [], {}, set()
  with open(path, encoding="utf-8") as f:
    lines = list(enumerate(f, start=1))
  for line_no, raw in lines:
    line = raw.rstrip("\n")
    if not line.strip() or (path == tsv and line.startswith("#")):
      continue
    where = f"{path}:{line_no}"
    try:
      if path == tsv:
        if "\t" not in line:
          raise BadFileError(f"{where}: expected <name><TAB><caption>, got "
                             f"{line[:80]!r}.")
        name, caption = (part.strip() for part in line.split("\t", 1))
        mentioned.add(os.path.splitext(name)[0] if name not in images
                      else name)
        tags = captions.parse_caption(caption, lexicon)
        if not tags:
          raise BadFileError(f"{where}: caption {caption!r} names no class "
                             f"of classes.txt {list(class_set.names[1:])}.")
      else:
        record = json.loads(line) if line.strip().startswith("{") else None
        if not isinstance(record, dict) or set(record) != {"image", "tags"}:
          raise BadFileError(f"{where}: expected {{\"image\": \"<name>\", "
                             "\"tags\": [...]}.")
        name, caption = record["image"], ""
        if isinstance(name, str):
          mentioned.add(os.path.splitext(name)[0] if name not in images
                        else name)
        tags = web_tags.parse_annotation_line(line, path, line_no,
                                              lexicon)[1]
        if not tags:
          raise BadFileError(f"{where}: empty tag list for {name!r}.")
    except (errors.UserError, ValueError) as e:
      if isinstance(e, errors.MissingFileError):
        raise
      problems.bad(errors.message(e))
      continue
    stem = os.path.splitext(name)[0] if name not in images else name
    if name in seen or stem in seen:
      problems.bad(f"{where}: {name!r} is already listed on line "
                   f"{seen.get(name) or seen.get(stem)}.")
      continue
    seen[name] = line_no
    if stem not in images:
      problems.bad(f"{where}: image {name!r} is not in {weak_dir}.")
      continue
    seen[stem] = line_no
    entries.append((stem, tags, caption, where))
  return path, entries, mentioned


def prepare_folder(source, output, val_fraction=0.2, skip_bad_files=False,
                   overwrite=False):
  """Checks a plain data folder and writes the training layout.

  Args:
    source: the folder (module docstring).
    output: the folder to write (must not exist, or `overwrite`).
    val_fraction: fraction of the labelled images held out for val (when
      labelled/train.txt and val.txt are not given).
    skip_bad_files: skip and count a bad image, mask or index line instead
      of stopping at it.
    overwrite: replace an existing `output`.

  Returns:
    The report dict (counts; also written to `output/prepare_report.json`).

  Raises:
    BadFileError, ClassFileError, MissingFileError: one line naming the
      file (and line).
  """
  source, output = os.fspath(source), os.fspath(output)
  class_path = os.path.join(source, classes.CLASS_FILENAME)
  class_set = classes.load_class_set(class_path)
  labelled = os.path.join(source, "labelled")
  weak_dir = os.path.join(source, "weak")
  for folder in (os.path.join(labelled, "images"),
                 os.path.join(labelled, "masks"), weak_dir):
    if not os.path.isdir(folder):
      raise errors.MissingFileError(f"{folder}: no such folder (the layout "
                                    "is in docs/DATA.md).")
  if os.path.exists(output) and not overwrite:
    raise errors.PathExistsError(f"{output} exists; pass --overwrite to "
                                 "replace it.")
  problems = _Problems(skip_bad_files)
  images = _list_images(os.path.join(labelled, "images"), problems)
  masks = _list_images(os.path.join(labelled, "masks"), problems)
  for stem in sorted(set(images) - set(masks)):
    problems.bad(f"{os.path.join(labelled, 'images', images[stem])}: image "
                 f"has no mask (expected labelled/masks/{stem}.png).")
  for stem in sorted(set(masks) - set(images)):
    problems.bad(f"{os.path.join(labelled, 'masks', masks[stem])}: mask has "
                 f"no image (expected labelled/images/{stem}.jpg or .png).")

  with atomic.directory_write(output, replace=True) as tmp:
    root = os.path.join(tmp, "VOC2012")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
      os.makedirs(os.path.join(root, sub))
    pixels = np.zeros(256, np.int64)
    kept, largest = [], 0
    for stem in sorted(set(images) & set(masks)):
      image_path = os.path.join(labelled, "images", images[stem])
      mask_path = os.path.join(labelled, "masks", masks[stem])
      try:
        if not masks[stem].lower().endswith(".png"):
          raise BadFileError(f"{mask_path}: a mask is a PNG file.")
        image, mask = _check_pair(image_path, mask_path, class_set)
      except BadFileError as e:
        problems.bad(errors.message(e))
        continue
      _store_image(image_path, os.path.join(root, "JPEGImages", stem + ".jpg"),
                   image)
      voc.write_label_png(os.path.join(root, "SegmentationClass",
                                       stem + ".png"), mask, class_set)
      pixels += np.bincount(mask.reshape(-1), minlength=256)
      kept.append(stem)
      largest = max(largest, *mask.shape[:2])
    lists = [os.path.join(labelled, f"{s}.txt") for s in ("train", "val")]
    train, val = split_ids(kept, val_fraction,
                           *[p if os.path.isfile(p) else None for p in lists])
    for split, ids in (("train", train), ("val", val),
                       ("trainval", sorted(train + val))):
      with open(os.path.join(root, "ImageSets", "Segmentation",
                             f"{split}.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{i}\n" for i in ids))

    lexicon = captions.lexicon_for(class_set)
    weak_images = _list_images(weak_dir, problems, (CAPTIONS_FILE, TAGS_FILE))
    index_path, entries, mentioned = _read_weak_index(
        weak_dir, weak_images, lexicon, class_set, problems)
    for stem in sorted(set(weak_images) - mentioned):
      problems.bad(f"{os.path.join(weak_dir, weak_images[stem])}: weak image "
                   f"is not in {index_path}.")
    out_weak = os.path.join(tmp, "weak")
    os.makedirs(os.path.join(out_weak, "images"))
    tag_counts = collections.Counter()
    lines = []
    for stem, tags, caption, _ in entries:
      src = os.path.join(weak_dir, weak_images[stem])
      try:
        voc.read_rgb_image(src, None)
      except BadFileError as e:
        problems.bad(errors.message(e))
        continue
      rel = f"images/{weak_images[stem]}"
      shutil.copyfile(src, os.path.join(out_weak, rel))
      record = {"image": rel, "tags": [class_set.names[t] for t in tags]}
      if caption:
        record["caption"] = caption
      lines.append(json.dumps(record))
      tag_counts.update(class_set.names[t] for t in tags)
    if not lines:
      raise errors.UserError(f"{weak_dir}: no usable weak image.")
    with open(os.path.join(out_weak, web_tags.ANNOTATIONS), "w",
              encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    for folder in (root, out_weak):
      shutil.copyfile(class_path, os.path.join(folder, classes.CLASS_FILENAME))

    report = {
        "classes": list(class_set.names),
        "labelled_images": len(kept), "train": len(train), "val": len(val),
        "masks": len(kept), "largest_side": int(largest),
        "pixels_per_class": {name: int(pixels[i])
                             for i, name in enumerate(class_set.names)},
        "ignore_pixels": int(pixels[classes.IGNORE_LABEL]),
        "weak_images": len(lines),
        "captions_parsed": sum(1 for e in entries if e[2]),
        "tags_per_class": {name: tag_counts[name]
                           for name in class_set.names[1:]},
        "files_skipped": len(problems.skipped),
        "skipped": problems.skipped,
    }
    with open(os.path.join(tmp, REPORT_FILE), "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
  return report


def format_report(report, output):
  """The counts of `prepare_folder`, as printed by tools/prepare_data.py."""
  lines = [
      f"classes: {len(report['classes'])} ({', '.join(report['classes'])})",
      f"labelled images: {report['labelled_images']} with masks "
      f"(train {report['train']}, val {report['val']})",
      "pixels per class: " + ", ".join(
          f"{k} {v}" for k, v in report["pixels_per_class"].items())
      + f", ignore {report['ignore_pixels']}",
      f"weak images: {report['weak_images']} ({report['captions_parsed']} "
      "captions parsed)",
      "tags per class: " + ", ".join(
          f"{k} {v}" for k, v in report["tags_per_class"].items()),
      f"files skipped: {report['files_skipped']}",
      f"largest labelled image side: {report['largest_side']} px (evaluate "
      "and serve with --data.eval_crop_size at least this, DeepLab's rule: "
      "a shrunk image loses accuracy; the tiny and synthetic presets use "
      "128)",
  ]
  lines += [f"  skipped: {s}" for s in report["skipped"]]
  lines.append(f"written: {output} (--voc_dir={output} "
               f"--weak_dir={os.path.join(output, 'weak')})")
  return "\n".join(lines)
