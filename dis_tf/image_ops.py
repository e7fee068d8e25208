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
