"""Exports a trained DIS model as a SavedModel for TensorFlow Serving.

The serving graph holds the paper's test-time inference (Sec. 2.1,
"Inference in Test"): the backbone once, `t_test` gradient steps on the
latent features (u1, v1) through `dis_tf.inference.latent_inference`, then
the tag-refined labelmap.

  python export/export_saved_model.py --model_dir=/runs/voc12 \
      --export_dir=/models/dis [--t_test=30] [--latent_step=1.0] \
      [--input_size=353] [--version=N]

Layout written (TF Serving's model base path):

  export_dir/<version>/saved_model.pb
  export_dir/<version>/variables/
  export_dir/<version>/assets.extra/tf_serving_warmup_requests

A version is written to `export_dir/.tmp-<version>-<pid>` and renamed into
place, so a server polling `export_dir` never sees a half-written version
(it only loads integer-named sub-directories).

Signatures (every input and output is batched unless noted):

  serving_default       image_bytes: string [B] (JPEG / PNG / GIF / BMP,
                        any size, RGB, grayscale or RGBA)
  serving_steps         image_bytes: string [B], steps: int32 [B] (latent
                        steps per image, 0..max_steps; batched like every
                        input so that REST row format and server-side
                        batching work)
  predict_images        images: uint8 [B, H, W, 3]
  predict_images_float  images: float32 [B, H, W, 3], values in 0..255
  metadata              no inputs

Outputs of the four prediction signatures:

  class_ids          int32 [B, Hmax, Wmax]: per-pixel class id at each
                     image's original resolution, padded with 255 to the
                     batch's largest height / width (crop with height, width)
  height, width      int32 [B]: each image's original size
  probabilities      float32 [B, h, w, C]: tag-refined class probabilities at
                     feature resolution (h = w = ceil(input_size / 8))
  tag_probabilities  float32 [B, C]: sigmoid(v3), background fixed at 1
  class_names        string [B, C]: the class names (repeated per example so
                     that REST row-format responses stay batch-aligned)

Outputs of `metadata`: class_names string [C], t_test int32 [],
input_size int32 [2], latent_step_size float32 [], max_steps int32 [].
"""

import functools
import os
import shutil

import tensorflow as tf

from dis_tf import image_ops
from dis_tf import model_dir as model_dir_lib
from dis_tf.classes import IGNORE_LABEL, VOC_CLASSES
from dis_tf.modeling import gram as gram_lib

# Upper bound of the per-request `steps` input of `serving_steps`: one bad
# request must not occupy a server thread for hours.
DEFAULT_MAX_STEPS = 1000
WARMUP_FILENAME = "tf_serving_warmup_requests"
SIGNATURES = ("serving_default", "serving_steps", "predict_images",
              "predict_images_float", "metadata")
PREDICTION_OUTPUTS = ("class_ids", "height", "width", "probabilities",
                      "tag_probabilities", "class_names")

# Magic numbers of the formats `tf.io.decode_image` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")
# Largest image (height x width, read from the file header before decoding)
# a request may send: 6000 x 6000 fits. It bounds the memory one image can
# take (decoded uint8: 3 bytes/pixel; its int32 class_ids output: 4
# bytes/pixel), so a small compressed "decompression bomb" is refused
# before it is decoded.
DEFAULT_MAX_PIXELS = 40_000_000
# Rows of the original-size labelmap computed at once (upsample + argmax):
# bounds that buffer to _ARGMAX_BAND_ROWS x width x C float32.
_ARGMAX_BAND_ROWS = 64


# ----------------------------------------------------------- the computation
def class_names_for(num_classes):
  """Class names for a model with `num_classes` labelmap classes.

  Args:
    num_classes: labelmap classes, background included.

  Returns:
    A tuple of `num_classes` strings: the VOC names for 21 classes, else
    "background", "class_1", ... .
  """
  if num_classes == len(VOC_CLASSES):
    return tuple(VOC_CLASSES)
  return ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))


