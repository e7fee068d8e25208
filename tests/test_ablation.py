"""tools/ablation.py end to end in a tiny configuration (keeps it working)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from dis_tf import config as config_lib
from dis_tf.research import ablation
from dis_tf.research import results_page
from dis_tf.research import table3_targets
from dis_tf.research import tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_ablation_tool_writes_a_results_page(tmp_path, mini_benchmark,
                                             tool_env):
  # The benchmark and its tfds data exist: the tool reads them unchanged.
  data = mini_benchmark["root"]
  output = str(tmp_path / "RESULTS.md")
  env = tool_env()
  command = [
      sys.executable, "tools/ablation.py", f"--data_root={data}",
      f"--workdir={tmp_path / 'runs'}", f"--output={output}", "--seeds=0",
      "--t_train=2", "--t_test=0,2", "--eval_limit=3", "--weak_limit=3",
      "--select_split=val[:2]", "--eval_split=val[2:]",
      "--diagnosis_images=2", "--steps_scale_percent=1", "--tiny_width=8",
      "--crop_size=32", "--data.eval_crop_size=32"]
  first = subprocess.run(command, check=True, cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert "already scored" not in first.stdout
  page = open(output).read()
  # Each part of the seed's run is timed, in the log and on the page.
  for label in ("stage 1 (phases a, b, c)", "stage 2, DIS t_train=2",
                "scoring val[2:]", "diagnosis of the latent steps"):
    assert f"[seed 0] {label}: " in first.stdout
  assert "per seed (mean): stage 1 (phases a, b, c) " in page
  for heading in ("## Targets", "Per-class IoU on the reported split",
                  "At the t_test chosen on the selection split",
                  "Diagnosis of the latent steps", "Pseudo labels of the weak",
                  "Noisy vs cleaned tags"):
    assert heading in page
  assert "Settings chosen on `val[:2]`" in page
  # One process trained and scored every row: one code version.
  assert "* Code version: every row trained and scored by " in page
  assert "on `val[2:]`" in page
  for target in range(1, 9):
    assert f"\n{target}. " in page
  for row in ("| baseline | 0 |", "| setup1 (t_train=0) | 2 |",
              "| DIS t_train=2 | 0 |", "| ensemble | 2 |",
              "| pseudo-label mIoU, tag term only |",
              "| cleaned-tag f1 |", "| classifier alone |",
              "| DIS t_train=2 | 0.1 x 30 |"):
    assert row in page
  # The page's numbers and plot go to docs/results/ next to the page.
  results_dir = tmp_path / "docs" / "results"
  assert os.path.exists(str(results_dir / "results_miou_vs_t_test.png"))
  assert os.path.exists(str(results_dir / "results.json"))
  assert "](docs/results/results_miou_vs_t_test.png)" in page
  # Re-rendering from the JSON reproduces the page's tables and reading.
  again = str(tmp_path / "again" / "RESULTS.md")   # a directory not made yet
  subprocess.run(
      [sys.executable, "tools/ablation.py",
       f"--from_json={results_dir / 'results.json'}", f"--output={again}"],
      check=True, cwd=REPO, env=env, capture_output=True, timeout=600)
  rerendered = open(again).read()
  assert "Page re-rendered from that run's JSON" in rerendered
  start = page.index("## Targets")
  assert rerendered[rerendered.index("## Targets"):] == page[start:]
  # Paired against another run: here the same run with every reported
  # DIS IoU 0.01 higher, so DIS gains +1.0 in its one seed and nothing else
  # moves.
  saved = json.loads((results_dir / "results.json").read_text())
  for seed in saved["seeds"]:
    for t, ious in seed["val"]["DIS t_train=2"].items():
      seed["val"]["DIS t_train=2"][t] = [None if v is None else v - 0.01
                                         for v in ious]
  lower = tmp_path / "lower.json"
  lower.write_text(json.dumps(saved))
  compared = str(tmp_path / "compared" / "RESULTS.md")
  subprocess.run(
      [sys.executable, "tools/ablation.py",
       f"--from_json={results_dir / 'results.json'}", f"--output={compared}",
       f"--compare_json={lower}"],
      check=True, cwd=REPO, env=env, capture_output=True, timeout=600)
  section = open(compared).read().split(f"## Paired against `{lower}`")[1]
  assert ("* DIS t_train=2, t_test=0: +1.0 (one seed, no interval; ahead 1, "
          "behind 0 of 1; per seed +1.0)") in section
  assert ("* baseline, t_test=0: +0.0 (one seed, no interval; ahead 0, "
          "behind 0 of 1; per seed +0.0)") in section
  assert "* pseudo labels (image + tag objective), stage-1 model" in section
  # The choice between the runs reads the selection split, which the
  # lowered copy leaves alone: no gain there, so the other run's stays.
  assert ("* DIS t_train=2, choice on the selection split: +0.0 (one seed, "
          "no interval; ahead 0, behind 0 of 1; per seed +0.0): no resolved "
          "gain; **that run's setting stays**.") in section
  # Stage 1 is shared: trained once, its phase-c weights seed each setting.
  seed_dir = tmp_path / "runs" / "seed_0"
  assert sorted(os.listdir(seed_dir)) == ["scores.json", "stage1", "t_train_0",
                                          "t_train_2", "weak"]
  # A restarted run reuses the seed's saved scores: same page, no re-scoring.
  os.remove(output)
  second = subprocess.run(command, check=True, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert "[seed 0] already scored" in second.stdout
  assert "[seed 0] scoring val" not in second.stdout
  assert "[seed 0] diagnosis of the latent steps" not in second.stdout
  assert open(output).read() == page
  # Scores of another plan are not reused: the unit test below (a third run
  # of the tool here cost about 30 s of the suite).


def test_saved_seed_scores_are_reused_only_under_their_plan(tmp_path,
                                                          capsys):
  config = config_lib.synthetic()
  plan = ablation.AblationPlan(seeds=(0,), t_trains=(2,), t_tests=(0, 2))
  path = str(tmp_path / "scores.json")
  with open(path, "w") as f:
    json.dump({"scoring": ablation._scoring_plan(plan, config),
               "result": {"seed": 0}}, f)
  assert ablation._load_seed_scores(path, plan, config) == {"seed": 0}
  assert "re-scoring" not in capsys.readouterr().out
  # Another plan, or another latent setting: scored again.
  other = dataclasses.replace(plan, weak_limit=2)
  assert ablation._load_seed_scores(path, other, config) is None
  assert "re-scoring" in capsys.readouterr().out
  config.latent.step_size = 0.2
  assert ablation._load_seed_scores(path, plan, config) is None


def _seed(miou_by_row, weak_f1=0.5):
  """One seed's results where every row has one per-class IoU, `miou`, on
  both splits at t_test 0."""
  splits = {name: {"0": [miou, miou]} for name, miou in miou_by_row.items()}
  tags = {"before": {"f1": weak_f1}, "after": {"f1": weak_f1}}
  return {"select": splits, "val": splits,
          "weak": {"pseudo_label_miou": {"5": 0.5, "10": 0.5},
                   "pseudo_label_miou_tags_only": {"5": 0.5, "10": 0.5},
                   "tags": {"DIS t_train=5": tags, "DIS t_train=10": tags}}}


def test_ensemble_target_states_the_member_mean_and_gap():
  plan = ablation.AblationPlan(seeds=(0, 1), t_trains=(5, 10), t_tests=(0,))
  # t_train=10 is the best single; the ensemble is 0.01 above its members'
  # mean in both seeds, but below the better member in seed 0.
  seeds = [_seed({"baseline": 0.3, "setup1 (t_train=0)": 0.35,
                  "DIS t_train=5": 0.40, "DIS t_train=10": 0.50,
                  "ensemble": 0.46}),
           _seed({"baseline": 0.3, "setup1 (t_train=0)": 0.35,
                  "DIS t_train=5": 0.48, "DIS t_train=10": 0.50,
                  "ensemble": 0.50})]
  assert tables.validated(seeds, plan)[1] == 10
  line = _target_line(seeds, plan, 6)
  # Two seeds: t(0.95, 1 df) = 6.314, so -2.0 with sd 2.8 is not resolved.
  assert ("validated t_test: -2.0 (sd 2.8, 90% CI [-14.6, +10.6]; ahead 0, "
          "behind 1 of 2; per seed -4.0, +0.0). Target: mean > 0: "
          "**not resolved**.") in line
  assert ("the ensemble's gain over the mean of its members (+1.0 (sd 0.0, "
          "90% CI [+1.0, +1.0]; ahead 2, behind 0 of 2)) minus the best "
          "member's lead over that mean (+3.0 (sd 2.8, 90% CI [-9.6, "
          "+15.6]; ahead 2, behind 0 of 2))") in line
  assert ("the members' gap: DIS t_train=10 minus DIS t_train=5: +6.0 (sd "
          "5.7, 90% CI [-19.3, +31.3]; ahead 2, behind 0 of 2; per seed "
          "+10.0, +2.0).") in line
  assert "the best member's lead is the larger on average" in line
  # The other branch: the ensemble above both members in both seeds.
  for seed in seeds:
    for split in ("select", "val"):
      seed[split]["ensemble"]["0"] = [0.52, 0.52]
  line = _target_line(seeds, plan, 6)
  assert "Target: mean > 0: **met**." in line
  assert line.endswith("Here the averaging gain is the larger on average.")


def _target_line(seeds, plan, number):
  rows = tables.miou_table(seeds, plan)
  chosen, best = tables.validated(seeds, plan)
  return [x for x in table3_targets.targets(rows, chosen, best, seeds, plan,
                                          1.0).splitlines()
          if x.startswith(f"{number}. ")][0]


def test_larger_t_train_target_is_paired_and_its_mechanism_flips():
  plan = ablation.AblationPlan(seeds=(0, 1), t_trains=(5, 10), t_tests=(0,))
  # t_train=10 ahead of t_train=5 by 5.0 and 5.1 points: sd 0.07, and with
  # t(0.95, 1 df) = 6.314 the interval is 5.05 +- 0.32, above 0: met.
  seeds = [_seed({"baseline": 0.3, "setup1 (t_train=0)": 0.35,
                  "DIS t_train=5": 0.40, "DIS t_train=10": 0.45,
                  "ensemble": 0.42}),
           _seed({"baseline": 0.3, "setup1 (t_train=0)": 0.35,
                  "DIS t_train=5": 0.41, "DIS t_train=10": 0.461,
                  "ensemble": 0.42})]
  line = _target_line(seeds, plan, 8)
  assert ("t_train=10 minus t_train=5: +5.1 (sd 0.1, 90% CI [+4.7, +5.4]; "
          "ahead 2, behind 0 of 2; per seed +5.0, +5.1). Target: mean > 0 "
          "at every step up: **met**.") in line
  # _seed gives equal pseudo labels at t_train 5 and 10.
  assert ("pseudo labels (image + tag objective), which stage 2 starts "
          "from: t_train=10 minus t_train=5: +0.0 (sd 0.0") in line
  assert line.endswith("so stage 2 is not trained on better targets there.")
  # The other branch: the pseudo labels rise with t_train in both seeds.
  seeds[0]["weak"]["pseudo_label_miou"]["10"] = 0.55
  seeds[1]["weak"]["pseudo_label_miou"]["10"] = 0.56
  line = _target_line(seeds, plan, 8)
  assert line.endswith("Every step up in t_train gives resolvably better "
                       "pseudo labels.")
  # t_train=10 behind in both seeds: missed.
  for seed in seeds:
    for split in ("select", "val"):
      seed[split]["DIS t_train=10"]["0"] = [0.30, 0.30]
  assert "at every step up: **missed**." in _target_line(seeds, plan, 8)
  # One DIS setting: nothing to compare.
  one = ablation.AblationPlan(seeds=(0, 1), t_trains=(5,), t_tests=(0,))
  for seed in seeds:
    for split in ("select", "val"):
      seed[split].pop("DIS t_train=10", None)  # one dict for both splits
  assert _target_line(seeds, one, 8) == (
      "8. Larger t_train helps: **not measured**: this run has one DIS "
      "setting (t_train [5]).")


def test_setup1_target_pairs_validated_and_served_settings():
  plan = ablation.AblationPlan(seeds=(0, 1), t_trains=(5,), t_tests=(0,))
  rows = {"baseline": 0.30, "setup1 (t_train=0)": 0.32,
          "DIS t_train=5": 0.40, "ensemble": 0.40}
  seeds = [_seed(rows), _seed(dict(rows, **{"setup1 (t_train=0)": 0.33}))]
  line = _target_line(seeds, plan, 9)
  # +2.0 and +3.0: sd 0.7, t(0.95, 1 df) = 6.314, interval 2.5 +- 3.2.
  assert line == (
      "9. Setup 1 vs the baseline (Table 3), each at its validated t_test: "
      "+2.5 (sd 0.7, 90% CI [-0.7, +5.7]; ahead 2, behind 0 of 2; per seed "
      "+2.0, +3.0). Target: mean > 0: **not resolved**.")
  # With the served settings, their pairing follows (setup 1 serves t=10
  # under no refinement, 0.40 and 0.41; the baseline t=0, 0.30).
  for seed, setup1 in zip(seeds, (0.40, 0.41)):
    seed["served"] = {"baseline": {"t_test": 0, "refinement": "off"},
                      "setup1 (t_train=0)": {"t_test": 10,
                                             "refinement": "off"}}
    seed["refine"] = {"val": {
        "baseline": {"off": {"0": [0.30, None]}},
        "setup1 (t_train=0)": {"off": {"0": [0.0], "10": [setup1]}}}}
  line = _target_line(seeds, plan, 9)
  assert line.endswith(
      "a refinement only where it clears the margin): +10.5 (sd 0.7, 90% "
      "CI [+7.3, +13.7]; ahead 2, behind 0 of 2; per seed +10.0, +11.0), "
      "**met** by the same rule.")


def test_reused_trainings_are_the_training_parts_no_seed_ran():
  seeds = [{"part_seconds": {"stage 1 (phases a, b, c)": 0.01,
                             "stage 2, DIS t_train=5": 95.0,
                             "stage 2, DIS t_train=10": 0.02,
                             "scoring val[:100]": 0.5}},
           {"part_seconds": {"stage 1 (phases a, b, c)": 0.01,
                             "stage 2, DIS t_train=5": 90.0,
                             "stage 2, DIS t_train=10": 80.0,
                             "scoring val[:100]": 0.5}}]
  # Seed 1 trained t_train=10, so it is not reused; scoring is not training.
  assert results_page.reused_trainings(seeds) == ["stage 1 (phases a, b, c)"]
  assert results_page.reused_trainings([{"seed": 0}]) == []
