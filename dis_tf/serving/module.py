"""The serving computation and the exported `tf.Module` with its signatures.

The serving graph holds the paper's test-time inference (Sec. 2.1,
"Inference in Test") through `DISModel.infer`: the backbone once, `t_test`
gradient steps on the latent features (u1, v1), then the tag-refined
labelmap, upsampled to each image's original size in bands.

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
  probabilities      float32 [B, h, w, C]: the final class probabilities (the
                     export's tag refinement, off by default) of the canvas
                     at feature resolution (h = w = ceil(input_size / 8))
  tag_probabilities  float32 [B, C]: sigmoid(v3), background fixed at 1
  class_names        string [B, C]: the class names (repeated per example so
                     that REST row-format responses stay batch-aligned)
  quality            float32 [B]: how far to trust each labelmap, in [0, 1]
                     (higher: more trustworthy; `dis_tf.quality`: the
                     fitted probability that the image's IoU is above the
                     selection split's median, or, for a model never
                     selected, its mean max-softmax probability)

Every image is fitted into an input_size x input_size canvas (long side
resized, aspect kept, padded with the mean colour:
`dis_tf.image_ops.fit_to_canvas`, the rule evaluation and the t_test /
refinement selection use), and the prediction is mapped back to the image.

Outputs of `metadata`: class_names string [C], class_colors uint8 [C, 3]
(the labelmap colours of the run's class set), t_test int32 [],
input_size int32 [2], resize_rule string [] (`image_ops.RESIZE_RULE`),
tag_refinement string [] ("off", "paper" or "bias=b": the final
prediction, chosen on the selection split like t_test),
latent_step_size float32 [], quality_score string [] (what `quality`
is: `dis_tf.quality.describe`), latent_update string [] (which latent
blocks the steps move: "u1", "both", "per_pixel" or "v1", chosen on the
selection split like t_test), precision string [] (the backbone's
dtype policy in the graph: "float32", "mixed_bfloat16" or
"mixed_float16"; `--model.precision`), and the request bounds
of the export (`dis_tf.config.ServingConfig`, flags `--serving.*`):
max_batch_size, max_image_pixels, max_batch_pixels, max_steps and
max_batch_steps (int64 []). A request over a bound gets InvalidArgument
naming it (see `dis_tf.serving.inputs`).

Size: about 450 lines because the four signatures and the metadata share
one traced computation and its bounds; apart, each would rebuild them.
"""

import dataclasses
import functools

import numpy as np

import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import image_ops
from dis_tf import quality as quality_lib
from dis_tf.classes import IGNORE_LABEL, VOC_CLASSES, voc_palette
from dis_tf.modeling import gram as gram_lib
from dis_tf.modeling import subnets
from dis_tf.serving import inputs

# Upper bound of the per-request `steps` input of `serving_steps`: one bad
# request must not occupy a server thread for hours.
DEFAULT_MAX_STEPS = config_lib.ServingConfig().max_steps
BOUNDS = tuple(f.name for f in dataclasses.fields(config_lib.ServingConfig))
SIGNATURES = ("serving_default", "serving_steps", "predict_images",
              "predict_images_float", "metadata")
PREDICTION_OUTPUTS = ("class_ids", "height", "width", "probabilities",
                      "tag_probabilities", "class_names", "quality")
