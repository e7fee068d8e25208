"""Reliability of runs and files (issue 15 C).

* a model_dir from another training config: error naming the fields, unless
  --overwrite; evaluation-only changes still resume;
* lock files: one training run per model_dir, one tfds prepare per data_dir,
  stale locks of dead processes taken over;
* durability: every commit rename goes through `dis_tf.atomic`;
* a corrupt committed `phase_<p>.weights.h5` or `model.keras`: named, and
  the last good state is used where one exists;
* builders: images over `data.max_image_pixels` (Pillow's decompression
  bomb) are bad files, refused before decoding;
* an empty annotations.jsonl, Unicode and space-containing paths, NaN / Inf
  pixels in training and evaluation inputs.

The training runs here are tiny (width 8, 32 px crops, 2 steps per phase,
`dataset_fn` batches without files) and shared: `finished_run` trains once;
tests that change a run work on a copy of it.
"""

import ast
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import struct
import zlib

import h5py
import numpy as np
import pytest
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from dis_tf import atomic
from dis_tf import config as config_lib
from dis_tf import evaluation
from dis_tf import locks
from dis_tf import model_dir as model_dir_lib
from dis_tf import selection
from dis_tf import training
from dis_tf.data import pipeline
from dis_tf.data import synthetic
from dis_tf.data import voc

from conftest import CrashAt
from dis_tf.data import web_tags
from dis_tf.serving import export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model_dir name with spaces and non-ASCII characters.
ODD_NAME = "run ü 模型 1"


def _config(tiny_config, model_dir):
  return tiny_config(model_dir, steps=2)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_config, dataset_fn):
  """A finished stage-1 run (phases a, b, c) in a Unicode + space model_dir.

  Returns:
    {"model_dir", "weights" (of model.keras)}. Tests must not change it:
    `run_copy` gives a copy.
  """
  model_dir = str(tmp_path_factory.mktemp("runs") / "dir with space" /
                  ODD_NAME)
  config = _config(tiny_config, model_dir)
  model = training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  return {"model_dir": model_dir, "weights": [w.numpy() for w in
                                              model.weights]}


@pytest.fixture
def run_copy(finished_run, tmp_path):
  """`run_copy()`: a copy of `finished_run` (path with spaces / Unicode)."""
  def copy():
    target = str(tmp_path / "copy ü" / ODD_NAME)
    shutil.copytree(finished_run["model_dir"], target)
    return target
  return copy


def _mtimes(model_dir):
  return {p: os.stat(model_dir_lib.phase_weights_path(model_dir, p)).st_mtime_ns
          for p in ("a", "b", "c")}


# ------------------------------------------------------ config fingerprints
def test_unicode_and_space_model_dir_holds_a_loadable_run(finished_run):
  model_dir = finished_run["model_dir"]
  assert " " in model_dir and "模型" in model_dir
  for phase in ("a", "b", "c"):
    stored = model_dir_lib.read_fingerprint(model_dir, phase)
    assert stored["fields"][f"train.phase_{phase}_steps"] == 2
  config, model = model_dir_lib.load(model_dir)
  assert config.model_dir == model_dir
  for a, b in zip(finished_run["weights"], model.weights):
    np.testing.assert_array_equal(a, b.numpy())
  assert not os.path.exists(os.path.join(model_dir, locks.TRAIN_LOCK))


def test_every_config_field_is_fingerprinted_or_named_as_not():
  config = config_lib.synthetic()
  # model.precision is fingerprinted only when it is not float32.
  config.model.precision = "mixed_bfloat16"
  fingerprinted = set()
  for phase in ("a", "b", "c", "semi"):
    fingerprinted |= set(model_dir_lib.training_fields(config, phase))
  excluded = set(model_dir_lib.NOT_FINGERPRINTED)
  assert not fingerprinted & excluded
  assert fingerprinted | excluded == {spec.key for spec in
                                      config_lib.fields()}
  # Evaluation-only fields do not change any phase's fingerprint.
  other = config_lib.synthetic()
  other.model.precision = "mixed_bfloat16"
  other.latent.t_test, other.data.eval_split = 3, "val[:5]"
  for phase in ("a", "b", "c", "semi"):
    assert model_dir_lib.fingerprint(model_dir_lib.training_fields(
        config, phase)) == model_dir_lib.fingerprint(
            model_dir_lib.training_fields(other, phase))
  # float32 adds no key (fingerprints from before the field are unchanged);
  # another precision is another training, named as such.
  plain = config_lib.synthetic()
  assert "model.precision" not in model_dir_lib.training_fields(plain, "a")
  assert model_dir_lib.field_differences(
      model_dir_lib.training_fields(plain, "a"),
      model_dir_lib.training_fields(config, "a")) == [
          ("model.precision", "float32", "mixed_bfloat16")]


