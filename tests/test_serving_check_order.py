"""The request checks of dis_tf/serving/inputs.py run before any decode or
resize: in the traced graph, every decode (and the image-tensor resize)
depends, through data or control edges, on every check.

Behaviour alone cannot show this: a check that is not an ancestor of the
decode still fails the request, but TensorFlow may run the decode first
(a 20000x20000 bomb is then decoded before it is refused), and which one
runs first depends on scheduling. The graph says it deterministically.
"""

import io
import struct

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf.serving import inputs

import gif_bytes  # tests/gif_bytes.py

DECODES = {"DecodeImage", "DecodeJpeg", "DecodePng", "DecodeGif",
           "DecodeBmp", "DecodeAndCropJpeg"}


def _ancestors(op):
  seen, todo = set(), [op]
  while todo:
    current = todo.pop()
    for parent in ([t.op for t in current.inputs]
                   + list(current.control_inputs)):
      if parent not in seen:
        seen.add(parent)
        todo.append(parent)
  return seen


def _called_graphs(graph, op):
  """The function graphs a While / If op calls (recursively)."""
  graphs = []
  for attr in ("body", "cond", "then_branch", "else_branch", "f"):
    try:
      name = op.get_attr(attr).name
    except (ValueError, AttributeError):
      continue
    function = graph._functions.get(name)  # pylint: disable=protected-access
    if function is None:
      continue
    graphs.append(function.graph)
    for inner in function.graph.get_operations():
      graphs += _called_graphs(function.graph, inner)
  return graphs


def _body_op_types(graph, op):
  """Op types inside the functions a While / If op calls (recursively)."""
  return {inner.type for g in _called_graphs(graph, op)
          for inner in g.get_operations()}


def _strings(ops):
  texts = []
  for op in ops:
    if op.type == "Const" and op.get_attr("dtype") == tf.string:
      texts += [v.decode() for v in
                tf.make_ndarray(op.get_attr("value")).reshape(-1)]
  return texts


def _asserts(graph):
  """The top-level check ops: `Assert`, or the `If` that guards one (graph
  mode `tf.debugging.Assert` wraps it in a cond unless its data are all
  strings or int32)."""
  return [op for op in graph.get_operations()
          if op.type == "Assert" or (op.type in ("If", "StatelessIf")
                                     and "Assert" in _body_op_types(graph, op))]


def _assert_text(graph, op):
  """The message strings of a check op (its own or its branches')."""
  ops = [t.op for t in op.inputs]
  for g in _called_graphs(graph, op):
    ops += g.get_operations()
  return " ".join(_strings(ops))


def test_decoding_waits_for_every_request_check():
  bounds = config_lib.ServingConfig()
  graph = tf.function(lambda b: inputs.decode_images(b, 32, bounds)) \
      .get_concrete_function(tf.TensorSpec([None], tf.string)).graph
  loops = [op for op in graph.get_operations()
           if op.type in ("While", "StatelessWhile")]
  decoding = [op for op in loops if _body_op_types(graph, op) & DECODES]
  assert len(decoding) == 1, [op.name for op in loops]
  (decode,) = decoding
  ancestors = _ancestors(decode)
  checks = _asserts(graph)
  texts = " | ".join(_assert_text(graph, op) for op in checks)
  # The batch-size, empty-batch and padded-output checks are top level;
  # the header loop holds the per-element checks.
  for bound in ("empty batch", "max_batch_size", "max_batch_pixels"):
    assert bound in texts, texts
  missing = [_assert_text(graph, op) for op in checks if op not in ancestors]
  assert missing == [], f"decoded without waiting for: {missing}"
  header = [op for op in loops if op is not decode]
  assert header and all(op in ancestors for op in header)
  # The header pass itself waits for the empty-batch and batch-size checks
  # (a 1000-image request is refused before 1000 headers are read).
  before_header = " | ".join(_assert_text(graph, op) for op in checks
                             if all(op in _ancestors(h) for h in header))
  for bound in ("empty batch", "max_batch_size"):
    assert bound in before_header, before_header


def test_image_tensors_are_resized_only_after_the_checks():
  bounds = config_lib.ServingConfig()
  for dtype in (tf.uint8, tf.float32):
    graph = tf.function(
        lambda x: inputs.prepare_image_tensor(x, 32, bounds)) \
        .get_concrete_function(tf.TensorSpec([None, None, None, 3],
                                             dtype)).graph
    resizes = [op for op in graph.get_operations()
               if op.type.startswith("Resize")
               or op.type == "ScaleAndTranslate"]
    assert resizes, [op.type for op in graph.get_operations()]
    checks = _asserts(graph)
    texts = " | ".join(_assert_text(graph, op) for op in checks)
    for bound in ("max_batch_size", "max_image_pixels", "max_batch_pixels"):
      assert bound in texts, texts
    if dtype == tf.float32:
      assert "finite values in [0, 255]" in texts
    for resize in resizes:
      ancestors = _ancestors(resize)
      missing = [_assert_text(graph, op) for op in checks
                 if op not in ancestors]
      assert missing == [], (dtype, resize.type, missing)


# ------------------------------------------------ each bound, run eagerly
SMALL = config_lib.ServingConfig(max_batch_size=2, max_image_pixels=5000,
                                 max_batch_pixels=8000, max_steps=40,
                                 max_batch_steps=50)


def _png(height, width):
  return tf.io.encode_png(tf.zeros([height, width, 3], tf.uint8)).numpy()


