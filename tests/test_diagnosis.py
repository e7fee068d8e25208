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


def _start(model, seed):
  """(u1, v1, target, and the latent objective's gradient on u1 and v1) of
  two random images."""
  image = tf.constant(np.random.RandomState(seed).randn(2, 40, 40, 3),
                      tf.float32)
  u1, v1 = model.backbone(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  with tf.GradientTape() as tape:
    tape.watch([u1, v1])
    total = tf.reduce_sum(latent_lib.latent_objective(model, u1, v1, target))
  return (u1, v1, target) + tuple(tape.gradient(total, [u1, v1]))


def test_v1_share_equals_the_direct_gradient_split(model):
  u1, v1, target, gu1, gv1 = _start(model, 1)
  su = tf.reduce_sum(tf.square(gu1), [1, 2, 3]).numpy()
  sv = tf.reduce_sum(tf.square(gv1), [1]).numpy()
  np.testing.assert_allclose(diagnosis.v1_share(model, u1, v1, target),
                             sv / (su + sv), rtol=1e-3)


def test_step_shift_ratio_equals_the_direct_steps(model):
  # The first step's move of u3 through each block, by autodiff on (u1,
  # v1) and the heads (linear in (u1, v1), so a difference is the move).
  u1, v1, target, gu1, gv1 = _start(model, 2)
  u3 = model.subnet1(u1, v1)
  by_v1 = model.subnet1(u1, v1 - gv1) - u3
  by_u1 = model.subnet1(u1 - gu1, v1) - u3
  norm = lambda x: np.linalg.norm(x.numpy(), axis=-1).mean(axis=(1, 2))
  np.testing.assert_allclose(
      diagnosis.step_shift_ratio(model, u1, v1, target),
      norm(by_v1) / norm(by_u1), rtol=2e-3)


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
  assert report["step_shift_ratio"]["median"] > 0
  assert report["step_shift_ratio"]["cells"] == 16 * 16
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


def _flip_case():
  """Two 40x40 examples with hand-made label maps per call (see
  test_flips_and_miou_per_update_match_a_hand_count)."""
  mask1 = np.full((40, 40), 1, np.int32)
  mask1[:, 20:] = 11
  mask1[:3] = 255                 # 3 ignored rows: 37 x 40 = 1480 labelled.
  pred0_1 = np.full((40, 40), 1)  # t = 0: all class 1.
  both1 = pred0_1.copy()
  both1[3:10, :5] = 5             # 35 px 1 -> 5 (other), true 1: broke.
  both1[:, 20:30] = 11            # 370 labelled px 1 -> 11 (same hue): fixed.
  both1[:, 30:35] = 2             # 185 px 1 -> 2 (neighbour), true 11: neither.
  both1[:, 35:] = 0               # 185 px 1 -> 0 (background): neither.
  both1[:3] = 7                   # Ignored pixels flip too: never counted.
  mask2 = np.full((40, 40), 3, np.int32)  # 1600 labelled.
  pred0_2 = np.zeros((40, 40))
  both2 = np.full((40, 40), 3)    # 1600 px 0 -> 3 (background): fixed.
  perfect = lambda m: np.where(m == 255, 0, m)
  return [
      {"mask": mask1, "t0": pred0_1, "both": both1, "u1": pred0_1,
       "v1": perfect(mask1), "per_pixel": np.zeros((40, 40))},
      {"mask": mask2, "t0": pred0_2, "both": both2, "u1": pred0_2,
       "v1": perfect(mask2), "per_pixel": np.zeros((40, 40))},
  ]


def test_flips_and_miou_per_update_match_a_hand_count(model, monkeypatch):
  """The label maps of each call are set by hand (the real latent steps
  still run for the other measures), so every flip and mIoU is known."""
  case = _flip_case()
  calls = {"example": -1}

  class Runner(diagnosis._Runner):

    def __call__(self, u1, v1, target, steps, step_size=None,
                 update="both", **kwargs):
      out = dict(super().__call__(u1, v1, target, steps, step_size,
                                  update, **kwargs))
      if steps == 0 and step_size is None:
        calls["example"] += 1
        key = "t0"
      else:
        key = "t0" if step_size is not None else update  # Sweep: t0's map.
        assert step_size is not None or steps == 3
      labels = case[calls["example"]][key]
      out["probabilities"] = tf.one_hot(labels.astype(np.int32), 21)[None]
      return out

  def to_original(probabilities, fitted, original, canvas_size):
    del fitted, canvas_size
    assert tuple(probabilities.shape[:2]) == tuple(original)
    return probabilities

  monkeypatch.setattr(diagnosis, "_Runner", Runner)
  monkeypatch.setattr(image_ops, "canvas_to_original", to_original)
  examples = [{"image": tf.constant(np.random.RandomState(i).randn(
      1, 40, 40, 3).astype(np.float32)), "mask": tf.constant(c["mask"][None])}
              for i, c in enumerate(case)]
  report = diagnosis.diagnose(model, examples, t_test=3, sweep=((0.1, 2),))
  assert calls["example"] == 1

  # Flips: 35 + 370 + 185 + 185 + 1600 = 2375 of 1480 + 1600 = 3080.
  assert report["flipped"] == pytest.approx(2375 / 3080)
  expected = {r: {o: 0.0 for o in diagnosis.OUTCOMES}
              for r in diagnosis.RELATIONS}
  expected["same_hue"]["fixed"] = 370 / 2375
  expected["other"]["broke"] = 35 / 2375
  expected["neighbour_hue"]["neither"] = 185 / 2375
  expected["background"]["neither"] = 185 / 2375
  expected["background"]["fixed"] = 1600 / 2375
  assert report["flips"].keys() == expected.keys()
  for relation, outcomes in expected.items():
    assert report["flips"][relation] == pytest.approx(outcomes), relation
  # mIoU over the classes in truth or prediction, counted by hand:
  # t0 / u1: class 1 740 / 1480, classes 0, 3, 11 at 0.
  # both: class 1 705 / 740, 11 370 / 740, 3 1, classes 0, 2, 5 at 0.
  # v1 perfect (1, 3, 11); per_pixel all background (0, 1, 3, 11 at 0).
  assert report["miou"] == pytest.approx({
      "t0": 0.5 / 4, "u1": 0.5 / 4, "both": (705 / 740 + 0.5 + 1) / 6,
      "v1": 1.0, "per_pixel": 0.0})
  assert report["sweep"][0]["miou"] == pytest.approx(0.5 / 4)
