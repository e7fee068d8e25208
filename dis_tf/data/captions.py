"""Caption parsing: from free text (or free-form tag names) to VOC classes.

The paper's IDW images carry tags parsed from their captions (paper Sec. 1,
Fig. 2). This module does the same with a readable synonym lexicon: the core
list `voc_lexicon.txt` and its web-caption extension `voc_lexicon_web.txt`,
both next to this file. The format, the keywords (`none`, `modifier`,
`negation`, `negation_suffix`) and how to extend the lexicon are described
in the header of `voc_lexicon_web.txt` and in docs/DATA.md.

Parsing rules (`parse_caption`), all deterministic:

1. Normalise: lower-case; "'s" is dropped (possessives: "dog's" -> "dog";
   "twins'" -> "twins"), "n't" becomes " not". The text is split into words
   (letters and digits), the punctuation marks . , ; : ! ? ( ) [ ] " & /
   and negating suffixes ("-free"); every other character (hyphen, '#',
   '@', '_', emoji) only separates words: "double-decker" is "double
   decker", "#cat" is "cat".
2. Longest match: going left to right, the longest lexicon phrase (up to
   three words, plurals included) starting at the current word is matched
   and consumed. "hot dog", "monitor lizard" and "dining table" are one
   phrase each, so "dog", "monitor" and "table" inside them do not count.
3. Modifiers: a modifier phrase ("baby", "police", "family") directly
   followed by another lexicon phrase describes it and yields nothing
   itself ("baby elephant", "police car"; also through "of" within two
   words: "family of ducks").
4. Negation: a cue ("no", "not", "without", "neither", "nor", "free of",
   ...) negates the noun phrase that follows it: optionally one determiner
   right after the cue ("without a TV", "not a single person"), at most two
   other words ("no parked cars"), then lexicon phrases joined by "and",
   "or" or "," ("no cars, buses or people"). The scope ends at other
   punctuation, a preposition ("in", "with", "next"), a verb such as "is",
   a conjunction such as "but" or "just", a determiner after a coordinator
   ("no people and a dog": the dog is there), or any word following a
   negated phrase that is not a coordinator. A suffix "-free" negates the
   phrase before it ("car-free street").
5. A class is returned if at least one mention of it is not negated ("a dog
   and no other dogs" gives dog).

The negation rules are heuristics for the short noun-phrase negations of
captions; they do not parse clauses ("no one noticed the dog" keeps dog, as
intended, but "the dog is not here" also keeps it).

Size: over 450 lines because the parser's rules (negation, plural forms, multi-
word names, lexicon loading and its checks) are one grammar, documented here.
"""

import functools
import os
import re

from dis_tf import classes

_DIR = os.path.dirname(__file__)
LEXICON_PATH = os.path.join(_DIR, "voc_lexicon.txt")
WEB_LEXICON_PATH = os.path.join(_DIR, "voc_lexicon_web.txt")
# Read in this order; together they form the default lexicon.
LEXICON_PATHS = (LEXICON_PATH, WEB_LEXICON_PATH)
_MAX_PHRASE_WORDS = 3
_PHRASE_WORD_RE = re.compile(r"[a-z0-9]+")
# Lexicon keywords that stand in place of a class name.
NONE, MODIFIER, KINSHIP, NEGATION, NEGATION_SUFFIX = (
    "none", "modifier", "kinship", "negation", "negation_suffix")
_KEYWORDS = (NONE, MODIFIER, KINSHIP, NEGATION, NEGATION_SUFFIX)
# "<class> ending: man, men" lines: word endings that name the class.
ENDING = "ending"
# Possessive pronouns before a kinship word ("its mother").
_POSSESSIVES = frozenset({"its", "their", "her", "his"})
# Punctuation kept as tokens: it bounds phrases and negation scopes.
_PUNCTUATION = r"[.,;:!?()\[\]\"&/]"

# Closed-class English words that shape a negation scope. They are grammar,
# not vocabulary, so they live here rather than in the lexicon files.
_COORDINATORS = frozenset({"and", "or", ",", "&", "/", "plus"})
_DETERMINERS = frozenset({
    "a", "an", "the", "any", "this", "that", "these", "those", "his", "her",
    "its", "their", "my", "our", "your", "some", "one", "two", "three",
    "four", "five", "six", "seven", "eight", "nine", "ten", "several",
    "many", "few", "every", "each", "another", "much", "all", "both"})
