"""The synthetic benchmark generator and its CLI."""

import hashlib
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from dis_tf.data import captions
from dis_tf.data import synthetic
from dis_tf.data import voc
from dis_tf.data import web_tags

SMALL = dict(num_train=4, num_val=3, num_weak=12, num_tags_only=3,
             num_aug=2, image_size=64)


def _digest_tree(root):
  digest = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      if name == synthetic.MARKER:
        continue
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        digest[os.path.relpath(path, root)] = hashlib.sha1(
            f.read()).hexdigest()
  return digest


def test_deterministic(tmp_path):
  synthetic.generate_benchmark(str(tmp_path / "a"), seed=3, **SMALL)
  synthetic.generate_benchmark(str(tmp_path / "b"), seed=3, **SMALL)
  synthetic.generate_benchmark(str(tmp_path / "c"), seed=4, **SMALL)
  a = _digest_tree(str(tmp_path / "a"))
  assert a == _digest_tree(str(tmp_path / "b"))
  c = _digest_tree(str(tmp_path / "c"))
  assert set(a) == set(c) and a != c


def test_layout_and_counts(tmp_path):
  s = synthetic.generate_benchmark(str(tmp_path), **SMALL)
  root = os.path.join(str(tmp_path), "VOCdevkit", "VOC2012")
  seg = os.path.join(root, "ImageSets", "Segmentation")
  read = lambda p: open(p).read().split()
  assert len(read(os.path.join(seg, "train.txt"))) == 4
  assert len(read(os.path.join(seg, "val.txt"))) == 3
  assert len(read(os.path.join(seg, "trainval.txt"))) == 7
  aug = read(os.path.join(root, "ImageSets", "SegmentationAug",
                          "train_aug.txt"))
  assert len(aug) == 6
  # Masks are palette PNGs whose indices are the class ids.
  name = read(os.path.join(seg, "train.txt"))[0]
  with Image.open(os.path.join(root, "SegmentationClass", name + ".png")) as m:
    assert m.mode == "P"
  mask = voc.read_label_png(
      os.path.join(root, "SegmentationClass", name + ".png"))
  assert set(np.unique(mask)) <= set(range(21)) | {255}
  assert 255 in mask  # the boundary band
  lines = open(os.path.join(s["weak_dir"], "annotations.jsonl")).readlines()
  assert len(lines) == 12
  truth = web_tags.load_weak_truth(s["weak_dir"])
  assert len(truth) == 12
  for line in lines:
    record = json.loads(line)
    t = truth[record["image"]]
    assert t["tags"] == voc.tags_from_mask(t["mask"])
    img = Image.open(os.path.join(s["weak_dir"], record["image"]))
    assert img.size == t["mask"].shape[::-1]


def test_noisy_tags_rates():
  rng = np.random.default_rng(0)
  clean = [3, 7, 12]
  missed = spurious = 0
  n = 4000
  for _ in range(n):
    got = set(synthetic.noisy_tags(rng, clean, 0.2, 0.05))
    assert got
    missed += len(set(clean) - got)
    spurious += len(got - set(clean))
  assert abs(missed / (3 * n) - 0.2) < 0.02
  assert abs(spurious / (17 * n) - 0.05) < 0.01
  assert synthetic.noisy_tags(rng, [5], 1.0, 0.0) == [5]  # never empty


def test_captions_round_trip():
  synonyms = synthetic._synonyms_by_class()
  for i in range(500):
    rng = np.random.default_rng(i)
    tags = sorted(rng.choice(np.arange(1, 21), size=rng.integers(1, 5),
                             replace=False).tolist())
    caption = synthetic.make_caption(rng, tags, synonyms)
    assert captions.parse_caption(caption) == tags, caption


def test_mean_colour_is_predictable_from_class():
  # At 1/8 resolution the texture averages out: the mean colour of a class
  # region is its base colour up to jitter, and neighbouring hues differ.
  errors, gaps = [], []
  for i in range(60):
    rng = np.random.default_rng(i)
    image, mask = synthetic.generate_image(rng, 96, 96, num_objects=1)
    class_id = voc.tags_from_mask(mask)[0]
    inner = mask == class_id
    h8 = image[:96, :96].reshape(12, 8, 12, 8, 3).mean(axis=(1, 3))
    inside8 = inner.reshape(12, 8, 12, 8).all(axis=(1, 3))
    if not inside8.any():
      continue
    mean = h8[inside8].mean(axis=0)
    errors.append(np.abs(mean - synthetic.class_colour(class_id)).max())
    other = class_id % 20 + 1 if synthetic.class_texture(
        class_id % 20 + 1) == synthetic.class_texture(class_id) else None
    if other:
      gaps.append(np.abs(synthetic.class_colour(other)
                         - synthetic.class_colour(class_id)).max())
  assert len(errors) > 30
  assert np.median(errors) < 45  # jitter, not texture
  assert min(gaps) > 60  # same-texture classes differ in colour