# Rows of the original-size labelmap computed at once (upsample + argmax):
# bounds that buffer to _ARGMAX_BAND_ROWS x width x C float32.
_ARGMAX_BAND_ROWS = 64


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
                       latent_step_size=None, gram_fields=None,
                       fitted_sizes=None, quality=None):
  """The serving computation on a batch of normalised canvases.

  Every signature, and `predict_in_process`, ends here: `model.infer` runs
  the backbone once and `steps` latent steps, and the model's final
  prediction (its `tag_refinement`) is mapped from the canvas to each
  image's original size (`dis_tf.image_ops.canvas_to_original_matrices`,
  the mapping evaluation uses) before the argmax.

  Args:
    model: a `DISModel`.
    images: [B, S, S, 3] float32 canvases (`dis_tf.image_ops.fit_to_canvas`).
    steps: latent steps: an int, a scalar int32 tensor, or a [B] int32
      tensor (per-example counts).
    original_sizes: [B, 2] int32 (height, width) of the original images.
    class_names: sequence of C class names.
    latent_step_size: latent step size; None uses the model's.
    gram_fields: the Gram kernels of the model's weights, built once (see
      `DISServingModule`); None builds them per call.
    fitted_sizes: [B, 2] int32 (height, width) of each image inside its
      canvas; None: the whole canvas.
    quality: the `dis_tf.quality.QualityFit` of the `quality` output; None:
      the mean max-softmax probability.

  Returns:
    Dict of the outputs listed in the module docstring.
  """
  result = model.infer(images, steps, step_size=latent_step_size,
                       gram_fields=gram_fields, return_features=True)
  probabilities = result["probabilities"]
  tag_probabilities = result["tag_probabilities"]
  original_sizes = tf.cast(original_sizes, tf.int32)
  batch = tf.shape(images)[0]
  canvas = tf.shape(images)[1:3]
  if fitted_sizes is None:
    fitted_sizes = tf.tile(canvas[None], [batch, 1])
  names = tf.constant(list(class_names), tf.string)
  fitted_sizes = tf.cast(fitted_sizes, tf.int32)
  return {
      "class_ids": _class_ids_at_sizes(
          probabilities, original_sizes, fitted_sizes, int(images.shape[1])),
      "height": original_sizes[:, 0],
      "width": original_sizes[:, 1],
      "probabilities": probabilities,
      "tag_probabilities": tag_probabilities,
      "class_names": tf.tile(names[None, :], [batch, 1]),
      "quality": quality_lib.served_score(
          model, result, result["image_target"], fitted_sizes,
          int(images.shape[1]), quality),
  }


def _upsampled_argmax(probs, size, fitted, canvas_size,
                      band_rows=_ARGMAX_BAND_ROWS):
  """argmax over C of canvas `probs` [h, w, C] mapped to the original `size`.

  The weights of `dis_tf.image_ops.canvas_to_original` (bilinear is
  separable: rows, then columns), but the [H, W, C] float32 map is never
  materialised (3 GB for a 6000 x 6000 image and 21 classes): the columns
  are mapped once ([h, W, C]), then the rows in bands of `band_rows`.
  """
  ry, rx = image_ops.canvas_to_original_matrices(
      tf.shape(probs)[:2], fitted, size, canvas_size)  # [H, h], [W, w]
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


