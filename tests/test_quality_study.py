"""dis_tf.research.quality_study and quality_page: AUROC, the logistic fit,
the selective curve and the page, against NumPy references and hand
counts."""


import numpy as np
import pytest

from dis_tf import quality
from dis_tf import selection
from dis_tf.research import diagnosis
from dis_tf.research import quality_page as qp
from dis_tf.research import quality_remedies as qr
from dis_tf.research import quality_study as qs


def _matrices(ious, pixels=100):
  """2-class per-image matrices with the given fraction right."""
  out = []
  for iou in ious:
    right = int(round(iou * pixels))
    out.append([[right, pixels - right], [0, 0]])
  return np.asarray(out, np.int64)


def test_selective_miou_keeps_the_most_trusted_images():
  matrices = _matrices([0.9, 0.2, 0.8, 0.1])
  scores = [0.7, 0.1, 0.9, 0.3]          # Order: 2, 0, 3, 1.
  got = qs.selective_miou(scores, matrices, coverages=(0.5, 1.0))
  assert got["0.5"] == pytest.approx(
      selection.mean_iou_of(matrices[[2, 0]].sum(0)))
  assert got["1"] == pytest.approx(selection.mean_iou_of(matrices.sum(0)))


def test_error_relations_share_the_wrong_pixels_by_relation():
  matrix = np.zeros((21, 21), np.int64)
  matrix[1, 11] = 30     # Same hue (classes 1 and 11).
  matrix[1, 2] = 10      # Neighbouring hues.
  matrix[0, 5] = 60      # Background.
  matrix[3, 3] = 1000    # Right: not counted.
  got = qs.error_relations(matrix[None], 21)
  assert set(got) == set(diagnosis.RELATIONS)
  assert got["same_hue"] == pytest.approx(0.3)
  assert got["neighbour_hue"] == pytest.approx(0.1)
  assert got["background"] == pytest.approx(0.6)
  assert got["other"] == 0.0


def _split(rng, n, informative):
  """Parts of which `informative` tracks the image IoU, the rest noise."""
  ious = rng.random(n)
  parts = rng.normal(size=(n, len(qs.PARTS)))
  parts[:, qs.PARTS.index(informative)] = -3 * ious + 0.3 * rng.normal(
      size=n)
  baselines = np.c_[rng.normal(size=n), rng.normal(size=n)]
  return parts, baselines, _matrices(ious)


def test_study_orients_fits_and_ranks_on_held_out_images():
  rng = np.random.default_rng(2)
  result = qs.study(_split(rng, 200, "entropy"), _split(rng, 200, "entropy"))
  # Entropy falls as IoU rises: oriented by its sign, it ranks well, and
  # so does the score fitted on the other split; the noise parts do not.
  assert result["signs"]["entropy"] == -1.0
  assert result["auroc"]["entropy"] > 0.85
  assert result["auroc"]["score"] > 0.85
  assert abs(result["auroc"]["tag_agreement"] - 0.5) < 0.12
  sel = result["selective"]["score"]
  assert sel["0.5"] > sel["0.8"] > sel["1"]
  assert result["num_images"] == [200, 200]


def _run(rng, informative="max_probability"):
  r = qs.study(_split(rng, 120, informative), _split(rng, 120, informative))
  r["error_relations"] = {"background": 0.5, "same_hue": 0.3,
                          "neighbour_hue": 0.1, "other": 0.1}
  r["splits"] = ["val[:100]", "val[100:]"]
  r["latent_update"] = "u1"
  return r


@pytest.mark.parametrize("aurocs, sign, expected", [
    ((0.48, 0.53, 0.50), -1.0, "carries no resolved signal"),
    ((0.70, 0.72, 0.69), -1.0, "ranks the labelmaps on held-out images: "
     "images it reconstructs better have better labelmaps"),
    ((0.70, 0.72, 0.69), 1.0, "ranks the labelmaps on held-out images: "
     "images it reconstructs worse have better labelmaps"),
    ((0.30, 0.35, 0.28), -1.0, "does not keep, on the reported split"),
])
def test_the_page_reading_follows_the_numbers(aurocs, sign, expected):
  rng = np.random.default_rng(3)
  result = {"seeds": [0, 1, 2], "t_steps": 10,
            "runs": [_run(rng) for _ in range(3)]}
  for r, value in zip(result["runs"], aurocs):
    r["auroc"]["reconstruction"] = value
    r["signs"]["reconstruction"] = sign
  page = qp.format_page(result, "python tools/quality_study.py")
  assert "The reconstruction error at t = 0 " + expected in page
  assert "30% are confusions between two classes of one hue" in page
  # Where the reconstruction ranks, the same-hue clause says what it sees.
  assert ("what the reconstruction ranks by is the other errors" in page) == (
      "ranks the labelmaps" in expected)
  assert ("so the reconstruction cannot see it" in page) != (
      "ranks the labelmaps" in expected)
  assert "The study's combined score's AUROC >= 0.80: **" in page
  assert page.count("| 0 |") == 1


