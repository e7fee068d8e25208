"""Training driver: the stage-1 phases and stage 2 with `keras` `fit`.

`tools/train.py` is a thin flag layer over `train(config, stage)`. Each phase
(paper Sec. 3: a, b, c, then stage 2 "semi") is one `model.fit` with Keras
callbacks: progress bar, `ModelCheckpoint`, `BackupAndRestore` (a killed
run resumes inside the phase it was in), and `TensorBoard` (losses, learning
rate, mIoU, image summaries). A finished phase leaves
`checkpoints/phase_<p>.weights.h5`; a rerun skips finished phases.

Every checkpoint is written to a temp file and renamed (the Keras callbacks
are replaced by `AtomicModelCheckpoint` / `AtomicBackupAndRestore`), so a
SIGKILL or a full disk never leaves a truncated checkpoint under its final
name; a deterministic run resumed after a kill ends with the weights of an
uninterrupted one. With MultiWorkerMirroredStrategy only the chief writes
model_dir; worker i writes model_dir/workers/worker_<i>/. See RELIABILITY.md.
"""

import errno
import json
import os
import shutil

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from dis_tf import atomic
from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf import model_dir as model_dir_lib
from dis_tf.classes import voc_palette
from dis_tf.modeling.dis_model import build_dis_model

STAGES = {"full": ("a", "b", "c"), "semi": ("semi",), "all": ("a", "b", "c", "semi")}


