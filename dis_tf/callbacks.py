"""Keras callbacks of the training driver: atomic checkpoints and summaries.

Every checkpoint is written to a temp file and renamed
(`save_weights_atomically`, through `dis_tf.atomic`), so a SIGKILL or a full
disk never leaves a truncated checkpoint under its final name:

* `AtomicWeightsCheckpoint` replaces `keras.callbacks.ModelCheckpoint`
  (Keras 3.15 writes its file in place);
* `AtomicBackupAndRestore` replaces `keras.callbacks.BackupAndRestore`
  (Keras 3.15 overwrites its weights and metadata in place, in two writes).

Both use public Keras API only: a restored epoch reaches `fit` through its
`initial_epoch` argument. `LearningRateLogger` and `ImageSummaries` feed
TensorBoard. See RELIABILITY.md.
"""

import errno
import json
import os
import shutil
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from dis_tf import atomic
from dis_tf import visualization


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


def save_weights_atomically(model, path):
  """Writes `path` through `atomic.atomic_write`: never a truncated `path`.

  A failing write (full disk, I/O error) removes the temp file and raises an
  OSError naming `path`; the previous `path`, if any, is left untouched.

  Args:
    model: a Keras model.
    path: a `.weights.h5` file name.
  """
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _check_free_space(model, path)
    with atomic.atomic_write(path) as tmp:
      model.save_weights(tmp)
  except OSError as e:
    raise OSError(e.errno, f"Could not write checkpoint {path} ({e}); the "
                  "previous version of it, if any, is kept.") from e


class AtomicWeightsCheckpoint(keras.callbacks.Callback):
  """Saves the weights to `filepath` at every epoch end, atomically.

  What `keras.callbacks.ModelCheckpoint(filepath, save_weights_only=True)`
  does with its defaults, except that Keras 3.15 writes the file in place,
  so a process killed (or a disk filling up) mid-write leaves a truncated
  HDF5 file under the final name. Here the file is written to a temp name
  and renamed.

  Args:
    filepath: the `.weights.h5` file to write.
  """

  def __init__(self, filepath):
    super().__init__()
    self.filepath = filepath

  def on_epoch_end(self, epoch, logs=None):
    save_weights_atomically(self.model, self.filepath)


class AtomicBackupAndRestore(keras.callbacks.Callback):
  """A training state (weights + epoch) committed atomically at epoch ends.

  Keras 3.15's `BackupAndRestore` overwrites `latest.weights.h5` in place
  and then writes `training_metadata.json`: a kill inside either write
  leaves a truncated file, and a kill between them leaves epoch-N+1 weights
  with epoch-N metadata (the resumed run trains an epoch twice). Here each
  backup writes the weights to a new file `state-<epoch>.weights.h5` (temp +
  rename) and then atomically replaces `state.json`, which names it:
  `state.json` is the commit point. The previous state file is kept (double
  checkpoint) and used if the current one cannot be read.

  Use: `restore()` before `fit` (model compiled, in strategy scope), and
  pass the epoch it returns as `fit(initial_epoch=...)`.

  Multi-worker training: the state is read from `backup_dir` (the chief's)
  and written to `write_dir` (each non-chief worker's own directory), so
  that workers never write the same file and all resume from one state.

  Args:
    backup_dir: directory read by `restore`.
    write_dir: directory written at each epoch end (default `backup_dir`).
  """

  STATE_FILE = "state.json"

  def __init__(self, backup_dir, write_dir=None):
    super().__init__()
    self.backup_dir = backup_dir
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
    """Loads the committed state into the model.

    Returns:
      The number of finished epochs (0 if there is no state): the
      `initial_epoch` of the `fit` call that continues.
    """
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
      return int(candidate["epoch"])
    return 0

  def on_train_begin(self, logs=None):
    if not self.restored:
      raise RuntimeError("AtomicBackupAndRestore: call restore() before fit "
                         "and pass its epoch as fit(initial_epoch=...).")

  def on_epoch_end(self, epoch, logs=None):
    epoch += 1  # Epochs finished.
    os.makedirs(self.write_dir, exist_ok=True)
    name = f"state-{epoch:06d}.weights.h5"
    save_weights_atomically(self.model, os.path.join(self.write_dir, name))
    old = self.read_state(self.write_dir)
    previous = None
    if old is not None and old["weights"] != name:
      previous = {"epoch": old["epoch"], "weights": old["weights"]}
    atomic.write_json(
        os.path.join(self.write_dir, self.STATE_FILE),
        {"epoch": epoch, "weights": name, "previous": previous})
    keep = {name} | ({previous["weights"]} if previous else set())
    for f in os.listdir(self.write_dir):
      if f.startswith("state-") and f.endswith(".h5") and f not in keep:
        try:
          os.remove(os.path.join(self.write_dir, f))
        except OSError:
          pass


