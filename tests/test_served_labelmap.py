"""dis_tf.research.served_labelmap: the section's numbers and branches."""

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import image_ops
from dis_tf import metrics
from dis_tf.research import ablation
from dis_tf.research import served_labelmap

REFS = ("off", "paper", "bias=2", "bias=4")


def _seed(seed, miou, served=("0", "off"), export=None):
  """A seed result whose every class IoU is `miou[(ref, t)]`."""
  grid = {ref: {t: [miou[(ref, t)]] * 21 for t in ("0", "30")}
          for ref in REFS}
  decision = {"t_test": int(served[0]), "refinement": served[1],
              "interval": None if served == ("0", "off") else {"low": 0.01}}
  if export is not None:
    decision["export_miou"] = export
  return {"seed": seed, "refine": {"val": {"DIS t_train=10": grid}},
          "served": {"DIS t_train=10": decision}}


def _results(gain_off, undo, seeds=5):
  """Per seed: off t0 = 0.40, the paper's refinement costs 0.05 at t0 and
  0.05 - undo at t30; the steps add gain_off without refinement."""
  out = []
  for s in range(seeds):
    jitter = 0.002 * (s - 2)
    m = {}
    for ref in REFS:
      m[(ref, "0")] = 0.40 + jitter
      m[(ref, "30")] = 0.40 + gain_off + jitter + 0.003 * (-1) ** s
    m[("paper", "0")] -= 0.05
    m[("paper", "30")] -= 0.05 - undo
    out.append(_seed(s, m))
  return out


PLAN = ablation.AblationPlan(seeds=(0, 1, 2, 3, 4), t_trains=(10,),
                             t_tests=(0, 30))


def test_paired_interval_and_signs_match_numpy():
  a, b = np.array([0.5, 0.52, 0.49, 0.55]), np.array([0.5, 0.5, 0.5, 0.5])
  p = served_labelmap.paired(a, b)
  d = 100 * (a - b)
  assert p["mean"] == pytest.approx(d.mean())
  assert p["sd"] == pytest.approx(d.std(ddof=1))
  half = 2.353 * d.std(ddof=1) / 2  # t(0.95, df=3) * sd / sqrt(4)
  assert p["low"] == pytest.approx(d.mean() - half)
  assert (p["ahead"], p["behind"]) == (2, 1)


def test_reading_says_the_steps_undo_the_refinement_when_they_do():
  text = served_labelmap.gain_reading(_results(0.0, 0.04), PLAN,
                                      ["DIS t_train=10"])
  assert "the steps undoing the refinement" in text
  assert "within the noise" in text


def test_reading_says_the_gain_is_the_networks_own_when_cost_is_flat():
  text = served_labelmap.gain_reading(_results(0.03, 0.0), PLAN,
                                      ["DIS t_train=10"])
  assert "does not change measurably" in text
  assert "Without refinement the steps help" in text
  text = served_labelmap.gain_reading(_results(-0.03, -0.04), PLAN,
                                      ["DIS t_train=10"])
  assert "costs more after the steps" in text
  assert "Without refinement the steps hurt" in text


def test_targets_flip_with_the_numbers():
  ok = _results(0.03, 0.0)
  page = served_labelmap.section(ok, PLAN, ["DIS t_train=10"])
  assert "served >= plain in every seed: **met**" in page
  # Serving the paper's refinement at t0 loses 5 points in every seed.
  bad = [dict(r, served={"DIS t_train=10": {
      "t_test": 0, "refinement": "paper", "interval": {"low": 0.01}}})
         for r in ok]
  page = served_labelmap.section(bad, PLAN, ["DIS t_train=10"])
  assert "served >= plain in every seed: **missed** (behind in 5 of 5)" in page
  assert "served - best fixed > -0.5: **missed**" in page


def test_export_agreement_target():
  results = _results(0.03, 0.0)
  for r in results:
    r["served"]["DIS t_train=10"]["export_miou"] = (
        0.40 + 0.002 * (r["seed"] - 2) + 0.001)
  page = served_labelmap.section(results, PLAN, ["DIS t_train=10"])
  assert "Serving module = evaluation within 0.3 mIoU: **met**" in page
  results[0]["served"]["DIS t_train=10"]["export_miou"] -= 0.01
  page = served_labelmap.section(results, PLAN, ["DIS t_train=10"])
  assert "Serving module = evaluation within 0.3 mIoU: **missed**" in page


def _canvas_results(fit, squash, crop=0.40):
  """Per seed, every class IoU of each canvas rule on both splits."""
  out = []
  for s, (f, q) in enumerate(zip(fit, squash)):
    rules = {"fit eval": [f] * 21, "fit crop": [crop] * 21,
             "squash crop": [q] * 21}
    out.append({"seed": s, "canvas": {
        k: {"DIS t_train=10": rules} for k in ("select", "val")}})
  return out


@pytest.mark.parametrize("fit,squash,word", [
    ((0.45, 0.46, 0.47), (0.44, 0.44, 0.45), "**met**"),
    ((0.45, 0.43, 0.47), (0.44, 0.44, 0.45), "**not resolved**"),
    ((0.43, 0.42, 0.44), (0.44, 0.44, 0.45), "**missed**"),
])
def test_canvas_target_follows_the_paired_differences(fit, squash, word):
  text = served_labelmap.canvas_section(_canvas_results(fit, squash),
                                        ["DIS t_train=10", "ensemble"])
  target = [line for line in text.splitlines()
            if line.startswith("* DIS t_train=10")]
  assert target == [f"* DIS t_train=10: {word} ("
                    + served_labelmap.paired_text(served_labelmap.paired(
                        np.asarray(fit), np.asarray(squash))) + ")."]
  # The table shows both splits; the absent "ensemble" row is left out.
  assert text.count("| DIS t_train=10 |") == 2 and "ensemble" not in text


def test_canvas_grid_rules_on_a_tiny_model(tiny_model):
  """fit eval at S = crop equals fit crop; squash is resize, argmax."""
  model = tiny_model(width=8)
  assert model.eval_crop_size == 32
  rng = np.random.default_rng(0)
  image = image_ops.normalize_image(
      rng.uniform(0, 255, (1, 24, 40, 3)).astype(np.float32))
  mask = rng.integers(0, 21, (1, 24, 40)).astype(np.int32)
  data = [{"image": image, "mask": mask}]
  got = served_labelmap.canvas_grid({"m": model}, data, crop_size=32)["m"]
  assert got["fit eval"] == got["fit crop"]
  out = model.infer(tf.image.resize(image, (32, 32)), 0)
  pred = tf.image.resize(tf.nn.softmax(out["u3"]), (24, 40))[0].numpy()
  cm = metrics.ConfusionMatrix(21)
  cm.update(mask[0], pred.argmax(-1))
  expected = [None if np.isnan(v) else v for v in cm.per_class_iou()]
  assert got["squash crop"] == pytest.approx(expected, nan_ok=True)
