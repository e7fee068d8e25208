"""The three DIS losses (paper Sec. 3): L^map, L^img and L^tag.

Written with `tf.nn` ops rather than `keras.losses` objects because each one
needs something the Keras classes do not give together: per-pixel ignore
masks combined with soft pseudo-label targets (L^map), per-example sums for
the latent problem (all three), and a background channel that is excluded
(L^tag).
"""

import tensorflow as tf

from dis_tf.classes import IGNORE_LABEL


def upsample_logits(logits, size):
  """Bilinearly resizes [B, h, w, C] logits to `size` (Model Garden style)."""
  return tf.image.resize(logits, size, method=tf.image.ResizeMethod.BILINEAR)


def map_loss(logits, labels, soft_labels=None, ignore_label=IGNORE_LABEL,
             num_pixels=None):
  """Softmax cross-entropy of the labelmap with an ignore label.

  Logits are upsampled to the label resolution, and the loss is averaged
  over all non-ignored pixels of the batch (or divided by `num_pixels`).

  Args:
    logits: [B, h, w, C] labelmap logits u3.
    labels: [B, H, W] int class ids; `ignore_label` pixels do not count.
    soft_labels: optional [B, H, W, C] target distributions; where given
      they replace the one-hot of `labels` (pixels of `labels` equal to
      `ignore_label` still do not count).
    ignore_label: the ignored id (255).
    num_pixels: optional scalar divisor instead of this batch's number of
      non-ignored pixels (a replica of a distributed step divides by the
      global batch's mean count per replica: `num_valid_pixels`).

  Returns:
    Scalar float32 loss (0 when every pixel is ignored).
  """
  labels = tf.cast(labels, tf.int32)
  logits = upsample_logits(logits, tf.shape(labels)[1:3])
  valid = tf.not_equal(labels, ignore_label)
  safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
  if soft_labels is None:
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=logits
    )
  else:
    per_pixel = tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.stop_gradient(soft_labels), logits=logits
    )
  weights = tf.cast(valid, per_pixel.dtype)
  if num_pixels is None:
    num_pixels = tf.reduce_sum(weights)
  return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weights),
                               tf.cast(num_pixels, per_pixel.dtype))


def num_valid_pixels(labels, ignore_label=IGNORE_LABEL):
  """Number of non-ignored pixels of `labels` (float32 scalar)."""
  return tf.reduce_sum(
      tf.cast(tf.not_equal(tf.cast(labels, tf.int32), ignore_label),
              tf.float32))


def image_loss_per_example(reconstruction, target):
  """Euclidean loss between z3 and the image target, per example.

  Args:
    reconstruction: [B, h, w, 3] z3.
    target: [B, h, w, 3] the normalised image resized (area) to (h, w).

  Returns:
    [B] mean squared error of each example.
  """
  return tf.reduce_mean(
      tf.math.squared_difference(reconstruction, target), axis=[1, 2, 3]
  )


def image_loss(reconstruction, target):
  """Batch mean of `image_loss_per_example` (scalar)."""
  return tf.reduce_mean(image_loss_per_example(reconstruction, target))


def tag_loss_per_example(tag_logits, tags):
  """Multi-label sigmoid cross-entropy over the object classes, per example.

  The paper calls L^tag a "softmax loss"; an image carries several tags at
  once, so each object class is an independent binary decision (sigmoid).
  Background (index 0) is present in every image and carries no
  information, so it is excluded.

  Args:
    tag_logits: [B, C] v3.
    tags: [B, C] multi-hot (or soft) targets, index 0 = background.

  Returns:
    [B] mean binary cross-entropy over the C - 1 object classes.
  """
  per_class = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.cast(tags[:, 1:], tag_logits.dtype), logits=tag_logits[:, 1:]
  )
  return tf.reduce_mean(per_class, axis=-1)


def tag_loss(tag_logits, tags):
  """Batch mean of `tag_loss_per_example` (scalar)."""
  return tf.reduce_mean(tag_loss_per_example(tag_logits, tags))
