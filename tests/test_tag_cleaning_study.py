"""The cleaner-tags study (issue 26, point 4): counts and F1 against NumPy
by hand, the margin rule's branches, the page's computed reading, and the
tool end to end on the session's trained run."""

import json
import os

import numpy as np
import pytest

from dis_tf.research import tag_cleaning_page
from dis_tf.research import tag_cleaning_study as study


def _tags(rows, num_classes=4):
  out = np.zeros((len(rows), num_classes), bool)
  for i, row in enumerate(rows):
    out[i, [0] + list(row)] = True
  return out


def test_counts_and_f1_leave_background_out():
  true = _tags([[1, 2], [3]])
  cleaned = _tags([[1, 3], []])
  counts = study.tag_counts(true, cleaned)
  # Image 0: 1 right, 3 wrong, 2 missed; image 1: 3 missed.
  np.testing.assert_array_equal(counts, [[1, 1, 1], [0, 0, 1]])
  tp, fp, fn = 1, 1, 2
  assert study.f1_of(counts.sum(0)) == pytest.approx(2 * tp /
                                                     (2 * tp + fp + fn))
  assert study.f1_of(np.zeros(3)) == 0.0


def test_rules():
  probabilities = np.array([[1.0, 0.9, 0.2, 0.6]])
  given = _tags([[2, 3]])
  assert study.clean(probabilities, given, "paper", 0.5).tolist() == [
      [True, True, False, True]]
  # "remove" keeps only given tags above the threshold.
  assert study.clean(probabilities, given, "remove", 0.5).tolist() == [
      [True, False, False, True]]
  # "labelmap" does the same with the plain labelmap's class areas.
  areas = np.array([[0.5, 0.3, 0.0, 0.2]])
  assert study.clean(areas, given, "labelmap", 0.0).tolist() == [
      [True, False, False, True]]
  assert study.clean(areas, given, "labelmap", 0.25).tolist() == [
      [True, False, False, False]]


def test_the_labelmap_rule_is_chosen_when_its_areas_separate_and_scored():
  true, given, p = _seed_data(n=60)
  # The tag probabilities rank the spurious given tags (0.85) above the
  # true ones (about 0.8), while the plain labelmap never draws them.
  p = np.where(given & ~true, 0.85, p)
  areas = np.where(true, 0.2, 0.0)
  areas[:, 0] = 0.5
  d = study.choose(true, given, {1.0: p}, areas)
  assert d["chosen"][:2] == [None, "labelmap"]
  assert d["interval"]["low"] > 0
  assert "plain/labelmap/0.01" in d["f1"]
  assert len(d["f1"]) == (len(study.RULES) * len(study.THRESHOLDS)
                          + len(study.AREA_THRESHOLDS))
  result = study.score_seed(true, given, {1.0: p}, areas)
  assert result["report"]["chosen"] == pytest.approx(1.0)
  assert result["separation"]["labelmap_given"] == 1.0
  assert result["separation"]["given"] == 0.0
  # Without areas nothing of the labelmap is scored.
  plain = study.score_seed(true, given, {1.0: p})
  assert "labelmap_given" not in plain["separation"]
  assert all("labelmap" not in k for k in plain["decision"]["f1"])


def test_plain_areas_are_the_class_shares_of_the_plain_argmax(tiny_model,
                                                             eval_examples):
  from dis_tf import evaluation
  model = tiny_model()
  examples = eval_examples()
  areas, names = study.plain_areas(model, examples, 2, batch_size=2)
  assert names == ["img_0.jpg", "img_1.jpg"]
  for example, row in zip(examples, areas):
    probabilities = evaluation.predict(model, example["image"], [0],
                                       refinements=[None])[0]["probabilities"]
    labelmap = np.argmax(probabilities, -1)
    expected = [np.mean(labelmap == c) for c in range(21)]
    np.testing.assert_allclose(row, expected)