def test_other_training_config_is_an_error_naming_the_fields(
    run_copy, tiny_config, dataset_fn):
  model_dir = run_copy()
  before = open(os.path.join(model_dir, "config.json")).read()
  mtimes = _mtimes(model_dir)
  config = _config(tiny_config, model_dir)
  config.train.phase_b_lr = 0.5
  config.model.tiny_width = 16
  with pytest.raises(model_dir_lib.ConfigMismatchError) as info:
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  message = str(info.value)
  assert "phase b: train.phase_b_lr: 0.001 in model_dir, 0.5 now" in message
  for phase in ("a", "b", "c"):
    assert f"phase {phase}: model.tiny_width: 8 in model_dir, 16 now" in (
        message)
  assert "phase a: train.phase_b_lr" not in message  # Phase a's own fields.
  assert "--overwrite" in message and "new --model_dir" in message
  # Nothing was changed, and the lock was released on the error.
  assert open(os.path.join(model_dir, "config.json")).read() == before
  assert _mtimes(model_dir) == mtimes
  assert not os.path.exists(os.path.join(model_dir, locks.TRAIN_LOCK))


def test_evaluation_only_changes_resume_without_retraining(
    run_copy, tiny_config, dataset_fn, capsys):
  model_dir = run_copy()
  mtimes = _mtimes(model_dir)
  config = _config(tiny_config, model_dir)
  config.latent.t_test = 5
  config.latent.update = "both"
  config.data.eval_split, config.data.select_split = "val[:1]", None
  config.data.data_dir = "/elsewhere/tfds"  # A location, not a setting.
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  assert "== phase" not in capsys.readouterr().out  # Nothing retrained.
  assert _mtimes(model_dir) == mtimes
  # And evaluation overrides on the finished run load as before.
  loaded, _ = model_dir_lib.load(model_dir, {"latent.t_test": 0})
  assert loaded.latent.t_test == 0


def test_state_without_fingerprints_is_checked_against_config_json(
    run_copy, tiny_config, dataset_fn):
  """A model_dir from before fingerprints: its config.json is the record."""
  model_dir = run_copy()
  for phase in ("a", "b", "c"):
    os.remove(model_dir_lib.fingerprint_path(model_dir, phase))
  config = _config(tiny_config, model_dir)
  config.train.seed = 7
  with pytest.raises(model_dir_lib.ConfigMismatchError,
                     match="train.seed: 0 in model_dir, 7 now"):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)


def test_a_phase_killed_mid_way_is_checked_by_its_backup(
    tmp_path, monkeypatch, tiny_config, dataset_fn):
  """Killed inside phase b (its backup/phase_b/state.json is the only
  state of phase b: no phase_b.weights.h5 yet), then rerun with another
  phase-b learning rate: refused, not resumed with the wrong config."""
  model_dir = str(tmp_path / "killed")
  original_callbacks = training._callbacks
  monkeypatch.setattr(
      training, "_callbacks",
      lambda *a: original_callbacks(*a) + [CrashAt("b", 1)])
  config = tiny_config(model_dir, steps=4)  # Two epochs per phase.
  with pytest.raises(KeyboardInterrupt):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  monkeypatch.setattr(training, "_callbacks", original_callbacks)
  state = os.path.join(model_dir, "backup", "phase_b", "state.json")
  assert os.path.exists(state)
  assert not os.path.exists(model_dir_lib.phase_weights_path(model_dir, "b"))
  before = open(state).read()
  config.train.phase_b_lr = 0.5
  with pytest.raises(model_dir_lib.ConfigMismatchError,
                     match=r"phase b: train.phase_b_lr: 0.001 in model_dir, "
                           r"0.5 now"):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  assert open(state).read() == before
  assert not os.path.exists(model_dir_lib.phase_weights_path(model_dir, "b"))


