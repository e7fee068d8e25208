"""Numerics: extreme latent step sizes and degenerate images stay finite.

Through the public API only (`model.infer`, `model.pseudo_targets`,
`train_on_batch`, the serving module's signatures), so these tests cover
whichever latent method is the default. Step sizes 1e-6 .. 1e6, with and
without gradient clipping; all-black, all-white, constant and random
images; images whose mask / tags hold a single class. Mixed precision is
refused with a clear message.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import image_ops
from dis_tf.modeling.dis_model import build_dis_model
from dis_tf.modeling.subnets import refine_labelmap
from dis_tf.serving import module as serving_module

SIZE = 32
STEP_SIZES = (1e-6, 1e-3, 1.0, 1e3, 1e6)
STEPS = 4


@pytest.fixture(scope="module")
def model(tiny_model):
  model = tiny_model(width=8, crop_size=SIZE, t_train=STEPS)
  model.set_phase("c")
  return model


def _images():
  """name -> [1, S, S, 3] uint8-range float image."""
  rng = np.random.RandomState(0)
  half = np.zeros((SIZE, SIZE, 3), np.float32)
  half[:, SIZE // 2:] = 255.0
  return {
      "black": np.zeros((SIZE, SIZE, 3), np.float32),
      "white": np.full((SIZE, SIZE, 3), 255.0, np.float32),
      "gray": np.full((SIZE, SIZE, 3), 128.0, np.float32),
      "red": np.tile(np.array([255.0, 0, 0], np.float32), (SIZE, SIZE, 1)),
      "half": half,
      "noise": rng.randint(0, 256, (SIZE, SIZE, 3)).astype(np.float32),
  }


def _batch():
  images = _images()
  names = sorted(images)
  raw = np.stack([images[n] for n in names])
  return names, image_ops.normalize_image(tf.constant(raw))


def _assert_finite(tree, what):
  for key, value in tree.items():
    value = np.asarray(value)
    if value.dtype.kind == "f":
      bad = ~np.isfinite(value)
      assert not bad.any(), f"{what}: {key} has {bad.sum()} non-finite values"


@pytest.mark.parametrize("clip_norm", [10.0, None])
@pytest.mark.parametrize("step_size", STEP_SIZES)
def test_infer_is_finite(model, step_size, clip_norm):
  names, images = _batch()
  for tags in (None, np.eye(21, dtype=np.float32)[[0] * len(names)]):
    out = model.infer(images, steps=STEPS, tags=tags, step_size=step_size,
                      clip_norm=clip_norm, return_features=True)
    out = {k: v.numpy() for k, v in out.items()}
    _assert_finite(out, f"step {step_size}, clip {clip_norm}, tags "
                   f"{tags is not None}, images {names}")
    assert ((out["probabilities"] >= 0) & (out["probabilities"] <= 1)).all()
    assert ((out["tag_probabilities"] >= 0) &
            (out["tag_probabilities"] <= 1)).all()
    assert (out["tag_probabilities"][:, 0] == 1).all()


@pytest.mark.parametrize("step_size", [1e3, 1e6])
def test_refined_probabilities_sum_to_one_at_large_steps(model, step_size):
  _, images = _batch()
  out = model.infer(images, steps=STEPS, step_size=step_size,
                    clip_norm=None)
  np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0,
                             atol=1e-4)


def test_refinement_is_exact_where_the_linear_product_underflows():
  """softmax(u3) * sigmoid(v3) underflows to an all-zero pixel in float32
  when the likeliest class's tag is saturated off (sigmoid(-200) ~ 1e-87)
  and the class whose tag is on is e^-200 less likely (softmax ~ 1e-87);
  in log space both are e^-200 and the pixel is an exact 50 / 50. (Large
  steps of a small test model need not reach such logits, so this is
  checked on the function itself.)"""
  u3 = np.full((1, 2, 2, 21), -1e4, np.float32)  # Background included.
  u3[..., 1], u3[..., 2] = -200.0, 0.0
  v3 = np.full((1, 21), -1e4, np.float32)
  v3[0, 1], v3[0, 2] = 1e4, -200.0
  probs = refine_labelmap(tf.constant(u3), tf.constant(v3)).numpy()
  np.testing.assert_allclose(probs[..., 1], 0.5, atol=1e-5)
  np.testing.assert_allclose(probs[..., 2], 0.5, atol=1e-5)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_probabilities_sum_to_one_at_moderate_steps(model):
  _, images = _batch()
  for step_size in (1e-6, 1e-3, 1.0):
    out = model.infer(images, steps=STEPS, step_size=step_size)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0,
                               atol=1e-4)


def test_tiny_step_size_changes_little(model):
  _, images = _batch()
  base = model.infer(images, steps=0)["probabilities"].numpy()
  tiny = model.infer(images, steps=STEPS, step_size=1e-6)[
      "probabilities"].numpy()
  np.testing.assert_allclose(tiny, base, atol=1e-3)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("step_size", STEP_SIZES)
def test_pseudo_targets_are_finite_and_valid(step_size, soft, tiny_model):
  model = tiny_model(seed=1, width=8, crop_size=SIZE, t_train=STEPS,
                     step_size=step_size, soft_pseudo_labels=soft)
  names, images = _batch()
  n = len(names)
  u1, v1 = model.backbone(images, training=False)
  target = image_ops.image_target(images, tf.shape(u1)[1:3])
  # Single-class tags (one object class) and the all-background case.
  tags = np.zeros((n, 21), np.float32)
  tags[:, 0] = 1
  tags[1:, 15] = 1
  mask = np.zeros((n, SIZE, SIZE), np.int32)
  mask[0, :4] = 255
  labels, soft_labels, cleaned = model.pseudo_targets(u1, v1, target, tags,
                                                      mask)
  labels = labels.numpy()
  assert ((labels >= 0) & (labels < 21) | (labels == 255)).all()
  assert (labels[0, :4] == 255).all()
  _assert_finite({"tags": cleaned.numpy()}, f"step {step_size}")
  if soft:
    _assert_finite({"soft": soft_labels.numpy()}, f"step {step_size}")
    assert ((soft_labels.numpy() >= 0) & (soft_labels.numpy() <= 1)).all()
  else:
    assert soft_labels is None
    assert set(np.unique(cleaned.numpy())) <= {0.0, 1.0}


def _train_batch(images, single_class):
  n = images.shape[0]
  f = image_ops.feature_size(SIZE)
  mask = np.full((n, SIZE, SIZE), single_class, np.int32)
  tags = np.zeros((n, 21), np.float32)
  tags[:, 0] = 1
  if single_class:
    tags[:, single_class] = 1
  return {
      "image": images,
      "image_small": image_ops.image_target(images, (f, f)),
      "mask": mask,
      "tags": tags,
      "is_weak": np.array([i % 2 for i in range(n)], np.float32),
  }


@pytest.mark.parametrize("step_size", [1e-6, 1e6])
def test_training_on_degenerate_images_keeps_weights_finite(step_size,
                                                           tiny_model):
  """Stage-2 steps (pseudo labels from the latent loop) on black, white,
  constant and single-class batches: losses and every weight finite."""
  model = tiny_model(seed=2, width=8, crop_size=SIZE, t_train=STEPS,
                     step_size=step_size)
  names, images = _batch()
  for phase in ("c", "semi"):
    model.set_phase(phase)
    model.compile(keras.optimizers.SGD(1e-2, momentum=0.9))
    for single_class in (0, 7):  # all background; one object class
      for i in range(len(names)):
        batch = _train_batch(images[i:i + 1].numpy().repeat(2, 0),
                             single_class)
        logs = model.train_on_batch(batch, return_dict=True)
        _assert_finite(logs, f"{phase} {names[i]} class {single_class}")
  for weight in model.weights:
    assert np.isfinite(weight.numpy()).all(), weight.path


@pytest.mark.parametrize("step_size", [1e-6, 1e6])
def test_serving_signatures_are_finite(model, step_size):
  module = serving_module.build_serving_module(
      model, t_test=STEPS, input_size=SIZE, latent_step_size=step_size)
  raw = np.stack(list(_images().values())).astype(np.uint8)
  out = serving_module.predict_in_process(model, raw, STEPS, SIZE,
                                          module=module)
  _assert_finite(out, f"predict_images step {step_size}")
  encoded = [tf.io.encode_png(im).numpy() for im in raw]
  out = serving_module.predict_in_process(model, encoded, STEPS, SIZE,
                                          module=module)
  _assert_finite(out, f"serving_steps step {step_size}")
  assert ((out["class_ids"] >= 0) & (out["class_ids"] < 21)).all()
  steps = module.serving_steps(tf.constant(encoded),
                               tf.constant([0, 1, 2, 3, 4, 1000], tf.int32))
  _assert_finite({k: v.numpy() for k, v in steps.items()},
                 f"per-example steps, step {step_size}")


def test_mixed_precision_is_refused_with_a_clear_message(tiny_config):
  previous = keras.config.dtype_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    # The message names the setting to use instead (--model.precision).
    with pytest.raises(ValueError, match=r"float32 dtype policy.*"
                       r"mixed_float16.*latent.*--model\.precision"):
      build_dis_model(tiny_config(t_train=STEPS))
  finally:
    keras.mixed_precision.set_global_policy(previous)
  # And the float32 default still builds.
  assert build_dis_model(tiny_config(t_train=STEPS)).dtype_policy.name == (
      "float32")
