"""Backbones that map an image to (u1, v1) (paper Sec. 2.1, Fig. 3).

`u1` is the last-stage feature map at output stride 8 and `v1` its global
average. The ResNets are the keras.applications models converted to the
dilated DeepLab form: conv4_x runs at stride 1 with dilation 2 and conv5_x at
stride 1 with dilation 4, so a 353x353 crop gives the paper's 45x45x2048 u1.
Only strides and dilation rates change; every weight keeps its shape, so
ImageNet weights load into the dilated network by layer name.
"""

import keras
import tensorflow as tf

from dis_tf import image_ops

BACKBONES = ("tiny", "resnet50", "resnet101")

# keras.applications constructors for the ResNets.
_RESNETS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
}
# Stage -> dilation rate of its 3x3 convolutions in the output-stride-8 form.
_DILATED_STAGES = {"conv4": 2, "conv5": 4}


@keras.saving.register_keras_serializable(package="dis_tf")
class CaffePreprocess(keras.layers.Layer):
  """Converts the dis_tf normalisation to the Keras ResNet ("caffe") input.

  dis_tf feeds every network the same ImageNet mean/stddev normalised RGB
  image (the reconstruction target uses it too). keras.applications ResNet
  weights expect BGR in 0..255 minus the ImageNet mean; this fixed affine map
  bridges the two without a Lambda layer (Lambda is refused by safe_mode).
  """

  def call(self, inputs):
    rgb = image_ops.denormalize_image(inputs)
    bgr = tf.reverse(rgb, axis=[-1])
    return bgr - tf.constant([103.939, 116.779, 123.68])


def _dilate_layer(layer):
  """clone_model hook: stride 1 + dilation in conv4_x / conv5_x."""
  config = layer.get_config()
  stage = layer.name.split("_")[0]
  if isinstance(layer, keras.layers.Conv2D) and stage in _DILATED_STAGES:
    if tuple(config["strides"]) != (1, 1):
      # The stride-2 1x1 convs of block1 (main path and shortcut).
      config["strides"] = (1, 1)
    if tuple(config["kernel_size"]) == (3, 3):
      config["dilation_rate"] = (_DILATED_STAGES[stage],) * 2
  return layer.__class__.from_config(config)


def _freeze_batchnorm(model):
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.trainable = False


def build_dilated_resnet(name="resnet101", weights=None, train_batchnorm=False):
  """Builds a dilated (output stride 8) ResNet from keras.applications.

  Args:
    name: "resnet50" or "resnet101".
    weights: None, "imagenet" (ordinary Keras download) or a path to the
      weights file of the undilated `include_top=False` keras.applications
      model.
    train_batchnorm: if False (default), batch-norm layers are frozen and run
      in inference mode.

  Returns:
    A functional `keras.Model` named `name` mapping a normalised image
    [B, H, W, 3] to [u1, v1] with u1 [B, ceil(H/8), ceil(W/8), 2048] and
    v1 [B, 2048].
  """
  if name not in _RESNETS:
    raise ValueError(f"Unknown ResNet '{name}'; expected one of "
                     f"{sorted(_RESNETS)}.")
  original = _RESNETS[name](
      include_top=False, weights=weights, input_shape=(None, None, 3)
  )
  dilated = keras.models.clone_model(original, clone_function=_dilate_layer)
  # Transfer by name: clone_model gives the input layer a fresh name, so list
  # positions are not a safe key.
  for layer in original.layers:
    if layer.weights:
      dilated.get_layer(layer.name).set_weights(layer.get_weights())

  image = keras.Input(shape=(None, None, 3), name="image")
  x = CaffePreprocess(name="caffe_preprocess")(image)
  u1 = dilated(x)
  v1 = keras.layers.GlobalAveragePooling2D(name="v1_pool")(u1)
  backbone = keras.Model(image, [u1, v1], name=f"{name}_backbone")
  if not train_batchnorm:
    _freeze_batchnorm(dilated)
  return backbone


def build_tiny_backbone(width=64):
  """A small output-stride-8 CNN for CPU runs and tests.

  Three stride-2 convolutions ('same' padding, so sizes round up like the
  ResNets) and one dilated convolution; no batch norm, so frozen statistics
  are never an issue when it trains from scratch.

  Args:
    width: channels of u1.

  Returns:
    A functional `keras.Model` mapping an image to [u1, v1].
  """
  image = keras.Input(shape=(None, None, 3), name="image")
  x = keras.layers.Conv2D(
      16, 3, strides=2, padding="same", activation="relu", name="tiny_conv1"
  )(image)
  x = keras.layers.Conv2D(
      32, 3, strides=2, padding="same", activation="relu", name="tiny_conv2"
  )(x)
  x = keras.layers.Conv2D(
      width, 3, strides=2, padding="same", activation="relu", name="tiny_conv3"
  )(x)
  u1 = keras.layers.Conv2D(
      width, 3, dilation_rate=2, padding="same", activation="relu",
      name="tiny_conv4",
  )(x)
  v1 = keras.layers.GlobalAveragePooling2D(name="v1_pool")(u1)
  return keras.Model(image, [u1, v1], name="tiny_backbone")


def build_backbone(name, weights=None, tiny_width=64, train_batchnorm=False):
  """Builds the backbone called `name` ("tiny", "resnet50", "resnet101").

  Args:
    name: backbone name.
    weights: ResNets only: None, "imagenet" or a weights-file path.
    tiny_width: u1 channels of the tiny backbone.
    train_batchnorm: ResNets only: fine-tune batch norm.

  Returns:
    A functional `keras.Model` mapping an image to [u1, v1].
  """
  if name == "tiny":
    if weights is not None:
      raise ValueError(
          f"--weights={weights!r} given for the tiny backbone, which has no "
          "pretrained weights; use weights=None."
      )
    return build_tiny_backbone(tiny_width)
  if name in _RESNETS:
    return build_dilated_resnet(name, weights, train_batchnorm)
  raise ValueError(f"Unknown backbone '{name}'; expected one of {BACKBONES}.")
