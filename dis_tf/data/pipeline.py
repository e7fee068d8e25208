"""tf.data pipelines from the tfds builders to `model.fit` and evaluation.

Training batches (`train_dataset`) are dicts:
  image        float32 [B, crop, crop, 3]  normalised (image_ops)
  image_small  float32 [B, f, f, 3]        area-downsampled image (L^img target)
  mask         int32   [B, crop, crop]     class ids, 255 = ignore; for weak
                                           examples 0 inside the image
  tags         float32 [B, num_classes]    multi-hot, tags[:, 0] = 1
  is_weak      float32 [B]                 1.0 for tag-only examples (float, not
                                           bool: Keras' distributed input
                                           handling fails on bool features)

Every op below is a plain TensorFlow function of its inputs and an explicit
stateless seed (shape [2]), so it gives the same result eagerly and inside
`Dataset.map`, and the whole pipeline is reproducible in deterministic mode:
per-example seeds come from `tf.data.Dataset.random(seed)`, zipped with the
examples in order.

Size: over 450 lines because the training stream (augmentation, the weak / full
mix, deterministic seeding) and the evaluation streams read the same prepared
builders with the same checks.
"""

import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from dis_tf import classes
from dis_tf import errors
from dis_tf import image_ops
from dis_tf import locks
from dis_tf.data import voc
from dis_tf.data import web_tags

AUTOTUNE = tf.data.AUTOTUNE


# ---------------------------------------------------------------------------
# Per-example ops
# ---------------------------------------------------------------------------


def multi_hot_tags(tag_ids, num_classes=classes.NUM_VOC_CLASSES):
  """Class-id list -> float32 multi-hot vector with background set.

  Args:
    tag_ids: int [N] class ids (N may be 0).
    num_classes: vector length.

  Returns:
    float32 [num_classes]; index 0 (background) is always 1.
  """
  tag_ids = tf.cast(tf.reshape(tag_ids, [-1]), tf.int32)
  hot = tf.reduce_sum(tf.one_hot(tag_ids, num_classes, dtype=tf.float32),
                      axis=0)
  # reduce_sum (not reduce_max) so that an empty list gives zeros, not -inf.
  hot = tf.minimum(hot + tf.one_hot(0, num_classes, dtype=tf.float32), 1.0)
  return tf.ensure_shape(hot, [num_classes])


def tags_from_mask(mask, num_classes=classes.NUM_VOC_CLASSES):
  """Multi-hot tags of the classes visible in a mask (255 ignored).

  Args:
    mask: int [H, W] class ids.
    num_classes: vector length.

  Returns:
    float32 [num_classes]; index 0 (background) is always 1.
  """
  counts = tf.math.bincount(tf.reshape(tf.cast(mask, tf.int32), [-1]),
                            minlength=num_classes, maxlength=num_classes)
  hot = tf.cast(counts > 0, tf.float32)
  hot = tf.maximum(hot, tf.one_hot(0, num_classes, dtype=tf.float32))
  return tf.ensure_shape(hot, [num_classes])


def random_scale(image, mask, seed, min_scale=0.5, max_scale=1.5):
  """Rescales image (bilinear) and mask (nearest) by a random factor.

  Args:
    image: [H, W, 3] image, values 0..255 (any real/int dtype).
    mask: int [H, W] class ids.
    seed: int [2] stateless seed.
    min_scale: smallest factor.
    max_scale: largest factor.

  Returns:
    (float32 [h, w, 3] image, int32 [h, w] mask), h = round(H * s).
  """
  image = tf.cast(image, tf.float32)
  mask = tf.cast(mask, tf.int32)
  if min_scale == max_scale == 1.0:
    return image, mask
  scale = tf.random.stateless_uniform(
      [], seed, minval=min_scale, maxval=max_scale)
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
  image = tf.image.resize(image, new_size, method="bilinear")
  mask = tf.image.resize(mask[..., None], new_size, method="nearest")[..., 0]
  return image, mask


def pad_to_size(image, mask, height, width):
  """Pads bottom/right to at least (height, width).

  The image is padded with the mean colour (MEAN_RGB_UINT8, i.e. ~0 after
  normalisation) and the mask with 255 (ignore), as in DeepLab.

  Args:
    image: float32 [H, W, 3], values 0..255.
    mask: int32 [H, W].
    height: minimum output height.
    width: minimum output width.

  Returns:
    (image, mask) of size [max(H, height), max(W, width)].
  """
  shape = tf.shape(image)
  pad_h = tf.maximum(height - shape[0], 0)
  pad_w = tf.maximum(width - shape[1], 0)
  paddings = [[0, pad_h], [0, pad_w]]
  mean = tf.constant(image_ops.MEAN_RGB_UINT8, tf.float32)
  image = tf.pad(tf.cast(image, tf.float32) - mean, paddings + [[0, 0]])
  image = image + mean
  mask = tf.pad(tf.cast(mask, tf.int32) - classes.IGNORE_LABEL, paddings)
  mask = mask + classes.IGNORE_LABEL
  return image, mask


