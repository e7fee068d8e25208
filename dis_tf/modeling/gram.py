"""The Gram operator A A^T of the linear latent map (u1, v1) -> (u3, v3).

Subnet-1 (u3 = conv3x3_same(u1 + tile(v1)) + b) and subnet-3
(v3 = W^T (mean_hw(u1) + v1) + c) are linear in (u1, v1); call the linear
part A. Every term of the latent objective depends on (u1, v1) only through
(u3, v3), so a gradient step (u1, v1) -= eta * A^T g, with g the gradient of
the objective with respect to (u3, v3), moves (u3, v3) by -eta * A A^T g.
`GramOperator` applies A A^T directly on the C-channel maps (C = 21), so a
latent step never touches the D-channel (D = 2048) features.

Derivation (K_d = kernel[dy+1, dx+1], a [D, C] matrix, for the tap offset
d = (dy, dx) in {-1, 0, 1}^2; W the [D, C] dense kernel; N = h * w;
mask_d(p) = [p + d inside the image]; alpha = 1 + 1 / N):

  A(x, y)     = (u, v),  u(p) = sum_d mask_d(p) K_d^T (x(p+d) + y),
                         v = W^T (mean_p x(p) + y)
  A^T(gu, gv) = (r + s / N, sum_p r(p) + s),  r = K^T gu (adjoint conv),
                                              s = W gv
  A A^T (gu, gv):
    u_out(p) = (K K^T gu)(p) + sum_d mask_d(p) E_d
    v_out    = alpha * (sum_d W^T K_d T_d + W^T W gv)
  with T_d = sum_p mask_d(p) gu(p)                       (9 masked sums)
       E_d = sum_d' K_d^T K_d' T_d' + alpha K_d^T W gv.

The zero-padded conv Gram is
  (K K^T gu)(p) = sum_{d, d'} mask_d(p) K_d^T K_d' gu(p + d - d')   (gu = 0
                                                                     outside)
i.e. a 5x5 "same" convolution with kernel G_e = sum_{d - d' = e} K_d^T K_d'
everywhere, minus the terms with p + d outside the image. Those are the
terms that pass through the one-pixel ring of zero padding; the ring row
above the image only sees row 0 of gu (and only the taps dy = dy' = -1), so
its correction is a 1x5 convolution of row 0 with the partial Gram kernel of
those taps, on row 0 of the output; likewise the bottom row and the left /
right columns (5x1). The four ring corners belong both to a ring row and a
ring column and are added back once (a C x C matrix at each image corner).
The operator is exact for every h, w >= 1.

All the kernels (25 + 4 * 5 + 4 matrices C x C, and the [9C, 9C] tap Gram)
are built from the subnet weights by one [9C, D] x [D, 9C] product.
"""

import numpy as np
import tensorflow as tf

from dis_tf.modeling.subnets import Subnet1, Subnet3


def _segment_ids(pairs, offset):
  """Gather indices and segment ids for summing K_d^T K_d' by offset."""
  gather, segments = [], []
  for (dpy, dpx), (dy, dx) in pairs:
    # Row-major (d', d) pair index into the [81, C, C] block tensor.
    gather.append(((dpy * 3 + dpx) * 9) + dy * 3 + dx)
    segments.append(offset((dpy, dpx), (dy, dx)))
  return np.array(gather, np.int32), np.array(segments, np.int32)


_TAPS = [(i, j) for i in range(3) for j in range(3)]
_ALL_PAIRS = [(dp, d) for dp in _TAPS for d in _TAPS]


def _offset_sum(blocks, pairs, offset, num_segments):
  gather, segments = _segment_ids(pairs, offset)
  return tf.math.unsorted_segment_sum(
      tf.gather(blocks, gather), segments, num_segments)


def supports(heads):
  """Whether the Gram path is exact for these heads (linear subnet-1/3)."""
  s1, s3 = getattr(heads, "subnet1", None), getattr(heads, "subnet3", None)
  if not isinstance(s1, Subnet1) or not isinstance(s3, Subnet3):
    return False
  conv, dense = s1.conv, s3.dense
  return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (1, 1)
          and tuple(conv.dilation_rate) == (1, 1) and conv.padding == "same"
          and conv.groups == 1 and conv.data_format == "channels_last"
          and _is_linear(conv.activation) and _is_linear(dense.activation))


