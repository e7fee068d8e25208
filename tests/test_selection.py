"""dis_tf.selection: the t_test choice rule and its record in config.json."""

import json
import os

import pytest

from dis_tf import config as config_lib
from dis_tf import selection


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


def test_record_selection_writes_config_and_evidence(tmp_path):
  config = config_lib.synthetic()
  config.model_dir = str(tmp_path)
  scores = {0: 0.25, 10: 0.27, 30: 0.26}
  path = selection.record_selection(config, 10, scores, "val[:100]", 100)
  assert config_lib.ExperimentConfig.load(str(tmp_path)).latent.t_test == 10
  with open(path) as f:
    record = json.load(f)
  assert record["t_test"] == 10 and record["split"] == "val[:100]"
  assert record["mean_iou"] == {"0": 0.25, "10": 0.27, "30": 0.26}
  assert os.path.basename(path) == selection.SELECTION_FILENAME
  line = selection.describe(10, scores, "val[:100]", 100)
  assert "t_test = 10" in line and "t=10: 27.0" in line