def _change_weights_file(path):
  """A changed but loadable weights file (as if its phase were retrained):
  one float dataset is shifted in place."""
  with h5py.File(path, "r+") as f:
    datasets = []
    f.visititems(lambda name, obj: datasets.append(obj) if isinstance(
        obj, h5py.Dataset) and obj.dtype == np.float32 and obj.size else None)
    datasets[0][...] = datasets[0][()] + 0.25


def test_retraining_a_phase_invalidates_the_phases_after_it(
    run_copy, tiny_config, dataset_fn, capsys, monkeypatch):
  """The fingerprint chain: phase semi records the hash of the phase c it
  started from. After phase c changes (retrained), the finished semi, or
  a semi backup, is not reused: semi is trained again from the new c."""
  model_dir = run_copy()
  config = _config(tiny_config, model_dir)
  config.train.semi_steps = 4  # Two epochs: a backup after the first.
  training.train(config, "semi", dataset_fn=dataset_fn, verbose=0)
  semi = model_dir_lib.phase_weights_path(model_dir, "semi")
  c_path = model_dir_lib.phase_weights_path(model_dir, "c")
  assert model_dir_lib.read_fingerprint(model_dir, "semi")["starts_from"] \
      == model_dir_lib.file_hash(c_path)
  capsys.readouterr()
  training.train(config, "semi", dataset_fn=dataset_fn, verbose=0)
  assert "== phase" not in capsys.readouterr().out  # Unchanged: reused.

  _change_weights_file(c_path)
  training.train(config, "semi", dataset_fn=dataset_fn, verbose=0)
  out = capsys.readouterr().out
  assert "phase semi started from a version of" in out, out
  assert "== phase semi: 4 steps ==" in out, out
  assert os.path.exists(semi + ".stale")
  assert model_dir_lib.read_fingerprint(model_dir, "semi")["starts_from"] \
      == model_dir_lib.file_hash(c_path)

  # A semi killed mid-way leaves a backup; after c changes it is removed,
  # not resumed.
  os.remove(semi)
  original_callbacks = training._callbacks
  monkeypatch.setattr(
      training, "_callbacks",
      lambda *a: original_callbacks(*a) + [CrashAt("semi", 1)])
  with pytest.raises(KeyboardInterrupt):
    training.train(config, "semi", dataset_fn=dataset_fn, verbose=0)
  monkeypatch.setattr(training, "_callbacks", original_callbacks)
  backup = os.path.join(model_dir, "backup", "phase_semi")
  assert os.path.exists(os.path.join(backup, "state.json"))
  _change_weights_file(c_path)
  capsys.readouterr()
  training.train(config, "semi", dataset_fn=dataset_fn, verbose=0)
  out = capsys.readouterr().out
  assert f"its backup {backup} is removed" in out, out
  assert "resuming" not in out and "== phase semi: 4 steps ==" in out, out


def test_overwrite_discards_the_state_and_trains_again(
    run_copy, tiny_config, dataset_fn, capsys):
  model_dir = run_copy()
  # The old run's evaluation outputs (tools/evaluate.py, tools/demo.py,
  # tools/visualize.py, the served-setting record), and a file of the user.
  old_reports = ["eval_val/table3.md", "eval_val_100__/results.json",
                 "figures/val.png", selection.SELECTION_FILENAME]
  for name in old_reports + ["notes.txt", "eval_notes.txt"]:
    path = os.path.join(model_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("old run")
  config = _config(tiny_config, model_dir)
  config.train.phase_c_lr = 0.01
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0,
                 overwrite=True)
  out = capsys.readouterr().out
  assert "--overwrite: removed the training state" in out
  for name in old_reports:
    assert not os.path.exists(os.path.join(model_dir, name)), name
    assert name.split("/")[0] in out
  # Not reports of the run: left alone.
  for name in ("notes.txt", "eval_notes.txt"):
    assert os.path.exists(os.path.join(model_dir, name))
  for phase in ("a", "b", "c"):
    assert f"== phase {phase}:" in out
  assert model_dir_lib.read_fingerprint(model_dir, "c")["fields"][
      "train.phase_c_lr"] == 0.01
  # The new state is this config's: a plain rerun resumes (skips all).
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  assert "== phase" not in capsys.readouterr().out


def test_train_tool_names_the_fields_and_the_fix(run_copy, run_tool):
  model_dir = run_copy()
  proc = run_tool("tools/train.py", f"--model_dir={model_dir}",
                  "--stage=full", "--phase_a_steps=3", check=False)
  assert proc.returncode != 0
  assert "train.phase_a_steps: 2 in model_dir, 3 now" in proc.stderr
  assert "--overwrite" in proc.stderr


