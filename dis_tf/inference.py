"""Latent inference on (u1, v1): the one implementation of the DIS loop.

Paper Sec. 2.1 ("Inference in Test") and Sec. 3.1 ("Inference in Training"),
the second part of Eq. (1):

  u1*, v1* = argmin_{u1, v1}  ||z3 - I||^2            (test mode)
  u1*, v1* = argmin_{u1, v1}  ||z3 - I||^2 + n L^tag  (training mode)

(n = h*w*3 puts L^img and L^tag on the training losses' footing; see
`latent_objective`)

with every network weight frozen. The backbone is not part of this module:
callers run it once and pass (u1, v1) in. Training (stage-2 pseudo labels),
evaluation, tag cleaning and the exported serving graph all call
`latent_inference`.

Two exact implementations of the same gradient descent sit behind it:

* `method="direct"` (the reference): `tf.GradientTape` on (u1, v1) through
  subnet-1/3 every step (D = 2048 channels for ResNet101).
* `method="gram"` (the default): subnet-1/3 are linear in (u1, v1), say
  (u3, v3) = A(u1, v1) + biases, and the objective depends on (u1, v1) only
  through (u3, v3). A step (u1, v1) -= eta * A^T g, g the objective's gradient
  with respect to (u3, v3), is the step (u3, v3) -= eta * A A^T g, and the
  gradient-norm clip uses ||A^T g||^2 = <g, A A^T g>. The loop runs on the
  C = 21 channel maps with `dis_tf.modeling.gram.GramOperator` (A A^T as
  C x C kernels, exact at the image border); the refined (u1, v1) are
  reconstructed only when asked for, with one adjoint application of the
  accumulated updates. (Any optimizer linear in the gradients, e.g. momentum
  SGD, would stay exact the same way; a non-linear one such as Adam would
  have to use the direct path.)
"""

import tensorflow as tf

from dis_tf import losses
from dis_tf.modeling import gram as gram_lib
from dis_tf.modeling.subnets import refine_labelmap

METHODS = ("gram", "direct")


def latent_objective(model, u1, v1, image_target, tags=None,
                     image_weight=1.0, tag_weight=1.0):
  """Per-example latent objective.

  Eq. (1) uses the same L^img and L^tag in its two parts, so the objective
  is the training losses' weighted sum, image_weight * L^img + tag_weight *
  L^tag (per-example means, `dis_tf.losses`), times the constant n = h*w*3:

    n * (image_weight * mean (z3 - I)^2 + tag_weight * mean_c BCE(v3_c, T_c))
      = image_weight * ||z3 - I||^2 + tag_weight * n * mean_c BCE(v3_c, T_c).

  The factor n keeps the image term the paper's squared Euclidean distance
  (a sum over the feature-size pixels, so its gradient per pixel, and hence
  the step size, does not depend on the image size). An earlier version
  summed the tag term over the 20 classes instead of weighting its mean by
  n (~500 at 96-128 px); the image term then swamped it and training-mode
  inference hardly moved v3 towards the given tags (RESULTS.md, "What was
  changed after the first runs").

  Args:
    model: a `DISModel` (or any object with its `subnet1`, `subnet2` and
      `subnet3` layers).
    u1: [B, h, w, D] pixel-level features.
    v1: [B, D] image-level features.
    image_target: [B, h, w, 3] normalised image at feature size.
    tags: optional [B, C] multi-hot target tags (training mode).
    image_weight: weight of the image term.
    tag_weight: weight of the tag term.

  Returns:
    A [B] float32 tensor.
  """
  u3 = model.subnet1(u1, v1)
  z3 = model.subnet2(u3)
  loss = image_weight * tf.reduce_sum(
      tf.math.squared_difference(z3, image_target), axis=[1, 2, 3]
  )
  if tags is not None:
    loss += _tag_term(z3, model.subnet3(u1, v1), tags, tag_weight)
  return loss