def predict_normalized(model, images, steps, original_sizes, class_names,
                       step_size=None, gram_fields=None):
  """The serving computation on a normalised batch at the input size.

  Every signature, and `predict_in_process`, ends here: the backbone runs
  once, `model.latent` (i.e. `dis_tf.inference.latent_inference`) takes
  `steps` latent steps, and the refined probabilities are upsampled to each
  image's original size before the argmax.

  Args:
    model: a `DISModel`.
    images: [B, S, S, 3] float32, normalised with
      `dis_tf.image_ops.normalize_image`.
    steps: latent steps: an int, a scalar int32 tensor, or a [B] int32
      tensor (per-example counts).
    original_sizes: [B, 2] int32 (height, width) of the original images.
    class_names: sequence of C class names.
    step_size: latent step size; None uses the model's.
    gram_fields: the Gram kernels of the model's weights, built once (see
      `DISServingModule`); None builds them per call.

  Returns:
    Dict of the outputs listed in the module docstring.
  """
  u1, v1 = model.backbone(images, training=False)
  target = image_ops.image_target(images, tf.shape(u1)[1:3])
  probabilities, tag_probabilities = _latent(model, u1, v1, target, steps,
                                             step_size, gram_fields)
  original_sizes = tf.cast(original_sizes, tf.int32)
  batch = tf.shape(images)[0]
  names = tf.constant(list(class_names), tf.string)
  return {
      "class_ids": _class_ids_at_sizes(probabilities, original_sizes),
      "height": original_sizes[:, 0],
      "width": original_sizes[:, 1],
      "probabilities": probabilities,
      "tag_probabilities": tag_probabilities,
      "class_names": tf.tile(names[None, :], [batch, 1]),
  }


def _latent(model, u1, v1, target, steps, step_size, gram_fields=None):
  """`model.latent` with a scalar or a per-example [B] step count.

  A [B] count whose values are all equal (the usual case) runs the batched
  loop once; otherwise each example runs its own loop (`tf.map_fn`), since
  the latent steps of one example never depend on another's.

  Returns:
    (probabilities [B, h, w, C], tag_probabilities [B, C]).
  """
  steps = tf.cast(steps, tf.int32)
  keys = ("probabilities", "tag_probabilities")

  def batched(count):
    result = model.latent(u1, v1, target, steps=count, step_size=step_size,
                          gram_fields=gram_fields)
    return tuple(result[k] for k in keys)

  if steps.shape.rank == 0:
    return batched(steps)

  def per_example():
    def one(args):
      u, v, t, count = args
      result = model.latent(u[None], v[None], t[None], steps=count,
                            step_size=step_size, gram_fields=gram_fields)
      return tuple(result[k][0] for k in keys)
    classes = model.num_classes
    return tf.map_fn(one, (u1, v1, target, steps), fn_output_signature=(
        tf.TensorSpec([None, None, classes], tf.float32),
        tf.TensorSpec([classes], tf.float32)))

  uniform = tf.equal(tf.reduce_min(steps), tf.reduce_max(steps))
  return tf.cond(uniform, lambda: batched(tf.reduce_max(steps)), per_example)


def _interpolation_matrix(in_size, out_size):
  """[out, in] weights of `tf.image.resize` bilinear along one axis."""
  eye = tf.eye(in_size)[None, :, :, None]
  return tf.image.resize(eye, tf.stack([out_size, in_size]),
                         method=tf.image.ResizeMethod.BILINEAR)[0, :, :, 0]


