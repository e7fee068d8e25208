"""Image normalisation and the feature-size image target, shared by the data
pipeline, the model and the exported serving graph (so all three agree)."""

import tensorflow as tf

# ImageNet RGB statistics on a [0, 1] scale. The network input, the image
# target of subnet-2 (paper Sec. 3, L^img) and the reconstruction z3 all live
# in this normalisation, so the Euclidean loss compares like with like.
MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
# The mean colour in uint8, used to pad images (DeepLab pads with the mean).
MEAN_RGB_UINT8 = tuple(round(255.0 * m) for m in MEAN_RGB)


def normalize_image(image):
  """Maps uint8-range RGB (0..255, any dtype) to the network normalisation.

  Args:
    image: [..., H, W, 3] tensor with values in 0..255.

  Returns:
    float32 tensor, (image / 255 - mean) / stddev.
  """
  image = tf.cast(image, tf.float32) / 255.0
  return (image - tf.constant(MEAN_RGB)) / tf.constant(STDDEV_RGB)


def denormalize_image(image):
  """Inverse of `normalize_image`; returns float32 values in 0..255."""
  image = tf.cast(image, tf.float32)
  return (image * tf.constant(STDDEV_RGB) + tf.constant(MEAN_RGB)) * 255.0


def feature_size(size, output_stride=8):
  """Spatial size of u1 for an input of `size` pixels (Python ints).

  Every backbone halves the resolution log2(output_stride) times with
  'same'-style padding, i.e. rounds up each time: 353 -> 177 -> 89 -> 45.

  Args:
    size: input height or width in pixels.
    output_stride: 8 for all dis_tf backbones.

  Returns:
    The feature-map height or width.
  """
  stride = 1
  while stride < output_stride:
    size = (size + 1) // 2
    stride *= 2
  return size


def image_target(image, size):
  """Downsamples a normalised image to the feature-map size (area filter).

  This is the target I of the image reconstruction loss L^img(z3, I).

  Args:
    image: [B, H, W, 3] or [H, W, 3] normalised float image.
    size: (height, width) of the feature map, ints or a 1-D int tensor.

  Returns:
    float32 tensor of shape [..., size[0], size[1], 3].
  """
  return tf.image.resize(
      tf.cast(image, tf.float32), size, method=tf.image.ResizeMethod.AREA
  )


# ------------------------------------------------------- the fit-to-canvas rule
# Every path from an image to a labelmap (evaluation, the t_test and
# refinement selection, the ablation, the export, `load_segmenter` and
# tools/predict.py) preprocesses with `fit_to_canvas` and maps the prediction
# back with `canvas_to_original_matrices`; tests/test_preprocessing.py checks
# that evaluation and the serving module compute the same labelmap.
RESIZE_RULE = ("fit: the long side resized to the canvas size (bilinear, "
               "aspect ratio kept), padded at the bottom / right with the "
               "mean colour to canvas x canvas; the prediction is cropped to "
               "the image and resized to its original size")


def fit_size(height, width, canvas_size):
  """The size of an image after `fit_to_canvas` (long side = canvas_size).

  Args:
    height: original height (int or int tensor).
    width: original width.
    canvas_size: the canvas side S (Python int).

  Returns:
    (fitted height, fitted width) as int32 tensors, each in [1, S].
  """
  height = tf.cast(height, tf.float64)
  width = tf.cast(width, tf.float64)
  scale = canvas_size / tf.maximum(height, width)
  fit = lambda x: tf.cast(tf.clip_by_value(tf.round(x * scale), 1.0,
                                           float(canvas_size)), tf.int32)
  return fit(height), fit(width)


