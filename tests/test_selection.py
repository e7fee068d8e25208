"""dis_tf.selection: the served setting's margin rule and its record."""

import json
import os

import numpy as np
import pytest

from dis_tf import config as config_lib
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