def _upsampled_argmax(probs, size, band_rows=_ARGMAX_BAND_ROWS):
  """argmax over C of `probs` [h, w, C] bilinearly resized to `size`.

  The same weights as `tf.image.resize` (bilinear is separable: rows, then
  columns), but the [H, W, C] float32 upsampled map is never materialised
  (3 GB for a 6000 x 6000 image and 21 classes): the columns are resized
  once ([h, W, C]), then the rows in bands of `band_rows`.
  """
  h, w = tf.shape(probs)[0], tf.shape(probs)[1]
  ry = _interpolation_matrix(h, size[0])  # [H, h]
  rx = _interpolation_matrix(w, size[1])  # [W, w]
  columns = tf.einsum("xw,hwc->hxc", rx, probs)  # [h, W, C]
  num_bands = (size[0] + band_rows - 1) // band_rows

  def body(i, bands):
    rows = ry[i * band_rows:(i + 1) * band_rows]
    band = tf.einsum("yh,hxc->yxc", rows, columns)
    return i + 1, bands.write(i, tf.argmax(band, -1, output_type=tf.int32))

  _, bands = tf.while_loop(
      lambda i, _: i < num_bands, body,
      [tf.constant(0), tf.TensorArray(tf.int32, size=num_bands,
                                      infer_shape=False,
                                      element_shape=[None, None])],
      parallel_iterations=1)
  return tf.reshape(bands.concat(), size)


def _class_ids_at_sizes(probabilities, sizes):
  """Per-example upsample + argmax, padded to the batch max with 255."""
  max_size = tf.reduce_max(sizes, axis=0)

  def one(args):
    probs, size = args
    ids = _upsampled_argmax(probs, size)
    padding = tf.stack([[0, max_size[0] - size[0]],
                        [0, max_size[1] - size[1]]])
    return tf.pad(ids, padding, constant_values=IGNORE_LABEL)

  return tf.map_fn(one, (probabilities, sizes),
                   fn_output_signature=tf.TensorSpec([None, None], tf.int32),
                   parallel_iterations=1)


def _header_size(data):
  """(height, width) from a JPEG / PNG / GIF / BMP header, without decoding.

  Returns [-1, -1] when the header is too short to hold the size (the
  decoder then reports the truncated file).
  """
  def u8(offset, count):
    raw = tf.strings.substr(data, offset, count)
    padded = tf.strings.join([raw, tf.strings.substr(
        tf.constant(b"\0" * 32), 0, count - tf.strings.length(raw))])
    return tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)

  def big_endian(b):
    return b[0] * 16777216 + b[1] * 65536 + b[2] * 256 + b[3]

  def little16(b):
    return b[0] + b[1] * 256

  def little32_abs(b):
    value = b[0] + b[1] * 256 + b[2] * 65536 + b[3] * 16777216
    return tf.where(value >= 2**31, 2**32 - value, value)  # BMP top-down

  length = tf.strings.length(data)
  head = tf.strings.substr(data, 0, 2)

  def png():
    return tf.stack([big_endian(u8(20, 4)), big_endian(u8(16, 4))])

  def gif():
    return tf.stack([little16(u8(8, 2)), little16(u8(6, 2))])

  def bmp():
    return tf.stack([little32_abs(u8(22, 4)), little32_abs(u8(18, 4))])

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return shape[:2]

  unknown = lambda: tf.constant([-1, -1], tf.int64)  # noqa: E731
  size = tf.case([
      (tf.equal(head, b"\x89P"), lambda: tf.cond(length >= 24, png, unknown)),
      (tf.equal(head, b"GI"), lambda: tf.cond(length >= 10, gif, unknown)),
      (tf.equal(head, b"BM"), lambda: tf.cond(length >= 26, bmp, unknown)),
      (tf.equal(head, b"\xff\xd8"), jpeg),
  ], default=unknown, exclusive=True)
  return size