def _is_linear(activation):
  return activation is None or getattr(activation, "__name__", "") == "linear"


def _gram_fields(conv_kernel, dense_kernel, dtype):
  """The C x C kernels of A A^T (see the module docstring), as a tuple."""
  work = tf.float64 if dtype == tf.float64 else tf.float32
  k = tf.cast(tf.convert_to_tensor(conv_kernel), work)
  w = tf.cast(tf.convert_to_tensor(dense_kernel), work)
  depth = tf.shape(k)[2]
  c = k.shape[3]
  # kflat[:, d * C + c] = K_d[:, c], taps d in row-major (dy, dx) order.
  kflat = tf.reshape(tf.transpose(k, [2, 0, 1, 3]), [depth, 9 * c])
  tap_gram = tf.matmul(kflat, kflat, transpose_a=True)       # [9C, 9C]
  # blocks[d' * 9 + d] = K_d'^T K_d, which is also the conv-kernel matrix
  # [Cin, Cout] of the tap pair (d, d') (tap_gram is symmetric).
  blocks = tf.reshape(
      tf.transpose(tf.reshape(tap_gram, [9, c, 9, c]), [0, 2, 1, 3]),
      [81, c, c])
  cast = lambda x: tf.cast(x, dtype)

  def full(dp, d):
    return (d[0] - dp[0] + 2) * 5 + (d[1] - dp[1] + 2)

  kernel5 = tf.reshape(_offset_sum(blocks, _ALL_PAIRS, full, 25),
                       [5, 5, c, c])

  def strip(row=None, col=None):
    if row is not None:
      pairs = [(dp, d) for dp, d in _ALL_PAIRS if dp[0] == d[0] == row]
      ker = _offset_sum(blocks, pairs, lambda dp, d: d[1] - dp[1] + 2, 5)
      return tf.reshape(ker, [1, 5, c, c])
    pairs = [(dp, d) for dp, d in _ALL_PAIRS if dp[1] == d[1] == col]
    ker = _offset_sum(blocks, pairs, lambda dp, d: d[0] - dp[0] + 2, 5)
    return tf.reshape(ker, [5, 1, c, c])

  # Corner taps (-1,-1), (-1,1), (1,-1), (1,1): K_d^T K_d.
  corners = tf.gather(blocks, [0 * 10, 2 * 10, 6 * 10, 8 * 10])
  tap_dense = tf.matmul(kflat, w, transpose_a=True)          # [9C, C]
  dense_gram = tf.matmul(w, w, transpose_a=True)             # [C, C]
  return tuple(cast(x) for x in (
      kernel5, strip(row=0), strip(row=2), strip(col=0), strip(col=2),
      corners, tap_gram, tap_dense, dense_gram))


