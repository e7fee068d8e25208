"""tf.data pipeline: ops eager == in Dataset.map, NumPy checks, batches."""

import os

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf.data import pipeline
from dis_tf.data import synthetic
from dis_tf.data import voc
from dis_tf.data import web_tags

CROP = 48


def _in_map(fn, *args):
  """Runs fn inside Dataset.map (graph mode) on one element."""
  ds = tf.data.Dataset.from_tensors(tuple(args)).map(lambda *a: fn(*a))
  return next(iter(ds))


def _assert_same(a, b):
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _example(seed=0, h=37, w=53):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
  mask = rng.choice(np.array([0, 3, 15, 255]), (h, w)).astype(np.int32)
  return tf.constant(image), tf.constant(mask)


SEED = tf.constant([7, 11], tf.int64)


# -- ops ----------------------------------------------------------------------


def test_multi_hot_tags():
  got = pipeline.multi_hot_tags(tf.constant([3, 15, 3], tf.int64)).numpy()
  want = np.zeros(21, np.float32)
  want[[0, 3, 15]] = 1
  np.testing.assert_array_equal(got, want)
  empty = pipeline.multi_hot_tags(tf.zeros([0], tf.int64)).numpy()
  np.testing.assert_array_equal(empty, np.eye(21, dtype=np.float32)[0])
  _assert_same(got, _in_map(pipeline.multi_hot_tags,
                            tf.constant([3, 15, 3], tf.int64)))


def test_tags_from_mask():
  _, mask = _example()
  got = pipeline.tags_from_mask(mask).numpy()
  want = np.zeros(21, np.float32)
  want[[0, 3, 15]] = 1  # 255 is not a class
  np.testing.assert_array_equal(got, want)
  _assert_same(got, _in_map(pipeline.tags_from_mask, mask))


def test_random_scale():
  image, mask = _example()
  out_image, out_mask = pipeline.random_scale(image, mask, SEED, 0.5, 1.5)
  scale = tf.random.stateless_uniform([], SEED, 0.5, 1.5).numpy()
  assert out_image.shape[:2] == (round(37 * scale), round(53 * scale))
  assert out_mask.shape == out_image.shape[:2] and out_mask.dtype == tf.int32
  # Nearest-neighbour: no new label values.
  assert set(np.unique(out_mask)) <= {0, 3, 15, 255}
  _assert_same((out_image, out_mask),
               _in_map(lambda i, m, s: pipeline.random_scale(i, m, s, 0.5, 1.5),
                       image, mask, SEED))
  same = pipeline.random_scale(image, mask, SEED, 1.0, 1.0)
  np.testing.assert_array_equal(same[0], np.asarray(image, np.float32))


def test_pad_to_size():
  image, mask = _example()
  out_image, out_mask = pipeline.pad_to_size(tf.cast(image, tf.float32), mask,
                                             50, 40)
  assert out_image.shape == (50, 53, 3) and out_mask.shape == (50, 53)
  np.testing.assert_array_equal(out_image[:37], np.asarray(image, np.float32))
  np.testing.assert_array_equal(
      out_image[37:], np.broadcast_to(image_ops.MEAN_RGB_UINT8, (13, 53, 3)))
  np.testing.assert_array_equal(out_mask[:37], mask)
  assert (out_mask[37:].numpy() == 255).all()
  # Mean padding is ~0 after normalisation.
  assert np.abs(image_ops.normalize_image(out_image[40:]).numpy()).max() < 0.01
  _assert_same((out_image, out_mask), _in_map(
      lambda i, m: pipeline.pad_to_size(i, m, 50, 40),
      tf.cast(image, tf.float32), mask))


