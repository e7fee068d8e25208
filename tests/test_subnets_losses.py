"""Subnets, tag refinement, losses and metrics against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import losses
from dis_tf import metrics
from dis_tf.modeling.subnets import Subnet1, Subnet2, Subnet3, refine_labelmap

RNG = np.random.RandomState(0)


def _conv3x3_same(x, kernel, bias):
  """NumPy reference of a stride-1 'same' 3x3 convolution."""
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += np.einsum("bhwc,cd->bhwd", padded[:, dy:dy + h, dx:dx + w],
                       kernel[dy, dx])
  return out + bias


def test_subnet1_matches_numpy_and_is_linear():
  layer = Subnet1(5)
  u1 = RNG.randn(2, 6, 7, 4).astype(np.float32)
  v1 = RNG.randn(2, 4).astype(np.float32)
  u3 = layer(u1, v1).numpy()
  kernel, bias = [w.numpy() for w in layer.conv.weights]
  expected = _conv3x3_same(u1 + v1[:, None, None, :], kernel, bias)
  np.testing.assert_allclose(u3, expected, rtol=1e-4, atol=1e-4)
  # Linear in (u1, v1) up to the bias (the latent inference relies on it).
  u1b, v1b = RNG.randn(*u1.shape), RNG.randn(*v1.shape)
  lhs = layer(u1 + 2 * u1b, v1 + 2 * v1b) - bias
  rhs = (layer(u1, v1) - bias) + 2 * (layer(u1b, v1b) - bias)
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


def test_subnet3_matches_numpy():
  layer = Subnet3(6)
  u1 = RNG.randn(3, 5, 4, 8).astype(np.float32)
  v1 = RNG.randn(3, 8).astype(np.float32)
  v3 = layer(u1, v1).numpy()
  kernel, bias = [w.numpy() for w in layer.dense.weights]
  expected = (u1.mean(axis=(1, 2)) + v1) @ kernel + bias
  np.testing.assert_allclose(v3, expected, rtol=1e-5, atol=1e-5)


def test_subnet2_sizes_follow_the_paper():
  layer = Subnet2(21)
  z3 = layer(RNG.randn(2, 9, 9, 21).astype(np.float32))
  assert z3.shape == (2, 9, 9, 3)
  shapes = [tuple(w.shape) for w in layer.weights if w.name == "kernel"]
  assert shapes == [(5, 5, 21, 21), (3, 3, 21, 16), (3, 3, 16, 3)]
  # Input is softmax(u3): shifting every logit by a constant changes nothing.
  u3 = RNG.randn(1, 4, 4, 21).astype(np.float32)
  np.testing.assert_allclose(layer(u3), layer(u3 + 7.0), atol=1e-5)


@pytest.mark.parametrize("layer", [Subnet1(7, name="s1"),
                                   Subnet2(7, 8, name="s2"),
                                   Subnet3(7, name="s3")])
def test_subnet_config_round_trip(layer):
  config = layer.get_config()
  clone = layer.__class__.from_config(config)
  assert clone.get_config() == config


def test_refine_labelmap_matches_numpy():
  u3 = RNG.randn(2, 3, 4, 5).astype(np.float32)
  v3 = RNG.randn(2, 5).astype(np.float32)
  probs = np.exp(u3) / np.exp(u3).sum(-1, keepdims=True)
  scale = 1 / (1 + np.exp(-v3))
  scale[:, 0] = 1.0
  expected = probs * scale[:, None, None, :]
  expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(refine_labelmap(u3, v3), expected, rtol=1e-5)


def test_map_loss_matches_numpy_with_ignore():
  logits = RNG.randn(2, 4, 4, 3).astype(np.float32)
  labels = RNG.randint(0, 3, size=(2, 4, 4)).astype(np.int32)
  labels[0, 0, :] = 255
  loss = losses.map_loss(logits, labels).numpy()
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)
  expected = -(picked[..., 0] * valid).sum() / valid.sum()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Labels at twice the logit resolution: logits are upsampled bilinearly.
  big = np.repeat(np.repeat(labels, 2, 1), 2, 2)
  assert np.isfinite(losses.map_loss(logits, big).numpy())
  # All-ignored batch gives 0, not NaN.
  assert losses.map_loss(logits, np.full_like(labels, 255)).numpy() == 0.0


def test_map_loss_split_over_replicas_equals_the_global_mean():
  """Two halves of a batch, each divided by the global mean count per
  replica (`num_pixels`) and averaged, give the whole batch's loss, even
  when the halves have different numbers of ignored pixels; dividing each
  half by its own count does not."""
  logits = RNG.randn(2, 4, 4, 3).astype(np.float32)
  labels = RNG.randint(0, 3, size=(2, 4, 4)).astype(np.int32)
  labels[0, :3, :] = 255  # 4 valid pixels in the first half, 16 in the other
  whole = losses.map_loss(logits, labels).numpy()
  per_replica = (losses.num_valid_pixels(labels[:1])
                 + losses.num_valid_pixels(labels[1:])) / 2
  assert per_replica.numpy() == 10.0
  halves = [losses.map_loss(logits[i:i + 1], labels[i:i + 1],
                            num_pixels=per_replica).numpy() for i in (0, 1)]
  np.testing.assert_allclose(np.mean(halves), whole, rtol=1e-6)
  own = [losses.map_loss(logits[i:i + 1], labels[i:i + 1]).numpy()
         for i in (0, 1)]
  assert abs(np.mean(own) - whole) > 1e-3


def test_map_loss_soft_labels_equal_one_hot_for_hard_targets():
  logits = RNG.randn(1, 4, 4, 3).astype(np.float32)
  labels = RNG.randint(0, 3, size=(1, 4, 4)).astype(np.int32)
  soft = tf.one_hot(labels, 3)
  np.testing.assert_allclose(losses.map_loss(logits, labels, soft),
                             losses.map_loss(logits, labels), rtol=1e-6)


def test_tag_loss_excludes_background_and_matches_numpy():
  logits = RNG.randn(3, 5).astype(np.float32)
  tags = (RNG.rand(3, 5) > 0.5).astype(np.float32)
  p = 1 / (1 + np.exp(-logits[:, 1:]))
  bce = -(tags[:, 1:] * np.log(p) + (1 - tags[:, 1:]) * np.log(1 - p))
  np.testing.assert_allclose(losses.tag_loss(logits, tags), bce.mean(),
                             rtol=1e-5)
  changed = logits.copy()
  changed[:, 0] += 100.0
  np.testing.assert_allclose(losses.tag_loss(changed, tags),
                             losses.tag_loss(logits, tags), rtol=1e-6)


def test_image_loss_is_mean_squared_error():
  a = RNG.randn(2, 3, 3, 3).astype(np.float32)
  b = RNG.randn(2, 3, 3, 3).astype(np.float32)
  np.testing.assert_allclose(losses.image_loss(a, b), ((a - b) ** 2).mean(),
                             rtol=1e-5)


def test_confusion_matrix_and_keras_metrics_agree_with_numpy():
  labels = RNG.randint(0, 4, size=(3, 10, 10))
  labels[:, 0] = 255
  preds = RNG.randint(0, 4, size=(3, 10, 10))
  cm = metrics.ConfusionMatrix(4)
  cm.update(labels, preds)
  valid = labels != 255
  ious = []
  for c in range(4):
    inter = ((labels == c) & (preds == c) & valid).sum()
    union = (((labels == c) | (preds == c)) & valid).sum()
    ious.append(inter / union)
  np.testing.assert_allclose(cm.per_class_iou(), ious)
  np.testing.assert_allclose(cm.mean_iou(), np.mean(ious))
  np.testing.assert_allclose(cm.pixel_accuracy(),
                             (preds == labels)[valid].mean())
  keras_iou = metrics.MeanIoU(4)
  keras_iou.update_state(labels, preds)
  np.testing.assert_allclose(keras_iou.result(), np.mean(ious), rtol=1e-5)
  accuracy = metrics.PixelAccuracy()
  accuracy.update_state(labels, preds)
  np.testing.assert_allclose(accuracy.result(),
                             (preds == labels)[valid].mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="outside"):
    cm.update(np.full((2, 2), 7), np.zeros((2, 2)))


def test_tag_scores_and_map():
  true = np.array([[1, 1, 0, 1], [1, 0, 1, 0]])
  pred = np.array([[1, 1, 1, 0], [1, 0, 1, 0]])
  scores = metrics.tag_scores(true, pred)
  # tp = 2 (class 1 img0, class 2 img1); predicted 3, true 3.
  assert scores["precision"] == pytest.approx(2 / 3)
  assert scores["recall"] == pytest.approx(2 / 3)
  perfect = metrics.tag_mean_average_precision(true, true.astype(float))
  assert perfect == pytest.approx(1.0)
