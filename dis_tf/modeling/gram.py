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

One step applies all of that with few ops (`GramOperator.applier`):
- the four ring strips are one "strip" tensor, gu's top and bottom rows as
  the two channel halves of w pixels, two zero pixels, then its left and
  right columns as h pixels (one gather); their 1x5 corrections are one
  matmul on that strip (block-diagonal kernels, the five taps gathered);
- the masked sums follow from sums that need no mask, by inclusion-
  exclusion: T_d = (image sum) - (the border row and / or column that
  p + d leaves, for dy, dx != 0) + (their corner pixel). Likewise on the
  output, sum_d mask_d(p) E_d is one vector everywhere, minus vectors along
  the border rows / columns, plus vectors at the corners. So the couplings
  (and the ring corner terms) are one [B, 10C] x [10C, 14C] matmul from the
  strip's border sums and corner pixels, the image sum and gv, to the
  vector added everywhere, v_out, and vectors added along the strip and at
  its two ends;
- the strip values go back to their image pixels by one segment sum (a
  corner pixel receives a row and a column value).
Apart from the 5x5 convolution, every op is small (gathers, reshapes,
sums, two small matmuls): 25 ops that do work per application, against
about a hundred for ring strips and masked sums done one by one.

All the kernels (the 5x5 kernel, the strip kernels and the coupling matrix)
are built from the subnet weights by one [9C, D] x [D, 9C] product.

Size: over 450 lines because most of it is the derivation and the exact border
corrections of one operator; the docstring carries the maths that the kernels
implement.
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


def _block_diagonal(a, b):
  """[..., 2Cin, 2Cout] conv kernel from two [..., Cin, Cout] kernels."""
  zeros = tf.zeros_like(a)
  return tf.concat([tf.concat([a, zeros], -1), tf.concat([zeros, b], -1)],
                   -2)


# Slots (C-vectors) of the coupling's input z and output (see `applier`).
# Input: sums of the top / bottom rows and left / right columns of gu, its
# four corner pixels (top-left, bottom-left, top-right, bottom-right), the
# sum over the image, gv.
_Z_SLOTS = ("row_top", "row_bottom", "col_left", "col_right", "top_left",
            "bottom_left", "top_right", "bottom_right", "total", "gv")
# Output: E added everywhere, v_out, then three 4C strip vectors in the
# strip-output channel order (top, bottom, left, right): added along the
# whole strips, at strip position 0, at strip position w - 1.
_OUT_SLOTS = ("everywhere", "v",
              "strip_top", "strip_bottom", "strip_left", "strip_right",
              "first_top", "first_bottom", "first_left", "first_right",
              "last_top", "last_bottom", "last_left", "last_right")


def _coupling_structure():
  """0/1/-1 matrices of the masked sums and where E_d lands (numpy).

  Returns:
    taps_from_z [9, 9]: T_d = sum_j taps_from_z[d, j] z_j over the first
      nine slots of z (inclusion-exclusion: the pixels with p + d inside
      are the image minus a border row and / or column, plus their corner).
    out_from_taps [9, 14]: sum_d mask_d(p) E_d = sum over the output slots
      placed at p of sum_d out_from_taps[d, slot] E_d (the same
      inclusion-exclusion on the output side).
    corner_pairs: ((z slot, output slot, tap)) of the ring corner terms.
  """
  z = {name: i for i, name in enumerate(_Z_SLOTS)}
  out = {name: i for i, name in enumerate(_OUT_SLOTS)}
  taps_from_z = np.zeros([9, 9], np.float64)
  out_from_taps = np.zeros([9, 14], np.float64)
  corner = {(-1, -1): ("top_left", "first_top"),
            (1, -1): ("bottom_left", "first_bottom"),
            (-1, 1): ("top_right", "last_top"),
            (1, 1): ("bottom_right", "last_bottom")}
  for t, (i, j) in enumerate(_TAPS):
    dy, dx = i - 1, j - 1
    taps_from_z[t, z["total"]] = 1
    out_from_taps[t, out["everywhere"]] = 1
    for offset, edge, side in ((dy, "row", ("top", "bottom")),
                               (dx, "col", ("left", "right"))):
      if offset:
        name = side[0] if offset < 0 else side[1]
        taps_from_z[t, z[f"{edge}_{name}"]] = -1
        out_from_taps[t, out[f"strip_{name}"]] = -1
    if (dy, dx) in corner:
      z_name, out_name = corner[(dy, dx)]
      taps_from_z[t, z[z_name]] = 1
      out_from_taps[t, out[out_name]] = 1
  corner_pairs = tuple((z[z_name], out[out_name], (dy + 1) * 3 + dx + 1)
                       for (dy, dx), (z_name, out_name) in corner.items())
  return taps_from_z, out_from_taps, corner_pairs


