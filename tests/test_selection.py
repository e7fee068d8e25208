"""dis_tf.selection: the served setting's margin rule and its record."""

import json
import os

import numpy as np
import pytest

from dis_tf import config as config_lib
from dis_tf import evaluation
from dis_tf import selection
from dis_tf.metrics import ConfusionMatrix


@pytest.mark.parametrize("scores, expected", [
    ({0: 0.30, 10: 0.33, 30: 0.31}, 10),
    ({0: 0.30, 10: 0.30, 30: 0.29}, 0),     # A tie goes to fewer steps.
    ({30: 0.5, 0: 0.2}, 30),
    ({"10": 0.4, "0": 0.4}, 0),             # Keys from JSON are strings.
])
def test_choose_t_test_takes_the_best_and_breaks_ties_low(scores, expected):
  assert selection.choose_t_test(scores) == expected


def test_choose_t_test_without_scores_fails():
  with pytest.raises(ValueError, match="no scores"):
    selection.choose_t_test({})


def _matrices(num_images, correct, seed=0, num_classes=3, pixels=50):
  """Per-image confusion matrices with `correct` of each image's pixels
  right (the rest spread over the other classes)."""
  rng = np.random.default_rng(seed)
  out = np.zeros((num_images, num_classes, num_classes), np.int64)
  for i in range(num_images):
    labels = rng.integers(0, num_classes, pixels)
    right = rng.random(pixels) < correct
    predictions = np.where(right, labels, (labels + 1) % num_classes)
    np.add.at(out[i], (labels, predictions), 1)
  return out


def test_mean_iou_of_equals_the_confusion_matrix():
  for matrix in _matrices(6, 0.6, seed=3):
    cm = ConfusionMatrix(3)
    cm.matrix = matrix
    assert selection.mean_iou_of(matrix) == pytest.approx(cm.mean_iou())
  # A class absent from labels and predictions is not counted.
  matrix = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
  cm = ConfusionMatrix(3)
  cm.matrix = matrix
  assert selection.mean_iou_of(matrix) == pytest.approx(cm.mean_iou())


def test_bootstrap_gain_matches_a_numpy_loop():
  a, b = _matrices(20, 0.7, seed=1), _matrices(20, 0.6, seed=1)
  got = selection.bootstrap_gain(a, b, num_resamples=200, seed=5)
  rng = np.random.default_rng(5)
  counts = np.zeros((200, 20))
  np.add.at(counts, (np.arange(200)[:, None], rng.integers(0, 20, (200, 20))),
            1.0)
  diffs = []
  for row in counts:
    pick = lambda m: ConfusionMatrix(3)
    ma, mb = pick(a), pick(b)
    ma.matrix = np.tensordot(row, a, 1).astype(np.int64)
    mb.matrix = np.tensordot(row, b, 1).astype(np.int64)
    diffs.append(ma.mean_iou() - mb.mean_iou())
  assert got["low"] == pytest.approx(np.quantile(diffs, 0.05))
  assert got["high"] == pytest.approx(np.quantile(diffs, 0.95))
  whole = ConfusionMatrix(3)
  whole.matrix = a.sum(0)
  other = ConfusionMatrix(3)
  other.matrix = b.sum(0)
  assert got["gain"] == pytest.approx(whole.mean_iou() - other.mean_iou())


def test_a_clear_gain_is_taken():
  grid = {(0, None): _matrices(100, 0.5), (10, None): _matrices(100, 0.8),
          (10, 0.0): _matrices(100, 0.6)}
  decision = selection.choose_setting(grid)
  assert decision["taken"] and decision["interval"]["low"] > 0
  assert (decision["t_test"], decision["tag_refinement"]) == (10, None)


def test_a_gain_within_the_noise_is_not_taken():
  # The same images, a few pixels better: best on the split, but the
  # bootstrap interval reaches below 0, so the plain prediction serves.
  plain = _matrices(100, 0.6, seed=2)
  noisy = plain.copy()
  rng = np.random.default_rng(9)
  for i in rng.choice(100, 12, replace=False):
    noisy[i] = _matrices(1, 0.62, seed=int(i) + 50)[0]
  grid = {(0, None): plain, (30, 0.0): noisy}
  scores = {k: selection.mean_iou_of(m.sum(0)) for k, m in grid.items()}
  assert scores[(30, 0.0)] > scores[(0, None)]
  decision = selection.choose_setting(grid)
  assert decision["best"] == {"t_test": 30, "refinement": "paper"}
  assert decision["interval"]["low"] <= 0 < decision["interval"]["high"]
  assert not decision["taken"]
  assert (decision["t_test"], decision["tag_refinement"]) == (0, None)


def test_ties_go_to_fewer_steps_then_to_no_refinement():
  same = _matrices(30, 0.7)
  grid = {(10, 0.0): same, (0, 0.0): same, (10, None): same,
          (0, None): _matrices(30, 0.4)}
  decision = selection.choose_setting(grid)
  assert decision["best"] == {"t_test": 0, "refinement": "paper"}
  grid[(0, 2.0)] = same
  grid[(0, None)] = same
  assert selection.choose_setting(grid)["best"] == {"t_test": 0,
                                                     "refinement": "off"}


def test_the_default_must_be_scored():
  with pytest.raises(ValueError, match="default"):
    selection.choose_setting({(10, None): _matrices(5, 0.5)})


