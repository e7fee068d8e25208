"""No silent skip: the test dependencies are declared, and under .ci/run a
skip off the named allow-list (tests/conftest.py) fails its test."""

import ast
import glob
import importlib.metadata as md
import os
import re
import sys
import tomllib

from packaging.requirements import Requirement
import pytest

import conftest

REPO = conftest.REPO


def _declared_distributions():
  """Names of requirements.txt + the `test` extra, and what they pull in
  (recursively, markers evaluated, no extras)."""
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    test_extra = tomllib.load(f)["project"]["optional-dependencies"]["test"]
  with open(os.path.join(REPO, "requirements.txt")) as f:
    runtime = [line.split("#")[0].strip() for line in f]
  todo = [Requirement(r) for r in test_extra + runtime if r]
  seen = set()
  while todo:
    req = todo.pop()
    name = req.name.lower().replace("_", "-")
    if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
      continue
    seen.add(name)
    try:
      todo += [Requirement(r) for r in md.requires(req.name) or []]
    except md.PackageNotFoundError:
      pass
  return seen


def _third_party_imports():
  """{top-level module: test file} over tests/*.py, not the stdlib nor ours
  (dis_tf, and the modules under tests/)."""
  local = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(
      os.path.join(REPO, "tests", "**", "*.py"), recursive=True)}
  found = {}
  for path in sorted(glob.glob(os.path.join(REPO, "tests", "*.py"))):
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if (top not in sys.stdlib_module_names and top != "dis_tf"
            and top not in local):
          found.setdefault(top, os.path.basename(path))
  return found


def test_every_test_import_is_a_declared_dependency():
  declared = _declared_distributions()
  distributions = md.packages_distributions()
  missing = {}
  for module, path in _third_party_imports().items():
    dists = {d.lower().replace("_", "-")
             for d in distributions.get(module, [module])}
    if not dists & declared:
      missing[module] = (path, sorted(dists))
  assert not missing, (
      f"imported by tests but in neither requirements.txt nor the `test` "
      f"extra of pyproject.toml (nor pulled in by them): {missing}")
  assert "cryptography" in declared  # tests/test_client.py's certificates


def test_no_test_module_skips_on_a_missing_import():
  for path in glob.glob(os.path.join(REPO, "tests", "*.py")):
    with open(path) as f:
      assert "importorskip" not in f.read().replace(
          '"importorskip"', ""), path


def test_addopts_lists_skips_and_ci_makes_them_strict():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    addopts = tomllib.load(f)["tool"]["pytest"]["ini_options"]["addopts"]
  assert "-rs" in addopts.split()
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci = f.read()
  assert f"export {conftest.STRICT_SKIPS_ENV}=1\n" in ci


def _skip_report(reason, when="call", wasxfail=False):
  report = pytest.TestReport(
      "tests/x.py::t", ("tests/x.py", 1, "t"), {}, "skipped",
      ("tests/x.py", 1, f"Skipped: {reason}"), when)
  if wasxfail:
    report.wasxfail = "reason"
  return report


ALLOWED = ["needs root to mount a tmpfs", "strace unavailable: only the "
           "deleted-copy check ran",
           "needs /proc/self/clear_refs to reset the peak RSS"]


@pytest.mark.parametrize("strict", [False, True])
def test_unlisted_skip_fails_only_when_strict(monkeypatch, strict):
  if strict:
    monkeypatch.setenv(conftest.STRICT_SKIPS_ENV, "1")
  else:
    monkeypatch.delenv(conftest.STRICT_SKIPS_ENV, raising=False)
  for when in ("setup", "call"):
    report = _skip_report("could not import 'cryptography.x509'", when)
    conftest._fail_unlisted_skip(report)
    assert report.failed is strict
    if strict:
      assert re.search(r"not on the allow-list .* could not import",
                       str(report.longrepr))
    for reason in ALLOWED:
      report = _skip_report(reason, when)
      conftest._fail_unlisted_skip(report)
      assert report.skipped, reason


def test_allow_list_names(monkeypatch):
  assert [conftest.allowed_skip(r) for r in ALLOWED] == [
      "not root", "no strace", "no clear_refs"]
  assert conftest.allowed_skip("needs two logical CPUs") is None
  # xfails are not skips, and passes are left alone.
  monkeypatch.setenv(conftest.STRICT_SKIPS_ENV, "1")
  report = _skip_report("anything", wasxfail=True)
  conftest._fail_unlisted_skip(report)
  assert report.skipped


def test_every_skip_in_the_suite_is_listed_or_a_known_failure():
  """The skip reasons written in tests/: each is on the allow-list, except
  the concurrent-edit skip, which cannot happen in a fresh clone (so CI
  fails if it does)."""
  reasons = []
  for path in glob.glob(os.path.join(REPO, "tests", "test_*.py")):
    with open(path) as f:
      reasons += re.findall(r'pytest\.skip\(\s*"([^"]+)"', f.read())
  unlisted = {r for r in reasons if conftest.allowed_skip(r) is None}
  assert unlisted == {"dis_tf/ or tools/ changed while this test ran (a "}
  assert len(reasons) - len(unlisted) >= 6
