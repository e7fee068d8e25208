"""Training driver: the stage-1 phases and stage 2 with `keras` `fit`.

`tools/train.py` is a thin flag layer over `train(config, stage)`. Each phase
(paper Sec. 3: a, b, c, then stage 2 "semi") is one `model.fit` with the
callbacks of `dis_tf.callbacks`: progress bar, an atomic weights checkpoint,
an atomic backup (a killed run resumes inside the phase it was in), and
TensorBoard (losses, learning rate, mIoU, and a grid of val images and
predictions: `train.tensorboard_images`). A finished phase
leaves `checkpoints/phase_<p>.weights.h5`; a rerun skips finished phases.

Every checkpoint is written to a temp file and renamed, so a SIGKILL or a
full disk never leaves a truncated checkpoint under its final name; a
deterministic run resumed after a kill ends with the weights of an
uninterrupted one. With MultiWorkerMirroredStrategy only the chief writes
model_dir; worker i writes model_dir/workers/worker_<i>/. See RELIABILITY.md.

Size: over 450 lines because resume, the config fingerprints, the lock and the
phase loop are one state machine over a model_dir (RELIABILITY.md); the
callbacks live in dis_tf/callbacks.py.
"""

import copy
import os
import shutil

from absl import logging
import h5py
import keras
import tensorflow as tf

from dis_tf import atomic
from dis_tf import callbacks as callbacks_lib
from dis_tf import classes
from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import keras_compat
from dis_tf import locks
from dis_tf import model_dir as model_dir_lib
from dis_tf.data import pipeline
from dis_tf.modeling.dis_model import build_dis_model


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
      raise errors.UserError("--strategy=multi_worker needs the TF_CONFIG "
                             "environment variable (cluster and task).")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise errors.UserError(f"--strategy={name!r}: expected default, mirrored or "
                         "multi_worker.")


def _phase_key(phase):
  """The TrainConfig field prefix of a phase ("phase_a", ..., "semi")."""
  return "semi" if phase == "semi" else f"phase_{phase}"


def phase_settings(train_config, phase):
  """(steps, learning rate) of a phase."""
  key = _phase_key(phase)
  return (getattr(train_config, f"{key}_steps"),
          getattr(train_config, f"{key}_lr"))


def make_optimizer(train_config, learning_rate, steps, precision="float32"):
  """SGD with momentum and the poly schedule (DeepLab), or Adam.

  Args:
    train_config: `TrainConfig`.
    learning_rate: base learning rate of the phase.
    steps: steps of the phase (the poly schedule reaches 0 there).
    precision: the model's `model.precision`. Under "mixed_float16" the
      optimizer is wrapped in `keras.optimizers.LossScaleOptimizer`
      (dynamic loss scaling: float16 gradients of the backbone underflow
      otherwise); `DISModel.train_step` scales the loss through
      `optimizer.scale_loss` and the wrapper unscales the gradients and
      skips a step whose gradients are not finite. bfloat16 has float32's
      exponent range and needs no scaling.

  Returns:
    A Keras optimizer.
  """
  schedule = keras.optimizers.schedules.PolynomialDecay(
      learning_rate, decay_steps=max(steps, 1), end_learning_rate=0.0,
      power=train_config.poly_power)
  decay = train_config.weight_decay or None
  if train_config.optimizer == "sgd":
    optimizer = keras.optimizers.SGD(schedule, momentum=train_config.momentum,
                                     weight_decay=decay)
  elif train_config.optimizer == "adam":
    optimizer = keras.optimizers.Adam(schedule, weight_decay=decay)
  else:
    raise errors.UserError(
        f"optimizer={train_config.optimizer!r}: expected sgd or "
        "adam.")
  if config_lib.check_precision(precision) == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


_phase_weights_path = model_dir_lib.phase_weights_path


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