def decode_images(image_bytes, input_size, max_pixels=DEFAULT_MAX_PIXELS):
  """Decodes, resizes and normalises a batch of encoded images.

  One image is decoded at a time, and its size is read from the file header
  and checked against `max_pixels` before decoding.

  Args:
    image_bytes: [B] string tensor of JPEG / PNG / GIF / BMP files (RGB,
      grayscale or RGBA; GIFs give their first frame).
    input_size: the network input size S (images are resized to S x S).
    max_pixels: largest height x width accepted.

  Returns:
    (images [B, S, S, 3] float32 normalised, sizes [B, 2] int32 original
    (height, width)).

  Raises:
    tf.errors.InvalidArgumentError (when run): naming `image_bytes` and the
    index of an element that is not an image of a supported format.
  """
  image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
  # An empty batch would reach the network as a [0, S, S, 3] tensor, which
  # the CPU convolution kernels reject with an unrelated message.
  not_empty = tf.debugging.Assert(tf.size(image_bytes) > 0, [
      "Input image_bytes is an empty batch; send at least one image."])
  with tf.control_dependencies([not_empty]):
    image_bytes = tf.identity(image_bytes)
  indices = tf.range(tf.shape(image_bytes)[0])

  def one(args):
    index, data = args
    # Checked up front so that a bad element fails with the input's name
    # and index rather than DecodeImage's generic message.
    known = tf.reduce_any(tf.stack(
        [tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _MAGIC]))
    check = tf.debugging.Assert(known, [
        "Input image_bytes element", index,
        "is not a JPEG, PNG, GIF or BMP image."])
    with tf.control_dependencies([check]):
      header = _header_size(data)
    small = tf.logical_and(
        tf.reduce_all(header >= 0),
        header[0] * header[1] <= max_pixels)
    size_check = tf.debugging.Assert(small, [
        "Input image_bytes element", index, "is", header[1], "x", header[0],
        "pixels (width x height, from its header); the limit is",
        max_pixels, "pixels (or the header is truncated)."], summarize=4)
    with tf.control_dependencies([size_check]):
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    size = tf.shape(image)[:2]
    return _resize_and_normalize(image[None], input_size)[0], size

  return tf.map_fn(
      one, (indices, image_bytes),
      fn_output_signature=(
          tf.TensorSpec([input_size, input_size, 3], tf.float32),
          tf.TensorSpec([2], tf.int32)),
      parallel_iterations=1)


def _resize_and_normalize(images, input_size):
  """[B, H, W, 3] 0..255 images -> [B, S, S, 3] normalised float32.

  uint8 images are resized as they are (the resize kernel reads uint8 and
  writes float32), so no full-size float32 copy of a large image is made.
  """
  images = tf.image.resize(images, [input_size, input_size],
                           method=tf.image.ResizeMethod.BILINEAR)
  return image_ops.normalize_image(tf.cast(images, tf.float32))


def prepare_image_tensor(images, input_size):
  """Resizes and normalises an image tensor batch (values 0..255).

  Args:
    images: [B, H, W, 3] uint8 or float tensor.
    input_size: the network input size S.

  Returns:
    (images [B, S, S, 3] float32 normalised, sizes [B, 2] int32: (H, W) for
    every example).
  """
  images = tf.convert_to_tensor(images)
  not_empty = tf.debugging.Assert(tf.size(images) > 0, [
      "Input images is empty (no image, or a zero height / width); send at "
      "least one image of at least 1 x 1 pixels."])
  with tf.control_dependencies([not_empty]):
    images = tf.identity(images)
  shape = tf.shape(images)
  sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
  return _resize_and_normalize(images, input_size), sizes


def _check_steps(steps, max_steps, batch_size):
  """Validates the per-example `steps` input (errors name the input)."""
  steps = tf.convert_to_tensor(steps, tf.int32)
  size_check = tf.debugging.Assert(
      tf.equal(tf.size(steps), batch_size),
      ["Input steps must have one value per image_bytes element:", batch_size,
       "expected, got", tf.size(steps)])
  range_check = tf.debugging.Assert(
      tf.reduce_all(tf.logical_and(steps >= 0, steps <= max_steps)),
      ["Input steps must be in [0,", max_steps, "], got", steps])
  with tf.control_dependencies([size_check, range_check]):
    return tf.identity(steps)