_BREAKS = frozenset({
    ".", ";", ":", "!", "?", "(", ")", "[", "]", "\"",
    # Prepositions.
    "with", "in", "on", "at", "of", "by", "for", "from", "to", "into",
    "onto", "near", "under", "over", "behind", "beside", "besides", "next",
    "along", "across", "through", "inside", "outside", "around", "between",
    "against", "among", "past", "during", "after", "before", "above",
    "below", "beneath", "underneath", "up", "down", "off", "out", "toward",
    "towards", "via", "like", "as", "than", "about", "within", "beyond",
    "upon", "atop",
    # Conjunctions, adverbs that start a contrast, relatives.
    "but", "except", "yet", "while", "although", "though", "because",
    "since", "so", "if", "when", "where", "which", "who", "whose", "just",
    "only", "instead", "however", "apart", "here", "there",
    # Auxiliary verbs.
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have",
    "had", "do", "does", "did", "can", "could", "will", "would", "should",
    "may", "might", "must"})
_COORD, _DET, _BREAK = 1, 2, 3
_ROLES = {**{w: _BREAK for w in _BREAKS}, **{w: _DET for w in _DETERMINERS},
          **{w: _COORD for w in _COORDINATORS}}
# Negation scope states.
_OUT, _CUE, _AFTER, _LIST = 0, 1, 2, 3
# Letters a word needs before a class ending ("oarsman": "oars" + "man"), so
# that short words ("omen", "amen", "ramen") never count.
_MIN_STEM = 3
# Words allowed between a cue (or a coordinator) and the negated phrase.
_SCOPE_BUDGET = 2