def _gram_fields(conv_kernel, dense_kernel, dtype):
  """The kernels of A A^T (see the module docstring), as a tuple."""
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

  def full(dp, d):
    return (d[0] - dp[0] + 2) * 5 + (d[1] - dp[1] + 2)

  kernel5 = tf.reshape(_offset_sum(blocks, _ALL_PAIRS, full, 25),
                       [5, 5, c, c])

  def strip(row=None, col=None):
    """[1, 5, C, C]: a ring row's (col's) partial Gram, along the strip."""
    if row is not None:
      pairs = [(dp, d) for dp, d in _ALL_PAIRS if dp[0] == d[0] == row]
      ker = _offset_sum(blocks, pairs, lambda dp, d: d[1] - dp[1] + 2, 5)
    else:
      pairs = [(dp, d) for dp, d in _ALL_PAIRS if dp[1] == d[1] == col]
      ker = _offset_sum(blocks, pairs, lambda dp, d: d[0] - dp[0] + 2, 5)
    return tf.reshape(ker, [1, 5, c, c])

  # The ring corrections are subtracted: stored negated. Input channels
  # (first, second) of a strip pixel: (top, bottom) row for a row strip,
  # (left, right) column for a column strip; output channels (top, bottom,
  # left, right).
  strips = -tf.concat([_block_diagonal(strip(row=0), strip(row=2)),
                       _block_diagonal(strip(col=0), strip(col=2))], -1)

  # coupling [10C, 14C]: z -> outputs (slots `_Z_SLOTS`, `_OUT_SLOTS`), with
  # alpha = 1 (`applier` scales the gv rows and the v columns by alpha).
  taps_from_z, out_from_taps, corner_pairs = _coupling_structure()
  taps_from_z = tf.constant(taps_from_z, work)
  out_from_taps = tf.constant(out_from_taps, work)
  tap_dense = tf.reshape(tf.matmul(kflat, w, transpose_a=True),
                         [9, c, c])                          # K_d^T W
  dense_gram = tf.matmul(w, w, transpose_a=True)             # W^T W
  # E_d = sum_d' T_d' (K_d'^T K_d) + alpha gv (W^T K_d); v = alpha (sum_d
  # T_d (K_d^T W) + gv W^T W); the sums z -> T and E -> outputs above.
  from_sums = tf.einsum("pi,pcqe,qo->icoe", taps_from_z,
                        tf.reshape(tap_gram, [9, c, 9, c]), out_from_taps)
  from_sums = tf.concat([
      from_sums[:, :, :1],
      tf.einsum("pi,pce->ice", taps_from_z, tap_dense)[:, :, None],
      from_sums[:, :, 2:]], 2)                               # [9, C, 14, C]
  from_gv = tf.einsum("qec,qo->coe", tap_dense, out_from_taps)
  from_gv = tf.concat([from_gv[:, :1], dense_gram[:, None],
                       from_gv[:, 2:]], 1)                   # [C, 14, C]
  coupling = tf.concat([from_sums, from_gv[None]], 0)        # [10, C, 14, C]
  # The ring corners, added back once: K_d^T K_d at each image corner.
  corner_terms = tf.scatter_nd(
      [[zi, oi] for zi, oi, _ in corner_pairs],
      tf.gather(blocks, [t * 10 for _, _, t in corner_pairs]), [10, 14, c, c])
  coupling += tf.transpose(corner_terms, [0, 2, 1, 3])
  coupling = tf.reshape(coupling, [10 * c, 14 * c])
  return tuple(tf.cast(x, dtype) for x in (kernel5, strips, coupling))


def _batch_height_width(shape):
  """(B, h, w) of a [B, h, w, C] shape (TensorShape, list or shape tensor):
  Python ints where they are known when tracing, scalar tensors otherwise."""
  if isinstance(shape, tf.TensorShape):
    shape = shape.as_list()
  if isinstance(shape, (list, tuple)) and all(
      isinstance(d, int) for d in shape[:3]):
    return tuple(int(d) for d in shape[:3])
  shape = tf.convert_to_tensor(shape)
  static = tf.get_static_value(shape, partial=True)
  dims = []
  for i in range(3):
    value = None if static is None else static[i]
    dims.append(int(value) if value is not None else shape[i])
  return tuple(dims)


def _shape_arg(values):
  """A reshape shape: a list if every entry is static, else a tensor."""
  if all(isinstance(v, int) for v in values):
    return list(values)
  return tf.stack([tf.cast(v, tf.int32) for v in values])


