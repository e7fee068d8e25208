"""PASCAL VOC 2012 segmentation builder, and VOC label-PNG decoding.

`Voc2012Segmentation` reads the standard devkit layout from the tfds manual
dir (see `MANUAL_DOWNLOAD_INSTRUCTIONS` and docs/DATA.md):

  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/SegmentationClass/<id>.png       (palette PNGs)
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
  optional, the DeepLab "augmented" set built from SBD:
  VOCdevkit/VOC2012/SegmentationClassAug/<id>.png    (8-bit id PNGs)
  VOCdevkit/VOC2012/ImageSets/SegmentationAug/train_aug.txt
      (or ImageSets/Segmentation/train_aug.txt; lines are "<id>" or the
      DeepLab form "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png")
  optional, tag-only images (the paper's "VOC augment tags"):
  VOCdevkit/VOC2012/ImageSets/Main/trainval.txt (or train.txt + val.txt)
  VOCdevkit/VOC2012/Annotations/<id>.xml

Splits: `train`, `val`, `trainval` (always), `train_aug` (when the augmented
set is present) and `tags_only` (when ImageSets/Main and Annotations are
present): every image of ImageSets/Main that is in no Segmentation list, with
its image-level tags taken from the object names of its XML annotation. A
`tags_only` example has an all-255 (ignore) mask of the image's size, so all
splits share one feature spec.

Features: `image` uint8 [H, W, 3]; `mask` uint8 [H, W, 1] class ids with 255 =
ignore (VOC's object boundaries); `tags` the object classes (ids 1..20)
present in the mask (or in the XML for `tags_only`); `file_name` the image id.

Why masks are decoded here with Pillow: VOC masks are palette PNGs, and
`tf.io.decode_png` returns the palette *colours* rather than the stored
indices. The builder stores the indices as 8-bit grayscale PNGs, so that the
tfds decoder (and every later consumer) gets class ids directly.

Size: over 450 lines because the builder and the file checks it shares with the
web-tag builder (label-PNG decoding, header size limits, bad-file reporting)
read the same real VOC formats.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import warnings
import xml.etree.ElementTree as ET
from typing import Optional

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from dis_tf import classes
from dis_tf import errors
from dis_tf.data import safe_paths

# Flat VOC palette for Pillow, computed once (writing masks is a hot loop of
# the synthetic generator).
_PALETTE_LIST = classes.voc_palette(256).reshape(-1).tolist()


class BadFileError(errors.UserError):
  """A dataset file is unreadable or inconsistent; names file and problem."""


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


# Pillow's own default (Image.MAX_IMAGE_PIXELS): above it Pillow only warns
# and decodes, above twice it raises DecompressionBombError, which is not an
# OSError. `config.DataConfig.max_image_pixels` defaults to it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


@contextlib.contextmanager
def _open_image(path, max_pixels, what="image"):
  """`Image.open(path)` with a pixel limit, checked from the header.

  Pillow reads the size from the file header in `Image.open`; nothing is
  decoded before `load()`. An image over `max_pixels` is a BadFileError
  raised there, so it is never decoded. `Image.MAX_IMAGE_PIXELS` is set to
  the limit only inside this block (and restored after), so the limit is
  not a process-wide side effect of importing dis_tf.

  Args:
    path: the image file.
    max_pixels: largest width * height accepted; None: no limit.
    what: "image" or "mask PNG", for the message.

  Yields:
    The opened (not yet decoded) `PIL.Image.Image`.
  """
  saved = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = max_pixels
  try:
    with warnings.catch_warnings():
      # Between the limit and twice it Pillow only warns; the check below
      # refuses those images.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      try:
        img = Image.open(path)
      except Image.DecompressionBombError:
        # Over twice the limit (not an OSError). Read the header again
        # without the limit, only for its size: refused below.
        Image.MAX_IMAGE_PIXELS = None
        img = Image.open(path)
    with img:
      width, height = img.size
      if max_pixels is not None and width * height > max_pixels:
        raise BadFileError(
            f"{path}: {what} is {width}x{height} = {width * height} pixels, "
            f"over the limit data.max_image_pixels={max_pixels}; not "
            "decoded.")
      yield img
  finally:
    Image.MAX_IMAGE_PIXELS = saved


def read_label_png(path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                   class_set=None):
  """Reads a segmentation mask PNG as class ids.

  Palette ('P') PNGs -- the VOC format -- are read as their palette
  *indices*; 8-bit grayscale ('L') PNGs (SegmentationClassAug) as their
  values; RGB-colour masks (some re-encoded VOC copies) are mapped back to ids
  through the VOC palette, and any colour that is not a VOC colour is an
  error.

  Args:
    path: PNG file.
    max_pixels: largest width * height decoded (None: no limit).
    class_set: the `ClassSet` whose colours an RGB mask is in (None: VOC).

  Returns:
    uint8 NumPy array [H, W] of stored ids (not yet range-checked; see
    `check_mask_ids`).

  Raises:
    BadFileError: unreadable/truncated file, an unsupported mode, or over
      `max_pixels`.
  """
  try:
    with _open_image(path, max_pixels, "mask PNG") as img:
      img.load()
      mode = img.mode
      if mode in ("P", "L"):
        # np.asarray on a 'P' image returns the indices, not the colours.
        return np.asarray(img, dtype=np.uint8).copy()
      if mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
      else:
        raise BadFileError(
            f"{path}: mask PNG has mode {mode!r}; expected a palette ('P'), "
            "8-bit grayscale ('L') or VOC-coloured RGB PNG.")
  except BadFileError:
    raise
  except (OSError, SyntaxError, ValueError,
          Image.DecompressionBombError) as e:
    raise BadFileError(f"{path}: corrupt or truncated mask PNG ({e}).") from e
  return _colours_to_ids(rgb, path, class_set or classes.VOC)


def _colours_to_ids(rgb, path, class_set):
  """Maps class colours to ids; unknown colours are an error."""
  palette = class_set.palette().astype(np.int32)
  codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
  valid = np.concatenate([np.arange(class_set.num_classes),
                          [classes.IGNORE_LABEL]])
  table = dict(zip(codes[valid].tolist(), valid.tolist()))
  pix = rgb.astype(np.int32)
  pix_codes = (pix[..., 0] << 16) | (pix[..., 1] << 8) | pix[..., 2]
  uniq, inverse = np.unique(pix_codes, return_inverse=True)
  unknown = [u for u in uniq.tolist() if u not in table]
  if unknown:
    shown = [((u >> 16) & 255, (u >> 8) & 255, u & 255) for u in unknown[:5]]
    which = "VOC class colours" if class_set.is_voc else (
        "colours of the classes in classes.txt")
    raise BadFileError(
        f"{path}: RGB mask contains colours that are not {which}, "
        f"e.g. {shown}.")
  ids = np.array([table[u] for u in uniq.tolist()], dtype=np.uint8)
  return ids[inverse].reshape(pix_codes.shape)


def check_mask_ids(mask, path, num_classes=classes.NUM_VOC_CLASSES):
  """Raises if `mask` holds ids outside 0..num_classes-1 and 255."""
  present = np.unique(mask)
  bad = [int(v) for v in present
         if not (v < num_classes or v == classes.IGNORE_LABEL)]
  if bad:
    raise BadFileError(
        f"{path}: mask has class ids {bad} outside 0..{num_classes - 1} and "
        f"{classes.IGNORE_LABEL} (ignore).")


def tags_from_mask(mask, num_classes=classes.NUM_VOC_CLASSES):
  """Object classes (1..num_classes - 1) present in a mask, sorted."""
  present = np.unique(mask)
  return [int(v) for v in present if 0 < v < num_classes]


def read_rgb_image(path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Reads and validates an image file for storage.

  Accepted: 8-bit RGB, 8-bit grayscale ('L', converted to RGB by replicating
  the channel), palette images without transparency and CMYK (converted to
  RGB). Refused with an error: images with an alpha channel or transparency
  (RGBA, LA, PA -- compositing onto an arbitrary colour would invent pixels)
  and 16/32-bit images (I;16, I, F -- no unambiguous mapping to 8 bits).

  Args:
    path: image file (JPEG or PNG).
    max_pixels: largest width * height decoded (None: no limit); a larger
      image is refused from its header.

  Returns:
    (array, encoded): uint8 [H, W, 3] pixels, and the bytes to store: the
    original file bytes for an RGB JPEG (no re-encoding loss), a lossless PNG
    of the converted pixels otherwise.

  Raises:
    BadFileError: missing, corrupt, truncated, unsupported mode, or over
      `max_pixels`.
  """
  if not os.path.isfile(path):
    raise BadFileError(f"{path}: image file is listed but does not exist.")
  try:
    with _open_image(path, max_pixels) as img:
      img.load()  # Forces a full decode: truncated files fail here.
      mode, fmt = img.mode, img.format
      if mode in ("RGBA", "LA", "PA") or (
          mode == "P" and "transparency" in img.info):
        raise BadFileError(
            f"{path}: image has an alpha channel (mode {mode!r}); convert it "
            "to RGB (flatten onto a background) before building.")
      if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise BadFileError(
            f"{path}: {mode!r} is a 16/32-bit image; only 8-bit images are "
            "supported -- convert it to 8-bit RGB before building.")
      if mode not in ("RGB", "L", "P", "CMYK", "YCbCr"):
        raise BadFileError(f"{path}: unsupported image mode {mode!r}.")
      array = np.asarray(img.convert("RGB"), dtype=np.uint8)
  except BadFileError:
    raise
  except (OSError, SyntaxError, ValueError,
          Image.DecompressionBombError) as e:
    raise BadFileError(f"{path}: corrupt or truncated image ({e}).") from e
  if fmt == "JPEG" and mode == "RGB":
    with open(path, "rb") as f:
      encoded = f.read()
  else:
    encoded = encode_png(array)
  return array, encoded


