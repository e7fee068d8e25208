"""Prediction files: finding and checking input images, writing the outputs.

The one output format of a prediction on an image file, shared by
`tools/predict.py` (`dis_tf.segmenter`) and `export/client.py`, so that an
in-process and a served prediction of the same image land in identical
files. Per image, in the output directory:

  <stem>_labelmap.png   class ids as a palette ("P" mode) PNG with the VOC
                        colours, the size of the input image
  <stem>_overlay.png    the image with the labelmap's colours blended over
                        every non-background pixel (RGB)

and one line of `predictions.jsonl` (in input order):

  {"file": "photos/cat.jpg", "labelmap": "cat_labelmap.png",
   "overlay": "cat_overlay.png", "height": 375, "width": 500, "t_test": 30,
   "tags": ["cat"], "tag_probabilities": {"aeroplane": 0.0012, ...},
   "classes": ["background", "cat"], "quality": 0.8312}

`tags` are the classes whose tag probability exceeds the threshold
(background is never a tag); `classes` are those present in the labelmap;
`quality` is how far to trust the labelmap, in [0, 1], higher = more
trustworthy (`dis_tf.quality`; null from an export that predates it).
Two inputs with the same file stem (a/cat.jpg, b/cat.png) get distinct
stems (cat, cat_2) in input order. Every file is written atomically
(`dis_tf.atomic`); `predictions.jsonl` when the writer closes, so a killed
run leaves the previous one or none.

Inputs (`find_images`, `read_image`): files, folders (their image files,
not recursive) and glob patterns; a bad one (no such file, a folder with no
images, a pattern matching nothing, an unreadable, empty, non-image,
corrupt, zero-size or too large file) is a `dis_tf.errors.UserError` naming
it, which the caller skips or stops on.
"""

import dataclasses
import glob
import io
import json
import os
import sys

import numpy as np
from PIL import Image

from dis_tf import atomic
from dis_tf import errors
from dis_tf.classes import IGNORE_LABEL, voc_palette

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# What a file run does with a bad input (dis_tf.segmenter.predict_files).
ON_ERROR = ("skip", "stop")
PREDICTIONS_FILENAME = "predictions.jsonl"
LABELMAP_SUFFIX = "_labelmap.png"
OVERLAY_SUFFIX = "_overlay.png"
# The signatures the serving graph accepts (`dis_tf.serving.inputs`).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")
# Same bound as the serving graph (dis_tf.serving.inputs.DEFAULT_MAX_PIXELS),
# repeated so that this module does not import TensorFlow.
MAX_PIXELS = 40_000_000
# Colour weight of the overlay (the rest is the image).
OVERLAY_ALPHA = 0.5
# Decimals of the probabilities in predictions.jsonl: enough to read, and
# equal between the served and the in-process graph.
PROBABILITY_DECIMALS = 4


# ------------------------------------------------------------------ inputs
@dataclasses.dataclass
class InputImage:
  """An image file read and checked: its path, bytes and RGB pixels."""
  path: str
  data: bytes
  rgb: np.ndarray  # [H, W, 3] uint8


def _is_pattern(spec):
  return any(c in spec for c in "*?[")


def find_images(specs):
  """Expands files, folders and glob patterns into image paths.

  Args:
    specs: a comma-separated string, or a list of strings: image files,
      folders (their files with an image extension, sorted, not recursive)
      and glob patterns (`**` recurses).

  Returns:
    (paths, problems): the paths in order, each once; and a list of
    `UserError`s, one per spec that gave no file.
  """
  if isinstance(specs, str):
    specs = specs.split(",")
  paths, problems, seen = [], [], set()

  def add(path):
    key = os.path.abspath(path)
    if key not in seen:
      seen.add(key)
      paths.append(path)

  for spec in (s.strip() for s in specs):
    if not spec:
      continue
    if os.path.isdir(spec):
      found = sorted(
          os.path.join(spec, name) for name in os.listdir(spec)
          if name.lower().endswith(IMAGE_EXTENSIONS)
          and os.path.isfile(os.path.join(spec, name)))
      if not found:
        problems.append(errors.MissingFileError(
            f"{spec}: the folder has no images "
            f"({', '.join(IMAGE_EXTENSIONS)})."))
    elif _is_pattern(spec):
      found = sorted(p for p in glob.glob(spec, recursive=True)
                     if os.path.isfile(p))
      if not found:
        problems.append(errors.MissingFileError(
            f"{spec}: no file matches this pattern."))
    elif os.path.exists(spec):
      found = [spec]
    else:
      found = []
      problems.append(errors.MissingFileError(
          f"{spec}: no such file or folder."))
    for path in found:
      add(path)
  return paths, problems