def _served_parts(rng, n):
  """Served parts whose max_probability rises with the per-image IoU, and
  the matrices of those IoUs."""
  ious = rng.uniform(0.1, 0.9, n)
  parts = rng.normal(size=(n, len(quality.PARTS)))
  parts[:, quality.PARTS.index("max_probability")] = ious + rng.normal(
      0, 0.05, n)
  return parts, _matrices(ious)


def test_served_study_scores_the_served_fit_and_its_fallback():
  rng = np.random.default_rng(5)
  select_parts, select_matrices = _served_parts(rng, 150)
  fit = quality.fit_parts(select_parts,
                          selection.mean_iou_of(select_matrices), 0,
                          "val[:150]")
  parts, matrices = _served_parts(rng, 150)
  served = qs.served_study(fit, parts, matrices)
  assert served["fitted"] and served["t_test"] == 0
  assert served["auroc"]["score"] > 0.85
  assert served["auroc"]["max_probability"] > 0.85
  sel = served["selective"]["score"]
  assert sel["0.5"] > sel["1"]
  # The oracle ranks by the images' own IoU: no score's top half beats it.
  oracle = served["selective"]["oracle"]
  assert oracle["0.5"] >= sel["0.5"] and oracle["1"] == pytest.approx(sel["1"])
  order = np.argsort(-selection.mean_iou_of(matrices))[:75]
  assert oracle["0.5"] == pytest.approx(
      selection.mean_iou_of(matrices[order].sum(0)))
  halves = served["trusted_half"]
  assert halves["oracle"]["image_mean"] >= halves["score"]["image_mean"] > 0
  # Unfitted: the served score is the max-softmax part itself.
  fallback = qs.served_study(None, parts, matrices)
  assert not fallback["fitted"]
  assert fallback["auroc"]["score"] == pytest.approx(
      fallback["auroc"]["max_probability"])


@pytest.mark.parametrize("gap, expected", [(0.05, "met"), (-0.05, "missed")])
def test_the_page_has_the_served_section_and_its_targets(gap, expected):
  rng = np.random.default_rng(6)
  result = {"seeds": [0, 1, 2], "t_steps": 10,
            "runs": [_run(rng) for _ in range(3)]}
  for r in result["runs"]:
    r["served"] = {"auroc": {"score": 0.7 + gap, "max_probability": 0.7},
                   "selective": {k: {"0.5": 0.6, "0.8": 0.55, "1": 0.5}
                                 for k in ("score", "max_probability")},
                   "t_test": 0, "fitted": True}
  page = qp.format_page(result, "cmd")
  assert "## The served score" in page
  assert ("The served score above max_probability in every seed: **"
          f"{expected}**") in page
  # A JSON from before the score was served renders without the section.
  for r in result["runs"]:
    del r["served"]
  assert "## The served score" not in qp.format_page(result, "cmd")


@pytest.mark.parametrize("oracle_top, expected", [
    (0.55, "is beyond any ranking of these images"),
    (0.75, "is within a ranking's reach"),
    ((0.55, 0.75, 0.62), "an interval that contains the +10 target"),
])
def test_the_oracle_reading_follows_the_numbers(oracle_top, expected):
  rng = np.random.default_rng(7)
  result = {"seeds": [0, 1, 2], "t_steps": 10,
            "runs": [_run(rng) for _ in range(3)]}
  tops = oracle_top if isinstance(oracle_top, tuple) else (oracle_top,) * 3
  for r, o in zip(result["runs"], tops):
    r["served"] = {"auroc": {"score": 0.8, "max_probability": 0.7},
                   "selective": {k: {"0.5": 0.53, "0.8": 0.51, "1": 0.5}
                                 for k in ("score", "max_probability")},
                   "t_test": 0, "fitted": True}
    r["served"]["selective"]["oracle"] = {"0.5": o, "0.8": o, "1": 0.5}
  page = qp.format_page(result, "cmd")
  assert "own IoU (the oracle ranking) minus the whole split" in page
  assert expected in page
  if not isinstance(oracle_top, tuple):
    share = round(100 * 3.0 / (100 * (oracle_top - 0.5)))
    assert f"gets {share}% of that gain" in page
  # A JSON from before the oracle renders without the sentence.
  for r in result["runs"]:
    del r["served"]["selective"]["oracle"]
  assert "oracle" not in qp.format_page(result, "cmd")


