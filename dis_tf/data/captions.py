"""Caption parsing: from free text (or free-form tag names) to VOC classes.

The paper's IDW images carry tags parsed from their captions (paper Sec. 1,
Fig. 2). This module does the same with a readable synonym lexicon,
`voc_lexicon.txt`, shipped next to this file (format described there).

Parsing rule: the caption is lower-cased and split into alphabetic words;
going left to right, the longest lexicon phrase (up to three words, plural
forms included) starting at the current word is matched and consumed. No
negation handling: "no dogs" yields `dog` (web captions rarely negate, and
the noisy-tag machinery of DIS absorbs the rest).
"""

import functools
import os
import re

from dis_tf import classes

LEXICON_PATH = os.path.join(os.path.dirname(__file__), "voc_lexicon.txt")
_MAX_PHRASE_WORDS = 3
_WORD_RE = re.compile(r"[a-z]+")


def plural_forms(word):
  """Regular English plural forms of a (singular) word.

  Args:
    word: a lower-case word.

  Returns:
    A list of plural spellings (possibly empty for words ending in 's' that
    already look plural, e.g. "sheep" gets "sheeps" which is harmless).
  """
  if word.endswith(("s", "x", "z", "ch", "sh")):
    return [word + "es"]
  if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
    return [word[:-1] + "ies"]
  return [word + "s"]


@functools.lru_cache(maxsize=None)
def load_lexicon(path=LEXICON_PATH):
  """Reads the synonym lexicon.

  Args:
    path: lexicon file (see `voc_lexicon.txt` for the format).

  Returns:
    A dict mapping a phrase (tuple of words, plurals expanded) to a VOC
    class id in 1..20.

  Raises:
    ValueError: naming the file and line, for a malformed line, an unknown
      class name or a phrase listed for two classes.
  """
  class_ids = {name: i for i, name in enumerate(classes.VOC_CLASSES)}
  phrases = {}
  origin = {}

  def add(phrase, class_id, line_no):
    if phrase in phrases and phrases[phrase] != class_id:
      raise ValueError(
          f"{path}:{line_no}: phrase {' '.join(phrase)!r} is listed for "
          f"{classes.VOC_CLASSES[class_id]!r} but already maps to "
          f"{classes.VOC_CLASSES[phrases[phrase]]!r} (line "
          f"{origin[phrase]}); a phrase may name one class only.")
    phrases.setdefault(phrase, class_id)
    origin.setdefault(phrase, line_no)

  with open(path, encoding="utf-8") as f:
    for line_no, raw in enumerate(f, start=1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if ":" not in line:
        raise ValueError(
            f"{path}:{line_no}: expected 'class_name: phrase, ...', got "
            f"{line!r}.")
      name, rest = line.split(":", 1)
      name = name.strip()
      if name not in class_ids or class_ids[name] == 0:
        raise ValueError(
            f"{path}:{line_no}: {name!r} is not a VOC object class; expected "
            f"one of {list(classes.VOC_CLASSES[1:])}.")
      class_id = class_ids[name]
      entries = [name] + [p.strip() for p in rest.split(",") if p.strip()]
      for entry in entries:
        words = tuple(entry.lower().split())
        if not words or len(words) > _MAX_PHRASE_WORDS or not all(
            _WORD_RE.fullmatch(w) for w in words):
          raise ValueError(
              f"{path}:{line_no}: phrase {entry!r} must be 1 to "
              f"{_MAX_PHRASE_WORDS} alphabetic words.")
        add(words, class_id, line_no)
        for plural in plural_forms(words[-1]):
          add(words[:-1] + (plural,), class_id, line_no)
  return phrases


def tokenize(text):
  """Lower-cases `text` and returns its alphabetic words."""
  return _WORD_RE.findall(text.lower())


def parse_caption(caption, lexicon=None):
  """Extracts the VOC object classes named in a caption.

  Args:
    caption: free text, e.g. "a man walks his dog past a parked motorcycle".
    lexicon: phrase -> class id dict from `load_lexicon` (default lexicon if
      None).

  Returns:
    Sorted list of distinct class ids in 1..20 (background never appears).
  """
  lexicon = load_lexicon() if lexicon is None else lexicon
  words = tokenize(caption)
  found = set()
  i = 0
  while i < len(words):
    for n in range(min(_MAX_PHRASE_WORDS, len(words) - i), 0, -1):
      class_id = lexicon.get(tuple(words[i:i + n]))
      if class_id is not None:
        found.add(class_id)
        i += n
        break
    else:
      i += 1
  return sorted(found)


def tag_to_class_id(tag, lexicon=None):
  """Maps one tag name (a VOC class name or a lexicon synonym) to its id.

  Args:
    tag: e.g. "dog", "dogs", "motorcycle", "tv monitor", "background".
    lexicon: as in `parse_caption`.

  Returns:
    The class id (0 for "background"), or None if the name is unknown.
  """
  lexicon = load_lexicon() if lexicon is None else lexicon
  key = tag.strip().lower()
  if key == classes.VOC_CLASSES[0]:
    return 0
  return lexicon.get(tuple(key.replace("_", " ").split()))