def check_image_bytes(data, name):
  """Decodes encoded image bytes as the serving graph would accept them.

  Args:
    data: the file's bytes.
    name: the file (or input) named in errors.

  Returns:
    [H, W, 3] uint8 RGB pixels (a GIF's first frame).

  Raises:
    UserError: empty, not a JPEG / PNG / GIF / BMP, zero-size, larger than
      `MAX_PIXELS`, or corrupt.
  """
  if not data:
    raise errors.UserError(f"{name}: empty file (0 bytes); not an image.")
  if not data.startswith(_MAGIC):
    raise errors.UserError(f"{name}: not a JPEG, PNG, GIF or BMP image.")
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
      if width * height == 0:
        raise errors.UserError(f"{name}: zero-size image ({width} x "
                               f"{height} pixels).")
      if width * height > MAX_PIXELS:
        raise errors.UserError(
            f"{name}: {width} x {height} pixels is over the limit of "
            f"{MAX_PIXELS} pixels; downscale it first.")
      return np.asarray(image.convert("RGB"), np.uint8)
  except errors.UserError:
    raise
  except Exception as e:  # PIL raises many types for a broken file.
    raise errors.UserError(
        f"{name}: corrupt or truncated image ({type(e).__name__}: "
        f"{' '.join(str(e).split())}).") from e


