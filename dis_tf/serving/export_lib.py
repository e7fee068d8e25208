"""The export library: a trained model as a TF Serving model version.

`export_saved_model` writes one version of a TF Serving model base path:

  export_dir/<version>/saved_model.pb
  export_dir/<version>/variables/
  export_dir/<version>/assets.extra/tf_serving_warmup_requests

A version is written to `export_dir/.tmp-<version>-<pid>` and renamed into
place, so a server polling `export_dir` never sees a half-written version
(it only loads integer-named sub-directories). The warmup file holds one
`PredictionLog` per prediction signature, which TF Serving replays at load
time. `export_from_model_dir` loads a training run (with config overrides)
and exports it: what `export/export_saved_model.py` runs.
"""

import contextlib
import os
import shutil

import tensorflow as tf
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from dis_tf import atomic
from dis_tf import classes
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib
from dis_tf import quality as quality_lib
from dis_tf.serving import module as module_lib

WARMUP_FILENAME = "tf_serving_warmup_requests"


def next_version(export_dir):
  """The next free integer version under the model base path (from 1)."""
  versions = [int(name) for name in _listdir(export_dir)
              if name.isdigit()
              and os.path.isdir(os.path.join(export_dir, name))]
  return max(versions, default=0) + 1


def _listdir(path):
  try:
    return os.listdir(path)
  except FileNotFoundError:
    return []


def _encoded_test_image(height, width, fmt):
  """A deterministic gradient image, encoded (warmup payload)."""
  y = tf.linspace(0.0, 255.0, height)[:, None]
  x = tf.linspace(0.0, 255.0, width)[None, :]
  image = tf.stack([y + 0 * x, x + 0 * y, (x + y) / 2], axis=-1)
  image = tf.cast(image, tf.uint8)
  if fmt == "png":
    return tf.io.encode_png(image).numpy()
  return tf.io.encode_jpeg(image).numpy()


def _check_warmup_fits(bounds, input_size, t_test):
  """ValueError naming the bound if the smallest warmup request exceeds it.

  TF Serving refuses to load a version whose warmup requests fail.
  """
  bounds = module_lib.check_bounds(bounds)
  pixels = input_size * input_size
  for name, value, need in (
      ("max_image_pixels", bounds.max_image_pixels, pixels),
      ("max_batch_pixels", bounds.max_batch_pixels, pixels),
      ("max_steps", bounds.max_steps, t_test),
      ("max_batch_steps", bounds.max_batch_steps, t_test)):
    if value < need:
      raise errors.UserError(
          f"--serving.{name}={value} refuses this export's own warmup "
          f"request (an {input_size} x {input_size} image at t_test="
          f"{t_test} needs {need}); raise it.")
  return bounds


def warmup_requests(input_size, t_test, model_name="dis", bounds=None):
  """PredictionLog records that exercise every prediction signature.

  Args:
    input_size: the network input size (sets the warmup image sizes).
    t_test: the export's step count (used for the `serving_steps` record).
    model_name: the TF Serving model name put in the requests.
    bounds: the export's request bounds (`dis_tf.config.ServingConfig`;
      None: the defaults): the requests stay within them.

  Returns:
    A list of `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.

  Raises:
    ValueError: a bound too small for a one-image request at the input size.
  """
  bounds = _check_warmup_fits(bounds, input_size, t_test)
  encoded = [_encoded_test_image(input_size, input_size, "jpeg"),
             _encoded_test_image(input_size // 2 + 1, input_size + 3, "png")]
  two_fit = (bounds.max_batch_size >= 2 and
             bounds.max_batch_pixels >= 2 * input_size * (input_size + 3))
  image = tf.image.decode_png(encoded[1], channels=3)[None].numpy()
  if not two_fit:
    encoded = encoded[:1]
    image = tf.image.decode_jpeg(encoded[0], channels=3)[None].numpy()
  inputs_by_signature = {
      "serving_default": {"image_bytes": tf.make_tensor_proto(encoded)},
      "serving_steps": {
          "image_bytes": tf.make_tensor_proto(encoded[:1]),
          "steps": tf.make_tensor_proto([t_test], dtype=tf.int32)},
      "predict_images": {"images": tf.make_tensor_proto(image)},
      "predict_images_float": {
          "images": tf.make_tensor_proto(image.astype("float32"))},
  }
  logs = []
  for signature, inputs in inputs_by_signature.items():
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name,
                                       signature_name=signature))
    for key, proto in inputs.items():
      request.inputs[key].CopyFrom(proto)
    logs.append(prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)))
  return logs


