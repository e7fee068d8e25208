"""Reliability of training: SIGKILL at seeded points, full disk, bad model_dir.

`tools/train.py` runs in subprocesses on the mini synthetic benchmark, with
the command line of the session's reference run (conftest `trained_run`).
A run is killed with SIGKILL

* at the N-th checkpoint write, *inside* the write (a wrapper makes the
  process SIGKILL itself before the HDF5 / zip file is closed, so the file
  on disk is truncated), and
* right after the N-th commit (the atomic rename) of a file whose path
  contains a pattern, a log event of the run itself rather than a delay
  (so where it lands does not depend on the machine's load),

in every stage (stage-1 phases a, b, c and stage 2), then rerun until it
finishes. After every kill no checkpoint that a rerun would read is
corrupt, and the final `model.keras` weights equal those of an
uninterrupted run bit for bit (deterministic mode).

A full disk is a real 64-1024 KiB tmpfs (the tests run as root; without
root a monkeypatched ENOSPC write is used instead), an unwritable
`model_dir` a read-only tmpfs.
"""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from dis_tf import atomic
from dis_tf import callbacks as callbacks_lib
from dis_tf import model_dir as model_dir_lib
from dis_tf import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20240611

# Runs the training tool, killing itself (SIGKILL) inside the N-th write of
# a file whose name contains KILL_MATCH, before the file is closed; or
# right after the N-th `os.replace` onto a path containing KILL_REPLACED.
_WRAPPER = r'''
import os, signal, sys, runpy, zipfile
import h5py
match = os.environ.get("KILL_MATCH")
count = [int(os.environ.get("KILL_AT", "0"))]

replaced = os.environ.get("KILL_REPLACED")
original_replace = os.replace
def replace(src, dst, *args, **kwargs):
  result = original_replace(src, dst, *args, **kwargs)
  if replaced and replaced in str(dst):
    count[0] -= 1
    if count[0] == 0:
      os.kill(os.getpid(), signal.SIGKILL)
  return result
os.replace = replace

def should_die(name):
  if not match or match not in os.path.basename(str(name)):
    return False
  count[0] -= 1
  return count[0] == 0

original_h5_close = h5py.File.close
def h5_close(self):
  # Writes only: a resumed run reads the same files (restore) first.
  if self.id.valid and self.mode != "r" and should_die(self.filename):
    self.flush() if os.environ.get("KILL_FLUSH") else None
    os.kill(os.getpid(), signal.SIGKILL)
  return original_h5_close(self)
h5py.File.close = h5_close

original_zip_close = zipfile.ZipFile.close
def zip_close(self):
  if self.fp is not None and self.mode != "r" and should_die(self.filename):
    os.kill(os.getpid(), signal.SIGKILL)
  return original_zip_close(self)
zipfile.ZipFile.close = zip_close

sys.argv = ["tools/train.py"] + sys.argv[1:]
runpy.run_path(os.path.join(os.environ["REPO"], "tools", "train.py"),
               run_name="__main__")
'''


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory):
  path = tmp_path_factory.mktemp("reliability_train") / "kill_wrapper.py"
  path.write_text(_WRAPPER)
  return str(path)


@pytest.fixture(scope="module")
def start(wrapper, trained_run, tool_env):
  """`start(model_dir, **kill)`: the reference run's command line (the
  `trained_run` fixture) into `model_dir`, through the kill wrapper."""
  def run(model_dir, **kill):
    return subprocess.Popen(
        [sys.executable, wrapper, f"--model_dir={model_dir}"]
        + trained_run["flags"],
        env=tool_env(REPO=REPO, **kill), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
  return run


def _finish(proc, timeout=240):
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  return proc.returncode, out.decode(errors="replace")


def _model_weights(model_dir):
  _, model = model_dir_lib.load(model_dir)
  return [w.numpy() for w in model.weights]


def _read_h5_fully(path):
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset)
                 else None)


