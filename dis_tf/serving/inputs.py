"""Serving inputs: decoding and checking the images a request sends.

Every request is checked against the export's bounds
(`dis_tf.config.ServingConfig`, the `--serving.*` flags of the export)
before any image is decoded or any output allocated:

* the batch size (`max_batch_size`);
* each image's height x width, read from its file header
  (`max_image_pixels`), so a small compressed "decompression bomb" is
  refused before decoding;
* the batch x largest height x largest width over the request
  (`max_batch_pixels`): `class_ids` is padded to the batch's largest image,
  so one large image plus many 1x1 images would otherwise ask for a huge
  output;
* `serving_steps`: each `steps` value (`max_steps`) and batch x max(steps)
  (`max_batch_steps`).

Encoded images must start with a JPEG, PNG, GIF or BMP signature. GIFs must
have exactly one frame that lies inside the logical screen: TF's GIF decoder
reads every frame (one byte per pixel each) even when it returns only the
first, so a GIF of a few hundred KB with many frames takes hundreds of MB.
Image tensors (`predict_images*`) get the same bounds, and float images
must be finite and in [0, 255]. Errors are `InvalidArgumentError`s that
name the input, the element and the bound (its flag). Every function here
is plain TensorFlow, traced into the exported graph.
"""

import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops

# Magic numbers of the formats `tf.io.decode_image` reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")
# Largest image (height x width) a request may send by default: see
# `ServingConfig.max_image_pixels`.
DEFAULT_MAX_PIXELS = config_lib.ServingConfig().max_image_pixels

# What `_gif_problem` finds (0: none).
_GIF_ANIMATED, _GIF_FRAME_OUTSIDE, _GIF_TOO_MANY_BLOCKS = 1, 2, 3
# Blocks (extensions, frames) a GIF may have before its end: a single-frame
# GIF has a few (application, graphic control, comment extensions).
_GIF_MAX_BLOCKS = 64


def _flag(name):
  return f"--serving.{name}"


def _gif_problem(data, height, width):
  """Walks a GIF's blocks: 1 if it has 2+ frames, 2 if a frame lies outside
  the (height, width) logical screen, 3 if it has more than
  `_GIF_MAX_BLOCKS` blocks before its end or second frame, else 0.

  The data sub-block chains are skipped without a loop over them: every
  byte position is linked to where the chain starting there would go next
  (`p + length + 1`, or itself at a 0 terminator), and the links are
  composed with themselves (pointer doubling) until they reach the
  terminators, in log2(length) vectorised gathers. This costs about 20
  bytes of transient memory per GIF byte (the request's own size, not its
  pixel count). The walk over blocks then takes one step per block.
  """
  raw = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
  n = tf.size(raw)
  position = tf.range(n)
  link = tf.concat([tf.where(raw == 0, position,
                             tf.minimum(position + raw + 1, n)), [n]], 0)

  def double(link, _):
    jumped = tf.gather(link, link)
    return jumped, tf.reduce_any(jumped != link)

  # terminator[p]: the 0 byte ending the sub-block chain that starts at p
  # (n if it runs off the end).
  terminator, _ = tf.while_loop(lambda _, changed: changed, double,
                                (link, tf.constant(True)),
                                maximum_iterations=32)
  offsets = tf.range(10)

  def window(pos):
    index = pos + offsets
    values = tf.gather(raw, tf.clip_by_value(index, 0, n - 1))
    return tf.where(index < n, values, 0)

  def table_size(flags):  # Bytes of a global / local colour table.
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) != 0,
                    3 * tf.bitwise.left_shift(
                        1, tf.bitwise.bitwise_and(flags, 7) + 1), 0)

  def body(i, pos, frames, outside, done):
    del done
    w = window(pos)
    # A block: 0x2C image descriptor or 0x21 extension, each followed by
    # a data sub-block chain; anything else ends the walk (0x3B trailer,
    # or garbage the decoder will report).
    image, extension = w[0] == 0x2C, w[0] == 0x21
    left, top = w[1] + 256 * w[2], w[3] + 256 * w[4]
    frame_w, frame_h = w[5] + 256 * w[6], w[7] + 256 * w[8]
    chain = tf.where(image, pos + 11 + table_size(w[9]), pos + 2)
    next_pos = tf.gather(terminator, tf.clip_by_value(chain, 0, n)) + 1
    frames += tf.cast(image, tf.int32)
    outside = tf.logical_or(outside, tf.logical_and(image, tf.logical_or(
        left + frame_w > width, top + frame_h > height)))
    done = tf.reduce_any(tf.stack([
        tf.logical_not(tf.logical_or(image, extension)), next_pos > n,
        frames >= 2, outside]))
    return i + 1, next_pos, frames, outside, done

  width, height = tf.cast(width, tf.int32), tf.cast(height, tf.int32)
  start = 13 + table_size(window(tf.constant(10))[0])
  _, _, frames, outside, done = tf.while_loop(
      lambda i, *state: tf.logical_and(i < _GIF_MAX_BLOCKS,
                                       tf.logical_not(state[-1])),
      body, (0, start, 0, tf.constant(False), tf.constant(False)))
  return tf.case([
      (frames >= 2, lambda: tf.constant(_GIF_ANIMATED, tf.int64)),
      (outside, lambda: tf.constant(_GIF_FRAME_OUTSIDE, tf.int64)),
      (tf.logical_not(done), lambda: tf.constant(_GIF_TOO_MANY_BLOCKS,
                                                 tf.int64)),
  ], default=lambda: tf.constant(0, tf.int64))


