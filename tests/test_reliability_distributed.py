"""Multi-worker training: two local workers, one killed, both restarted.

`tools/train.py --strategy=multi_worker` with TF_CONFIG naming two workers
on free 127.0.0.1 ports (MultiWorkerMirroredStrategy, CPU collectives over
gRPC). The chief (worker 0) writes model_dir; worker 1 writes only
model_dir/workers/worker_1/ (same layout), and both resume from the chief's
backup. Worker 1 is SIGKILLed after the chief's first phase-a backup, the
chief is stopped (it cannot continue without its peer), both are restarted
on new ports, and both must resume inside phase a and end with identical
weights.

References (one module fixture, started together): the same two-worker
command uninterrupted, and the same command in one process (default
strategy). Measured on the 2-core machine (max abs weight difference,
weights of scale ~0.1):

* two uninterrupted two-worker runs: bit-identical (5 of 5 under CPU
  load, with --deterministic). Before the fix in `pipeline._shuffled` they
  differed by up to 3e-2 from phase a's first step: the second iterator of
  the training dataset (fit's, after the `take(1)` that builds the model)
  got a timing-dependent shuffle. Killed-and-restarted vs uninterrupted:
  asserted bit-identical;
* two workers vs one process: 1.04e-7 (float32 rounding: the gradients
  of two replicas are summed instead of computed in one backward pass),
  asserted within `SINGLE_PROCESS_ATOL` = 1e-5. It was 2.7e-3 while each
  replica divided L^map by its own non-ignored pixels; the divisor is now
  the global batch's count per replica (`dis_model._replica_mean_count`).

Chief and worker 1 hold the same all-reduced weights: bit-identical.

Files: each process's TensorBoard event files carry its pid, so the tests
check not only which files exist in model_dir and in
model_dir/workers/worker_1/ (exact sets), but also that every event file
under model_dir (outside workers/) was written by the chief and every one
under workers/worker_1/ by worker 1.
"""

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from dis_tf import model_dir as model_dir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240
# Max abs weight difference allowed to the single-process run (measured
# figures: module docstring); two-worker runs must agree bit for bit.
SINGLE_PROCESS_ATOL = 1e-5
ARGS = ["--backbone=tiny", "--crop_size=32", "--batch_size=2",
        "--phase_a_steps=8", "--phase_b_steps=2", "--phase_c_steps=2",
        "--steps_per_epoch=2", "--stage=full", "--deterministic"]
# What a finished --stage=full run leaves in model_dir (the chief) and in
# workers/worker_1/ (worker 1: the same, without config.json and the phase
# fingerprints, which only the chief records). Backups are deleted when
# their phase is committed; the chief's train.lock when the run ends.
_EVENTS = "events.out.tfevents.*"
_FINISHED = sorted(
    [f"checkpoints/phase_{p}{s}.weights.h5" for p in "abc"
     for s in ("", "_latest")]
    + [f"logs/phase_{p}/train/{_EVENTS}" for p in "abc"]
    + ["model.keras"])
# Only the chief records the phase fingerprints and draws the TensorBoard
# image grid (logs/phase_<p>/validation).
CHIEF_FILES = sorted(
    _FINISHED + ["config.json"]
    + [f"checkpoints/phase_{p}.fingerprint.json" for p in "abc"]
    + [f"logs/phase_{p}/validation/{_EVENTS}" for p in "abc"])