def test_random_crop_is_a_window_of_both():
  image, mask = _example(h=60, w=70)
  out_image, out_mask = pipeline.random_crop(
      tf.cast(image, tf.float32), mask, SEED, CROP)
  img, msk = image.numpy(), mask.numpy()
  matches = [(t, x) for t in range(60 - CROP + 1) for x in range(70 - CROP + 1)
             if np.array_equal(img[t:t + CROP, x:x + CROP], out_image.numpy())]
  assert len(matches) == 1
  t, x = matches[0]
  np.testing.assert_array_equal(msk[t:t + CROP, x:x + CROP], out_mask)
  _assert_same((out_image, out_mask), _in_map(
      lambda i, m, s: pipeline.random_crop(i, m, s, CROP),
      tf.cast(image, tf.float32), mask, SEED))
  # Different seeds give different windows.
  offsets = set()
  for s in range(20):
    _, m = pipeline.random_crop(tf.cast(image, tf.float32),
                                tf.reshape(tf.range(60 * 70), (60, 70)),
                                tf.constant([s, 0], tf.int64), CROP)
    offsets.add(int(m[0, 0]))
  assert len(offsets) > 5


def test_pad_and_random_crop_small_image():
  image, mask = _example(h=30, w=20)
  out_image, out_mask = pipeline.pad_and_random_crop(
      tf.cast(image, tf.float32), mask, SEED, CROP)
  assert out_image.shape == (CROP, CROP, 3)
  # Everything fits: the image sits top-left, the rest is padding.
  np.testing.assert_array_equal(out_image[:30, :20], np.asarray(image,
                                                                np.float32))
  assert (out_mask.numpy()[30:] == 255).all()
  assert (out_mask.numpy()[:, 20:] == 255).all()
  _assert_same((out_image, out_mask), _in_map(
      lambda i, m, s: pipeline.pad_and_random_crop(i, m, s, CROP),
      tf.cast(image, tf.float32), mask, SEED))


def test_random_flip():
  image, mask = _example()
  flips = 0
  for s in range(40):
    seed = tf.constant([s, 1], tf.int64)
    out_image, out_mask = pipeline.random_flip(image, mask, seed)
    flipped = np.array_equal(out_image, image.numpy()[:, ::-1])
    assert flipped == np.array_equal(out_mask, mask.numpy()[:, ::-1])
    assert flipped or np.array_equal(out_image, image)
    flips += flipped
    if s < 3:
      _assert_same((out_image, out_mask),
                   _in_map(pipeline.random_flip, image, mask, seed))
  assert 8 < flips < 32