def objective_from_logits(model, u3, v3, image_target, tags=None,
                          image_weight=1.0, tag_weight=1.0):
  """`latent_objective` as a function of (u3, v3) (v3 unused without tags)."""
  z3 = model.subnet2(u3)
  loss = image_weight * tf.reduce_sum(
      tf.math.squared_difference(z3, tf.cast(image_target, z3.dtype)),
      axis=[1, 2, 3])
  if tags is not None:
    loss += _tag_term(z3, v3, tags, tag_weight)
  return loss


def _tag_term(z3, v3, tags, tag_weight):
  """tag_weight * n * L^tag per example, n = h*w*3 (see `latent_objective`)."""
  num_elements = tf.cast(tf.reduce_prod(tf.shape(z3)[1:]), v3.dtype)
  return tag_weight * num_elements * losses.tag_loss_per_example(v3, tags)


def _per_example_sq_norm(x):
  return tf.reduce_sum(tf.square(x), axis=tf.range(1, tf.rank(x)))


def _expand_like(values, x):
  """Reshapes [B] values to broadcast against x of any rank."""
  shape = tf.concat([tf.shape(values), tf.ones([tf.rank(x) - 1], tf.int32)], 0)
  return tf.reshape(values, shape)


def latent_inference(model, u1, v1, image_target, tags=None, steps=0,
                     step_size=0.1, clip_norm=10.0, image_weight=1.0,
                     tag_weight=1.0, return_features=False, method="gram",
                     gram_fields=None):
  """Gradient descent on (u1, v1) with the network frozen, then prediction.

  Each step takes the gradient of `latent_objective` with respect to
  (u1, v1), clips it per example to `clip_norm` (joint norm over u1 and v1)
  and moves (u1, v1) by `-step_size` times it. The loop is a `tf.while_loop`
  whose count is a tensor, so one trace serves every `steps`, and its state
  has a fixed size: memory does not grow with `steps`. A step whose result
  is not finite is not taken, so no NaN/Inf can come out whatever the step
  size.

  Args:
    model: a `DISModel` (or any object with its `subnet1`, `subnet2` and
      `subnet3` layers).
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
    method: "gram" (default: the steps run in (u3, v3) space with the Gram
      operator A A^T of subnet-1/3, see the module docstring) or "direct"
      (the reference: gradient tape on (u1, v1)). Both compute the same
      iterates up to floating-point rounding.
    gram_fields: optional Gram kernels (`GramOperator.fields()`) built
      earlier from the model's current weights, for callers whose weights do
      not change (the export builds them once); None builds them in this
      call (training: the weights change every step).

  Returns:
    A dict with "u3" [B, h, w, C] and "v3" [B, C] (logits after inference),
    "probabilities" [B, h, w, C] (softmax(u3) refined by the tags, Sec. 2.1
    "Final Prediction"), "tag_probabilities" [B, C] (the cleaned tags
    sigmoid(v3); background 1), "objective" [B] (latent objective after the
    last step) and, if requested, "u1" and "v1". In training mode with
    `steps == 0` nothing has been inferred, so the given tags are the
    cleaned tags and refine the labelmap: the semi-supervised scheme DIS
    degenerates to at t_train = 0 (Table 3 setup 1; Fig. 1(b), where L^w is
    the prediction refined with T^w).
  """
  if method not in METHODS:
    raise ValueError(f"Unknown latent method {method!r}; expected one of "
                     f"{METHODS}.")
  if method == "gram" and not gram_lib.supports(model):
    raise ValueError("method='gram' needs the linear Subnet1 / Subnet3 "
                     "(3x3 'same' convolution, dense, no activation); use "
                     "method='direct'.")
  if gram_fields is not None and method != "gram":
    raise ValueError(f"gram_fields are for method='gram', not {method!r}.")
  u1 = tf.stop_gradient(tf.convert_to_tensor(u1))
  v1 = tf.stop_gradient(tf.convert_to_tensor(v1))
  image_target = tf.stop_gradient(tf.cast(image_target, u1.dtype))
  if tags is not None:
    tags = tf.stop_gradient(tf.cast(tags, u1.dtype))
  steps = tf.cast(steps, tf.int32)
  if method == "gram":
    u3, v3, objective, features = _gram_loop(
        model, u1, v1, image_target, tags, steps, step_size, clip_norm,
        image_weight, tag_weight, return_features, gram_fields)
  else:
    u3, v3, objective, features = _direct_loop(
        model, u1, v1, image_target, tags, steps, step_size, clip_norm,
        image_weight, tag_weight, return_features)
  refine_logits = v3
  if tags is not None:
    # Logits whose sigmoid is the given tags (0 / 1 up to 1e-6).
    given = tf.clip_by_value(tags, 1e-6, 1.0 - 1e-6)
    given_logits = tf.math.log(given) - tf.math.log1p(-given)
    refine_logits = tf.where(steps > 0, v3, given_logits)
  tag_probabilities = tf.nn.sigmoid(refine_logits)
  tag_probabilities = tf.concat(
      [tf.ones_like(tag_probabilities[:, :1]), tag_probabilities[:, 1:]], -1
  )
  outputs = {
      "u3": u3,
      "v3": v3,
      "probabilities": refine_labelmap(u3, refine_logits),
      "tag_probabilities": tag_probabilities,
      "objective": objective,
  }
  if return_features:
    outputs["u1"], outputs["v1"] = features
  return outputs


