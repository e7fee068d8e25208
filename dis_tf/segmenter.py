"""Segmenting image files with a trained run or an exported SavedModel.

The public entry point for predictions on your own images (what
`tools/predict.py` runs):

  import dis_tf

  segmenter = dis_tf.load_segmenter("runs/demo/model")   # or "export/1"
  for result in segmenter.segment(["cat.jpg", "street.png"], t_test=10):
    print(result.file, result.tags, result.class_ids.shape)

Both sources run the export's serving computation
(`dis_tf.serving.module`): a training run builds the serving module in
process (`DISModel.infer`, the one inference path), a SavedModel is loaded
with `tf.saved_model.load`; both are called through `serving_steps` with the
encoded file bytes, so they decode, resize and predict alike and give the
same class ids. `predict_files` adds the file handling of the tool: inputs
from files, folders and globs, batches, bad inputs skipped or fatal, and the
output files of `dis_tf.prediction_io`.
"""

import dataclasses
import io
import os
from typing import Optional

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from dis_tf import classes
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib
from dis_tf import prediction_io
from dis_tf import quality as quality_lib
from dis_tf.config import LatentConfig
from dis_tf.serving import module as module_lib


@dataclasses.dataclass
class Segmentation:
  """The prediction of one image.

  Attributes:
    file: the input file (None for bytes or arrays).
    class_ids: [H, W] int32 class ids at the input's size.
    tag_probabilities: [C] float32 tag probabilities (background is 1).
    class_names: the C class names.
    t_test: latent steps run.
    tag_threshold: tag probability above which a class is a tag.
    quality: how far to trust the labelmap, in [0, 1], higher = more
      trustworthy (`dis_tf.quality`); None from an export that predates it.
  """
  file: object
  class_ids: np.ndarray
  tag_probabilities: np.ndarray
  class_names: tuple
  t_test: int
  tag_threshold: float = 0.5
  quality: Optional[float] = None

  @property
  def tags(self):
    """{class name: probability} of the tags (background excluded)."""
    return {self.class_names[c]: float(p)
            for c, p in enumerate(self.tag_probabilities)
            if c > 0 and p > self.tag_threshold}


