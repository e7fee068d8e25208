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

Size: over 450 lines because the direct (reference) and the Gram loop must stay
side by side: tests/test_gram.py checks that they compute the same iterates,
and their step rules (scales, clipping, non-finite and monotone rejection) are
shared helpers here.
"""

import numpy as np
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import losses
from dis_tf.modeling import gram as gram_lib
from dis_tf.modeling.subnets import refine_labelmap

METHODS = config_lib.LATENT_METHODS
# Which latent blocks move, and how their steps are scaled (`block_scales`).
UPDATES = config_lib.LATENT_UPDATES


def block_scales(update, height, width, dtype=tf.float32):
  """(s_u, s_map, s_tag): factors on the gradients of one latent step.

  s_u scales u1's gradient; v1's gradient has two paths, through up(v1)
  into u3 (scaled by s_map) and through v2 = avgpool(u1) + v1 into v3
  (scaled by s_tag; non-zero only in training mode, where tags are given).

  * "both": the paper (Sec. 2.1): plain gradient descent on (u1, v1).
  * "u1": v1 frozen; "v1": u1 frozen (diagnosis: which block helps).
  * "per_pixel": both move, the u3 path of v1's gradient divided by h * w.
    A departure from the paper: up(v1) adds v1 to every one of the h * w
    positions of u2, so that path's gradient is a sum of h * w per-position
    terms and, with one step size for both blocks, a v1 step shifts every
    pixel's class scores by far more than a u1 step moves one pixel.
    Measured (`dis_tf.research.diagnosis.step_shift_ratio`, the first
    test-mode step, mean per-pixel L2 over the class scores) on the demo's
    trained model, 50 images of val[:100], h * w = 256: the v1 part moves a
    pixel 97 times as far as the u1 part (median; 10%-90%: 51 to 151), so
    about 0.4 h * w, not h * w; per_pixel brings that to about 0.4. (v1
    also carries ~90% of the squared step norm of trained models, and
    steps of 0.3 already raise the objective; RESULTS.md, diagnosis.)
    Dividing by h * w makes v1 move by the per-pixel mean of what the
    pixels ask for; the tag path (one term per image) keeps its scale. In
    test mode (no tags) this is a diagonal preconditioner of the step.
    Plain "u1" scores as well or better on the selection split of the
    ablation (RESULTS.md diagnosis); `dis_tf.selection` chooses among the
    three per run.

  Args:
    update: one of `UPDATES`.
    height: h of u1 (int or scalar tensor).
    width: w of u1.
    dtype: dtype of the factors.

  Returns:
    Three scalars (Python floats, or a tensor for "per_pixel").
  """
  if update == "both":
    return 1.0, 1.0, 1.0
  if update == "u1":
    return 1.0, 0.0, 0.0
  if update == "v1":
    return 0.0, 1.0, 1.0
  if update == "per_pixel":
    return 1.0, 1.0 / tf.cast(height * width, dtype), 1.0
  raise ValueError(f"Unknown latent update {update!r}; expected one of "
                   f"{UPDATES}.")


def latent_objective(model, u1, v1, image_target, tags=None,
                     image_weight=1.0, tag_weight=1.0, v1_tag=None):
  """Per-example latent objective.

  Eq. (1) uses the same L^img and L^tag in its two parts, so the objective
  is the training losses' weighted sum, image_weight * L^img + tag_weight *
  L^tag (per-example means, `dis_tf.losses`), times the constant n = h*w*3:

    n * (image_weight * mean (z3 - I)^2 + tag_weight * mean_c BCE(v3_c, T_c))
      = image_weight * ||z3 - I||^2 + tag_weight * n * mean_c BCE(v3_c, T_c).

  The weight n of the tag term is a departure from the paper (RESULTS.md,
  departures). The factor n keeps the image term the paper's squared
  Euclidean distance (a sum over the feature-size pixels, so its gradient
  per pixel, and hence the step size, does not depend on the image size).
  An earlier version summed the tag term over the 20 classes instead of
  weighting its mean by n (~500 at 96-128 px); the image term then swamped
  it and training-mode inference hardly moved v3 towards the given tags
  (RESULTS.md, "What was changed after the first runs").

  Args:
    model: a `DISModel` (or any object with its `subnet1`, `subnet2` and
      `subnet3` layers).
    u1: [B, h, w, D] pixel-level features.
    v1: [B, D] image-level features.
    image_target: [B, h, w, 3] normalised image at feature size.
    tags: optional [B, C] multi-hot target tags (training mode).
    image_weight: weight of the image term.
    tag_weight: weight of the tag term.
    v1_tag: optional v1 seen by subnet-3 (default `v1`); a separate tensor
      separates the two paths of v1's gradient (`block_scales`).

  Returns:
    A [B] float32 tensor.
  """
  u3 = model.subnet1(u1, v1)
  z3 = model.subnet2(u3)
  loss = image_weight * tf.reduce_sum(
      tf.math.squared_difference(z3, image_target), axis=[1, 2, 3]
  )
  if tags is not None:
    loss += _tag_term(z3, model.subnet3(u1, v1 if v1_tag is None else v1_tag),
                      tags, tag_weight)
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
                     gram_fields=None, update="both", monotone=False,
                     jit_step=False, tag_refinement=0.0):
  """Gradient descent on (u1, v1) with the network frozen, then prediction.

  Each step takes the gradient of `latent_objective` with respect to
  (u1, v1), scales its u1 and v1 blocks by `block_scales(update)`, clips
  the result per example to `clip_norm` (joint norm over u1 and v1) and
  moves (u1, v1) by `-step_size` times it. The clip is a departure (the
  paper does not clip; a guard against divergent steps): being joint, it
  shrinks u1's step with v1's, so under "both" v1's large gradient also
  shortens u1's step (RESULTS.md, departures). The loop is a `tf.while_loop`
  whose count is a tensor, so one trace serves every `steps`, and its state
  has a fixed size: memory does not grow with `steps`. A step whose result
  is not finite is not taken, so no NaN/Inf can come out whatever the step
  size. With `monotone`, a step that raises an example's objective is not
  taken either, and that example's step size is halved (backtracking); the
  paper takes every step (a departure, off by default).

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
    update: which latent blocks move and how their steps are scaled, one of
      `UPDATES` (see `block_scales`); "both" is the paper.
    monotone: reject (and halve the step after) steps that raise the
      objective.
    jit_step: compile the loop body (one step) with XLA
      (`tf.function(jit_compile=True)`); the loop itself stays a TensorFlow
      `while_loop`. Not for exported graphs (XLA is not a core op).
    tag_refinement: test mode's final prediction: the bias of
      `refine_labelmap` (0.0 = the paper's refinement by sigmoid(v3), None =
      no refinement). Training mode (tags given) always refines as the
      paper does (bias 0), by the given tags at t = 0 and by the cleaned
      tags after steps.

  Returns:
    A dict with "u3" [B, h, w, C] and "v3" [B, C] (logits after inference),
    "probabilities" [B, h, w, C] (softmax(u3) refined by the tags as
    `tag_refinement` says, Sec. 2.1 "Final Prediction"),
    "tag_probabilities" [B, C] (the cleaned tags sigmoid(v3); background 1),
    "objective" [B] (latent objective after the last step) and, if
    requested, "u1" and "v1". In training mode with `steps == 0` nothing
    has been inferred, so the given tags are the cleaned tags and refine
    the labelmap: the semi-supervised scheme DIS degenerates to at
    t_train = 0 (Table 3 setup 1; Fig. 1(b), where L^w is the prediction
    refined with T^w).
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
  if update not in UPDATES:
    raise ValueError(f"Unknown latent update {update!r}; expected one of "
                     f"{UPDATES}.")
  u1 = tf.stop_gradient(tf.convert_to_tensor(u1))
  v1 = tf.stop_gradient(tf.convert_to_tensor(v1))
  image_target = tf.stop_gradient(tf.cast(image_target, u1.dtype))
  if tags is not None:
    tags = tf.stop_gradient(tf.cast(tags, u1.dtype))
  steps = tf.cast(steps, tf.int32)
  if method == "gram":
    u3, v3, objective, features = _gram_loop(
        model, u1, v1, image_target, tags, steps, step_size, clip_norm,
        image_weight, tag_weight, return_features, gram_fields, update,
        monotone, jit_step)
  else:
    u3, v3, objective, features = _direct_loop(
        model, u1, v1, image_target, tags, steps, step_size, clip_norm,
        image_weight, tag_weight, return_features, update, monotone,
        jit_step)
  refine_logits = v3
  refine_bias = tag_refinement
  if tags is not None:
    refine_bias = 0.0
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
      "probabilities": refine_labelmap(u3, refine_logits, refine_bias),
      "tag_probabilities": tag_probabilities,
      "objective": objective,
  }
  if return_features:
    outputs["u1"], outputs["v1"] = features
  return outputs


