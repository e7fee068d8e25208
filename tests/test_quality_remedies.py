"""dis_tf.research.quality_remedies: the class table, the shares, the
leave-one-out contributions against hand counts, the remedies' fits, and a
page section whose reading follows the numbers."""

import numpy as np
import pytest

from dis_tf import quality
from dis_tf import selection
from dis_tf.research import quality_remedies as qr
from dis_tf.research import quality_study as qs


def _matrix(rows):
  return np.asarray(rows, np.int64)


def test_shares_class_table_and_contributions_by_hand():
  # Rows are the truth, columns the prediction (metrics.ConfusionMatrix).
  a = _matrix([[6, 0, 0], [0, 4, 0], [0, 0, 0]])   # Right everywhere.
  b = _matrix([[5, 0, 0], [0, 0, 5], [0, 0, 0]])   # Class 1 called 2.
  matrices = np.stack([a, b])
  np.testing.assert_allclose(qr.predicted_shares(matrices),
                             [[0.6, 0.4, 0.0], [0.5, 0.0, 0.5]])
  # IoU over the split: class 0 11/11, class 1 4/9, class 2 0/5.
  np.testing.assert_allclose(qr.class_table(matrices), [1.0, 4 / 9, 0.0])
  whole = (1.0 + 4 / 9 + 0.0) / 3
  without_a = (1.0 + 0.0 + 0.0) / 3      # b alone: class 1 0/5, class 2 0/5.
  without_b = (1.0 + 1.0) / 2            # a alone: class 2 absent.
  np.testing.assert_allclose(qr.contributions(matrices),
                             [whole - without_a, whole - without_b])
  # A class the split never shows has nothing known of it: 0, not NaN.
  assert qr.class_table(a[None])[2] == 0.0


def _run(rng, n):
  """Parts of which max_probability tracks each image's IoU (its class-1
  pixels partly called background); the images whose class-1 pixels are
  all called class 2 are wrong in a way no part shows, only the class
  table (class 2's IoU over the split is 0)."""
  matrices = []
  for _ in range(n):
    missed = int(rng.integers(0, 40))
    m = np.zeros((3, 3), np.int64)
    m[0, 0] = 40
    if rng.random() < 0.3:
      m[1, 2] = 60
    else:
      m[1, 1], m[1, 0] = 60 - missed, missed
    matrices.append(m)
  matrices = np.asarray(matrices)
  parts = rng.normal(size=(n, len(quality.PARTS)))
  ious = np.where(matrices[:, 1, 2] > 0, 0.6, selection.mean_iou_of(matrices))
  parts[:, quality.PARTS.index("max_probability")] += 10 * ious
  return parts, matrices


def test_served_entry_is_the_served_fit_and_class_iou_sees_a_bad_class():
  rng = np.random.default_rng(0)
  s_parts, s_matrices = _run(rng, 120)
  r_parts, r_matrices = _run(rng, 200)
  got = qr.measure(s_parts, s_matrices, r_parts, r_matrices)
  assert set(got) == {"served"} | set(qr.REMEDIES)
  fit = quality.fit_parts(s_parts, selection.mean_iou_of(s_matrices), 0, "s")
  served = qs.served_study(fit, r_parts, r_matrices)
  assert got["served"]["auroc"] == pytest.approx(served["auroc"]["score"])
  whole = selection.mean_iou_of(r_matrices.sum(0))
  assert got["served"]["top_half"] == pytest.approx(
      served["selective"]["score"]["0.5"] - whole)
  # The wrong images are the ones predicted as class 2, which the served
  # parts do not show: the class table moves them out of the trusted half.
  assert got["class_iou"]["top_half"] > got["served"]["top_half"] + 0.05


def _result(top_half, auroc, served_top=0.02):
  runs = []
  for top, au in zip(top_half, auroc):
    remedies = {name: {"auroc": au, "top_half": top}
                for name in qr.REMEDIES}
    remedies["served"] = {"auroc": 0.85, "top_half": served_top}
    runs.append({"served": {"remedies": remedies}})
  return {"seeds": list(range(len(runs))), "runs": runs}


@pytest.mark.parametrize("top_half, auroc, expected", [
    ((0.14, 0.15, 0.16), (0.9, 0.91, 0.92),
     ["reaches the +10 target", "lifts the trusted half above the served",
      "is above 0.80"]),
    ((0.03, 0.04, 0.05), (0.7, 0.71, 0.72),
     ["misses the +10 target", "lifts the trusted half above the served",
      "is below 0.80"]),
    ((0.0, 0.01, -0.01), (0.75, 0.85, 0.8),
     ["misses the +10 target", "lowers the trusted half below the served",
      "is not resolved against 0.80"]),
    ((-0.05, 0.2, 0.15), (0.8, 0.8, 0.8),
     ["is not resolved against the +10 target",
      "is not resolved as different from the served"]),
])
def test_the_section_reading_follows_the_numbers(top_half, auroc, expected):
  section = qr.section(_result(top_half, auroc), 10.0, 80.0)
  assert section["lines"][0].startswith("## Two remedies")
  assert len(section["reading"]) == len(qr.REMEDIES)
  for text in expected:
    assert text in section["reading"][0], (text, section["reading"][0])


def test_a_json_without_remedies_renders_no_section():
  result = _result((0.1, 0.1), (0.8, 0.8))
  del result["runs"][0]["served"]["remedies"]
  assert qr.section(result, 10.0, 80.0) == {"lines": [], "reading": []}

