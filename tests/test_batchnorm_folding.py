"""Batch norm folded into convolutions for the served graph
(`dis_tf.modeling.batchnorm_folding`, `DISModel.for_inference`)."""

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from dis_tf import image_ops
from dis_tf.modeling import backbones
from dis_tf.modeling import batchnorm_folding
from dis_tf.modeling import dis_model
from dis_tf.modeling import gram as gram_lib
from dis_tf.serving import export_lib
from test_export import _FORBIDDEN_OPS, _graph_ops, _load_in_fresh_process

SIZE = 64


def _randomise_batchnorm(model, seed=0):
  """Statistics far from the identity, so a wrong fold shows."""
  rng = np.random.default_rng(seed)
  for layer in dis_model._all_layers(model):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.set_weights([
          rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if "variance" in
          w.name else rng.normal(0, 0.5, w.shape).astype(np.float32)
          for w in layer.weights])


def _count_batchnorm(model):
  return sum(isinstance(layer, keras.layers.BatchNormalization)
             for layer in dis_model._all_layers(model))  # pylint: disable=protected-access


def _small_model():
  """Foldable pairs (with and without a conv bias, a BN without beta) and
  three that must not fold: after a ReLU conv, after a conv whose output
  a skip connection also reads, and after a non-convolution."""
  image = keras.Input((None, None, 3), name="image")
  x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False,
                          name="fold_a_conv")(image)
  x = keras.layers.BatchNormalization(name="fold_a_bn")(x)
  x = keras.layers.ReLU(name="relu_a")(x)
  x = keras.layers.Conv2D(8, 3, strides=2, padding="same",
                          name="fold_b_conv")(x)
  x = keras.layers.BatchNormalization(center=False, name="fold_b_bn")(x)
  y = keras.layers.Conv2D(8, 1, activation="relu", name="relu_conv")(x)
  y = keras.layers.BatchNormalization(name="after_relu_bn")(y)
  z = keras.layers.Conv2D(8, 3, padding="same", name="shared_conv")(y)
  skip = keras.layers.BatchNormalization(name="shared_bn")(z)
  z = keras.layers.Add(name="skip_add")([skip, z])
  z = keras.layers.BatchNormalization(name="after_add_bn")(z)
  return keras.Model(image, z, name="small")


def test_fold_keeps_the_inference_output_and_folds_only_safe_pairs():
  model = _small_model()
  _randomise_batchnorm(model)
  assert batchnorm_folding.foldable_pairs(model) == {
      "fold_a_bn": "fold_a_conv", "fold_b_bn": "fold_b_conv"}
  folded = batchnorm_folding.fold_batchnorm(model)
  assert _count_batchnorm(folded) == 3
  assert folded.get_layer("fold_a_conv").use_bias
  x = np.random.default_rng(1).normal(size=(2, 20, 24, 3)).astype(np.float32)
  # The unfolded model in inference mode is the reference: a fold of a
  # pair outside the rule (a ReLU conv, a shared conv output) or a wrong
  # formula changes this output.
  np.testing.assert_allclose(folded(x, training=False),
                             model(x, training=False), rtol=1e-4, atol=1e-4)


def test_folded_weights_match_numpy():
  model = _small_model()
  _randomise_batchnorm(model)
  folded = batchnorm_folding.fold_batchnorm(model)
  conv, bn = model.get_layer("fold_b_conv"), model.get_layer("fold_b_bn")
  kernel, bias = conv.get_weights()
  gamma, mean, variance = bn.get_weights()  # center=False: no beta.
  scale = gamma / np.sqrt(variance + bn.epsilon)
  got_kernel, got_bias = folded.get_layer("fold_b_conv").get_weights()
  np.testing.assert_allclose(got_kernel, kernel * scale, rtol=1e-6)
  np.testing.assert_allclose(got_bias, (bias - mean) * scale, rtol=1e-5,
                             atol=1e-6)


def test_model_without_batchnorm_is_returned_as_is():
  backbone = backbones.build_backbone("tiny", tiny_width=16)
  assert batchnorm_folding.fold_batchnorm(backbone) is backbone
  model = dis_model.DISModel(backbone, num_classes=5)
  assert model.for_inference() is model


def test_resnet50_folds_every_batchnorm_and_keeps_u1():
  backbone = backbones.build_backbone("resnet50")
  _randomise_batchnorm(backbone)
  folded = batchnorm_folding.fold_batchnorm(backbone)
  assert _count_batchnorm(backbone) == 53
  assert _count_batchnorm(folded) == 0
  x = np.random.default_rng(2).normal(size=(1, 48, 40, 3)).astype(np.float32)
  u1, v1 = backbone(x, training=False)
  got_u1, got_v1 = folded(x, training=False)
  assert float(tf.norm(got_u1 - u1) / tf.norm(u1)) < 1e-5
  assert float(tf.norm(got_v1 - v1) / tf.norm(v1)) < 1e-5


