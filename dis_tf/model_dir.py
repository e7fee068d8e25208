"""The layout of a training directory (`--model_dir`).

  model_dir/config.json        resolved ExperimentConfig (written first)
  model_dir/model.keras        the final model (written last, atomically)
  model_dir/train.lock         held by the training run (`dis_tf.locks`)
  model_dir/checkpoints/       per-phase weights (latest and finished), and
                               `phase_<p>.fingerprint.json`: the training
                               fields each phase ran with (`fingerprint`)
                               and the code that ran it (`code_version`)
  model_dir/backup/            BackupAndRestore state (resumes killed runs)
  model_dir/logs/              TensorBoard
  model_dir/workers/worker_<i>/  same layout, written by non-chief workers of
                               a multi-worker job (the chief writes the rest)

Evaluation, tag cleaning, visualisation and export need only `--model_dir`
(`load`, with optional config overrides).

Keras and the model are imported by the functions that build or load a
model, not by this module: reading config.json and the fingerprints stays
free of TensorFlow, so a tool refuses a bad flag or a mismatched run in
well under a second instead of after TensorFlow's import (about 4 s of CPU
per command; `tests/test_tools_import_light.py`).
"""

import copy
import functools
import hashlib
import json
import os
import subprocess
import zipfile

from absl import logging

from dis_tf import atomic
from dis_tf import classes
from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf.config import ExperimentConfig

MODEL_FILENAME = "model.keras"

# ------------------------------------------------------------ fingerprints
# The config fields that change what a phase trains. Not in the list, so
# free to change between runs on one model_dir: evaluation-only fields
# (latent.t_test, latent.update, data.eval_split, data.select_split), data
# *locations* (data.data_dir, data.voc_dir, data.weak_dir: a folder may move,
# e.g. to another machine; the tfds config name fingerprints its content
# separately), data.deterministic and train.strategy (how, not what), and
# model_dir.
_COMMON_FIELDS = (
    [f"model.{f}" for f in ("backbone", "weights", "num_classes",
                            "tiny_width", "train_batchnorm", "output_stride")]
    + [f"loss.{f}" for f in ("map_weight", "image_weight", "tag_weight")]
    + [f"data.{f}" for f in ("train_split", "crop_size", "min_scale",
                             "max_scale", "shuffle_buffer", "skip_bad_files",
                             "max_image_pixels")]
    + [f"train.{f}" for f in ("batch_size", "optimizer", "momentum",
                              "poly_power", "weight_decay", "steps_per_epoch",
                              "seed")])
# Stage 2 also trains on pseudo labels of the weak images.
_SEMI_FIELDS = (
    [f"latent.{f}" for f in ("t_train", "step_size", "clip_norm",
                             "soft_pseudo_labels", "tag_threshold", "method",
                             "train_update", "monotone")]
    + [f"data.{f}" for f in ("use_voc_weak_tags", "weak_fraction")])


# Every other field, named so that a new config field must be put in one
# list or the other (tests/test_reliability_runs.py checks this).
NOT_FINGERPRINTED = ("latent.t_test",
                     # Where the class file is: its names are
                     # fingerprinted (CLASS_NAMES_KEY), not its path.
                     "data.classes", "latent.update",
                     "latent.tag_refinement", "data.eval_crop_size",
                     "data.eval_batch_size",
                     "data.eval_split",
                     "data.select_split", "data.data_dir", "data.voc_dir",
                     "data.weak_dir", "data.deterministic", "train.strategy",
                     "model_dir",
                     # What TensorBoard shows, and the export's request
                     # bounds: neither changes the trained weights.
                     "train.tensorboard_images",
                     "train.tensorboard_num_images",
                     "train.tensorboard_image_freq",
                     "serving.max_batch_size", "serving.max_image_pixels",
                     "serving.max_batch_pixels", "serving.max_steps",
                     "serving.max_batch_steps",
                     # How the latent step is compiled, not what it computes
                     # (as with train.strategy, only float rounding moves).
                     "latent.jit_train_step")


# The fingerprint key of the class names (`class_set`, a resolved field).
CLASS_NAMES_KEY = "class_set.names"
# The precision is fingerprinted only when it is not the default.
PRECISION_KEY, PRECISION_DEFAULT = "model.precision", "float32"


class ConfigMismatchError(errors.UserError):
  """model_dir holds training state from another training configuration."""


