"""Every use of private Keras API in dis_tf, in one place (keras 3.15.1).

The rest of dis_tf uses public Keras API only. What is here works around two
bugs of `Model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` in
keras 3.15.1 (see `adapt_for_multi_worker`), which no public API can avoid.

`tests/test_keras_compat.py` compares the source of the Keras internals
these workarounds depend on with their keras 3.15.1 source (`INTERNALS`) and
fails, naming what changed, after a Keras upgrade that touches them: then
check whether the bugs are fixed (run tests/test_reliability_distributed.py
without the workaround), and update or remove this module.
"""

import hashlib
import importlib
import inspect

import tensorflow as tf

KERAS_VERSION = "3.15.1"

# "module:qualified name" -> sha256 (first 16 hex digits) of its source in
# keras 3.15.1: the internals `adapt_for_multi_worker` relies on.
INTERNALS = {
    # Replaced on the model instance (bug 1).
    "keras.src.backend.tensorflow.trainer:"
    "TensorFlowTrainer._maybe_symbolic_build": "92a504f5eba9b29f",
    # Called instead, with a local batch (bug 1).
    "keras.src.trainers.trainer:Trainer._symbolic_build": "96220cc3b88fe768",
    # Reduces the step logs with MEAN over axis 0 (bug 2).
    "keras.src.backend.tensorflow.trainer:reduce_per_replica":
        "2e7d54b1e6edc29a",
}


def source_hash(obj):
  """sha256 (first 16 hex digits) of an object's source code."""
  return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def changed_internals():
  """The `INTERNALS` whose source differs from keras 3.15.1's (or is gone).

  Returns:
    A list of "name: what changed" strings; empty if all are unchanged.
  """
  changed = []
  for name, expected in INTERNALS.items():
    module_name, _, qualname = name.partition(":")
    try:
      obj = importlib.import_module(module_name)
      for part in qualname.split("."):
        obj = getattr(obj, part)
      found = source_hash(obj)
    except (ImportError, AttributeError, OSError, TypeError) as e:
      changed.append(f"{name}: not found ({e})")
      continue
    if found != expected:
      changed.append(f"{name}: source hash {found}, keras "
                     f"{KERAS_VERSION} had {expected}")
  return changed


def adapt_for_multi_worker(model, strategy, batch):
  """Works around two keras 3.15.1 `fit` bugs with MultiWorkerMirroredStrategy.

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

  Args:
    model: a compiled `DISModel` (changed in place).
    strategy: the `MultiWorkerMirroredStrategy`.
    batch: one local (not distributed) training batch.
  """
  def build(iterator=None, data_batch=None):
    del iterator, data_batch
    with strategy.scope():
      model._symbolic_build(data_batch=batch)
  model._maybe_symbolic_build = build
  train_step = type(model).train_step.__get__(model)
  model.train_step = lambda data: {
      k: tf.reshape(v, [1]) for k, v in train_step(data).items()}