def plural_forms(word):
  """Regular English plural forms of a (singular) word.

  The first form is the one `synthetic.make_caption` writes; keep it stable
  (the synthetic benchmark's captions depend on it).

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


def _lexicon_plurals(word):
  """`plural_forms` plus the irregular patterns of nouns in the lexicon.

  Args:
    word: a lower-case word.

  Returns:
    Plural spellings: "-man" -> "-men" (policeman), "-f"/"-fe" -> "-ves"
    (wolf, wife), besides the regular form. Extra spellings that are not
    words ("humen") never occur in captions and are harmless.
  """
  forms = plural_forms(word)
  if word.endswith("man"):
    forms.append(word[:-3] + "men")
  elif word.endswith("fe"):
    forms.append(word[:-2] + "ves")
  elif word.endswith("f"):
    forms.append(word[:-1] + "ves")
  return forms


class Lexicon(dict):
  """Phrase (tuple of words) -> VOC class id, plus the parsing tables.

  Values are class ids in 1..20, or 0 for a `none` phrase (it contains a VOC
  word but names no VOC object). Treat it as read-only: the parse tables
  are built once, at construction.

  Attributes:
    paths: the lexicon files read.
    modifiers: frozenset of modifier phrases.
    kinship: frozenset of kinship phrases.
    negations: frozenset of negation cue phrases.
    negation_suffixes: frozenset of suffix words ("free" for "car-free").
    endings: dict word ending -> class id ("man" -> person), for words
      that are not phrases themselves ("oarsman", "speedboat").
    class_names: the names of the class ids (id 0: background).
  """

  def __init__(self, phrases, modifiers=(), kinship=(), negations=(),
               negation_suffixes=(), endings=None, paths=(),
               class_names=classes.VOC_CLASSES):
    super().__init__(phrases)
    self.paths = tuple(paths)
    self.class_names = tuple(class_names)
    self.endings = dict(endings or {})
    self.modifiers = frozenset(modifiers)
    self.kinship = frozenset(kinship)
    self.negations = frozenset(negations)
    self.negation_suffixes = frozenset(negation_suffixes)
    self.table = _ParseTable(self)


class _ParseTable:
  """What `parse_caption` looks up per token, built once per lexicon.

  Attributes:
    entries: key -> (is_cue, class_id, is_modifier, is_kinship); the key is
      the word
      itself for one-word phrases (no tuple to build on the hot path) and
      the tuple of words otherwise.
    longest: first word -> number of words of the longest phrase starting
      with it. A word absent from it starts no phrase (most words).
    suffixes: suffix tokens ("-free").
    endings: word ending -> class id ("man" -> person), longest first.
    ending_tuple: the endings, for one `str.endswith` test per word.
    token_re: compiled tokenizer.
  """

  def __init__(self, lexicon):
    self.entries = {}
    self.longest = {}
    modifiers = getattr(lexicon, "modifiers", frozenset())
    kinship = getattr(lexicon, "kinship", frozenset())
    for phrase, class_id in lexicon.items():
      self._add(phrase, (False, class_id, phrase in modifiers,
                         phrase in kinship))
    for phrase in getattr(lexicon, "negations", ()):
      self._add(phrase, (True, 0, False, False))
    endings = getattr(lexicon, "endings", {})
    self.endings = sorted(endings.items(), key=lambda kv: -len(kv[0]))
    self.ending_tuple = tuple(endings)
    suffixes = sorted(getattr(lexicon, "negation_suffixes", ()))
    self.suffixes = frozenset("-" + s for s in suffixes)
    suffix_re = "".join(f"-{s}\\b|" for s in suffixes)
    self.token_re = re.compile(suffix_re + "[a-z0-9]+|" + _PUNCTUATION)

  def ending_entry(self, word):
    """Entry for a word not in the lexicon whose ending names a class."""
    for ending, class_id in self.endings:
      if word.endswith(ending) and len(word) - len(ending) >= _MIN_STEM:
        return (False, class_id, False, False)
    return None

  def _add(self, phrase, entry):
    self.entries[phrase[0] if len(phrase) == 1 else phrase] = entry
    self.longest[phrase[0]] = max(self.longest.get(phrase[0], 0),
                                  len(phrase))


def _read_entries(path):
  """Yields (line_no, name, [phrase tuples]) for each entry of a file."""
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
      entries = [p.strip() for p in rest.split(",") if p.strip()]
      phrases = []
      for entry in entries:
        words = tuple(entry.lower().split())
        if not words or len(words) > _MAX_PHRASE_WORDS or not all(
            _PHRASE_WORD_RE.fullmatch(w) for w in words):
          raise ValueError(
              f"{path}:{line_no}: phrase {entry!r} must be 1 to "
              f"{_MAX_PHRASE_WORDS} words of letters and digits.")
        phrases.append(words)
      yield line_no, name, phrases


def load_lexicon(paths=LEXICON_PATHS):
  """Reads the synonym lexicon.

  Args:
    paths: one lexicon file or a sequence of them, read in order (see
      `voc_lexicon.txt` and `voc_lexicon_web.txt` for the format). Default:
      `LEXICON_PATHS`.

  Returns:
    A `Lexicon`: a dict mapping a phrase (tuple of words, plurals expanded)
    to a VOC class id in 1..20, or 0 for a `none` phrase; cached, so every
    caller shares one (read-only) object per list of files.

  Raises:
    ValueError: naming the file and line, for a malformed line, an unknown
      class name or keyword, a phrase listed for two classes, a modifier or
      kinship word that is not a class phrase, or a negation cue that is
      also a phrase.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = (paths,)
  return _load_lexicon(tuple(os.fspath(p) for p in paths))


def _class_name(class_id):
  return NONE if class_id == 0 else classes.VOC_CLASSES[class_id]


