"""The results pages' statistics and computed sentences (issue 26, point 2).

Every verdict and every reading sentence is a branch chosen by the numbers:
each test feeds numbers on which the branch flips and checks both texts.
"""

import numpy as np
import pytest

from dis_tf.research import tables


def test_mean_std_is_the_sample_std():
  mean, std = tables.mean_std([0.1, 0.2, np.nan, 0.4])
  assert mean == pytest.approx(np.mean([0.1, 0.2, 0.4]))
  assert std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
  assert tables.mean_std([0.3]) == (0.3, 0.0)


def test_paired_text_shows_the_interval_and_one_seed_has_none():
  p = tables.paired_stats([0.52, 0.53, 0.51], [0.50, 0.50, 0.50])
  # d = 2, 3, 1: sd 1, t(0.95, 2) = 2.920, half = 2.920 / sqrt(3).
  assert p["sd"] == pytest.approx(1.0)
  assert p["low"] == pytest.approx(2.0 - 2.920 / np.sqrt(3))
  assert tables.paired(
      [0.52, 0.53, 0.51], [0.50, 0.50, 0.50]) == (
          "+2.0 (sd 1.0, 90% CI [+0.3, +3.7]; ahead 3, behind 0 of 3; per "
          "seed +2.0, +3.0, +1.0)")
  one = tables.paired_stats([0.41], [0.40])
  assert tables.paired_text(one) == ("+1.0 (one seed, no interval; ahead 1, "
                                     "behind 0 of 1)")
  assert tables.verdict(one, 0.0) == "not resolved"


@pytest.mark.parametrize("after,threshold,seeds_ok,word", [
    ((0.52, 0.53, 0.51), 0.0, True, "met"),          # interval [+0.3, +3.7]
    ((0.52, 0.53, 0.51), 0.0, False, "missed"),      # a per-seed rule fails
    ((0.52, 0.53, 0.51), 1.0, True, "not resolved"),  # straddles +1
    ((0.52, 0.53, 0.51), 4.0, True, "missed"),        # all below +4
    ((0.48, 0.47, 0.49), 0.0, True, "missed"),
])
def test_verdict_by_the_interval(after, threshold, seeds_ok, word):
  p = tables.paired_stats(after, [0.50, 0.50, 0.50])
  assert tables.verdict(p, threshold, seeds_ok=seeds_ok) == word


def test_combined_verdict():
  assert tables.combined(["met", "met"]) == "met"
  assert tables.combined(["met", "not resolved"]) == "not resolved"
  assert tables.combined(["not resolved", "missed"]) == "missed"