def fit_to_canvas(images, canvas_size, normalized=False):
  """Resizes images with the long side to `canvas_size`, pads to a square.

  The aspect ratio is kept (DeepLab and Model Garden evaluation and export
  do the same): the image is resized so that its long side is S, then
  padded at the bottom and right to S x S with the mean colour, which is
  0 after normalisation, as the training crops are padded
  (`dis_tf.data.pipeline.pad_to_size`). A fixed canvas makes every image
  of a batch the same shape, so a served image's labelmap does not depend
  on the other images of its batch.

  Args:
    images: [B, H, W, 3] images with values in 0..255 (uint8 or float; the
      bilinear resize reads uint8 and writes float32, so no full-size float
      copy of a large image is made).
    canvas_size: the canvas side S.
    normalized: the images are already normalised (`normalize_image`);
      bilinear weights sum to 1, so resizing commutes with the
      normalisation and both orders give the same canvas.

  Returns:
    (canvas [B, S, S, 3] float32 normalised, fitted [2] int32: the height
    and width of the image inside the canvas).
  """
  shape = tf.shape(images)
  fitted = tf.stack(fit_size(shape[1], shape[2], canvas_size))
  resized = tf.image.resize(images, fitted,
                            method=tf.image.ResizeMethod.BILINEAR)
  if not normalized:
    resized = normalize_image(resized)
  canvas = tf.pad(resized, [[0, 0], [0, canvas_size - fitted[0]],
                            [0, canvas_size - fitted[1]], [0, 0]])
  canvas = tf.ensure_shape(canvas, [None, canvas_size, canvas_size, 3])
  return canvas, fitted


def _interpolation_matrix(in_size, out_size):
  """[out, in] weights of `tf.image.resize` bilinear along one axis."""
  eye = tf.eye(in_size)[None, :, :, None]
  return tf.image.resize(eye, tf.stack([out_size, in_size]),
                         method=tf.image.ResizeMethod.BILINEAR)[0, :, :, 0]


def canvas_to_original_matrices(feature_size_hw, fitted, original,
                                canvas_size):
  """Bilinear weights from the canvas's feature map to the original image.

  The prediction at feature resolution [h, w] is resized to the canvas
  (S x S), cropped to the fitted image and resized to the original size;
  all three are linear, so they compose into one [H, h] and one [W, w]
  matrix (`ry @ probs @ rx^T` per channel), and the original-size map can
  be computed in bands without the canvas-size intermediate.

  Args:
    feature_size_hw: (h, w) of the feature map.
    fitted: (height, width) of the image inside the canvas.
    original: (H, W) of the original image.
    canvas_size: the canvas side S.

  Returns:
    (ry [H, h], rx [W, w]) float32.
  """
  def axis(features, fit, out):
    to_canvas = _interpolation_matrix(features, canvas_size)[:fit]
    return tf.matmul(_interpolation_matrix(fit, out), to_canvas)
  return (axis(feature_size_hw[0], fitted[0], original[0]),
          axis(feature_size_hw[1], fitted[1], original[1]))


def canvas_to_original(probabilities, fitted, original, canvas_size):
  """[h, w, C] canvas feature-resolution map -> [H, W, C] original size.

  Args:
    probabilities: [h, w, C] map of the canvas.
    fitted: (height, width) of the image inside the canvas.
    original: (H, W).
    canvas_size: the canvas side S.

  Returns:
    [H, W, C] float32.
  """
  probabilities = tf.convert_to_tensor(probabilities, tf.float32)
  matrices = canvas_to_original_matrices(tf.shape(probabilities)[:2], fitted,
                                         original, canvas_size)
  return resize_by_matrices(probabilities, matrices)


def resize_by_matrices(probabilities, matrices):
  """[h, w, C] -> [H, W, C] by `canvas_to_original_matrices`'s (ry, rx).

  Several maps of one pass (each t_test and final prediction) share the
  matrices: evaluation computes them once per pass, since building them
  eagerly cost more than the latent loop (a profile of the demo's
  selection split: 6.1 of 16.8 s).

  Args:
    probabilities: [h, w, C] map of the canvas.
    matrices: (ry [H, h], rx [W, w]).

  Returns:
    [H, W, C] float32.
  """
  ry, rx = matrices
  probabilities = tf.convert_to_tensor(probabilities, tf.float32)
  return tf.einsum("yh,hxc->yxc", ry,
                   tf.einsum("xw,hwc->hxc", rx, probabilities))
