"""DISModel: the Dual Image Segmentation network and its two training stages.

A Keras 3 functional model (image -> labelmap logits u3, reconstruction z3,
tag logits v3; paper Fig. 3) with a custom `train_step` for

* stage 1, fully supervised, in the paper's three phases (Sec. 3):
  (a) backbone + subnet-1 + subnet-3 on L^map + L^tag,
  (b) subnet-2 alone on L^img, everything else frozen,
  (c) all four parts on all three losses;
* stage 2, semi-supervised (Sec. 3.1, Eq. 1): tag-only ("weak") images get
  pseudo labelmaps and cleaned tags from training-mode latent inference on
  the same backbone forward whose loss is then differentiated.

Size: over 450 lines because the Keras model, its two training stages' custom
train_step and the one inference path (`infer`) are one Keras class; the latent
loop is in latent.py and the heads in subnets.py.
"""

import keras
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf import losses
from dis_tf import metrics as dis_metrics
from dis_tf.classes import IGNORE_LABEL
from dis_tf.modeling import backbones as backbones_lib
from dis_tf.modeling import batchnorm_folding
from dis_tf.modeling.subnets import Subnet1, Subnet2, Subnet3

PHASES = ("a", "b", "c", "semi")

# Defaults of the model's arguments: those of the config dataclasses.
_MODEL = config_lib.ModelConfig
_LOSS = config_lib.LossConfig
_LATENT = config_lib.LatentConfig
_DATA = config_lib.DataConfig


