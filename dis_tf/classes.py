"""Class sets: the names, colours and caption synonyms of a dataset's classes.

A `ClassSet` is data, not code: a dataset names its classes in one plain
text file (`load_class_set`, format in docs/DATA.md "Your own classes"):

  # classes.txt: one class per line, in id order; line 1 is id 0
  background | #000000
  crack      | #ff0000 | fissure, split
  rust       |         | corrosion, oxidation
  paint

Each line is `name | #rrggbb | synonym, synonym, ...`; the colour and the
synonyms are optional (the default colour of id i is the VOC palette's,
and the class name itself, with a plural "s", always names its class in a
caption). `VOC` is the class set of PASCAL VOC 2012, shipped with the package
and used by default; its caption lexicon is the package's
`data/voc_lexicon*.txt` (`lexicon="voc"`), so VOC behaviour is unchanged.

A training run records its class set in `config.json` (`ExperimentConfig.
class_set`, see `from_config`), and the export in its metadata.
"""

import dataclasses
import json
import os
import re
from typing import Optional

import numpy as np

from dis_tf import errors

# Index 0 is background; indices 1..20 are the 20 VOC object classes. The
# order is the official VOC 2012 one, so class ids match VOC masks.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_VOC_CLASSES = len(VOC_CLASSES)
IGNORE_LABEL = 255
# The most classes a set may have: ids are stored in 8-bit PNGs and 255 is
# the ignore label.
MAX_CLASSES = 255
CLASS_FILENAME = "classes.txt"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_ .-]*")
_COLOR_RE = re.compile(r"#([0-9a-fA-F]{6})")
_WORD_RE = re.compile(r"[a-z0-9]+")
_MAX_PHRASE_WORDS = 3


class ClassFileError(errors.UserError):
  """A class file is malformed; the message names the file and line."""


