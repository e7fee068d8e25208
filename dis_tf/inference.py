"""Latent inference on (u1, v1): the one implementation of the DIS loop.

Paper Sec. 2.1 ("Inference in Test") and Sec. 3.1 ("Inference in Training"),
the second part of Eq. (1):

  u1*, v1* = argmin_{u1, v1}  ||z3 - I||^2            (test mode)
  u1*, v1* = argmin_{u1, v1}  ||z3 - I||^2 + L^tag    (training mode)

with every network weight frozen. The backbone is not part of this module:
callers run it once and pass (u1, v1) in. Training (stage-2 pseudo labels),
evaluation, tag cleaning and the exported serving graph all call
`latent_inference`.
"""

import tensorflow as tf

from dis_tf.modeling.subnets import refine_labelmap


def latent_objective(heads, u1, v1, image_target, tags=None,
                     image_weight=1.0, tag_weight=1.0):
  """Per-example latent objective.

  The image term is the paper's squared Euclidean distance ||z3 - I||^2
  (a sum over the feature-size pixels, so its gradient per pixel does not
  depend on the image size); the tag term is the binary cross-entropy summed
  over the object classes.

  Args:
    heads: object with `subnet1`, `subnet2`, `subnet3` layers (a DISModel).
    u1: [B, h, w, D] pixel-level features.
    v1: [B, D] image-level features.
    image_target: [B, h, w, 3] normalised image at feature size.
    tags: optional [B, C] multi-hot target tags (training mode).
    image_weight: weight of the image term.
    tag_weight: weight of the tag term.

  Returns:
    A [B] float32 tensor.
  """
  u3 = heads.subnet1(u1, v1)
  z3 = heads.subnet2(u3)
  loss = image_weight * tf.reduce_sum(
      tf.math.squared_difference(z3, image_target), axis=[1, 2, 3]
  )
  if tags is not None:
    v3 = heads.subnet3(u1, v1)
    loss += tag_weight * tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(tags[:, 1:], v3.dtype), logits=v3[:, 1:]
        ),
        axis=-1,
    )
  return loss


def _per_example_sq_norm(x):
  return tf.reduce_sum(tf.square(x), axis=tf.range(1, tf.rank(x)))


def _expand_like(values, x):
  """Reshapes [B] values to broadcast against x of any rank."""
  shape = tf.concat([tf.shape(values), tf.ones([tf.rank(x) - 1], tf.int32)], 0)
  return tf.reshape(values, shape)


def latent_inference(heads, u1, v1, image_target, tags=None, steps=0,
                     step_size=0.1, clip_norm=10.0, image_weight=1.0,
                     tag_weight=1.0, return_features=False):
  """Gradient descent on (u1, v1) with the network frozen, then prediction.

  Each step takes the gradient of `latent_objective` with `tf.GradientTape`,
  clips it per example to `clip_norm` (joint norm over u1 and v1) and moves
  (u1, v1) by `-step_size` times it. The loop is a `tf.while_loop` whose
  count is a tensor, so one trace serves every `steps`, and its state is only
  (u1, v1): memory does not grow with `steps`. A step whose result is not
  finite is not taken, so no NaN/Inf can come out whatever the step size.

  Args:
    heads: object with `subnet1`, `subnet2`, `subnet3` layers (a DISModel).
    u1: [B, h, w, D] backbone features (no gradient flows back into them).
    v1: [B, D] backbone image-level features.
    image_target: [B, h, w, 3] normalised image at feature size.
    tags: optional [B, C] tags; given = training mode (image + tag loss),
      None = test mode (image loss only).
    steps: number of gradient steps (int or scalar int tensor); 0 is the
      plain forward pass.
    step_size: gradient-descent step size.
    clip_norm: per-example gradient-norm clip; None disables it.
    image_weight: weight of the image term of the objective.
    tag_weight: weight of the tag term of the objective.
    return_features: also return the refined "u1" and "v1".

  Returns:
    A dict with "u3" [B, h, w, C] and "v3" [B, C] (logits after inference),
    "probabilities" [B, h, w, C] (softmax(u3) refined by the tags, Sec. 2.1
    "Final Prediction"), "tag_probabilities" [B, C] (sigmoid(v3); background
    1), "objective" [B] (latent objective after the last step) and,
    if requested, "u1" and "v1".
  """
  u1 = tf.stop_gradient(tf.convert_to_tensor(u1))
  v1 = tf.stop_gradient(tf.convert_to_tensor(v1))
  image_target = tf.stop_gradient(tf.cast(image_target, u1.dtype))
  if tags is not None:
    tags = tf.stop_gradient(tf.cast(tags, u1.dtype))
  steps = tf.cast(steps, tf.int32)
  step_size = tf.cast(step_size, u1.dtype)

  def objective(u1, v1):
    return latent_objective(heads, u1, v1, image_target, tags,
                            image_weight, tag_weight)

  def body(i, u1, v1):
    with tf.GradientTape() as tape:
      tape.watch([u1, v1])
      total = tf.reduce_sum(objective(u1, v1))
    grad_u1, grad_v1 = tape.gradient(total, [u1, v1])
    if clip_norm is not None:
      norm = tf.sqrt(_per_example_sq_norm(grad_u1) + _per_example_sq_norm(grad_v1))
      scale = clip_norm / tf.maximum(norm, clip_norm)
    else:
      scale = tf.ones([tf.shape(u1)[0]], u1.dtype)
    new_u1 = u1 - step_size * _expand_like(scale, u1) * grad_u1
    new_v1 = v1 - step_size * _expand_like(scale, v1) * grad_v1
    # Reject, per example, a step that overflowed (absurd step sizes).
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(new_u1), axis=[1, 2, 3]),
        tf.reduce_all(tf.math.is_finite(new_v1), axis=[1]),
    )
    finite = tf.logical_and(
        finite, tf.math.is_finite(objective(new_u1, new_v1)))
    u1 = tf.where(_expand_like(finite, u1), new_u1, u1)
    v1 = tf.where(_expand_like(finite, v1), new_v1, v1)
    return i + 1, u1, v1

  _, u1, v1 = tf.while_loop(
      lambda i, *_: i < steps, body, [tf.constant(0), u1, v1],
      parallel_iterations=1,
  )
  u3 = heads.subnet1(u1, v1)
  v3 = heads.subnet3(u1, v1)
  tag_probabilities = tf.nn.sigmoid(v3)
  tag_probabilities = tf.concat(
      [tf.ones_like(tag_probabilities[:, :1]), tag_probabilities[:, 1:]], -1
  )
  outputs = {
      "u3": u3,
      "v3": v3,
      "probabilities": refine_labelmap(u3, v3),
      "tag_probabilities": tag_probabilities,
      "objective": objective(u1, v1),
  }
  if return_features:
    outputs["u1"] = u1
    outputs["v1"] = v1
  return outputs