def training_fields(config, phase):
  """{dotted key: value} of the fields that change what `phase` trains.

  Args:
    config: an `ExperimentConfig`.
    phase: "a", "b", "c" or "semi".

  Returns:
    The fields (JSON values): the common ones, the phase's steps and
    learning rate, and for "semi" the pseudo-label fields.
  """
  key = "semi" if phase == "semi" else f"phase_{phase}"
  keys = _COMMON_FIELDS + [f"train.{key}_steps", f"train.{key}_lr"]
  if phase == "semi":
    keys += _SEMI_FIELDS
  fields = {}
  for dotted in keys:
    section, _, name = dotted.partition(".")
    fields[dotted] = getattr(getattr(config, section), name)
  if config.model.precision != PRECISION_DEFAULT:
    # A run trained under mixed precision is another training (and its
    # optimizer state, loss-scaled under mixed_float16, does not resume in
    # float32). Only when set, so float32 fingerprints do not change.
    fields[PRECISION_KEY] = config.model.precision
  class_set = classes.from_config(config)
  if not class_set.is_voc:
    # The class names: a run on other classes is another training. Only
    # for a non-VOC set, so the fingerprints of VOC runs do not change.
    fields[CLASS_NAMES_KEY] = list(class_set.names)
  return json.loads(json.dumps(fields))  # As stored: JSON types.