def random_crop(image, mask, seed, crop_size):
  """Crops the same random crop_size x crop_size window from both.

  Args:
    image: float32 [H, W, 3] with H, W >= crop_size (see `pad_to_size`).
    mask: int32 [H, W].
    seed: int [2] stateless seed.
    crop_size: output side.

  Returns:
    (float32 [crop, crop, 3], int32 [crop, crop]).
  """
  shape = tf.shape(image)
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  top = tf.random.stateless_uniform(
      [], seeds[0], minval=0, maxval=shape[0] - crop_size + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform(
      [], seeds[1], minval=0, maxval=shape[1] - crop_size + 1, dtype=tf.int32)
  image = image[top:top + crop_size, left:left + crop_size]
  mask = mask[top:top + crop_size, left:left + crop_size]
  return (tf.ensure_shape(image, [crop_size, crop_size, 3]),
          tf.ensure_shape(mask, [crop_size, crop_size]))


def pad_and_random_crop(image, mask, seed, crop_size):
  """`pad_to_size` to the crop size, then `random_crop`."""
  image, mask = pad_to_size(image, mask, crop_size, crop_size)
  return random_crop(image, mask, seed, crop_size)


def random_flip(image, mask, seed):
  """Flips image and mask left-right together with probability 1/2.

  Args:
    image: [H, W, C] image.
    mask: [H, W] mask.
    seed: int [2] stateless seed.

  Returns:
    (image, mask), both flipped or both unchanged.
  """
  flip = tf.random.stateless_uniform([], seed) < 0.5
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
  return image, mask


def image_target_for_crop(image, crop_size, output_stride=8):
  """The L^img target of a normalised crop (image_ops.image_target)."""
  f = image_ops.feature_size(crop_size, output_stride)
  return image_ops.image_target(image, (f, f))


def augment(image, mask, tags, is_weak, seed, crop_size, min_scale=0.5,
            max_scale=1.5, output_stride=8,
            num_classes=classes.NUM_VOC_CLASSES):
  """The whole training transform of one example.

  Args:
    image: uint8 [H, W, 3].
    mask: int [H, W] class ids (for weak examples: zeros).
    tags: int [N] class ids.
    is_weak: Python bool. Weak examples keep their given tags; labelled ones
      get the tags of the classes visible in the cropped mask, so that
      L^tag never asks for an object the crop cut away.
    seed: int [2] stateless seed.
    crop_size: crop side.
    min_scale: smallest random scale.
    max_scale: largest random scale.
    output_stride: backbone stride (for image_small).
    num_classes: tag vector length.

  Returns:
    dict with image, image_small, mask, tags, is_weak (see module doc).
  """
  seeds = tf.random.experimental.stateless_split(seed, num=3)
  image, mask = random_scale(image, mask, seeds[0], min_scale, max_scale)
  image, mask = pad_and_random_crop(image, mask, seeds[1], crop_size)
  image, mask = random_flip(image, mask, seeds[2])
  image = image_ops.normalize_image(image)
  return {
      "image": image,
      "image_small": image_target_for_crop(image, crop_size, output_stride),
      "mask": mask,
      "tags": (multi_hot_tags(tags, num_classes) if is_weak
               else tags_from_mask(mask, num_classes)),
      "is_weak": tf.constant(float(bool(is_weak)), tf.float32),
  }


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def _data_dir(config):
  return config.data.data_dir or os.path.expanduser("~/tensorflow_datasets")


def builder_for(config, name):
  """The tfds builder of one source of the config.

  Args:
    config: ExperimentConfig.
    name: "voc" (config.data.voc_dir) or "web_tags" (config.data.weak_dir).

  Returns:
    A builder (not necessarily prepared; see `prepare_datasets`).

  Raises:
    ValueError: the config has no folder for that source, or unknown name.
  """
  data = config.data
  if name == "voc":
    if not data.voc_dir:
      raise errors.UserError(
          "config.data.voc_dir is not set: it must point at the "
          "folder holding VOCdevkit/VOC2012 (docs/DATA.md).")
    builder = voc.voc_builder(data.voc_dir, _data_dir(config),
                              data.skip_bad_files, data.max_image_pixels,
                              classes.from_config(config))
  elif name == "web_tags":
    if not data.weak_dir:
      raise errors.UserError(
          "config.data.weak_dir is not set: it must point at a "
          "web_tags folder with annotations.jsonl (docs/DATA.md).")
    builder = web_tags.web_tags_builder(data.weak_dir, _data_dir(config),
                                        data.skip_bad_files,
                                        data.max_image_pixels,
                                        classes.from_config(config))
  else:
    raise errors.UserError(
        f"Unknown dataset {name!r}; expected 'voc' or 'web_tags'.")
  return builder


# How long the pipelines wait for another process that is preparing the
# same data_dir (e.g. the other workers of a multi-worker job, which all
# find the data unprepared at the start) before failing.
PREPARE_WAIT_SECONDS = 3600.0


def prepare_datasets(config, wait_seconds=0.0):
  """Runs download_and_prepare on every builder the config uses.

  Idempotent: an already prepared builder is not rebuilt (the config name
  fingerprints the source folder, so a different or regenerated folder is
  prepared anew instead of reusing stale data). While anything is prepared,
  `data_dir/.prepare.lock` is held: a concurrent prepare of the same
  data_dir fails with `locks.LockHeldError` naming the holder's pid and
  host (a stale lock of a dead process is taken over), unless the holder
  finishes within `wait_seconds`.

  Args:
    config: ExperimentConfig.
    wait_seconds: how long to wait for a live process preparing the same
      data_dir (the pipelines wait `PREPARE_WAIT_SECONDS`); what it
      prepared is then used.

  Returns:
    dict "voc" / "web_tags" -> prepared builder (only those configured).
  """
  builders = {}
  if config.data.voc_dir:
    builders["voc"] = builder_for(config, "voc")
  if config.data.weak_dir:
    builders["web_tags"] = builder_for(config, "web_tags")
  if all(builder.is_prepared() for builder in builders.values()):
    return builders  # Nothing to write: no lock needed.
  # One prepare per data_dir at a time: a second process gets an error
  # naming the holder (dis_tf.locks).
  data_dir = _data_dir(config)
  with locks.prepare_lock(data_dir).acquire(wait_seconds):
    for name, builder in builders.items():
      if builder.is_prepared():  # Prepared by the previous lock holder.
        continue
      logging.info("Preparing %s (%s) in %s", name,
                   builder.builder_config.name, builder.data_dir)
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=builder.builder_config.source_dir))
  return builders