def _clip_scale(sq_norm, clip_norm, batch_size, dtype):
  if clip_norm is None:
    return tf.ones([batch_size], dtype)
  clip_norm = tf.cast(clip_norm, dtype)
  return clip_norm / tf.maximum(tf.sqrt(sq_norm), clip_norm)


def _direct_loop(model, u1, v1, image_target, tags, steps, step_size,
                 clip_norm, image_weight, tag_weight, return_features):
  """The reference: gradient tape on (u1, v1) through subnet-1/3."""
  step_size = tf.cast(step_size, u1.dtype)

  def objective(u1, v1):
    return latent_objective(model, u1, v1, image_target, tags,
                            image_weight, tag_weight)

  def body(i, u1, v1):
    with tf.GradientTape() as tape:
      tape.watch([u1, v1])
      total = tf.reduce_sum(objective(u1, v1))
    grad_u1, grad_v1 = tape.gradient(total, [u1, v1])
    scale = _clip_scale(
        _per_example_sq_norm(grad_u1) + _per_example_sq_norm(grad_v1),
        clip_norm, tf.shape(u1)[0], u1.dtype)
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
  u3 = model.subnet1(u1, v1)
  v3 = model.subnet3(u1, v1)
  return u3, v3, objective(u1, v1), (u1, v1)