def test_class_design():
  textures = [synthetic.class_texture(c) for c in range(1, 21)]
  hues = [synthetic.class_hue_index(c) for c in range(1, 21)]
  assert sorted(set(textures)) == list(range(5))
  for t in range(5):  # within a texture family, four distinct colours
    assert len({h for h, tt in zip(hues, textures) if tt == t}) == 4
  for h in range(10):  # each colour shared by two classes of two families
    owners = [c for c in range(1, 21) if synthetic.class_hue_index(c) == h]
    assert len(owners) == 2
    assert synthetic.class_texture(owners[0]) != synthetic.class_texture(
        owners[1])


def test_ensure_is_idempotent_and_safe(tmp_path):
  out = str(tmp_path / "bench")
  s1 = synthetic.ensure_synthetic_benchmark(out, **SMALL)
  assert not s1.get("reused")
  s2 = synthetic.ensure_synthetic_benchmark(out, **SMALL)
  assert s2["reused"]
  s3 = synthetic.ensure_synthetic_benchmark(out, **dict(SMALL, num_weak=5))
  assert not s3.get("reused")
  assert len(open(os.path.join(s3["weak_dir"],
                               "annotations.jsonl")).readlines()) == 5
  # A folder with data but no marker is never overwritten.
  os.makedirs(tmp_path / "real" / "VOCdevkit")
  with pytest.raises(FileExistsError, match="no synthetic_benchmark.json"):
    synthetic.ensure_synthetic_benchmark(str(tmp_path / "real"), **SMALL)
  with pytest.raises(TypeError, match="Unknown synthetic"):
    synthetic.ensure_synthetic_benchmark(out, bogus=1)


def test_use_or_generate_never_replaces_another_benchmark(tmp_path):
  # A re-check benchmark (other parameters) pointed at by --data_root is
  # measured as it is: replacing it with the default would make the re-check
  # silently repeat the main benchmark.
  out = str(tmp_path / "recheck")
  made = synthetic.ensure_synthetic_benchmark(out, **dict(SMALL, seed=7))
  marker = os.path.join(out, synthetic.MARKER)
  before = open(marker).read()
  used = synthetic.use_or_generate(out)
  assert used["reused"] and used["params"] == made["params"]
  assert used["params"]["seed"] == 7
  assert open(marker).read() == before
  # An empty folder gets the default benchmark.
  with mock.patch.object(synthetic, "DEFAULTS", dict(synthetic.DEFAULTS,
                                                      **SMALL)):
    fresh = synthetic.use_or_generate(str(tmp_path / "empty"))
  assert not fresh.get("reused")
  assert fresh["params"]["seed"] == synthetic.DEFAULTS["seed"]


def test_bad_parameters(tmp_path):
  with pytest.raises(ValueError, match="p_miss"):
    synthetic.generate_benchmark(str(tmp_path), p_miss=1.5)
  with pytest.raises(ValueError, match="num_train"):
    synthetic.generate_benchmark(str(tmp_path), num_train=-1)


def test_cli(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = str(tmp_path / "cli")
  result = subprocess.run(
      [sys.executable, os.path.join(repo, "tools", "make_synthetic.py"),
       "--out", out, "--seed", "1", "--num_train", "3", "--num_val", "2",
       "--num_weak", "4", "--num_tags_only", "0", "--image_size", "48",
       "--p_miss", "0.1", "--p_spurious", "0.0", "--caption_fraction", "1"],
      capture_output=True, text=True, check=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=repo))
  assert "train=3 val=2" in result.stdout
  assert "weak=4 (captions: 4)" in result.stdout
  root = os.path.join(out, "VOCdevkit", "VOC2012")
  assert len(os.listdir(os.path.join(root, "JPEGImages"))) == 5
  for line in open(os.path.join(out, "web_tags", "annotations.jsonl")):
    assert "caption" in json.loads(line)
  # The builders read the tree unchanged.
  data_dir = str(tmp_path / "tfds")
  builder = voc.voc_builder(out, data_dir)
  builder.download_and_prepare()
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["val"].num_examples == 2
  weak = web_tags.web_tags_builder(os.path.join(out, "web_tags"), data_dir)
  weak.download_and_prepare()
  assert weak.info.splits["train"].num_examples == 4
