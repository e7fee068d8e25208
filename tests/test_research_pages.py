"""The results pages' statistics and computed sentences (issue 26, point 2).

Every verdict and every reading sentence is a branch chosen by the numbers:
each test feeds numbers on which the branch flips and checks both texts.
"""

import numpy as np
import pytest

from dis_tf.research import ablation
from dis_tf.research import page_sections
from dis_tf.research import reading
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


# ------------------------------------------------------------ the reading
J = np.array([1.0, -1.0, 2.0, -2.0, 0.0]) / 100   # per-seed spread, points


def _diag(both=-5.0, u1=-0.5, per_pixel=-0.3, rising=(False, False, True),
          rec=None, flips=None):
  """One model's diagnosis per seed: mIoU deltas (points) over t0 = 0.45,
  each with spread J / 4 (so a non-zero mean is resolved) except where 0."""
  out = []
  for s in range(5):
    spread = lambda d, s=s: (d / 100 + J[s] / 4) if d else J[s]
    t0 = 0.45
    miou = {"t0": t0, "both": t0 + spread(both), "u1": t0 + spread(u1),
            "v1": t0, "per_pixel": t0 + spread(u1) + spread(per_pixel)}
    fixed, broke = flips or (0.15, 0.08)
    out.append({
        "num_images": 100, "t_test": 30, "v1_share": {"median": 0.9},
        "miou": miou,
        "reconstruction": dict(rec or {
            "soft_t0": 80.0, "argmax_t0": 570.0, "truth": 440.0,
            "soft_t": 70.0, "argmax_t": 510.0,
            "truth_beats_argmax_t0": 0.9}),
        "flips": {rel: {"fixed": fixed + J[s] / 10, "broke": broke,
                        "neither": 0.0} for rel in ("background",
                                                    "same_hue")},
        "sweep": [{"step_size": size, "steps": 1, "miou": 0.4,
                   "objective": [1.0, 1.2 if up else 0.8]}
                  for size, up in zip((0.1, 0.3, 1.0), rising)]})
  return out


def _seeds(diag, both=0.48, tags=0.55, classifier=0.28, after=0.70):
  name = "DIS t_train=10"
  return [{"seed": s, "diagnosis": {name: d},
           "weak": {"pseudo_label_miou": {"10": both + J[s] / 4},
                    "pseudo_label_miou_tags_only": {"10": tags},
                    "tags": {name: {"before": {"f1": 0.70},
                                    "after": {"f1": after + J[s] / 4}}}},
           "classifier_tags": {
               "classifier": {"f1": classifier + J[s] / 4, "recall": 0.19},
               "given": {"f1": 0.70}}}
          for s, d in enumerate(diag)]



def _reading(seeds, latent=None):
  plan = ablation.AblationPlan(t_trains=(10,), t_tests=(0, 30))
  return reading.section(seeds, plan, dict(latent or {}, step_size=0.1))


@pytest.mark.parametrize("both,u1,phrase", [
    (-5.0, 2.0, "Freezing v1 turns the steps' loss into a gain."),
    (-5.0, 0.0, "no gain over t=0 is resolved"),
    (-5.0, -2.0, "but the steps still lose against t=0"),
    (1.0, 3.0, "gain where they gained already, and gain more"),
    (0.0, 3.0, "turns steps of no resolved effect into a gain"),
    (-1.0, -3.0, "Freezing v1 does worse than the paper's step."),
    (-1.0, -1.0, "Freezing v1 makes no resolved difference"),
])
def test_reading_test_time_steps_follow_the_numbers(both, u1, phrase):
  text = _reading(_seeds(_diag(both=both, u1=u1)))
  assert phrase in text
  # The fixed causal sentence of the old page is gone.
  assert "is what turns the test-time steps" not in text


@pytest.mark.parametrize("per_pixel,phrase", [
    (-0.5, "plain u1 is ahead"), (0.5, "per_pixel is ahead"),
    (0.0, "minus v1 frozen: no resolved difference")])
def test_reading_per_pixel_vs_u1(per_pixel, phrase):
  assert phrase in _reading(_seeds(_diag(per_pixel=per_pixel)))


def test_reading_sweep_both_branches():
  assert "steps of size 1 end with a higher objective" in _reading(
      _seeds(_diag()))
  assert "every step size lowers the objective" in _reading(
      _seeds(_diag(rising=(False, False, False))))


def test_reading_decoding_both_branches():
  text = _reading(_seeds(_diag()))
  assert "reconstructs better than the predicted labels in 90%" in text
  assert "better than the ground truth itself" in text
  assert "lower the soft error by the larger share" in text
  flipped = {"soft_t0": 500.0, "argmax_t0": 400.0, "truth": 450.0,
             "soft_t": 490.0, "argmax_t": 300.0,
             "truth_beats_argmax_t0": 0.3}
  text = _reading(_seeds(_diag(rec=flipped)))
  assert "in only 30% of images: no signal" in text
  assert "reconstructs no better than the truth" in text
  assert "lower the labels' error by at least as large a share" in text


@pytest.mark.parametrize("flips,phrase", [
    ((0.15, 0.08), "more fixed than broken"),
    ((0.08, 0.15), "more broken than fixed"),
    ((0.10, 0.10), "no resolved difference (")])
def test_reading_flips(flips, phrase):
  text = _reading(_seeds(_diag(flips=flips)))
  assert phrase in text
  assert "1/8-scale" not in text


@pytest.mark.parametrize("both,phrase", [
    (0.48, "the image term lowers the pseudo labels"),
    (0.60, "the image term raises the pseudo labels"),
    (0.55, "the image term does not resolvably change")])
def test_reading_pseudo_labels(both, phrase):
  assert phrase in _reading(_seeds(_diag(), both=both))