def _read_committed_states(model_dir):
  """Reads fully the weights each backup's state.json names; their paths."""
  found = []
  for state_path in glob.glob(os.path.join(model_dir, "backup", "*",
                                           "state.json")):
    with open(state_path) as f:
      state = json.load(f)
    _read_h5_fully(os.path.join(os.path.dirname(state_path),
                                state["weights"]))
    found.append(os.path.relpath(state_path, model_dir))
  return found


def _assert_no_corrupt_checkpoint(model_dir):
  """Every file a rerun would read is complete; returns what was found."""
  found = []
  for path in glob.glob(os.path.join(model_dir, "checkpoints", "*.h5")):
    if ".tmp." in os.path.basename(path):
      continue  # A temp file: never read, replaced by the next write.
    _read_h5_fully(path)
    found.append(os.path.basename(path))
  found += _read_committed_states(model_dir)
  for path in glob.glob(os.path.join(model_dir, "backup", "*", "*.h5")):
    assert "latest.weights.h5" not in path  # Keras' in-place format unused.
  if os.path.exists(model_dir_lib.model_path(model_dir)):
    with zipfile.ZipFile(model_dir_lib.model_path(model_dir)) as z:
      assert z.testzip() is None
    found.append("model.keras")
  return found


@pytest.fixture(scope="module")
def reference(trained_run):
  return {"weights": _model_weights(trained_run["model_dir"]),
          "source": trained_run["source"]}


@pytest.fixture(scope="module")
def assert_equal_to_reference(reference, source_hash):
  def check(weights):
    # Bit-for-bit equality only means something if every run used the same
    # code: on a shared checkout someone may edit dis_tf/ meanwhile.
    if source_hash() != reference["source"]:
      pytest.skip("dis_tf/ or tools/ changed while this test ran (a "
                  "concurrent edit); the runs used different code.")
    assert len(weights) == len(reference["weights"])
    for a, b in zip(reference["weights"], weights):
      np.testing.assert_array_equal(a, b)
  return check


_PHASES = ("a", "b", "c", "semi")


def _resume_point(model_dir, epochs=2):
  """(phase, finished epochs, epochs) where a rerun continues, read from
  the committed state (phase weights and backups); None if every phase is
  done. `epochs`: of every phase (4 steps in epochs of 2)."""
  for phase in _PHASES:
    if os.path.exists(os.path.join(model_dir, "checkpoints",
                                   f"phase_{phase}.weights.h5")):
      continue
    state = callbacks_lib.AtomicBackupAndRestore.read_state(
        os.path.join(model_dir, "backup", f"phase_{phase}"))
    return phase, (state or {}).get("epoch", 0), epochs
  return None


def _assert_resumed_at(out, point):
  """The driver's log shows a run that continued at `point` (see
  `_resume_point`; None: the first run, which starts phase a afresh)."""
  phase, epoch, epochs = point or ("a", 0, 2)
  before = _PHASES[:_PHASES.index(phase)]
  for done in before:  # Finished phases are skipped, not retrained.
    assert f"== phase {done}:" not in out, (point, out[-3000:])
  if epoch:
    assert (f"== phase {phase}: resuming after epoch {epoch} of {epochs} =="
            in out), (point, out[-3000:])
  else:
    assert f"== phase {phase}: 4 steps ==" in out, (point, out[-3000:])
    assert f"== phase {phase}: resuming" not in out, (point, out[-3000:])