def make_strategy(name):
  """Returns the tf.distribute strategy called `name`.

  Args:
    name: "default" (one device), "mirrored" (all local devices) or
      "multi_worker" (several machines; reads TF_CONFIG).

  Returns:
    A `tf.distribute.Strategy`.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG "
                       "environment variable (cluster and task).")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"--strategy={name!r}: expected default, mirrored or "
                   "multi_worker.")


def phase_settings(train_config, phase):
  """(steps, learning rate) of a phase."""
  key = "semi" if phase == "semi" else f"phase_{phase}"
  return getattr(train_config, f"{key}_steps"), getattr(train_config, f"{key}_lr")


def make_optimizer(train_config, learning_rate, steps):
  """SGD with momentum and the poly schedule (DeepLab), or Adam.

  Args:
    train_config: `TrainConfig`.
    learning_rate: base learning rate of the phase.
    steps: steps of the phase (the poly schedule reaches 0 there).

  Returns:
    A Keras optimizer.
  """
  schedule = keras.optimizers.schedules.PolynomialDecay(
      learning_rate, decay_steps=max(steps, 1), end_learning_rate=0.0,
      power=train_config.poly_power)
  decay = train_config.weight_decay or None
  if train_config.optimizer == "sgd":
    return keras.optimizers.SGD(schedule, momentum=train_config.momentum,
                                weight_decay=decay)
  if train_config.optimizer == "adam":
    return keras.optimizers.Adam(schedule, weight_decay=decay)
  raise ValueError(f"optimizer={train_config.optimizer!r}: expected sgd or adam.")


class LearningRateLogger(keras.callbacks.Callback):
  """Adds the current learning rate to the logs (before TensorBoard)."""

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      optimizer = self.model.optimizer
      logs["learning_rate"] = float(
          keras.ops.convert_to_numpy(optimizer.learning_rate))


class ImageSummaries(keras.callbacks.Callback):
  """Writes input / prediction / reconstruction images to TensorBoard.

  Args:
    log_dir: TensorBoard directory.
    images: [N, H, W, 3] normalised images (a fixed batch).
    every_epochs: write every this many epochs.
  """

  def __init__(self, log_dir, images, every_epochs=1):
    super().__init__()
    self.log_dir = log_dir
    self.images = images
    self.every_epochs = every_epochs
    self._writer = None

  def on_epoch_end(self, epoch, logs=None):
    if epoch % self.every_epochs:
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)
    outputs = self.model({"image": self.images}, training=False)
    size = tf.shape(self.images)[1:3]
    ids = tf.argmax(tf.image.resize(outputs["labelmap_logits"], size), -1)
    colours = tf.gather(tf.constant(voc_palette()), ids)
    recon = tf.image.resize(outputs["reconstruction"], size, method="nearest")
    to_uint8 = lambda x: tf.cast(  # noqa: E731
        tf.clip_by_value(image_ops.denormalize_image(x), 0, 255), tf.uint8)
    with self._writer.as_default():
      tf.summary.image("input", to_uint8(self.images), step=epoch)
      tf.summary.image("prediction", colours, step=epoch)
      tf.summary.image("reconstruction", to_uint8(recon), step=epoch)
    self._writer.flush()


def _phase_weights_path(model_dir, phase):
  return os.path.join(model_dir, "checkpoints", f"phase_{phase}.weights.h5")


def _estimated_checkpoint_bytes(model):
  """Upper estimate of a `.weights.h5` file of `model` (with optimizer)."""
  variables = list(model.weights)
  optimizer = getattr(model, "optimizer", None)
  if optimizer is not None and getattr(optimizer, "built", False):
    variables += list(optimizer.variables)
  data = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
             for v in variables)
  # HDF5 object headers / b-trees: a few KiB per dataset, plus slack.
  return data + 8192 * len(variables) + (1 << 20)


def _check_free_space(model, path):
  """Raises ENOSPC *before* writing if `path`'s disk cannot hold the file.

  Needed because HDF5 does not fail cleanly on a full disk: with h5py 3.14
  the process dies with SIGSEGV in `h5py.File.close` (the flush at close
  hits ENOSPC), so no Python error could name the failing write.
  """
  needed = _estimated_checkpoint_bytes(model)
  free = shutil.disk_usage(os.path.dirname(path)).free
  if free < needed:
    raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {free} bytes "
                  f"free, about {needed} needed")


def _save_weights_atomically(model, path):
  """Writes `path` through `atomic.atomic_write`: never a truncated `path`.

  A failing write (full disk, I/O error) removes the temp file and raises an
  OSError naming `path`; the previous `path`, if any, is left untouched.
  """
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _check_free_space(model, path)
    with atomic.atomic_write(path) as tmp:
      model.save_weights(tmp)
  except OSError as e:
    raise OSError(e.errno, f"Could not write checkpoint {path} ({e}); the "
                  "previous version of it, if any, is kept.") from e


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
  """`ModelCheckpoint` that replaces its file atomically.

  Keras 3.15 writes `filepath` in place, so a process killed (or a disk
  filling up) mid-write leaves a truncated HDF5 file under the final name.
  Here the file is written to a temp name and renamed.
  """

  def _save_model(self, epoch, batch, logs):
    filepath = self._get_file_path(epoch, batch, logs)
    if not self._should_save_model(epoch, batch, logs, filepath):
      return
    if not self.save_weights_only:
      raise ValueError("AtomicModelCheckpoint saves weights only.")
    _save_weights_atomically(self.model, filepath)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
  """`BackupAndRestore` whose training state is committed atomically.

  Keras 3.15 overwrites `latest.weights.h5` in place and then writes
  `training_metadata.json`: a kill inside either write leaves a truncated
  file, and a kill between them leaves epoch-N+1 weights with epoch-N
  metadata (the resumed run trains an epoch twice). Here each backup writes
  the weights to a new file `state-<epoch>.weights.h5` (temp + rename) and
  then atomically replaces `state.json`, which names it: `state.json` is the
  commit point. The previous state file is kept (double checkpoint) and used
  if the current one cannot be read.

  Multi-worker training: the state is read from `backup_dir` (the chief's)
  and written to `write_dir` (each non-chief worker's own directory), so
  that workers never write the same file and all resume from one state.

  Args:
    backup_dir: directory read at the start of training.
    write_dir: directory written at each epoch end (default `backup_dir`).
  """

  STATE_FILE = "state.json"

  def __init__(self, backup_dir, write_dir=None):
    super().__init__(backup_dir, save_freq="epoch", double_checkpoint=True,
                     delete_checkpoint=False)
    self.write_dir = write_dir or backup_dir
    self.restored = False

  @classmethod
  def read_state(cls, backup_dir):
    """The committed state ({"epoch", "weights", "previous"}) or None."""
    path = os.path.join(backup_dir, cls.STATE_FILE)
    if not os.path.exists(path):
      return None
    with open(path) as f:
      return json.load(f)

  def restore(self):
    """Loads the committed state into the model; returns its epoch (0 if
    there is none). Call with the model compiled (and in strategy scope)."""
    self.restored = True
    state = self.read_state(self.backup_dir)
    if state is None:
      return 0
    model = self.model
    if model.optimizer is not None and not model.optimizer.built:
      model.optimizer.build(model.trainable_variables)
    candidates = [state] + ([state["previous"]] if state.get("previous")
                            else [])
    for i, candidate in enumerate(candidates):
      path = os.path.join(self.backup_dir, candidate["weights"])
      try:
        model.load_weights(path)
      except (OSError, ValueError, KeyError) as e:
        if i + 1 == len(candidates):
          raise OSError(f"Backup {path} cannot be loaded ({e}); delete "
                        f"{self.backup_dir} to restart this phase.") from e
        logging.warning("Backup %s cannot be loaded (%s); using the "
                        "previous one.", path, e)
        continue
      epoch = int(candidate["epoch"])
      model._initial_epoch = epoch  # pylint: disable=protected-access
      self._current_epoch = epoch
      return epoch
    return 0

  def on_train_begin(self, logs=None):
    if not self.restored:
      self.restore()

  def _load_model(self):
    self.restore()

  def _save_model(self):
    os.makedirs(self.write_dir, exist_ok=True)
    name = f"state-{self._current_epoch:06d}.weights.h5"
    _save_weights_atomically(self.model, os.path.join(self.write_dir, name))
    old = self.read_state(self.write_dir)
    previous = None
    if old is not None and old["weights"] != name:
      previous = {"epoch": old["epoch"], "weights": old["weights"]}
    atomic.write_json(
        os.path.join(self.write_dir, self.STATE_FILE),
        {"epoch": self._current_epoch, "weights": name,
         "previous": previous})
    keep = {name} | ({previous["weights"]} if previous else set())
    for f in os.listdir(self.write_dir):
      if f.startswith("state-") and f.endswith(".h5") and f not in keep:
        try:
          os.remove(os.path.join(self.write_dir, f))
        except OSError:
          pass


def _adapt_for_multi_worker(model, strategy, batch):
  """Works around two Keras 3.15 `fit` bugs with MultiWorkerMirroredStrategy.

  1. `TensorFlowTrainer._maybe_symbolic_build` calls `strategy.reduce(
     "MEAN", batch)` on the first distributed batch, which the strategy
     refuses for a dict ("Attempt to convert a value ({'image':
     PerReplica:{...}}) with an unsupported type (<class 'dict'>) to a
     Tensor"). The build only needs shapes: it is done from a local batch.
  2. `one_step_on_data` reduces the step's logs with
     `strategy.reduce("MEAN", v, axis=0)` (hard-coded "auto" reduction),
     which fails on scalar metric results ("Invalid reduction dimension 0
     for input with 0 dimensions"). The logs are given a batch axis of 1,
     so the reduction averages each metric over the workers.
  """
  def build(iterator=None, data_batch=None):
    del iterator, data_batch
    with strategy.scope():
      model._symbolic_build(data_batch=batch)  # pylint: disable=protected-access
  model._maybe_symbolic_build = build  # pylint: disable=protected-access
  train_step = type(model).train_step.__get__(model)
  model.train_step = lambda data: {
      k: tf.reshape(v, [1]) for k, v in train_step(data).items()}


def _is_chief(strategy):
  """True unless this process is a non-chief worker of a multi-worker job."""
  return bool(getattr(strategy.extended, "should_checkpoint", True))


def _write_dir(model_dir, strategy):
  """Where this process writes: model_dir, or a non-chief worker's own dir.

  With MultiWorkerMirroredStrategy every worker runs the same callbacks;
  only the chief writes model_dir, the others write
  model_dir/workers/worker_<task id>/ (same layout), so no two processes
  ever write the same file.
  """
  if _is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, "workers",
                      f"{resolver.task_type}_{resolver.task_id}")


def _callbacks(config, phase, sample_images, write_dir=None):
  model_dir = config.model_dir
  write_dir = write_dir or model_dir
  logs = os.path.join(write_dir, "logs", f"phase_{phase}")
  return [
      AtomicBackupAndRestore(
          os.path.join(model_dir, "backup", f"phase_{phase}"),
          write_dir=os.path.join(write_dir, "backup", f"phase_{phase}")),
      AtomicModelCheckpoint(
          os.path.join(write_dir, "checkpoints",
                       f"phase_{phase}_latest.weights.h5"),
          save_weights_only=True),
      LearningRateLogger(),
      keras.callbacks.TensorBoard(logs),
      ImageSummaries(logs, sample_images),
  ]


def train(config, stage="all", dataset_fn=None, verbose="auto"):
  """Runs the phases of `stage` and writes `model_dir/model.keras`.

  Args:
    config: resolved `ExperimentConfig` (`config.model_dir` must be set).
    stage: "full" (phases a, b, c), "semi" (stage 2 from the phase-c
      weights in model_dir) or "all".
    dataset_fn: `fn(config, stage) -> tf.data.Dataset` of training batches;
      defaults to `dis_tf.data.pipeline.train_dataset`.
    verbose: `fit` verbosity.

  Returns:
    The trained `DISModel`.
  """
  if stage not in STAGES:
    raise ValueError(f"--stage={stage!r}: expected one of {sorted(STAGES)}.")
  if not config.model_dir:
    raise ValueError("--model_dir is required.")
  # First: MultiWorkerMirroredStrategy must configure the TF context before
  # anything initialises it (importing the pipeline creates tf constants).
  strategy = make_strategy(config.train.strategy)
  if dataset_fn is None:
    from dis_tf.data import pipeline  # pylint: disable=g-import-not-at-top
    dataset_fn = pipeline.train_dataset
  model_dir = config.model_dir
  _check_writable(model_dir)
  # Non-chief workers of a multi-worker job write only their own directory.
  write_dir = _write_dir(model_dir, strategy)
  if write_dir == model_dir:
    try:
      config.save(model_dir)
    except OSError as e:
      raise OSError(e.errno, f"--model_dir={model_dir}: cannot write "
                    f"config.json ({e}).") from e
  else:
    _check_writable(write_dir)
  # A SIGKILL inside a checkpoint write leaves its temp file; nothing else
  # can remove it (this process owns write_dir: see _write_dir).
  for path in atomic.remove_stale_temp_files(write_dir):
    logging.warning("Removed %s, left by a killed run.", path)
  keras.utils.set_random_seed(config.train.seed)
  if config.data.deterministic:
    tf.config.experimental.enable_op_determinism()

  with strategy.scope():
    model = build_dis_model(config)
  phases = STAGES[stage]
  if stage == "semi":
    start = _phase_weights_path(model_dir, "c")
    if not os.path.exists(start):
      raise FileNotFoundError(
          f"--stage=semi starts from the stage-1 weights {start}, which do "
          "not exist: run --stage=full (or all) first.")
    model.load_weights(start)

  for phase in phases:
    done = _phase_weights_path(model_dir, phase)
    if os.path.exists(done):
      logging.info("Phase %s already finished (%s); skipping.", phase, done)
      model.load_weights(done)
      continue
    steps, learning_rate = phase_settings(config.train, phase)
    data = dataset_fn(config, "semi" if phase == "semi" else "full")
    first_batch = next(iter(data.take(1)))
    sample_images = first_batch["image"][:4]
    per_epoch = min(config.train.steps_per_epoch, steps)
    epochs = -(-steps // per_epoch)
    logging.info("Phase %s: %d steps (%d epochs of %d), lr %g.", phase,
                 epochs * per_epoch, epochs, per_epoch, learning_rate)
    print(f"== phase {phase}: {epochs * per_epoch} steps ==", flush=True)
    with strategy.scope():
      model.set_phase(phase)
      model.compile(optimizer=make_optimizer(config.train, learning_rate,
                                             epochs * per_epoch))
    # Keras' BackupAndRestore resumes by setting model._initial_epoch and
    # never clears it, so a phase after a resumed one would skip epochs
    # (keras 3.15 BackupAndRestore._load_model / Trainer.fit).
    model._initial_epoch = None  # pylint: disable=protected-access
    if steps > 0:
      callbacks = _callbacks(config, phase, sample_images, write_dir)
      resumed = 0
      for callback in callbacks:
        if isinstance(callback, AtomicBackupAndRestore):
          callback.set_model(model)
          with strategy.scope():
            resumed = callback.restore()
      if resumed:
        print(f"== phase {phase}: resuming after epoch {resumed} of "
              f"{epochs} ==", flush=True)
        # fit() keeps one iterator over the (infinite) stream across epochs;
        # the resumed run continues where the interrupted one was, so a
        # deterministic run sees exactly the batches of an uninterrupted one.
        data = data.skip(resumed * per_epoch)
      if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _adapt_for_multi_worker(model, strategy, first_batch)
      model.fit(data, epochs=epochs, steps_per_epoch=per_epoch,
                callbacks=callbacks, verbose=verbose)
    _save_weights_atomically(model, _phase_weights_path(write_dir, phase))
    # Only after the phase weights are committed (a kill in between resumes
    # from the backup; one after it skips the phase).
    shutil.rmtree(os.path.join(write_dir, "backup", f"phase_{phase}"),
                  ignore_errors=True)

  model_dir_lib.save_model(model, write_dir)
  return model


def _check_writable(model_dir):
  """Fails before training if model_dir cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write_probe-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"--model_dir={model_dir} is not writable: {e}") from e


def resolve_config(preset, overrides):
  """Builds the config of a run: preset, then flag overrides.

  Args:
    preset: "synthetic" or "voc12".
    overrides: dict of dotted keys ("train.batch_size") to values; None
      values are ignored (flag not given).

  Returns:
    An `ExperimentConfig`.
  """
  if preset not in config_lib.PRESETS:
    raise ValueError(f"--preset={preset!r}: expected one of "
                     f"{sorted(config_lib.PRESETS)}.")
  config = config_lib.PRESETS[preset]()
  for key, value in overrides.items():
    if value is None:
      continue
    section, _, name = key.rpartition(".")
    target = getattr(config, section) if section else config
    if not hasattr(target, name):
      raise ValueError(f"Unknown config key {key!r}.")
    setattr(target, name, value)
  return config