@functools.lru_cache(maxsize=None)
def _load_lexicon(paths):
  """`load_lexicon` on a tuple of paths (hashable, for the cache)."""
  class_ids = {name: i for i, name in enumerate(classes.VOC_CLASSES) if i}
  class_ids[NONE] = 0
  phrases, origin = {}, {}
  modifiers, kinship, negations, suffixes = [], [], {}, set()
  endings = {}

  def add(phrase, class_id, where):
    if phrase in phrases and phrases[phrase] != class_id:
      raise ValueError(
          f"{where}: phrase {' '.join(phrase)!r} is listed for "
          f"{_class_name(class_id)!r} but already maps to "
          f"{_class_name(phrases[phrase])!r} ({origin[phrase]}); a phrase "
          "may name one class only.")
    phrases.setdefault(phrase, class_id)
    origin.setdefault(phrase, where)

  for path in paths:
    for line_no, name, entries in _read_entries(path):
      where = f"{path}:{line_no}"
      if name == MODIFIER:
        modifiers.extend((p, where) for p in entries)
      elif name == KINSHIP:
        kinship.extend((p, where) for p in entries)
      elif name == NEGATION:
        negations.update((p, where) for p in entries)
      elif name == NEGATION_SUFFIX:
        for p in entries:
          if len(p) != 1 or not p[0].isalpha():
            raise ValueError(f"{where}: a negation suffix is one word of "
                             f"letters, got {' '.join(p)!r}.")
          suffixes.add(p[0])
      elif (name.endswith(" " + ENDING) and
            name[:-len(ENDING) - 1] in class_ids and
            class_ids[name[:-len(ENDING) - 1]]):
        class_id = class_ids[name[:-len(ENDING) - 1]]
        for p in entries:
          if len(p) != 1:
            raise ValueError(f"{where}: an ending is one word, got "
                             f"{' '.join(p)!r}.")
          if endings.get(p[0], class_id) != class_id:
            raise ValueError(f"{where}: ending {p[0]!r} already names "
                             f"{_class_name(endings[p[0]])!r}.")
          endings[p[0]] = class_id
      elif name in class_ids:
        class_id = class_ids[name]
        if class_id:
          # The class name itself is always a phrase of its class.
          entries = [(name,)] + entries
        for words in entries:
          add(words, class_id, where)
          for plural in _lexicon_plurals(words[-1]):
            add(words[:-1] + (plural,), class_id, where)
      else:
        raise ValueError(
            f"{where}: {name!r} is not a VOC object class; expected one of "
            f"{list(classes.VOC_CLASSES[1:])}, '<class> {ENDING}' or a "
            f"keyword {list(_KEYWORDS)}.")

  def with_plurals(listed, keyword):
    out = set()
    for phrase, where in listed:
      if not phrases.get(phrase):
        raise ValueError(
            f"{where}: {keyword} {' '.join(phrase)!r} must also be listed as "
            "a phrase of a VOC class.")
      out.add(phrase)
      for plural in _lexicon_plurals(phrase[-1]):
        plural_phrase = phrase[:-1] + (plural,)
        if phrases.get(plural_phrase) == phrases[phrase]:
          out.add(plural_phrase)
    return out

  for phrase, where in negations.items():
    if phrase in phrases:
      raise ValueError(
          f"{where}: negation cue {' '.join(phrase)!r} is also a phrase of "
          f"{_class_name(phrases[phrase])!r} ({origin[phrase]}).")
  return Lexicon(phrases, modifiers=with_plurals(modifiers, MODIFIER),
                 kinship=with_plurals(kinship, KINSHIP), negations=negations,
                 negation_suffixes=suffixes, endings=endings, paths=paths)


def lexicon_for(class_set):
  """The caption lexicon of a class set (`dis_tf.classes.ClassSet`).

  The VOC class set (`lexicon="voc"`) has the package's lexicon files
  (`load_lexicon()`). Any other has its names and synonyms, each with its
  regular plural, and the negation cues of `voc_lexicon_web.txt` ("no",
  "without", "-free", ...): no modifiers, kinship words or endings.

  Args:
    class_set: a `ClassSet`.

  Returns:
    A `Lexicon` (cached per class set).
  """
  if class_set.lexicon == "voc":
    return load_lexicon()
  return _class_set_lexicon(class_set)


@functools.lru_cache(maxsize=None)
def _class_set_lexicon(class_set):
  phrases = {}
  for class_id, (name, synonyms) in enumerate(zip(class_set.names,
                                                  class_set.synonyms)):
    if not class_id:
      continue
    for words in [classes.phrase_words(name)] + [
        tuple(s.split()) for s in synonyms]:
      phrases.setdefault(words, class_id)
      for plural in _lexicon_plurals(words[-1]):
        phrases.setdefault(words[:-1] + (plural,), class_id)
  negations, suffixes = set(), set()
  for _, name, entries in _read_entries(WEB_LEXICON_PATH):
    if name == NEGATION:
      negations.update(p for p in entries if p not in phrases)
    elif name == NEGATION_SUFFIX:
      suffixes.update(p[0] for p in entries)
  return Lexicon(phrases, negations=negations, negation_suffixes=suffixes,
                 class_names=class_set.names)


def _table(lexicon):
  if lexicon is None:
    return load_lexicon().table
  if isinstance(lexicon, Lexicon):
    return lexicon.table
  # A plain phrase -> class id dict: longest match only (no modifiers or
  # negation cues); built per call, so prefer a `Lexicon`.
  return _ParseTable(lexicon)