def voc_palette(num_colors=256):
  """Returns the standard VOC colour map (bit-interleaved), uint8 [N, 3].

  Index 255 (ignore) gets (224, 224, 192), as in the VOC devkit.

  Args:
    num_colors: number of palette entries.

  Returns:
    A uint8 NumPy array of shape [num_colors, 3].
  """
  palette = np.zeros((num_colors, 3), dtype=np.uint8)
  for index in range(num_colors):
    c, r, g, b = index, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((c >> 0) & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    palette[index] = (r, g, b)
  return palette


def phrase_words(text):
  """The lower-case words of a class name or synonym ("Traffic_light" ->
  ("traffic", "light")), as the caption parser splits text."""
  return tuple(_WORD_RE.findall(text.lower().replace("_", " ")))


@dataclasses.dataclass(frozen=True)
class ClassSet:
  """The classes of a dataset, in id order (0 = background).

  Attributes:
    names: class names, id order.
    colors: one (r, g, b) per class: the labelmap colours of masks, figures
      and prediction PNGs.
    synonyms: one tuple of caption synonyms per class (empty for id 0).
    lexicon: "voc": captions are parsed with the package's VOC lexicon
      files (`dis_tf/data/voc_lexicon*.txt`) instead of `synonyms`; None:
      with the names and `synonyms`.
  """

  names: tuple
  colors: tuple
  synonyms: tuple
  lexicon: Optional[str] = None

  @property
  def num_classes(self):
    return len(self.names)

  @property
  def is_voc(self):
    """True for the VOC 2012 class names in VOC order."""
    return tuple(self.names) == VOC_CLASSES

  def palette(self):
    """uint8 [256, 3]: the class colours, then the VOC palette's (255:
    the ignore colour)."""
    palette = voc_palette(256)
    palette[:self.num_classes] = np.asarray(self.colors, np.uint8).reshape(
        -1, 3)
    return palette

  def to_json(self):
    """A JSON-able dict (config.json, the export's metadata)."""
    return {"names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "synonyms": [list(s) for s in self.synonyms],
            "lexicon": self.lexicon}

  @classmethod
  def from_json(cls, values):
    """The inverse of `to_json`."""
    names = tuple(values["names"])
    colors = values.get("colors") or default_colors(len(names))
    synonyms = values.get("synonyms") or [()] * len(names)
    return cls(names=names,
               colors=tuple(tuple(int(v) for v in c) for c in colors),
               synonyms=tuple(tuple(s) for s in synonyms),
               lexicon=values.get("lexicon"))

  def describe(self):
    """A short description for error messages: the count and the names."""
    shown = ", ".join(self.names[:8])
    more = ", ..." if self.num_classes > 8 else ""
    return f"{self.num_classes} classes ({shown}{more})"


def default_colors(num_classes):
  """The VOC palette's first `num_classes` colours."""
  return tuple(tuple(int(v) for v in c)
               for c in voc_palette(256)[:num_classes])


VOC = ClassSet(names=VOC_CLASSES, colors=default_colors(NUM_VOC_CLASSES),
               synonyms=((),) * NUM_VOC_CLASSES, lexicon="voc")


def from_config(config):
  """The class set of an `ExperimentConfig`.

  Args:
    config: an `ExperimentConfig` (or anything with `class_set` and
      `model.num_classes`).

  Returns:
    Its `class_set` as a `ClassSet`; without one (no class file), `VOC`, or
    for a `model.num_classes` other than 21 the VOC names cut (or padded
    with "class_<i>") to that count, as before class files.
  """
  values = getattr(config, "class_set", None)
  if values is not None:
    return ClassSet.from_json(values)
  model = getattr(config, "model", None)
  count = getattr(model, "num_classes", NUM_VOC_CLASSES)
  if count == NUM_VOC_CLASSES:
    return VOC
  names = (VOC_CLASSES + tuple(f"class_{i}" for i in range(
      NUM_VOC_CLASSES, count)))[:count]
  return ClassSet(names=names, colors=default_colors(count),
                  synonyms=((),) * count, lexicon="voc")


def load_class_set(path):
  """Reads a class file (`classes.txt`, format in the module docstring).

  Args:
    path: the file.

  Returns:
    A `ClassSet`; `VOC` itself if the file names the VOC classes in VOC
    order with no colours or synonyms of its own.

  Raises:
    ClassFileError: naming the file and line: an empty or malformed name, a
      name or synonym listed twice, a bad colour, fewer than 2 or more than
      255 classes. MissingFileError if the file does not exist.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"{path}: class file does not exist.")
  names, colors, synonyms, seen = [], [], [], {}
  with open(path, encoding="utf-8") as f:
    for line_no, raw in enumerate(f, start=1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      where = f"{path}:{line_no}"
      fields = [part.strip() for part in line.split("|")]
      if len(fields) > 3:
        raise ClassFileError(
            f"{where}: expected 'name | #rrggbb | synonym, ...', got "
            f"{len(fields)} '|'-separated fields.")
      name = fields[0]
      if not name:
        raise ClassFileError(f"{where}: empty class name.")
      if not _NAME_RE.fullmatch(name) or not phrase_words(name) or len(
          phrase_words(name)) > _MAX_PHRASE_WORDS:
        raise ClassFileError(
            f"{where}: class name {name!r} must start with a letter or digit "
            "and hold only letters, digits, spaces, '_', '-' and '.' (at "
            f"most {_MAX_PHRASE_WORDS} words).")
      color = fields[1] if len(fields) > 1 else ""
      if color:
        match = _COLOR_RE.fullmatch(color)
        if not match:
          raise ClassFileError(
              f"{where}: colour {color!r} of {name!r} is not #rrggbb.")
        value = int(match.group(1), 16)
        color = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
      else:
        color = None
      words = []
      for synonym in (fields[2].split(",") if len(fields) > 2 else ()):
        synonym = synonym.strip()
        if not synonym:
          continue
        phrase = phrase_words(synonym)
        if not phrase or len(phrase) > _MAX_PHRASE_WORDS:
          raise ClassFileError(
              f"{where}: synonym {synonym!r} must be 1 to "
              f"{_MAX_PHRASE_WORDS} words of letters and digits.")
        words.append(" ".join(phrase))
      if name.lower() in (n.lower() for n in names):
        raise ClassFileError(f"{where}: duplicate class name {name!r}.")
      class_id = len(names)
      for phrase in [" ".join(phrase_words(name))] + words:
        if phrase in seen and seen[phrase][1] != class_id:
          raise ClassFileError(
              f"{where}: {phrase!r} is already the name or a synonym of "
              f"class {seen[phrase][2]!r} (line {seen[phrase][0]}); a name "
              "or synonym may name one class only.")
        seen.setdefault(phrase, (line_no, class_id, name))
      names.append(name)
      colors.append(color)
      synonyms.append(tuple(dict.fromkeys(words)))
  if len(names) < 2:
    raise ClassFileError(
        f"{path}: {len(names)} class(es); a class file names at least 2 "
        "(line 1 is the background, id 0).")
  if len(names) > MAX_CLASSES:
    raise ClassFileError(f"{path}: {len(names)} classes; at most "
                         f"{MAX_CLASSES} (255 is the ignore label).")
  defaults = default_colors(len(names))
  colors = tuple(c or d for c, d in zip(colors, defaults))
  if len(set(colors)) != len(colors):
    raise ClassFileError(f"{path}: two classes have the same colour; masks "
                         "in RGB could not be read.")
  class_set = ClassSet(names=tuple(names), colors=colors,
                       synonyms=tuple(synonyms))
  if class_set.is_voc and not any(synonyms) and colors == VOC.colors:
    return VOC
  return class_set


def write_class_set(class_set, path):
  """Writes `class_set` as a class file that `load_class_set` reads back."""
  lines = ["# Classes in id order (line 1 = id 0): name | #rrggbb | "
           "synonyms"]
  for name, color, words in zip(class_set.names, class_set.colors,
                                class_set.synonyms):
    hex_color = "#{:02x}{:02x}{:02x}".format(*color)
    lines.append(f"{name} | {hex_color} | {', '.join(words)}".rstrip(" |"))
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def find_class_file(voc_dir):
  """The `classes.txt` of a VOC-layout folder (in the folder holding
  JPEGImages/, or `voc_dir` itself), or None."""
  if not voc_dir:
    return None
  voc_dir = os.fspath(voc_dir)
  for folder in (os.path.join(voc_dir, "VOCdevkit", "VOC2012"),
                 os.path.join(voc_dir, "VOC2012"), voc_dir):
    path = os.path.join(folder, CLASS_FILENAME)
    if os.path.isfile(path):
      return path
  return None


def same_classes(a, b):
  """True if two class sets have the same names in the same order."""
  return tuple(a.names) == tuple(b.names)


def dumps(class_set):
  """Canonical JSON text of a class set (for hashes)."""
  return json.dumps(class_set.to_json(), sort_keys=True)