@pytest.mark.slow
def test_sigkill_at_seeded_points_resumes_to_identical_weights(
    tmp_path, start, assert_equal_to_reference):
  rng = np.random.RandomState(SEED)
  model_dir = str(tmp_path / "killed")
  # (how, argument): "write" = die inside the N-th write of files whose
  # name contains the pattern; "after" = die right after the N-th commit
  # (rename) onto a path containing the pattern.
  kills = [
      ("write", "phase_a", int(rng.randint(1, 4))),       # stage 1, phase a
      ("after", "backup/phase_b/state.json", int(rng.randint(1, 3))),
      ("write", "phase_c.tmp", 1),            # the phase-c final weights
      ("write", "state-", int(rng.randint(1, 3))),  # stage-2 backup state
      ("write", "model.tmp.keras", 1),        # the final model.keras
  ]
  log = []
  expected = None  # Where the next run must resume (from the disk state).
  for how, what, arg in kills:
    if how == "write":
      proc = start(model_dir, KILL_MATCH=what, KILL_AT=arg)
    else:
      proc = start(model_dir, KILL_REPLACED=what, KILL_AT=arg)
    code, out = _finish(proc)
    assert code == -signal.SIGKILL, (how, what, arg, out[-3000:])
    # This run (killed) started where the previous kill left the disk.
    _assert_resumed_at(out, expected)
    expected = _resume_point(model_dir)
    log.append((how, what, arg, expected,
                _assert_no_corrupt_checkpoint(model_dir)))
    # Each row's claim, from the committed state the rerun will read.
    if what == "phase_a":  # Resumes phase a from its last backup.
      assert expected[0] == "a" and expected[1] >= 1, log
    elif what == "backup/phase_b/state.json":  # After phase b's epoch N.
      assert expected == ("b", arg, 2), log
    elif what == "phase_c.tmp":  # Phase c from its last (epoch-2) backup.
      assert expected == ("c", 2, 2), log
    elif what == "state-":  # Inside stage 2, not stage 1 again.
      assert expected[0] == "semi", log
  # The last kill hit model.keras: stage 1 and 2 are done, nothing retrains.
  assert expected is None, log
  assert not os.path.exists(model_dir_lib.model_path(model_dir)), log
  code, out = _finish(start(model_dir))
  assert code == 0, out[-3000:]
  assert "== phase" not in out  # Every phase was already finished.
  _assert_no_corrupt_checkpoint(model_dir)
  assert not glob.glob(os.path.join(model_dir, "**", "*.tmp*"),
                       recursive=True)
  assert_equal_to_reference(_model_weights(model_dir))


@pytest.mark.slow
def test_kill_inside_a_backup_write_resumes_mid_phase(
    tmp_path, start, assert_equal_to_reference):
  """Killed writing the epoch-2 backup of phase b: resumes after epoch 1."""
  model_dir = str(tmp_path / "mid_phase")
  # Writes matching "state-" in phase a: 2 backups; phase b: the 2nd is
  # the 4th overall. KILL_FLUSH leaves a full-size but never-closed file.
  code, out = _finish(start(model_dir, KILL_MATCH="state-", KILL_AT=4,
                            KILL_FLUSH=1))
  assert code == -signal.SIGKILL, out[-3000:]
  with open(os.path.join(model_dir, "backup/phase_b/state.json")) as f:
    assert json.load(f)["epoch"] == 1
  _assert_no_corrupt_checkpoint(model_dir)
  code, out = _finish(start(model_dir))
  assert code == 0, out[-3000:]
  assert "== phase b: resuming after epoch 1 of 2 ==" in out
  assert_equal_to_reference(_model_weights(model_dir))


# ---------------------------------------------------------------- full disk
def _mount_tmpfs(path, options):
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0:
    return False
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                           path], capture_output=True)
  return result.returncode == 0


def _umount(path):
  subprocess.run(["umount", "-l", path], capture_output=True)


def _committed_files(model_dir):
  names = []
  for dirpath, _, files in os.walk(model_dir):
    names += [os.path.join(dirpath, f) for f in files]
  return names


@pytest.mark.parametrize("size_kib", [64, 3072])
def test_full_disk_fails_at_the_write_and_keeps_last_good(
    tmp_path, size_kib, tiny_config, dataset_fn):
  """64 KiB: fails at the first checkpoint; 3 MiB: fails some writes in."""
  mount = str(tmp_path / "disk")
  if not _mount_tmpfs(mount, f"size={size_kib}k"):
    pytest.skip("needs root to mount a tmpfs (see the ENOSPC variant)")
  try:
    model_dir = os.path.join(mount, "run")
    with pytest.raises(OSError) as info:
      training.train(tiny_config(model_dir), "full", dataset_fn=dataset_fn,
                     verbose=0)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC, message
    assert "No space left on device" in message
    assert "Could not write checkpoint" in message and model_dir in message
    files = _committed_files(model_dir)
    assert not [f for f in files if ".tmp" in os.path.basename(f)], files
    assert not os.path.exists(model_dir_lib.model_path(model_dir))
    if size_kib > 1024:  # Some checkpoints were committed before.
      assert [f for f in files if f.endswith(".h5")], files
    for path in files:
      if path.endswith(".h5"):
        _read_h5_fully(path)  # What is there is complete.
    _read_committed_states(model_dir)
  finally:
    _umount(mount)


