"""Batch norm folded into the convolution before it, for inference graphs.

In inference mode a batch-norm layer is the fixed per-channel affine map
x -> gamma * (x - mean) / sqrt(variance + epsilon) + beta. After a
convolution with a linear activation whose only consumer it is, that map is
absorbed exactly into the convolution's kernel and bias (the folding of
TF's `optimize_for_inference`, TFLite's converter and oneDNN's graph
passes):

  kernel' = kernel * s,  bias' = (bias - mean) * s + beta,
  s = gamma / sqrt(variance + epsilon).

Why here: under a mixed policy Keras computes every batch norm in float32
(`keras.layers.BatchNormalization` casts its input up and its output back),
so each of ResNet101's 104 batch norms adds two casts and two float32
passes over a feature map to the bfloat16 convolutions. Measured on a
2-core AMD EPYC with avx512_bf16 (dilated ResNet101, 353 x 353, batch 1,
median of 5 interleaved runs, random weights and statistics): the forward
took 0.480 s in float32 and 0.317 s in mixed_bfloat16 as built, 0.443 s
and 0.230 s folded; the float32 outputs of the two graphs differ by a
relative L2 of 1.3e-6. `bench/precision.py` times it in the served graph.

The serving module (`dis_tf.serving.module.DISServingModule`) runs the
folded graph; training and `dis_tf.evaluation` run the model as built.
"""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="dis_tf")
class FoldedBatchNorm(keras.layers.Layer):
  """The identity, standing where a batch norm folded into the convolution
  before it was (so the graph keeps the layer's name and wiring)."""

  def call(self, inputs, training=None, mask=None):
    del training, mask  # A batch norm's call arguments; nothing to do.
    return inputs


def _producer(layer):
  """The layer whose single output `layer` (called once) takes, or None."""
  if len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
    return None
  parents = layer._inbound_nodes[0].parent_nodes  # pylint: disable=protected-access
  return parents[0].operation if len(parents) == 1 else None


def foldable_pairs(model):
  """{batch-norm layer name: convolution name} of `model`'s foldable pairs.

  A pair is foldable when the batch norm normalises the last (channel)
  axis of a `keras.layers.Conv2D` (channels last, linear activation, called
  once) whose output nothing else reads. Nested models are not searched.

  Args:
    model: a functional `keras.Model`.

  Returns:
    dict.
  """
  pairs = {}
  for layer in model.layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    conv = _producer(layer)
    if (type(conv) is not keras.layers.Conv2D  # Not its subclasses.
        or conv.data_format != "channels_last"
        or conv.get_config()["activation"] != "linear"
        or len(conv._inbound_nodes) != 1  # pylint: disable=protected-access
        # The convolution's output read by the batch norm alone: otherwise
        # its other readers would see the normalised map.
        or len(conv._outbound_nodes) != 1  # pylint: disable=protected-access
        or layer.axis not in (-1, 3)):
      continue
    pairs[layer.name] = conv.name
  return pairs


def _folded_weights(conv, bn):
  """The (kernel, bias) of `conv` followed by `bn` in inference mode."""
  kernel = np.asarray(conv.kernel, np.float64)
  bias = (np.asarray(conv.bias, np.float64) if conv.use_bias
          else np.zeros(kernel.shape[-1]))
  gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
  beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
  scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64)
                          + bn.epsilon)
  mean = np.asarray(bn.moving_mean, np.float64)
  return ((kernel * scale).astype(np.float32),
          ((bias - mean) * scale + beta).astype(np.float32))


def fold_batchnorm(model):
  """A copy of `model` with every foldable batch norm folded (see module).

  Nested functional models are folded too. The copy computes what `model`
  computes in inference mode (`training=False`), up to float rounding; it
  is for inference only (the folded statistics no longer train).

  Args:
    model: a functional `keras.Model` (e.g. a `dis_tf.modeling.backbones`
      backbone).

  Returns:
    The folded copy, or `model` itself when nothing in it folds.
  """
  pairs = foldable_pairs(model)
  folded_nested = {}
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      folded = fold_batchnorm(layer)
      if folded is not layer:
        folded_nested[layer.name] = folded
  if not pairs and not folded_nested:
    return model
  convs = {conv: bn for bn, conv in pairs.items()}

  def clone(layer):
    if layer.name in folded_nested:
      return folded_nested[layer.name]
    if layer.name in pairs:
      return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy.name)
    config = layer.get_config()
    if layer.name in convs:
      config["use_bias"] = True
    return layer.__class__.from_config(config)

  copy = keras.models.clone_model(model, clone_function=clone)
  for layer in model.layers:
    if layer.name in pairs or layer.name in folded_nested or not layer.weights:
      continue
    target = copy.get_layer(layer.name)
    if layer.name in convs:
      target.set_weights(list(_folded_weights(
          layer, model.get_layer(convs[layer.name]))))
    else:
      target.set_weights(layer.get_weights())
  return copy