# ------------------------------------------------------------------- locks
_HOLDER = r"""
import sys
from dis_tf import locks
lock = getattr(locks, sys.argv[1])(sys.argv[2])
with lock:
  print("held", flush=True)
  sys.stdin.read()  # Until the test closes stdin (or kills this process).
"""


@pytest.fixture
def holder(tool_env):
  """`holder(kind, directory)`: a live process holding the lock `kind`
  ("train_lock" / "prepare_lock") of `directory`."""
  procs = []

  def start(kind, directory):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, directory],
                            env=tool_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    procs.append(proc)
    return proc
  yield start
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
    proc.wait()


def _kill(proc):
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_second_training_run_is_refused_and_a_stale_lock_taken_over(
    run_copy, tiny_config, dataset_fn, holder, capsys):
  model_dir = run_copy()
  config = _config(tiny_config, model_dir)
  proc = holder("train_lock", model_dir)
  with pytest.raises(locks.LockHeldError) as info:
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  message = str(info.value)
  assert f"pid {proc.pid} on host {socket.gethostname()!r}" in message
  assert os.path.join(model_dir, locks.TRAIN_LOCK) in message
  # The holder dies without releasing (SIGKILL): the lock is stale.
  _kill(proc)
  lock_path = os.path.join(model_dir, locks.TRAIN_LOCK)
  assert os.path.exists(lock_path)
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  err = capsys.readouterr().err
  assert f"took over the stale lock {lock_path}" in err
  assert f"pid {proc.pid}" in err
  assert not os.path.exists(lock_path)  # Released at the end.


def test_only_the_chief_takes_the_model_dir_lock(tmp_path, monkeypatch,
                                                tiny_config, holder):
  """A multi-worker job's workers run together: only the chief locks."""
  model_dir = str(tmp_path / "run")
  holder("train_lock", model_dir)

  class Extended:
    should_checkpoint = False

  class Strategy:
    extended = Extended()

  monkeypatch.setattr(training, "make_strategy", lambda name: Strategy())
  monkeypatch.setattr(training, "_train", lambda *args: "trained")
  assert training.train(tiny_config(model_dir), "full") == "trained"
  Extended.should_checkpoint = True
  with pytest.raises(locks.LockHeldError):
    training.train(tiny_config(model_dir), "full")


def test_lock_of_another_host_or_a_live_pid_is_never_taken_over(tmp_path):
  path = str(tmp_path / "x.lock")
  with open(path, "w") as f:
    json.dump({"pid": 1, "host": "other-host", "started": "then"}, f)
  with pytest.raises(locks.LockHeldError, match="pid 1 on host 'other-host'"):
    locks.FileLock(path, "test").acquire()
  with open(path, "w") as f:  # This host, a live pid (this process).
    json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
  with pytest.raises(locks.LockHeldError):
    locks.FileLock(path, "test").acquire()
  # A reused pid (same pid, other start time) is not the holder.
  with open(path, "w") as f:
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "start_ticks": -1}, f)
  with locks.FileLock(path, "test") as lock:
    assert json.load(open(path))["token"] == lock.token
  assert not os.path.exists(path)


def _copy_prepared(mini_benchmark, target):
  shutil.copytree(mini_benchmark["data_dir"], target)
  return config_lib.resolve_config("synthetic", {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.weak_dir": mini_benchmark["weak_dir"],
      "data.data_dir": target})