def test_trusted_half_counts_the_classes_a_half_lowers():
  # 3 classes; images 0, 1 trusted. Class 2 is right in image 2 (left out)
  # and wrong in image 1 (kept): over the half its IoU falls from 0.5 to 0.
  m = np.zeros((4, 3, 3), np.int64)
  m[0, 0, 0], m[0, 1, 1] = 50, 50
  m[1, 0, 0], m[1, 2, 1] = 90, 10
  m[2, 0, 0], m[2, 2, 2] = 80, 20
  m[3, 0, 0], m[3, 1, 0] = 60, 40
  got = qs.trusted_half([0.9, 0.8, 0.1, 0.2], m)
  ious = selection.mean_iou_of(m)
  assert got["image_mean"] == pytest.approx(ious[:2].mean() - ious.mean())
  # Class 0: 230/280 over all, 140/150 over the half (higher); class 1:
  # 50/150 -> 50/60 (higher); class 2: 20/30 -> 0/10 (lower).
  assert got["classes_lower"] == 1


@pytest.mark.parametrize("image_gain, lower, expected", [
    (0.15, 6, "because it weighs each class once"),
    (0.15, 1, "the classes weighed once do not explain the difference"),
    (0.031, 6, "the split mIoU hides little of the score's ranking here"),
])
def test_the_trusted_half_reading_follows_the_numbers(image_gain, lower,
                                                      expected):
  rng = np.random.default_rng(8)
  result = {"seeds": [0, 1, 2], "t_steps": 10,
            "runs": [_run(rng) for _ in range(3)]}
  for r, jitter in zip(result["runs"], (-0.01, 0.0, 0.01)):
    r["served"] = {"auroc": {"score": 0.8, "max_probability": 0.7},
                   "selective": {k: {"0.5": 0.53 + jitter, "0.8": 0.51,
                                     "1": 0.5}
                                 for k in ("score", "max_probability",
                                           "oracle")},
                   "trusted_half": {
                       "score": {"image_mean": image_gain + jitter,
                                 "classes_lower": lower},
                       "oracle": {"image_mean": 0.2, "classes_lower": 2}},
                   "t_test": 0, "fitted": True}
  page = qp.format_page(result, "cmd")
  assert "the quantity the score is fitted to rank" in page
  assert expected in page


def test_write_and_load_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  result = {"seeds": [0, 1], "t_steps": 10, "runs": [_run(rng), _run(rng)]}
  output = str(tmp_path / "QUALITY.md")
  page = qp.write(result, output, "cmd")
  loaded, command = qp.load(str(tmp_path / "QUALITY.json"))
  assert command == "cmd"
  assert qp.format_page(loaded, command) == page
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(Exception, match="not a JSON of"):
    qp.load(str(tmp_path / "bad.json"))


def test_run_model_scores_a_run_and_its_phase_a_baseline(tmp_path, mini_run,
                                                         mini_benchmark):
  model_dir = str(tmp_path / "run")
  config, _ = mini_run(model_dir, phases=("a",), num_select=3)
  result = qs.run_model(model_dir, 2)
  assert result["num_images"] == [3, mini_benchmark["num_val"] - 3]
  assert set(result["auroc"]) == {"score", *qs.PARTS, *qs.BASELINES}
  assert set(result["selective"]["score"]) == {"0.5", "0.8", "1"}
  assert result["splits"] == ["val[:3]", "val[3:]"]
  assert sum(result["error_relations"].values()) == pytest.approx(1.0)
  served = result["served"]
  assert served["t_test"] == config.latent.t_test
  assert set(served["auroc"]) == {"score", "max_probability"}
  # A random tiny model's IoUs may all tie at the median (AUROC nan).
  score = served["auroc"]["score"]
  assert np.isnan(score) or 0.0 <= score <= 1.0
  assert 0.0 <= served["selective"]["score"]["1"] <= 1.0


def _remedies_result():
  runs = []
  for top in (0.1, 0.2, 0.3):
    remedies = {name: {"auroc": 0.8, "top_half": top}
                for name in ("served",) + qr.REMEDIES}
    runs.append({"served": {"remedies": remedies}})
  return {"runs": runs}


def test_the_page_carries_the_remedies_section():
  rng = np.random.default_rng(6)
  result = {"seeds": [0, 1, 2], "t_steps": 10,
            "runs": [_run(rng) for _ in range(3)]}
  for r, extra in zip(result["runs"], _remedies_result()["runs"]):
    r["served"] = {"auroc": {"score": 0.8, "max_probability": 0.7},
                   "selective": {k: {"0.5": 0.6, "0.8": 0.55, "1": 0.5}
                                 for k in ("score", "max_probability")},
                   "t_test": 0, "fitted": True, **extra["served"]}
  page = qp.format_page(result, "cmd")
  assert "## Two remedies for the trusted half" in page
  assert page.index("## Two remedies") < page.index("## Targets")
  assert "- The remedy class_iou " in page