def _image_examples(config):
  """The fixed val examples of the TensorBoard image grid, or None.

  The first `train.tensorboard_num_images` examples of the split that
  `data.eval_split` slices ("val" for "val[100:]": a slice can be longer
  than a small split, and the first images of "val" are in the synthetic
  preset's selection split "val[:100]", not in the reported one), read in
  file order whatever `data.deterministic` says, so that every epoch and
  every phase shows the same images. None (no grid) when the grid is off,
  when the config has no VOC folder (a caller's own `dataset_fn`), or when
  the split cannot be read: the grid is worth a warning, not a failed
  training.
  """
  train_config = config.train
  if not train_config.tensorboard_images:
    return None
  if train_config.tensorboard_num_images < 1:
    raise ValueError("--train.tensorboard_num_images="
                     f"{train_config.tensorboard_num_images}: must be >= 1 "
                     "(--notrain.tensorboard_images turns the grid off).")
  if train_config.tensorboard_image_freq < 1:
    raise ValueError("--train.tensorboard_image_freq="
                     f"{train_config.tensorboard_image_freq}: must be >= 1 "
                     "(epochs between grids; --notrain.tensorboard_images "
                     "turns the grid off).")
  if not config.data.voc_dir:
    logging.info("No data.voc_dir: no TensorBoard image grid.")
    return None
  split = config.data.eval_split.split("[", 1)[0]
  ordered = copy.deepcopy(config)
  ordered.data.deterministic = True
  try:
    return list(pipeline.eval_dataset(ordered, split).take(
        train_config.tensorboard_num_images))
  except ValueError as e:
    logging.warning("No TensorBoard image grid (%s); "
                    "--notrain.tensorboard_images silences this.", e)
    return None


def _callbacks(config, phase, image_examples, write_dir=None):
  model_dir = config.model_dir
  write_dir = write_dir or model_dir
  logs = os.path.join(write_dir, "logs", f"phase_{phase}")
  callbacks = [
      callbacks_lib.AtomicBackupAndRestore(
          os.path.join(model_dir, "backup", f"phase_{phase}"),
          write_dir=os.path.join(write_dir, "backup", f"phase_{phase}")),
      callbacks_lib.AtomicWeightsCheckpoint(
          os.path.join(write_dir, "checkpoints",
                       f"phase_{phase}_latest.weights.h5")),
      callbacks_lib.LearningRateLogger(),
      keras.callbacks.TensorBoard(logs),
  ]
  if image_examples:
    # Next to Keras's "train" run: TensorBoard shows phase_<p>/validation.
    callbacks.append(callbacks_lib.ImageSummaries(
        os.path.join(logs, "validation"), image_examples,
        config.latent.t_test, classes.from_config(config).palette(),
        freq=config.train.tensorboard_image_freq))
  return callbacks


def train(config, stage="all", dataset_fn=None, verbose="auto",
          overwrite=False, init_from=None):
  """Runs the phases of `stage` and writes `model_dir/model.keras`.

  A rerun on the same model_dir resumes: finished phases are skipped and an
  interrupted one continues from its backup. Each phase records the
  training fields it ran with (`model_dir.training_fields`); a rerun whose
  fields differ from those of a phase with state in model_dir is an error
  (`ConfigMismatchError`) unless `overwrite`. Only one run may train in a
  model_dir at a time (`model_dir/train.lock`, taken by the chief).

  Args:
    config: resolved `ExperimentConfig` (`config.model_dir` must be set).
    stage: "full" (phases a, b, c), "semi" (stage 2 from the phase-c
      weights in model_dir) or "all".
    dataset_fn: `fn(config, stage) -> tf.data.Dataset` of training batches;
      defaults to `dis_tf.data.pipeline.train_dataset`.
    verbose: `fit` verbosity, or "phase": one progress line per phase
      (`dis_tf.callbacks.PhaseProgress`; the demo's).
    overwrite: discard the training state in model_dir (checkpoints,
      backups, logs, model.keras) and train from scratch.
    init_from: stage "semi" only: another run's model_dir whose finished
      phase c stage 2 starts from (`init_stage2_from`), e.g. to
      train stage 2 again on cleaned tags.

  Returns:
    The trained `DISModel`.

  Raises:
    ConfigMismatchError: model_dir holds state of another configuration.
    LockHeldError: another run holds model_dir's lock.
  """
  if stage not in config_lib.STAGES:
    raise errors.UserError(
        f"--stage={stage!r}: expected one of {sorted(config_lib.STAGES)}.")
  if not config.model_dir:
    raise errors.UserError("--model_dir is required.")
  if init_from is not None and stage != "semi":
    raise errors.UserError(f"--init_from with --stage={stage}: it gives the "
                           "phase-c weights stage 2 starts from, so it needs "
                           "--stage=semi.")
  _check_steps(config.train, config_lib.STAGES[stage])
  # First: MultiWorkerMirroredStrategy must configure the TF context before
  # anything initialises it.
  strategy = make_strategy(config.train.strategy)
  if overwrite and config.train.strategy == "multi_worker":
    raise errors.UserError("--overwrite is not supported with "
                     "--strategy=multi_worker (a worker could restore the "
                     "state the chief is deleting): delete --model_dir, or "
                     "use a new one.")
  # Then the TF runtime is initialised, before the seeds and op determinism
  # are set below: with the runtime first created after them, a resumed
  # deterministic run no longer reproduced an uninterrupted one (seen when
  # the pipeline's import-time tf.constant, which used to initialise it
  # here, was removed; tests/test_reliability_training.py).
  tf.config.list_logical_devices()
  model_dir = config.model_dir
  _check_writable(model_dir)
  # Only the chief takes the lock: the workers of one multi-worker job run
  # together, and write only their own directories (see _write_dir).
  with locks.held(locks.train_lock(model_dir), enabled=_is_chief(strategy)):
    return _train(config, stage, dataset_fn or pipeline.train_dataset,
                  verbose, overwrite, strategy, init_from)


