"""The layout of a training directory (`--model_dir`).

  model_dir/config.json        resolved ExperimentConfig (written first)
  model_dir/model.keras        the final model (written last, atomically)
  model_dir/checkpoints/       per-phase weights (latest and finished)
  model_dir/backup/            BackupAndRestore state (resumes killed runs)
  model_dir/logs/              TensorBoard
  model_dir/workers/worker_<i>/  same layout, written by non-chief workers of
                               a multi-worker job (the chief writes the rest)

Evaluation, tag cleaning, visualisation and export need only `--model_dir`
(`load`, with optional config overrides).
"""

import os

import keras

from dis_tf import atomic
from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf.config import ExperimentConfig
# Also registers the dis_tf Keras classes that model.keras files name.
from dis_tf.modeling import dis_model

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


def load_config(model_dir, overrides=None):
  """The config of a training run, with overrides (evaluation, export).

  Every field can be overridden, e.g. the data paths, the split, or the
  latent settings (t_test, step_size, clip_norm, method, ...). The `model.*`
  fields describe the network that model.keras holds, so an override may
  only repeat their trained value.

  Args:
    model_dir: a directory written by `tools/train.py` (--model_dir).
    overrides: optional {dotted key: value} (`dis_tf.config.apply_overrides`).

  Returns:
    An `ExperimentConfig` whose `model_dir` is `model_dir`.

  Raises:
    FileNotFoundError: --model_dir is not a training directory.
    ValueError: an unknown key, a bad value, or a changed `model.*` field.
  """
  if not model_dir:
    raise errors.UserError("--model_dir is required.")
  if not os.path.isdir(model_dir):
    raise errors.MissingFileError(
        f"--model_dir={model_dir}: no such directory.")
  config = ExperimentConfig.load(model_dir)
  overrides = dict(overrides or {})
  for key, value in overrides.items():
    section, _, name = key.partition(".")
    if section == "model" and hasattr(config.model, name):
      trained = getattr(config.model, name)
      if value != trained:
        raise errors.UserError(
            f"{key}={value!r}: the model.* fields describe the trained "
            f"network in {model_path(model_dir)} and cannot change after "
            f"training (its config.json has {trained!r}).")
  overrides["model_dir"] = model_dir
  return config_lib.apply_overrides(config, overrides)


def load_trained_model(model_dir, config=None):
  """Loads `model_dir/model.keras` (safe_mode=True).

  Args:
    model_dir: a directory written by `tools/train.py`.
    config: optional `ExperimentConfig` (`load_config`) whose loss weights
      and latent settings the model takes (they do not change its
      weights); None keeps those it was saved with.

  Returns:
    A `DISModel`.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  path = model_path(model_dir)
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f"{path} does not exist: the training run in {model_dir} has not "
        "finished (tools/train.py writes it at the end).")
  model = keras.saving.load_model(path, safe_mode=True)
  if config is not None:
    model.configure(**dis_model.runtime_settings(config))
  return model


def load(model_dir, overrides=None):
  """Loads (config, model) of a finished training run.

  Args:
    model_dir: a directory written by `tools/train.py`.
    overrides: optional config overrides (see `load_config`).

  Returns:
    (ExperimentConfig, DISModel); the model is loaded with safe_mode=True.

  Raises:
    FileNotFoundError: naming the missing directory or file.
  """
  config = load_config(model_dir, overrides)
  return config, load_trained_model(model_dir, config)