# ------------------------------------------------------------- the module
def _underlying_variables(model):
  """The `tf.Variable`s behind a Keras 3 model's weights (see the module)."""
  variables = []
  seen = set()
  for weight in model.weights:
    variable = getattr(weight, "value", weight)
    if not isinstance(variable, tf.Variable):
      raise TypeError(f"Weight {weight.path!r} is not backed by a tf.Variable "
                      f"({type(variable).__name__}); export needs the "
                      "TensorFlow backend (KERAS_BACKEND=tensorflow).")
    if id(variable) not in seen:
      seen.add(id(variable))
      variables.append(variable)
  return variables


class DISServingModule(tf.Module):
  """The exported object: serving `tf.function`s and the raw variables.

  The Keras 3 pitfall (tensorflow/tensorflow#72963, keras-team/keras#20095,
  tensorflow/serving#2250): a `tf.Module` that tracks a Keras 3 model saves
  each weight twice, once as the Keras `Variable` wrapper (which exports a
  fresh `tf.Variable` copy of itself) and once as the `tf.Variable` the
  traced functions capture. `tf.saved_model.load` copes, but the TF1 /
  TF Serving C++ loader restores the checkpoint by name and the captured
  handles end up uninitialised ("Could not find variable ..."). So the
  module never tracks the model: it tracks exactly the underlying
  `tf.Variable`s the functions capture, and reaches the Keras layers only
  through closures, which SavedModel does not serialise.

  The Gram kernels of the latent loop (`dis_tf.modeling.gram`) depend only
  on the weights, which are fixed here, so they are built once, at export,
  and saved as the non-trainable variables `gram_fields`; a request only
  applies them (training builds them per step, as its weights change).

  Args:
    model: a `DISModel` (TensorFlow backend).
    t_test: latent steps of the fixed-step signatures.
    input_size: network input size S (images are resized to S x S).
    step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from `model.num_classes`.
    max_steps: largest `steps` accepted by `serving_steps`.
  """

  def __init__(self, model, t_test, input_size, step_size=None,
               class_names=None, max_steps=DEFAULT_MAX_STEPS):
    super().__init__(name="dis_serving")
    if t_test < 0:
      raise ValueError(f"--t_test must be >= 0, got {t_test}.")
    if input_size < 8:
      raise ValueError(f"--input_size must be >= 8, got {input_size}.")
    if step_size is not None and not step_size > 0:
      raise ValueError(f"--latent_step must be > 0, got {step_size}.")
    if class_names is None:
      class_names = class_names_for(model.num_classes)
    class_names = tuple(class_names)
    if len(class_names) != model.num_classes:
      raise ValueError(f"{len(class_names)} class names for a model with "
                       f"{model.num_classes} classes.")
    # Tracked: the raw variables only (the root fix of the duplicate
    # variables); the model itself stays out of the object graph.
    self.model_variables = _underlying_variables(model)
    gram_fields = None
    if model.latent_method == "gram":
      op = gram_lib.GramOperator.from_heads(model)
      gram_fields = [
          tf.Variable(value, trainable=False, name=f"gram_{name}")
          for name, value in zip(op.FIELDS, op.fields())]
    self.gram_fields = gram_fields
    self._t_test = int(t_test)
    self._input_size = int(input_size)
    self._step_size = (float(model.latent_step_size) if step_size is None
                       else float(step_size))
    self._class_names = class_names
    self._max_steps = int(max_steps)

    predict = functools.partial(predict_normalized, model,
                                class_names=class_names,
                                step_size=self._step_size,
                                gram_fields=gram_fields)
    size = self._input_size
    t_test = self._t_test
    max_steps = self._max_steps

    def serving_default(image_bytes):
      images, sizes = decode_images(image_bytes, size)
      return predict(images, t_test, sizes)

    def serving_steps(image_bytes, steps):
      steps = _check_steps(steps, max_steps, tf.size(image_bytes))
      images, sizes = decode_images(image_bytes, size)
      return predict(images, steps, sizes)

    def predict_images(images):
      images, sizes = prepare_image_tensor(images, size)
      return predict(images, t_test, sizes)

    def metadata():
      return {
          "class_names": tf.constant(list(class_names), tf.string),
          "t_test": tf.constant(t_test, tf.int32),
          "input_size": tf.constant([size, size], tf.int32),
          "latent_step_size": tf.constant(self._step_size, tf.float32),
          "max_steps": tf.constant(max_steps, tf.int32),
      }

    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    self.serving_default = tf.function(
        serving_default, input_signature=[bytes_spec])
    self.serving_steps = tf.function(
        serving_steps,
        input_signature=[bytes_spec,
                         tf.TensorSpec([None], tf.int32, name="steps")])
    self.predict_images = tf.function(
        predict_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                       name="images")])
    self.predict_images_float = tf.function(
        predict_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                       name="images")])
    self.metadata = tf.function(metadata, input_signature=[])

  @property
  def t_test(self):
    return self._t_test

  @property
  def input_size(self):
    return self._input_size

  @property
  def class_names(self):
    return self._class_names

  def signatures(self):
    """{signature name: concrete function} for `tf.saved_model.save`."""
    return {name: getattr(self, name).get_concrete_function()
            for name in SIGNATURES}