class GramOperator:
  """A A^T of subnet-1 / subnet-3, as C-channel kernels.

  Build once per set of weights (the constructor is one small matmul); apply
  once per latent step. `fields` lets a caller whose weights are fixed (the
  SavedModel export) build the kernels once and keep them.

  Args:
    conv_kernel: [3, 3, D, C] subnet-1 kernel.
    dense_kernel: [D, C] subnet-3 kernel.
    dtype: dtype of the built kernels (the kernels are computed in float32,
      or float64 if that is asked for).
    build: optional wrapper `build(make) -> fields` around the kernel
      computation `make()`.
    fields: optional kernels built earlier from these weights (values of
      `FIELDS`, in that order); then nothing is computed here.
  """

  FIELDS = ("kernel5", "top", "bottom", "left", "right", "corners",
            "tap_gram", "tap_dense", "dense_gram")

  def __init__(self, conv_kernel, dense_kernel, dtype=tf.float32,
               build=None, fields=None):
    self.dtype = dtype
    # Kept as given and read only by `adjoint`, so an operator made from
    # stored `fields` does not read the D-channel kernels at all.
    self._conv_kernel = conv_kernel
    self._dense_kernel = dense_kernel
    self.num_classes = conv_kernel.shape[3]
    if fields is None:
      make = lambda: _gram_fields(conv_kernel, dense_kernel, dtype)
      fields = make() if build is None else build(make)
    elif len(fields) != len(self.FIELDS):
      raise ValueError(f"Expected {len(self.FIELDS)} Gram fields "
                       f"{self.FIELDS}, got {len(fields)}.")
    for name, value in zip(self.FIELDS, fields):
      setattr(self, name, value)

  def fields(self):
    """The kernels, in `FIELDS` order."""
    return tuple(getattr(self, name) for name in self.FIELDS)

  @classmethod
  def from_heads(cls, heads, dtype=tf.float32, build=None, fields=None):
    """The operator of `heads.subnet1` / `heads.subnet3` current weights.

    Args:
      heads: object with `subnet1` (`Subnet1`) and `subnet3` (`Subnet3`).
      dtype: dtype of the operator.
      build: optional wrapper `build(make) -> fields` around the kernel
        computation `make()` (e.g. a `tf.cond` skipping it).
      fields: optional kernels built earlier from the same weights.
    """
    return cls(heads.subnet1.conv.kernel, heads.subnet3.dense.kernel, dtype,
               build, fields)

  @staticmethod
  def zero_fields(num_classes, dtype):
    """Zero kernels of the right shapes (for a branch that never steps)."""
    c = num_classes
    shapes = ([5, 5, c, c], [1, 5, c, c], [1, 5, c, c], [5, 1, c, c],
              [5, 1, c, c], [4, c, c], [9 * c, 9 * c], [9 * c, c], [c, c])
    return tuple(tf.zeros(s, dtype) for s in shapes)

  # ----------------------------------------------------------------- apply
  @staticmethod
  def _tap_masks(n, dtype):
    """[n, 3]: [index + offset inside [0, n)] for offsets -1, 0, +1."""
    index = tf.range(n)
    return tf.cast(tf.stack(
        [index >= 1, tf.ones_like(index, tf.bool), index <= n - 2], axis=1),
        dtype)

  def apply(self, gu, gv):
    """A A^T (gu, gv).

    Args:
      gu: [B, h, w, C] gradient with respect to u3.
      gv: [B, C] gradient with respect to v3.

    Returns:
      (u_out [B, h, w, C], v_out [B, C]).
    """
    dtype = gu.dtype
    shape = tf.shape(gu)
    h, w = shape[1], shape[2]
    alpha = 1.0 + 1.0 / tf.cast(h * w, dtype)
    conv = lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")
    out = conv(gu, self.kernel5)
    # Terms through the zero-padding ring: rows, columns, corners once back.
    zero = tf.zeros([], tf.int32)
    rows = (tf.pad(conv(gu[:, :1], self.top),
                   [[0, 0], [zero, h - 1], [0, 0], [0, 0]])
            + tf.pad(conv(gu[:, -1:], self.bottom),
                     [[0, 0], [h - 1, zero], [0, 0], [0, 0]]))
    cols = (tf.pad(conv(gu[:, :, :1], self.left),
                   [[0, 0], [0, 0], [zero, w - 1], [0, 0]])
            + tf.pad(conv(gu[:, :, -1:], self.right),
                     [[0, 0], [0, 0], [w - 1, zero], [0, 0]]))
    corner_values = tf.einsum(
        "bkc,kcd->bkd",
        tf.stack([gu[:, 0, 0], gu[:, 0, -1], gu[:, -1, 0], gu[:, -1, -1]],
                 axis=1),
        self.corners)                                        # [B, 4, C]
    corner_map = tf.reshape(corner_values, [-1, 2, 2, self.num_classes])
    corners = tf.pad(corner_map[:, :1, :1], [[0, 0], [0, h - 1], [0, w - 1],
                                             [0, 0]])
    corners += tf.pad(corner_map[:, :1, 1:], [[0, 0], [0, h - 1], [w - 1, 0],
                                              [0, 0]])
    corners += tf.pad(corner_map[:, 1:, :1], [[0, 0], [h - 1, 0], [0, w - 1],
                                              [0, 0]])
    corners += tf.pad(corner_map[:, 1:, 1:], [[0, 0], [h - 1, 0], [w - 1, 0],
                                              [0, 0]])
    out = out - rows - cols + corners
    # The mean / v1 couplings, through the 9 masked sums T_d.
    row_masks = self._tap_masks(h, dtype)   # [h, 3]
    col_masks = self._tap_masks(w, dtype)   # [w, 3]
    c = self.num_classes
    taps = tf.reshape(
        tf.einsum("yi,xj,byxc->bijc", row_masks, col_masks, gu), [-1, 9 * c])
    coupled = (tf.matmul(taps, self.tap_gram)
               + alpha * tf.matmul(gv, self.tap_dense, transpose_b=True))
    out += tf.einsum("yi,xj,bijc->byxc", row_masks, col_masks,
                     tf.reshape(coupled, [-1, 3, 3, c]))
    v_out = alpha * (tf.matmul(taps, self.tap_dense)
                     + tf.matmul(gv, self.dense_gram))
    return out, v_out

  def adjoint(self, gu, gv):
    """A^T (gu, gv) = (du1 [B, h, w, D], dv1 [B, D]) (one D-channel conv)."""
    conv_kernel = tf.cast(tf.convert_to_tensor(self._conv_kernel), self.dtype)
    dense_kernel = tf.cast(tf.convert_to_tensor(self._dense_kernel),
                           self.dtype)
    shape = tf.shape(gu)
    depth = tf.shape(conv_kernel)[2]
    r = tf.nn.conv2d_transpose(
        gu, conv_kernel, tf.stack([shape[0], shape[1], shape[2], depth]),
        1, "SAME")
    s = tf.matmul(gv, dense_kernel, transpose_b=True)
    n = tf.cast(shape[1] * shape[2], gu.dtype)
    du1 = r + (s / n)[:, None, None, :]
    dv1 = tf.reduce_sum(r, axis=[1, 2]) + s
    return du1, dv1