def write_warmup(path, logs):
  """Writes PredictionLog records as the TFRecord file TF Serving reads."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


@contextlib.contextmanager
def _version_directory(export_dir, version):
  """Yields a temp directory that becomes `export_dir/<version>` on success.

  The temp name (`.tmp-<version>-<pid>`) is not an integer, so TF Serving
  ignores it; its files are fsynced, the rename into place is atomic, and
  the base directory is fsynced after it (`atomic.commit_directory`). On
  an error the temp directory is removed.
  """
  target = os.path.join(export_dir, str(int(version)))
  tmp = os.path.join(export_dir, f".tmp-{int(version)}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    yield tmp
    # Every file of the SavedModel is fsynced before the rename, the base
    # directory after it.
    atomic.commit_directory(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export_saved_model(model, export_dir, t_test=30, input_size=None,
                       latent_step_size=None, version=None, class_names=None,
                       bounds=None, model_name="dis", warmup=True,
                       class_colors=None, precision=None, quality=None):
  """Writes `model` as version `version` under the base path `export_dir`.

  The SavedModel goes to a temporary directory inside `export_dir` (not an
  integer name, so TF Serving ignores it) and is renamed into place.

  Args:
    model: a `DISModel`.
    export_dir: TF Serving model base path.
    t_test: latent steps of the fixed-step signatures.
    input_size: the canvas side S; None: the model's `eval_crop_size`.
    latent_step_size: latent step size; None uses the model's.
    version: integer version; None takes the next free one.
    class_names: C class names; None derives them from the model.
    class_colors: C (r, g, b) class colours; None: the VOC palette's.
    bounds: the request bounds, a `dis_tf.config.ServingConfig` (None: the
      defaults); recorded in the `metadata` signature.
    model_name: model name written into the warmup requests.
    warmup: write `assets.extra/tf_serving_warmup_requests`.
    precision: the backbone's dtype policy in the exported graph (one of
      `dis_tf.config.PRECISIONS`, set on `model`); None: the model's
      (`model.precision`). Recorded in the `metadata` signature.
    quality: the `dis_tf.quality.QualityFit` of the `quality` output (None:
      the mean max-softmax probability); described in `metadata`.

  Returns:
    The path of the written version directory.

  Raises:
    ValueError: for a bad --version, or if that version already exists.
  """
  os.makedirs(export_dir, exist_ok=True)
  if version is None:
    version = next_version(export_dir)
  if int(version) < 0:
    raise errors.UserError(f"--version must be >= 0, got {version}.")
  target = os.path.join(export_dir, str(int(version)))
  if os.path.exists(target):
    raise errors.UserError(f"--version={version}: {target} already exists; "
                           "pick another version or omit --version.")
  if input_size is None:
    input_size = model.eval_crop_size
  bounds = _check_warmup_fits(bounds, input_size, t_test)
  if precision is not None:
    model.set_precision(precision)
  module = module_lib.build_serving_module(
      model, t_test, input_size, latent_step_size, class_names, bounds,
      class_colors, quality=quality)
  with _version_directory(export_dir, version) as tmp:
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    if warmup:
      write_warmup(os.path.join(tmp, "assets.extra", WARMUP_FILENAME),
                   warmup_requests(input_size, t_test, model_name, bounds))
  return target


def export_from_model_dir(model_dir, export_dir, overrides=None,
                          input_size=None, version=None, model_name="dis"):
  """Loads a training run and exports it (`export/export_saved_model.py`).

  Args:
    model_dir: a dis_tf training directory (config.json + model.keras).
    export_dir: TF Serving model base path.
    overrides: optional config overrides (`dis_tf.model_dir.load_config`);
      the export takes t_test from `latent.t_test`, the latent step size
      from `latent.step_size`, the graph's precision from
      `model.precision`, the request bounds from `serving.*` and the
      quality score's fit from `quality`.
    input_size: the canvas side; None takes `data.eval_size()` (the size
      the run was evaluated and its setting selected at).
    version: integer version; None takes the next free one.
    model_name: model name written into the warmup requests.

  Returns:
    The path of the written version directory.
  """
  config, model = model_dir_lib.load(model_dir, overrides)
  class_set = classes.from_config(config)
  return export_saved_model(
      model, export_dir, t_test=config.latent.t_test,
      input_size=(config.data.eval_size() if input_size is None
                  else input_size),
      latent_step_size=config.latent.step_size, version=version,
      bounds=config.serving, model_name=model_name,
      class_names=class_set.names, class_colors=class_set.colors,
      precision=config.model.precision,
      quality=quality_lib.QualityFit.from_json(config.quality))