def _fill(mount, leave):
  """Fills the filesystem at `mount` until `leave` bytes are free."""
  with open(os.path.join(mount, "filler"), "wb", buffering=0) as f:
    try:
      while True:
        f.write(b"\0" * 65536)
    except OSError as e:
      assert e.errno == errno.ENOSPC, e
    f.truncate(max(0, f.tell() - leave))
  return shutil.disk_usage(mount).free


def _commit(kind, model, directory):
  """Writes `model` with the commit function of `kind`; the final path."""
  if kind == "checkpoint":
    path = os.path.join(directory, "checkpoints", "phase_a.weights.h5")
    callbacks_lib.save_weights_atomically(model, path)
    return path
  if kind == "model.keras":
    return model_dir_lib.save_model(model, directory)
  path = os.path.join(directory, "config.json")
  atomic.write_json(path, {"weights": [float(w.numpy().sum())
                                       for w in model.weights]})
  return path


def _read_back(kind, path, model):
  """The weights (or JSON) committed at `path`."""
  if kind == "checkpoint":
    model.load_weights(path)
    return [w.numpy() for w in model.weights]
  if kind == "model.keras":
    loaded = model_dir_lib.load_trained_model(os.path.dirname(path))
    return [w.numpy() for w in loaded.weights]
  with open(path) as f:
    return [np.array(json.load(f)["weights"])]


@pytest.mark.parametrize("kind,leave_kib", [
    ("checkpoint", 0), ("model.keras", 0), ("model.keras", 64),
    ("config.json", 0)])
def test_write_itself_fails_on_a_full_tmpfs(tmp_path, monkeypatch, kind,
                                            leave_kib, tiny_model):
  """A real 4 MiB tmpfs filled *after* version 1 was committed, so the
  write of version 2 itself fails (for checkpoints the free-space estimate
  is bypassed: the disk fills between the check and the write). 0 KiB left:
  the write fails at once; 64 KiB left: it fails half-way (model.keras is
  ~150 KB). The error is an OSError (ENOSPC) naming the file, no temp file
  is left, and the file still holds version 1. (A *checkpoint* failing
  half-way kills the process inside HDF5: the next test.)"""
  mount = str(tmp_path / "disk")
  if not _mount_tmpfs(mount, "size=4m"):
    pytest.skip("needs root to mount a tmpfs")
  try:
    model = tiny_model(width=8)
    path = _commit(kind, model, os.path.join(mount, "run"))
    version_1 = _read_back(kind, path, model)
    for w in model.weights:
      w.assign(w + 1.0)
    monkeypatch.setattr(callbacks_lib, "_check_free_space",
                        lambda *args: None)
    assert _fill(mount, leave_kib * 1024) <= leave_kib * 1024
    with pytest.raises(OSError) as info:
      _commit(kind, model, os.path.join(mount, "run"))
    assert info.value.errno == errno.ENOSPC, info.value
    if kind != "config.json":  # atomic.write_json raises the plain error.
      assert f"Could not write {'checkpoint ' * (kind == 'checkpoint')}" \
             f"{path} (" in str(info.value), info.value
    assert "No space left on device" in str(info.value) or (
        "file write failed" in str(info.value)), info.value
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    os.remove(os.path.join(mount, "filler"))
    for a, b in zip(_read_back(kind, path, model), version_1):
      np.testing.assert_array_equal(a, b)
  finally:
    _umount(mount)