def _bn_dis_model():
  """A DISModel whose (output stride 8) backbone has batch norm."""
  image = keras.Input((None, None, 3), name="image")
  x = image
  for i in range(3):
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                            name=f"bn_backbone_conv{i}")(x)
    x = keras.layers.BatchNormalization(name=f"bn_backbone_bn{i}")(x)
    x = keras.layers.ReLU(name=f"bn_backbone_relu{i}")(x)
  v1 = keras.layers.GlobalAveragePooling2D(name="v1_pool")(x)
  backbone = keras.Model(image, [x, v1], name="bn_backbone")
  _randomise_batchnorm(backbone)
  return dis_model.DISModel(backbone, num_classes=5, eval_crop_size=SIZE,
                            latent_update="u1", tag_refinement=2.0)


def test_for_inference_copy_has_the_settings_and_the_outputs():
  model = _bn_dis_model()
  copy = model.for_inference()
  assert copy is not model and _count_batchnorm(copy.backbone) == 0
  settings = dict(model.get_config(), backbone=None)
  assert dict(copy.get_config(), backbone=None) == settings
  x = np.random.default_rng(3).normal(size=(1, SIZE, SIZE, 3))
  x = tf.constant(x, tf.float32)
  ref, got = model.infer(x, steps=3), copy.infer(x, steps=3)
  for key in ("probabilities", "tag_probabilities"):
    np.testing.assert_allclose(got[key], ref[key], atol=1e-5)


def test_export_serves_the_folded_graph_with_the_models_output(tmp_path):
  """The SavedModel holds the folded weights (no batch-norm statistics)
  and serves what the unfolded model computes."""
  model = _bn_dis_model()
  path = export_lib.export_saved_model(model, str(tmp_path), t_test=2,
                                       input_size=SIZE, warmup=False)
  saved = [name for name, _ in tf.train.list_variables(
      os.path.join(path, "variables", "variables"))
           if name.endswith("VARIABLE_VALUE")]
  assert len(saved) == (len(model.for_inference().weights)
                        + len(gram_lib.GramOperator.FIELDS))
  assert len(saved) < len(model.weights) + len(gram_lib.GramOperator.FIELDS)
  image = np.random.default_rng(4).integers(0, 256, (1, SIZE, SIZE, 3))
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["predict_images"](
      images=tf.constant(image, tf.uint8))
  canvas = image_ops.normalize_image(tf.constant(image, tf.float32))
  ref = model.infer(canvas, steps=2)
  np.testing.assert_allclose(out["probabilities"], ref["probabilities"],
                             atol=1e-5)


def test_folded_batchnorm_layer_config_round_trip():
  layer = batchnorm_folding.FoldedBatchNorm(name="x_bn",
                                            dtype="mixed_bfloat16")
  clone = batchnorm_folding.FoldedBatchNorm.from_config(layer.get_config())
  assert clone.name == "x_bn"
  assert clone.dtype_policy.name == "mixed_bfloat16"
  x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
  np.testing.assert_array_equal(clone(x), x)


def test_bfloat16_folded_export_has_core_ops_and_loads_in_tf1(tmp_path):
  """The folded graph under mixed_bfloat16: core ops only, none of the
  batch norm's (its Rsqrt; the unfolded export has one), and the TF1
  `Session` loader in a fresh process without dis_tf gives the TF2
  loader's labelmaps."""
  path = export_lib.export_saved_model(
      _bn_dis_model(), str(tmp_path / "export"), t_test=2, input_size=SIZE,
      warmup=False, precision="mixed_bfloat16")
  ops, _, _ = _graph_ops(path)
  assert "Conv2D" in ops and "Rsqrt" not in ops
  assert not [op for op in ops if op_def_registry.get(op) is None]
  assert not [op for op in ops
              if op in _FORBIDDEN_OPS or op.startswith(("Xla", "_Xla"))]
  rng = np.random.default_rng(5)
  images = [tf.io.encode_png(rng.integers(0, 256, (h, w, 3)).astype(
      np.uint8)).numpy() for h, w in ((50, 70), (64, 40))]
  inputs = str(tmp_path / "inputs.npz")
  np.savez(inputs, images=np.array(images, dtype=object),
           tensor=rng.integers(0, 256, (2, 48, 56, 3)).astype(np.uint8))
  results = _load_in_fresh_process(path, inputs, tmp_path)
  for name in ("serving_default", "serving_steps", "predict_images",
               "predict_images_float"):
    np.testing.assert_array_equal(results[f"v1/{name}/class_ids"],
                                  results[f"v2/{name}/class_ids"])