def test_reading_pseudo_labels_names_the_training_step():
  assert "PSEUDO_LABELS.md" in _reading(_seeds(_diag()))
  text = _reading(_seeds(_diag()), {"train_update": "per_pixel"})
  assert "uses the \"per_pixel\" rule in training mode too" in text


@pytest.mark.parametrize("classifier,after,phrases", [
    (0.28, 0.70, ("below them", "does not resolvably change the F1")),
    (0.80, 0.76, ("above them", "raises the F1")),
    (0.70, 0.64, ("not resolvably different from them", "lowers the F1"))])
def test_reading_tag_cleaning(classifier, after, phrases):
  text = _reading(_seeds(_diag(), classifier=classifier, after=after))
  for phrase in phrases:
    assert phrase in text
  # No claim about a rule that was never tried; the page that tries others
  # is named.
  assert "not a different cleaning rule" not in text
  assert "docs/results/TAG_CLEANING.md" in text
  assert "docs/results/ITERATED_CLEANING.md" in text


# ------------------------------------------------------------ departures
def test_departures_state_the_runs_own_update_evidence_and_the_three():
  plan = ablation.AblationPlan(t_trains=(10,), t_tests=(0, 30))
  latent = {"update": "per_pixel", "clip_norm": 10.0}
  text = page_sections.departures(_seeds(_diag(per_pixel=-0.5)), plan,
                                  latent)
  assert "with one seed before this run" not in text
  assert "No recorded selection exists for this choice" in text
  assert "per_pixel minus u1 -0.5 (" in text and "plain u1 ahead" in text
  text = page_sections.departures(_seeds(_diag(per_pixel=0.5)), plan,
                                  latent)
  assert "per_pixel ahead" in text
  for item in ("*Gradient clipping* (`latent.clip_norm = 10`",
               "shortens u1's step", "*Subnet-2's input*",
               "softmax(u3), not the logits u3",
               "*Weight of the tag term*", "h * w * 3 * mean_c BCE"):
    assert item in text
  text = page_sections.departures(_seeds(_diag()), plan,
                                  {"clip_norm": None})
  assert "Gradient clipping" not in text and "Test-time step" not in text
  assert "*Subnet-2's input*" in text


@pytest.mark.parametrize("this, other, phrase", [
    # Ahead by 2 points in every seed: the interval clears 0.
    ([0.52, 0.53, 0.51, 0.54, 0.52], [0.50, 0.51, 0.49, 0.52, 0.50],
     "**this run's setting is taken**"),
    # Behind in every seed: the other run's setting is ahead and stays.
    ([0.48, 0.49, 0.47, 0.50, 0.48], [0.50, 0.51, 0.49, 0.52, 0.50],
     "that run's setting is ahead; **that run's setting stays**"),
    # Ahead on average but not resolved: the default stays.
    ([0.53, 0.49, 0.52, 0.50, 0.51], [0.50, 0.51, 0.49, 0.52, 0.50],
     "no resolved gain; **that run's setting stays**"),
    # One seed has no interval: never taken.
    ([0.60], [0.50], "no resolved gain; **that run's setting stays**"),
])
def test_setting_choice_follows_the_selection_interval(this, other, phrase):
  text = page_sections.setting_choice(this, other)
  assert text.endswith(phrase + ".")
  assert text.startswith(tables.paired_text(
      tables.paired_stats(this, other), per_seed=True))


def _provenance(code, latent=None, scoring=None):
  """A seed's `provenance` where every row's phases ran `code`."""
  rows = {name: {"code": {"semi": code}, "latent": dict(latent or {})}
          for name in ("baseline", "DIS t_train=5")}
  return {"provenance": {"rows": rows, "scoring": scoring or code}}


def test_provenance_one_version_several_and_unrecorded():
  names = ["baseline", "DIS t_train=5"]
  clean = {"commit": "a" * 40, "dirty": False}
  one = page_sections.provenance_lines([_provenance(clean)] * 2, names)
  assert one == ["* Code version: every row trained and scored by aaaaaaa "
                 "(the phases' fingerprints)."]
  other = {"commit": "b" * 40, "dirty": True}
  mixed = [_provenance(clean), _provenance(clean, scoring=other)]
  lines = page_sections.provenance_lines(mixed, names)
  assert "scoring: aaaaaaa, bbbbbbb with uncommitted changes" in lines[0]
  assert "the rows are not one code version" in lines[0]
  unrecorded = page_sections.provenance_lines(
      [_provenance({"commit": None, "dirty": None})], names)
  assert "baseline: not recorded" in unrecorded[0]
  assert "not recorded (this run's JSON predates" in (
      page_sections.provenance_lines([{}], names)[0])


def test_provenance_names_the_training_settings_that_differ():
  seed = _provenance({"commit": "a" * 40, "dirty": False})
  seed["provenance"]["rows"]["baseline"]["latent"] = {
      "latent.t_train": 0, "latent.train_update": "both",
      "latent.step_size": 0.1}
  seed["provenance"]["rows"]["DIS t_train=5"]["latent"] = {
      "latent.t_train": 5, "latent.train_update": "per_pixel",
      "latent.step_size": 0.1}
  lines = page_sections.provenance_lines([seed], ["baseline",
                                                  "DIS t_train=5"])
  assert lines[1] == ("* Training-mode latent settings that differ between "
                      "rows (fingerprints): baseline: train_update=both; "
                      "DIS t_train=5: train_update=per_pixel")
  same = _provenance({"commit": "a" * 40, "dirty": False},
                     latent={"latent.step_size": 0.1})
  assert len(page_sections.provenance_lines([same], ["baseline",
                                                     "DIS t_train=5"])) == 1