def build_serving_module(model, t_test, input_size, step_size=None,
                         class_names=None, max_steps=DEFAULT_MAX_STEPS):
  """Builds the `DISServingModule` that `export_saved_model` writes.

  Args:
    model: a `DISModel`.
    t_test: latent steps of the fixed-step signatures (paper: 30).
    input_size: network input size S.
    step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from the model.
    max_steps: largest per-request `steps` of `serving_steps`.

  Returns:
    A `DISServingModule`.
  """
  return DISServingModule(model, t_test, input_size, step_size=step_size,
                          class_names=class_names, max_steps=max_steps)


def predict_in_process(model, images, t_test, input_size, step_size=None,
                       class_names=None, module=None):
  """Runs the exported serving computation in this process.

  Same code path as the SavedModel: the call goes through the serving
  module's `tf.function`s.

  Args:
    model: a `DISModel`.
    images: a list / 1-D array of encoded image bytes (the
      `serving_default` path), or a [B, H, W, 3] uint8 or float (0..255)
      image batch (the `predict_images` / `predict_images_float` path).
    t_test: latent steps.
    input_size: network input size S.
    step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from the model.
    module: optional prebuilt `DISServingModule` (saves retracing); its
      own `input_size` and `step_size` apply then.

  Returns:
    Dict of NumPy arrays, the outputs of the prediction signatures.
  """
  if module is None:
    module = build_serving_module(model, t_test, input_size,
                                  step_size=step_size, class_names=class_names)
  if isinstance(images, (list, tuple)) and images and isinstance(
      images[0], bytes):
    images = tf.constant(list(images), tf.string)
  images = tf.convert_to_tensor(images)
  if images.dtype == tf.string:
    steps = tf.fill(tf.shape(images), tf.constant(t_test, tf.int32))
    outputs = module.serving_steps(images, steps)
  elif images.dtype == tf.uint8:
    outputs = _fixed_or_steps(module, module.predict_images, images, t_test)
  else:
    outputs = _fixed_or_steps(module, module.predict_images_float,
                              tf.cast(images, tf.float32), t_test)
  return {k: v.numpy() for k, v in outputs.items()}


def _fixed_or_steps(module, function, images, t_test):
  if t_test != module.t_test:
    raise ValueError(f"t_test={t_test} differs from the module's "
                     f"{module.t_test}; image-tensor signatures have a fixed "
                     "step count.")
  return function(images)


# ----------------------------------------------------------------- export
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


