"""Tracing cost: autograph is off for dis_tf's graph code, and each training
phase traces its train function once.

The graph code branches on tensors only through `tf.cond` / `tf.while_loop`,
so autograph's source rewriting of it (Keras traces `train_step` with
autograph on; `tf.function` defaults to it) bought nothing and cost trace
time: measured on 2026-12-07, a tiny-model export 16.5 -> 10.9 s, the test
suite's 16-step tool training 27-32 -> 23-24 s, the whole suite 17:40 ->
14:14. The spy tests fail if a dis_tf function is converted while a
training step, an evaluation pass or an export is traced.

The optimizer is built before `fit` (`dis_tf.training`): left to the first
step, its variables were created inside the train function's first trace,
and `tf.function` traced every phase twice. Same weights, bit for bit; the
16-step tool training 21.4 -> 17.0 s.
"""

import collections

import keras
import pytest
# Private, but the one place autograph converts a function (TensorFlow is
# pinned in requirements.txt).
from tensorflow.python.autograph.impl import api as autograph_api

from dis_tf import evaluation
from dis_tf import training
from dis_tf.modeling import dis_model
from dis_tf.serving import export_lib


@pytest.fixture()
def converted(monkeypatch):
  """The dis_tf functions autograph converts while the fixture is active."""
  names = collections.Counter()
  original = autograph_api._convert_actual  # pylint: disable=protected-access

  def spy(entity, program_ctx):
    module = getattr(entity, "__module__", "") or ""
    if module.startswith("dis_tf"):
      names[f"{module}.{getattr(entity, '__qualname__', entity)}"] += 1
    return original(entity, program_ctx)
  monkeypatch.setattr(autograph_api, "_convert_actual", spy)
  return names


def test_the_spy_sees_a_converted_function(converted):
  # The check below can fail: a plain tf.function over a dis_tf function
  # is converted and seen.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dis_tf import image_ops  # pylint: disable=g-import-not-at-top
  tf.function(image_ops.normalize_image)(tf.zeros([1, 8, 8, 3]))
  assert any("normalize_image" in name for name in converted), converted


def test_a_stage2_training_step_converts_no_dis_tf_function(
    converted, tiny_config, tiny_model, dataset_fn):
  # Stage 2: the batch's second example is weak, so the step runs the latent
  # loop (module functions autograph converts; the model's own methods it
  # leaves alone, so a phase-a step would pass with autograph on).
  model = tiny_model()
  model.set_phase("semi")
  model.compile(keras.optimizers.Adam(1e-3))
  batch = next(iter(dataset_fn(tiny_config(crop_size=32), "semi")))
  model.train_on_batch(batch)
  assert not converted, dict(converted)


def test_evaluation_converts_no_dis_tf_function(converted, tiny_model,
                                                eval_examples):
  model = tiny_model()
  evaluation.predict(model, eval_examples()[0]["image"], t_tests=(0, 2))
  assert not converted, dict(converted)


def test_an_export_converts_no_dis_tf_function(converted, tiny_run,
                                               tmp_path):
  tiny_run(str(tmp_path / "run"))
  export_lib.export_from_model_dir(str(tmp_path / "run"),
                                   str(tmp_path / "models"),
                                   overrides={"latent.t_test": 1})
  assert not converted, dict(converted)


def test_each_phase_traces_its_train_function_once(monkeypatch, tiny_config,
                                                   dataset_fn, tmp_path):
  traced = []
  original = dis_model.DISModel.train_step

  def counting(self, data):
    traced.append(self.phase)  # Python runs only while tracing.
    return original(self, data)
  monkeypatch.setattr(dis_model.DISModel, "train_step", counting)
  config = tiny_config(tmp_path / "run")
  config.train.tensorboard_images = False
  training.train(config, "all", dataset_fn=dataset_fn, verbose=0)
  assert traced == ["a", "b", "c", "semi"]