def _check_steps(train_config, phases):
  """Step counts a run can use: >= 0 per phase (0 skips its training), and
  at least one step per epoch."""
  if train_config.steps_per_epoch < 1:
    raise errors.UserError(
        f"--train.steps_per_epoch={train_config.steps_per_epoch}: must be at "
        "least 1.")
  for phase in phases:
    steps, _ = phase_settings(train_config, phase)
    if steps < 0:
      raise errors.UserError(
          f"--train.{_phase_key(phase)}_steps={steps}: must be 0 (no "
          "training in that phase) or more.")


def _phase_has_state(model_dir, phase):
  """A finished phase, or an interrupted one with a backup to resume."""
  return (os.path.exists(_phase_weights_path(model_dir, phase))
          or os.path.exists(os.path.join(model_dir, "backup",
                                         f"phase_{phase}", "state.json")))


def _previous_config(model_dir):
  """config.json of the previous run in model_dir, or None."""
  if not os.path.exists(os.path.join(model_dir, config_lib.CONFIG_FILENAME)):
    return None
  try:
    return config_lib.ExperimentConfig.load(model_dir)
  except (OSError, ValueError, TypeError) as e:
    logging.warning("Cannot read the previous config.json of %s (%s).",
                    model_dir, e)
    return None


def _check_fingerprints(config, model_dir, phases, previous):
  """Raises ConfigMismatchError if a phase with state ran another config.

  Args:
    config: this run's config.
    model_dir: the chief's model_dir.
    phases: the phases this run reads or trains.
    previous: the config.json found in model_dir (None if none): the
      reference of state from before fingerprints were stored.

  Returns:
    The phases with state but no stored fingerprint (to record).
  """
  differences, unrecorded = [], []
  for phase in phases:
    if not _phase_has_state(model_dir, phase):
      continue
    stored = model_dir_lib.read_fingerprint(model_dir, phase)
    if stored is not None:
      fields = stored["fields"]
    elif previous is not None:
      fields = model_dir_lib.training_fields(previous, phase)
      unrecorded.append(phase)
    else:
      logging.warning("Phase %s in %s has no recorded configuration; "
                      "assuming it is this run's.", phase, model_dir)
      unrecorded.append(phase)
      continue
    current = model_dir_lib.training_fields(config, phase)
    for key, old, new in model_dir_lib.field_differences(fields, current):
      differences.append((phase, key, old, new))
  if differences:
    phases_named = sorted({p for p, *_ in differences},
                          key=("a", "b", "c", "semi").index)
    lines = "\n".join(f"  phase {p}: {key}: {old!r} in model_dir, {new!r} "
                      "now" for p, key, old, new in differences)
    raise model_dir_lib.ConfigMismatchError(
        f"--model_dir={model_dir} holds training state (phase "
        f"{', '.join(phases_named)}) from another configuration:\n{lines}\n"
        "Resuming would mix the two. Rerun with the run's original flags to "
        "resume it, pass --overwrite to discard its training state and "
        "train from scratch, or use a new --model_dir.")
  return unrecorded


# The training state --overwrite removes (the chief's model_dir only).
_STATE_ENTRIES = ("checkpoints", "backup", "logs", "workers",
                  model_dir_lib.MODEL_FILENAME)