def _refused(call, *tokens):
  """`call()` raises InvalidArgument whose message holds `tokens` in order
  (eager and graph mode format the Assert data differently)."""
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    call()
  message, at = str(info.value), 0
  for token in tokens:
    at = message.find(token, at)
    assert at >= 0, (token, message)


@pytest.mark.parametrize("sizes,tokens", [
    ([(1, 1)] * 3, ("has", "3", "images; the limit",
                    "--serving.max_batch_size", "2")),
    ([(80, 80)], ("element", "0", "80", "x", "80", "5000",
                  "--serving.max_image_pixels")),
    ([(50, 90), (1, 1)], ("asks for", "2", "50", "90", "9000",
                          "--serving.max_batch_pixels", "8000")),
    ([], ("empty batch",)),
])
def test_each_bound_refuses_encoded_images(sizes, tokens):
  images = tf.constant([_png(h, w) for h, w in sizes], tf.string)
  _refused(lambda: inputs.decode_images(images, 32, SMALL), *tokens)


def test_encoded_images_within_the_bounds_decode():
  images, sizes, _ = inputs.decode_images(
      tf.constant([_png(50, 80), _png(1, 1)]), 32, SMALL)
  assert images.shape == (2, 32, 32, 3)
  assert sizes.numpy().tolist() == [[50, 80], [1, 1]]


@pytest.mark.parametrize("shape,dtype,value,token", [
    ((3, 1, 1, 3), tf.uint8, 0, "--serving.max_batch_size"),
    ((1, 80, 80, 3), tf.uint8, 0, "--serving.max_image_pixels"),
    ((2, 50, 90, 3), tf.float32, 0.0, "--serving.max_batch_pixels"),
    ((1, 4, 4, 3), tf.float32, float("nan"), "finite values in [0, 255]"),
    ((1, 4, 4, 3), tf.float32, 255.5, "finite values in [0, 255]"),
    ((0, 4, 4, 3), tf.uint8, 0, "Input images is empty"),
    ((1, 0, 4, 3), tf.float32, 0.0, "Input images is empty"),
])
def test_each_bound_refuses_image_tensors(shape, dtype, value, token):
  _refused(lambda: inputs.prepare_image_tensor(
      tf.fill(shape, tf.cast(value, dtype)), 32, SMALL), token)


@pytest.mark.parametrize("steps,tokens", [
    ([30, 1], ("2", "30", "60", "--serving.max_batch_steps", "50")),
    ([41], ("--serving.max_steps", "41")),
])
def test_each_steps_bound_refuses(steps, tokens):
  _refused(lambda: inputs.check_steps(tf.constant(steps, tf.int32), SMALL,
                                      len(steps)), *tokens)


# ------------------------------- the header pass: GIF walk, BMP, signatures
def _bmp(height, width, top_down=False, claim=None):
  """A 24-bit BMP (PIL); `top_down` negates the height, `claim` (side)
  rewrites the header's size without adding pixels."""
  buffer = io.BytesIO()
  Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "BMP")
  data = bytearray(buffer.getvalue())
  if top_down:
    data[22:26] = struct.pack("<i", -height)
  if claim:
    data[18:26] = struct.pack("<ii", claim, claim)
  return bytes(data)


@pytest.mark.parametrize("images,tokens", [
    (lambda: [_png(1, 1), gif_bytes.gif(frames=3)],
     ("element", "1", "is an animated GIF")),
    # Its second frame is found only by following each data chain of
    # one-byte sub-blocks to its end.
    (lambda: [gif_bytes.gif_rechunked(gif_bytes.gif(frames=3, h=60, w=70), 1)],
     ("element", "0", "is an animated GIF")),
    (lambda: [gif_bytes.gif_blocks(5000, 5000)],
     ("element", "0", "is a GIF with a frame outside its logical screen")),
    (lambda: [gif_bytes.gif_blocks(2, 2, extensions=100)],
     ("element", "0", "is a GIF with more than 64 blocks")),
    (lambda: [_bmp(2, 2, claim=20000)],
     ("element", "0", "20000", "x", "20000", "--serving.max_image_pixels")),
    (lambda: [_png(1, 1), b""],
     ("element", "1", "is not a JPEG, PNG, GIF or BMP image")),
    (lambda: [np.random.RandomState(0).bytes(64)],
     ("element", "0", "is not a JPEG, PNG, GIF or BMP image")),
    # The batch size is checked before the header pass looks at any
    # element (here, none of them is an image).
    (lambda: [b""] * 33,
     ("has", "33", "images; the limit", "--serving.max_batch_size", "32")),
], ids=["animated_gif", "animated_gif_one_byte_sub_blocks",
        "gif_frame_outside_screen", "gif_100_extensions",
        "bmp_bomb_20000", "zero_bytes", "random_bytes", "batch_size_first"])
def test_the_header_pass_refuses_each_bad_element(images, tokens):
  """Each refusal of the header pass, at the default bounds, by its own
  message (the same inputs as tests/test_reliability_serving.py, run
  eagerly here without an export or a server)."""
  _refused(lambda: inputs.decode_images(tf.constant(images()), 32), *tokens)


def test_gifs_and_bmps_within_the_rules_decode():
  images = [gif_bytes.gif(), gif_bytes.gif_blocks(2, 2, extensions=10),
            gif_bytes.gif_rechunked(gif_bytes.gif(h=60, w=70), 1), _bmp(30, 40),
            _bmp(30, 40, top_down=True)]
  _, sizes, _ = inputs.decode_images(tf.constant(images), 32)
  assert sizes.numpy().tolist() == [[30, 40], [2, 2], [60, 70], [30, 40],
                                    [30, 40]]
