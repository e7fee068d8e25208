"""Caption parser and the VOC synonym lexicon, word by word."""

import pytest

from dis_tf import classes
from dis_tf.data import captions

V = classes.VOC_CLASSES

# Every synonym the issue names, plus a few plural/irregular forms.
WORDS = [
    ("aeroplane", "aeroplane"), ("plane", "aeroplane"),
    ("airplane", "aeroplane"), ("aircraft", "aeroplane"),
    ("jet", "aeroplane"), ("planes", "aeroplane"), ("jets", "aeroplane"),
    ("bicycle", "bicycle"), ("bike", "bicycle"), ("bicycles", "bicycle"),
    ("bird", "bird"), ("birds", "bird"), ("geese", "bird"),
    ("boat", "boat"), ("ship", "boat"), ("boats", "boat"),
    ("bottle", "bottle"), ("bottles", "bottle"),
    ("bus", "bus"), ("buses", "bus"),
    ("car", "car"), ("cars", "car"), ("taxi", "car"),
    ("cat", "cat"), ("kitten", "cat"), ("cats", "cat"),
    ("chair", "chair"), ("chairs", "chair"), ("armchair", "chair"),
    ("cow", "cow"), ("cows", "cow"), ("cattle", "cow"), ("calves", "cow"),
    ("table", "diningtable"), ("dining table", "diningtable"),
    ("tables", "diningtable"), ("dining tables", "diningtable"),
    ("diningtable", "diningtable"),
    ("dog", "dog"), ("dogs", "dog"), ("puppy", "dog"), ("puppies", "dog"),
    ("horse", "horse"), ("horses", "horse"), ("pony", "horse"),
    ("ponies", "horse"),
    ("motorbike", "motorbike"), ("motorcycle", "motorbike"),
    ("motorcycles", "motorbike"), ("scooter", "motorbike"),
    ("person", "person"), ("man", "person"), ("men", "person"),
    ("woman", "person"), ("women", "person"), ("boy", "person"),
    ("boys", "person"), ("girl", "person"), ("girls", "person"),
    ("child", "person"), ("children", "person"), ("people", "person"),
    ("rider", "person"), ("riders", "person"),
    ("potted plant", "pottedplant"), ("pottedplant", "pottedplant"),
    ("houseplants", "pottedplant"),
    ("sheep", "sheep"), ("lamb", "sheep"), ("lambs", "sheep"),
    ("sofa", "sofa"), ("couch", "sofa"), ("couches", "sofa"),
    ("sofas", "sofa"),
    ("train", "train"), ("trains", "train"), ("locomotive", "train"),
    ("tv", "tvmonitor"), ("tvs", "tvmonitor"), ("monitor", "tvmonitor"),
    ("television", "tvmonitor"), ("screen", "tvmonitor"),
    ("screens", "tvmonitor"), ("tv monitor", "tvmonitor"),
    ("tvmonitor", "tvmonitor"),
]


@pytest.mark.parametrize("word,name", WORDS)
def test_each_synonym(word, name):
  assert captions.parse_caption(word) == [V.index(name)]
  assert captions.parse_caption(f"A {word.upper()}!") == [V.index(name)]
  assert captions.tag_to_class_id(word) == V.index(name)


@pytest.mark.parametrize("word", ["plant", "stool", "bench", "street", "the",
                                  "tree", "truck", "factory", "and"])
def test_non_voc_words(word):
  assert captions.parse_caption(word) == []
  assert captions.tag_to_class_id(word) is None


def test_issue_example():
  got = captions.parse_caption("a man walks his dog past a parked motorcycle")
  assert got == sorted(V.index(n) for n in ("person", "dog", "motorbike"))


def test_multiword_longest_match():
  # "dining table" is one table; "potted plant" one plant; no double count.
  assert captions.parse_caption("dinner at the dining table") == [
      V.index("diningtable")]
  assert captions.parse_caption("a potted plant by the window") == [
      V.index("pottedplant")]
  assert captions.parse_caption("children watching TV on a couch") == sorted(
      [V.index("person"), V.index("tvmonitor"), V.index("sofa")])


def test_background_and_empty():
  assert captions.parse_caption("") == []
  assert captions.parse_caption("a sunny day in the park") == []
  assert captions.tag_to_class_id("background") == 0


def test_plural_forms():
  assert captions.plural_forms("dog") == ["dogs"]
  assert captions.plural_forms("bus") == ["buses"]
  assert captions.plural_forms("pony") == ["ponies"]
  assert captions.plural_forms("monkey") == ["monkeys"]


def test_every_class_name_is_its_own_phrase():
  lexicon = captions.load_lexicon()
  for class_id, name in enumerate(V[1:], start=1):
    assert lexicon[(name,)] == class_id


def test_lexicon_errors(tmp_path):
  dup = tmp_path / "dup.txt"
  dup.write_text("dog: dog, pup\ncat: cat, pup\n")
  with pytest.raises(ValueError, match=r"dup.txt:2: phrase 'pup'"):
    captions.load_lexicon(str(dup))
  unknown = tmp_path / "unknown.txt"
  unknown.write_text("# c\nunicorn: horn\n")
  with pytest.raises(ValueError, match=r"unknown.txt:2: 'unicorn'"):
    captions.load_lexicon(str(unknown))
  bad = tmp_path / "bad.txt"
  bad.write_text("dog puppy\n")
  with pytest.raises(ValueError, match=r"bad.txt:1: expected"):
    captions.load_lexicon(str(bad))