def test_concurrent_prepare_of_one_data_dir_is_refused(
    mini_benchmark, tmp_path, holder, capsys):
  # An unprepared data_dir: a second prepare gets the holder's pid and host.
  config = config_lib.resolve_config("synthetic", {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.data_dir": str(tmp_path / "tfds ü")})
  proc = holder("prepare_lock", config.data.data_dir)
  with pytest.raises(locks.LockHeldError,
                     match=f"pid {proc.pid} on host .*prepare.lock"):
    pipeline.prepare_datasets(config)
  assert not pipeline.builder_for(config, "voc").is_prepared()
  _kill(proc)  # Stale now: taken over, and the prepare runs.
  builders = pipeline.prepare_datasets(config)
  assert builders["voc"].is_prepared()
  assert "took over the stale lock" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(config.data.data_dir,
                                         locks.PREPARE_LOCK))
  # Prepared data_dirs need no lock: training runs may share one.
  prepared = _copy_prepared(mini_benchmark, str(tmp_path / "prepared"))
  holder("prepare_lock", prepared.data.data_dir)
  assert set(pipeline.prepare_datasets(prepared)) == {"voc", "web_tags"}


def test_pipelines_wait_for_a_live_prepare_and_use_it(mini_benchmark,
                                                     tmp_path, holder):
  """The training pipelines (e.g. every worker of a multi-worker job) wait
  for a live holder instead of failing, then go on."""
  config = config_lib.resolve_config("synthetic", {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.data_dir": str(tmp_path / "tfds")})
  proc = holder("prepare_lock", config.data.data_dir)
  released = threading.Event()

  def release():
    released.set()
    proc.stdin.close()
  threading.Timer(2.0, release).start()  # Released after 2 s.
  builders = pipeline.prepare_datasets(config, wait_seconds=60)
  # It waited for the release (an event, not a wall-clock bound).
  assert released.is_set()
  assert builders["voc"].is_prepared()
  proc.wait()
  assert pipeline.PREPARE_WAIT_SECONDS >= 600
  assert not os.path.exists(os.path.join(config.data.data_dir,
                                         locks.PREPARE_LOCK))


# -------------------------------------------------------------- durability
_RENAMES = {("os", "replace"), ("os", "rename"), ("shutil", "move"),
            ("os", "renames")}
# Renames that are not commits: taking over a stale lock (dis_tf.locks).
_ALLOWED = {"dis_tf/atomic.py", "dis_tf/locks.py"}


def test_every_rename_goes_through_the_atomic_helper():
  found = []
  for top in ("dis_tf", "tools", "export", "bench"):
    for dirpath, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if not name.endswith(".py"):
          continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, REPO)
        for node in ast.walk(ast.parse(open(path).read())):
          if (isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name)
              and ((node.value.id, node.attr) in _RENAMES
                   or node.attr == "rename" and node.value.id == "gfile")
              and rel not in _ALLOWED):
            found.append(f"{rel}:{node.lineno} {node.value.id}.{node.attr}")
  assert not found, found


def test_export_commit_fsyncs_every_file_before_the_rename(
    tmp_path, monkeypatch):
  events = []
  original_fsync, original_rename = atomic.fsync_path, os.rename
  monkeypatch.setattr(atomic, "fsync_path",
                      lambda p: events.append(("fsync", p))
                      or original_fsync(p))
  monkeypatch.setattr(os, "rename", lambda a, b: events.append(
      ("rename", a)) or original_rename(a, b))
  base = str(tmp_path / "export")
  os.makedirs(base)
  with export_lib._version_directory(base, 3) as tmp:
    os.makedirs(os.path.join(tmp, "variables"))
    for rel in ("saved_model.pb", "variables/variables.index"):
      with open(os.path.join(tmp, rel), "w") as f:
        f.write("x")
  renamed = [i for i, e in enumerate(events) if e[0] == "rename"]
  assert len(renamed) == 1, events
  before = {p for kind, p in events[:renamed[0]] if kind == "fsync"}
  for rel in ("saved_model.pb", "variables/variables.index", "variables", ""):
    assert os.path.normpath(os.path.join(events[renamed[0]][1], rel)) in {
        os.path.normpath(p) for p in before}, (rel, events)
  assert events[renamed[0] + 1:] == [("fsync", base)]
  assert os.listdir(base) == ["3"]


# ------------------------------------------------------- corrupt checkpoints
def _truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _garble_header(path):
  with open(path, "r+b") as f:
    f.write(b"\0garbage" * 8)


def test_corrupt_phase_weights_fall_back_to_the_last_good_phase(
    run_copy, tiny_config, dataset_fn, capsys):
  model_dir = run_copy()
  path_b = model_dir_lib.phase_weights_path(model_dir, "b")
  path_c = model_dir_lib.phase_weights_path(model_dir, "c")
  _garble_header(path_b)
  _truncate(path_c)
  mtime_a = _mtimes(model_dir)["a"]
  training.train(_config(tiny_config, model_dir), "full",
                 dataset_fn=dataset_fn, verbose=0)
  out = capsys.readouterr().out
  # Named, set aside, and the phases retrained from phase a (the last good).
  assert f"{path_c} is corrupt and cannot be loaded" in out
  assert f"{path_b} is corrupt and cannot be loaded" in out
  path_a = model_dir_lib.phase_weights_path(model_dir, "a")
  assert out.count(f"Phase(s) b, c are trained again from {path_a}.") == 2
  assert "== phase a:" not in out
  assert "== phase b:" in out and "== phase c:" in out
  assert _mtimes(model_dir)["a"] == mtime_a
  assert os.path.exists(path_b + ".corrupt")
  assert os.path.exists(path_c + ".corrupt")
  for path in (path_b, path_c):
    with h5py.File(path, "r") as f:
      assert len(f.keys())
  model_dir_lib.load(model_dir)


def test_complete_weights_of_another_network_are_not_set_aside(
    run_copy, tiny_config, tiny_model, dataset_fn):
  """Only an unreadable file is corruption; a complete file that does not
  fit the network is an error and stays where it is."""
  model_dir = run_copy()
  path_c = model_dir_lib.phase_weights_path(model_dir, "c")
  tiny_model(width=16).save_weights(path_c)
  with pytest.raises(ValueError, match="is a complete weights file but "
                     "cannot be loaded into this run's network"):
    training.train(_config(tiny_config, model_dir), "full",
                   dataset_fn=dataset_fn, verbose=0)
  assert os.path.exists(path_c) and not os.path.exists(path_c + ".corrupt")


def test_corrupt_stage1_weights_for_stage2_name_the_recovery(
    run_copy, tiny_config, dataset_fn):
  model_dir = run_copy()
  path_c = model_dir_lib.phase_weights_path(model_dir, "c")
  _truncate(path_c)
  with pytest.raises(OSError) as info:
    training.train(_config(tiny_config, model_dir), "semi",
                   dataset_fn=dataset_fn, verbose=0)
  message = str(info.value)
  assert f"{path_c} is corrupt" in message
  assert f"tools/train.py --stage=full --model_dir={model_dir}" in message
  assert os.path.exists(path_c)  # The fixed phase is not set aside.


def test_corrupt_model_keras_falls_back_to_the_phase_weights(
    run_copy, finished_run, caplog):
  model_dir = run_copy()
  path = model_dir_lib.model_path(model_dir)
  with open(path, "r+b") as f:  # Garble the middle of one member.
    f.seek(os.path.getsize(path) // 2)
    f.write(b"\xff" * 64)
  with caplog.at_level(logging.WARNING):
    _, model = model_dir_lib.load(model_dir)
  assert any(path in r.getMessage() and "corrupt" in r.getMessage()
             and "phase_c.weights.h5" in r.getMessage()
             for r in caplog.records)
  for a, b in zip(finished_run["weights"], model.weights):
    np.testing.assert_array_equal(a, b.numpy())
  # Without phase weights: the error names the command that rewrites it.
  _truncate(path)
  os.remove(model_dir_lib.phase_weights_path(model_dir, "c"))
  with pytest.raises(OSError, match=r"is corrupt .*python tools/train\.py "
                     r"--model_dir="):
    model_dir_lib.load(model_dir)


# ---------------------------------------------------------------- builders
def _png_header_bomb(path, width, height):
  """A valid 8-bit grayscale PNG of zeros, compressed row by row (a few
  KB on disk for any size)."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
  compressor = zlib.compressobj(9)
  row = b"\0" * (width + 1)
  parts = [compressor.compress(row * 256) for _ in range(height // 256)]
  parts.append(compressor.compress(row * (height % 256)))
  parts.append(compressor.flush())
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                       0, 0)))
    f.write(chunk(b"IDAT", b"".join(parts)))
    f.write(chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory):
  """A web-tag folder: 2 good images, a 20000x20000 (400 Mpx, over twice
  Pillow's limit: DecompressionBombError) and a 10000x10000 (100 Mpx,
  between once and twice it: Pillow only warns) grayscale PNG."""
  root = str(tmp_path_factory.mktemp("bombs") / "web ü")
  os.makedirs(os.path.join(root, "images"))
  rng = np.random.RandomState(0)
  for name in ("good_1.png", "good_2.png"):
    Image.fromarray(rng.randint(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        os.path.join(root, "images", name))
  _png_header_bomb(os.path.join(root, "images", "bomb_400mpx.png"), 20000,
                   20000)
  _png_header_bomb(os.path.join(root, "images", "bomb_100mpx.png"), 10000,
                   10000)
  with open(os.path.join(root, web_tags.ANNOTATIONS), "w") as f:
    for name in ("good_1.png", "bomb_400mpx.png", "bomb_100mpx.png",
                 "good_2.png"):
      f.write(json.dumps({"image": f"images/{name}", "tags": ["dog"]}) + "\n")
  return root


def test_pixel_bombs_are_bad_files_refused_before_decoding(
    bomb_folder, tmp_path, monkeypatch, caplog):
  sizes = {n: os.path.getsize(os.path.join(bomb_folder, "images", n))
           for n in ("bomb_400mpx.png", "bomb_100mpx.png")}
  assert max(sizes.values()) < 1_000_000, sizes
  decoded = []
  original_load = Image.Image.load

  def load(self):
    decoded.append(os.path.basename(getattr(self, "filename", "") or ""))
    return original_load(self)
  monkeypatch.setattr(Image.Image, "load", load)
  limit_before = Image.MAX_IMAGE_PIXELS
  builder = web_tags.web_tags_builder(bomb_folder, str(tmp_path / "tfds"),
                                      skip_bad_files=True)
  start = time.time()
  with caplog.at_level(logging.WARNING):
    builder.download_and_prepare()
  seconds = time.time() - start
  got = sorted(ex["file_name"].decode() for ex in
               tfds.as_numpy(builder.as_dataset(split="train")))
  assert got == ["images/good_1.png", "images/good_2.png"]
  report = [r.getMessage() for r in caplog.records
            if "skipped 2 bad file(s)" in r.getMessage()]
  assert len(report) == 1, [r.getMessage() for r in caplog.records]
  assert "20000x20000 = 400000000 pixels" in report[0]
  assert "10000x10000 = 100000000 pixels" in report[0]
  assert "data.max_image_pixels=89478485" in report[0]
  assert not [n for n in decoded if n.startswith("bomb")], decoded
  assert Image.MAX_IMAGE_PIXELS == limit_before  # No global side effect.
  print(f"built 2 good + 2 bomb images in {seconds:.2f} s")


def test_strict_build_names_the_bomb_and_the_limit(bomb_folder, tmp_path):
  builder = web_tags.web_tags_builder(bomb_folder, str(tmp_path / "tfds"))
  with pytest.raises(voc.BadFileError,
                     match=r"bomb_400mpx.png: image is 20000x20000 .*"
                     r"data.max_image_pixels=89478485"):
    builder.download_and_prepare()


def test_configured_pixel_limit_reaches_the_builders(mini_benchmark,
                                                     tmp_path):
  config = config_lib.resolve_config("synthetic", {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.weak_dir": mini_benchmark["weak_dir"],
      "data.data_dir": str(tmp_path / "tfds"),
      "data.max_image_pixels": 1000, "data.skip_bad_files": True})
  default = config_lib.resolve_config("synthetic", {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.data_dir": str(tmp_path / "tfds")})
  for name in ("voc", "web_tags"):
    assert pipeline.builder_for(config, name).builder_config \
        .max_image_pixels == 1000
  # Another limit is another dataset; the default keeps existing names.
  assert (pipeline.builder_for(config, "voc").builder_config.name
          != pipeline.builder_for(default, "voc").builder_config.name + "_skip")
  image = os.path.join(mini_benchmark["voc_dir"], "VOCdevkit", "VOC2012",
                       "JPEGImages")
  first = os.path.join(image, sorted(os.listdir(image))[0])
  with pytest.raises(voc.BadFileError, match="over the limit "
                     "data.max_image_pixels=1000; not decoded"):
    voc.read_rgb_image(first, max_pixels=1000)
  mask = str(tmp_path / "mask.png")
  _png_header_bomb(mask, 20000, 20000)
  with pytest.raises(voc.BadFileError, match="mask PNG is 20000x20000"):
    voc.read_label_png(mask)
  assert voc.read_rgb_image(first, max_pixels=None)[0].ndim == 3


# ------------------------------------------------ empty index, odd paths
@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_annotations_file_is_an_error(tmp_path, content):
  weak_dir = str(tmp_path / "weak")
  os.makedirs(weak_dir)
  with open(os.path.join(weak_dir, web_tags.ANNOTATIONS), "w") as f:
    f.write(content)
  for skip in (False, True):
    builder = web_tags.web_tags_builder(
        weak_dir, str(tmp_path / f"tfds{skip}"), skip_bad_files=skip)
    with pytest.raises(ValueError, match=r"annotations.jsonl: no annotation "
                       r"lines \(empty split\)"):
      builder.download_and_prepare()


def test_every_image_bad_is_an_error_not_an_empty_split(bomb_folder,
                                                         tmp_path):
  """With skip_bad_files, an index whose images are all bad: a clear error
  (tfds' own was "Failed to finalize writing of split 'train': No examples
  were yielded")."""
  weak_dir = str(tmp_path / "weak")
  shutil.copytree(bomb_folder, weak_dir)
  with open(os.path.join(weak_dir, web_tags.ANNOTATIONS), "w") as f:
    f.write(json.dumps({"image": "images/bomb_400mpx.png", "tags": ["cat"]})
            + "\n")
  config = config_lib.resolve_config("synthetic", {
      "data.weak_dir": weak_dir, "data.data_dir": str(tmp_path / "tfds"),
      "data.skip_bad_files": True})
  with pytest.raises(ValueError, match=r"all 1 listed file\(s\) are bad "
                     r"\(skip_bad_files=True\), so the split would be "
                     r"empty:\n  .*bomb_400mpx.png"):
    pipeline.prepare_datasets(config)


def test_unicode_and_space_paths_in_data(tmp_path):
  """voc_dir, weak_dir, data_dir and image files with spaces and Unicode."""
  root = str(tmp_path / "dätä dir" / "synthetic 合成")
  summary = synthetic.generate_benchmark(root, num_train=2, num_val=2,
                                         num_weak=2, num_tags_only=0,
                                         image_size=32)
  weak_dir = summary["weak_dir"]
  records = [json.loads(line) for line in
             open(os.path.join(weak_dir, web_tags.ANNOTATIONS))]
  odd = "images/bild ä 写真 1.jpg" if records[0]["image"].endswith(
      ".jpg") else "images/bild ä 写真 1.png"
  os.rename(os.path.join(weak_dir, records[0]["image"]),
            os.path.join(weak_dir, odd))
  records[0]["image"] = odd
  with open(os.path.join(weak_dir, web_tags.ANNOTATIONS), "w",
            encoding="utf-8") as f:
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n"
                    for r in records))
  config = config_lib.resolve_config("synthetic", {
      "data.voc_dir": summary["voc_dir"], "data.weak_dir": weak_dir,
      "data.data_dir": str(tmp_path / "tfds ü dir"),
      "data.eval_split": "val"})
  builders = pipeline.prepare_datasets(config)
  names = {ex["file_name"].decode("utf-8") for ex in tfds.as_numpy(
      builders["web_tags"].as_dataset(split="train"))}
  assert odd in names and len(names) == 2
  assert len(list(pipeline.eval_dataset(config))) == 2


# -------------------------------------------------------------- NaN / Inf
def _poisoned(dataset_fn, key, value):
  """`dataset_fn` with one value of `key` in every batch set to `value`."""
  def make(config, stage):
    def poison(batch):
      x = batch[key]
      batch = dict(batch)
      batch[key] = tf.tensor_scatter_nd_update(
          x, [[0] * len(x.shape)], [value])
      return batch
    return dataset_fn(config, stage).map(poison)
  return make


@pytest.mark.parametrize("key,value", [("image", float("nan")),
                                       ("image_small", float("inf"))])
def test_nan_or_inf_training_input_is_an_error_naming_it(
    tmp_path, tiny_config, dataset_fn, key, value):
  config = _config(tiny_config, str(tmp_path / "run"))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"Training input '{key}' has NaN or Inf pixels"):
    training.train(config, "full", dataset_fn=_poisoned(dataset_fn, key,
                                                        value), verbose=0)
  # Nothing was committed from the poisoned step.
  assert not os.path.exists(model_dir_lib.phase_weights_path(
      config.model_dir, "a"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"),
                                   -float("inf")])
def test_nan_or_inf_evaluation_input_is_an_error_naming_the_file(
    tiny_model, eval_examples, value):
  model = tiny_model()
  examples = eval_examples()
  image = examples[0]["image"].numpy()
  image[0, 3, 4, 1] = value
  examples[0]["image"] = tf.constant(image)
  with pytest.raises(ValueError, match=r"img_0.jpg: the image has 1 NaN or "
                     r"Inf value\(s\)"):
    evaluation.evaluate_model(model, examples, [0, 2])
  with pytest.raises(ValueError, match="image: the image has 1 NaN"):
    evaluation.predict(model, image, [0])