def _finite_rows(x):
  """[B] whether each row of the [B, N] float `x` is all finite.

  One multiply and one sum (a boolean `reduce_all` costs several times
  more): x * tiny (the smallest normal number) is finite iff x is, and at
  most 4 in magnitude, so the row sum is finite iff every entry is. The
  factor is not 0, which Grappler would fold away.
  """
  tiny = np.finfo(x.dtype.as_numpy_dtype).tiny
  return tf.math.is_finite(tf.reduce_sum(x * tiny, axis=1))


def _select_rows(condition, x, y):
  """x where the [B] `condition` holds, else y, per example (row).

  The `Select` op with a vector condition copies whole rows; `tf.where`
  broadcasting a [B, 1, 1, 1] condition over a map costs several times more
  (e.g. 27 vs 5 us on an 8x12x12x21 map).
  """
  return tf.raw_ops.Select(condition=condition, x=x, y=y)


def _clip_scale(sq_norm, clip_norm, batch_size, dtype):
  if clip_norm is None:
    return tf.ones([batch_size], dtype)
  clip_norm = tf.cast(clip_norm, dtype)
  return clip_norm / tf.maximum(tf.sqrt(sq_norm), clip_norm)


def _accept(finite, new_objective, objective, monotone):
  """Per-example: take the step (finite, and not uphill if `monotone`)."""
  if not monotone:
    return finite
  return tf.logical_and(finite, new_objective <= objective)