def apply_v1_part(op, gu, gv):
  """A_v A_v^T (gu, gv): the part of `op.apply` that moves through v1.

  A = [A_u, A_v] splits by the two latent blocks, so A A^T = A_u A_u^T +
  A_v A_v^T and a step that scales the u1 and v1 gradients by s_u and s_v
  moves (u3, v3) by s_u A_u A_u^T g + s_v A_v A_v^T g. With s = A_v^T g =
  sum_d K_d T_d + W gv (a D-vector per example):

    u_out(p) = sum_d mask_d(p) K_d^T s,    v_out = W^T s,

  built from the stored `tap_gram`, `tap_dense` and `dense_gram` fields
  (K_d^T s = sum_d' K_d^T K_d' T_d' + K_d^T W gv), so it costs two small
  matmuls and the masked tap sums, on C channels.

  Args:
    op: a `GramOperator`.
    gu: [B, h, w, C] gradient with respect to u3.
    gv: [B, C] gradient with respect to v3.

  Returns:
    (u_out [B, h, w, C], v_out [B, C]).
  """
  dtype = gu.dtype
  shape = tf.shape(gu)
  row_masks = GramOperator._tap_masks(shape[1], dtype)  # pylint: disable=protected-access
  col_masks = GramOperator._tap_masks(shape[2], dtype)  # pylint: disable=protected-access
  c = op.num_classes
  taps = tf.reshape(
      tf.einsum("yi,xj,byxc->bijc", row_masks, col_masks, gu), [-1, 9 * c])
  per_tap = (tf.matmul(taps, op.tap_gram)
             + tf.matmul(gv, op.tap_dense, transpose_b=True))   # K_d^T s
  u_out = tf.einsum("yi,xj,bijc->byxc", row_masks, col_masks,
                    tf.reshape(per_tap, [-1, 3, 3, c]))
  v_out = tf.matmul(taps, op.tap_dense) + tf.matmul(gv, op.dense_gram)
  return u_out, v_out