def _prepared(config, name):
  builder = builder_for(config, name)
  if not builder.is_prepared():
    prepare_datasets(config, wait_seconds=PREPARE_WAIT_SECONDS)
  return builder


def _read(builder, split, config):
  # tfds slicing ("val[:100]", "val[100:]") selects by canonical example
  # order, so a slice is the same images whatever the file shuffling.
  base = split.split("[", 1)[0]
  if base not in builder.info.splits:
    raise errors.UserError(
        f"Split {split!r} not in {builder.name}/{builder.builder_config.name} "
        f"(available: {sorted(builder.info.splits)}).")
  try:
    num_examples = builder.info.splits[split].num_examples
  except (ValueError, KeyError, AssertionError) as e:
    raise errors.UserError(
        f"Split {split!r} of {builder.name}: bad slice ({e}); "
        "expected e.g. 'val', 'val[:100]' or 'val[100:]'.") from e
  if num_examples == 0:
    raise errors.UserError(f"Split {split!r} of {builder.name} is empty.")
  return builder.as_dataset(
      split=split, shuffle_files=not config.data.deterministic,
      read_config=tfds.ReadConfig(shuffle_seed=config.train.seed))


def split_file_names(config, split):
  """The image file names of a split of the segmentation dataset.

  Read without decoding images or masks, so that two splits can be checked
  for shared images by name: tfds slices of one split ("val[:100]",
  "val[50:]") and VOC's "trainval" (train + val) overlap in ways the split
  strings alone do not show.

  Args:
    config: the `ExperimentConfig`.
    split: a tfds split string.

  Returns:
    A set of file names (str).
  """
  builder = _prepared(config, "voc")
  _read(builder, split, config)  # The split's errors, as every reader has.
  skip = tfds.decode.SkipDecoding()
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": skip, "mask": skip})
  return {name.decode() for name in
          ds.map(lambda ex: ex["file_name"]).as_numpy_iterator()}