def _gram_loop(model, u1, v1, image_target, tags, steps, step_size,
               clip_norm, image_weight, tag_weight, return_features,
               gram_fields=None):
  """The same descent in (u3, v3) space with the Gram operator A A^T.

  State per step: (u3, v3), the objective and its gradient g at (u3, v3)
  (the gradient of the accepted point is carried to the next step, so a
  step costs one subnet-2 forward + backward and one A A^T application),
  and, only for `return_features`, the accumulated update sum_k c_k g_k from
  which (u1, v1) -= A^T(sum) is reconstructed at the end.
  """
  u3 = model.subnet1(u1, v1)
  v3 = model.subnet3(u1, v1)
  dtype = u3.dtype
  step_size = tf.cast(step_size, dtype)

  def value_and_grad(u3, v3):
    with tf.GradientTape() as tape:
      tape.watch([u3, v3])
      objective = objective_from_logits(model, u3, v3, image_target, tags,
                                        image_weight, tag_weight)
      total = tf.reduce_sum(objective)
    grad_u3, grad_v3 = tape.gradient(
        total, [u3, v3], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return objective, grad_u3, grad_v3

  # Without stored kernels the operator is built once per call, from the
  # current weights (they change between training steps), and not at all
  # when steps == 0.
  num_classes = u3.shape[-1]
  if gram_fields is not None:
    gram_fields = tuple(tf.cast(f, dtype) for f in gram_fields)
  op = gram_lib.GramOperator.from_heads(
      model, dtype, build=lambda make: tf.cond(
          steps > 0, make,
          lambda: gram_lib.GramOperator.zero_fields(num_classes, dtype)),
      fields=gram_fields)

  # The gradient at the start point is needed only if a step is taken.
  objective, grad_u3, grad_v3 = tf.cond(
      steps > 0, lambda: value_and_grad(u3, v3),
      lambda: (objective_from_logits(model, u3, v3, image_target, tags,
                                     image_weight, tag_weight),
               tf.zeros_like(u3), tf.zeros_like(v3)))
  acc_u = tf.zeros_like(u3) if return_features else tf.zeros([0], dtype)
  acc_v = tf.zeros_like(v3) if return_features else tf.zeros([0], dtype)

  def body(i, u3, v3, objective, grad_u3, grad_v3, acc_u, acc_v):
    move_u, move_v = op.apply(grad_u3, grad_v3)
    # ||A^T g||^2 = <g, A A^T g>: the direct path's joint (u1, v1) norm.
    coef = step_size
    if clip_norm is not None:
      sq_norm = (tf.reduce_sum(grad_u3 * move_u, axis=[1, 2, 3])
                 + tf.reduce_sum(grad_v3 * move_v, axis=[1]))
      coef *= _clip_scale(tf.maximum(sq_norm, 0.0), clip_norm, None, dtype)
      coef_u, coef_v = coef[:, None, None, None], coef[:, None]
    else:
      coef_u = coef_v = coef
    new_u3 = u3 - coef_u * move_u
    new_v3 = v3 - coef_v * move_v
    new_objective, new_grad_u3, new_grad_v3 = value_and_grad(new_u3, new_v3)
    # Reject, per example, a step that overflowed (absurd step sizes).
    finite = tf.logical_and(
        tf.math.is_finite(new_objective),
        tf.logical_and(
            tf.reduce_all(tf.math.is_finite(new_u3), axis=[1, 2, 3]),
            tf.reduce_all(tf.math.is_finite(new_v3), axis=[1])))
    if return_features:
      new_acc_u = acc_u + coef_u * grad_u3
      new_acc_v = acc_v + coef_v * grad_v3
      finite = tf.logical_and(finite, tf.logical_and(
          tf.reduce_all(tf.math.is_finite(new_acc_u), axis=[1, 2, 3]),
          tf.reduce_all(tf.math.is_finite(new_acc_v), axis=[1])))
    keep_u, keep_v = finite[:, None, None, None], finite[:, None]
    if return_features:
      acc_u = tf.where(keep_u, new_acc_u, acc_u)
      acc_v = tf.where(keep_v, new_acc_v, acc_v)
    return (i + 1,
            tf.where(keep_u, new_u3, u3), tf.where(keep_v, new_v3, v3),
            tf.where(finite, new_objective, objective),
            tf.where(keep_u, new_grad_u3, grad_u3),
            tf.where(keep_v, new_grad_v3, grad_v3),
            acc_u, acc_v)

  _, u3, v3, objective, _, _, acc_u, acc_v = tf.while_loop(
      lambda i, *_: i < steps, body,
      [tf.constant(0), u3, v3, objective, grad_u3, grad_v3, acc_u, acc_v],
      parallel_iterations=1,
  )
  features = None
  if return_features:
    # One adjoint application of the accumulated updates.
    du1, dv1 = op.adjoint(tf.cast(acc_u, u1.dtype), tf.cast(acc_v, v1.dtype))
    features = (u1 - du1, v1 - dv1)
  return u3, v3, objective, features
