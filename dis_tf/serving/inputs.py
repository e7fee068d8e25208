"""Serving inputs: decoding and checking the images a request sends.

Encoded images (`serving_default`, `serving_steps`) are checked one at a
time before they are decoded: the first bytes must be a JPEG, PNG, GIF or
BMP signature, and the size read from the file header must be at most
`DEFAULT_MAX_PIXELS`, so a small compressed "decompression bomb" is refused
before decoding. Errors are `InvalidArgumentError`s that name the input and
the element. Image tensors (`predict_images*`) are resized and normalised
the same way. Every function here is plain TensorFlow, traced into the
exported graph.
"""

import tensorflow as tf

from dis_tf import image_ops

# Magic numbers of the formats `tf.io.decode_image` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")
# Largest image (height x width, read from the file header before decoding)
# a request may send: 6000 x 6000 fits. It bounds the memory one image can
# take (decoded uint8: 3 bytes/pixel; its int32 class_ids output: 4
# bytes/pixel), so a small compressed "decompression bomb" is refused
# before it is decoded.
DEFAULT_MAX_PIXELS = 40_000_000


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

  unknown = lambda: tf.constant([-1, -1], tf.int64)
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


def check_steps(steps, max_steps, batch_size):
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
