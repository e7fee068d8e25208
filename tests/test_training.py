"""Training driver: phases in order, model_dir layout, resume after a crash."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import callbacks as callbacks_lib
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib
from dis_tf import training

from conftest import CrashAt


def _weights(model):
  return [w.numpy() for w in model.weights]


def test_train_writes_the_model_dir_layout(tmp_path, tiny_config,
                                           dataset_fn):
  config = tiny_config(tmp_path / "run")
  model = training.train(config, "all", dataset_fn=dataset_fn, verbose=0)
  run = tmp_path / "run"
  saved = json.loads((run / "config.json").read_text())
  assert saved["model"]["tiny_width"] == 8
  for phase in ("a", "b", "c", "semi"):
    assert (run / "checkpoints" / f"phase_{phase}.weights.h5").exists()
    assert (run / "logs" / f"phase_{phase}").is_dir()
  # Each phase records the code that ran it (results pages read it).
  versions = model_dir_lib.phase_code_versions(str(run), ("a", "semi"))
  assert versions == {"a": model_dir_lib.code_version(),
                      "semi": model_dir_lib.code_version()}
  loaded_config, loaded = model_dir_lib.load(str(run))
  assert loaded_config.latent.t_train == 2
  for a, b in zip(_weights(model), _weights(loaded)):
    np.testing.assert_array_equal(a, b)


def _stream(dataset_fn):
  """`dataset_fn` with a different batch at every step (the image and its
  target shifted by 0.3 * (step % 5)), so a resumed run that reread the
  stream from its start would train on other batches."""
  def fn(config, stage):
    offsets = tf.data.Dataset.range(1 << 40).map(
        lambda i: 0.3 * tf.cast(i % 5, tf.float32))
    return tf.data.Dataset.zip((dataset_fn(config, stage), offsets)).map(
        lambda x, c: dict(x, image=x["image"] + c,
                          image_small=x["image_small"] + c))
  return fn


def test_killed_run_resumes_and_matches_an_uninterrupted_run(
    tmp_path, monkeypatch, capsys, tiny_config, dataset_fn):
  """Killed at the start of phase b's epoch 2: the rerun skips phase a and
  resumes phase b after epoch 1 (from the log and the backup), on the
  batches an uninterrupted run reads there (every batch differs)."""
  dataset_fn = _stream(dataset_fn)
  # Deterministic mode: op determinism, so both runs can match bit for bit.
  ref_config = tiny_config(tmp_path / "ref")
  ref_config.data.deterministic = True
  reference = training.train(ref_config, "full", dataset_fn=dataset_fn,
                             verbose=0)

  original_callbacks = training._callbacks
  monkeypatch.setattr(
      training, "_callbacks",
      lambda *a: original_callbacks(*a) + [CrashAt("b", 1)])
  config = tiny_config(tmp_path / "killed")
  config.data.deterministic = True
  with pytest.raises(KeyboardInterrupt):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  assert (tmp_path / "killed/checkpoints/phase_a.weights.h5").exists()
  assert not (tmp_path / "killed/checkpoints/phase_b.weights.h5").exists()
  state = json.loads(
      (tmp_path / "killed/backup/phase_b/state.json").read_text())
  assert state["epoch"] == 1

  monkeypatch.setattr(training, "_callbacks", original_callbacks)
  capsys.readouterr()
  resumed = training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  out = capsys.readouterr().out
  assert "== phase a:" not in out, out
  assert "== phase b: resuming after epoch 1 of 2 ==" in out, out
  assert "== phase c: 4 steps ==" in out, out
  for a, b in zip(_weights(reference), _weights(resumed)):
    np.testing.assert_array_equal(a, b)


def test_semi_stage_needs_stage1_weights(tmp_path, tiny_config, dataset_fn):
  with pytest.raises(FileNotFoundError, match="phase_c"):
    training.train(tiny_config(tmp_path / "x"), "semi",
                   dataset_fn=dataset_fn)


def test_bad_flag_values_are_named(tiny_config):
  with pytest.raises(ValueError, match="strategy"):
    training.make_strategy("tpu")
  with pytest.raises(ValueError, match="stage"):
    training.train(tiny_config("/tmp/unused"), "both")


@pytest.mark.parametrize("field,value,flag", [
    ("phase_b_steps", -1, "--train.phase_b_steps=-1"),
    ("steps_per_epoch", 0, "--train.steps_per_epoch=0"),
])
def test_bad_step_counts_are_named_before_training(tmp_path, tiny_config,
                                                  dataset_fn, field, value,
                                                  flag):
  config = tiny_config(tmp_path / "run")
  setattr(config.train, field, value)
  with pytest.raises(errors.UserError, match=flag):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  assert not (tmp_path / "run").exists()


def test_a_zero_step_phase_commits_the_weights_it_starts_from(
    tmp_path, tiny_config, dataset_fn):
  """`--train.phase_b_steps=0` skips phase b's training (it used to end in
  a ZeroDivisionError): phase b's weights are phase a's."""
  config = tiny_config(tmp_path / "run")
  config.train.phase_b_steps = 0
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  checkpoints = tmp_path / "run" / "checkpoints"
  model = training.build_dis_model(config)
  model.load_weights(str(checkpoints / "phase_a.weights.h5"))
  after_a = _weights(model)
  model.load_weights(str(checkpoints / "phase_b.weights.h5"))
  for a, b in zip(after_a, _weights(model)):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "run" / "model.keras").exists()


def test_unwritable_model_dir_fails_before_training(tmp_path, tiny_config,
                                                    dataset_fn):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(OSError, match="model_dir"):
    training.train(tiny_config(blocker / "run"), "full",
                   dataset_fn=dataset_fn)


def test_rerun_removes_temp_files_left_by_a_kill(tmp_path, tiny_config,
                                                 dataset_fn):
  """A SIGKILL inside a write leaves `<stem>.tmp.<suffix>`; a rerun removes
  exactly those (the README test command once failed on such a file)."""
  config = tiny_config(tmp_path / "run")
  training.train(config, stage="full", dataset_fn=dataset_fn, verbose=0)
  stale = [tmp_path / "run" / "checkpoints" / "phase_a_latest.tmp.weights.h5",
           tmp_path / "run" / "model.tmp.keras"]
  for path in stale:
    path.write_bytes(b"truncated")
  training.train(config, stage="full", dataset_fn=dataset_fn, verbose=0)
  for path in stale:
    assert not path.exists(), path
  assert (tmp_path / "run" / "checkpoints" / "phase_c.weights.h5").exists()


def test_non_chief_writes_its_own_directory():
  """The write-directory rule of multi-worker training, without a cluster."""

  class Extended:
    should_checkpoint = False

  class Resolver:
    task_type, task_id = "worker", 3

  class Strategy:
    extended = Extended()
    cluster_resolver = Resolver()

  assert training._write_dir("/m", Strategy()) == "/m/workers/worker_3"
  Extended.should_checkpoint = True
  assert training._write_dir("/m", Strategy()) == "/m"


@pytest.mark.parametrize("images", [True, False])
def test_val_image_grid_follows_its_flag(images, tmp_path, tiny_config,
                                         dataset_fn, mini_benchmark,
                                         tensorboard_events):
  # One epoch per phase; the val images of the mini benchmark.
  config = tiny_config(tmp_path / "run", steps=2)
  config.data.voc_dir = mini_benchmark["voc_dir"]
  config.data.data_dir = mini_benchmark["data_dir"]
  config.train.tensorboard_images = images
  config.train.tensorboard_num_images = 2
  training.train(config, "full", dataset_fn=dataset_fn, verbose=0)
  logs = tmp_path / "run" / "logs" / "phase_a"
  assert "epoch_loss" in tensorboard_events(str(logs / "train"))
  tags = {}
  for directory, _, _ in os.walk(logs):
    tags.update(tensorboard_events(directory))
  if images:
    (grid,) = tags["val_images"]
    assert grid["step"] == 0
    assert len(grid["value"]) == 3  # Width, height and one PNG.
  else:
    assert "val_images" not in tags
    assert not (logs / "validation").exists()


@pytest.mark.parametrize("field", ["tensorboard_num_images",
                                   "tensorboard_image_freq"])
def test_image_grid_needs_positive_counts(field, tmp_path, tiny_config,
                                          dataset_fn):
  config = tiny_config(tmp_path / "run")
  config.data.voc_dir = "/unused"
  setattr(config.train, field, 0)
  with pytest.raises(ValueError, match=f"--train.{field}=0: must be >= 1"):
    training.train(config, "full", dataset_fn=dataset_fn, verbose=0)


@pytest.mark.parametrize("freq, epochs, initial, drawn", [
    (1, 3, 0, [0, 1, 2]),
    (5, 15, 0, [0, 5, 10, 14]),   # The demo's phase a.
    (5, 3, 0, [0, 2]),
    (3, 9, 4, [6, 8]),            # Resumed at epoch 4.
])
def test_image_grid_every_freq_epochs_and_at_the_last(monkeypatch, tmp_path,
                                                      freq, epochs, initial,
                                                      drawn):
  steps = []
  grid = (np.zeros([2, 2, 3], np.uint8), "caption")
  monkeypatch.setattr(callbacks_lib.ImageSummaries, "grid", lambda self: grid)
  summaries = callbacks_lib.ImageSummaries(str(tmp_path), [], 0, freq=freq)
  summaries.set_params({"epochs": epochs, "steps": 1, "verbose": 0})
  monkeypatch.setattr(tf.summary, "image",
                      lambda tag, data, step, description: steps.append(step))
  for epoch in range(initial, epochs):
    summaries.on_epoch_end(epoch)
  summaries.on_train_end()
  assert steps == drawn


def test_code_version_is_the_checkout_commit_or_none(monkeypatch):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"],
                          capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    head = None  # Not a checkout (a source tarball): nothing to compare.
  model_dir_lib.code_version.cache_clear()
  assert model_dir_lib.code_version()["commit"] == head
  # Without git (or outside a checkout) nothing is claimed.
  def no_git(*args, **kwargs):
    raise FileNotFoundError("git")
  monkeypatch.setattr(subprocess, "run", no_git)
  model_dir_lib.code_version.cache_clear()
  try:
    assert model_dir_lib.code_version() == {"commit": None, "dirty": None}
  finally:
    monkeypatch.undo()
    model_dir_lib.code_version.cache_clear()
