"""The Gram-operator latent path: exact A A^T, and agreement with "direct"."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling import gram
from dis_tf.modeling.dis_model import DISModel
from dis_tf.modeling.subnets import Subnet1, Subnet2, Subnet3

import bench_modules  # tests/bench_modules.py


def _explicit_a(kernel, dense):
  """A(x, y) of subnet-1 / subnet-3 without biases, in any dtype."""
  def a(x, y):
    u = tf.nn.conv2d(x + y[:, None, None, :], kernel, 1, "SAME")
    v = tf.matmul(tf.reduce_mean(x, [1, 2]) + y, dense)
    return u, v
  return a


@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1), (2, 3), (3, 3),
                                  (5, 7), (8, 6)])
def test_gram_operator_equals_explicit_a_at_in_float64(size):
  rng = np.random.RandomState(0)
  depth, classes, batch = 7, 5, 2
  kernel = tf.constant(rng.randn(3, 3, depth, classes))
  dense = tf.constant(rng.randn(depth, classes))
  a = _explicit_a(kernel, dense)
  gu = tf.constant(rng.randn(batch, *size, classes))
  gv = tf.constant(rng.randn(batch, classes))
  x = tf.zeros([batch, *size, depth], tf.float64)
  y = tf.zeros([batch, depth], tf.float64)
  with tf.GradientTape() as tape:
    tape.watch([x, y])
    u, v = a(x, y)
    inner = tf.reduce_sum(u * gu) + tf.reduce_sum(v * gv)
  at_u, at_v = tape.gradient(inner, [x, y])          # A^T g, by autodiff
  want_u, want_v = a(at_u, at_v)                     # A A^T g
  op = gram.GramOperator(kernel, dense, tf.float64)
  got_u, got_v = op.apply(gu, gv)
  np.testing.assert_allclose(got_u, want_u, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-12, atol=1e-12)
  adj_u, adj_v = op.adjoint(gu, gv)
  np.testing.assert_allclose(adj_u, at_u, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(adj_v, at_v, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------
# The previous formulation of A A^T (up to 23947fd: a 5x5 convolution, four
# strip convolutions and four corner terms at the ring, and the nine masked
# sums T_d), in NumPy float64: the fused operator must equal it.


def _conv_same(x, kernel):
  """Zero-padded 'same' cross-correlation, [B, h, w, Ci] x [kh, kw, Ci, Co]."""
  kh, kw = kernel.shape[:2]
  pad = np.pad(x, [(0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)])
  h, w = x.shape[1:3]
  out = np.zeros(x.shape[:3] + kernel.shape[3:])
  for i in range(kh):
    for j in range(kw):
      out += pad[:, i:i + h, j:j + w] @ kernel[i, j]
  return out


def _previous_gram_apply(kernel, dense, gu, gv):
  """A A^T (gu, gv) as the previous `GramOperator.apply` computed it."""
  c = kernel.shape[3]
  taps = [(i, j) for i in range(3) for j in range(3)]
  pair = {(p, d): kernel[p].T @ kernel[d] for p in taps for d in taps}
  kernel5 = np.zeros([5, 5, c, c])
  top, bottom = np.zeros([1, 5, c, c]), np.zeros([1, 5, c, c])
  left, right = np.zeros([5, 1, c, c]), np.zeros([5, 1, c, c])
  for (p, d), block in pair.items():
    kernel5[d[0] - p[0] + 2, d[1] - p[1] + 2] += block
    for row, strip in ((0, top), (2, bottom)):
      if p[0] == d[0] == row:
        strip[0, d[1] - p[1] + 2] += block
    for col, strip in ((0, left), (2, right)):
      if p[1] == d[1] == col:
        strip[d[0] - p[0] + 2, 0] += block
  h, w = gu.shape[1:3]
  out = _conv_same(gu, kernel5)
  out[:, :1] -= _conv_same(gu[:, :1], top)
  out[:, -1:] -= _conv_same(gu[:, -1:], bottom)
  out[:, :, :1] -= _conv_same(gu[:, :, :1], left)
  out[:, :, -1:] -= _conv_same(gu[:, :, -1:], right)
  for (y, x), tap in (((0, 0), (0, 0)), ((0, w - 1), (0, 2)),
                      ((h - 1, 0), (2, 0)), ((h - 1, w - 1), (2, 2))):
    out[:, y, x] += gu[:, y, x] @ pair[(tap, tap)]
  kflat = np.concatenate([kernel[d] for d in taps], 1)      # [D, 9C]
  tap_gram, tap_dense = kflat.T @ kflat, kflat.T @ dense
  alpha = 1 + 1 / (h * w)

  def masks(n):
    index = np.arange(n)
    return np.stack([index >= 1, index >= 0, index <= n - 2], 1).astype(float)

  rows, cols = masks(h), masks(w)
  sums = np.einsum("yi,xj,byxc->bijc", rows, cols, gu).reshape(-1, 9 * c)
  coupled = sums @ tap_gram + alpha * gv @ tap_dense.T
  out += np.einsum("yi,xj,bijc->byxc", rows, cols, coupled.reshape(-1, 3, 3, c))
  v_out = alpha * (sums @ tap_dense + gv @ dense.T @ dense)
  return out, v_out


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (4, 1), (2, 2), (2, 3),
                                  (6, 4), (12, 12)])
def test_fused_operator_equals_previous_formulation(size):
  """Every pixel, the image border and corners included, in float64."""
  rng = np.random.RandomState(1)
  depth, classes, batch = 9, 6, 3
  kernel = rng.randn(3, 3, depth, classes)
  dense = rng.randn(depth, classes)
  gu = rng.randn(batch, *size, classes)
  gv = rng.randn(batch, classes)
  want_u, want_v = _previous_gram_apply(kernel, dense, gu, gv)
  op = gram.GramOperator(tf.constant(kernel), tf.constant(dense), tf.float64)
  # Eager, and traced with the shape unknown (the selectors then come from
  # the shape tensor), and with the loop-style applier.
  traced = tf.function(op.apply, input_signature=[
      tf.TensorSpec([None, None, None, classes], tf.float64),
      tf.TensorSpec([None, classes], tf.float64)])
  for got_u, got_v in (op.apply(gu, gv), traced(gu, gv),
                       op.applier(gu.shape)(gu, gv)):
    np.testing.assert_allclose(got_u, want_u, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-12, atol=1e-11)
    ring = np.ones(size, bool)
    ring[1:-1, 1:-1] = False
    np.testing.assert_allclose(np.asarray(got_u)[:, ring], want_u[:, ring],
                               rtol=1e-12, atol=1e-11)


def test_gram_step_op_counts_stay_small():
  """Op counts of the traced graph are deterministic: pin them.

  Measured at the fused operator: 25 ops that do work per A A^T (one 5x5
  convolution, two matmuls, no einsum), and per latent step of the tiny
  preset's stage-2 call (8x12x12, D=64, training mode) 153 (286 with
  Const / Placeholder / Identity); the previous formulation took 101 per
  A A^T and 231 (444) per step. The step bound leaves room for a few
  more step-acceptance ops.
  """
  latent_ops = bench_modules.load("latent_ops")
  heads = latent_ops.heads(16)
  op = gram.GramOperator.from_heads(heads)
  gu, gv = tf.zeros([8, 12, 12, 21]), tf.zeros([8, 21])
  graph = tf.function(op.applier(gu.shape)).get_concrete_function(
      gu, gv).graph
  counts = collections.Counter(o.type for o in graph.get_operations())
  _, work = latent_ops.summarize(counts)
  assert work <= 25, counts
  assert counts["Conv2D"] == 1 and counts["MatMul"] == 2, counts
  assert not counts["Einsum"], counts
  step = latent_ops.latent_step_ops(8, 12, 12, 64, with_tags=True)
  total, work = latent_ops.summarize(step)
  assert work <= 165 and total <= 300, (work, total, step)
  assert step["Conv2D"] == 4, step   # 3 in subnet-2, 1 in A A^T


def test_finite_rows_is_exact_at_the_float_limits():
  """The one-reduction finiteness check of the latent step, traced (so
  Grappler runs): the largest finite values pass, any inf / NaN fails."""
  for dtype in (np.float32, np.float64):
    big = np.finfo(dtype).max
    rows = np.array([[big, -big, big, 1.0], [np.inf, 0, 0, 0],
                     [0, -np.inf, 0, 0], [0, 0, np.nan, 0],
                     [np.finfo(dtype).tiny, 0, 0, 0]], dtype)
    rows = np.tile(rows, [1, 500])
    want = [True, False, False, False, True]
    check = tf.function(latent_lib._finite_rows)  # pylint: disable=protected-access
    np.testing.assert_array_equal(check(tf.constant(rows)), want)


def _heads(depth, seed=0):
  keras.utils.set_random_seed(seed)
  heads = type("Heads", (), {})()
  heads.subnet1, heads.subnet2, heads.subnet3 = (
      Subnet1(21), Subnet2(21), Subnet3(21))
  heads.subnet1.build((None, None, None, depth))
  heads.subnet2.build((None, None, None, 21))
  heads.subnet3.build((None, None, None, depth))
  return heads


def _heads_float64(depth):
  """`_heads(depth)` built under the float64 dtype policy."""
  keras.config.set_dtype_policy("float64")
  try:
    return _heads(depth)
  finally:
    keras.config.set_dtype_policy("float32")


def _features(shape, seed=0):
  """ReLU-like u1 (as the backbone's last stage), v1 its spatial mean."""
  rng = np.random.RandomState(seed)
  u1 = np.maximum(rng.randn(*shape), 0).astype(np.float32)
  target = rng.randn(*shape[:3], 3).astype(np.float32)
  tags = (rng.rand(shape[0], 21) > 0.8).astype(np.float32)
  tags[:, 0] = 1
  return tf.constant(u1), tf.reduce_mean(u1, [1, 2]), target, tags


def _assert_paths_agree(heads, u1, v1, target, tags, step_size,
                        clip_norm=10.0, steps=30, rtol=1e-3, **options):
  run = {m: tf.function(lambda s, m=m: latent_lib.latent_inference(
      heads, u1, v1, target, tags=tags, steps=s, step_size=step_size,
      clip_norm=clip_norm, method=m, return_features=True, **options))
         for m in ("direct", "gram")}
  direct, fast = run["direct"](steps), run["gram"](steps)
  start = run["gram"](0)
  for key in ("u3", "v3", "u1", "v1", "objective"):
    scale = np.abs(direct[key]).max()
    diff = np.abs(direct[key] - fast[key]).max()
    assert diff <= rtol * scale, (key, diff, scale)
  np.testing.assert_array_equal(
      np.argmax(direct["probabilities"], -1),
      np.argmax(fast["probabilities"], -1))
  # The steps really moved the outputs (the agreement is not trivial). In
  # training mode the tag term may take most of the clipped step, so v3
  # counts too.
  moved = max(np.abs(fast[k] - start[k]).max() / np.abs(fast[k]).max()
              for k in ("u3", "v3"))
  assert moved > 0.02, moved
  assert np.all(fast["objective"] < start["objective"])
  for value in fast.values():
    assert np.all(np.isfinite(value.numpy()))


@pytest.mark.parametrize("with_tags", [False, True])
@pytest.mark.parametrize("step_size", [0.1, 0.5])
def test_gram_and_direct_agree_tiny_head(with_tags, step_size):
  # 5x7 feature maps: 24 of the 35 pixels touch the border.
  heads = _heads(16)
  u1, v1, target, tags = _features((2, 5, 7, 16))
  _assert_paths_agree(heads, u1, v1, target, tags if with_tags else None,
                      step_size)


@pytest.mark.parametrize("update", ["u1", "v1", "per_pixel"])
@pytest.mark.parametrize("monotone", [False, True])
@pytest.mark.parametrize("with_tags", [False, True])
def test_gram_and_direct_agree_with_block_scales_and_monotone(update,
                                                             monotone,
                                                             with_tags):
  # In float64: with "per_pixel" the gram path forms the u1 part as the
  # full operator minus the v1 part, which costs float32 a few 1e-3 of
  # relative rounding here; in float64 both paths agree to rounding.
  heads = _heads_float64(16)
  u1, v1, target, tags = _features((2, 5, 7, 16))
  _assert_paths_agree(heads, tf.cast(u1, tf.float64), tf.cast(v1, tf.float64),
                      target.astype(np.float64),
                      tags.astype(np.float64) if with_tags else None, 0.5,
                      rtol=1e-9, update=update, monotone=monotone)


def test_v1_part_of_the_gram_operator_in_float64():
  """apply_v1_part == A_v A_v^T by autodiff; the rest is A_u A_u^T."""
  rng = np.random.RandomState(1)
  depth, classes, batch = 6, 4, 2
  kernel = tf.constant(rng.randn(3, 3, depth, classes))
  dense = tf.constant(rng.randn(depth, classes))
  a = _explicit_a(kernel, dense)
  gu = tf.constant(rng.randn(batch, 4, 5, classes))
  gv = tf.constant(rng.randn(batch, classes))
  x = tf.zeros([batch, 4, 5, depth], tf.float64)
  y = tf.zeros([batch, depth], tf.float64)
  with tf.GradientTape() as tape:
    tape.watch([x, y])
    u, v = a(x, y)
    inner = tf.reduce_sum(u * gu) + tf.reduce_sum(v * gv)
  at_u, at_v = tape.gradient(inner, [x, y])
  want_v = a(tf.zeros_like(at_u), at_v)              # A_v A_v^T g
  want_u = a(at_u, tf.zeros_like(at_v))              # A_u A_u^T g
  op = gram.GramOperator(kernel, dense, tf.float64)
  got_v = gram.apply_v1_part(kernel, dense, gu, gv)
  full = op.apply(gu, gv)
  for got, want in zip(got_v, want_v):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  for f, g, want in zip(full, got_v, want_u):
    np.testing.assert_allclose(f - g, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_frozen_blocks_do_not_move(method):
  heads = _heads(16)
  u1, v1, target, _ = _features((2, 5, 7, 16))
  run = lambda update: latent_lib.latent_inference(
      heads, u1, v1, target, steps=5, step_size=0.5, method=method,
      update=update, return_features=True)
  only_u1, only_v1 = run("u1"), run("v1")
  np.testing.assert_allclose(only_u1["v1"], v1, atol=1e-6)
  assert np.abs(only_u1["u1"] - u1).max() > 1e-3
  np.testing.assert_allclose(only_v1["u1"], u1, atol=1e-6)
  assert np.abs(only_v1["v1"] - v1).max() > 1e-3


def test_per_pixel_scales_the_u3_path_of_v1_by_the_map_size():
  scale_u, scale_map, scale_tag = latent_lib.block_scales("per_pixel", 5, 7)
  assert scale_u == 1.0 and scale_tag == 1.0
  np.testing.assert_allclose(float(scale_map), 1.0 / 35)
  with pytest.raises(ValueError, match="latent update"):
    latent_lib.block_scales("sideways", 5, 7)


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_one_per_pixel_step_against_autodiff_of_the_two_v1_paths(method):
  """One training-mode step of "per_pixel" (and of "both"), from gradients
  taken here by autodiff, not through `block_scales`: v1 moves by the u3
  path's gradient divided by h * w plus the tag path's gradient at full
  scale. (Scaling the tag path by 1 / (h * w) too, the old rule, moves v1
  differently by far more than the tolerance.)"""
  heads = _heads_float64(16)
  u1, v1, target, tags = _features((2, 5, 7, 16))
  u1, v1 = tf.cast(u1, tf.float64), tf.cast(v1, tf.float64)
  target, tags = target.astype(np.float64), tags.astype(np.float64)
  v1_tag = tf.identity(v1)
  with tf.GradientTape() as tape:
    tape.watch([u1, v1, v1_tag])
    total = tf.reduce_sum(latent_lib.latent_objective(
        heads, u1, v1, target, tags, v1_tag=v1_tag))
  g_u1, g_map, g_tag = (g.numpy() for g in tape.gradient(total,
                                                         [u1, v1, v1_tag]))
  assert np.abs(g_tag).max() > 1e-3 * np.abs(g_map).max()  # Both matter.
  step, hw = 0.05, 5 * 7
  expected = {
      "per_pixel": (u1 - step * g_u1, v1 - step * (g_map / hw + g_tag)),
      "both": (u1 - step * g_u1, v1 - step * (g_map + g_tag)),
  }
  old_rule = v1 - step * (g_map + g_tag) / hw
  for update, (want_u1, want_v1) in expected.items():
    out = latent_lib.latent_inference(
        heads, u1, v1, target, tags=tags, steps=1, step_size=step,
        clip_norm=None, method=method, update=update, return_features=True)
    np.testing.assert_allclose(out["u1"], want_u1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["v1"], want_v1, rtol=1e-6, atol=1e-7)
  # The old rule is 1000 times the tolerance away.
  assert np.abs(expected["per_pixel"][1] - old_rule).max() > 1e-4


@pytest.mark.parametrize("method", ["direct", "gram"])
def test_monotone_steps_never_raise_the_objective(method):
  """At a step size where plain steps overshoot, monotone ones go down."""
  heads = _heads(16)
  u1, v1, target, _ = _features((2, 5, 7, 16))
  objectives = {}
  for monotone in (False, True):
    values = [latent_lib.latent_inference(
        heads, u1, v1, target, steps=t, step_size=50.0, clip_norm=None,
        method=method, monotone=monotone)["objective"].numpy()
              for t in range(8)]
    objectives[monotone] = np.stack(values)
  assert np.any(np.diff(objectives[False], axis=0) > 0)  # Plain overshoots.
  assert np.all(np.diff(objectives[True], axis=0) <= 1e-4 * np.abs(
      objectives[True][:-1]))
  assert np.all(objectives[True][-1] < objectives[True][0])


@pytest.mark.slow
@pytest.mark.parametrize("with_tags", [False, True])
def test_gram_and_direct_agree_resnet101_head(with_tags):
  # 2048-channel u1 at 45x45 (ResNet101, output stride 8, 353x353 input).
  # Step 1e-3 with the default clip: the objective decreases, u3 moves by
  # ~4% of its scale and ~8% of the labels change in 30 steps. At larger
  # steps the float32 *reference itself* is rounding-sensitive at this size
  # (ReLU kinks in subnet-2, stiff v1 direction): a 1e-6 relative
  # perturbation of u1 changes its own t=30 u3 by 4e-4 at step 2e-3 and
  # 5e-3 at step 1e-2, the same size as the direct-vs-gram differences
  # there (see BENCHMARKS.md).
  heads = _heads(2048)
  u1, v1, target, tags = _features((1, 45, 45, 2048))
  _assert_paths_agree(heads, u1, v1, target, tags if with_tags else None,
                      step_size=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("with_tags", [False, True])
def test_gram_and_direct_agree_resnet101_head_float64_default_step(with_tags):
  # The same ResNet101-size head at the default step size (0.1, clip 10):
  # in float64 the rounding noise that the float32 reference amplifies
  # (see above) is 1e9 times smaller, so the two paths must agree to
  # rounding while u3 moves by about a third of its scale and 15-50% of
  # the labels change in 30 steps.
  heads = _heads_float64(2048)
  u1, v1, target, tags = _features((1, 45, 45, 2048))
  _assert_paths_agree(heads, tf.cast(u1, tf.float64), tf.cast(v1, tf.float64),
                      target.astype(np.float64),
                      tags.astype(np.float64) if with_tags else None,
                      step_size=0.1, rtol=1e-9)


def test_model_default_is_gram_and_config_round_trip(tiny_model):
  model = tiny_model()
  assert model.latent_method == "gram"
  assert tiny_model(method="direct").latent_method == "direct"
  clone = DISModel.from_config(model.get_config())
  assert clone.latent_method == "gram"
  with pytest.raises(ValueError, match="latent_method"):
    DISModel(model.backbone, latent_method="adam")


@pytest.mark.parametrize("precision", config_lib.PRECISIONS)
def test_model_infer_paths_agree_and_features_continue_exactly(precision,
                                                               tiny_model):
  """Direct == gram to the float32 tolerance under every backbone precision:
  the latent loop gets the same float32 features from both paths."""
  model = tiny_model(precision=precision)
  rng = np.random.RandomState(1)
  image = rng.randn(2, 40, 56, 3).astype(np.float32)   # 5x7 features
  tags = (rng.rand(2, 21) > 0.7).astype(np.float32)
  direct = model.infer(image, steps=12, tags=tags, method="direct",
                       return_features=True)
  fast = model.infer(image, steps=12, tags=tags, return_features=True)
  for key in ("u3", "v3", "u1", "v1"):
    np.testing.assert_allclose(fast[key], direct[key], rtol=1e-4,
                               atol=1e-4 * np.abs(direct[key]).max())
  # Evaluation continues from the returned features: 5 + 7 == 12 steps.
  u1, v1 = model.features(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  half = model.latent(u1, v1, target, tags=tags, steps=5,
                      return_features=True)
  rest = model.latent(half["u1"], half["v1"], target, tags=tags, steps=7)
  np.testing.assert_allclose(rest["u3"], fast["u3"], rtol=1e-4,
                             atol=1e-4 * np.abs(fast["u3"]).max())


@pytest.mark.parametrize("step_size", [1e6, 1e30])
def test_gram_absurd_but_finite_steps_stay_finite(step_size, tiny_model):
  """Steps this large still give finite iterates (u3 reaches ~1e28 at
  1e30): they are taken, and everything stays finite."""
  model = tiny_model()
  image = np.random.RandomState(2).randn(2, 40, 56, 3).astype(np.float32)
  start = model.infer(image, steps=0, return_features=True)
  result = model.infer(image, steps=5, step_size=step_size, clip_norm=None,
                       return_features=True)
  for key, value in result.items():
    assert np.all(np.isfinite(value.numpy())), key
  assert not np.array_equal(result["u1"], start["u1"])  # Taken, not rejected.


@pytest.mark.parametrize("step_size", [1e38, float(np.finfo(np.float32).max)])
@pytest.mark.parametrize("steps", [1, 5])
def test_gram_overflowing_steps_are_rejected_and_change_nothing(
    step_size, steps, tiny_model):
  """A step whose iterate overflows float32 (here from step 5e37 on) is
  rejected: every output, and the refined features (u1, v1), equal those of
  no step at all, exactly."""
  model = tiny_model()
  image = np.random.RandomState(2).randn(2, 40, 56, 3).astype(np.float32)
  start = model.infer(image, steps=0, return_features=True)
  u1, v1 = model.backbone(image)
  np.testing.assert_array_equal(start["u1"], u1)
  np.testing.assert_array_equal(start["v1"], v1)
  result = model.infer(image, steps=steps, step_size=step_size,
                       clip_norm=None, return_features=True)
  assert set(result) == set(start)
  for key, value in result.items():
    np.testing.assert_array_equal(value, start[key], err_msg=key)


def test_stored_gram_fields_give_the_same_iterates():
  """Kernels built once (as the export keeps them) = kernels built per call."""
  heads = _heads(16)
  u1, v1, target, tags = _features((2, 5, 7, 16))
  fields = gram.GramOperator.from_heads(heads).fields()
  kwargs = dict(tags=tags, steps=10, return_features=True)
  per_call = latent_lib.latent_inference(heads, u1, v1, target, **kwargs)
  stored = latent_lib.latent_inference(heads, u1, v1, target,
                                      gram_fields=fields, **kwargs)
  for key in ("u3", "v3", "u1", "v1", "objective"):
    np.testing.assert_allclose(stored[key], per_call[key], rtol=1e-6,
                               atol=1e-6)
  with pytest.raises(ValueError, match="gram_fields are for method='gram'"):
    latent_lib.latent_inference(heads, u1, v1, target, steps=1,
                               method="direct", gram_fields=fields)
  with pytest.raises(ValueError, match="Expected 3 Gram fields"):
    gram.GramOperator.from_heads(heads, fields=fields[:2])


def test_gram_rejects_nonlinear_heads():
  heads = _heads(8)
  heads.subnet1.conv.activation = keras.activations.relu
  u1, v1, target, _ = _features((1, 3, 3, 8))
  with pytest.raises(ValueError, match="method='direct'"):
    latent_lib.latent_inference(heads, u1, v1, target, steps=1)
  out = latent_lib.latent_inference(heads, u1, v1, target, steps=1,
                                   method="direct")
  assert np.all(np.isfinite(out["u3"].numpy()))


def test_gram_loop_traces_once_and_state_is_fixed_size(tiny_model):
  model = tiny_model()
  image = np.random.RandomState(3).randn(1, 40, 56, 3).astype(np.float32)
  traces = []

  @tf.function
  def run(steps):
    traces.append(1)
    return model.infer(image, steps=steps)["u3"]

  run(tf.constant(0))
  run(tf.constant(3))
  run(tf.constant(40))
  assert len(traces) == 1
  graph = run.get_concrete_function(tf.constant(1)).graph
  whiles = [op for op in graph.get_operations()
            if op.type in ("While", "StatelessWhile")]
  assert whiles
  # The loop state is (i, u3, v3, objective, g_u3, g_v3, 2 empty
  # accumulators, the step sizes) plus loop invariants (the image target,
  # the C-channel kernels, the Gram operator's pixel selectors, and the
  # subnet-1/3 weights, which the per-pixel v1 step applies to one D-vector
  # per example): no D-channel (here 16) map, no TensorArray.
  weights = {tuple(model.subnet1.conv.kernel.shape),
             tuple(model.subnet3.dense.kernel.shape)}
  for op in whiles:
    for tensor in op.outputs:
      assert tensor.dtype != tf.variant, tensor
      if tensor.shape.rank == 4 and tensor.shape[1:3] == (5, 7):
        assert tensor.shape[-1] in (3, 21), tensor
      if tuple(tensor.shape) not in weights:
        assert 16 not in tensor.shape[1:], tensor