def _seed_data(n=60, seed=0):
  """Given tags with one spurious tag in every image; the probabilities
  put true tags at 0.8, absent classes at 0.2, spurious given tags at 0.45."""
  rng = np.random.RandomState(seed)
  true = np.zeros((n, 6), bool)
  true[:, 0] = True
  true[np.arange(n), 1 + rng.randint(0, 5, n)] = True
  given = true.copy()
  spurious = 1 + (np.argmax(true[:, 1:], 1) + 1 + rng.randint(0, 4, n)) % 5
  given[np.arange(n), spurious] = True
  p = np.where(true, 0.8, 0.2) + rng.uniform(-0.05, 0.05, true.shape)
  p[given & ~true] = 0.45
  return true, given, p


def test_choose_takes_a_non_default_only_past_the_margin():
  true, given, p = _seed_data()
  # Threshold 0.5 drops the spurious tags (0.45) already: the default is
  # best (or tied, and ties go to it), and it stays.
  d = study.choose(true, given, {1.0: p})
  assert d["chosen"] == list(study.DEFAULT) and d["interval"] is None
  # Spurious tags at 0.65: only thresholds above it drop them, in every
  # image: a resolved gain, taken.
  d = study.choose(true, given, {1.0: np.where(given & ~true, 0.65, p)})
  assert d["chosen"] == [1.0, "paper", 0.7]
  assert d["interval"]["low"] > 0
  # One image of 60 gains: the best is not the default, but its gain is not
  # resolved, so the default stays.
  one = p.copy()
  one[0][given[0] & ~true[0]] = 0.55
  d = study.choose(true, given, {1.0: one})
  assert d["best"] != list(study.DEFAULT)
  assert d["interval"]["low"] <= 0 and d["chosen"] == list(study.DEFAULT)


def test_score_seed_chooses_on_even_images_and_reports_odd_ones():
  true, given, p = _seed_data(n=40)
  result = study.score_seed(true, given, {1.0: p, 4.0: p})
  assert result["num_images"] == [20, 20]
  rep = slice(1, None, 2)
  noisy = study.f1_of(study.tag_counts(true[rep], given[rep]).sum(0))
  assert result["report"]["noisy"] == pytest.approx(noisy)
  assert result["report"]["oracle"] >= result["report"]["chosen"] - 1e-12
  # The probabilities separate the spurious given tags perfectly.
  assert result["separation"]["given"] == 1.0
  assert result["separation"]["spurious_share"] == pytest.approx(0.5)


def _result(chosen, noisy, oracle, given_auroc=0.7, not_given=0.6,
            follows_given=0.9, follows_true=0.7, labelmap_given=None):
  runs = []
  for c, n, o in zip(chosen, noisy, oracle):
    runs.append({
        "decision": {"chosen": list(study.DEFAULT), "best": [1.0, "paper",
                                                             0.4],
                     "interval": {"gain": 0.01, "low": -0.01, "high": 0.03},
                     "f1": {}},
        "report": {"chosen": c, "default": c, "noisy": n, "oracle": o,
                   "oracle_candidate": [1.0, "remove", 0.3]},
        "num_images": [150, 150], "t_train": 10,
        "separation": {"given": given_auroc, "not_given": not_given,
                       "spurious_share": 0.2, "missed_share": 0.05,
                       "follows_given": follows_given,
                       "follows_true": follows_true}})
    if labelmap_given is not None:
      runs[-1]["separation"]["labelmap_given"] = labelmap_given
      runs[-1]["decision"]["chosen"] = [None, "labelmap", 0.0]
  return {"seeds": list(range(len(runs))), "num_images": 300,
          "weights": [1.0], "runs": runs}


@pytest.mark.parametrize("chosen, oracle, target, ceiling", [
    ([0.70, 0.71, 0.70], [0.72, 0.73, 0.72], "**missed**", "below +5"),
    ([0.78, 0.79, 0.78], [0.79, 0.80, 0.79], "**met**", "what choosing"),
])
def test_reading_follows_the_numbers(chosen, oracle, target, ceiling):
  lines = tag_cleaning_page.reading(_result(chosen, [0.70, 0.70, 0.70],
                                            oracle))
  assert target in lines[0]
  assert ceiling in lines[1]


