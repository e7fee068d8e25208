r"""The mutation check: every RELIABILITY.md guard is held by a test.

  python tests/mutants/run.py               # every mutant (.ci/run)
  python tests/mutants/run.py --only=a,b    # some of them
  python tests/mutants/run.py --list        # the table, nothing run

For each mutant of tests/mutants/mutants.py: copy the tracked files of
this checkout into a temporary directory (once), put the mutant's snippet
in (checked to occur exactly once), run its tests there in a subprocess
(`python -m pytest -q -n 0 -x <tests>`, PYTHONPATH and working directory
at the copy, so the copy's dis_tf is the one imported), and put the
original back. The tests must FAIL: "killed". A run whose tests pass is
"survived", and a run that could not collect or run them is "error"; both
make the exit status 1. If every test of a mutant was skipped for an
allowed environment reason (tests/conftest.py ENVIRONMENT_SKIPS), the
mutant is "not run (skipped)", which is printed but not a failure.

Before the mutants, the same tests run once on the unchanged copy
(`--no_baseline` leaves that out): a test that fails anyway kills nothing.
Prints one markdown table row per mutant and the total time.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import mutants as mutants_lib  # noqa: E402


def tracked_files(repo):
  out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True,
                       capture_output=True).stdout
  names = [n for n in out.decode().split("\0") if n]
  # Files of this checkout not yet committed (a mutant being written).
  extra = subprocess.run(
      ["git", "ls-files", "-z", "--others", "--exclude-standard"],
      cwd=repo, check=True, capture_output=True).stdout
  return names + [n for n in extra.decode().split("\0") if n]


def copy_tree(repo, target):
  for name in tracked_files(repo):
    source = os.path.join(repo, name)
    if not os.path.isfile(source):
      continue  # Deleted in the working tree.
    dest = os.path.join(target, name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(source, dest)


def apply(mutant, root):
  """Puts `mutant` into the tree at `root`; returns the original text."""
  path = os.path.join(root, mutant.path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  count = text.count(mutant.old)
  if count != 1:
    raise ValueError(f"mutant {mutant.name}: its snippet occurs {count} "
                     f"times in {mutant.path} (must be once)")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(mutant.old, mutant.new))
  return text


def restore(mutant, root, text):
  with open(os.path.join(root, mutant.path), "w", encoding="utf-8") as f:
    f.write(text)


def run_tests(root, tests, timeout):
  """(exit code, seconds, output) of pytest on `tests` inside `root`."""
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="")
  env.pop("DIS_TF_STRICT_SKIPS", None)  # A skip is reported, not failed.
  start = time.monotonic()
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-x", "-rs",
         "-p", "no:cacheprovider", *tests], cwd=root, env=env,
        capture_output=True, text=True, timeout=timeout)
    code, output = proc.returncode, proc.stdout + proc.stderr
  except subprocess.TimeoutExpired as e:
    code, output = "timeout", str(e.stdout or "")
  return code, time.monotonic() - start, output


def _summary(output, code=None):
  if isinstance(code, int) and code < 0:
    return f"the test process died of signal {-code}"
  lines = [line for line in output.splitlines()
           if re.search(r"\d+ (passed|failed|error|skipped)", line)]
  return lines[-1].strip("= ") if lines else output.strip()[-200:]


def verdict(code, output):
  summary = _summary(output)
  if code == 0:
    if re.search(r"\d+ skipped", summary) and not re.search(r"\d+ passed",
                                                             summary):
      return "not run (skipped)"
    return "SURVIVED"
  if code == 1 or (isinstance(code, int) and code < 0):
    return "killed" if code == 1 else f"killed (crashed, signal {-code})"
  if code == "timeout":
    return "ERROR (timeout)"
  return f"ERROR (pytest exit {code})"


def check_imports_the_copy(root):
  env = dict(os.environ, PYTHONPATH=root)
  out = subprocess.run(
      [sys.executable, "-c", "import dis_tf; print(dis_tf.__file__)"],
      cwd=root, env=env, capture_output=True, text=True, check=True).stdout
  if not os.path.realpath(out.strip()).startswith(os.path.realpath(root)):
    raise RuntimeError(f"the copy imports dis_tf from {out.strip()}, not "
                       f"from {root}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="",
                      help="comma-separated mutant names")
  parser.add_argument("--list", action="store_true")
  parser.add_argument("--no_baseline", action="store_true")
  parser.add_argument("--timeout", type=float, default=900)
  args = parser.parse_args()
  chosen = list(mutants_lib.MUTANTS)
  if args.only:
    names = args.only.split(",")
    unknown = set(names) - {m.name for m in chosen}
    if unknown:
      parser.error(f"unknown mutants {sorted(unknown)}")
    chosen = [m for m in chosen if m.name in names]
  if args.list:
    for m in chosen:
      print(f"{m.name}: {m.path} ({m.guard}) -> {', '.join(m.tests)}")
    return 0
  start = time.monotonic()
  failures = 0
  with tempfile.TemporaryDirectory(prefix="dis_tf_mutants_") as root:
    copy_tree(REPO, root)
    check_imports_the_copy(root)
    if not args.no_baseline:
      tests = sorted({t for m in chosen for t in m.tests})
      code, seconds, output = run_tests(root, tests, args.timeout)
      print(f"baseline (unchanged tree, {len(tests)} tests): "
            f"{_summary(output)} in {seconds:.0f} s", flush=True)
      if code != 0:
        print(output[-5000:])
        print("The tests fail on the unchanged tree: no mutant can be "
              "judged.")
        return 1
    print("| mutant | file | tests | result | time |")
    print("|---|---|---|---|---|")
    for mutant in chosen:
      text = apply(mutant, root)
      try:
        code, seconds, output = run_tests(root, list(mutant.tests),
                                          args.timeout)
      finally:
        restore(mutant, root, text)
      result = verdict(code, output)
      if result.startswith(("SURVIVED", "ERROR")):
        failures += 1
      tests = ", ".join(t.split("::")[-1] for t in mutant.tests)
      print(f"| `{mutant.name}` | `{mutant.path}` | {tests} | {result}: "
            f"{_summary(output, code)} | {seconds:.0f} s |", flush=True)
      if result.startswith("ERROR"):
        print(output[-3000:], flush=True)
  print(f"{len(chosen)} mutants, {failures} survived or errored, in "
        f"{time.monotonic() - start:.0f} s")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
