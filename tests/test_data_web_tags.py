"""web_tags builder: annotations.jsonl, tags/captions, bad input."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from dis_tf import classes
from dis_tf.data import captions
from dis_tf.data import safe_paths
from dis_tf.data import synthetic
from dis_tf.data import voc
from dis_tf.data import web_tags

V = classes.VOC_CLASSES


def _folder(tmp_path, num_weak=8, **kwargs):
  out = str(tmp_path / "src")
  s = synthetic.generate_benchmark(
      out, num_train=0, num_val=0, num_tags_only=0, num_weak=num_weak,
      image_size=48, caption_fraction=0.5, **kwargs)
  return s["weak_dir"]


@pytest.fixture
def prepare(prepare_tfds, tmp_path):
  """`prepare(weak_dir, skip=False)`: the tfds way (default config,
  manual_dir in the download config)."""
  return lambda weak_dir, skip=False: prepare_tfds(
      web_tags.WebTags, web_tags.WebTagsConfig, weak_dir, tmp_path / "tfds",
      skip=skip)


def _write(weak_dir, records):
  with open(os.path.join(weak_dir, "annotations.jsonl"), "w") as f:
    for r in records:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def _records(weak_dir):
  return [json.loads(line) for line in open(
      os.path.join(weak_dir, "annotations.jsonl"))]


def test_build_from_generated_folder(tmp_path, prepare, tfds_examples):
  weak_dir = _folder(tmp_path)
  records = _records(weak_dir)
  assert {"tags" in r for r in records} == {True, False}  # both kinds
  got = tfds_examples(prepare(weak_dir))
  assert len(got) == len(records)
  for r in records:
    ex = got[r["image"]]
    if "tags" in r:
      want = sorted(V.index(t) for t in r["tags"])
      assert ex["caption"] == b""
    else:
      want = captions.parse_caption(r["caption"])
      assert ex["caption"].decode() == r["caption"]
    assert sorted(ex["tags"].tolist()) == want
    with Image.open(os.path.join(weak_dir, r["image"])) as im:
      pixels = np.asarray(im.convert("RGB"), np.int32)
    assert np.abs(ex["image"].astype(np.int32) - pixels).mean() < 2.0


def test_issue_examples_and_synonyms(tmp_path, prepare, tfds_examples):
  weak_dir = _folder(tmp_path, num_weak=3)
  images = [r["image"] for r in _records(weak_dir)]
  _write(weak_dir, [
      {"image": images[0], "tags": ["dog", "person"]},
      {"image": images[1],
       "caption": "a man walks his dog past a parked motorcycle"},
      {"image": images[2], "tags": ["motorcycle", "TV", "background"],
       "caption": "ignored when tags are given: a cat"},
  ])
  got = tfds_examples(prepare(weak_dir))
  ids = lambda *n: sorted(V.index(x) for x in n)
  assert sorted(got[images[0]]["tags"]) == ids("dog", "person")
  assert sorted(got[images[1]]["tags"]) == ids("person", "dog", "motorbike")
  assert sorted(got[images[2]]["tags"]) == ids("motorbike", "tvmonitor")


def test_unknown_tags_name_file_and_line(tmp_path, prepare):
  weak_dir = _folder(tmp_path, num_weak=2)
  images = [r["image"] for r in _records(weak_dir)]
  _write(weak_dir, [{"image": images[0], "tags": ["dog"]},
                    {"image": images[1], "tags": ["dog", "unicorn", "tree"]}])
  with pytest.raises(ValueError, match=r"annotations.jsonl:2: unknown tag "
                     r"name\(s\) \['unicorn', 'tree'\]"):
    prepare(weak_dir)


@pytest.mark.parametrize("record,match", [
    ({"image": "IMG", "tags": []}, r":1: empty tag list for"),
    ({"image": "IMG", "caption": "a sunny day"},
     r":1: empty tag list .*names no VOC class"),
])
def test_empty_tag_list(tmp_path, record, match, prepare):
  weak_dir = _folder(tmp_path, num_weak=1)
  record = dict(record, image=_records(weak_dir)[0]["image"])
  _write(weak_dir, [record])
  with pytest.raises(voc.BadFileError, match=match):
    prepare(weak_dir)


@pytest.mark.parametrize("line,match", [
    ("{not json", r":1: invalid JSON"),
    ('{"tags": ["dog"]}', r":1: expected an object with a string 'image'"),
    ('{"image": "x.jpg"}', r":1: needs a 'tags' list or a 'caption'"),
    ('{"image": "x.jpg", "tags": "dog"}', r":1: 'tags' must be a list"),
    ('{"image": "x.jpg", "tag": ["dog"]}', r":1: unknown field"),
])
def test_malformed_lines(tmp_path, line, match, prepare):
  weak_dir = _folder(tmp_path, num_weak=1)
  _write(weak_dir, [line])
  with pytest.raises(ValueError, match=match):
    prepare(weak_dir)


def test_empty_annotations(tmp_path, prepare):
  weak_dir = _folder(tmp_path, num_weak=1)
  _write(weak_dir, [])
  with pytest.raises(ValueError, match=r"annotations.jsonl: no annotation "
                     r"lines \(empty split\)"):
    prepare(weak_dir)


def test_missing_and_corrupt_images(tmp_path, prepare):
  weak_dir = _folder(tmp_path, num_weak=2)
  records = _records(weak_dir)
  os.remove(os.path.join(weak_dir, records[0]["image"]))
  with pytest.raises(voc.BadFileError, match="listed but does not exist"):
    prepare(weak_dir)


def test_skip_bad_files(tmp_path, caplog, prepare, tfds_examples):
  weak_dir = _folder(tmp_path, num_weak=6)
  records = _records(weak_dir)
  os.remove(os.path.join(weak_dir, records[1]["image"]))
  with open(os.path.join(weak_dir, records[2]["image"]), "wb") as f:
    f.write(b"\xff\xd8\xff garbage")
  records[4] = {"image": records[4]["image"], "tags": []}
  _write(weak_dir, records)
  with caplog.at_level(logging.WARNING):
    got = tfds_examples(prepare(weak_dir, skip=True))
  assert "skipped 3 bad file(s)" in caplog.text
  assert sorted(got) == sorted(r["image"] for i, r in enumerate(records)
                               if i not in (1, 2, 4))
  for r in records:  # tags stay with their image
    if r["image"] in got and "tags" in r:
      assert sorted(got[r["image"]]["tags"]) == sorted(
          V.index(t) for t in r["tags"])


@pytest.mark.parametrize("path,match", [
    ("../outside.jpg", "contains '..'"),
    ("images/../../outside.jpg", "contains '..'"),
    ("/etc/hostname", "absolute path"),
])
def test_paths_cannot_escape(tmp_path, path, match, prepare):
  weak_dir = _folder(tmp_path, num_weak=1)
  _write(weak_dir, [{"image": path, "tags": ["dog"]}])
  with pytest.raises(safe_paths.UnsafePathError,
                     match=r"annotations.jsonl:1: .*" + match):
    prepare(weak_dir)


def test_symlink_out_of_tree(tmp_path, prepare):
  weak_dir = _folder(tmp_path, num_weak=1)
  Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
  os.symlink(tmp_path / "secret.jpg", os.path.join(weak_dir, "link.jpg"))
  _write(weak_dir, [{"image": "link.jpg", "tags": ["dog"]}])
  with pytest.raises(safe_paths.UnsafePathError,
                     match="outside the dataset root"):
    prepare(weak_dir)


def test_builder_helper_and_truth(tmp_path, tfds_examples):
  weak_dir = _folder(tmp_path, num_weak=4)
  builder = web_tags.web_tags_builder(weak_dir, str(tmp_path / "tfds"))
  assert builder.builder_config.name.startswith("src_")
  builder.download_and_prepare()
  got = tfds_examples(builder)
  truth = web_tags.load_weak_truth(weak_dir)
  assert sorted(got) == sorted(truth)
  for name, t in truth.items():
    assert got[name]["image"].shape[:2] == t["mask"].shape
  with pytest.raises(FileNotFoundError, match="no annotations.jsonl"):
    web_tags.web_tags_builder(str(tmp_path), str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="no evaluation truth"):
    web_tags.load_weak_truth(str(tmp_path))


def test_builder_uses_tfds_own_code_path():
  """tfds' `code_path` finds the builder's module (see test_data_voc)."""
  assert os.path.basename(str(web_tags.WebTags.code_path)) == "web_tags.py"