class Segmenter:
  """A trained DIS model, ready to segment encoded images.

  Build it with `load_segmenter`.

  Args:
    serving_steps: `fn(image_bytes [B] string, steps [B] int32)` -> the
      serving outputs (`dis_tf.serving.module`).
    class_names: the C class names.
    t_test: the default latent steps (the run's or the export's).
    max_steps: the largest `t_test` the graph accepts.
    tag_threshold: tag probability above which a class is a tag.
    source: what was loaded (for messages).
    keep_alive: objects the serving function needs alive (the loaded
      SavedModel; the model and module of a training run).
    class_colors: C (r, g, b) class colours (None: the VOC palette's); with
      the VOC palette's other entries, `palette` ([256, 3] uint8) of the
      labelmap PNGs.
  """

  def __init__(self, serving_steps, class_names, t_test, max_steps,
               tag_threshold, source, keep_alive=None, class_colors=None):
    self._serving_steps = serving_steps
    self.class_names = tuple(class_names)
    self.palette = classes.voc_palette(256)
    if class_colors is not None:
      self.palette[:len(self.class_names)] = np.asarray(
          class_colors, np.uint8).reshape(-1, 3)
    self.t_test = int(t_test)
    self.max_steps = int(max_steps)
    self.tag_threshold = float(tag_threshold)
    self.source = source
    # A restored SavedModel's signatures do not keep its object alive.
    self._keep_alive = keep_alive

  def check_t_test(self, t_test):
    """`t_test`, or the default for None; a UserError if out of range."""
    t_test = self.t_test if t_test is None else t_test
    if not isinstance(t_test, (int, np.integer)) or not (
        0 <= t_test <= self.max_steps):
      raise errors.UserError(f"--t_test={t_test}: must be an integer in "
                             f"0..{self.max_steps}.")
    return int(t_test)

  def predict_bytes(self, image_bytes, t_test=None):
    """The serving outputs of a batch of encoded images.

    Args:
      image_bytes: list of encoded JPEG / PNG / GIF / BMP files.
      t_test: latent steps; None takes `self.t_test`.

    Returns:
      Dict of NumPy arrays (`class_ids` padded to the batch's largest
      image; crop with `height`, `width`).

    Raises:
      UserError: bad `t_test`.
      tf.errors.InvalidArgumentError: an image the graph cannot decode.
    """
    steps = self.check_t_test(t_test)
    outputs = self._serving_steps(
        tf.constant(list(image_bytes), tf.string),
        tf.fill([len(image_bytes)], tf.constant(steps, tf.int32)))
    return {k: v.numpy() for k, v in outputs.items()}

  def segment(self, images, t_test=None, batch_size=8):
    """Segments images.

    Example:
      segmenter = dis_tf.load_segmenter("runs/demo/model")
      [result] = segmenter.segment(["cat.jpg"], t_test=10)
      result.class_ids      # [H, W] int32 class ids, the image's size
      result.tags           # {"cat": 0.97}

    Args:
      images: a list of image files (paths), encoded image bytes, or
        [H, W, 3] uint8 arrays (mixed is fine); one image alone also works.
      t_test: latent steps; None takes the run's or export's t_test.
      batch_size: images per graph call.

    Returns:
      A list of `Segmentation`s, in input order.

    Raises:
      UserError: naming a file that cannot be read or is not an image, or
        a bad `t_test`.
    """
    if isinstance(images, (str, bytes, os.PathLike, np.ndarray)):
      images = [images]
    steps = self.check_t_test(t_test)
    batch_size = max(1, int(batch_size))
    encoded = [_encode(image, i) for i, image in enumerate(images)]
    results = []
    for start in range(0, len(encoded), batch_size):
      batch = encoded[start:start + batch_size]
      outputs = self.predict_bytes([data for _, data in batch], steps)
      for i, (name, _) in enumerate(batch):
        results.append(self._result(outputs, i, name, steps))
    return results

  def _result(self, outputs, index, name, steps):
    height, width = int(outputs["height"][index]), int(
        outputs["width"][index])
    return Segmentation(
        file=name,
        class_ids=outputs["class_ids"][index, :height, :width],
        tag_probabilities=outputs["tag_probabilities"][index],
        class_names=self.class_names, t_test=steps,
        tag_threshold=self.tag_threshold,
        quality=prediction_io.output_quality(outputs, index))


def _encode(image, index):
  """(name, encoded bytes) of one input of `Segmenter.segment`."""
  if isinstance(image, (str, os.PathLike)):
    loaded = prediction_io.read_image(os.fspath(image))
    return loaded.path, loaded.data
  if isinstance(image, bytes):
    prediction_io.check_image_bytes(image, f"images[{index}]")
    return None, image
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3 \
      or array.size == 0:
    raise errors.UserError(
        f"images[{index}]: expected a file, encoded bytes or a non-empty "
        f"[H, W, 3] uint8 array, got {array.dtype} {array.shape}.")
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")  # lossless
  return None, buffer.getvalue()


# ----------------------------------------------------------------- loading
def _latest_version(base):
  versions = [int(name) for name in os.listdir(base) if name.isdigit()
              and os.path.isfile(os.path.join(base, name, "saved_model.pb"))]
  return os.path.join(base, str(max(versions))) if versions else None