def warmup_requests(input_size, t_test, model_name="dis"):
  """PredictionLog records that exercise every prediction signature.

  Args:
    input_size: the network input size (sets the warmup image sizes).
    t_test: the export's step count (used for the `serving_steps` record).
    model_name: the TF Serving model name put in the requests.

  Returns:
    A list of `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import model_pb2
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_log_pb2
  # pylint: enable=g-import-not-at-top
  encoded = [_encoded_test_image(input_size, input_size, "jpeg"),
             _encoded_test_image(input_size // 2 + 1, input_size + 3, "png")]
  image = tf.image.decode_png(encoded[1], channels=3)[None].numpy()
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


def export_saved_model(model, export_dir, t_test=30, input_size=353,
                       step_size=None, version=None, class_names=None,
                       max_steps=DEFAULT_MAX_STEPS, model_name="dis",
                       warmup=True):
  """Writes `model` as version `version` under the base path `export_dir`.

  The SavedModel goes to a temporary directory inside `export_dir` (not an
  integer name, so TF Serving ignores it) and is renamed into place.

  Args:
    model: a `DISModel`.
    export_dir: TF Serving model base path.
    t_test: latent steps of the fixed-step signatures.
    input_size: network input size S.
    step_size: latent step size; None uses the model's.
    version: integer version; None takes the next free one.
    class_names: C class names; None derives them from the model.
    max_steps: largest per-request `steps` of `serving_steps`.
    model_name: model name written into the warmup requests.
    warmup: write `assets.extra/tf_serving_warmup_requests`.

  Returns:
    The path of the written version directory.

  Raises:
    ValueError: for a bad --version, or if that version already exists.
  """
  os.makedirs(export_dir, exist_ok=True)
  if version is None:
    version = next_version(export_dir)
  if int(version) < 0:
    raise ValueError(f"--version must be >= 0, got {version}.")
  target = os.path.join(export_dir, str(int(version)))
  if os.path.exists(target):
    raise ValueError(f"--version={version}: {target} already exists; "
                     "pick another version or omit --version.")
  module = build_serving_module(model, t_test, input_size, step_size,
                                class_names, max_steps)
  tmp = os.path.join(export_dir, f".tmp-{int(version)}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    tf.saved_model.save(module, tmp, signatures=module.signatures())
    if warmup:
      write_warmup(os.path.join(tmp, "assets.extra", WARMUP_FILENAME),
                   warmup_requests(input_size, t_test, model_name))
    os.rename(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return target


def export_from_model_dir(model_dir, export_dir, t_test=None,
                          latent_step=None, input_size=None, version=None,
                          model_name="dis"):
  """Loads a training run and exports it (what `main` does).

  Args:
    model_dir: a dis_tf training directory (config.json + model.keras).
    export_dir: TF Serving model base path.
    t_test: latent steps; None takes `config.latent.t_test`.
    latent_step: latent step size; None takes `config.latent.step_size`.
    input_size: network input size; None takes `config.data.crop_size`.
    version: integer version; None takes the next free one.
    model_name: model name written into the warmup requests.

  Returns:
    The path of the written version directory.
  """
  config, model = model_dir_lib.load(model_dir)
  return export_saved_model(
      model, export_dir,
      t_test=config.latent.t_test if t_test is None else t_test,
      input_size=config.data.crop_size if input_size is None else input_size,
      step_size=config.latent.step_size if latent_step is None else latent_step,
      version=version, model_name=model_name)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  path = export_from_model_dir(
      f.model_dir, f.export_dir, t_test=f.t_test, latent_step=f.latent_step,
      input_size=f.input_size, version=f.version, model_name=f.model_name)
  print(f"Exported SavedModel to {path}")


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("model_dir", None, "dis_tf training directory.")
  flags.DEFINE_string("export_dir", None,
                      "TF Serving model base path; the version is written to "
                      "an integer sub-directory.")
  flags.DEFINE_integer("version", None,
                       "Version sub-directory (default: next free number).")
  flags.DEFINE_integer("t_test", None,
                       "Latent steps at serving (default: config t_test, "
                       "the paper's 30).")
  flags.DEFINE_float("latent_step", None,
                     "Latent step size (default: config latent.step_size).")
  flags.DEFINE_integer("input_size", None,
                       "Network input size S; images are resized to S x S "
                       "(default: config data.crop_size).")
  flags.DEFINE_string("model_name", "dis",
                      "Model name used in the warmup requests.")
  flags.mark_flags_as_required(["model_dir", "export_dir"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