# What the old run's evaluation left in model_dir: its reports
# (tools/evaluate.py's eval_<split>/, tools/demo.py's eval_val/), figures
# (tools/visualize.py) and the served-setting record
# (dis_tf.selection.SELECTION_FILENAME). --overwrite removes them too, so
# no report of the old weights sits beside the new run.
_EVAL_ENTRIES = ("figures", "t_test_selection.json")
_EVAL_PREFIX = "eval_"


def _remove_training_state(model_dir):
  removed = []
  old_reports = sorted(
      name for name in (os.listdir(model_dir) if os.path.isdir(model_dir)
                        else [])
      if name.startswith(_EVAL_PREFIX)
      and os.path.isdir(os.path.join(model_dir, name)))
  for name in _STATE_ENTRIES + _EVAL_ENTRIES + tuple(old_reports):
    path = os.path.join(model_dir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
    else:
      continue
    removed.append(name)
  if removed:
    logging.warning("--overwrite: removed %s from %s.", ", ".join(removed),
                    model_dir)
    print(f"== --overwrite: removed the training state and the old "
          f"run's reports ({', '.join(removed)}) of {model_dir} ==",
          flush=True)


def _h5_problem(path):
  """None if every dataset of the HDF5 file `path` reads, else the error."""
  try:
    with h5py.File(path, "r") as f:
      f.visititems(lambda name, obj: obj[()]
                   if isinstance(obj, h5py.Dataset) else None)
  except Exception as e:  # pylint: disable=broad-except
    return e
  return None


def _load_last_good(model, chain, num_fixed, model_dir, is_chief, rebuild):
  """Loads the weights of the last readable finished phase of `chain`.

  Args:
    model: the freshly built model.
    chain: the phases in order: `num_fixed` leading phases this run only
      reads (phase c for --stage=semi), then the phases it trains.
    num_fixed: see `chain`.
    model_dir: where the finished phases are.
    is_chief: only the chief sets unreadable files aside.
    rebuild: `fn() -> model`, a fresh model (after a failed partial load).

  Returns:
    (model, index in `chain` of the first phase to train).
  """
  done = 0
  while (done < len(chain)
         and os.path.exists(_phase_weights_path(model_dir, chain[done]))):
    done += 1
  if done < num_fixed:
    start = _phase_weights_path(model_dir, chain[0])
    raise errors.MissingFileError(
        f"--stage=semi starts from the stage-1 weights {start}, which do "
        "not exist: run --stage=full (or all) first.")
  # The fingerprint chain: a finished phase whose start weights have
  # changed since (its predecessor was retrained) is stale, and so is every
  # phase after it. A predecessor that changed because it is corrupt is
  # left to the corrupt-file handling below (it names the file).
  for i in range(max(1, num_fixed), done):
    reason = model_dir_lib.stale_start(model_dir, chain[i])
    if (reason is not None and _h5_problem(
        _phase_weights_path(model_dir, chain[i - 1])) is None):
      message = (f"{reason}: phase(s) {', '.join(chain[i:done])} are "
                 "trained again.")
      logging.warning(message)
      print(f"Warning: {message}", flush=True)
      done = i
      break
  # A finished phase after an unfinished one (its predecessor was set
  # aside): it was trained from weights that no longer exist.
  for phase in chain[done:]:
    path = _phase_weights_path(model_dir, phase)
    if os.path.exists(path) and is_chief:
      logging.warning("%s follows an unfinished phase; setting it aside "
                      "(%s).", path, atomic.set_aside(path, ".stale"))
  index = done - 1
  corrupt = []  # (path, where it was moved, error)
  while index >= 0:
    path = _phase_weights_path(model_dir, chain[index])
    try:
      model.load_weights(path)
      break
    except (OSError, ValueError, KeyError) as e:
      if _h5_problem(path) is None:
        # A complete file that does not fit this network: not corruption,
        # so nothing is set aside (the config fingerprints name the cause).
        raise errors.UserError(
            f"{path} is a complete weights file but cannot be loaded into "
            f"this run's network ({e}).") from e
      if index < num_fixed:
        raise errors.CorruptFileError(
            f"{path} is corrupt and cannot be loaded ({e}). Rebuild it with "
            f"python tools/train.py --stage=full --model_dir={model_dir} "
            "(and the run's other flags; it retrains phase c from phase b, "
            "or earlier phases from the last readable one), then rerun "
            "--stage=semi.") from e
      corrupt.append((path, atomic.set_aside(path) if is_chief else path, e))
      index -= 1
  source = (_phase_weights_path(model_dir, chain[index]) if index >= 0
            else "the initial weights")
  retrained = ", ".join(chain[index + 1:done])
  for path, aside, error in corrupt:
    message = (f"{path} is corrupt and cannot be loaded ({error}); moved to "
               f"{aside}. Phase(s) {retrained} are trained again from "
               f"{source}.")
    logging.warning(message)
    print(f"Warning: {message}", flush=True)
  if index < 0 and corrupt:
    model = rebuild()  # A failed load may have set some weights.
  return model, index + 1


def _train(config, stage, dataset_fn, verbose, overwrite, strategy,
           init_from=None):
  """`train` once the lock is held."""
  model_dir = config.model_dir
  # Non-chief workers of a multi-worker job write only their own directory.
  write_dir = _write_dir(model_dir, strategy)
  is_chief = write_dir == model_dir
  phases = config_lib.STAGES[stage]
  # The phases read before training (stage 2 starts from phase c).
  chain = (("c",) if stage == "semi" else ()) + phases
  num_fixed = len(chain) - len(phases)
  if overwrite:
    _remove_training_state(write_dir)
  if init_from is not None and is_chief:
    init_stage2_from(init_from, model_dir, config)
  unrecorded = _check_fingerprints(config, model_dir, chain,
                                   _previous_config(model_dir))
  if is_chief:
    try:
      config.save(model_dir)
    except OSError as e:
      raise OSError(e.errno, f"--model_dir={model_dir}: cannot write "
                    f"config.json ({e}).") from e
    for phase in unrecorded:
      model_dir_lib.write_fingerprint(model_dir, config, phase)
  else:
    _check_writable(write_dir)
  # A SIGKILL inside a checkpoint write leaves its temp file; nothing else
  # can remove it (this process owns write_dir: see _write_dir).
  for path in atomic.remove_stale_temp_files(write_dir):
    logging.warning("Removed %s, left by a killed run.", path)
  if config.data.deterministic:
    tf.config.experimental.enable_op_determinism()

  def build():
    keras.utils.set_random_seed(config.train.seed)
    with strategy.scope():
      return build_dis_model(config)

  model, first = _load_last_good(build(), chain, num_fixed, model_dir,
                                 is_chief, build)
  image_examples = None
  if is_chief and max(first, num_fixed) < len(chain):
    # Only the chief draws the grid (the workers' would be the same).
    image_examples = _image_examples(config)
  for phase in chain[num_fixed:first]:
    logging.info("Phase %s already finished (%s); skipping.", phase,
                 _phase_weights_path(model_dir, phase))

  for phase in chain[max(first, num_fixed):]:
    if is_chief:
      backup = os.path.join(model_dir, "backup", f"phase_{phase}")
      reason = model_dir_lib.stale_start(model_dir, phase)
      if reason is not None and os.path.isdir(backup):
        # Resuming would continue from weights trained on a start that no
        # longer exists.
        shutil.rmtree(backup)
        message = f"{reason}: its backup {backup} is removed."
        logging.warning(message)
        print(f"Warning: {message}", flush=True)
      model_dir_lib.write_fingerprint(
          model_dir, config, phase,
          starts_from=model_dir_lib.start_weights_hash(model_dir, phase))
    steps, learning_rate = phase_settings(config.train, phase)
    data = dataset_fn(config, "semi" if phase == "semi" else "full")
    first_batch = next(iter(data.take(1)))
    # A 0-step phase trains nothing; its weights are committed as they are.
    per_epoch = max(1, min(config.train.steps_per_epoch, steps))
    epochs = -(-steps // per_epoch)
    logging.info("Phase %s: %d steps (%d epochs of %d), lr %g.", phase,
                 epochs * per_epoch, epochs, per_epoch, learning_rate)
    print(f"== phase {phase}: {epochs * per_epoch} steps ==", flush=True)
    with strategy.scope():
      model.set_phase(phase)
      model.compile(optimizer=make_optimizer(config.train, learning_rate,
                                             epochs * per_epoch,
                                             config.model.precision))
      # Built now, as Keras builds it under a distribution strategy: left
      # to the first step, the optimizer's variables are created inside the
      # train function's first trace, and tf.function then traces it a
      # second time (the same graph; tests/test_tracing.py).
      model.optimizer.build(model.trainable_variables)
    if steps > 0:
      callbacks = _callbacks(config, phase, image_examples, write_dir)
      resumed = 0
      for callback in callbacks:
        if isinstance(callback, callbacks_lib.AtomicBackupAndRestore):
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
        keras_compat.adapt_for_multi_worker(model, strategy, first_batch)
      fit_verbose = verbose
      if verbose == "phase":
        fit_verbose = 0
        callbacks.append(callbacks_lib.PhaseProgress(
            phase, epochs * per_epoch, resumed * per_epoch))
      # shuffle=False: the stream is shuffled by the pipeline; Keras's
      # default (True) only warns that it ignores it for a tf.data input.
      model.fit(data, epochs=epochs, initial_epoch=resumed,
                steps_per_epoch=per_epoch, callbacks=callbacks,
                verbose=fit_verbose, shuffle=False)
    callbacks_lib.save_weights_atomically(
        model, _phase_weights_path(write_dir, phase))
    # Only after the phase weights are committed (a kill in between resumes
    # from the backup; one after it skips the phase).
    shutil.rmtree(os.path.join(write_dir, "backup", f"phase_{phase}"),
                  ignore_errors=True)

  model_dir_lib.save_model(model, write_dir)
  return model


def init_stage2_from(source_dir, model_dir, config=None):
  """Puts the finished phase c of the run in `source_dir` (its weights and
  fingerprint) into `model_dir`, so that stage 2 trains there from it
  (`train(..., init_from=source_dir)`): e.g. stage 2 again on
  cleaned tags (`tools/clean_tags.py --weak_output_dir`), beside the run.

  Args:
    source_dir: the finished run.
    model_dir: the new run's directory.
    config: the new run's config; if given, a change of a field that phase
      c was trained with (train.seed, train.batch_size, ...) is refused
      here, before anything is copied, by its name: stage 2 from another
      run keeps that run's stage 1.

  Raises:
    MissingFileError: `source_dir` has no finished phase c.
    UserError: `model_dir` is `source_dir`, already holds other phase-c
      weights (a rerun with the same `source_dir` resumes), or `config`
      changes a field of the copied phase c.
  """
  if os.path.abspath(source_dir) == os.path.abspath(model_dir):
    raise errors.UserError(f"--init_from={source_dir} is --model_dir: "
                           "stage 2 from another run needs its own "
                           "--model_dir.")
  source = model_dir_lib.phase_weights_path(source_dir, "c")
  if not os.path.exists(source):
    raise errors.MissingFileError(
        f"--init_from={source_dir}: no finished stage 1 ({source} is "
        "missing).")
  stored = model_dir_lib.read_fingerprint(source_dir, "c")
  if config is not None and stored is not None:
    # Without this, the fingerprint check after the copy refuses it too,
    # but as a resume of another configuration, whose advice (--overwrite)
    # cannot help: the copy comes back on the next run.
    changed = model_dir_lib.field_differences(
        stored["fields"], model_dir_lib.training_fields(config, "c"))
    if changed:
      raise errors.UserError(
          f"--init_from={source_dir}: its stage 1 was trained with "
          + ", ".join(f"{key}={old!r}" for key, old, _ in changed)
          + "; this run asks "
          + ", ".join(f"{key}={new!r}" for key, _, new in changed)
          + ". Stage 2 from another run keeps that run's stage 1: drop "
          "these flags (stage 2's own ones, such as latent.t_train, "
          "train.semi_steps or --weak_dir, may change), or train both "
          "stages anew with --stage=all.")
  target = model_dir_lib.phase_weights_path(model_dir, "c")
  if os.path.exists(target):
    if model_dir_lib.file_hash(target) != model_dir_lib.file_hash(source):
      raise errors.UserError(
          f"--model_dir={model_dir} holds other phase-c weights than "
          f"--init_from={source_dir}: use a new --model_dir.")
    return
  fingerprint_file = model_dir_lib.fingerprint_path(source_dir, "c")
  if os.path.exists(fingerprint_file):
    # Its recorded fields: a stage 2 configured differently from the
    # phase-c run (batch size, steps...) is refused as in one model_dir.
    with atomic.atomic_write(
        model_dir_lib.fingerprint_path(model_dir, "c")) as tmp:
      shutil.copyfile(fingerprint_file, tmp)
  with atomic.atomic_write(target) as tmp:
    shutil.copyfile(source, tmp)


def _check_writable(model_dir):
  """Fails before training if model_dir cannot be written."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write_probe-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise errors.UnwritablePathError(
        f"--model_dir={model_dir} is not writable: {e}") from e
