"""`web_tags`: web images with noisy image-level tags (the paper's IDW role).

Source folder layout (see docs/DATA.md):

  <weak_dir>/annotations.jsonl     one JSON object per line:
      {"image": "relative/path.jpg", "tags": ["dog", "person"]}
      {"image": "relative/path.jpg", "caption": "a man walks his dog"}
  <weak_dir>/<relative/path.jpg>   the images (JPEG or PNG)
  <weak_dir>/truth/                optional, evaluation only (never read by
                                   the builder; see `load_weak_truth`)

`tags` entries are VOC class names or synonyms of the lexicon
(`voc_lexicon.txt`); an unknown name is an error naming it, the file and the
line. A `caption` is parsed into tags with `captions.parse_caption`. When both
are given, `tags` wins and the caption is kept as text. An example whose tag
list is empty (after parsing) carries no supervision: it is an error, or a
counted skip with `skip_bad_files`. "background" is accepted and dropped
(background is implicitly present everywhere).

One split, `train`. Features: `image`, `tags` (ids 1..20), `file_name` (the
relative path from annotations.jsonl), `caption` ("" when none).
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from dis_tf import classes
from dis_tf import errors
from dis_tf.data import captions
from dis_tf.data import safe_paths
from dis_tf.data import voc

ANNOTATIONS = "annotations.jsonl"
TRUTH_DIR = "truth"
TRUTH_FILE = "truth.jsonl"


def parse_annotation_line(line, path, line_no, lexicon=None):
  """Parses one line of annotations.jsonl.

  Args:
    line: the raw text line.
    path: the annotations file (for error messages).
    line_no: 1-based line number (for error messages).
    lexicon: caption lexicon (default if None).

  Returns:
    (image_relative_path, tag_ids, caption): tag_ids sorted, distinct, in
    1..20 (possibly empty: the caller decides), caption "" when absent.

  Raises:
    ValueError: invalid JSON, missing/ill-typed fields, unknown tag names
      (all listed).
  """
  where = f"{path}:{line_no}"
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{where}: invalid JSON ({e}).") from e
  if not isinstance(record, dict) or not isinstance(record.get("image"), str):
    raise errors.UserError(f"{where}: expected an object with a string 'image' "
                           f"field, got {line.strip()[:200]!r}.")
  unknown_keys = set(record) - {"image", "tags", "caption"}
  if unknown_keys:
    raise errors.UserError(f"{where}: unknown field(s) {sorted(unknown_keys)}; "
                           "expected 'image' and 'tags' and/or 'caption'.")
  caption = record.get("caption", "")
  if not isinstance(caption, str):
    raise errors.UserError(f"{where}: 'caption' must be a string.")
  if "tags" in record:
    tags = record["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
      raise errors.UserError(f"{where}: 'tags' must be a list of strings.")
    ids, unknown = set(), []
    for tag in tags:
      class_id = captions.tag_to_class_id(tag, lexicon)
      if class_id is None:
        unknown.append(tag)
      elif class_id > 0:
        ids.add(class_id)
    if unknown:
      names = getattr(lexicon, "class_names", classes.VOC_CLASSES)
      if tuple(names) == classes.VOC_CLASSES:
        raise errors.UserError(
            f"{where}: unknown tag name(s) {unknown}; use VOC class names "
            f"{list(classes.VOC_CLASSES[1:])} or synonyms from "
            f"{captions.LEXICON_PATH}.")
      raise errors.UserError(
          f"{where}: unknown tag name(s) {unknown}; use class names "
          f"{list(names[1:])} or their synonyms in classes.txt.")
    return record["image"], sorted(ids), caption
  if "caption" not in record:
    raise errors.UserError(f"{where}: needs a 'tags' list or a 'caption'.")
  return record["image"], captions.parse_caption(caption, lexicon), caption


@dataclasses.dataclass(eq=False)
class WebTagsConfig(tfds.core.BuilderConfig):
  """Config of `WebTags`.

  Attributes:
    source_dir: the web-tag folder; None means the download config's
      `manual_dir`. `web_tags_builder()` sets it.
    skip_bad_files: skip (count, log) bad images / empty tag lists instead of
      raising. Malformed JSON, unknown tag names and unsafe paths are always
      errors: they are mistakes in the index, not in one image.
    max_image_pixels: larger images are bad files (not decoded); None: no
      limit.
    class_set: the `ClassSet` tags are read with (None: VOC).
  """

  source_dir: Optional[str] = None
  skip_bad_files: bool = False
  max_image_pixels: Optional[int] = voc.DEFAULT_MAX_IMAGE_PIXELS
  class_set: Optional[classes.ClassSet] = None


class WebTags(tfds.core.GeneratorBasedBuilder):
  """Images with noisy image-level tags (from tag lists or captions)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      WebTagsConfig(name="default",
                    description="Reads the manual dir of the download config."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put the images and an annotations.jsonl file (one
  {"image": "rel/path.jpg", "tags": [...]} or {"image": ..., "caption": ...}
  object per line) into the manual dir. See docs/DATA.md.
  """

  def _info(self):
    return self.dataset_info_from_configs(
        description="Web images with noisy image-level VOC tags.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "tags": tfds.features.Sequence(
                tfds.features.ClassLabel(names=list(
                    voc.config_class_set(self.builder_config).names))),
            "file_name": tfds.features.Text(),
            "caption": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    root = self.builder_config.source_dir
    if root is None:
      root = os.fspath(dl_manager.manual_dir)
    path = os.path.join(root, ANNOTATIONS)
    if not os.path.isfile(path):
      raise errors.MissingFileError(
          f"{path} is missing: a web-tag folder needs an {ANNOTATIONS} index "
          "(see docs/DATA.md).")
    return {"train": self._generate_examples(root, path)}

  def _generate_examples(self, root, path):
    counter = voc.SkipCounter(self.builder_config.skip_bad_files,
                              f"web_tags ({path})")
    class_set = voc.config_class_set(self.builder_config)
    lexicon = captions.lexicon_for(class_set)
    which = "VOC class" if class_set.is_voc else "class of classes.txt"
    seen = {}
    num_lines = 0
    with open(path, encoding="utf-8") as f:
      lines = list(enumerate(f, start=1))
    for line_no, line in lines:
      if not line.strip():
        continue
      num_lines += 1
      rel, tags, caption = parse_annotation_line(line, path, line_no, lexicon)
      image_path = safe_paths.resolve_inside(root, rel, path, line_no)
      key = os.path.normpath(rel)
      if key in seen:
        raise errors.UserError(
            f"{path}:{line_no}: image {rel!r} already listed on "
            f"line {seen[key]}.")
      seen[key] = line_no
      try:
        if not tags:
          raise voc.BadFileError(
              f"{path}:{line_no}: empty tag list for {rel!r}"
              + (f" (caption {caption!r} names no {which})" if caption
                 else "") + ".")
        _, encoded = voc.read_rgb_image(
            image_path, self.builder_config.max_image_pixels)
      except voc.BadFileError as e:
        counter.bad(e)
        continue
      counter.kept()
      yield key, {
          "image": encoded,
          "tags": tags,
          "file_name": rel,
          "caption": caption,
      }
    if num_lines == 0:
      raise errors.UserError(f"{path}: no annotation lines (empty split).")
    counter.report()


def web_tags_builder(weak_dir, data_dir, skip_bad_files=False,
                     max_image_pixels=voc.DEFAULT_MAX_IMAGE_PIXELS,
                     class_set=None):
  """The web-tag builder for a given folder.

  Args:
    weak_dir: folder with annotations.jsonl and the images.
    data_dir: tfds data dir.
    skip_bad_files: skip and count bad files instead of raising.
    max_image_pixels: larger images are bad files (None: no limit).
    class_set: the run's `ClassSet` (None: VOC); a `classes.txt` in the
      folder must name the same classes.

  Returns:
    A `WebTags` builder whose config name fingerprints `weak_dir`.
  """
  class_set = class_set or classes.VOC
  voc.check_folder_classes(weak_dir, class_set)
  if not os.path.isfile(os.path.join(weak_dir, ANNOTATIONS)):
    raise errors.MissingFileError(
        f"{weak_dir}: no {ANNOTATIONS}; weak_dir must be a web-tag folder "
        "(see docs/DATA.md).")
  config = WebTagsConfig(
      name=voc.source_fingerprint(
          weak_dir, [os.path.join(weak_dir, ANNOTATIONS)], skip_bad_files,
          max_image_pixels, class_set),
      description=f"web tags read from {os.path.realpath(weak_dir)}",
      source_dir=os.path.realpath(weak_dir),
      skip_bad_files=skip_bad_files,
      max_image_pixels=max_image_pixels,
      class_set=None if class_set.is_voc else class_set)
  return voc.cached_builder(WebTags, data_dir, config)


def load_weak_truth(weak_dir, load_masks=True):
  """Loads the evaluation-only truth of a generated web-tag folder.

  The synthetic generator writes, next to the noisy annotations,
  `truth/truth.jsonl` (one {"image", "tags", "mask"} object a line: the
  clean tags and the relative path of the true mask, a palette PNG under
  `truth/masks/`). Training never reads it; it is for measuring
  pseudo-label quality and tag cleaning.

  Args:
    weak_dir: the web-tag folder.
    load_masks: also read the masks (uint8 [H, W] ids, 255 = ignore).

  Returns:
    dict: image relative path (as in annotations.jsonl) -> {"tags": sorted
    list of clean class ids in 1..20, "mask": array or None}.

  Raises:
    FileNotFoundError: no truth file (real web data has none).
  """
  truth_root = os.path.join(weak_dir, TRUTH_DIR)
  path = os.path.join(truth_root, TRUTH_FILE)
  if not os.path.isfile(path):
    raise errors.MissingFileError(
        f"{path}: no evaluation truth for {weak_dir}.")
  truth = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      record = json.loads(line)
      mask = None
      if load_masks:
        mask_path = safe_paths.resolve_inside(
            truth_root, record["mask"], path, line_no)
        mask = voc.read_label_png(mask_path)
      # Keyed exactly as written, like the `file_name` feature.
      truth[record["image"]] = {
          "tags": [int(t) for t in record["tags"]],
          "mask": mask if mask is None else np.asarray(mask),
      }
  return truth
