"""Backbones: shapes, dilation, weight shapes and by-name weight transfer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf.modeling import backbones


def _nested_resnet(backbone):
  return [layer for layer in backbone.layers
          if isinstance(layer, keras.Model)][0]


def test_tiny_backbone_shapes():
  backbone = backbones.build_backbone("tiny", tiny_width=32)
  u1, v1 = backbone(np.zeros((2, 65, 64, 3), np.float32))
  assert u1.shape == (2, 9, 8, 32)
  assert v1.shape == (2, 32)
  np.testing.assert_allclose(v1, tf.reduce_mean(u1, axis=[1, 2]), atol=1e-6)


def test_tiny_backbone_refuses_pretrained_weights():
  with pytest.raises(ValueError, match="tiny backbone"):
    backbones.build_backbone("tiny", weights="imagenet")


def test_unknown_backbone_is_an_error():
  with pytest.raises(ValueError, match="resnet34"):
    backbones.build_backbone("resnet34")


def test_resnet50_dilated_shapes_and_weight_shapes():
  backbone = backbones.build_backbone("resnet50")
  u1, v1 = backbone(np.zeros((1, 97, 97, 3), np.float32))
  assert u1.shape == (1, 13, 13, 2048)
  assert v1.shape == (1, 2048)
  original = keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(None, None, 3))
  resnet = _nested_resnet(backbone)
  for layer in original.layers:
    if not layer.weights:
      continue  # The cloned input layer has a new name; it has no weights.
    converted = resnet.get_layer(layer.name)
    assert [w.shape for w in converted.weights] == [
        w.shape for w in layer.weights], layer.name
  # Output stride 8: conv4 and conv5 at stride 1 with dilation 2 and 4.
  assert resnet.get_layer("conv4_block1_1_conv").strides == (1, 1)
  assert resnet.get_layer("conv5_block1_0_conv").strides == (1, 1)
  assert resnet.get_layer("conv3_block1_1_conv").strides == (2, 2)
  assert resnet.get_layer("conv4_block3_2_conv").dilation_rate == (2, 2)
  assert resnet.get_layer("conv5_block2_2_conv").dilation_rate == (4, 4)
  assert resnet.get_layer("conv3_block2_2_conv").dilation_rate == (1, 1)


def test_resnet_batchnorm_frozen_by_default_and_inference_mode():
  backbone = backbones.build_backbone("resnet50")
  bns = [layer for layer in _nested_resnet(backbone).layers
         if isinstance(layer, keras.layers.BatchNormalization)]
  assert bns and not any(layer.trainable for layer in bns)
  image = np.random.RandomState(0).randn(2, 33, 33, 3).astype(np.float32)
  # Frozen batch norm uses moving statistics even when training=True.
  np.testing.assert_allclose(backbone(image, training=True)[0],
                             backbone(image, training=False)[0], atol=1e-5)
  tunable = backbones.build_backbone("resnet50", train_batchnorm=True)
  assert all(layer.trainable for layer in _nested_resnet(tunable).layers
             if isinstance(layer, keras.layers.BatchNormalization))


def test_weights_file_is_transferred_by_layer_name(tmp_path):
  original = keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(None, None, 3))
  path = str(tmp_path / "resnet50_notop.weights.h5")
  original.save_weights(path)
  backbone = backbones.build_backbone("resnet50", weights=path)
  resnet = _nested_resnet(backbone)
  for name in ("conv1_conv", "conv4_block1_0_conv", "conv5_block3_3_bn"):
    for expected, got in zip(original.get_layer(name).get_weights(),
                             resnet.get_layer(name).get_weights()):
      np.testing.assert_array_equal(expected, got)


@pytest.mark.slow
def test_resnet101_at_353_gives_the_papers_u1():
  backbone = backbones.build_backbone("resnet101", weights=None)
  u1, v1 = backbone(np.zeros((1, 353, 353, 3), np.float32))
  assert u1.shape == (1, 45, 45, 2048)
  assert v1.shape == (1, 2048)
  original = keras.applications.ResNet101(
      include_top=False, weights=None, input_shape=(None, None, 3))
  assert sorted(tuple(w.shape) for w in original.weights) == sorted(
      tuple(w.shape) for w in backbone.weights)
