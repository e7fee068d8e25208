"""dis_tf.atomic: temp naming, commit, failure cleanup, stale temp removal."""

import json
import os

import pytest

from dis_tf import atomic


@pytest.mark.parametrize("name, expected", [
    ("phase_a.weights.h5", "phase_a.tmp.weights.h5"),
    ("model.keras", "model.tmp.keras"),
    ("config.json", "config.tmp.json"),
    ("state-000002.weights.h5", "state-000002.tmp.weights.h5"),
    ("README", "README.tmp"),
])
def test_temp_path_keeps_the_suffix(tmp_path, name, expected):
  tmp = atomic.temp_path(str(tmp_path / name))
  assert os.path.basename(tmp) == expected
  assert atomic.is_temp_name(expected)
  assert not atomic.is_temp_name(name)


def test_write_json_commits_and_leaves_no_temp(tmp_path):
  path = str(tmp_path / "sub" / "state.json")
  atomic.write_json(path, {"epoch": 3})
  with open(path) as f:
    assert json.load(f) == {"epoch": 3}
  assert os.listdir(tmp_path / "sub") == ["state.json"]


def test_failed_write_keeps_previous_and_removes_temp(tmp_path):
  path = str(tmp_path / "config.json")
  atomic.write_text(path, "old")
  with pytest.raises(RuntimeError, match="disk on fire"):
    with atomic.atomic_write(path) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("disk on fire")
  with open(path) as f:
    assert f.read() == "old"
  assert os.listdir(tmp_path) == ["config.json"]


def test_remove_stale_temp_files_only_touches_its_own_names(tmp_path):
  keep = ["config.json", "checkpoints/phase_a.weights.h5", "logs/x.tfevents",
          "backup/phase_b/state.json", "notes.txt", ".tmp-export-dir-file",
          "workers/worker_1/checkpoints/phase_a.tmp.weights.h5"]
  stale = ["checkpoints/phase_a_latest.tmp.weights.h5", "model.tmp.keras",
           "backup/phase_b/state-000001.tmp.weights.h5", "config.tmp.json"]
  for rel in keep + stale:
    os.makedirs(os.path.dirname(str(tmp_path / rel)), exist_ok=True)
    (tmp_path / rel).write_text("x")
  removed = atomic.remove_stale_temp_files(str(tmp_path))
  assert removed == sorted(str(tmp_path / rel) for rel in stale)
  for rel in keep:  # Worker directories belong to other processes.
    assert (tmp_path / rel).exists(), rel
  for rel in stale:
    assert not (tmp_path / rel).exists(), rel


def test_directory_write_commits_only_a_finished_directory(tmp_path):
  path = str(tmp_path / "out")
  os.makedirs(path)
  with open(os.path.join(path, "old.txt"), "w") as f:
    f.write("old")
  with pytest.raises(RuntimeError):
    with atomic.directory_write(path, replace=True) as tmp:
      os.makedirs(tmp)
      with open(os.path.join(tmp, "new.txt"), "w") as f:
        f.write("half")
      raise RuntimeError("killed mid-write")
  # The failed write left the old folder and no temp directory.
  assert os.listdir(path) == ["old.txt"]
  assert os.listdir(tmp_path) == ["out"]
  with atomic.directory_write(path, replace=True) as tmp:
    os.makedirs(tmp)
    with open(os.path.join(tmp, "new.txt"), "w") as f:
      f.write("new")
  assert os.listdir(path) == ["new.txt"]
  assert os.listdir(tmp_path) == ["out"]
