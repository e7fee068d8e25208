"""User mistakes end every tool with one `error: ...` line, not a traceback.

Each tool runs as a user runs it (a subprocess) with a typical mistake
that fails before any model is built or trained; stderr must end with the
one line naming the flag, file or value, hold no traceback, and the exit
status must be non-zero (1 for a `UserError`, 2 for a flag that does not
parse). `dis_tf.errors` itself (the message folding, unexpected errors
keeping their traceback) is checked in process.
"""

import os
import subprocess
import sys

from absl import app
import pytest

from dis_tf import errors

NOWHERE = "/nonexistent/dis_tf_test"


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory, tiny_run):
  run_dir = str(tmp_path_factory.mktemp("errors") / "run")
  tiny_run(run_dir)
  return run_dir


def _cases(run_dir, tmp):
  export_base = os.path.join(tmp, "models")
  os.makedirs(os.path.join(export_base, "1"))
  return {
      "train_no_model_dir": (
          ["tools/train.py"], 2,
          "error: flag --model_dir=None: Flag --model_dir must have a value "
          "other than None."),
      "train_multi_worker_without_tf_config": (
          ["tools/train.py", f"--model_dir={tmp}/run",
           "--strategy=multi_worker"], 1,
          "error: --strategy=multi_worker needs the TF_CONFIG"),
      "train_bad_config_value": (
          ["tools/train.py", f"--model_dir={tmp}/run",
           "--latent.t_test=ten"], 2,
          "error: flag --latent.t_test=ten: invalid literal for int() with "
          "base 10: 'ten'"),
      "evaluate_missing_model_dir": (
          ["tools/evaluate.py", f"--model_dir={NOWHERE}"], 1,
          f"error: --model_dir={NOWHERE}: no such directory."),
      "evaluate_negative_t_test": (
          ["tools/evaluate.py", f"--model_dir={run_dir}", "--t_test=0,-3"], 2,
          "error: flag --t_test=0,-3: --t_test: -3 is negative; step counts "
          "must be >= 0."),
      "visualize_no_model_dir": (
          ["tools/visualize.py"], 1,
          "error: --model_dir is required: the folder of a training run "
          "(tools/train.py --model_dir)."),
      "clean_tags_missing_weak_dir": (
          ["tools/clean_tags.py", f"--model_dir={run_dir}",
           f"--weak_dir={NOWHERE}"], 1,
          f"error: --weak_dir={NOWHERE}: no such directory."),
      "ablation_missing_results_json": (
          ["tools/ablation.py", f"--from_json={NOWHERE}.json"], 1,
          f"error: --from_json={NOWHERE}.json: no such file."),
      "pseudo_label_study_missing_workdir": (
          ["tools/pseudo_label_study.py", f"--workdirs={NOWHERE}",
           f"--output={tmp}/page.md"], 1,
          f"error: --workdirs: {NOWHERE} is not a directory."),
      "quality_study_missing_model_dir": (
          ["tools/quality_study.py", f"--model_dirs={NOWHERE}",
           f"--output={tmp}/page.md"], 1,
          f"error: --model_dirs: {NOWHERE} is not a directory."),
      "quality_study_seeds_mismatch": (
          ["tools/quality_study.py", f"--model_dirs={run_dir},{run_dir}",
           "--seeds=0", f"--output={tmp}/page.md"], 1,
          "error: --seeds has 1 values for 2 --model_dirs."),
      "demo_bad_t_test": (
          ["tools/demo.py", "--t_test=abc"], 2,
          "error: flag --t_test=abc: --t_test: 'abc' is not an integer."),
      "make_synthetic_small_images": (
          ["tools/make_synthetic.py", f"--out={tmp}/synthetic",
           "--image_size=8"], 1,
          "error: image_size=8: must be >= 16."),
      "predict_two_sources": (
          ["tools/predict.py", f"--model_dir={run_dir}",
           f"--saved_model={export_base}/1", "--images=a.jpg",
           f"--output_dir={tmp}/out"], 1,
          "error: give exactly one of --model_dir (a training run) or "
          "--saved_model (an exported version directory)."),
      "predict_missing_image": (
          ["tools/predict.py", f"--model_dir={run_dir}",
           f"--images={NOWHERE}.jpg", f"--output_dir={tmp}/out",
           "--on_error=stop"], 1,
          f"error: {NOWHERE}.jpg: no such file or folder."),
      "labelling_study_no_workdir": (
          ["tools/labelling_study.py", f"--model_dirs={run_dir}",
           f"--output={tmp}/L.md"], 1,
          "error: --workdir is required (or --from_json)."),
      "iterated_cleaning_study_no_workdir": (
          ["tools/iterated_cleaning_study.py", f"--model_dirs={run_dir}",
           f"--output={tmp}/I.md"], 1,
          "error: --workdir is required (or --from_json)."),
      "ensemble_study_no_workdir": (
          ["tools/ensemble_study.py", f"--output={tmp}/E.md"], 1,
          "error: --workdir is required (or --from_json)."),
      "tag_cleaning_study_no_output": (
          ["tools/tag_cleaning_study.py", f"--model_dirs={run_dir}"], 1,
          "error: --output is required."),
      "rank_unlabelled_no_output": (
          ["tools/rank_unlabelled.py", f"--model_dir={run_dir}",
           "--images=a.jpg"], 1,
          "error: --output is required (the ranking CSV)."),
      "export_existing_version": (
          ["export/export_saved_model.py", f"--model_dir={run_dir}",
           f"--export_dir={export_base}", "--version=1"], 1,
          f"error: --version=1: {export_base}/1 already exists; pick another "
          "version or omit --version."),
      "prepare_data_missing_class_file": (
          ["tools/prepare_data.py", f"--source={NOWHERE}",
           f"--output={tmp}/prepared"], 1,
          f"error: {NOWHERE}/classes.txt: class file does not exist."),
      "client_missing_image": (
          ["export/client.py", f"--images={NOWHERE}.jpg"], 1,
          f"error: {NOWHERE}.jpg: no such file."),
  }


