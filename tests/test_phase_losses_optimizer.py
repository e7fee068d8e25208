"""Hand computations for what nothing else checked: the loss weights of
each training phase and the total loss, `training.make_optimizer` (poly
schedule, momentum, weight decay), and `CaffePreprocess` against
`keras.applications.resnet.preprocess_input`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf import training
from dis_tf.modeling import backbones
from dis_tf.modeling.dis_model import build_dis_model

WEIGHTS = {"map_weight": 0.7, "image_weight": 0.3, "tag_weight": 0.2}
# (map, image, tag) per phase (paper Sec. 3): phase a trains subnet-1 and
# subnet-3 (L^map, L^tag), phase b subnet-2 alone (L^img), c and semi all.
PHASE_WEIGHTS = {"a": (0.7, 0.0, 0.2), "b": (0.0, 0.3, 0.0),
                 "c": (0.7, 0.3, 0.2), "semi": (0.7, 0.3, 0.2)}


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(0)
  config = config_lib.synthetic()
  config.model.tiny_width = 8
  for key, value in WEIGHTS.items():
    setattr(config.loss, key, value)
  return build_dis_model(config)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _numpy_losses(outputs, mask, target, tags):
  """(L^map, L^img, L^tag) by hand from the model's outputs; `mask` is at
  the logits' resolution, so no resize enters."""
  logits = outputs["labelmap_logits"].numpy().astype(np.float64)
  valid = mask != 255
  nll = -np.take_along_axis(_log_softmax(logits),
                            np.where(valid, mask, 0)[..., None], -1)[..., 0]
  map_loss = (nll * valid).sum() / valid.sum()
  image_loss = np.mean((outputs["reconstruction"].numpy() - target) ** 2)
  v3 = outputs["tag_logits"].numpy().astype(np.float64)[:, 1:]
  t = tags[:, 1:]
  bce = np.maximum(v3, 0) - v3 * t + np.log1p(np.exp(-np.abs(v3)))
  return map_loss, image_loss, bce.mean()


@pytest.mark.parametrize("phase", ["a", "b", "c"])
def test_phase_loss_weights_and_total_loss_by_hand(model, phase):
  model.set_phase(phase)
  assert model.loss_weights_for_phase == pytest.approx(PHASE_WEIGHTS[phase])
  rng = np.random.RandomState(1)
  image = rng.randn(2, 32, 32, 3).astype(np.float32)
  f = image_ops.feature_size(32)
  mask = rng.randint(0, 21, (2, f, f)).astype(np.int32)
  mask[0, :2] = 255
  tags = (rng.rand(2, 21) > 0.5).astype(np.float32)
  target = image_ops.image_target(image, (f, f)).numpy()
  x = {"image": image, "image_small": target, "mask": mask, "tags": tags}
  outputs, total, parts = model._forward_and_losses(x, training=False)
  expected = _numpy_losses(outputs, mask, target, tags)
  np.testing.assert_allclose([float(p) for p in parts], expected, rtol=1e-5)
  w_map, w_image, w_tag = PHASE_WEIGHTS[phase]
  by_hand = (w_map * expected[0] + w_image * expected[1]
             + w_tag * expected[2])
  assert float(total) == pytest.approx(by_hand, rel=1e-5)


def test_semi_phase_weights(model):
  model.set_phase("semi")
  assert model.loss_weights_for_phase == pytest.approx(PHASE_WEIGHTS["semi"])
  model.set_phase("a")


def _train_config(**fields):
  config = config_lib.synthetic().train
  for key, value in fields.items():
    setattr(config, key, value)
  return config


def test_poly_schedule_values_at_given_steps():
  config = _train_config(optimizer="sgd", poly_power=0.9, momentum=0.9,
                         weight_decay=0.0)
  optimizer = training.make_optimizer(config, 0.01, steps=100)
  schedule = optimizer._learning_rate
  for step, value in [(0, 0.01), (10, 0.01 * 0.9 ** 0.9),
                      (50, 0.01 * 0.5 ** 0.9), (99, 0.01 * 0.01 ** 0.9),
                      (100, 0.0), (150, 0.0)]:
    assert float(schedule(step)) == pytest.approx(value, abs=1e-9), step
  # Power 1 is a straight line.
  line = training.make_optimizer(_train_config(poly_power=1.0), 2.0, 4)
  assert [float(line._learning_rate(s)) for s in range(5)] == pytest.approx(
      [2.0, 1.5, 1.0, 0.5, 0.0])


def test_sgd_momentum_and_weight_decay_steps_by_hand():
  """Three SGD steps on one variable with fixed gradients, against
  Keras' documented update: w -= lr_t * wd * w (decoupled decay), then
  v = momentum * v - lr_t * g; w += v; lr_t from the poly schedule."""
  lr, steps, power, momentum, wd = 0.1, 4, 0.9, 0.8, 0.05
  optimizer = training.make_optimizer(
      _train_config(optimizer="sgd", poly_power=power, momentum=momentum,
                    weight_decay=wd), lr, steps)
  assert isinstance(optimizer, keras.optimizers.SGD)
  assert optimizer.momentum == pytest.approx(momentum)
  assert optimizer.weight_decay == pytest.approx(wd)
  w0 = np.array([1.0, -2.0, 0.5], np.float32)
  variable = keras.Variable(w0)
  grads = [np.array([0.3, 0.1, -0.2], np.float32),
           np.array([-0.1, 0.4, 0.0], np.float32),
           np.array([0.2, 0.2, 0.2], np.float32)]
  w, v = w0.astype(np.float64), np.zeros(3)
  for t, g in enumerate(grads):
    optimizer.apply_gradients([(tf.constant(g), variable)])
    lr_t = lr * (1 - t / steps) ** power
    w = w - lr_t * wd * w
    v = momentum * v - lr_t * g
    w = w + v
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5, atol=1e-7)


def test_adam_and_no_weight_decay():
  adam = training.make_optimizer(_train_config(optimizer="adam",
                                               weight_decay=1e-4), 1e-3, 10)
  assert isinstance(adam, keras.optimizers.Adam)
  assert adam.weight_decay == pytest.approx(1e-4)
  sgd = training.make_optimizer(_train_config(optimizer="sgd",
                                              weight_decay=0.0), 1e-3, 10)
  assert sgd.weight_decay is None
  with pytest.raises(Exception, match="expected sgd or adam"):
    training.make_optimizer(_train_config(optimizer="rmsprop"), 1e-3, 10)


def test_caffe_preprocess_equals_keras_resnet_preprocess_input():
  """A wrong channel order (or mean) would silently ruin the pretrained
  ResNet weights: the layer on the dis_tf-normalised image must equal
  keras' own preprocessing of the 0..255 RGB image."""
  rng = np.random.RandomState(0)
  rgb = rng.uniform(0, 255, (3, 64, 48, 3)).astype(np.float32)
  rgb[0, ..., 0] = 255.0  # A pure-red-heavy image: channel order shows.
  rgb[0, ..., 1:] = 0.0
  normalized = image_ops.normalize_image(tf.constant(rgb))
  got = backbones.CaffePreprocess()(normalized).numpy()
  expected = keras.applications.resnet.preprocess_input(rgb.copy())
  np.testing.assert_allclose(got, expected, atol=2e-3)
