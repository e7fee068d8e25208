"""dis_tf.research.diagnosis: class relations, v1 share, reconstruction,
flips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf.research import diagnosis
from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling.dis_model import build_dis_model


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(0)
  config = config_lib.synthetic()
  config.model.tiny_width = 8
  return build_dis_model(config)


def _examples(count=2, size=40, seed=0):
  rng = np.random.RandomState(seed)
  out = []
  for _ in range(count):
    image = rng.randn(1, size, size, 3).astype(np.float32)
    mask = rng.randint(0, 21, (1, size, size)).astype(np.int32)
    mask[0, :3] = 255
    out.append({"image": tf.constant(image), "mask": tf.constant(mask)})
  return out


@pytest.mark.parametrize("a, b, relation", [
    (0, 5, "background"), (7, 0, "background"), (0, 0, "background"),
    (1, 11, "same_hue"), (3, 13, "same_hue"), (1, 1, "same_hue"),
    (1, 2, "neighbour_hue"), (10, 1, "neighbour_hue"),  # hues 9 and 0
    (1, 5, "other"), (4, 17, "other"),
])
def test_relation_matrix_follows_the_generator_hues(a, b, relation):
  assert diagnosis.RELATIONS[diagnosis.relation_matrix()[a, b]] == relation


def test_v1_share_equals_the_direct_gradient_split(model):
  image = tf.constant(np.random.RandomState(1).randn(2, 40, 40, 3),
                      tf.float32)
  u1, v1 = model.backbone(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  with tf.GradientTape() as tape:
    tape.watch([u1, v1])
    total = tf.reduce_sum(latent_lib.latent_objective(model, u1, v1, target))
  gu1, gv1 = tape.gradient(total, [u1, v1])
  su = tf.reduce_sum(tf.square(gu1), [1, 2, 3]).numpy()
  sv = tf.reduce_sum(tf.square(gv1), [1]).numpy()
  np.testing.assert_allclose(diagnosis.v1_share(model, u1, v1, target),
                             sv / (su + sv), rtol=1e-3)


def test_truth_logits_decode_to_the_class_fractions():
  mask = np.zeros((16, 16), np.int32)
  mask[:8, :8] = 3            # Cell (0, 0): all class 3.
  mask[8:, :8] = 255          # Cell (1, 0): nothing labelled.
  mask[:8, 8:12] = 5          # Cell (0, 1): half 5, half 0.
  fallback = tf.fill([1, 2, 2, 21], -7.0)
  logits = diagnosis.truth_logits(mask, (2, 2), fallback, 21)
  probs = tf.nn.softmax(logits)[0].numpy()
  assert probs[0, 0, 3] > 0.999
  np.testing.assert_allclose(probs[0, 1, [0, 5]], [0.5, 0.5], atol=1e-4)
  np.testing.assert_allclose(logits[0, 1, 0], fallback[0, 1, 0])


def test_diagnose_reports_every_measure(model):
  report = diagnosis.diagnose(model, _examples(), t_test=3,
                              sweep=((0.1, 3), (0.3, 1)))
  assert report["num_images"] == 2
  assert 0.0 <= report["v1_share"]["median"] <= 1.0
  assert set(report["miou"]) == {"t0"} | set(latent_lib.UPDATES)
  for value in report["reconstruction"].values():
    assert np.isfinite(value) and value >= 0
  if report["flipped"] > 0:
    total = sum(sum(v.values()) for v in report["flips"].values())
    assert total == pytest.approx(1.0)
  for entry in report["sweep"]:
    assert entry["objective"][0] == pytest.approx(1.0)
    assert len(entry["objective"]) == 11
  with pytest.raises(ValueError, match="no examples"):
    diagnosis.diagnose(model, [], t_test=1)