@pytest.mark.parametrize("given_auroc, follows_given, phrases", [
    (0.7, 0.9, ("A removal rule can only gain", "follows the given tags")),
    (0.5, 0.6, ("at or below chance", "follows the truth at least")),
])
def test_reading_mechanism_branches(given_auroc, follows_given, phrases):
  lines = tag_cleaning_page.reading(_result(
      [0.7] * 3, [0.7] * 3, [0.71] * 3, given_auroc=given_auroc,
      follows_given=follows_given))
  for phrase in phrases:
    assert phrase in lines[2]


@pytest.mark.parametrize("labelmap_given, phrase", [
    (0.9, "tells which classes an image shows better"),
    (0.6, "adds nothing to the tag probability"),
])
def test_reading_compares_the_labelmap_with_the_tag_head(labelmap_given,
                                                         phrase):
  result = _result([0.7] * 3, [0.7] * 3, [0.71] * 3, given_auroc=0.7,
                   labelmap_given=labelmap_given)
  lines = tag_cleaning_page.reading(result)
  assert "by the plain-labelmap rule in 3" in lines[0]
  assert phrase in lines[3]
  assert f"probability {labelmap_given:.2f}" in lines[3]
  page = tag_cleaning_page.format_page(result, "cmd")
  assert "plain labelmap, area > 0" in page
  assert f"| {labelmap_given:.3f} |" in page
  # A page from before the rule renders without it.
  old = tag_cleaning_page.reading(_result([0.7] * 3, [0.7] * 3, [0.71] * 3))
  assert len(old) == 3 and "labelmap" not in " ".join(old)


@pytest.mark.slow
def test_tool_writes_the_page_and_rerenders_it(tmp_path, trained_run,
                                               run_tool):
  output = tmp_path / "TAG_CLEANING.md"
  run_tool("tools/tag_cleaning_study.py",
           f"--model_dirs={trained_run['model_dir']}", "--seeds=7",
           "--num_images=6", f"--output={output}")
  page = output.read_text()
  saved = json.loads((tmp_path / "TAG_CLEANING.json").read_text())
  run = saved["runs"][0]
  assert saved["seeds"] == ["7"] and run["num_images"] == [3, 3]
  assert "| 7 |" in page and "## Reading" in page
  for key in ("chosen", "default", "noisy", "oracle"):
    assert 0.0 <= run["report"][key] <= 1.0
  # Every candidate was scored on the selection half.
  assert len(run["decision"]["f1"]) == (len(study.WEIGHTS) * len(study.RULES)
                                        * len(study.THRESHOLDS)
                                        + len(study.AREA_THRESHOLDS))
  assert 0.0 <= run["separation"]["labelmap_given"] <= 1.0
  again = tmp_path / "again.md"
  run_tool("tools/tag_cleaning_study.py",
           f"--from_json={tmp_path / 'TAG_CLEANING.json'}",
           f"--output={again}")
  assert again.read_text().split("## Per seed")[1] == page.split(
      "## Per seed")[1]
  assert os.path.exists(tmp_path / "again.json")


def test_a_plain_labelmap_pass_of_other_images_is_an_error(trained_run,
                                                           monkeypatch):
  """The areas must be of the images the cleaning passes scored, in their
  order: a mis-paired pass is refused, not scored."""
  real = study.plain_areas

  def reversed_names(*args, **kwargs):
    areas, names = real(*args, **kwargs)
    return areas[::-1], names[::-1]
  monkeypatch.setattr(study, "plain_areas", reversed_names)
  with pytest.raises(ValueError, match="plain labelmap pass differ"):
    study.run_model(trained_run["model_dir"], 4, weights=(1.0,))