WORKER_FILES = _FINISHED


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.fixture(scope="module")
def start_workers(mini_benchmark, tool_env):
  """`start_workers(model_dir)`: chief and worker processes, new ports.

  The mini benchmark's tfds data is prepared already: two workers must not
  prepare one data_dir at once.
  """
  def start_once(model_dir, ports):
    argv = [sys.executable, os.path.join(REPO, "tools", "train.py"),
            f"--model_dir={model_dir}", *mini_benchmark["flags"], *ARGS,
            "--strategy=multi_worker"]
    procs = []
    for index in range(2):
      env = tool_env(TF_CONFIG=json.dumps({
          "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
          "task": {"type": "worker", "index": index}}))
      procs.append(subprocess.Popen(argv, env=env, cwd=REPO,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
    return procs

  def start(model_dir, attempts=3):
    # The ports are free when chosen, but another process may take one
    # before a worker binds it (TF's gRPC server cannot share a reserved
    # socket): wait until both workers listen, and start again on new
    # ports if one could not bind.
    for attempt in range(attempts):
      ports = _free_ports(2)
      procs = start_once(model_dir, ports)
      if _both_listen(procs, ports):
        return procs
      outputs = []
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
        outputs.append(_output(proc, 10))
      if attempt + 1 == attempts or not any(
          _BIND_FAILED.search(out) for out in outputs):
        raise AssertionError("workers did not start:\n" + "\n".join(
            out[-3000:] for out in outputs))
    raise AssertionError("unreachable")
  return start


_BIND_FAILED = re.compile(r"Address already in use|Could not start gRPC "
                          r"server|Failed to add port")


def _both_listen(procs, ports, timeout=TIMEOUT):
  """True once both ports accept connections; False if a worker exits
  first."""
  deadline = time.monotonic() + timeout
  waiting = set(ports)
  while waiting:
    if any(proc.poll() is not None for proc in procs):
      return False
    for port in list(waiting):
      with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        waiting.discard(port)
    if time.monotonic() > deadline:
      return False
    time.sleep(0.1)
  return True


@pytest.fixture(scope="module")
def references(tmp_path_factory, start_workers, mini_benchmark, tool_env):
  """The uninterrupted two-worker run and the single-process run, started
  together: {"two_workers", "single"} model_dirs, "pids" (chief, worker),
  "seconds" (wall time of both), "cpu_seconds" (CPU time of the three
  processes)."""
  root = tmp_path_factory.mktemp("distributed_references")
  two, single = str(root / "two_workers"), str(root / "single")
  start = time.time()
  cpu = _children_cpu_seconds()
  procs = start_workers(two)
  procs.append(subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tools", "train.py"),
       f"--model_dir={single}", *mini_benchmark["flags"], *ARGS],
      env=tool_env(), cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT))
  outputs = [_output(p, 3 * TIMEOUT) for p in procs]
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-4000:]
  return {"two_workers": two, "single": single,
          "pids": [procs[0].pid, procs[1].pid],
          "seconds": time.time() - start,
          "cpu_seconds": _children_cpu_seconds() - cpu}


def _children_cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _files(directory):
  """({relative path, event files as `_EVENTS`}, {writer pids of events}).

  workers/ is left out: it is the non-chief workers' directory.
  """
  names, pids = set(), set()
  for dirpath, dirs, files in os.walk(directory):
    if dirpath == directory:
      dirs[:] = [d for d in dirs if d != "workers"]
    for name in files:
      rel = os.path.relpath(os.path.join(dirpath, name), directory)
      # events.out.tfevents.<time>.<host>.<pid>.<n>.v2
      match = re.fullmatch(r"(.*)events\.out\.tfevents\.\d+\.[^/]+\.(\d+)"
                           r"\.\d+\.v2", rel)
      if match:
        rel = match.group(1) + _EVENTS
        pids.add(int(match.group(2)))
      names.add(rel)
  return sorted(names), pids


def _assert_same_weights(a, b, atol=0.0):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    if atol:
      np.testing.assert_allclose(x, y, rtol=0, atol=atol)
    else:
      np.testing.assert_array_equal(x, y)


def _max_abs_difference(a, b):
  return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.slow
def test_uninterrupted_two_workers_files_and_weights(references):
  """Exact file sets per writer; chief == worker 1 bit for bit; close to
  the single-process run (SINGLE_PROCESS_ATOL, see the docstring)."""
  two = references["two_workers"]
  chief_pid, worker_pid = references["pids"]
  worker_dir = os.path.join(two, "workers", "worker_1")
  assert sorted(os.listdir(os.path.join(two, "workers"))) == ["worker_1"]
  chief_files, chief_pids = _files(two)
  worker_files, worker_pids = _files(worker_dir)
  assert chief_files == CHIEF_FILES
  assert worker_files == WORKER_FILES
  assert chief_pids == {chief_pid}
  assert worker_pids == {worker_pid}
  chief = _weights(two)
  _assert_same_weights(chief, _worker_weights(worker_dir))
  single = _weights(references["single"])
  difference = _max_abs_difference(chief, single)
  print(f"two workers vs one process: max abs weight difference "
        f"{difference:.3g}; the reference runs took "
        f"{references['seconds']:.0f} s ({references['cpu_seconds']:.0f} s "
        "CPU)")
  _assert_same_weights(chief, single, atol=SINGLE_PROCESS_ATOL)


def _output(proc, timeout):
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, _ = proc.communicate()
  return out.decode(errors="replace")