def load_segmenter(path, overrides=None, tag_threshold=None):
  """Loads a training run or an exported SavedModel for `segment`.

  Example:
    segmenter = dis_tf.load_segmenter("runs/demo/model")
    results = segmenter.segment(["cat.jpg", "dog.png"], t_test=10)

  Args:
    path: a training run (`--model_dir`: config.json + model.keras), a
      SavedModel version directory (`export/1`), or a TF Serving model base
      path (its highest version is taken).
    overrides: config overrides of a training run (`--latent.step_size`,
      ...; `dis_tf.model_dir.load_config`); not for a SavedModel, whose
      export fixed them.
    tag_threshold: tag probability threshold; None takes the run's
      `latent.tag_threshold`, or for a SavedModel the default (0.5).

  Returns:
    A `Segmenter`.

  Raises:
    UserError: `path` is neither, or a training run cannot be loaded.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise errors.MissingFileError(f"{path}: no such training run or "
                                  "SavedModel directory.")
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return _from_saved_model(path, overrides, tag_threshold)
  if os.path.isfile(os.path.join(path, "config.json")):
    return _from_model_dir(path, overrides, tag_threshold)
  version = _latest_version(path) if os.path.isdir(path) else None
  if version:
    return _from_saved_model(version, overrides, tag_threshold)
  raise errors.UserError(
      f"{path}: neither a training run (config.json, model.keras) nor a "
      "SavedModel (saved_model.pb, or integer version folders holding one).")


def _from_model_dir(model_dir, overrides, tag_threshold):
  config = model_dir_lib.load_config(model_dir, overrides)
  model = model_dir_lib.load_trained_model(model_dir, config)
  # The module the export would write, built in process.
  class_set = classes.from_config(config)
  module = module_lib.build_serving_module(
      model, config.latent.t_test, config.data.eval_size(),
      latent_step_size=config.latent.step_size,
      class_names=class_set.names, class_colors=class_set.colors,
      quality=quality_lib.QualityFit.from_json(config.quality))
  if tag_threshold is None:
    tag_threshold = config.latent.tag_threshold
  return Segmenter(module.serving_steps, module.class_names, module.t_test,
                   module_lib.DEFAULT_MAX_STEPS, tag_threshold,
                   source=model_dir, keep_alive=(model, module),
                   class_colors=module.class_colors)


def _from_saved_model(path, overrides, tag_threshold):
  if overrides:
    keys = ", ".join(f"--{k}" for k in sorted(overrides))
    raise errors.UserError(
        f"{keys}: configuration flags apply to a training run (--model_dir); "
        f"the SavedModel {path} fixed them at export (re-export to change "
        "them).")
  loaded = tf.saved_model.load(path)
  missing = [n for n in ("serving_steps", "metadata")
             if n not in loaded.signatures]
  if missing:
    raise errors.UserError(f"{path}: a SavedModel without the dis_tf "
                           f"signature(s) {missing}; export it with "
                           "export/export_saved_model.py.")
  metadata = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
  signature = loaded.signatures["serving_steps"]

  def serving_steps(image_bytes, steps):
    return signature(image_bytes=image_bytes, steps=steps)

  if tag_threshold is None:
    tag_threshold = LatentConfig().tag_threshold
  return Segmenter(serving_steps,
                   [n.decode("utf-8") for n in metadata["class_names"]],
                   int(metadata["t_test"]), int(metadata["max_steps"]),
                   tag_threshold, source=path, keep_alive=loaded,
                   # Exports from before class sets have no colours: VOC.
                   class_colors=metadata.get("class_colors"))


# ------------------------------------------------------------ file runs
def _check_on_error(on_error):
  if on_error not in prediction_io.ON_ERROR:
    raise errors.UserError(f"--on_error={on_error}: expected one of "
                           f"{', '.join(prediction_io.ON_ERROR)}.")


def _find(images, on_error, skipped):
  """The image files of `images`; appends the specs it skips to `skipped`."""
  paths, found_skipped = prediction_io.find_images(images)
  if found_skipped and on_error == "stop":
    raise found_skipped[0]
  for problem in found_skipped:
    logging.warning("skipped: %s", errors.message(problem))
  skipped.extend(found_skipped)
  if not paths:
    raise errors.UserError(
        f"--images={images if isinstance(images, str) else ','.join(images)}"
        ": no image file to segment.")
  return paths


def _predictions(segmenter, paths, steps, batch_size, on_error, progress,
                 skipped):
  """Yields (image, outputs, index) for every readable file, in order;
  appends the files it skips to `skipped` (see `predict_files`)."""
  bar = prediction_io.Progress(len(paths)) if progress else None
  for start in range(0, len(paths), batch_size):
    batch = []
    for path in paths[start:start + batch_size]:
      try:
        batch.append(prediction_io.read_image(path))
      except errors.UserError as e:
        _skip(e, skipped, on_error)
    yield from _run_batch(segmenter, batch, steps, skipped, on_error)
    if bar:
      bar.update(min(start + batch_size, len(paths)), len(skipped))


def predict_files(segmenter, images, output_dir, t_test=None, batch_size=8,
                  on_error="skip", progress=True, echo=None):
  """Segments image files into `output_dir` (`dis_tf.prediction_io` files).

  Args:
    segmenter: a `Segmenter` (`load_segmenter`).
    images: files, folders and glob patterns (a comma-separated string or
      a list; `prediction_io.find_images`).
    output_dir: the output folder.
    t_test: latent steps; None takes the segmenter's.
    batch_size: images per graph call.
    on_error: "skip" names a bad input (a missing file, a folder with no
      images, an unreadable, empty, corrupt or zero-size image) in the log
      and goes on; "stop" raises its `UserError`.
    progress: show a progress bar on stderr.
    echo: optional `fn(line)` called with one line per written image.

  Returns:
    {"written": n, "skipped": [UserError], "predictions": path of
    predictions.jsonl}.

  Raises:
    UserError: with on_error="stop", the first bad input; a bad `t_test`,
      `on_error` or `output_dir`; no input at all.
  """
  _check_on_error(on_error)
  steps = segmenter.check_t_test(t_test)  # Before any file is read.
  skipped = []
  paths = _find(images, on_error, skipped)
  with prediction_io.PredictionWriter(
      output_dir, segmenter.tag_threshold, segmenter.palette) as writer:
    for image, outputs, index in _predictions(
        segmenter, paths, steps, max(1, int(batch_size)), on_error,
        progress, skipped):
      height = int(outputs["height"][index])
      width = int(outputs["width"][index])
      record = writer.write(
          image.path, image.rgb,
          outputs["class_ids"][index, :height, :width],
          outputs["tag_probabilities"][index], segmenter.class_names,
          steps, quality=prediction_io.output_quality(outputs, index))
      if echo:
        echo(prediction_io.describe(record))
  return {"written": len(writer.records), "skipped": skipped,
          "predictions": os.path.join(output_dir,
                                      prediction_io.PREDICTIONS_FILENAME)}


def rank_files(segmenter, images, t_test=None, batch_size=8, on_error="skip",
               progress=True):
  """Ranks image files for labelling: the least trusted labelmap first.

  The images a model segments worst are the ones whose pixel labels teach
  it most (uncertainty sampling), so the order is the quality score
  (`dis_tf.quality`) ascending; ties keep the input order.

  Args:
    segmenter: a `Segmenter` (`load_segmenter`).
    images: files, folders and glob patterns, as `predict_files` takes.
    t_test: latent steps; None takes the segmenter's.
    batch_size: images per graph call.
    on_error: "skip" or "stop", as `predict_files`.
    progress: show a progress bar on stderr.

  Returns:
    {"ranking": [(path, quality)] ascending by quality, "skipped":
    [UserError]}.

  Raises:
    UserError: an export without the `quality` output (it predates the
      score), and what `predict_files` raises.
  """
  _check_on_error(on_error)
  steps = segmenter.check_t_test(t_test)
  skipped, scored = [], []
  paths = _find(images, on_error, skipped)
  for image, outputs, index in _predictions(
      segmenter, paths, steps, max(1, int(batch_size)), on_error, progress,
      skipped):
    quality = prediction_io.output_quality(outputs, index)
    if quality is None:
      raise errors.UserError(
          "this export has no `quality` output (it predates the quality "
          "score): export the run again with export/export_saved_model.py.")
    scored.append((image.path, quality))
  order = sorted(range(len(scored)), key=lambda i: (scored[i][1], i))
  return {"ranking": [scored[i] for i in order], "skipped": skipped}


def _skip(error, skipped, on_error):
  if on_error == "stop":
    raise error
  logging.warning("skipped: %s", errors.message(error))
  skipped.append(error)


def _run_batch(segmenter, batch, steps, skipped, on_error):
  """Yields (image, outputs, index) per image of `batch` the graph took.

  A batch the graph refuses (an image that passed the checks here but that
  TensorFlow's decoder rejects) is retried one image at a time, so that only
  that image is skipped.
  """
  if not batch:
    return
  try:
    outputs = segmenter.predict_bytes([image.data for image in batch], steps)
  except tf.errors.InvalidArgumentError as e:
    if len(batch) > 1:
      for image in batch:
        yield from _run_batch(segmenter, [image], steps, skipped, on_error)
      return
    _skip(errors.UserError(
        f"{batch[0].path}: the model's decoder refused it "
        f"({' '.join(e.message.split())[:200]})."), skipped, on_error)
    return
  for index, image in enumerate(batch):
    yield image, outputs, index
