"""The documentation stays true: the README's layout names every file, and
every tool command in README.md and docs/*.md uses only flags the tool has.

Commands are the `python tools/<name>.py ...` and `python
export/<name>.py ...` lines of the pages (backslash continuations joined);
each flag is checked against the tool's `--helpfull`. Other commands (pip,
pytest, tensorboard, docker, curl, saved_model_cli, bench scripts) are not
tools of this repository's flag system and are skipped, by name, in
SKIPPED_PROGRAMS.
"""

from concurrent import futures
import functools
import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs",
                                                             "*.md")))
SKIPPED_PROGRAMS = ("pip", "python -m pytest", "pytest", "tensorboard",
                    "docker", "curl", "saved_model_cli", "python bench/",
                    "tensorflow_model_server", "git", "ruff")
COMMAND = re.compile(r"python ((?:tools|export)/[a-z_]+\.py)((?:[^\n`|]|"
                     r"\\\n)*)")


def _layout():
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  start = text.index("## Layout")
  return text[start:]


def _tracked_files():
  out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True,
                       text=True, check=True).stdout.split()
  keep = []
  for path in out:
    top = path.split("/")[0]
    if top in ("tests", "bench", "docs") and not (
        top == "docs" and path.count("/") == 1):
      continue  # Named by their folder's row.
    if path.endswith("__init__.py"):
      continue
    keep.append(path)
  return keep


def test_the_layout_table_names_every_file():
  layout = _layout()
  missing = [p for p in _tracked_files()
             if os.path.basename(p) not in layout
             and not p.startswith(".") and "/" in p]
  assert missing == []


def test_the_readme_is_short():
  lines = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert len(lines.splitlines()) <= 220


def doc_commands():
  """[(page, tool, [flag names])] of every tool command on the pages."""
  found = []
  for page in PAGES:
    text = open(os.path.join(REPO, page), encoding="utf-8").read()
    for match in COMMAND.finditer(text):
      args = match.group(2).replace("\\\n", " ")
      names = re.findall(r"(?:^|\s|\[)--([a-zA-Z_][\w.]*)", args)
      found.append((page, match.group(1), names))
  return found


@functools.lru_cache(maxsize=None)
def tool_flags(tool):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, tool, "--helpfull"], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=300)
  names = set(re.findall(r"^\s+--(?:\[no\])?([\w.]+)", proc.stdout, re.M))
  assert names, f"{tool} --helpfull listed no flags:\n{proc.stderr[-2000:]}"
  return names


def test_the_pages_have_tool_commands():
  tools = {tool for _, tool, _ in doc_commands()}
  assert {"tools/train.py", "tools/evaluate.py", "tools/predict.py",
          "export/export_saved_model.py", "tools/demo.py"} <= tools


def wrong_flags(commands):
  """The documented flags that the tools do not have."""
  wrong = []
  for page, tool, names in commands:
    if not os.path.exists(os.path.join(REPO, tool)):
      wrong.append(f"{page}: {tool} does not exist")
      continue
    known = tool_flags(tool)
    for name in names:
      bare = name[2:] if name.startswith("no") and name[2:] in known else name
      if bare not in known:
        wrong.append(f"{page}: {tool} has no flag --{name}")
  return wrong


@pytest.mark.slow
def test_every_documented_flag_exists():
  commands = doc_commands()
  # The tools' --helpfull runs (a TensorFlow import each) side by side.
  tools = sorted({tool for _, tool, _ in commands
                  if os.path.exists(os.path.join(REPO, tool))})
  with futures.ThreadPoolExecutor(max_workers=len(tools)) as pool:
    list(pool.map(tool_flags, tools))
  assert len(commands) > 20
  assert wrong_flags(commands) == []


def test_a_wrong_flag_is_caught():
  assert wrong_flags([("X.md", "tools/evaluate.py",
                       ["model_dir", "noflip", "no_such_flag"]),
                      ("X.md", "tools/nothing.py", [])]) == [
      "X.md: tools/evaluate.py has no flag --no_such_flag",
      "X.md: tools/nothing.py does not exist"]