def encode_png(array):
  """Lossless PNG bytes of a uint8 [H, W] or [H, W, 3] array."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def write_label_png(path, mask, class_set=None):
  """Writes class ids as a palette PNG (the SegmentationClass format).

  Args:
    path: output file.
    mask: uint8 [H, W] class ids (255 = ignore).
    class_set: whose colours the palette holds (None: VOC).
  """
  img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
  img.putpalette(_PALETTE_LIST if class_set is None else
                 class_set.palette().reshape(-1).tolist())
  img.save(path, format="PNG")


# ---------------------------------------------------------------------------
# Build bookkeeping shared with web_tags.py
# ---------------------------------------------------------------------------


class SkipCounter:
  """Either raises on a bad file, or counts and logs it (skip_bad_files).

  Skipping happens per example, and keys are the file ids, so a skipped file
  never shifts the image/mask pairing of the others.
  """

  def __init__(self, skip_bad_files, what):
    self.skip_bad_files = skip_bad_files
    self.what = what
    self.skipped = []
    self.num_kept = 0

  def bad(self, error):
    if not self.skip_bad_files:
      raise error
    logging.warning("Skipping: %s", error)
    self.skipped.append(str(error))

  def kept(self):
    """Counts one example written."""
    self.num_kept += 1

  def report(self):
    """Logs the number of skipped files; call at the end of a split.

    Raises:
      ValueError: every listed file was bad, so the split would be empty
        (tfds would fail with "No examples were yielded").
    """
    if self.skipped and not self.num_kept:
      raise ValueError(
          f"{self.what}: all {len(self.skipped)} listed file(s) are bad "
          "(skip_bad_files=True), so the split would be empty:\n  "
          + "\n  ".join(self.skipped))
    if self.skipped:
      logging.warning(
          "%s: skipped %d bad file(s) (skip_bad_files=True):\n  %s",
          self.what, len(self.skipped), "\n  ".join(self.skipped))
    else:
      logging.info("%s: no file skipped.", self.what)


def source_fingerprint(root, index_files, skip_bad_files,
                       max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                       class_set=None):
  """A short hash of a source folder, for the tfds builder-config name.

  tfds caches prepared data under data_dir/<name>/<config>/<version>; hashing
  the resolved source path and the size/mtime of its index files into the
  config name means that pointing the same data_dir at another folder, or
  regenerating a folder, prepares a new dataset instead of silently reusing
  stale data.

  Args:
    root: source folder.
    index_files: paths of the files that define the splits.
    skip_bad_files: part of the name, since it changes the content.
    max_image_pixels: the builders' pixel limit; hashed when it is not the
      default (so the names of existing datasets do not change).
    class_set: the `ClassSet` the data is read with; hashed when it is not
      VOC's (for the same reason).

  Returns:
    e.g. "src_0123456789ab" (or "src_..._skip").
  """
  h = hashlib.sha1(os.path.realpath(root).encode("utf-8"))
  for path in sorted(index_files):
    if os.path.exists(path):
      st = os.stat(path)
      h.update(f"|{os.path.relpath(path, root)}|{st.st_size}|"
               f"{st.st_mtime_ns}".encode("utf-8"))
  if max_image_pixels != DEFAULT_MAX_IMAGE_PIXELS:
    h.update(f"|max_image_pixels={max_image_pixels}".encode("utf-8"))
  if class_set is not None and class_set != classes.VOC:
    h.update(f"|classes={classes.dumps(class_set)}".encode("utf-8"))
  name = "src_" + h.hexdigest()[:12]
  return name + "_skip" if skip_bad_files else name


def read_list(path, root):
  """Reads an image-set list into (line_no, image_id) pairs.

  Args:
    path: list file; one image id per line, or the DeepLab two-column form
      "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png".
    root: VOC2012 folder (for error messages).

  Returns:
    List of (line number, id).

  Raises:
    BadFileError: the list is empty or lists an id twice.
    safe_paths.UnsafePathError: an entry has directory parts or '..'.
  """
  entries, seen = [], {}
  with open(path, encoding="utf-8") as f:
    for line_no, raw in enumerate(f, start=1):
      fields = raw.split()
      if not fields:
        continue
      name = fields[0]
      if len(fields) == 2:
        # DeepLab list: take the id from the image path, which must be a
        # JPEGImages/ entry; the mask column must name the same id.
        image_rel, mask_rel = fields
        for rel, folder in ((image_rel, "JPEGImages"),
                            (mask_rel, "SegmentationClassAug")):
          safe_paths.resolve_inside(root, rel.lstrip("/"), path, line_no)
          if os.path.dirname(rel.strip("/")) != folder:
            raise BadFileError(
                f"{path}:{line_no}: expected {folder}/<id>, got {rel!r}.")
        name = os.path.splitext(os.path.basename(image_rel))[0]
        if os.path.splitext(os.path.basename(mask_rel))[0] != name:
          raise BadFileError(
              f"{path}:{line_no}: image {image_rel!r} and mask {mask_rel!r} "
              "name different ids.")
      elif len(fields) > 2:
        raise BadFileError(
            f"{path}:{line_no}: expected one id or two paths, got {raw!r}.")
      safe_paths.check_plain_name(name, path, line_no)
      if name in seen:
        raise BadFileError(
            f"{path}:{line_no}: id {name!r} already listed on line "
            f"{seen[name]}.")
      seen[name] = line_no
      entries.append((line_no, name))
  if not entries:
    raise BadFileError(f"{path}: the image-set list is empty (empty split).")
  return entries


def find_voc_root(manual_dir):
  """Finds the VOC2012 folder inside a manual dir.

  Accepts the manual dir itself, `<dir>/VOC2012` or
  `<dir>/VOCdevkit/VOC2012`.

  Args:
    manual_dir: folder given by the user.

  Returns:
    Path of the folder containing JPEGImages/.

  Raises:
    FileNotFoundError: if none of the three holds JPEGImages/.
  """
  manual_dir = os.fspath(manual_dir)
  for candidate in (os.path.join(manual_dir, "VOCdevkit", "VOC2012"),
                    os.path.join(manual_dir, "VOC2012"), manual_dir):
    if os.path.isdir(os.path.join(candidate, "JPEGImages")):
      return candidate
  raise errors.MissingFileError(
      f"{manual_dir}: no VOCdevkit/VOC2012/JPEGImages, VOC2012/JPEGImages or "
      "JPEGImages/ folder found; point voc_dir at the folder holding "
      "VOCdevkit/ (see docs/DATA.md).")


def voc_index_files(voc_root):
  """The files whose content defines the VOC splits (for fingerprints)."""
  files = []
  for sub in ("Segmentation", "SegmentationAug", "Main"):
    folder = os.path.join(voc_root, "ImageSets", sub)
    if os.path.isdir(folder):
      files += [os.path.join(folder, n) for n in os.listdir(folder)
                if n in ("train.txt", "val.txt", "trainval.txt",
                         "train_aug.txt")]
  return files


def _aug_list_path(voc_root):
  for sub in ("SegmentationAug", "Segmentation"):
    path = os.path.join(voc_root, "ImageSets", sub, "train_aug.txt")
    if os.path.isfile(path):
      return path
  return None


def _main_list_paths(voc_root):
  main = os.path.join(voc_root, "ImageSets", "Main")
  trainval = os.path.join(main, "trainval.txt")
  if os.path.isfile(trainval):
    return [trainval]
  return [p for p in (os.path.join(main, "train.txt"),
                      os.path.join(main, "val.txt")) if os.path.isfile(p)]


def _tags_only_entries(root, main_lists):
  """(list, line, id) of ImageSets/Main images in no Segmentation list."""
  seg_ids = set()
  seg_dir = os.path.join(root, "ImageSets", "Segmentation")
  for split in ("train", "val", "trainval"):
    seg_ids.update(n for _, n in read_list(
        os.path.join(seg_dir, f"{split}.txt"), root))
  seen = set()
  entries = []
  for path in main_lists:
    for line_no, name in read_list(path, root):
      if name not in seen and name not in seg_ids:
        seen.add(name)
        entries.append((path, line_no, name))
  return entries


def read_xml_tags(path, names=classes.VOC_CLASSES):
  """Object classes (ids 1..20) named in a VOC XML annotation.

  Args:
    path: Annotations/<id>.xml.

  Returns:
    Sorted distinct class ids.

  Raises:
    BadFileError: missing/unparsable file, unknown object name, no object.
  """
  if not os.path.isfile(path):
    raise BadFileError(f"{path}: annotation file does not exist.")
  try:
    tree = ET.parse(path)
  except ET.ParseError as e:
    raise BadFileError(f"{path}: unparsable XML ({e}).") from e
  ids = set()
  for obj in tree.getroot().iter("object"):
    name_el = obj.find("name")
    name = (name_el.text or "").strip() if name_el is not None else ""
    if name not in names[1:]:
      raise BadFileError(
          f"{path}: object name {name!r} is not a "
          f"{'VOC ' if tuple(names) == classes.VOC_CLASSES else ''}class "
          f"{list(names[1:])}.")
    ids.add(tuple(names).index(name))
  if not ids:
    raise BadFileError(f"{path}: no <object> in the annotation (empty tag "
                       "list).")
  return sorted(ids)


# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class VocSegmentationConfig(tfds.core.BuilderConfig):
  """Config of `Voc2012Segmentation`.

  Attributes:
    source_dir: the manual dir to read; None means the download config's
      `manual_dir`. `voc_builder()` sets it and names the config after a
      fingerprint of the folder.
    skip_bad_files: skip (count, log) bad files instead of raising.
    max_image_pixels: larger images are bad files (not decoded); None: no
      limit.
    class_set: the dataset's `ClassSet` (None: VOC).
  """

  source_dir: Optional[str] = None
  skip_bad_files: bool = False
  max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS
  class_set: Optional[classes.ClassSet] = None


def config_class_set(builder_config):
  """The `ClassSet` of a builder config (VOC when it has none)."""
  return getattr(builder_config, "class_set", None) or classes.VOC


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 segmentation (+ augmented set, + tag-only images)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      VocSegmentationConfig(
          name="default",
          description="Reads the manual dir given in the download config."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download VOCtrainval_11-May-2012.tar from
  http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and extract it into the
  manual dir, so that <manual_dir>/VOCdevkit/VOC2012/JPEGImages exists.
  Optionally add the DeepLab augmented set (SBD converted to PNG):
  <manual_dir>/VOCdevkit/VOC2012/SegmentationClassAug/*.png and
  <manual_dir>/VOCdevkit/VOC2012/ImageSets/SegmentationAug/train_aug.txt.
  See docs/DATA.md.
  """

  def _info(self):
    return self.dataset_info_from_configs(
        description=(
            "PASCAL VOC 2012 semantic segmentation with image-level tags "
            "(class ids: 0 background, 1..20 VOC objects, 255 ignore)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "mask": tfds.features.Image(
                shape=(None, None, 1), encoding_format="png"),
            "tags": tfds.features.Sequence(
                tfds.features.ClassLabel(names=list(
                    config_class_set(self.builder_config).names))),
            "file_name": tfds.features.Text(),
        }),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
    )

  @property
  def _max_pixels(self):
    return self.builder_config.max_image_pixels

  def _source_root(self, dl_manager):
    source = self.builder_config.source_dir
    if source is None:
      return find_voc_root(dl_manager.manual_dir)
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual is not None and os.path.realpath(os.fspath(manual)) != (
        os.path.realpath(source)) and os.path.isdir(os.fspath(manual)):
      raise errors.UserError(
          f"Builder config {self.builder_config.name} reads {source}, but the "
          f"download config's manual_dir is {manual}; use voc_builder() for "
          "the new folder.")
    return find_voc_root(source)

  def _split_generators(self, dl_manager):
    root = self._source_root(dl_manager)
    seg_dir = os.path.join(root, "ImageSets", "Segmentation")
    splits = {}
    for split in ("train", "val", "trainval"):
      path = os.path.join(seg_dir, f"{split}.txt")
      if not os.path.isfile(path):
        raise errors.MissingFileError(
            f"{path} is missing: the VOC2012 folder {root} must have "
            "ImageSets/Segmentation/{train,val,trainval}.txt.")
      splits[split] = self._generate_examples(
          root, path, "SegmentationClass", split)
    aug_list = _aug_list_path(root)
    if aug_list and os.path.isdir(os.path.join(root, "SegmentationClassAug")):
      splits["train_aug"] = self._generate_examples(
          root, aug_list, "SegmentationClassAug", "train_aug")
    main_lists = _main_list_paths(root)
    if main_lists and os.path.isdir(os.path.join(root, "Annotations")):
      entries = _tags_only_entries(root, main_lists)
      if entries:
        splits["tags_only"] = self._generate_tags_only(root, entries)
      else:
        # A derived split: without candidates it does not exist (the
        # pipeline says so if use_voc_weak_tags asks for it).
        logging.info("%s: every ImageSets/Main image has a mask; no "
                     "tags_only split.", root)
    return splits

  def _generate_examples(self, root, list_path, mask_folder, split):
    counter = SkipCounter(self.builder_config.skip_bad_files,
                          f"voc2012_segmentation/{split}")
    class_set = config_class_set(self.builder_config)
    for line_no, name in read_list(list_path, root):
      try:
        image_path = safe_paths.resolve_inside(
            root, f"JPEGImages/{name}.jpg", list_path, line_no)
        mask_path = safe_paths.resolve_inside(
            root, f"{mask_folder}/{name}.png", list_path, line_no)
        image, encoded = read_rgb_image(image_path, self._max_pixels)
        if not os.path.isfile(mask_path):
          raise BadFileError(
              f"{mask_path}: mask of {name!r} (listed in {list_path}:"
              f"{line_no}) does not exist.")
        mask = read_label_png(mask_path, self._max_pixels, class_set)
        if mask.shape != image.shape[:2]:
          raise BadFileError(
              f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) "
              f"differs from its image {image_path} "
              f"{image.shape[1]}x{image.shape[0]}.")
        check_mask_ids(mask, mask_path, class_set.num_classes)
      except BadFileError as e:
        counter.bad(e)
        continue
      counter.kept()
      yield name, {
          "image": encoded,
          "mask": encode_png(mask),
          "tags": tags_from_mask(mask, class_set.num_classes),
          "file_name": name,
      }
    counter.report()

  def _generate_tags_only(self, root, entries):
    counter = SkipCounter(self.builder_config.skip_bad_files,
                          "voc2012_segmentation/tags_only")
    for path, line_no, name in entries:
      try:
        image_path = safe_paths.resolve_inside(
            root, f"JPEGImages/{name}.jpg", path, line_no)
        xml_path = safe_paths.resolve_inside(
            root, f"Annotations/{name}.xml", path, line_no)
        tags = read_xml_tags(
            xml_path, config_class_set(self.builder_config).names)
        image, encoded = read_rgb_image(image_path, self._max_pixels)
      except BadFileError as e:
        counter.bad(e)
        continue
      ignore = np.full(image.shape[:2], classes.IGNORE_LABEL, np.uint8)
      counter.kept()
      yield name, {
          "image": encoded,
          "mask": encode_png(ignore),
          "tags": tags,
          "file_name": name,
      }
    counter.report()


