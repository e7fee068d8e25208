"""The layout of a training directory (`--model_dir`).

  model_dir/config.json        resolved ExperimentConfig (written first)
  model_dir/model.keras        the final model (written last, atomically)
  model_dir/checkpoints/       per-phase ModelCheckpoint files
  model_dir/backup/            BackupAndRestore state (resumes killed runs)
  model_dir/logs/              TensorBoard
  model_dir/workers/worker_<i>/  same layout, written by non-chief workers of
                               a multi-worker job (the chief writes the rest)

Evaluation, tag cleaning, visualisation and export need only `--model_dir`.
"""

import os

import keras

from dis_tf import atomic
from dis_tf.config import ExperimentConfig

MODEL_FILENAME = "model.keras"


def model_path(model_dir):
  return os.path.join(model_dir, MODEL_FILENAME)


def save_model(model, model_dir):
  """Saves `model` to `model_dir/model.keras` via a temp file + rename.

  A run killed mid-write leaves the previous file (or none), never a
  truncated one.

  Args:
    model: a `DISModel`.
    model_dir: the training directory.

  Returns:
    The path written.
  """
  path = model_path(model_dir)
  try:
    with atomic.atomic_write(path) as tmp:
      model.save(tmp)
  except OSError as e:
    raise OSError(e.errno, f"Could not write {path} ({e}); the previous "
                  "version of it, if any, is kept.") from e
  return path


def load(model_dir):
  """Loads (config, model) of a finished training run.

  Args:
    model_dir: a directory written by `tools/train.py`.

  Returns:
    (ExperimentConfig, DISModel); the model is loaded with safe_mode=True.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  config = ExperimentConfig.load(model_dir)
  path = model_path(model_dir)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: the training run in {model_dir} has not "
        "finished (tools/train.py writes it at the end).")
  # Importing registers the dis_tf Keras classes for deserialisation.
  from dis_tf.modeling import dis_model  # pylint: disable=g-import-not-at-top,unused-import
  model = keras.saving.load_model(path, safe_mode=True)
  return config, model
