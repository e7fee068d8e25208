"""The tools answer --helpfull, a bad flag and --print_config without
importing TensorFlow (dis_tf/flags.py): about 0.3 s instead of about 4 s of
CPU for its import, for a user and for the suite's many tool runs.

`python -X importtime` lists every module a process imports on stderr, so
the check needs no hook in the tools.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

from dis_tf import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every tool but tools/demo.py, which imports TensorFlow before parsing its
# flags on purpose: it closes stderr during that import to hide TF's
# start-up lines (tools/demo.py, QUIET).
# Found, not listed, so that a new tool is held to the rule too.
TOOLS = tuple(sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "tools", "*.py"))
    + glob.glob(os.path.join(REPO, "export", "*.py"))
    if os.path.basename(p) != "demo.py"))
# "import time: self | cumulative | <indent>module" (the indent shows
# which import pulled it in).
_MODULE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.M)


def _imported(*args):
  proc = subprocess.run([sys.executable, "-X", "importtime", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  return proc, set(_MODULE.findall(proc.stderr))


def test_the_import_listing_sees_tensorflow():
  # The checks below would pass vacuously if the listing's format changed;
  # TensorFlow imported by another module is listed too.
  _, modules = _imported("-c", "import dis_tf.evaluation")
  assert {"tensorflow", "dis_tf.evaluation"} <= modules


@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_a_bad_flag_do_not_import_tensorflow(tool):
  proc, modules = _imported(tool, "--helpfull")
  assert f"\n{tool}:\n" in proc.stdout  # The tool's own flags are listed.
  assert "tensorflow" not in modules and "keras" not in modules
  proc, modules = _imported(tool, "--no_such_flag=1")
  assert "Unknown command line flag 'no_such_flag'" in proc.stderr
  assert "tensorflow" not in modules


@pytest.mark.parametrize("tool", ("tools/train.py", "tools/evaluate.py",
                                  "export/export_saved_model.py"))
def test_print_config_does_not_import_tensorflow(tool, tmp_path):
  config = config_lib.synthetic()
  config.model_dir = str(tmp_path / "run")
  config.save(config.model_dir)
  extra = ["--export_dir=unused"] if tool.startswith("export/") else []
  proc, modules = _imported(tool, f"--model_dir={config.model_dir}",
                            "--print_config", "--latent.t_test=7", *extra)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '"t_test": 7' in proc.stdout
  assert "tensorflow" not in modules