def _normalize(caption):
  text = caption.lower()
  if "'" in text or "\u2019" in text:
    text = text.replace("\u2019", "'").replace("n't", " not").replace(
        "'s", "")
  return text


def tokenize(text, lexicon=None):
  """Splits a caption into the tokens `parse_caption` reads.

  Args:
    text: free text.
    lexicon: a `Lexicon` (its negation suffixes become tokens); default
      lexicon if None.

  Returns:
    List of tokens: lower-case words (letters and digits), punctuation
    marks, and suffix tokens such as "-free". Possessive "'s" is dropped and
    "n't" becomes "not".
  """
  return _table(lexicon).token_re.findall(_normalize(text))


def _match(entries, tokens, i, n, longest):
  """(entry, end) of the longest phrase at tokens[i], or (None, i + 1)."""
  for length in range(min(longest, n - i), 1, -1):
    entry = entries.get(tuple(tokens[i:i + length]))
    if entry is not None:
      return entry, i + length
  return entries.get(tokens[i]), i + 1


def _noun_at(table, tokens, i, n):
  """True if a class or `none` phrase starts at tokens[i]."""
  if i >= n:
    return False
  longest = table.longest.get(tokens[i])
  if longest is None:
    return False
  entry, _ = _match(table.entries, tokens, i, n, longest)
  return entry is not None and not entry[0]


def parse_caption(caption, lexicon=None):
  """Extracts the VOC object classes named in a caption.

  See the module docstring for the rules (longest match, modifiers,
  negation).

  Args:
    caption: free text, e.g. "a man walks his dog past a parked motorcycle".
    lexicon: a `Lexicon` from `load_lexicon` (default lexicon if None). A
      plain phrase -> class id dict is accepted too, but then only the
      longest-match rule applies.

  Returns:
    Sorted list of distinct class ids in 1..20 (background never appears).
  """
  table = _table(lexicon)
  tokens = table.token_re.findall(_normalize(caption))
  entries, longest_at, suffixes = table.entries, table.longest, table.suffixes
  ending_tuple = table.ending_tuple
  found = set()
  n = len(tokens)
  scope, budget, fresh = _OUT, 0, False
  # Class id of the last noun phrase matched (0: none phrase, None: no noun
  # yet), the antecedent of a possessive pronoun for kinship words.
  last_noun, last_end = None, -1
  i = 0
  while i < n:
    word = tokens[i]
    longest = longest_at.get(word)
    if longest is not None:
      entry, end = _match(entries, tokens, i, n, longest)
    else:
      entry = None
    if entry is None and ending_tuple and word.endswith(ending_tuple):
      entry, end = table.ending_entry(word), i + 1
    if entry is None:
      # Not a lexicon phrase: only matters inside a negation scope.
      if scope:
        role = _ROLES.get(word)
        if role == _COORD:
          if scope == _AFTER:
            scope, budget = _LIST, _SCOPE_BUDGET
          elif scope == _CUE and word != "or":
            # "no shirt and his dog": "and" before any negated phrase
            # starts a new phrase; "no hats or dogs" keeps the scope.
            scope = _OUT
        elif role == _DET:
          if not (scope == _CUE and fresh):
            scope = _OUT
        elif role == _BREAK or scope == _AFTER:
          scope = _OUT
        elif word not in suffixes:
          budget -= 1
          if budget < 0:
            scope = _OUT
        fresh = False
      i += 1
      continue
    is_cue, class_id, is_modifier, is_kinship = entry
    if is_cue:
      scope, budget, fresh = _CUE, _SCOPE_BUDGET, True
      i = end
      continue
    if is_modifier and (
        _noun_at(table, tokens, end, n) or
        (end < n and tokens[end] == "of" and (
            _noun_at(table, tokens, end + 1, n) or
            _noun_at(table, tokens, end + 2, n)))):
      # Describes the next noun ("baby elephant", "police car").
      fresh = False
      i = end
      continue
    if is_kinship and last_noun is not None and (
        last_end == i or tokens[i - 1] in _POSSESSIVES):
      # "an elephant and its mother", "an elephant calf": the kin of the
      # last noun, same class.
      class_id = last_noun
    else:
      last_noun = class_id
    last_end = end
    negated = scope != _OUT
    if end < n and tokens[end] in suffixes:
      negated = True
      end += 1
    if class_id and not negated:
      found.add(class_id)
    if scope:
      scope, fresh = _AFTER, False
    i = end
  return sorted(found)