def test_record_selection_writes_config_and_evidence(tmp_path):
  config = config_lib.synthetic()
  config.model_dir = str(tmp_path)
  grid = {(0, None): _matrices(100, 0.5), (10, 2.0): _matrices(100, 0.8),
          (10, None): _matrices(100, 0.6)}
  decision = selection.choose_setting(grid)
  path = selection.record_selection(config, decision, "val[:100]", 100)
  stored = config_lib.ExperimentConfig.load(str(tmp_path))
  assert stored.latent.t_test == 10 and stored.latent.tag_refinement == 2.0
  with open(path) as f:
    record = json.load(f)
  assert record["t_test"] == 10 and record["split"] == "val[:100]"
  assert record["refinement"] == "bias=2" and record["taken"]
  assert set(record["scores"]) == {"off", "bias=2"}
  assert os.path.basename(path) == selection.SELECTION_FILENAME
  text = selection.describe(decision, "val[:100]", 100)
  assert "Served: t_test = 10, refinement bias=2." in text
  assert "lower end is above 0, so it serves" in text


def _update_grid(scores_by_key, num_images=60):
  """Per-image matrices whose split mIoU orders as `scores_by_key`."""
  return {k: _matrices(num_images, v, seed=7) for k, v in
          scores_by_key.items()}


def test_the_update_is_chosen_with_the_steps():
  grid = _update_grid({(0, None): 0.4, (10, None, "u1"): 0.8,
                       (10, None, "both"): 0.6, (10, None, "per_pixel"): 0.7})
  decision = selection.choose_setting(grid)
  assert decision["taken"]
  assert (decision["t_test"], decision["update"]) == (10, "u1")
  assert decision["best"] == {"t_test": 10, "refinement": "off",
                              "update": "u1"}
  # One row per (refinement, update); t = 0 (no step) repeated in each.
  assert list(decision["scores"]) == ["off, u1", "off, both",
                                      "off, per_pixel"]
  t0 = selection.mean_iou_of(grid[(0, None)].sum(0))
  for update in selection.UPDATES:
    row = decision["scores"][f"off, {update}"]
    assert row["0"] == pytest.approx(t0)
    assert row["10"] == pytest.approx(
        selection.mean_iou_of(grid[(10, None, update)].sum(0)))
  assert decision["rule"] == f"{selection.RULE}; {selection.UPDATE_RULE}"
  assert selection.choose_setting(
      {(0, None): grid[(0, None)]})["rule"] == selection.RULE
  text = selection.describe(decision, "val[:100]", 60)
  assert "| refinement, update | t=0 | t=10 |" in text
  assert "Served: t_test = 10, refinement off; latent update u1." in text


def test_an_update_tie_goes_to_the_simpler_update():
  same = _matrices(60, 0.7, seed=4)
  grid = {(0, None): _matrices(60, 0.3, seed=4), (10, None, "per_pixel"): same,
          (10, None, "both"): same, (10, None, "u1"): same}
  assert selection.choose_setting(grid)["update"] == "u1"
  del grid[(10, None, "u1")]
  assert selection.choose_setting(grid)["update"] == "both"


def test_with_t0_served_the_update_is_the_best_with_steps():
  # t = 0 scores best, so it serves; the steps' update (for serving_steps
  # requests) is still the best-scoring one among the candidates with steps.
  grid = _update_grid({(0, None): 0.9, (10, None, "u1"): 0.5,
                       (30, None, "u1"): 0.55, (10, None, "per_pixel"): 0.7,
                       (10, 0.0, "both"): 0.6})
  decision = selection.choose_setting(grid)
  assert decision["t_test"] == 0 and decision["interval"] is None
  assert decision["update"] == "per_pixel"
  assert "latent update per_pixel (for requests with steps)" in (
      selection.describe(decision, "val[:100]", 60))


def test_record_selection_stores_the_update(tmp_path):
  config = config_lib.synthetic()
  config.model_dir = str(tmp_path)
  assert config.latent.update != "u1"
  decision = selection.choose_setting(_update_grid(
      {(0, None): 0.4, (10, None, "u1"): 0.8, (10, None, "both"): 0.5}))
  selection.record_selection(config, decision, "val[:100]", 60)
  stored = config_lib.ExperimentConfig.load(str(tmp_path))
  assert (stored.latent.t_test, stored.latent.update) == (10, "u1")


def test_select_setting_scores_each_update_as_evaluation_does(
    tiny_model, eval_examples):
  # Each update's scores equal an evaluation of the model set to that
  # update (so the compiled latent loop is not a stale trace of another
  # update), and the model's own update is restored.
  model = tiny_model(seed=5, step_size=1.0)
  examples = eval_examples(sizes=((64, 64), (48, 64)), seed=3)
  own = model.latent_update
  decision, count = selection.select_setting(
      model, examples, [3], num_classes=21, refinements=[None],
      updates=("u1", "both"))
  assert count == 2 and model.latent_update == own
  for update in ("u1", "both"):
    model.latent_update = update
    reference = evaluation.evaluate_model(model, examples, [0, 3],
                                          log_every=0)
    got = decision["scores"][f"off, {update}"]
    for setting in reference["settings"]:
      assert got[str(setting["t_test"])] == pytest.approx(
          setting["mean_iou"], abs=1e-9)
  # The two updates move different blocks: their step results differ.
  assert decision["scores"]["off, u1"]["3"] != decision["scores"][
      "off, both"]["3"]