_HALF_WRITTEN_CHECKPOINT = r"""
import os, sys
sys.path.insert(0, os.path.join(os.environ["REPO"], "tests"))
import numpy as np
import test_reliability_training as t
from conftest import _tiny_config
from dis_tf import callbacks as callbacks_lib
from dis_tf.modeling.dis_model import build_dis_model
mount, saved = sys.argv[1:3]
model = build_dis_model(_tiny_config(width=8))
path = t._commit("checkpoint", model, os.path.join(mount, "run"))
np.savez(saved, *[w.numpy() for w in model.weights])
for w in model.weights:
  w.assign(w + 1.0)
callbacks_lib._check_free_space = lambda *args: None
print("free", t._fill(mount, 64 * 1024), flush=True)
try:
  t._commit("checkpoint", model, os.path.join(mount, "run"))
except OSError as e:
  print("OSError", e, flush=True)
  sys.exit(3)
"""


def test_checkpoint_write_failing_half_way_keeps_the_committed_file(
    tmp_path, tiny_model, tool_env):
  """The disk fills half-way through a checkpoint (64 KiB left of a ~140
  KB file), past the free-space estimate: measured, HDF5 then kills the
  process with SIGSEGV (h5py 3.14; `file write failed ... errno = 28` from
  its deallocators first). A clean OSError is accepted too. Either way the
  committed file still holds version 1, and the only other file is the
  temp file, which the next run removes (`atomic.is_temp_name`)."""
  mount = str(tmp_path / "disk")
  if not _mount_tmpfs(mount, "size=4m"):
    pytest.skip("needs root to mount a tmpfs")
  try:
    script = tmp_path / "half_written.py"
    script.write_text(_HALF_WRITTEN_CHECKPOINT)
    saved = str(tmp_path / "version_1.npz")
    proc = subprocess.run([sys.executable, str(script), mount, saved],
                          env=tool_env(REPO=REPO), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-signal.SIGSEGV, 3), (
        proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    if proc.returncode == 3:
      assert "Could not write checkpoint" in proc.stdout, proc.stdout
    else:
      assert "errno = 28" in proc.stderr, proc.stderr[-3000:]
    directory = os.path.join(mount, "run", "checkpoints")
    leftovers = set(os.listdir(directory)) - {"phase_a.weights.h5"}
    assert "phase_a.weights.h5" in os.listdir(directory)
    assert all(atomic.is_temp_name(name) for name in leftovers), leftovers
    print(f"half-written checkpoint: exit status {proc.returncode}, "
          f"left {sorted(leftovers)}")
    os.remove(os.path.join(mount, "filler"))
    model = tiny_model(width=8)
    model.load_weights(os.path.join(directory, "phase_a.weights.h5"))
    with np.load(saved) as version_1:
      expected = [version_1[f"arr_{i}"] for i in range(len(version_1.files))]
    for a, b in zip([w.numpy() for w in model.weights], expected):
      np.testing.assert_array_equal(a, b)
  finally:
    _umount(mount)


def test_enospc_mid_write_leaves_previous_checkpoint(
    tmp_path, monkeypatch, tiny_config, dataset_fn):
  """Without root: a write failing with ENOSPC after the first few."""
  model_dir = str(tmp_path / "run")
  original = training.keras.Model.save_weights
  calls = []

  def failing_save(self, filepath, *args, **kwargs):
    calls.append(filepath)
    if len(calls) == 3:  # The epoch-2 backup of phase a.
      with open(filepath, "wb") as f:
        f.write(b"\x89HDF half written")
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return original(self, filepath, *args, **kwargs)

  monkeypatch.setattr(training.keras.Model, "save_weights", failing_save)
  with pytest.raises(OSError, match="No space left on device") as info:
    training.train(tiny_config(model_dir), "full", dataset_fn=dataset_fn,
                   verbose=0)
  assert "state-000002" in str(info.value)
  files = _committed_files(model_dir)
  assert not [f for f in files if ".tmp" in os.path.basename(f)], files
  with open(os.path.join(model_dir, "backup/phase_a/state.json")) as f:
    state = json.load(f)
  assert state["epoch"] == 1
  _read_h5_fully(os.path.join(model_dir, "backup/phase_a", state["weights"]))
  _read_h5_fully(os.path.join(model_dir,
                              "checkpoints/phase_a_latest.weights.h5"))


def test_read_only_model_dir_fails_before_training(tmp_path, tiny_config,
                                                   dataset_fn):
  mount = str(tmp_path / "ro")
  if not _mount_tmpfs(mount, "ro,size=64k"):
    pytest.skip("needs root to mount a read-only tmpfs")
  try:
    with pytest.raises(OSError, match="is not writable") as info:
      training.train(tiny_config(os.path.join(mount, "run")), "full",
                     dataset_fn=dataset_fn, verbose=0)
    assert "Read-only file system" in str(info.value)
    assert os.listdir(mount) == []
  finally:
    _umount(mount)


def test_missing_parent_permission_named(tmp_path, tiny_config, dataset_fn):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(OSError, match=r"--model_dir=.*file/run is not writable"):
    training.train(tiny_config(blocker / "run"), "full",
                   dataset_fn=dataset_fn)


def test_corrupt_legacy_state_is_reported(tmp_path, tiny_config, dataset_fn):
  """A state file naming an unreadable backup fails with a clear message."""
  model_dir = str(tmp_path / "run")
  config = tiny_config(model_dir)
  backup = os.path.join(model_dir, "backup", "phase_a")
  os.makedirs(backup)
  with open(os.path.join(backup, "state-000001.weights.h5"), "wb") as f:
    f.write(b"garbage")
  with open(os.path.join(backup, "state.json"), "w") as f:
    json.dump({"epoch": 1, "weights": "state-000001.weights.h5",
               "previous": None}, f)
  with pytest.raises(OSError, match="cannot be loaded.*delete .*phase_a"):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)


