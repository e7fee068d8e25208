"""Multi-worker training: two local workers, one killed, both restarted.

`tools/train.py --strategy=multi_worker` with TF_CONFIG naming two workers
on free 127.0.0.1 ports (MultiWorkerMirroredStrategy, CPU collectives over
gRPC). The chief (worker 0) writes model_dir; worker 1 writes only
model_dir/workers/worker_1/ (same layout), and both resume from the chief's
backup. Worker 1 is SIGKILLed after the chief's first phase-a backup, the
chief is stopped (it cannot continue without its peer), both are restarted
on new ports, and both must resume inside phase a and end with identical
weights.
"""

import json
import os
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
  def start(model_dir):
    ports = _free_ports(2)
    argv = [sys.executable, os.path.join(REPO, "tools", "train.py"),
            f"--model_dir={model_dir}", *mini_benchmark["flags"],
            "--backbone=tiny", "--crop_size=32", "--batch_size=2",
            "--phase_a_steps=8", "--phase_b_steps=2", "--phase_c_steps=2",
            "--steps_per_epoch=2", "--stage=full", "--strategy=multi_worker",
            "--deterministic"]
    procs = []
    for index in range(2):
      env = tool_env(TF_CONFIG=json.dumps({
          "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
          "task": {"type": "worker", "index": index}}))
      procs.append(subprocess.Popen(argv, env=env, cwd=REPO,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
    return procs
  return start


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
                                                       start_workers):
  model_dir = str(tmp_path / "run")
  chief, worker = start_workers(model_dir)
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
  # Non-chief files never land in the chief's directory.
  assert os.path.isdir(os.path.join(model_dir, "workers", "worker_1"))

  chief, worker = start_workers(model_dir)
  outputs = [_output(chief, TIMEOUT), _output(worker, TIMEOUT)]
  assert chief.returncode == 0, outputs[0][-4000:]
  assert worker.returncode == 0, outputs[1][-4000:]
  for out in outputs:  # Both resumed from the chief's backup, mid-phase.
    assert "== phase a: resuming after epoch" in out, out[-3000:]
  chief_weights = _weights(model_dir)
  worker_weights = _worker_weights(
      os.path.join(model_dir, "workers", "worker_1"))
  assert len(chief_weights) == len(worker_weights)
  for a, b in zip(chief_weights, worker_weights):
    np.testing.assert_array_equal(a, b)
  for a in chief_weights:
    assert np.isfinite(a).all()


def _worker_weights(worker_dir):
  """The non-chief's model.keras (config.json is only in the chief's dir)."""
  model = model_dir_lib.load_trained_model(worker_dir)
  return [w.numpy() for w in model.weights]