def check_disjoint(config, held_out, evaluated, flag="--select_split"):
  """Raises `UserError` if `held_out` shares an image with `evaluated`.

  Args:
    config: the `ExperimentConfig`.
    held_out: the split a setting is chosen on.
    evaluated: the split that is reported.
    flag: the flag naming `held_out`, for the message.
  """
  shared = split_file_names(config, held_out) & split_file_names(
      config, evaluated)
  if shared:
    first = sorted(shared)[:3]
    raise errors.UserError(
        f"{flag}={held_out} shares {len(shared)} images with the evaluated "
        f"split {evaluated} (e.g. {first}): the choice must be held out "
        "from the reported images.")


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------


def _full_raw(config):
  ds = _read(_prepared(config, "voc"), config.data.train_split, config)
  return ds.map(
      lambda ex: (ex["image"], tf.cast(ex["mask"][..., 0], tf.int32),
                  tf.cast(ex["tags"], tf.int32)),
      num_parallel_calls=AUTOTUNE)


def _weak_sources(config):
  """(name, raw dataset, size) of every weak source of the config."""
  sources = []

  def weak(ex):
    # Weak examples carry no labelmap: zeros inside the image, so that only
    # padding ends up 255 after augmentation.
    mask = tf.zeros(tf.shape(ex["image"])[:2], tf.int32)
    return ex["image"], mask, tf.cast(ex["tags"], tf.int32)

  if config.data.weak_dir:
    builder = _prepared(config, "web_tags")
    sources.append(("web_tags", _read(builder, "train", config).map(weak),
                    builder.info.splits["train"].num_examples))
  if config.data.use_voc_weak_tags:
    builder = _prepared(config, "voc")
    if "tags_only" not in builder.info.splits:
      raise errors.UserError(
          "config.data.use_voc_weak_tags is set but the VOC folder "
          f"{config.data.voc_dir} has no tag-only images (needs "
          "ImageSets/Main/*.txt and Annotations/*.xml; docs/DATA.md).")
    sources.append(("voc_tags_only",
                    _read(builder, "tags_only", config).map(weak),
                    builder.info.splits["tags_only"].num_examples))
  if not sources:
    raise errors.UserError(
        "Stage 'semi' needs weak images: set config.data.weak_dir and/or "
        "config.data.use_voc_weak_tags.")
  return sources


def _shuffled(raw, config, seed_offset):
  """Shuffled, repeated forever.

  In deterministic mode the stream is a function of the seed alone, for
  every iterator of the dataset: the repeated stream is shuffled once, with
  the same seed for each iterator. `raw.shuffle(seed=s).repeat()` is not:
  its per-epoch reshuffle draws seeds from a generator that all iterators of
  the dataset share, and an iterator's prefetch reads ahead a
  timing-dependent number of epochs, so the next iterator (fit's, after the
  `take(1)` that builds the model; or a resumed run's) started from a
  timing-dependent state. Measured: under CPU load, 2 of 4 processes gave a
  different second iterator, and two-worker training differed run to run
  from phase a's first step (tests/test_reliability_distributed.py).

  The price, in deterministic mode only: the shuffle buffer spans epoch
  boundaries, so an image can come back before every other image of its
  epoch has been seen (as in any `repeat().shuffle()` pipeline). A per-epoch
  seed inside `flat_map` would keep epochs apart, but `shuffle` refuses a
  tensor seed when the global seed is 0 (`random_seed.get_seed` compares
  the seed pair to (0, 0) in Python).
  """
  buffer = config.data.shuffle_buffer
  if not config.data.deterministic:
    return raw.shuffle(buffer).repeat()
  return raw.repeat().shuffle(buffer, seed=config.train.seed + seed_offset,
                              reshuffle_each_iteration=False)


def _augmented_batches(raw, is_weak, batch, config, seed_offset):
  """Augments a shuffled, repeated stream with per-example seeds; batches."""
  data = config.data
  det = data.deterministic
  seed = config.train.seed
  seeds = tf.data.Dataset.random(
      seed=seed + 1000 + seed_offset if det else None).batch(2)

  def transform(example, example_seed):
    image, mask, tags = example
    return augment(image, mask, tags, is_weak, example_seed, data.crop_size,
                   data.min_scale, data.max_scale,
                   config.model.output_stride,
                   config.model.num_classes)

  ds = tf.data.Dataset.zip((raw, seeds)).map(
      transform, num_parallel_calls=AUTOTUNE, deterministic=det or None)
  return ds.batch(batch, drop_remainder=True)