def read_image(path):
  """Reads and checks one image file.

  Args:
    path: the file.

  Returns:
    An `InputImage`.

  Raises:
    UserError: naming `path`, if it cannot be read or is not a usable
      image (see `check_image_bytes`).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.MissingFileError(f"{path}: no such file.") from None
  except OSError as e:
    raise errors.UserError(
        f"{path}: cannot be read ({e.strerror or e}).") from None
  return InputImage(path, data, check_image_bytes(data, path))


# ----------------------------------------------------------------- outputs
def palette_png(class_ids, palette=None):
  """[H, W] class ids -> a "P"-mode PIL image with `palette` ([256, 3]
  uint8, the class set's `ClassSet.palette()`; None: VOC's)."""
  image = Image.fromarray(np.asarray(class_ids, np.uint8), mode="P")
  palette = voc_palette() if palette is None else np.asarray(palette)
  image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
  return image


def overlay(rgb, class_ids, alpha=OVERLAY_ALPHA, palette=None):
  """The image with the class colours blended over non-background pixels.

  Args:
    rgb: [H, W, 3] uint8 image.
    class_ids: [H, W] class ids (0 background and 255 ignore stay clear).
    alpha: colour weight.
    palette: [256, 3] uint8 class colours (None: VOC's).

  Returns:
    [H, W, 3] uint8.
  """
  rgb = np.asarray(rgb, np.float32)
  ids = np.asarray(class_ids, np.int64)
  palette = voc_palette() if palette is None else np.asarray(palette)
  colours = palette[ids % 256].astype(np.float32)
  mask = ((ids != 0) & (ids != IGNORE_LABEL))[..., None]
  blended = np.where(mask, (1 - alpha) * rgb + alpha * colours, rgb)
  return np.round(blended).astype(np.uint8)


def _save_png(path, image):
  with atomic.atomic_write(path) as tmp:
    image.save(tmp, format="PNG")


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class PredictionWriter:
  """Writes per-image outputs and `predictions.jsonl` into one folder.

  Example:
    with PredictionWriter("out") as writer:
      writer.write("cat.jpg", rgb, class_ids, tag_probs, names, t_test=30)

  Args:
    output_dir: the folder (created).
    tag_threshold: tag probability above which a class is a tag.
    palette: [256, 3] uint8 colours of the labelmap PNGs and overlays (the
      class set's; None: VOC's).
  """

  def __init__(self, output_dir, tag_threshold=0.5, palette=None):
    self.output_dir = output_dir
    self.tag_threshold = float(tag_threshold)
    self.palette = palette
    self.records = []
    self._stems = set()
    try:
      os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
      raise errors.UnwritablePathError(
          f"--output_dir={output_dir}: cannot create it "
          f"({e.strerror or e}).") from None

  def _unique_stem(self, source):
    base = os.path.splitext(os.path.basename(source))[0] or "image"
    stem, n = base, 1
    while stem in self._stems:
      n += 1
      stem = f"{base}_{n}"
    self._stems.add(stem)
    return stem

  def write(self, source, rgb, class_ids, tag_probabilities, class_names,
            t_test, quality=None):
    """Writes one image's labelmap and overlay, and records its line.

    Args:
      source: the input file as given (the "file" field; names the stem).
      rgb: [H, W, 3] uint8 input image (for the overlay).
      class_ids: [H, W] int class ids at the input's size.
      tag_probabilities: [C] tag probabilities (background first).
      class_names: C class names (str or bytes).
      t_test: the latent steps used (None if unknown).
      quality: the labelmap's quality score (`dis_tf.quality`), or None
        (an export that predates it): the "quality" field.

    Returns:
      The record (dict) of `predictions.jsonl`.
    """
    class_ids = np.asarray(class_ids)
    names = [_text(n) for n in class_names]
    stem = self._unique_stem(source)
    labelmap_name, overlay_name = stem + LABELMAP_SUFFIX, stem + OVERLAY_SUFFIX
    _save_png(os.path.join(self.output_dir, labelmap_name),
              palette_png(class_ids, self.palette))
    _save_png(os.path.join(self.output_dir, overlay_name),
              Image.fromarray(overlay(rgb, class_ids,
                                      palette=self.palette)))
    probs = [round(float(p), PROBABILITY_DECIMALS)
             for p in np.asarray(tag_probabilities)]
    present = sorted(int(c) for c in np.unique(class_ids) if c < len(names))
    record = {
        "file": str(source),
        "labelmap": labelmap_name,
        "overlay": overlay_name,
        "height": int(class_ids.shape[0]),
        "width": int(class_ids.shape[1]),
        "t_test": None if t_test is None else int(t_test),
        "tags": [names[c] for c in range(1, len(names))
                 if probs[c] > self.tag_threshold],
        "tag_probabilities": {names[c]: probs[c]
                              for c in range(1, len(names))},
        "classes": [names[c] for c in present],
        "quality": (None if quality is None
                    else round(float(quality), PROBABILITY_DECIMALS)),
    }
    self.records.append(record)
    return record

  def close(self):
    """Writes `predictions.jsonl` (atomically); returns its path."""
    path = os.path.join(self.output_dir, PREDICTIONS_FILENAME)
    atomic.write_text(path, "".join(json.dumps(r) + "\n"
                                    for r in self.records))
    return path

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    # Also on an error or Ctrl-C: the lines of the images already written.
    self.close()
    return False


def output_quality(outputs, index):
  """The `quality` output of one image as a float, or None when the
  outputs (of an export that predates the score) have none."""
  if "quality" not in outputs:
    return None
  return float(np.asarray(outputs["quality"]).reshape(-1)[index])


def describe(record):
  """One printable line of a record: file, tags and labelmap classes."""
  tags = ", ".join(f"{name} ({record['tag_probabilities'][name]:.2f})"
                   for name in record["tags"])
  quality = record.get("quality")
  return (f"{record['file']}: tags: {tags or '-'}; labelmap: "
          f"{', '.join(record['classes'])}"
          + ("" if quality is None else f"; quality {quality:.2f}"))


# ---------------------------------------------------------------- progress
class Progress:
  """A text progress bar over the inputs, on stderr.

  On a terminal the bar is redrawn in place; otherwise (a log file) a line
  is printed at every tenth of the inputs.

  Args:
    total: number of inputs.
    stream: where to write (default sys.stderr).
  """

  WIDTH = 30

  def __init__(self, total, stream=None):
    self.total = max(int(total), 0)
    self.stream = stream or sys.stderr
    self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self._last_tenth = -1

  def update(self, done, skipped=0):
    """Shows `done` of `total` inputs handled, `skipped` of them skipped."""
    fraction = done / self.total if self.total else 1.0
    filled = int(round(self.WIDTH * fraction))
    line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{done}/{self.total} images, {skipped} skipped")
    if self._tty:
      end = "\n" if done >= self.total else ""
      print("\r" + line, end=end, file=self.stream, flush=True)
      return
    tenth = int(fraction * 10)
    if tenth != self._last_tenth or done >= self.total:
      self._last_tenth = tenth
      print(line, file=self.stream, flush=True)
