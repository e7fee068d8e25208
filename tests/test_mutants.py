"""The mutation check's table stays runnable and documented (cheap: nothing
is mutated here; `python tests/mutants/run.py` does that, from .ci/run)."""

import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "mutants"))

import mutants as mutants_lib  # noqa: E402
import run as run_lib  # noqa: E402

MUTANTS = mutants_lib.MUTANTS


def test_names_are_unique_and_every_mutant_has_tests():
  names = [m.name for m in MUTANTS]
  assert len(names) == len(set(names))
  for m in MUTANTS:
    assert re.fullmatch(r"[a-z0-9_]+", m.name), m.name
    assert m.tests and m.old != m.new, m.name


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_snippet_occurs_once_and_each_test_exists(mutant):
  with open(os.path.join(REPO, mutant.path), encoding="utf-8") as f:
    assert f.read().count(mutant.old) == 1
  for node in mutant.tests:
    path, name = node.split("::")
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
      assert re.search(rf"^def {re.escape(name)}\(", f.read(), re.M), node


def test_apply_and_restore_round_trip(tmp_path):
  mutant = MUTANTS[0]
  target = tmp_path / mutant.path
  target.parent.mkdir(parents=True)
  original = open(os.path.join(REPO, mutant.path), encoding="utf-8").read()
  target.write_text(original, encoding="utf-8")
  text = run_lib.apply(mutant, str(tmp_path))
  assert mutant.new in target.read_text(encoding="utf-8")
  run_lib.restore(mutant, str(tmp_path), text)
  assert target.read_text(encoding="utf-8") == original
  target.write_text(original + mutant.old, encoding="utf-8")
  with pytest.raises(ValueError, match="occurs 2 times"):
    run_lib.apply(mutant, str(tmp_path))


def test_verdicts():
  assert run_lib.verdict(1, "1 failed, 2 passed in 3s") == "killed"
  assert run_lib.verdict(0, "3 passed in 3s") == "SURVIVED"
  assert run_lib.verdict(0, "2 skipped in 1s") == "not run (skipped)"
  assert run_lib.verdict(0, "1 passed, 1 skipped in 1s") == "SURVIVED"
  assert run_lib.verdict(4, "ERROR: not found") == "ERROR (pytest exit 4)"
  assert run_lib.verdict(-11, "") == "killed (crashed, signal 11)"


def test_reliability_md_names_every_mutant_and_ci_runs_them():
  with open(os.path.join(REPO, "RELIABILITY.md"), encoding="utf-8") as f:
    text = f.read()
  missing = [m.name for m in MUTANTS if f"`{m.name}`" not in text]
  assert missing == []
  with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
    ci = f.read()
  assert "python tests/mutants/run.py" in ci
  assert ci.index("python -m pytest -q") < ci.index("tests/mutants/run.py")