def _weights(model_dir):
  _, model = model_dir_lib.load(model_dir)
  return [w.numpy() for w in model.weights]


@pytest.mark.slow
def test_kill_one_worker_restart_both_resume_identical(tmp_path,
                                                       start_workers,
                                                       references):
  model_dir = str(tmp_path / "run")
  worker_dir = os.path.join(model_dir, "workers", "worker_1")
  chief, worker = start_workers(model_dir)
  first_chief, first_worker = chief.pid, worker.pid
  state = os.path.join(model_dir, "backup", "phase_a", "state.json")
  deadline = time.time() + TIMEOUT
  try:
    while not os.path.exists(state):
      assert chief.poll() is None and worker.poll() is None, (
          _output(chief, 5)[-3000:], _output(worker, 5)[-3000:])
      assert time.time() < deadline, "no phase-a backup in time"
      time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    # The chief cannot finish a step without its peer: it fails or hangs.
    try:
      chief.wait(20)
    except subprocess.TimeoutExpired:
      chief.send_signal(signal.SIGKILL)
  finally:
    for proc in (chief, worker):
      if proc.poll() is None:
        proc.kill()
  _output(chief, 10)
  _output(worker, 10)
  with open(state) as f:
    killed_at = json.load(f)["epoch"]
  assert 1 <= killed_at < 4
  assert not os.path.exists(model_dir_lib.model_path(model_dir))
  # Only the chief wrote model_dir (its backup is what both read); worker 1
  # wrote only its own directory, the same layout without config.json. A
  # process can be stopped inside a write: temp names are allowed here.
  in_phase_a = {"logs/phase_a/train/" + _EVENTS, "backup/phase_a/state.json"}
  # The chief's own files; its lock stays behind a SIGKILL (the restarted
  # chief takes it over: the holder is dead).
  chief_only = {"config.json", "checkpoints/phase_a.fingerprint.json",
                "logs/phase_a/validation/" + _EVENTS, "train.lock"}
  for stem in ["checkpoints/phase_a_latest"] + [
      f"backup/phase_a/state-{e:06d}" for e in range(1, 5)]:
    in_phase_a |= {stem + ".weights.h5", stem + ".tmp.weights.h5"}
  chief_files, chief_pids = _files(model_dir)
  worker_files, worker_pids = _files(worker_dir)
  assert set(chief_files) <= in_phase_a | chief_only, chief_files
  assert set(worker_files) <= in_phase_a, worker_files
  assert "config.json" in chief_files
  assert f"backup/phase_a/state-{killed_at:06d}.weights.h5" in chief_files
  assert chief_pids == {first_chief} and worker_pids == {first_worker}

  chief, worker = start_workers(model_dir)
  outputs = [_output(chief, TIMEOUT), _output(worker, TIMEOUT)]
  assert chief.returncode == 0, outputs[0][-4000:]
  assert worker.returncode == 0, outputs[1][-4000:]
  for out in outputs:  # Both resumed from the chief's backup, mid-phase.
    assert (f"== phase a: resuming after epoch {killed_at} of 4 =="
            in out), out[-3000:]
  # Files: the finished layout; events from the first and second chief
  # (resp. worker 1) only.
  chief_files, chief_pids = _files(model_dir)
  worker_files, worker_pids = _files(worker_dir)
  assert chief_files == CHIEF_FILES
  assert worker_files == WORKER_FILES
  assert chief_pids == {first_chief, chief.pid}
  assert worker_pids == {first_worker, worker.pid}
  chief_weights = _weights(model_dir)
  _assert_same_weights(chief_weights, _worker_weights(worker_dir))
  # Killed and restarted vs uninterrupted: bit for bit; vs the single
  # process: close (see the module docstring).
  uninterrupted = _weights(references["two_workers"])
  single = _weights(references["single"])
  print("killed two workers: max abs weight difference "
        f"{_max_abs_difference(chief_weights, uninterrupted):.3g} to the "
        "uninterrupted two workers, "
        f"{_max_abs_difference(chief_weights, single):.3g} to one process")
  _assert_same_weights(chief_weights, uninterrupted)
  _assert_same_weights(chief_weights, single, atol=SINGLE_PROCESS_ATOL)


def _worker_weights(worker_dir):
  """The non-chief's model.keras (config.json is only in the chief's dir)."""
  model = model_dir_lib.load_trained_model(worker_dir)
  return [w.numpy() for w in model.weights]
