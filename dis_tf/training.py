"""Training driver: the stage-1 phases and stage 2 with `keras` `fit`.

`tools/train.py` is a thin flag layer over `train(config, stage)`. Each phase
(paper Sec. 3: a, b, c, then stage 2 "semi") is one `model.fit` with Keras
callbacks: progress bar, `ModelCheckpoint`, `BackupAndRestore` (a killed
run resumes inside the phase it was in), and `TensorBoard` (losses, learning
rate, mIoU, image summaries). A finished phase leaves
`checkpoints/phase_<p>.weights.h5`; a rerun skips finished phases.
"""

import os

from absl import logging
import keras
import tensorflow as tf

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


def _save_weights_atomically(model, path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
  model.save_weights(tmp)
  os.replace(tmp, path)


def _callbacks(config, phase, sample_images):
  model_dir = config.model_dir
  logs = os.path.join(model_dir, "logs", f"phase_{phase}")
  return [
      keras.callbacks.BackupAndRestore(
          os.path.join(model_dir, "backup", f"phase_{phase}"),
          delete_checkpoint=True, double_checkpoint=True),
      keras.callbacks.ModelCheckpoint(
          os.path.join(model_dir, "checkpoints",
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
  if dataset_fn is None:
    from dis_tf.data import pipeline  # pylint: disable=g-import-not-at-top
    dataset_fn = pipeline.train_dataset
  model_dir = config.model_dir
  _check_writable(model_dir)
  config.save(model_dir)
  keras.utils.set_random_seed(config.train.seed)
  if config.data.deterministic:
    tf.config.experimental.enable_op_determinism()

  strategy = make_strategy(config.train.strategy)
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
    sample_images = next(iter(data.take(1)))["image"][:4]
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
      model.fit(data, epochs=epochs, steps_per_epoch=per_epoch,
                callbacks=_callbacks(config, phase, sample_images),
                verbose=verbose)
    _save_weights_atomically(model, done)

  model_dir_lib.save_model(model, model_dir)
  return model


def _check_writable(model_dir):
  """Fails before training if model_dir cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, ".write_probe")
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