def voc_builder(voc_dir, data_dir, skip_bad_files=False,
                max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, class_set=None):
  """The VOC builder for a given source folder.

  Args:
    voc_dir: manual dir holding VOCdevkit/VOC2012 (or VOC2012, or the
      VOC2012 folder itself).
    data_dir: tfds data dir where the prepared dataset lives.
    skip_bad_files: skip and count bad files instead of raising.
    max_image_pixels: larger images are bad files (None: no limit).
    class_set: the run's `ClassSet` (None: VOC). A `classes.txt` in the
      folder (tools/prepare_data.py writes one) must name the same classes.

  Returns:
    A `Voc2012Segmentation` whose config name is a fingerprint of `voc_dir`
    (see `source_fingerprint`); call `download_and_prepare()` on it.
  """
  root = find_voc_root(voc_dir)
  class_set = class_set or classes.VOC
  check_folder_classes(voc_dir, class_set)
  name = source_fingerprint(root, voc_index_files(root), skip_bad_files,
                            max_image_pixels, class_set)
  return cached_builder(
      Voc2012Segmentation, data_dir, VocSegmentationConfig(
          name=name,
          description=f"VOC 2012 read from {os.path.realpath(voc_dir)}",
          source_dir=os.path.realpath(voc_dir),
          skip_bad_files=skip_bad_files,
          max_image_pixels=max_image_pixels,
          class_set=None if class_set.is_voc else class_set))