def split_batch_sizes(batch_size, weak_fraction):
  """(full, weak) examples per stage-2 batch; weak = round(B * fraction)."""
  if not 0.0 <= weak_fraction <= 1.0:
    raise errors.UserError(f"weak_fraction={weak_fraction} must be in [0, 1].")
  num_weak = int(round(batch_size * weak_fraction))
  return batch_size - num_weak, num_weak


def _options(config):
  options = tf.data.Options()
  options.deterministic = bool(config.data.deterministic)
  return options


def train_dataset(config, stage):
  """Infinite training batches.

  Args:
    config: ExperimentConfig.
    stage: "full" (labelled images only) or "semi" (labelled + weak; every
      batch holds exactly round(batch_size * weak_fraction) weak examples,
      the weak ones last).

  Returns:
    tf.data.Dataset of dicts (see module doc), batch config.train.batch_size.
  """
  batch_size = config.train.batch_size
  if stage == "full":
    ds = _augmented_batches(_shuffled(_full_raw(config), config, 0), False,
                            batch_size, config, 0)
  elif stage == "semi":
    num_full, num_weak = split_batch_sizes(batch_size,
                                           config.data.weak_fraction)
    sources = _weak_sources(config)
    raws = [_shuffled(raw, config, 7 + i)
            for i, (_, raw, _) in enumerate(sources)]
    if len(raws) == 1:
      weak_raw = raws[0]
    else:
      total = float(sum(n for _, _, n in sources))
      # Each source contributes in proportion to its size.
      weak_raw = tf.data.Dataset.sample_from_datasets(
          raws, weights=[n / total for _, _, n in sources],
          seed=config.train.seed if config.data.deterministic else None)
    weak = (_augmented_batches(weak_raw, True, num_weak, config, 1)
            if num_weak else None)
    full = (_augmented_batches(_shuffled(_full_raw(config), config, 0), False,
                               num_full, config, 0) if num_full else None)
    if weak is None:
      ds = full
    elif full is None:
      ds = weak
    else:
      ds = tf.data.Dataset.zip((full, weak)).map(
          lambda f, w: {k: tf.concat([f[k], w[k]], 0) for k in f},
          num_parallel_calls=AUTOTUNE)
  else:
    raise ValueError(f"stage={stage!r}; expected 'full' or 'semi'.")
  return ds.prefetch(AUTOTUNE).with_options(_options(config))


def _eval_example(ex, num_classes):
  return {
      "image": image_ops.normalize_image(ex["image"]),
      "mask": tf.cast(ex["mask"][..., 0], tf.int32),
      "tags": multi_hot_tags(ex["tags"], num_classes),
      "file_name": ex["file_name"],
  }


def eval_dataset(config, split=None):
  """Evaluation examples of the VOC builder, original size, no augmentation.

  Args:
    config: ExperimentConfig.
    split: VOC split (default config.data.eval_split).

  Returns:
    Dataset of dicts, batch 1: image float32 [1, H, W, 3] (normalised), mask
    int32 [1, H, W], tags float32 [1, num_classes], file_name string [1].
  """
  split = split or config.data.eval_split
  ds = _read(_prepared(config, "voc"), split, config)
  num_classes = config.model.num_classes
  ds = ds.map(lambda ex: _eval_example(ex, num_classes),
              num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(1).prefetch(AUTOTUNE)


def weak_eval_dataset(config, source="web_tags"):
  """Weak images in original size, for inference (e.g. tag cleaning).

  Args:
    config: ExperimentConfig.
    source: "web_tags" (config.data.weak_dir) or "voc_tags_only" (the VOC
      images without mask).

  Returns:
    Dataset of dicts, batch 1: image float32 [1, H, W, 3] (normalised), tags
    float32 [1, num_classes] (the given, noisy tags), file_name string [1]
    (the annotations.jsonl path, or the VOC id).
  """
  if source == "web_tags":
    ds = _read(_prepared(config, "web_tags"), "train", config)
  elif source == "voc_tags_only":
    ds = _read(_prepared(config, "voc"), "tags_only", config)
  else:
    raise ValueError(f"source={source!r}; expected 'web_tags' or "
                     "'voc_tags_only'.")
  num_classes = config.model.num_classes
  ds = ds.map(lambda ex: {
      "image": image_ops.normalize_image(ex["image"]),
      "tags": multi_hot_tags(ex["tags"], num_classes),
      "file_name": ex["file_name"],
  }, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(1).prefetch(AUTOTUNE)