class LearningRateLogger(keras.callbacks.Callback):
  """Adds the current learning rate to the logs (before TensorBoard)."""

  def on_epoch_end(self, epoch, logs=None):
    if logs is not None:
      optimizer = self.model.optimizer
      logs["learning_rate"] = float(
          keras.ops.convert_to_numpy(optimizer.learning_rate))


class ImageSummaries(keras.callbacks.Callback):
  """Draws a fixed grid of val images and predictions into TensorBoard.

  At the end of epochs 0, freq, 2 freq, ... and of the last epoch of the
  `fit` (the step of Keras's epoch scalars), one image tagged
  `val_images`: a row per example of `examples`, with the columns of
  `dis_tf.visualization.figure_columns`: the image, the image target I, the
  reconstruction z3 after `t_test` latent steps, the labelmaps at t = 0
  and at `t_test` (the class colours) and the ground truth. The
  predictions come from the path of evaluation
  (`dis_tf.evaluation.predict`: `DISModel.infer`, the latent loop
  compiled once per model and reused by a later evaluation of the same
  model), so the grid shows what the evaluation scores.

  Args:
    log_dir: TensorBoard run directory.
    examples: list of batch-1 evaluation dicts ("image" [1, H, W, 3]
      normalised, "mask" [1, H, W], "file_name" [1]), the same every epoch.
    t_test: latent steps of the second labelmap and of z3.
    palette: [256, 3] uint8 class colours of the run's class set (None:
      VOC's).
    freq: epochs between grids (`train.tensorboard_image_freq`); the last
      epoch always draws one, so a phase ends with its final predictions.
  """

  TAG = "val_images"

  def __init__(self, log_dir, examples, t_test, palette=None, freq=1):
    super().__init__()
    self.log_dir = log_dir
    self.examples = list(examples)
    self.t_test = int(t_test)
    self.palette = palette
    self.freq = int(freq)
    self._writer = None

  def grid(self):
    """(uint8 [H, W, 3] grid of the current model, its Markdown caption)."""
    rows = [visualization.figure_row(self.model, example, [self.t_test])
            for example in self.examples]
    names = ", ".join(os.path.basename(r["file_name"]) for r in rows)
    caption = (f"Columns: {' | '.join(visualization.figure_columns(rows))}."
               f" Rows: {names}.")
    return visualization.grid_image(rows, palette=self.palette), caption

  def on_epoch_end(self, epoch, logs=None):
    epochs = (self.params or {}).get("epochs")
    last = epochs is not None and epoch == epochs - 1
    if epoch % self.freq and not last:
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.log_dir)
    start = time.time()
    grid, caption = self.grid()
    with self._writer.as_default():
      tf.summary.image(self.TAG, grid[None], step=epoch, description=caption)
    self._writer.flush()
    # The grid's cost, for whoever wonders what it adds to an epoch.
    logging.info("TensorBoard image grid of epoch %d: %.1f s", epoch + 1,
                 time.time() - start)

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class PhaseProgress(keras.callbacks.Callback):
  """One progress line per training phase (`training.train(verbose="phase")`).

  Keras's own progress bar draws one bar per epoch (a phase has up to 20
  epochs), which fills a log with lines. This prints the phase's steps as a
  whole: on a terminal one line redrawn in place, elsewhere (a log file) a
  line at each quarter of the phase.

  Args:
    phase: the phase name ("a", "b", "c", "semi").
    total_steps: the phase's steps.
    start_step: steps already done (a resumed phase).
    stream: where to print (default sys.stdout).
  """

  def __init__(self, phase, total_steps, start_step=0, stream=None):
    super().__init__()
    self.phase = phase
    self.total_steps = int(total_steps)
    self.start_step = int(start_step)
    self.stream = stream
    self._step = self.start_step
    self._begin = None
    self._next_mark = 0

  def _out(self):
    import sys  # pylint: disable=g-import-not-at-top
    return self.stream or sys.stdout

  def on_train_begin(self, logs=None):
    self._begin = time.time()
    self._next_mark = (self._step * 4 // max(self.total_steps, 1) + 1)

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    out = self._out()
    loss = (logs or {}).get("loss")
    text = (f"  phase {self.phase}: {self._step}/{self.total_steps} steps"
            + (f", loss {float(loss):.3f}" if loss is not None else "")
            + f", {time.time() - self._begin:.0f} s")
    if out.isatty():
      out.write("\r" + text + ("\n" if self._step >= self.total_steps
                               else ""))
      out.flush()
    elif self._step * 4 >= self._next_mark * self.total_steps:
      out.write(text + "\n")
      out.flush()
      self._next_mark += 1
