"""bench/demo_spread.py's variant mode: its flags, its refusal of another
variant's runs, and the reading computed from the numbers (each branch)."""

import types

import pytest

from dis_tf import config as config_lib
from dis_tf import model_dir as model_dir_lib

import bench_modules  # tests/bench_modules.py


@pytest.fixture(scope="module")
def spread():
  return bench_modules.load("demo_spread")


def test_train_flag_values_are_read_as_json_else_text(spread):
  assert spread.parse_train_flag("train.weight_decay=0.05") == (
      "train.weight_decay", 0.05)
  assert spread.parse_train_flag("train.semi_steps=3000") == (
      "train.semi_steps", 3000)
  assert spread.parse_train_flag("latent.monotone=true") == (
      "latent.monotone", True)
  assert spread.parse_train_flag("train.optimizer=sgd") == (
      "train.optimizer", "sgd")
  for bad in ("weight_decay=0.05", "train.weight_decay"):
    with pytest.raises(SystemExit, match="KEY=VALUE"):
      spread.parse_train_flag(bad)


def _trained_as(tmp_path, overrides, seed=0):
  run = str(tmp_path / f"seed_{seed}")
  config = config_lib.resolve_config("synthetic",
                                     {"train.seed": seed, **overrides})
  for phase in ("a", "b", "c", "semi"):
    model_dir_lib.write_fingerprint(run, config, phase)
  return run


def test_a_run_of_another_variant_is_refused(spread, tmp_path):
  run = _trained_as(tmp_path, {"train.weight_decay": 0.05})
  # The same settings: reused.
  spread.check_reused_run(run, 0, "float32", {"train.weight_decay": 0.05})
  # The demo's own settings asked of a variant's run, and the reverse.
  with pytest.raises(SystemExit, match="train.weight_decay=0.05"):
    spread.check_reused_run(run, 0, "float32", {})
  demo = _trained_as(tmp_path / "demo", {})
  with pytest.raises(SystemExit, match="train.semi_steps=2000"):
    spread.check_reused_run(demo, 0, "float32", {"train.semi_steps": 3000})
  # Another seed is another training too.
  with pytest.raises(SystemExit, match="train.seed"):
    spread.check_reused_run(demo, 1, "float32", {})
  # Nothing trained yet: nothing to refuse.
  spread.check_reused_run(str(tmp_path / "empty"), 0, "float32", {})


def _runs(report, select):
  return [{"miou": {0: r / 100}, "select_t0": s / 100, "train_seconds": 100.0,
           "commit": "abc1234",
           # Class 15 (person) fails in the first seed only.
           "per_class": {0: [0.9] * 15 + [0.1 if i == 0 else 0.6] + [0.5] * 5}}
          for i, (r, s) in enumerate(zip(report, select))]


def _body(spread, variant_report, variant_select):
  demo_report = [48.0, 58.0, 58.0, 53.0, 59.0]
  demo_select = [44.0, 55.0, 52.0, 48.0, 54.0]
  args = types.SimpleNamespace(precision="float32", workdir="v",
                               baseline_workdir="d")
  return spread.variant_body(args, [0, 1, 2, 3, 4],
                             {"train.weight_decay": 0.05},
                             _runs(variant_report, variant_select),
                             _runs(demo_report, demo_select))


NARROW = [55.0, 56.0, 57.0, 55.5, 56.5]                    # sd 0.8
WIDE = [45.0, 60.0, 58.0, 50.0, 62.0]                      # sd 7.2
BETTER = [45.0, 56.0, 53.0, 49.0, 55.0]                    # +1 every seed
LEVEL = [44.5, 55.0, 52.0, 48.0, 54.0]                     # +0.1 on average
WORSE = [40.0, 51.0, 48.0, 44.0, 50.0]                     # -4 every seed


@pytest.mark.parametrize("report, select, present, absent", [
    (NARROW, BETTER, ["target sd <= 3 for the variant: **met**",
                      "meets the spread target and is better",
                      "a candidate for the preset"], []),
    (NARROW, LEVEL, ["is no worse on the selection split",
                     "a candidate for the preset"], []),
    (NARROW, WORSE, ["**met**", "a possible loss of mIoU"], ["candidate"]),
    (WIDE, BETTER, ["**not met**", "does not bring the spread to 3",
                    "it is better on the selection split"], []),
    (WIDE, WORSE, ["it is not shown no worse on the selection split"], []),
])
def test_variant_reading_follows_the_numbers(spread, report, select, present,
                                             absent):
  text = _body(spread, report, select)
  for phrase in present:
    assert phrase in text, phrase
  for phrase in absent:
    assert phrase not in text, phrase


def test_variant_body_names_the_lowest_seed_and_the_moving_class(spread):
  text = _body(spread, WIDE, WORSE)
  # The demo's lowest seed (0: 48.0) moves by 45 - 48, the others by
  # (2 + 0 - 3 + 3) / 4.
  assert ("lowest seed (0) moves by -3.0 mIoU on `val[100:]` under the "
          "variant, the other seeds by +0.5 on average") in text
  # The class that moves most heads the per-class table, per seed.
  assert "| person | 10 / 10 | 60 / 60 |" in text