def _step_body(body, jit_step):
  """The loop body, XLA-compiled on its own if `jit_step`.

  Only the body: XLA on the whole loop was slower on this CPU when tried
  in an earlier round; the body alone is faster at the tiny preset's
  stage-2 shape and slower at the ResNet101 head (BENCHMARKS.md,
  `bench/latent_ops.py`).
  """
  return (tf.function(body, jit_compile=True, autograph=False) if jit_step
          else body)


def _direct_loop(model, u1, v1, image_target, tags, steps, step_size,
                 clip_norm, image_weight, tag_weight, return_features,
                 update="both", monotone=False, jit_step=False):
  """The reference: gradient tape on (u1, v1) through subnet-1/3."""
  dtype = u1.dtype
  shape = tf.shape(u1)
  s_u, s_map, s_tag = block_scales(update, shape[1], shape[2], dtype)

  def objective(u1, v1, v1_tag=None):
    return latent_objective(model, u1, v1, image_target, tags,
                            image_weight, tag_weight, v1_tag)

  def body(i, u1, v1, current, eta):
    # v1 twice: the up(v1) -> u3 and the v1 -> v3 paths of its gradient.
    v1_tag = tf.identity(v1)
    with tf.GradientTape() as tape:
      tape.watch([u1, v1, v1_tag])
      total = tf.reduce_sum(objective(u1, v1, v1_tag))
    grad_u1, grad_map, grad_tag = tape.gradient(
        total, [u1, v1, v1_tag],
        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grad_u1, grad_v1 = s_u * grad_u1, s_map * grad_map + s_tag * grad_tag
    scale = eta * _clip_scale(
        _per_example_sq_norm(grad_u1) + _per_example_sq_norm(grad_v1),
        clip_norm, shape[0], dtype)
    new_u1 = u1 - _expand_like(scale, u1) * grad_u1
    new_v1 = v1 - _expand_like(scale, v1) * grad_v1
    new_objective = objective(new_u1, new_v1)
    # Reject, per example, a step that overflowed (absurd step sizes).
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(new_u1), axis=[1, 2, 3]),
        tf.reduce_all(tf.math.is_finite(new_v1), axis=[1]),
    )
    finite = tf.logical_and(finite, tf.math.is_finite(new_objective))
    accept = _accept(finite, new_objective, current, monotone)
    u1 = tf.where(_expand_like(accept, u1), new_u1, u1)
    v1 = tf.where(_expand_like(accept, v1), new_v1, v1)
    current = tf.where(accept, new_objective, current)
    if monotone:
      eta = tf.where(accept, eta, 0.5 * eta)
    return i + 1, u1, v1, current, eta

  eta = tf.fill([shape[0]], tf.cast(step_size, dtype))
  _, u1, v1, _, _ = tf.while_loop(
      lambda i, *_: i < steps, _step_body(body, jit_step),
      [tf.constant(0), u1, v1, objective(u1, v1), eta],
      parallel_iterations=1,
  )
  u3 = model.subnet1(u1, v1)
  v3 = model.subnet3(u1, v1)
  return u3, v3, objective(u1, v1), (u1, v1)


