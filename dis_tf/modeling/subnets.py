"""The three DIS subnets and the tag refinement (paper Sec. 2.1, Fig. 3).

Subnet-1 and subnet-3 are kept strictly linear in (u1, v1): the latent
inference relies on it (issue: Gram-operator latent steps).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="dis_tf")
class Subnet1(keras.layers.Layer):
  """Labelmap prediction: u2 = u1 + up(v1), u3 = conv3x3(u2).

  Args:
    num_classes: channels of u3 (class logits).
    kernel_initializer: initializer of the 3x3 convolution (the paper
      samples subnet weights from a normal distribution).
    **kwargs: forwarded to `keras.layers.Layer`.
  """

  def __init__(self, num_classes, kernel_initializer="he_normal", **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.conv = keras.layers.Conv2D(
        num_classes, 3, padding="same",
        kernel_initializer=self.kernel_initializer, name="subnet1_conv",
    )

  def build(self, u1_shape, v1_shape=None):
    self.conv.build(u1_shape)

  def call(self, u1, v1):
    # up(v1): the image-level vector concatenated into a map, then summed.
    u2 = u1 + v1[:, None, None, :]
    return self.conv(u2)

  def compute_output_shape(self, u1_shape, v1_shape=None):
    return tuple(u1_shape[:-1]) + (self.num_classes,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "kernel_initializer": keras.initializers.serialize(
            self.kernel_initializer
        ),
    })
    return config


@keras.saving.register_keras_serializable(package="dis_tf")
class Subnet2(keras.layers.Layer):
  """Image reconstruction z3 from the labelmap (three convolutions).

  The paper sizes the kernels 21x5x5x21, 21x3x3x16 and 16x3x3x3. The input is
  softmax(u3), so the reconstruction depends on the labelmap and not on the
  scale of the logits: a departure from the paper (RESULTS.md, departures).

  Args:
    num_classes: channels of u3.
    hidden_channels: channels of the second convolution (16 in the paper).
    image_channels: channels of z3 (3, RGB).
    **kwargs: forwarded to `keras.layers.Layer`.
  """

  def __init__(self, num_classes, hidden_channels=16, image_channels=3,
               **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.hidden_channels = hidden_channels
    self.image_channels = image_channels
    self.conv1 = keras.layers.Conv2D(
        num_classes, 5, padding="same", activation="relu", name="subnet2_conv1"
    )
    self.conv2 = keras.layers.Conv2D(
        hidden_channels, 3, padding="same", activation="relu",
        name="subnet2_conv2",
    )
    self.conv3 = keras.layers.Conv2D(
        image_channels, 3, padding="same", name="subnet2_conv3"
    )

  def build(self, u3_shape):
    self.conv1.build(u3_shape)
    shape = tuple(u3_shape[:-1])
    self.conv2.build(shape + (self.num_classes,))
    self.conv3.build(shape + (self.hidden_channels,))

  def call(self, u3):
    x = tf.nn.softmax(u3, axis=-1)
    return self.conv3(self.conv2(self.conv1(x)))

  def compute_output_shape(self, u3_shape):
    return tuple(u3_shape[:-1]) + (self.image_channels,)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "hidden_channels": self.hidden_channels,
        "image_channels": self.image_channels,
    })
    return config


@keras.saving.register_keras_serializable(package="dis_tf")
class Subnet3(keras.layers.Layer):
  """Tag classification: v2 = avgpool(u1) + v1, v3 = dense(v2).

  Args:
    num_classes: length of v3 (tag logits; index 0 is background).
    kernel_initializer: initializer of the projection.
    **kwargs: forwarded to `keras.layers.Layer`.
  """

  def __init__(self, num_classes, kernel_initializer="glorot_uniform",
               **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.dense = keras.layers.Dense(
        num_classes, kernel_initializer=self.kernel_initializer,
        name="subnet3_dense",
    )

  def build(self, u1_shape, v1_shape=None):
    self.dense.build((u1_shape[0], u1_shape[-1]))

  def call(self, u1, v1):
    v2 = tf.reduce_mean(u1, axis=[1, 2]) + v1
    return self.dense(v2)

  def compute_output_shape(self, u1_shape, v1_shape=None):
    return (u1_shape[0], self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_classes": self.num_classes,
        "kernel_initializer": keras.initializers.serialize(
            self.kernel_initializer
        ),
    })
    return config


def refine_labelmap(u3, v3, bias=0.0):
  """Tag refinement of the labelmap ("v3 convolved on u3", paper Sec. 2.1).

  The class probabilities softmax(u3) are scaled channel-wise (a 1x1
  convolution with a per-image kernel) by sigmoid(v3 + bias), with the
  background scale fixed at 1 because background is always present, and
  renormalised. `bias` = 0 is the paper's refinement; a positive bias
  shrinks the refinement towards none (a calibration of a tag classifier
  whose recall is low: the refinement otherwise pushes the objects it
  misses into background); None is no refinement, softmax(u3) itself.
  Which one serves is chosen on the selection split (`dis_tf.selection`).

  Args:
    u3: [B, h, w, C] labelmap logits.
    v3: [B, C] tag logits.
    bias: added to v3 before the sigmoid; None: no refinement.

  Returns:
    [B, h, w, C] refined class probabilities (sum to 1 over C).
  """
  if bias is None:
    return tf.nn.softmax(u3, axis=-1)
  # probs * scale / sum == softmax(log_softmax(u3) + log(scale)); in log
  # space the product cannot underflow to an all-zero pixel when the latent
  # steps drive the logits far apart.
  log_scale = tf.math.log_sigmoid(v3 + tf.cast(bias, v3.dtype))
  log_scale = tf.concat([tf.zeros_like(log_scale[:, :1]), log_scale[:, 1:]],
                        axis=-1)
  return tf.nn.softmax(tf.nn.log_softmax(u3, axis=-1)
                       + log_scale[:, None, None, :], axis=-1)


def refinement_name(refinement):
  """"off", "paper" or "bias=b": the name of a `tag_refinement` value."""
  if refinement is None:
    return "off"
  if float(refinement) == 0.0:
    return "paper"
  return f"bias={float(refinement):g}"


def parse_refinement(name):
  """The `tag_refinement` value of a `refinement_name` (inverse)."""
  if name == "off":
    return None
  if name == "paper":
    return 0.0
  if isinstance(name, str) and name.startswith("bias="):
    try:
      return float(name[len("bias="):])
    except ValueError:
      pass
  raise ValueError(f"Unknown tag refinement {name!r}; expected 'off', "
                   "'paper' or 'bias=<number>'.")