def _class_ids_at_sizes(probabilities, sizes, fitted_sizes, canvas_size):
  """Per-example canvas -> original size + argmax, padded with 255."""
  max_size = tf.reduce_max(sizes, axis=0)

  def one(args):
    probs, size, fitted = args
    ids = _upsampled_argmax(probs, size, fitted, canvas_size)
    padding = tf.stack([[0, max_size[0] - size[0]],
                        [0, max_size[1] - size[1]]])
    return tf.pad(ids, padding, constant_values=IGNORE_LABEL)

  return tf.map_fn(one, (probabilities, sizes, fitted_sizes),
                   fn_output_signature=tf.TensorSpec([None, None], tf.int32),
                   parallel_iterations=1)


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
    model: a `DISModel` (TensorFlow backend); the module runs its
      `for_inference` copy (batch norm folded), and saves that copy's
      variables.
    t_test: latent steps of the fixed-step signatures.
    input_size: the canvas side S (`dis_tf.image_ops.fit_to_canvas`);
      None: the model's `eval_crop_size`, the size it was evaluated and
      its setting selected at.
    latent_step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from `model.num_classes`.
    bounds: the request bounds, a `dis_tf.config.ServingConfig` (None: the
      defaults).
    class_colors: C (r, g, b) class colours, in `metadata` (None: the VOC
      palette's first C).
    quality: the `dis_tf.quality.QualityFit` of the `quality` output (None:
      the mean max-softmax probability).
  """

  def __init__(self, model, t_test, input_size, latent_step_size=None,
               class_names=None, bounds=None, class_colors=None,
               quality=None):
    super().__init__(name="dis_serving")
    if t_test < 0:
      raise errors.UserError(f"--t_test must be >= 0, got {t_test}.")
    if input_size is None:
      input_size = model.eval_crop_size
    if input_size < 8:
      raise errors.UserError(f"--input_size must be >= 8, got {input_size}.")
    if latent_step_size is not None and not latent_step_size > 0:
      raise errors.UserError(f"--latent.step_size must be > 0, got "
                             f"{latent_step_size}.")
    bounds = check_bounds(bounds)
    if class_names is None:
      class_names = class_names_for(model.num_classes)
    class_names = tuple(class_names)
    if len(class_names) != model.num_classes:
      raise ValueError(f"{len(class_names)} class names for a model with "
                       f"{model.num_classes} classes.")
    if class_colors is None:
      class_colors = voc_palette()[:len(class_names)]
    class_colors = np.asarray(class_colors, np.uint8).reshape(-1, 3)
    if len(class_colors) != len(class_names):
      raise ValueError(f"{len(class_colors)} class colours for "
                       f"{len(class_names)} classes.")
    self._class_colors = class_colors
    # The batch norms folded into the convolutions: fewer ops, and under
    # mixed_bfloat16 none of Keras's float32 batch-norm casts (measured in
    # `dis_tf.modeling.batchnorm_folding`).
    model = model.for_inference()
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
    self._latent_step_size = float(model.latent_step_size
                                   if latent_step_size is None
                                   else latent_step_size)
    self._class_names = class_names
    self._bounds = bounds
    self._quality = quality

    predict = functools.partial(predict_normalized, model,
                                class_names=class_names,
                                latent_step_size=self._latent_step_size,
                                gram_fields=gram_fields, quality=quality)
    size = self._input_size
    t_test = self._t_test
    precision = model.precision

    def serving_default(image_bytes):
      images, sizes, fitted = inputs.decode_images(image_bytes, size, bounds)
      return predict(images, t_test, sizes, fitted_sizes=fitted)

    def serving_steps(image_bytes, steps):
      steps = inputs.check_steps(steps, bounds, tf.size(image_bytes))
      # The steps bounds are checked before anything is decoded.
      with tf.control_dependencies([steps]):
        image_bytes = tf.identity(image_bytes)
      images, sizes, fitted = inputs.decode_images(image_bytes, size, bounds)
      return predict(images, steps, sizes, fitted_sizes=fitted)

    def predict_images(images):
      images, sizes, fitted = inputs.prepare_image_tensor(images, size,
                                                          bounds)
      return predict(images, t_test, sizes, fitted_sizes=fitted)

    def metadata():
      return {
          "class_names": tf.constant(list(class_names), tf.string),
          "class_colors": tf.constant(class_colors, tf.uint8),
          "t_test": tf.constant(t_test, tf.int32),
          "input_size": tf.constant([size, size], tf.int32),
          "resize_rule": tf.constant(image_ops.RESIZE_RULE),
          "tag_refinement": tf.constant(
              subnets.refinement_name(model.tag_refinement)),
          "latent_step_size": tf.constant(self._latent_step_size,
                                          tf.float32),
          "latent_update": tf.constant(model.latent_update),
          "quality_score": tf.constant(quality_lib.describe(quality)),
          "precision": tf.constant(precision),
          **{name: tf.constant(getattr(bounds, name), tf.int64)
             for name in BOUNDS},
      }

    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    # autograph=False: the graph code uses tf.cond / tf.while_loop where it
    # branches on tensors, so autograph's source rewriting only cost time
    # (about 6 of an export's 16 s, tiny model).
    self.serving_default = tf.function(
        serving_default, input_signature=[bytes_spec], autograph=False)
    self.serving_steps = tf.function(
        serving_steps,
        input_signature=[bytes_spec,
                         tf.TensorSpec([None], tf.int32, name="steps")],
        autograph=False)
    self.predict_images = tf.function(
        predict_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                       name="images")],
        autograph=False)
    self.predict_images_float = tf.function(
        predict_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                       name="images")],
        autograph=False)
    self.metadata = tf.function(metadata, input_signature=[],
                                autograph=False)

  @property
  def t_test(self):
    return self._t_test

  @property
  def input_size(self):
    return self._input_size

  @property
  def class_names(self):
    return self._class_names

  @property
  def class_colors(self):
    """uint8 [C, 3] class colours."""
    return self._class_colors

  @property
  def bounds(self):
    return self._bounds

  @property
  def quality(self):
    """The `dis_tf.quality.QualityFit` of the `quality` output, or None."""
    return self._quality

  def signatures(self):
    """{signature name: concrete function} for `tf.saved_model.save`."""
    return {name: getattr(self, name).get_concrete_function()
            for name in SIGNATURES}


def check_bounds(bounds):
  """`bounds` (None: the defaults) after checking that each bound is >= 1.

  Args:
    bounds: a `dis_tf.config.ServingConfig` or None.

  Returns:
    A `ServingConfig`.

  Raises:
    ValueError: naming the flag of a bound below 1.
  """
  bounds = config_lib.ServingConfig() if bounds is None else bounds
  for name in BOUNDS:
    value = getattr(bounds, name)
    if not isinstance(value, int) or value < 1:
      raise errors.UserError(f"--serving.{name} must be an integer >= 1, "
                             f"got {value!r}.")
  return bounds


def build_serving_module(model, t_test, input_size, latent_step_size=None,
                         class_names=None, bounds=None, class_colors=None,
                         quality=None):
  """Builds the `DISServingModule` that `export_saved_model` writes.

  Args:
    model: a `DISModel`.
    t_test: latent steps of the fixed-step signatures (paper: 30).
    input_size: the canvas side S; None: the model's `eval_crop_size`.
    latent_step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from the model.
    bounds: the request bounds (`dis_tf.config.ServingConfig`; None: the
      defaults).
    class_colors: C (r, g, b) class colours (None: VOC's).
    quality: the `dis_tf.quality.QualityFit` of the `quality` output.

  Returns:
    A `DISServingModule`.
  """
  return DISServingModule(model, t_test, input_size,
                          latent_step_size=latent_step_size,
                          class_names=class_names, bounds=bounds,
                          class_colors=class_colors, quality=quality)


def predict_in_process(model, images, t_test, input_size,
                       latent_step_size=None, class_names=None, module=None):
  """Runs the exported serving computation in this process.

  Same code path as the SavedModel: the call goes through the serving
  module's `tf.function`s.

  Args:
    model: a `DISModel`.
    images: a list / 1-D array of encoded image bytes (the
      `serving_default` path), or a [B, H, W, 3] uint8 or float (0..255)
      image batch (the `predict_images` / `predict_images_float` path).
    t_test: latent steps.
    input_size: the canvas side S; None: the model's `eval_crop_size`.
    latent_step_size: latent step size; None uses the model's.
    class_names: C class names; None derives them from the model.
    module: optional prebuilt `DISServingModule` (saves retracing); its
      own `input_size` and `latent_step_size` apply then.

  Returns:
    Dict of NumPy arrays, the outputs of the prediction signatures.
  """
  if module is None:
    module = build_serving_module(model, t_test, input_size,
                                  latent_step_size=latent_step_size,
                                  class_names=class_names)
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