def fingerprint(fields):
  """A short hash of `training_fields`."""
  text = json.dumps(fields, sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint_path(model_dir, phase):
  return os.path.join(model_dir, "checkpoints",
                      f"phase_{phase}.fingerprint.json")


# The phase each phase starts from (phase a: the initial weights).
PREVIOUS_PHASE = {"a": None, "b": "a", "c": "b", "semi": "c"}


def file_hash(path):
  """sha256 (hex) of the bytes of `path`."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def start_weights_hash(model_dir, phase):
  """The hash of the committed weights `phase` starts from: its previous
  phase's `phase_<p>.weights.h5` (None for phase a, or if it is missing)."""
  previous = PREVIOUS_PHASE[phase]
  if previous is None:
    return None
  path = phase_weights_path(model_dir, previous)
  return file_hash(path) if os.path.exists(path) else None


@functools.lru_cache(maxsize=1)
def code_version():
  """The code this process trains with: {"commit", "dirty"}.

  `commit` is the git commit of the checkout dis_tf is imported from and
  `dirty` whether its tracked files differ from it; both None where that is
  not a git checkout (an installed wheel) or git is missing. Not part of
  the fingerprint: a run resumes across commits. Results pages read it to
  say which code trained each model (issue 26: one code version per page).
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  def git(*args):
    return subprocess.run(["git", "-C", root, *args], capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()
  try:
    # The checkout must be dis_tf's own (an installed copy may sit inside
    # some other repository).
    git("ls-files", "--error-unmatch", "dis_tf/model_dir.py")
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}
  return {"commit": commit, "dirty": dirty}


def write_fingerprint(model_dir, config, phase, starts_from=None):
  """Records the training fields `phase` runs with (atomically), and
  `starts_from`, the hash of the weights it starts from (the fingerprint
  chain: `stale_start`), and the `code_version` that runs it (rewritten
  when a killed phase resumes: the code of its last start)."""
  fields = training_fields(config, phase)
  atomic.write_json(fingerprint_path(model_dir, phase),
                    {"phase": phase, "fingerprint": fingerprint(fields),
                     "fields": fields, "starts_from": starts_from,
                     "code_version": code_version()},
                    indent=2, sort_keys=True)


def phase_code_versions(model_dir, phases):
  """{phase: its recorded `code_version`, or None (no fingerprint, or one
  written before code versions were recorded)} of `phases` in model_dir."""
  out = {}
  for phase in phases:
    stored = read_fingerprint(model_dir, phase)
    out[phase] = (stored or {}).get("code_version")
  return out


def stale_start(model_dir, phase):
  """Why the state of `phase` in model_dir is stale, or None.

  Each phase records the hash of the committed weights it started from
  (`write_fingerprint`'s `starts_from`). If the previous phase's file has
  changed since (it was retrained, e.g. after it was found corrupt), the
  state of `phase` (its finished file or its backup) was trained on
  weights that no longer exist. Records without `starts_from` (runs from
  before the chain) are not judged.
  """
  stored = read_fingerprint(model_dir, phase)
  if stored is None or stored.get("starts_from") is None:
    return None
  current = start_weights_hash(model_dir, phase)
  if current == stored["starts_from"]:
    return None
  previous = phase_weights_path(model_dir, PREVIOUS_PHASE[phase])
  return (f"phase {phase} started from a version of {previous} that no "
          f"longer exists (sha256 {stored['starts_from'][:12]}..., now "
          f"{(current or 'missing')[:12]}...)")


def read_fingerprint(model_dir, phase):
  """The stored {"phase", "fingerprint", "fields"} of `phase`, or None."""
  path = fingerprint_path(model_dir, phase)
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning("Cannot read %s (%s); treating it as missing.", path, e)
    return None
  if not isinstance(stored, dict) or not isinstance(stored.get("fields"),
                                                    dict):
    return None
  return stored


def field_differences(stored, current):
  """[(key, stored value, current value)] of the fields that differ."""
  missing = "<not set>"
  # No class names recorded: the VOC classes; no precision: float32 (see
  # `training_fields`).
  defaults = {CLASS_NAMES_KEY: list(classes.VOC_CLASSES),
              PRECISION_KEY: PRECISION_DEFAULT}
  stored, current = {**defaults, **stored}, {**defaults, **current}
  return [(key, stored.get(key, missing), current.get(key, missing))
          for key in sorted(set(stored) | set(current))
          if stored.get(key, missing) != current.get(key, missing)]


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
  only repeat their trained value; `model.precision` is the exception (the
  backbone's dtype policy, which does not change the float32 weights: a
  float32-trained run can be evaluated or exported in mixed_bfloat16).

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
    if (section == "model" and hasattr(config.model, name)
        and name not in config_lib.RUNTIME_MODEL_FIELDS):
      trained = getattr(config.model, name)
      if value != trained:
        raise errors.UserError(
            f"{key}={value!r}: the model.* fields describe the trained "
            f"network in {model_path(model_dir)} and cannot change after "
            f"training (its config.json has {trained!r}).")
  overrides["model_dir"] = model_dir
  return config_lib.apply_overrides(config, overrides)


def phase_weights_path(model_dir, phase):
  """`model_dir/checkpoints/phase_<phase>.weights.h5`: a finished phase."""
  return os.path.join(model_dir, "checkpoints", f"phase_{phase}.weights.h5")


def _zip_problem(path):
  """None if `path` is a complete zip whose members match their CRCs, else
  what is wrong (a truncated or garbled model.keras)."""
  try:
    with zipfile.ZipFile(path) as z:
      bad = z.testzip()
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    return f"not a readable .keras (zip) file: {e}"
  if bad is not None:
    return f"member {bad!r} fails its CRC check"
  return None


def _model_from_phase_weights(model_dir, path, config):
  """The network of config.json with the weights of `path` (a phase file)."""
  # Imported here, not above: see the module docstring.
  from dis_tf.modeling import dis_model
  build_config = copy.deepcopy(config or ExperimentConfig.load(model_dir))
  # The weights come from `path`: do not fetch pretrained backbone weights.
  build_config.model.weights = None
  model = dis_model.build_dis_model(build_config)
  model.load_weights(path)
  return model


def load_trained_model(model_dir, config=None):
  """Loads `model_dir/model.keras` (safe_mode=True).

  A corrupt model.keras (truncated, or a member failing its CRC) is named
  in a warning, and the model is rebuilt from config.json and the weights
  of the last finished phase (`checkpoints/phase_semi.weights.h5`, else
  `phase_c`), which are the weights model.keras was written with. Without
  them the error names the command that rewrites it.

  Args:
    model_dir: a directory written by `tools/train.py`.
    config: optional `ExperimentConfig` (`load_config`) whose loss weights
      and latent settings the model takes (they do not change its
      weights); None keeps those it was saved with.

  Returns:
    A `DISModel`.

  Raises:
    FileNotFoundError: naming the missing file.
    OSError: model.keras is corrupt and no phase weights can replace it.
  """
  # Imported here, not above: see the module docstring.
  import keras
  # Also registers the dis_tf Keras classes that model.keras files name.
  from dis_tf.modeling import dis_model
  path = model_path(model_dir)
  if not os.path.exists(path):
    raise errors.MissingFileError(
        f"{path} does not exist: the training run in {model_dir} has not "
        "finished (tools/train.py writes it at the end).")
  problem = _zip_problem(path)
  if problem is None:
    model = keras.saving.load_model(path, safe_mode=True)
  else:
    model = None
    for phase in ("semi", "c"):
      weights = phase_weights_path(model_dir, phase)
      if not os.path.exists(weights):
        continue
      try:
        model = _model_from_phase_weights(model_dir, weights, config)
      except (OSError, ValueError, KeyError) as e:
        logging.warning("%s cannot be loaded either (%s).", weights, e)
        continue
      logging.warning("%s is corrupt (%s); using the weights of the last "
                      "finished phase, %s, which it was written with.",
                      path, problem, weights)
      break
    if model is None:
      raise errors.CorruptFileError(
          f"{path} is corrupt ({problem}) and {model_dir} has no readable "
          "checkpoints/phase_semi.weights.h5 or phase_c.weights.h5 to "
          "rebuild it from. Rerun the training command of this run "
          f"(python tools/train.py --model_dir={model_dir} ... with its "
          "flags; config.json holds them): it rewrites model.keras from "
          "its phase weights, or retrains the missing phases.")
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