def test_previous_backup_used_when_current_is_unreadable(
    tmp_path, tiny_config, dataset_fn, monkeypatch, capsys):
  """The epoch-2 state is bit rot: the rerun restores exactly the epoch-1
  state (weights and optimizer variables) and retrains epoch 2."""
  model_dir = str(tmp_path / "run")
  config = tiny_config(model_dir)
  config.data.deterministic = True
  # Phase a, 2 epochs: stop after both backups are written, keeping the
  # state at the end of epoch 1 (what state-000001 holds).
  original = training._callbacks
  saved = {}

  def snapshot(model):
    return ([w.numpy() for w in model.weights],
            [v.numpy() for v in model.optimizer.variables])

  class Stop(training.keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      if epoch == 0:  # After the backup callback wrote state-000001.
        saved["epoch_1"] = snapshot(self.model)
      if epoch == 1:
        raise KeyboardInterrupt

  monkeypatch.setattr(training, "_callbacks",
                      lambda *a: original(*a) + [Stop()])
  with pytest.raises(KeyboardInterrupt):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  monkeypatch.setattr(training, "_callbacks", original)
  backup = os.path.join(model_dir, "backup", "phase_a")
  with open(os.path.join(backup, "state.json")) as f:
    state = json.load(f)
  assert state["epoch"] == 2 and state["previous"]["epoch"] == 1
  with open(os.path.join(backup, state["weights"]), "wb") as f:
    f.write(b"bit rot")

  restore = callbacks_lib.AtomicBackupAndRestore.restore
  restored = []

  def recording_restore(self):
    epoch = restore(self)
    restored.append((epoch, snapshot(self.model)))
    return epoch

  monkeypatch.setattr(callbacks_lib.AtomicBackupAndRestore, "restore",
                      recording_restore)
  capsys.readouterr()
  model = training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  out = capsys.readouterr().out
  assert "== phase a: resuming after epoch 1 of 2 ==" in out, out
  epoch, (weights, optimizer) = restored[0]  # Phase a's restore.
  assert epoch == 1
  expected_weights, expected_optimizer = saved["epoch_1"]
  assert len(weights) == len(expected_weights)
  for a, b in zip(weights, expected_weights):
    np.testing.assert_array_equal(a, b)
  assert len(optimizer) == len(expected_optimizer)
  for a, b in zip(optimizer, expected_optimizer):
    np.testing.assert_array_equal(a, b)
  assert all(np.isfinite(w.numpy()).all() for w in model.weights)