def tag_to_class_id(tag, lexicon=None):
  """Maps one tag name (a VOC class name or a lexicon synonym) to its id.

  Args:
    tag: e.g. "dog", "dogs", "motorcycle", "tv monitor", "background".
    lexicon: as in `parse_caption`.

  Returns:
    The class id (0 for "background"), or None if the name is unknown or a
    `none` phrase of the lexicon ("hot dog" is not a tag of any class). A
    one-word tag that is not a phrase may name a class by its ending, as in
    captions ("oarsman" -> person).
  """
  lexicon = load_lexicon() if lexicon is None else lexicon
  key = tag.strip().lower()
  names = getattr(lexicon, "class_names", classes.VOC_CLASSES)
  if key == names[0].lower():
    return 0
  words = tuple(key.replace("_", " ").split())
  if words not in lexicon:
    # "x-ray" as the parser splits it: ("x", "ray").
    words = classes.phrase_words(key)
  if words in lexicon:
    return lexicon[words] or None
  if len(words) == 1 and isinstance(lexicon, Lexicon):
    entry = lexicon.table.ending_entry(words[0])
    if entry is not None:
      return entry[1]
  return None


def read_labelled_captions(path):
  """Reads captions with expected tags (format of tests/data/captions_web.tsv).

  The file is tab-separated with a header line `split style tags caption`;
  lines starting with '#' are comments. `tags` is a comma-separated list of
  VOC class names, "-" for none.

  Args:
    path: the file.

  Returns:
    A list of dicts with keys "split", "style", "caption", "tags" (sorted
    class ids in 1..20) and "line" (line number).

  Raises:
    ValueError: naming the file and line, for a row without four fields or
      an unknown class name.
  """
  class_ids = {name: i for i, name in enumerate(classes.VOC_CLASSES) if i}
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, raw in enumerate(f, start=1):
      line = raw.rstrip("\n")
      if not line.strip() or line.startswith("#") or line.startswith(
          "split\t"):
        continue
      fields = line.split("\t")
      if len(fields) != 4:
        raise ValueError(f"{path}:{line_no}: expected 4 tab-separated fields "
                         f"(split, style, tags, caption), got {len(fields)}.")
      split, style, tags, caption = fields
      names = [] if tags == "-" else tags.split(",")
      unknown = [n for n in names if n not in class_ids]
      if unknown:
        raise ValueError(f"{path}:{line_no}: unknown class name(s) {unknown}.")
      rows.append({"split": split, "style": style, "caption": caption,
                   "tags": sorted(class_ids[n] for n in names),
                   "line": line_no})
  return rows


def score_captions(examples, lexicon=None):
  """Scores `parse_caption` against expected tags.

  Args:
    examples: iterable of (caption, expected class ids).
    lexicon: as in `parse_caption`.

  Returns:
    A dict with "num", "exact" (captions whose tag set is exactly right),
    "exact_rate", "micro_precision", "micro_recall", "per_class" (class name
    -> dict with "support" (expected count), "tp", "fp", "fn", "precision"
    and "recall"; precision is None for a class never predicted, recall
    None for a class never expected) and "misses" (list of (caption,
    expected ids, predicted ids)).
  """
  counts = {c: [0, 0, 0] for c in range(1, classes.NUM_VOC_CLASSES)}
  num = exact = 0
  misses = []
  for caption, expected in examples:
    want, got = set(expected), set(parse_caption(caption, lexicon))
    num += 1
    if want == got:
      exact += 1
    else:
      misses.append((caption, sorted(want), sorted(got)))
    for c in want & got:
      counts[c][0] += 1
    for c in got - want:
      counts[c][1] += 1
    for c in want - got:
      counts[c][2] += 1
  per_class = {}
  for c, (tp, fp, fn) in counts.items():
    per_class[classes.VOC_CLASSES[c]] = {
        "support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None}
  tp, fp, fn = (sum(v[k] for v in counts.values()) for k in range(3))
  return {"num": num, "exact": exact, "exact_rate": exact / max(num, 1),
          "micro_precision": tp / (tp + fp) if tp + fp else None,
          "micro_recall": tp / (tp + fn) if tp + fn else None,
          "per_class": per_class, "misses": misses}