def check_folder_classes(folder, class_set):
  """Refuses a data folder prepared with another class set.

  Args:
    folder: a VOC-layout or web-tag folder.
    class_set: the run's `ClassSet`.

  Raises:
    UserError: the folder's `classes.txt` names other classes; the message
      names both sets.
  """
  path = classes.find_class_file(folder)
  if path is None:
    return
  folder_set = classes.load_class_set(path)
  if not classes.same_classes(folder_set, class_set):
    raise errors.UserError(
        f"{folder} was prepared with {path}: {folder_set.describe()}; this "
        f"run's class set has {class_set.describe()}. Train on data "
        "prepared with the run's classes, or start a new --model_dir.")


_BUILDERS = {}


def cached_builder(builder_cls, data_dir, config):
  """One builder object per (class, config name, data_dir).

  Constructing a tfds builder re-reads its metadata and logs a warning for
  custom configs; the pipeline asks for the same builder many times.

  Args:
    builder_cls: builder class.
    data_dir: tfds data dir.
    config: its BuilderConfig (name = source fingerprint).

  Returns:
    The cached or new builder.
  """
  key = (builder_cls, config.name, os.path.realpath(os.fspath(data_dir)))
  if key not in _BUILDERS:
    _BUILDERS[key] = builder_cls(config=config, data_dir=data_dir)
  return _BUILDERS[key]