def _header_size(data):
  """(height, width, GIF problem) from a JPEG / PNG / GIF / BMP header.

  Nothing is decoded. Height and width are -1 when the header is too short
  to hold the size (the decoder then reports the truncated file). The GIF
  problem (see `_gif_problem`) is 0 for the other formats.
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
  no_problem = tf.constant(0, tf.int64)

  def png():
    return tf.stack([big_endian(u8(20, 4)), big_endian(u8(16, 4)),
                     no_problem])

  def gif():
    height, width = little16(u8(8, 2)), little16(u8(6, 2))
    return tf.stack([height, width, _gif_problem(data, height, width)])

  def bmp():
    return tf.stack([little32_abs(u8(22, 4)), little32_abs(u8(18, 4)),
                     no_problem])

  def jpeg():
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return tf.concat([shape[:2], [no_problem]], 0)

  unknown = lambda: tf.constant([-1, -1, 0], tf.int64)
  return tf.case([
      (tf.equal(head, b"\x89P"), lambda: tf.cond(length >= 24, png, unknown)),
      (tf.equal(head, b"GI"), lambda: tf.cond(length >= 13, gif, unknown)),
      (tf.equal(head, b"BM"), lambda: tf.cond(length >= 26, bmp, unknown)),
      (tf.equal(head, b"\xff\xd8"), jpeg),
  ], default=unknown, exclusive=True)


def _after(checks, tensor):
  """`tensor`, computed only after the assertion ops `checks` pass."""
  with tf.control_dependencies(checks):
    return tf.identity(tensor)


def _batch_checks(name, batch, height, width, bounds, what):
  """Batch-size and padded-output checks (InvalidArgument naming `name`)."""
  batch = tf.cast(batch, tf.int64)
  size_check = tf.debugging.Assert(batch <= bounds.max_batch_size, [
      f"Input {name} has", batch, f"{what}; the limit",
      _flag("max_batch_size"), "of this export is", bounds.max_batch_size])
  pixels = batch * height * width
  with tf.control_dependencies([size_check]):
    pixel_check = tf.debugging.Assert(pixels <= bounds.max_batch_pixels, [
        f"Input {name} asks for", batch, "x", height, "x", width, "=",
        pixels, "output pixels (batch x largest height x largest width: "
        "class_ids is padded to the largest image); the limit",
        _flag("max_batch_pixels"), "of this export is",
        bounds.max_batch_pixels], summarize=8)
  return [size_check, pixel_check]


def _bounds(bounds):
  return config_lib.ServingConfig() if bounds is None else bounds


def decode_images(image_bytes, input_size, bounds=None):
  """Checks a batch of encoded images against `bounds`, then decodes them.

  All checks come first: the batch size, then every element's signature,
  header size and (GIF) frames, then the padded output size; only then is
  anything decoded, one image at a time.

  Args:
    image_bytes: [B] string tensor of JPEG / PNG / GIF / BMP files (RGB,
      grayscale or RGBA; GIFs must have a single frame).
    input_size: the canvas side S (`dis_tf.image_ops.fit_to_canvas`: long
      side resized to S, aspect kept, padded to S x S).
    bounds: a `dis_tf.config.ServingConfig` (None: the defaults).

  Returns:
    (images [B, S, S, 3] float32 normalised, sizes [B, 2] int32 original
    (height, width), fitted [B, 2] int32 (height, width) inside the
    canvas).

  Raises:
    tf.errors.InvalidArgumentError (when run): naming `image_bytes`, the
    index of a bad element and the bound a request exceeds.
  """
  bounds = _bounds(bounds)
  image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
  batch = tf.size(image_bytes)
  # An empty batch would reach the network as a [0, S, S, 3] tensor, which
  # the CPU convolution kernels reject with an unrelated message.
  not_empty = tf.debugging.Assert(batch > 0, [
      "Input image_bytes is an empty batch; send at least one image."])
  size_check = tf.debugging.Assert(
      tf.cast(batch, tf.int64) <= bounds.max_batch_size, [
          "Input image_bytes has", batch, "images; the limit",
          _flag("max_batch_size"), "of this export is",
          bounds.max_batch_size])
  image_bytes = _after([not_empty, size_check], image_bytes)
  indices = tf.range(tf.shape(image_bytes)[0])

  def header(args):
    index, data = args
    # Checked up front so that a bad element fails with the input's name
    # and index rather than DecodeImage's generic message.
    known = tf.reduce_any(tf.stack(
        [tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in _MAGIC]))
    check = tf.debugging.Assert(known, [
        "Input image_bytes element", index,
        "is not a JPEG, PNG, GIF or BMP image."])
    with tf.control_dependencies([check]):
      size = _header_size(data)
    small = tf.logical_and(
        tf.reduce_all(size[:2] >= 0),
        size[0] * size[1] <= bounds.max_image_pixels)
    size_check = tf.debugging.Assert(small, [
        "Input image_bytes element", index, "is", size[1], "x", size[0],
        "pixels (width x height, from its header); the limit is",
        bounds.max_image_pixels, f"pixels ({_flag('max_image_pixels')}), "
        "or the header is truncated."], summarize=4)
    problem = size[2]
    gif_checks = [tf.debugging.Assert(tf.not_equal(problem, code), [
        "Input image_bytes element", index, message])
                  for code, message in (
                      (_GIF_ANIMATED, "is an animated GIF (2 or more "
                       "frames); send a single-frame image."),
                      (_GIF_FRAME_OUTSIDE, "is a GIF with a frame outside "
                       "its logical screen."),
                      (_GIF_TOO_MANY_BLOCKS, "is a GIF with more than "
                       f"{_GIF_MAX_BLOCKS} blocks (extensions); re-encode "
                       "it."))]
    return _after([size_check] + gif_checks, size[:2])

  sizes = tf.map_fn(header, (indices, image_bytes),
                    fn_output_signature=tf.TensorSpec([2], tf.int64),
                    parallel_iterations=1)
  largest = tf.reduce_max(sizes, axis=0)
  checks = _batch_checks("image_bytes", batch, largest[0], largest[1],
                         bounds, "images")

  def one(data):
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    size = tf.shape(image)[:2]
    canvas, fitted = image_ops.fit_to_canvas(image[None], input_size)
    return canvas[0], size, fitted

  return tf.map_fn(
      one, _after(checks, image_bytes),
      fn_output_signature=(
          tf.TensorSpec([input_size, input_size, 3], tf.float32),
          tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32)),
      parallel_iterations=1)


def prepare_image_tensor(images, input_size, bounds=None):
  """Checks an image tensor batch against `bounds`, resizes and normalises.

  Args:
    images: [B, H, W, 3] uint8 or float tensor (float: values in 0..255).
    input_size: the canvas side S (`dis_tf.image_ops.fit_to_canvas`).
    bounds: a `dis_tf.config.ServingConfig` (None: the defaults).

  Returns:
    (images [B, S, S, 3] float32 normalised, sizes [B, 2] int32: (H, W) for
    every example, fitted [B, 2] int32: the size inside the canvas).

  Raises:
    tf.errors.InvalidArgumentError (when run): an empty batch, a bound
    exceeded, or (float) a NaN / Inf or a value outside [0, 255].
  """
  bounds = _bounds(bounds)
  images = tf.convert_to_tensor(images)
  not_empty = tf.debugging.Assert(tf.size(images) > 0, [
      "Input images is empty (no image, or a zero height / width); send at "
      "least one image of at least 1 x 1 pixels."])
  shape = tf.cast(tf.shape(images), tf.int64)
  image_check = tf.debugging.Assert(
      shape[1] * shape[2] <= bounds.max_image_pixels, [
          "Input images is", shape[2], "x", shape[1], "pixels (width x "
          "height); the limit", _flag("max_image_pixels"),
          "of this export is", bounds.max_image_pixels])
  checks = [not_empty, image_check] + _batch_checks(
      "images", shape[0], shape[1], shape[2], bounds, "images")
  images = _after(checks, images)
  if images.dtype.is_floating:
    # No full-size temporary: a NaN makes the sum NaN, an Inf the max.
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    valid = tf.reduce_all(tf.stack([
        tf.math.is_finite(tf.reduce_sum(images)), low >= 0, high <= 255]))
    images = _after([tf.debugging.Assert(valid, [
        "Input images must hold finite values in [0, 255]; got min", low,
        "max", high, "(NaN or Inf present if either is nan / inf, or if "
        "both are in range)."])], images)
  batch = tf.shape(images)[0]
  sizes = tf.tile(tf.cast(shape[None, 1:3], tf.int32), [batch, 1])
  canvas, fitted = image_ops.fit_to_canvas(images, input_size)
  return canvas, sizes, tf.tile(fitted[None], [batch, 1])


def check_steps(steps, bounds, batch_size):
  """Validates the per-example `steps` input (errors name the input).

  Args:
    steps: [B] int32 latent steps per image.
    bounds: a `dis_tf.config.ServingConfig` (None: the defaults).
    batch_size: B of the request's images.

  Returns:
    `steps`, after the checks: one value per image, each in
    [0, max_steps], and B x max(steps) <= max_batch_steps.
  """
  bounds = _bounds(bounds)
  steps = tf.convert_to_tensor(steps, tf.int32)
  size_check = tf.debugging.Assert(
      tf.equal(tf.size(steps), batch_size),
      ["Input steps must have one value per image_bytes element:", batch_size,
       "expected, got", tf.size(steps)])
  range_check = tf.debugging.Assert(
      tf.reduce_all(tf.logical_and(steps >= 0, steps <= bounds.max_steps)),
      ["Input steps must be in [0,", bounds.max_steps,
       f"] ({_flag('max_steps')}), got", steps])
  largest = tf.cast(tf.reduce_max(tf.concat([steps, [0]], 0)), tf.int64)
  work = tf.cast(batch_size, tf.int64) * largest
  work_check = tf.debugging.Assert(work <= bounds.max_batch_steps, [
      "Input steps: batch size x max(steps) =", batch_size, "x", largest,
      "=", work, "latent image-steps; the limit", _flag("max_batch_steps"),
      "of this export is", bounds.max_batch_steps])
  return _after([size_check, range_check, work_check], steps)