class GramOperator:
  """A A^T of subnet-1 / subnet-3, as C-channel kernels.

  Build once per set of weights (the constructor is one small matmul); apply
  once per latent step. `fields` lets a caller whose weights are fixed (the
  SavedModel export) build the kernels once and keep them. A loop applying
  the operator to maps of one shape calls `applier(shape)` once, before the
  loop; the function it returns runs only the per-step ops.

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

  # kernel5 [5, 5, C, C]: the zero-padded conv Gram. strips [1, 5, 2C, 4C]:
  # the (negated) ring corrections along a strip of the top and bottom rows
  # or of the left and right columns (a 1x5 conv kernel; `applier` uses it
  # as a [10C, 4C] matmul). coupling [10C, 14C]: the border sums, corner
  # pixels, image sum and gv to the terms they add (see `applier`).
  FIELDS = ("kernel5", "strips", "coupling")

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
    shapes = ([5, 5, c, c], [1, 5, 2 * c, 4 * c], [10 * c, 14 * c])
    return tuple(tf.zeros(s, dtype) for s in shapes)

  # ----------------------------------------------------------------- apply
  def applier(self, shape):
    """A A^T on maps of one shape, as a function `(gu, gv) -> (u, v)`.

    What depends only on the shape and the kernels is built here, once, so
    that a loop calling the returned function runs the per-step ops only:
    25 that do work, of which one convolution (5x5, C -> C) and two
    matmuls ([B, 10C] x [10C, 14C] and [B (w + 2 + h), 10C] x [10C, 4C]);
    the others are gathers, reshapes, sums and elementwise ops on small
    tensors (see the module docstring):

      strip = gu's top and bottom rows side by side (2C channels, w
              pixels), two zero pixels, its left and right columns (h
              pixels), with the 5 strip taps of each pixel: one gather,
              [B, w + 2 + h, 5, 2, C]
      z     = [border sums and corner pixels of the strip, sum of gu, gv]
      [everywhere, v_out, strip terms] = z coupling_alpha
      u_out = conv5x5(gu, kernel5) + everywhere
            + the strip pixels put back at their image pixels (one
              segment sum; a corner pixel gets a row and a column value) of
              (strip taps) strips + strip terms

    Args:
      shape: [B, h, w, C] (a `TensorShape`, a list or a shape tensor).

    Returns:
      A function (gu [B, h, w, C], gv [B, C]) -> (u_out, v_out).
    """
    batch, h, w = _batch_height_width(shape)
    dtype = self.dtype
    c = self.num_classes
    hw = h * w
    length = w + 2 + h
    pos = tf.range(length)
    in_row = pos < w
    in_col = pos >= w + 2
    y = pos - (w + 2)
    first, last = tf.equal(pos, 0), tf.equal(pos, w - 1)
    # Strip pixel -> image pixel (flat index) of its two channel halves;
    # the gap pixels read the zero pixel hw appended to gu.
    gap = tf.fill([length], hw)
    source = tf.stack([
        tf.where(in_row, pos, tf.where(in_col, y * w, gap)),
        tf.where(in_row, (h - 1) * w + pos,
                 tf.where(in_col, y * w + w - 1, gap)),
    ], 1)                                                    # [L, 2]
    # The five strip pixels x - 2 .. x + 2 around each x (the 1x5
    # convolution as one matmul); outside the strip, the zero pixel.
    source = tf.pad(source, [[2, 2], [0, 0]], constant_values=hw)
    gather = tf.stack([source[e:e + length] for e in range(5)], 1)  # [L,5,2]
    # The border sums and corner pixels as one weighted sum over the strip
    # (the z slots of _Z_SLOTS[:8]): [L, 2 halves, 8, 1].
    zero = tf.zeros_like(in_row)
    sums = tf.cast(tf.stack([
        tf.stack([in_row, zero, in_col, zero, first, zero, last, zero], 1),
        tf.stack([zero, in_row, zero, in_col, zero, first, zero, last], 1),
    ], 1), dtype)[..., None]
    # Strip terms (4C each) added along the whole strip, at pixel 0, at
    # pixel w - 1: [3, 1, L, 1].
    spread = tf.cast(tf.stack([tf.ones_like(in_row), first, last]),
                     dtype)[:, :, None]
    # Strip output (pixel, part) -> flat image pixel of the batch; -1 (the
    # gap, and the column parts of row pixels and vice versa) is dropped.
    drop = tf.fill([length], -1)
    to_image = tf.stack([
        tf.where(in_row, pos, drop),
        tf.where(in_row, (h - 1) * w + pos, drop),
        tf.where(in_col, y * w, drop),
        tf.where(in_col, y * w + w - 1, drop),
    ], 1)                                                    # [L, 4]
    offsets = tf.range(batch) * hw
    to_image = tf.reshape(
        tf.where(to_image >= 0, to_image + offsets[:, None, None], -1),
        [-1, 4 * length])                                    # [B, 4L]
    num_pixels = batch * hw
    alpha = 1.0 + 1.0 / tf.cast(hw, dtype)
    # alpha scales the gv rows and the v_out columns.
    is_gv = tf.range(10 * c) >= 9 * c
    is_v = tf.logical_and(tf.range(14 * c) >= c, tf.range(14 * c) < 2 * c)
    coupling = tf.where(tf.logical_or(is_gv[:, None], is_v[None, :]),
                        alpha * self.coupling, self.coupling)
    # Reshape shapes (static where the shape is: the loop state keeps it).
    b = batch if isinstance(batch, int) else -1
    flat_shape = _shape_arg([b, hw, c])
    taps_shape = _shape_arg([-1, 10 * c])
    ring_shape = _shape_arg([b, length, 4 * c])
    parts_shape = _shape_arg([b, 4 * length, c])
    image_shape = _shape_arg([b, h, w, c])
    kernel5 = self.kernel5
    strips = tf.reshape(self.strips, [10 * c, 4 * c])

    def apply(gu, gv):
      taps = tf.gather(tf.pad(tf.reshape(gu, flat_shape),
                              [[0, 0], [0, 1], [0, 0]]), gather, axis=1)
      z = tf.concat([
          tf.reshape(tf.reduce_sum(taps[:, :, 2, :, None] * sums, [1, 2]),
                     [-1, 8 * c]),
          tf.reduce_sum(gu, [1, 2]), gv], 1)
      everywhere, v_out, terms = tf.split(tf.matmul(z, coupling),
                                          [c, c, 12 * c], 1)
      ring = tf.reshape(tf.matmul(tf.reshape(taps, taps_shape), strips),
                        ring_shape)
      ring += tf.reduce_sum(
          tf.reshape(terms, [-1, 3, 1, 4 * c]) * spread, 1)
      border = tf.math.unsorted_segment_sum(
          tf.reshape(ring, parts_shape), to_image, num_pixels)
      u_out = (tf.nn.conv2d(gu, kernel5, 1, "SAME")
               + tf.reshape(everywhere, [-1, 1, 1, c])
               + tf.reshape(border, image_shape))
      return u_out, v_out

    return apply

  def apply(self, gu, gv):
    """A A^T (gu, gv).

    Args:
      gu: [B, h, w, C] gradient with respect to u3.
      gv: [B, C] gradient with respect to v3.

    Returns:
      (u_out [B, h, w, C], v_out [B, C]).
    """
    return self.applier(tf.shape(gu))(gu, gv)

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


def _tap_masks(n, dtype):
  """[n, 3]: [index + offset inside [0, n)] for offsets -1, 0, +1."""
  index = tf.range(n)
  return tf.cast(tf.stack(
      [index >= 1, tf.ones_like(index, tf.bool), index <= n - 2], axis=1),
      dtype)


def apply_v1_part(conv_kernel, dense_kernel, gu, gv):
  """A_v A_v^T (gu, gv): the part of A A^T that moves through v1.

  A = [A_u, A_v] splits by the two latent blocks, so A A^T = A_u A_u^T +
  A_v A_v^T (`dis_tf.modeling.latent.block_scales` scales the two). With
  s = A_v^T (gu, gv) = sum_d K_d T_d + W gv, one D-vector per example
  (T_d the masked sums of the module docstring):

    u_out(p) = sum_d mask_d(p) K_d^T s,    v_out = W^T s.

  It touches the D-channel kernels only through D-vectors (9 C D
  multiply-adds twice per example), never a D-channel map, so it needs no
  stored kernels.

  Args:
    conv_kernel: [3, 3, D, C] subnet-1 kernel.
    dense_kernel: [D, C] subnet-3 kernel.
    gu: [B, h, w, C] gradient with respect to u3.
    gv: [B, C] gradient with respect to v3.

  Returns:
    (u_out [B, h, w, C], v_out [B, C]).
  """
  dtype = gu.dtype
  kernel = tf.cast(conv_kernel, dtype)
  dense = tf.cast(dense_kernel, dtype)
  shape = tf.shape(gu)
  rows, cols = _tap_masks(shape[1], dtype), _tap_masks(shape[2], dtype)
  taps = tf.einsum("yi,xj,byxc->bijc", rows, cols, gu)         # T_d
  s = (tf.einsum("bijc,ijdc->bd", taps, kernel)
       + tf.matmul(gv, dense, transpose_b=True))                # [B, D]
  per_tap = tf.einsum("bd,ijdc->bijc", s, kernel)               # K_d^T s
  u_out = tf.einsum("yi,xj,bijc->byxc", rows, cols, per_tap)
  return u_out, tf.matmul(s, dense)