def test_normalize_and_image_target():
  image, _ = _example(h=CROP, w=CROP)
  norm = image_ops.normalize_image(image)
  want = (image.numpy() / 255.0 - image_ops.MEAN_RGB) / image_ops.STDDEV_RGB
  np.testing.assert_allclose(norm, want, atol=1e-5)
  _assert_same(norm, _in_map(image_ops.normalize_image, image))
  small = pipeline.image_target_for_crop(norm, CROP, 8)
  f = image_ops.feature_size(CROP, 8)
  assert small.shape == (f, f, 3)
  # Area downsampling by an integer factor is the block mean.
  block = norm.numpy().reshape(f, CROP // f, f, CROP // f, 3).mean((1, 3))
  np.testing.assert_allclose(small, block, atol=1e-5)
  _assert_same(small, _in_map(
      lambda x: pipeline.image_target_for_crop(x, CROP, 8), norm))


@pytest.mark.parametrize("is_weak", [False, True])
def test_augment_eager_equals_map(is_weak):
  image, mask = _example()
  tags = tf.constant([3, 15], tf.int64)
  fn = lambda i, m, t, s: pipeline.augment(i, m, t, is_weak, s, CROP, 0.5,
                                           1.5, 8)
  eager = fn(image, mask, tags, SEED)
  _assert_same(eager, _in_map(fn, image, mask, tags, SEED))
  assert eager["image"].shape == (CROP, CROP, 3)
  assert eager["image_small"].shape == (6, 6, 3)
  assert bool(eager["is_weak"]) == is_weak


# -- datasets -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipe")
  summary = synthetic.generate_benchmark(
      str(root / "src"), num_train=5, num_val=3, num_weak=7, num_tags_only=3,
      image_size=64, caption_fraction=0.5)
  config = config_lib.synthetic()
  config.data.data_dir = str(root / "tfds")
  config.data.voc_dir = str(root / "src")
  config.data.weak_dir = summary["weak_dir"]
  config.data.crop_size = CROP
  config.data.deterministic = True
  config.data.shuffle_buffer = 16
  config.data.weak_fraction = 0.4
  config.train.batch_size = 5
  builders = pipeline.prepare_datasets(config)
  assert set(builders) == {"voc", "web_tags"}
  return config


def _copy(config, **data):
  new = config_lib.ExperimentConfig.from_dict(config.to_dict())
  for k, v in data.items():
    setattr(new.data, k, v)
  return new


def _batches(config, stage, n=3):
  return [{k: v.numpy() for k, v in b.items()}
          for b in pipeline.train_dataset(config, stage).take(n)]


def _tree(root):
  """{relative path: (size, mtime_ns)} of every file under root."""
  found = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      stat = os.stat(path)
      found[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
  return found


def test_prepare_is_idempotent(cfg, monkeypatch):
  """A second prepare reads nothing from the sources and writes nothing.

  (How long it takes is measured by bench/input_pipeline.py, not asserted
  here: a wall-time bound is flaky on a loaded machine.)
  """
  before = _tree(cfg.data.data_dir)
  assert any(name.endswith("dataset_info.json") for name in before)

  def no_generation(*args, **kwargs):
    raise AssertionError("prepare_datasets regenerated a prepared dataset")

  for cls in (voc.Voc2012Segmentation, web_tags.WebTags):
    monkeypatch.setattr(cls, "_split_generators", no_generation)
  builders = pipeline.prepare_datasets(cfg)
  assert _tree(cfg.data.data_dir) == before
  assert builders["voc"].info.splits["train"].num_examples == 5


def test_full_batches(cfg):
  f = image_ops.feature_size(CROP, 8)
  for b in _batches(cfg, "full"):
    assert b["image"].shape == (5, CROP, CROP, 3)
    assert b["image"].dtype == np.float32
    assert b["image_small"].shape == (5, f, f, 3)
    assert b["mask"].shape == (5, CROP, CROP) and b["mask"].dtype == np.int32
    assert b["tags"].shape == (5, 21) and (b["tags"][:, 0] == 1).all()
    assert b["is_weak"].dtype == np.float32 and not b["is_weak"].any()
    assert set(np.unique(b["mask"])) <= set(range(21)) | {255}
    for i in range(5):
      np.testing.assert_allclose(
          b["image_small"][i],
          image_ops.image_target(b["image"][i][None], (f, f))[0], atol=1e-5)
      present = set(np.unique(b["mask"][i])) - {255}
      assert set(np.nonzero(b["tags"][i])[0]) == present | {0}


def test_deterministic_mode_reproduces(cfg):
  first, second = _batches(cfg, "semi"), _batches(cfg, "semi")
  for a, b in zip(first, second):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Batches differ from each other (augmentation/shuffle do something).
  assert not np.array_equal(first[0]["image"], first[1]["image"])


@pytest.mark.parametrize("stage", ["full", "semi"])
def test_deterministic_stream_does_not_depend_on_earlier_iterators(cfg,
                                                                   stage):
  """Every iterator of one dataset gives the same stream.

  Training takes one batch to build the model, then fit iterates the same
  dataset; resuming skips into it. With `shuffle(seed).repeat()` the
  per-epoch reshuffle seeds come from a generator shared by all iterators,
  so the second iterator's stream depended on how many epochs the first had
  read (its prefetch reads ahead a timing-dependent amount): multi-worker
  runs differed from phase a's first step.
  """
  data = pipeline.train_dataset(cfg, stage)
  # 5 labelled images, 3 per semi batch: 6 batches cross several epochs.
  first = [b["image"].numpy() for b in data.take(6)]
  second = [b["image"].numpy() for b in data.take(6)]
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  # The batches are not one epoch repeated.
  assert len({a.tobytes() for a in first}) == 6


def test_non_deterministic_mode_runs(cfg):
  config = _copy(cfg, deterministic=False)
  b = _batches(config, "semi", 2)[1]
  np.testing.assert_array_equal(b["is_weak"], [False] * 3 + [True] * 2)


def test_semi_batches_composition(cfg):
  weak_given = set()
  for line in open(os.path.join(cfg.data.weak_dir, "annotations.jsonl")):
    _, ids, _ = web_tags.parse_annotation_line(line, "a", 1)
    weak_given.add(tuple([0] + ids))
  for b in _batches(cfg, "semi", 4):
    # round(5 * 0.4) = 2 weak examples, always last.
    np.testing.assert_array_equal(b["is_weak"], [False] * 3 + [True] * 2)
    for i in (3, 4):
      assert set(np.unique(b["mask"][i])) <= {0, 255}
      assert (b["mask"][i] == 0).any()
      assert tuple(np.nonzero(b["tags"][i])[0]) in weak_given
      pad = b["mask"][i] == 255
      if pad.any():  # padding is the mean colour: ~0 after normalisation
        assert np.abs(b["image"][i][pad]).max() < 0.05


@pytest.mark.parametrize("fraction,num_weak", [(0.0, 0), (1.0, 5), (0.5, 2),
                                               (0.7, 4)])
def test_weak_fraction(cfg, fraction, num_weak):
  config = _copy(cfg, weak_fraction=fraction)
  assert pipeline.split_batch_sizes(5, fraction) == (5 - num_weak, num_weak)
  b = _batches(config, "semi", 1)[0]
  assert b["image"].shape[0] == 5
  assert int(b["is_weak"].sum()) == num_weak


def test_voc_weak_tags_source(cfg):
  config = _copy(cfg, weak_dir=None, use_voc_weak_tags=True)
  b = _batches(config, "semi", 2)[1]
  assert int(b["is_weak"].sum()) == 2
  both = _copy(cfg, use_voc_weak_tags=True)
  assert _batches(both, "semi", 1)[0]["image"].shape == (5, CROP, CROP, 3)


def test_semi_needs_weak_source(cfg):
  with pytest.raises(ValueError, match="needs weak images"):
    pipeline.train_dataset(_copy(cfg, weak_dir=None), "semi")
  with pytest.raises(ValueError, match="stage="):
    pipeline.train_dataset(cfg, "weak")


def test_eval_dataset_keeps_original_size(cfg):
  builder = pipeline.builder_for(cfg, "voc")
  stored = {ex["file_name"].numpy(): ex for ex in builder.as_dataset(
      split="val")}
  got = list(pipeline.eval_dataset(cfg, "val"))
  assert len(got) == 3
  for ex in got:
    name = ex["file_name"].numpy()[0]
    ref = stored[name]
    assert ex["image"].shape == (1,) + tuple(ref["image"].shape)
    np.testing.assert_allclose(
        ex["image"][0], image_ops.normalize_image(ref["image"]), atol=1e-6)
    np.testing.assert_array_equal(ex["mask"][0], ref["mask"][..., 0])
    assert ex["mask"].dtype == tf.int32 and ex["tags"].shape == (1, 21)
    assert set(np.nonzero(ex["tags"][0].numpy())[0]) == {0} | set(
        ref["tags"].numpy())


def test_eval_dataset_slices_split_held_out_parts(cfg):
  """"val[:1]" and "val[1:]" partition val, in the builder's order."""
  names = lambda split: [ex["file_name"].numpy()[0]
                         for ex in pipeline.eval_dataset(cfg, split)]
  whole = names("val")
  assert names("val[:1]") == whole[:1]
  assert names("val[1:]") == whole[1:]
  with pytest.raises(ValueError, match="bad slice"):
    pipeline.eval_dataset(cfg, "val[10:]")


def test_weak_eval_dataset(cfg):
  got = list(pipeline.weak_eval_dataset(cfg))
  assert len(got) == 7
  names = {ex["file_name"].numpy()[0].decode() for ex in got}
  assert all(n.startswith("images/web_") for n in names)
  assert got[0]["image"].shape[0] == 1 and got[0]["tags"].shape == (1, 21)
  voc_tags = list(pipeline.weak_eval_dataset(cfg, "voc_tags_only"))
  assert len(voc_tags) == 3


def test_missing_folders_are_clear(cfg):
  with pytest.raises(ValueError, match="voc_dir is not set"):
    pipeline.builder_for(_copy(cfg, voc_dir=None), "voc")
  with pytest.raises(ValueError, match="Split 'nope'"):
    next(iter(pipeline.eval_dataset(cfg, "nope")))