def _gram_loop(model, u1, v1, image_target, tags, steps, step_size,
               clip_norm, image_weight, tag_weight, return_features,
               gram_fields=None, update="both", monotone=False,
               jit_step=False):
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
  shape = tf.shape(u3)
  s_u, s_map, s_tag = block_scales(update, shape[1], shape[2], dtype)

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

  # Loop invariants of the step, built once here rather than every step:
  # the shape-dependent part of A A^T, the clip constants, a reshape shape.
  apply = op.applier(tf.shape(u3))
  if clip_norm is not None:
    clip_norm = tf.cast(clip_norm, dtype)
  flat = ([u3.shape[0], -1] if u3.shape[0] is not None
          else tf.stack([tf.shape(u3)[0], -1]))
  conv_kernel = tf.cast(model.subnet1.conv.kernel, dtype)
  dense_kernel = tf.cast(model.subnet3.dense.kernel, dtype)

  def body(i, u3, v3, objective, grad_u3, grad_v3, acc_u, acc_v, eta):
    move_u, move_v = apply(grad_u3, grad_v3)
    if update != "both":
      # s_u A_u A_u^T g + A_v A_v^T g', g' = (s_map gu, s_tag gv): v1's
      # step is A_v^T g' (see `block_scales`); A_u A_u^T = A A^T - A_v A_v^T.
      part_u, part_v = gram_lib.apply_v1_part(conv_kernel, dense_kernel,
                                              grad_u3, grad_v3)
      scaled_u, scaled_v = s_map * grad_u3, s_tag * grad_v3
      v1_u, v1_v = gram_lib.apply_v1_part(conv_kernel, dense_kernel,
                                          scaled_u, scaled_v)
      sq_norm = (
          s_u * s_u * (tf.reduce_sum(grad_u3 * (move_u - part_u), [1, 2, 3])
                       + tf.reduce_sum(grad_v3 * (move_v - part_v), [1]))
          + tf.reduce_sum(scaled_u * v1_u, [1, 2, 3])
          + tf.reduce_sum(scaled_v * v1_v, [1]))
      move_u = s_u * (move_u - part_u) + v1_u
      move_v = s_u * (move_v - part_v) + v1_v
    else:
      # ||A^T g||^2 = <g, A A^T g>: the direct path's joint (u1, v1) norm.
      sq_norm = (tf.reduce_sum(grad_u3 * move_u, axis=[1, 2, 3])
                 + tf.reduce_sum(grad_v3 * move_v, axis=[1]))
    coef = eta
    if clip_norm is not None:
      # eta * _clip_scale(...), in four ops.
      coef = eta * clip_norm / tf.maximum(tf.sqrt(tf.maximum(sq_norm, 0.0)),
                                          clip_norm)
    coef_u, coef_v = tf.reshape(coef, [-1, 1, 1, 1]), coef[:, None]
    new_u3 = u3 - coef_u * move_u
    new_v3 = v3 - coef_v * move_v
    new_objective, new_grad_u3, new_grad_v3 = value_and_grad(new_u3, new_v3)
    # Reject, per example, a step that overflowed (absurd step sizes): one
    # finiteness check over everything the step produced.
    produced = [tf.reshape(new_u3, flat), new_v3, new_objective[:, None]]
    if return_features:
      new_acc_u = acc_u + coef_u * grad_u3
      new_acc_v = acc_v + coef_v * grad_v3
      produced += [tf.reshape(new_acc_u, flat), new_acc_v]
    finite = _finite_rows(tf.concat(produced, 1))
    accept = _accept(finite, new_objective, objective, monotone)
    keep = lambda new, old: _select_rows(accept, new, old)
    if return_features:
      acc_u, acc_v = keep(new_acc_u, acc_u), keep(new_acc_v, acc_v)
    if monotone:
      eta = keep(eta, 0.5 * eta)
    return (i + 1, keep(new_u3, u3), keep(new_v3, v3),
            keep(new_objective, objective),
            keep(new_grad_u3, grad_u3), keep(new_grad_v3, grad_v3),
            acc_u, acc_v, eta)

  eta = tf.fill([shape[0]], tf.cast(step_size, dtype))
  _, u3, v3, objective, _, _, acc_u, acc_v, _ = tf.while_loop(
      lambda i, *_: i < steps, _step_body(body, jit_step),
      [tf.constant(0), u3, v3, objective, grad_u3, grad_v3, acc_u, acc_v,
       eta],
      parallel_iterations=1,
  )
  features = None
  if return_features:
    # One adjoint application of the accumulated updates.
    # The steps moved u1 by -s_u A_u^T(sum_k c_k g_k) and v1 by
    # -A_v^T(sum_k c_k g'_k), g' = (s_map gu, s_tag gv).
    acc_u, acc_v = tf.cast(acc_u, u1.dtype), tf.cast(acc_v, v1.dtype)
    du1, _ = op.adjoint(acc_u, acc_v)
    _, dv1 = op.adjoint(s_map * acc_u, s_tag * acc_v)
    features = (u1 - s_u * du1, v1 - dv1)
  return u3, v3, objective, features