CASES = [
    "train_no_model_dir", "train_multi_worker_without_tf_config",
    "train_bad_config_value", "evaluate_missing_model_dir",
    "evaluate_negative_t_test", "visualize_no_model_dir",
    "clean_tags_missing_weak_dir", "ablation_missing_results_json",
    "pseudo_label_study_missing_workdir", "quality_study_missing_model_dir",
    "quality_study_seeds_mismatch", "demo_bad_t_test",
    "make_synthetic_small_images", "predict_two_sources",
    "predict_missing_image", "rank_unlabelled_no_output",
    "labelling_study_no_workdir", "tag_cleaning_study_no_output",
    "ensemble_study_no_workdir", "iterated_cleaning_study_no_workdir",
    "export_existing_version",
    "client_missing_image", "prepare_data_missing_class_file"]


@pytest.mark.parametrize("case", CASES)
def test_tool_mistake_is_one_line(case, untrained_run, tmp_path, run_tool):
  args, status, expected = _cases(untrained_run, str(tmp_path))[case]
  proc = run_tool(*args, check=False)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == status, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
  assert lines[-1].startswith(expected), lines[-1]


def test_every_tool_is_covered():
  tools = sorted(f"tools/{n}" for n in os.listdir(
      os.path.join(os.path.dirname(__file__), "..", "tools"))
                 if n.endswith(".py")) + ["export/client.py",
                                          "export/export_saved_model.py"]
  covered = {_cases_tool(case) for case in CASES}
  assert covered == set(tools)


def _cases_tool(case):
  prefix = case.split("_")[0]
  if prefix == "make":
    return "tools/make_synthetic.py"
  if prefix == "prepare":
    return "tools/prepare_data.py"
  if prefix == "clean":
    return "tools/clean_tags.py"
  if prefix == "pseudo":
    return "tools/pseudo_label_study.py"
  if prefix == "quality":
    return "tools/quality_study.py"
  if prefix == "labelling":
    return "tools/labelling_study.py"
  if prefix == "tag":
    return "tools/tag_cleaning_study.py"
  if prefix == "ensemble":
    return "tools/ensemble_study.py"
  if prefix == "iterated":
    return "tools/iterated_cleaning_study.py"
  if prefix == "rank":
    return "tools/rank_unlabelled.py"
  if prefix == "export":
    return "export/export_saved_model.py"
  if prefix == "client":
    return "export/client.py"
  return f"tools/{prefix}.py"


def test_user_error_types():
  assert issubclass(errors.UserError, ValueError)
  assert issubclass(errors.MissingFileError, FileNotFoundError)
  assert issubclass(errors.UnwritablePathError, OSError)
  assert issubclass(errors.PathExistsError, FileExistsError)
  for cls in (errors.MissingFileError, errors.UnwritablePathError,
              errors.PathExistsError):
    assert issubclass(cls, errors.UserError)
  assert errors.message(errors.UserError("a\n  b")) == "a b"


def test_catch_user_errors_in_process(capsys):
  def bad_value(argv):
    raise errors.MissingFileError(f"{argv[1]}: no such file.")

  def usage(argv):
    del argv
    raise app.UsageError("--x is required.")

  for main, line in ((bad_value, "error: f.jpg: no such file."),
                     (usage, "error: --x is required.")):
    with pytest.raises(SystemExit) as info:
      errors.catch_user_errors(main)(["tool", "f.jpg"])
    assert info.value.code == 1
    assert capsys.readouterr().err == line + "\n"


def test_unexpected_errors_keep_their_traceback(tmp_path):
  script = tmp_path / "tool.py"
  script.write_text(
      "from dis_tf import errors\n"
      "def main(argv):\n"
      "  raise KeyError('a bug')\n"
      "errors.run(main)\n")
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                        text=True, env=env, timeout=300)
  assert proc.returncode == 1
  assert "Traceback" in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == "KeyError: 'a bug'"
