"""The Gram-operator latent path: exact A A^T, and agreement with "direct"."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import image_ops
from dis_tf import inference
from dis_tf.modeling import gram
from dis_tf.modeling.dis_model import DISModel
from dis_tf.modeling.subnets import Subnet1, Subnet2, Subnet3


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


def _heads(depth, seed=0):
  keras.utils.set_random_seed(seed)
  heads = type("Heads", (), {})()
  heads.subnet1, heads.subnet2, heads.subnet3 = (
      Subnet1(21), Subnet2(21), Subnet3(21))
  heads.subnet1.build((None, None, None, depth))
  heads.subnet2.build((None, None, None, 21))
  heads.subnet3.build((None, None, None, depth))
  return heads


def _features(shape, seed=0):
  """ReLU-like u1 (as the backbone's last stage), v1 its spatial mean."""
  rng = np.random.RandomState(seed)
  u1 = np.maximum(rng.randn(*shape), 0).astype(np.float32)
  target = rng.randn(*shape[:3], 3).astype(np.float32)
  tags = (rng.rand(shape[0], 21) > 0.8).astype(np.float32)
  tags[:, 0] = 1
  return tf.constant(u1), tf.reduce_mean(u1, [1, 2]), target, tags


def _assert_paths_agree(heads, u1, v1, target, tags, step_size,
                        clip_norm=10.0, steps=30, rtol=1e-3):
  run = {m: tf.function(lambda s, m=m: inference.latent_inference(
      heads, u1, v1, target, tags=tags, steps=s, step_size=step_size,
      clip_norm=clip_norm, method=m, return_features=True))
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
  keras.config.set_dtype_policy("float64")
  try:
    heads = _heads(2048)
  finally:
    keras.config.set_dtype_policy("float32")
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


def test_model_infer_paths_agree_and_features_continue_exactly(tiny_model):
  model = tiny_model()
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
  u1, v1 = model.backbone(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  half = model.latent(u1, v1, target, tags=tags, steps=5,
                      return_features=True)
  rest = model.latent(half["u1"], half["v1"], target, tags=tags, steps=7)
  np.testing.assert_allclose(rest["u3"], fast["u3"], rtol=1e-4,
                             atol=1e-4 * np.abs(fast["u3"]).max())


@pytest.mark.parametrize("step_size", [1e6, 1e30])
def test_gram_absurd_steps_are_rejected_not_nan(step_size, tiny_model):
  model = tiny_model()
  image = np.random.RandomState(2).randn(2, 40, 56, 3).astype(np.float32)
  result = model.infer(image, steps=5, step_size=step_size, clip_norm=None,
                       return_features=True)
  for key, value in result.items():
    assert np.all(np.isfinite(value.numpy())), key


def test_stored_gram_fields_give_the_same_iterates():
  """Kernels built once (as the export keeps them) = kernels built per call."""
  heads = _heads(16)
  u1, v1, target, tags = _features((2, 5, 7, 16))
  fields = gram.GramOperator.from_heads(heads).fields()
  kwargs = dict(tags=tags, steps=10, return_features=True)
  per_call = inference.latent_inference(heads, u1, v1, target, **kwargs)
  stored = inference.latent_inference(heads, u1, v1, target,
                                      gram_fields=fields, **kwargs)
  for key in ("u3", "v3", "u1", "v1", "objective"):
    np.testing.assert_allclose(stored[key], per_call[key], rtol=1e-6,
                               atol=1e-6)
  with pytest.raises(ValueError, match="gram_fields are for method='gram'"):
    inference.latent_inference(heads, u1, v1, target, steps=1,
                               method="direct", gram_fields=fields)
  with pytest.raises(ValueError, match="Expected 9 Gram fields"):
    gram.GramOperator.from_heads(heads, fields=fields[:3])


def test_gram_rejects_nonlinear_heads():
  heads = _heads(8)
  heads.subnet1.conv.activation = keras.activations.relu
  u1, v1, target, _ = _features((1, 3, 3, 8))
  with pytest.raises(ValueError, match="method='direct'"):
    inference.latent_inference(heads, u1, v1, target, steps=1)
  out = inference.latent_inference(heads, u1, v1, target, steps=1,
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
  # accumulators) plus loop invariants (the image target, the C x C
  # kernels): no D-channel (here 16) tensor, no TensorArray.
  for op in whiles:
    for tensor in op.outputs:
      assert tensor.dtype != tf.variant, tensor
      if tensor.shape.rank == 4:
        assert tensor.shape[-1] in (3, 21), tensor