@keras.saving.register_keras_serializable(package="dis_tf")
class DISModel(keras.Model):
  """The DIS network.

  Args:
    backbone: a `keras.Model` mapping a normalised image to [u1, v1] (see
      `dis_tf.modeling.backbones`).
    num_classes: labelmap classes, background included (21 for VOC).
    map_weight: weight of L^map.
    image_weight: weight of L^img.
    tag_weight: weight of L^tag.
    t_train: latent steps for the pseudo labels of weak images (stage 2).
    latent_step_size: step size of the latent gradient descent.
    latent_clip_norm: per-example gradient-norm clip of the latent steps.
    soft_pseudo_labels: use refined probabilities / tag probabilities as
      soft targets instead of argmax labels / thresholded tags.
    tag_threshold: threshold on sigmoid(v3) giving the cleaned tags.
    train_batchnorm: let phase changes make the backbone's batch-norm
      layers trainable (default False: frozen, inference mode).
    phase: initial training phase ("a", "b", "c" or "semi").
    latent_method: "gram" (default; exact and fast: the latent steps run on
      the 21-channel (u3, v3) with the Gram operator of subnet-1/3) or
      "direct" (the reference gradient tape on (u1, v1)); see
      `dis_tf.modeling.latent`.
    latent_update: in test mode (no tags), which latent blocks move and how
      their steps are scaled ("both", the paper; "u1"; "v1"; "per_pixel":
      v1's step divided by h * w); see `dis_tf.modeling.latent.block_scales`.
    latent_train_update: the same in training mode (tags given: stage-2
      pseudo labels, tag cleaning).
    latent_monotone: reject latent steps that raise the objective (and halve
      the step size after one); the paper takes every step.
    latent_jit_train_step: XLA-compile the latent step in the stage-2
      pseudo-label inference (`pseudo_targets`) only.
    tag_refinement: the test-mode final prediction (`LatentConfig`): None
      = argmax of softmax(u3), the default; a float b = the paper's tag
      refinement by sigmoid(v3 + b) (0 = the paper's, Sec. 2.1).
    eval_crop_size: the canvas side S of evaluation and serving (every
      image is fitted into S x S, `dis_tf.image_ops.fit_to_canvas`).
    precision: the Keras dtype policy of the backbone's layers ("float32",
      "mixed_bfloat16" or "mixed_float16"; `dis_tf.config.PRECISIONS`).
      Whatever it is, the backbone's output is cast to float32 and the
      subnets, u1 / v1, the latent objective, the Gram fields and the latent
      steps run in float32 (`features`).
    **kwargs: forwarded to `keras.Model` (e.g. `name`).
  """

  def __init__(self, backbone, num_classes=_MODEL.num_classes,
               map_weight=_LOSS.map_weight, image_weight=_LOSS.image_weight,
               tag_weight=_LOSS.tag_weight, t_train=_LATENT.t_train,
               latent_step_size=_LATENT.step_size,
               latent_clip_norm=_LATENT.clip_norm,
               soft_pseudo_labels=_LATENT.soft_pseudo_labels,
               tag_threshold=_LATENT.tag_threshold,
               train_batchnorm=_MODEL.train_batchnorm, phase="c",
               latent_method=_LATENT.method, latent_update=_LATENT.update,
               latent_train_update=_LATENT.train_update,
               latent_monotone=_LATENT.monotone,
               latent_jit_train_step=_LATENT.jit_train_step,
               tag_refinement=_LATENT.tag_refinement,
               eval_crop_size=_DATA.crop_size, precision=_MODEL.precision,
               **kwargs):
    _check_float32_policy(kwargs.get("dtype"))
    _set_backbone_precision(backbone, precision)
    image = keras.Input(shape=(None, None, 3), name="image")
    u1, v1 = (keras.ops.cast(x, "float32") for x in backbone(image))
    subnet1 = Subnet1(num_classes, name="subnet1", dtype="float32")
    subnet2 = Subnet2(num_classes, name="subnet2", dtype="float32")
    subnet3 = Subnet3(num_classes, name="subnet3", dtype="float32")
    u3 = subnet1(u1, v1)
    outputs = {
        "labelmap_logits": u3,
        "reconstruction": subnet2(u3),
        "tag_logits": subnet3(u1, v1),
    }
    kwargs.setdefault("name", "dis_model")
    super().__init__(inputs={"image": image}, outputs=outputs, **kwargs)

    self.backbone = backbone
    self.subnet1 = subnet1
    self.subnet2 = subnet2
    self.subnet3 = subnet3
    self.num_classes = num_classes
    self.train_batchnorm = train_batchnorm
    self.configure(map_weight=map_weight, image_weight=image_weight,
                   tag_weight=tag_weight, t_train=t_train,
                   latent_step_size=latent_step_size,
                   latent_clip_norm=latent_clip_norm,
                   soft_pseudo_labels=soft_pseudo_labels,
                   tag_threshold=tag_threshold, latent_method=latent_method,
                   latent_update=latent_update,
                   latent_train_update=latent_train_update,
                   latent_monotone=latent_monotone,
                   latent_jit_train_step=latent_jit_train_step,
                   tag_refinement=tag_refinement,
                   eval_crop_size=eval_crop_size, precision=precision)
    self.phase = None
    self.set_phase(phase)

    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.map_loss_tracker = keras.metrics.Mean(name="map_loss")
    self.image_loss_tracker = keras.metrics.Mean(name="image_loss")
    self.tag_loss_tracker = keras.metrics.Mean(name="tag_loss")
    self.pixel_accuracy = dis_metrics.PixelAccuracy(name="pixel_accuracy")
    self.mean_iou = dis_metrics.MeanIoU(num_classes, name="mean_iou")

  def configure(self, map_weight, image_weight, tag_weight, t_train,
                latent_step_size, latent_clip_norm, soft_pseudo_labels,
                tag_threshold, latent_method, latent_update=_LATENT.update,
                latent_train_update=_LATENT.train_update,
                latent_monotone=_LATENT.monotone,
                latent_jit_train_step=_LATENT.jit_train_step,
                tag_refinement=_LATENT.tag_refinement,
                eval_crop_size=_DATA.crop_size, precision=_MODEL.precision):
    """Sets the settings that do not change the weights (see Args above).

    A loaded model takes them from the run's config this way
    (`dis_tf.model_dir.load_trained_model`), so that an evaluation or an
    export can override, e.g., the latent step size or the precision.
    """
    self.set_precision(precision)
    if latent_method not in latent_lib.METHODS:
      raise ValueError(f"Unknown latent_method {latent_method!r}; expected "
                       f"one of {latent_lib.METHODS}.")
    self.map_weight = map_weight
    self.image_weight = image_weight
    self.tag_weight = tag_weight
    self.t_train = t_train
    self.latent_step_size = latent_step_size
    self.latent_clip_norm = latent_clip_norm
    self.soft_pseudo_labels = soft_pseudo_labels
    self.tag_threshold = tag_threshold
    self.latent_method = latent_method
    for name, value in (("latent_update", latent_update),
                        ("latent_train_update", latent_train_update)):
      if value not in latent_lib.UPDATES:
        raise ValueError(f"Unknown {name} {value!r}; expected one of "
                         f"{latent_lib.UPDATES}.")
    self.latent_update = latent_update
    self.latent_train_update = latent_train_update
    self.latent_monotone = bool(latent_monotone)
    self.latent_jit_train_step = bool(latent_jit_train_step)
    self.tag_refinement = (None if tag_refinement is None
                           else float(tag_refinement))
    if int(eval_crop_size) < 8:
      raise ValueError(f"eval_crop_size must be >= 8, got {eval_crop_size}.")
    self.eval_crop_size = int(eval_crop_size)

  def set_precision(self, precision):
    """Puts the backbone's layers under the dtype policy `precision` (one of
    `dis_tf.config.PRECISIONS`); the weights do not change (they stay
    float32), so a float32-trained model can run, or be exported, in
    "mixed_bfloat16"."""
    _set_backbone_precision(self.backbone, precision)
    self.precision = precision

  def for_inference(self):
    """This model with its backbone's batch norm folded into the
    convolutions (`dis_tf.modeling.batchnorm_folding`): the graph the
    serving module runs. The copy has this model's settings and weights and
    computes what `infer` computes, up to float rounding; it is not for
    training. Returns `self` when nothing folds (the tiny backbone)."""
    backbone = batchnorm_folding.fold_batchnorm(self.backbone)
    if backbone is self.backbone:
      return self
    copy = DISModel(**dict(self.get_config(), backbone=backbone))
    for name in ("subnet1", "subnet2", "subnet3"):
      getattr(copy, name).set_weights(getattr(self, name).get_weights())
    return copy

  # ---------------------------------------------------------------- phases
  def set_phase(self, phase):
    """Sets which parts train (paper Sec. 3); call `compile` afterwards.

    Phase "a": backbone, subnet-1, subnet-3. Phase "b": subnet-2 only.
    Phases "c" and "semi": all four parts. Backbone batch-norm layers stay
    frozen unless `train_batchnorm`.

    Args:
      phase: one of "a", "b", "c", "semi".
    """
    if phase not in PHASES:
      raise ValueError(f"Unknown phase {phase!r}; expected one of {PHASES}.")
    self.phase = phase
    self.backbone.trainable = phase != "b"
    self.subnet1.trainable = phase != "b"
    self.subnet3.trainable = phase != "b"
    self.subnet2.trainable = phase != "a"
    if not self.train_batchnorm:
      for layer in _all_layers(self.backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
          layer.trainable = False

  @property
  def loss_weights_for_phase(self):
    """(map, image, tag) weights of the total loss in the current phase."""
    if self.phase == "a":
      return self.map_weight, 0.0, self.tag_weight
    if self.phase == "b":
      return 0.0, self.image_weight, 0.0
    return self.map_weight, self.image_weight, self.tag_weight

  # --------------------------------------------------------------- forward
  def features(self, image, training=False):
    """The backbone once, its (u1, v1) cast to float32.

    The backbone computes in the dtype of `precision`; everything after it
    (subnets, latent loop, losses) sees float32 features.

    Args:
      image: [B, H, W, 3] normalised image.
      training: Keras training flag.

    Returns:
      (u1 [B, h, w, D], v1 [B, D]), float32.
    """
    u1, v1 = self.backbone(image, training=training)
    return tf.cast(u1, tf.float32), tf.cast(v1, tf.float32)

  def forward(self, image, training=False):
    """Runs the backbone once and the three subnets.

    Args:
      image: [B, H, W, 3] normalised image.
      training: Keras training flag.

    Returns:
      Dict with "u1", "v1", "labelmap_logits" (u3), "reconstruction" (z3),
      "tag_logits" (v3).
    """
    u1, v1 = self.features(image, training=training)
    u3 = self.subnet1(u1, v1)
    return {
        "u1": u1,
        "v1": v1,
        "labelmap_logits": u3,
        "reconstruction": self.subnet2(u3),
        "tag_logits": self.subnet3(u1, v1),
    }

  def infer(self, image, steps=0, tags=None, image_target=None,
            step_size=None, clip_norm=None, return_features=False,
            method=None, gram_fields=None, latent_fn=None):
    """DIS inference from an image: the one path (paper Sec. 2.1).

    The backbone runs once, the image target is the image area-downsampled
    to the feature size, then `steps` latent steps follow (by default in the
    fast, exact Gram form: see `dis_tf.modeling.latent`). Test mode without
    `tags`; training mode (tag cleaning) with them. Evaluation and every
    exported signature come through here.

    Args:
      image: [B, H, W, 3] normalised image.
      steps: latent steps: an int or scalar int tensor, or a [B] int tensor
        of per-example counts (the `serving_steps` signature).
      tags: optional [B, C] tags: training-mode inference.
      image_target: optional precomputed image target at feature size.
      step_size: defaults to the model's `latent_step_size`.
      clip_norm: defaults to the model's `latent_clip_norm`.
      return_features: also return the refined "u1", "v1" and the
        "image_target", from which `latent` can continue the descent.
      method: "gram" or "direct"; defaults to the model's `latent_method`.
      gram_fields: Gram kernels built earlier from the current weights (the
        export builds them once); None builds them per call.
      latent_fn: the latent loop, called like `latent` (default: `latent`;
        evaluation passes a compiled copy of it).

    Returns:
      The dict of `dis_tf.modeling.latent.latent_inference`.
    """
    u1, v1 = self.features(image)
    if image_target is None:
      image_target = image_ops.image_target(image, tf.shape(u1)[1:3])
    latent_fn = latent_fn or self.latent
    kwargs = dict(step_size=step_size, clip_norm=clip_norm,
                  return_features=return_features, method=method,
                  gram_fields=gram_fields)
    steps = tf.cast(steps, tf.int32)
    if steps.shape.rank == 0:
      result = latent_fn(u1, v1, image_target, tags=tags, steps=steps,
                         **kwargs)
    else:
      result = _latent_per_example(latent_fn, u1, v1, image_target, tags,
                                   steps, self.num_classes, **kwargs)
    if return_features:
      result["image_target"] = image_target
    return result

  def latent(self, u1, v1, image_target, tags=None, steps=0, step_size=None,
             clip_norm=None, return_features=False, method=None,
             gram_fields=None, update=None, monotone=None, jit_step=False):
    """`dis_tf.modeling.latent.latent_inference` with this model's settings.

    Training (stage-2 pseudo labels), evaluation, tag cleaning and every
    exported signature come through here, so they all use `latent_method`
    ("gram", the fast exact path, unless the model was built otherwise);
    `method` overrides it for one call. `gram_fields` are Gram kernels
    built earlier from the current weights (the export keeps them).
    `update` overrides `latent_update` (test mode) or
    `latent_train_update` (tags given) and `monotone` overrides
    `latent_monotone`, for one call.
    """
    return latent_lib.latent_inference(
        self, u1, v1, image_target, tags=tags, steps=steps,
        step_size=self.latent_step_size if step_size is None else step_size,
        clip_norm=self.latent_clip_norm if clip_norm is None else clip_norm,
        image_weight=self.image_weight, tag_weight=self.tag_weight,
        return_features=return_features,
        method=self.latent_method if method is None else method,
        gram_fields=gram_fields,
        update=update if update is not None else (
            self.latent_update if tags is None else self.latent_train_update),
        monotone=self.latent_monotone if monotone is None else monotone,
        jit_step=jit_step, tag_refinement=self.tag_refinement,
    )

  # ------------------------------------------------------------- training
  def pseudo_targets(self, u1, v1, image_target, tags, mask):
    """Pseudo labelmaps and cleaned tags for weak images (paper Sec. 3.1).

    Runs training-mode latent inference for `t_train` steps on (u1, v1) with
    the network frozen; the refined labelmap and tags become ground truth.
    Nothing here carries a gradient.

    Args:
      u1: [B, h, w, D] features of the batch's single backbone forward.
      v1: [B, D].
      image_target: [B, h, w, 3].
      tags: [B, C] the given (noisy) tags.
      mask: [B, H, W] the ignore region (255) of the weak images.

    Returns:
      (labels [B, H, W] int32 with 255 kept, soft labels [B, H, W, C] or
      None, tags [B, C]).
    """
    result = self.latent(tf.stop_gradient(u1), tf.stop_gradient(v1),
                         image_target, tags=tags, steps=self.t_train,
                         jit_step=self.latent_jit_train_step)
    size = tf.shape(mask)[1:3]
    probabilities = tf.image.resize(result["probabilities"], size,
                                    method=tf.image.ResizeMethod.BILINEAR)
    labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    labels = tf.where(tf.equal(mask, IGNORE_LABEL), IGNORE_LABEL, labels)
    tag_probabilities = result["tag_probabilities"]
    if self.soft_pseudo_labels:
      return (tf.stop_gradient(labels), tf.stop_gradient(probabilities),
              tf.stop_gradient(tag_probabilities))
    cleaned = tf.cast(tag_probabilities > self.tag_threshold, tf.float32)
    return tf.stop_gradient(labels), None, tf.stop_gradient(cleaned)

  def _targets(self, x, u1, v1, image_target):
    """Ground truth of the batch: given labels, pseudo labels for weak ones."""
    mask = tf.cast(x["mask"], tf.int32)
    tags = tf.cast(x["tags"], tf.float32)
    if self.phase != "semi" or "is_weak" not in x:
      return mask, None, tags
    # The latent loop runs on the weak images only: each example's descent
    # is independent of the others (per-example objective, clip and
    # accept), and the labelled half of a batch would be thrown away. On the
    # synthetic preset (4 weak of 8) this is most of a stage-2 step's
    # latent cost saved (BENCHMARKS.md, training step).
    weak = tf.where(tf.cast(x["is_weak"], tf.bool))       # [N_weak, 1]
    given = (mask, tags)
    if self.soft_pseudo_labels:
      given += (tf.one_hot(tf.where(mask == IGNORE_LABEL, 0, mask),
                           self.num_classes),)

    def with_pseudo_targets():
      gather = lambda t: tf.gather_nd(t, weak)
      pseudo_mask, pseudo_soft, pseudo_tags = self.pseudo_targets(
          gather(u1), gather(v1), gather(image_target), gather(tags),
          gather(mask))
      pseudo = (pseudo_mask, pseudo_tags)
      if pseudo_soft is not None:
        pseudo += (pseudo_soft,)
      return tuple(tf.tensor_scatter_nd_update(g, weak, p)
                   for g, p in zip(given, pseudo))

    # A batch without weak images skips the loop (oneDNN's convolutions
    # also fail on an empty batch).
    targets = tf.cond(tf.size(weak) > 0, with_pseudo_targets, lambda: given)
    soft = targets[2] if self.soft_pseudo_labels else None
    return targets[0], soft, targets[1]

  def _forward_and_losses(self, x, training):
    """One backbone forward, the targets, and the three losses."""
    # NaN / Inf pixels would turn every loss, and after one step every
    # weight, into NaN without a word: stop at the input instead.
    image = tf.debugging.assert_all_finite(
        x["image"], "Training input 'image' has NaN or Inf pixels")
    outputs = self.forward(image, training=training)
    u1, v1 = outputs["u1"], outputs["v1"]
    image_target = x.get("image_small")
    if image_target is not None:
      image_target = tf.debugging.assert_all_finite(
          image_target, "Training input 'image_small' has NaN or Inf pixels")
    else:
      image_target = image_ops.image_target(image, tf.shape(u1)[1:3])
    mask, soft, tags = self._targets(x, u1, v1, image_target)
    map_loss = losses.map_loss(outputs["labelmap_logits"], mask, soft,
                               num_pixels=_replica_mean_count(mask))
    image_loss = losses.image_loss(outputs["reconstruction"], image_target)
    tag_loss = losses.tag_loss(outputs["tag_logits"], tags)
    w_map, w_image, w_tag = self.loss_weights_for_phase
    total = w_map * map_loss + w_image * image_loss + w_tag * tag_loss
    return outputs, total, (map_loss, image_loss, tag_loss)

  def _update_metrics(self, x, outputs, total, parts):
    map_loss, image_loss, tag_loss = parts
    self.loss_tracker.update_state(total)
    self.map_loss_tracker.update_state(map_loss)
    self.image_loss_tracker.update_state(image_loss)
    self.tag_loss_tracker.update_state(tag_loss)
    mask = tf.cast(x["mask"], tf.int32)
    # Segmentation metrics count only images with real masks.
    if "is_weak" in x:
      weak = tf.cast(x["is_weak"], tf.bool)[:, None, None]
      mask = tf.where(weak, IGNORE_LABEL, mask)
    logits = losses.upsample_logits(outputs["labelmap_logits"],
                                    tf.shape(mask)[1:3])
    prediction = tf.argmax(logits, axis=-1, output_type=tf.int32)
    self.pixel_accuracy.update_state(mask, prediction)
    self.mean_iou.update_state(mask, prediction)
    return {m.name: m.result() for m in self.metrics}

  # Not converted by autograph (Keras traces these with it on): the step
  # branches on tensors only through tf.cond / tf.while_loop, so the
  # source rewriting of it and of the latent loop only cost trace time.
  @tf.autograph.experimental.do_not_convert
  def train_step(self, data):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
      outputs, total, parts = self._forward_and_losses(x, training=True)
      # The optimizer sums gradients over replicas.
      replicas = tf.distribute.get_strategy().num_replicas_in_sync
      scaled = self.optimizer.scale_loss(total / replicas)
    variables = self.trainable_variables
    gradients = tape.gradient(scaled, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    return self._update_metrics(x, outputs, total, parts)

  @tf.autograph.experimental.do_not_convert
  def test_step(self, data):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    outputs, total, parts = self._forward_and_losses(x, training=False)
    return self._update_metrics(x, outputs, total, parts)

  @property
  def metrics(self):
    return [self.loss_tracker, self.map_loss_tracker, self.image_loss_tracker,
            self.tag_loss_tracker, self.pixel_accuracy, self.mean_iou]

  # ---------------------------------------------------------- serialisation
  def get_config(self):
    return {
        "name": self.name,
        "trainable": self.trainable,
        "backbone": keras.saving.serialize_keras_object(self.backbone),
        "num_classes": self.num_classes,
        "map_weight": self.map_weight,
        "image_weight": self.image_weight,
        "tag_weight": self.tag_weight,
        "t_train": self.t_train,
        "latent_step_size": self.latent_step_size,
        "latent_clip_norm": self.latent_clip_norm,
        "soft_pseudo_labels": self.soft_pseudo_labels,
        "tag_threshold": self.tag_threshold,
        "train_batchnorm": self.train_batchnorm,
        "phase": self.phase,
        "latent_method": self.latent_method,
        "latent_update": self.latent_update,
        "latent_train_update": self.latent_train_update,
        "latent_monotone": self.latent_monotone,
        "latent_jit_train_step": self.latent_jit_train_step,
        "tag_refinement": self.tag_refinement,
        "eval_crop_size": self.eval_crop_size,
        "precision": self.precision,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["backbone"] = keras.saving.deserialize_keras_object(
        config["backbone"])
    return cls(**config)


def _latent_per_example(latent_fn, u1, v1, image_target, tags, steps,
                        num_classes, **kwargs):
  """`latent_fn` with a [B] step count: one count per example.

  A [B] count whose values are all equal (the usual case) runs the batched
  loop once; otherwise each example runs its own loop (`tf.map_fn`), since
  the latent steps of one example never depend on another's.
  """
  specs = {
      "u3": tf.TensorSpec([None, None, num_classes], tf.float32),
      "v3": tf.TensorSpec([num_classes], tf.float32),
      "probabilities": tf.TensorSpec([None, None, num_classes], tf.float32),
      "tag_probabilities": tf.TensorSpec([num_classes], tf.float32),
      "objective": tf.TensorSpec([], tf.float32),
  }
  if kwargs.get("return_features"):
    specs["u1"] = tf.TensorSpec([None, None, u1.shape[-1]], tf.float32)
    specs["v1"] = tf.TensorSpec([v1.shape[-1]], tf.float32)

  def batched():
    result = latent_fn(u1, v1, image_target, tags=tags,
                       steps=tf.reduce_max(steps), **kwargs)
    return {key: result[key] for key in specs}

  def per_example():
    def one(args):
      u, v, target, count = args[:4]
      tag = args[4][None] if tags is not None else None
      result = latent_fn(u[None], v[None], target[None], tags=tag,
                         steps=count, **kwargs)
      return {key: result[key][0] for key in specs}
    elems = (u1, v1, image_target, steps) + (
        (tf.cast(tags, tf.float32),) if tags is not None else ())
    return tf.map_fn(one, elems, fn_output_signature=specs)

  uniform = tf.equal(tf.reduce_min(steps), tf.reduce_max(steps))
  return tf.cond(uniform, batched, per_example)


def runtime_settings(config):
  """The `DISModel.configure` arguments of an `ExperimentConfig`."""
  return {
      "map_weight": config.loss.map_weight,
      "image_weight": config.loss.image_weight,
      "tag_weight": config.loss.tag_weight,
      "t_train": config.latent.t_train,
      "latent_step_size": config.latent.step_size,
      "latent_clip_norm": config.latent.clip_norm,
      "soft_pseudo_labels": config.latent.soft_pseudo_labels,
      "tag_threshold": config.latent.tag_threshold,
      "latent_method": config.latent.method,
      "latent_update": config.latent.update,
      "latent_train_update": config.latent.train_update,
      "latent_monotone": config.latent.monotone,
      "latent_jit_train_step": config.latent.jit_train_step,
      "tag_refinement": config.latent.tag_refinement,
      "eval_crop_size": config.data.eval_size(),
      "precision": config.model.precision,
  }


def _check_float32_policy(dtype=None):
  """Refuses a mixed / half global dtype policy (or `dtype` argument).

  The model's precision is its `precision` argument (config
  `model.precision`), which sets the backbone's policy only: the latent
  loop (gradient steps on u1, v1 with step sizes up to 1e6, the
  per-example clipping and the non-finite-step rejection) is designed for
  float32, and under a global `mixed_float16` policy the subnets and the
  loop would silently run in float16 (overflow above 65504, 3 significant
  digits). So a global policy other than float32 is refused, before
  anything is built, with the setting to use instead.
  """
  policies = [keras.config.dtype_policy()]
  if dtype is not None:
    policies.append(keras.dtype_policies.get(dtype))
  for policy in policies:
    if policy.compute_dtype != "float32" or policy.variable_dtype != "float32":
      raise ValueError(
          f"DISModel needs the float32 dtype policy, got {policy.name!r} "
          f"(compute {policy.compute_dtype}, variables "
          f"{policy.variable_dtype}) as the global policy: the latent "
          "(u1, v1) inference loop must run in float32. Set the backbone's "
          "precision with --model.precision (DISModel(precision=...)), "
          "e.g. 'mixed_bfloat16', and keep the global policy float32 "
          "(keras.mixed_precision.set_global_policy('float32')).")


def _set_backbone_precision(backbone, precision):
  """Puts every layer of `backbone` under the dtype policy `precision`.

  The fixed input map of the ResNets (`CaffePreprocess`) stays float32:
  it is cheap, and the first convolution casts its output. The variables
  stay float32 under every mixed policy (Keras casts them at use), so the
  weights, and files saved, are the same under every precision.
  """
  config_lib.check_precision(precision)
  for layer in _all_layers(backbone):
    if isinstance(layer, (keras.layers.InputLayer,
                          backbones_lib.CaffePreprocess)):
      continue
    if layer.dtype_policy.name != precision:
      layer.dtype_policy = precision


def _replica_mean_count(mask):
  """L^map's divisor: None (this batch's non-ignored pixels) in one replica;
  with several, the global batch's count divided by the replicas.

  Each replica's loss is then its pixel sum over that divisor, and
  `train_step` divides by the replicas before the optimizer sums the
  gradients: together the mean over all non-ignored pixels of the global
  batch, as in one process. Dividing by each replica's own count instead
  weighted the pixels of a replica with few labelled pixels more (measured:
  two workers vs one process 2.7e-3 max abs weight difference after 12
  steps; tests/test_reliability_distributed.py).
  """
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return None
  return (context.all_reduce(tf.distribute.ReduceOp.SUM,
                             losses.num_valid_pixels(mask))
          / context.num_replicas_in_sync)


def _all_layers(model):
  """Every layer of a (possibly nested) model."""
  for layer in model.layers:
    yield layer
    if isinstance(layer, keras.Model):
      yield from _all_layers(layer)


def build_dis_model(config):
  """Builds a `DISModel` from an `ExperimentConfig` (flags -> config -> here).

  Args:
    config: a `dis_tf.config.ExperimentConfig`.

  Returns:
    A built `DISModel` in phase "a".
  """
  backbone = backbones_lib.build_backbone(
      config.model.backbone, weights=config.model.weights,
      tiny_width=config.model.tiny_width,
      train_batchnorm=config.model.train_batchnorm,
  )
  return DISModel(
      backbone,
      num_classes=config.model.num_classes,
      train_batchnorm=config.model.train_batchnorm,
      phase="a",
      **runtime_settings(config),
  )
