"""The frustum energy of single-view reconstruction (paper 6.1, eq. 10).

    E(y; x) = sum_i CNN_i(x_i ⊕ pool_i(occupancy(y)))

`y` is a proposed frustum grid `[B, H, W, D]` (H = W = D = R: image row, image
column, depth bin); `x_i` are image feature maps `[B, h_i, w_i, f_i]`.
`pool_i` average-pools the grid anisotropically to `(h_i, w_i, d_i)` and the
`d_i` depth bins become channels, concatenated to the image features along
the feature axis. `CNN_i` is a short 2D network (`ige_tf.core.EnergyConv2D`):
two VALID convolutions, 3x3 then 3x3 (3x3 then 2x2 at the coarsest, 4^2,
level), softplus then softabs, summed over positions and channels. There are
no 3D convolutions.

Equal cost per level: with `d_i` and the filters proportional to `f_i` and
`f_i` halving as `h_i`, `w_i` double, every level costs
`h_i w_i (f_i + d_i) n_i` ~ constant multiply-adds.

Occupancy range: the inner optimizer's iterate `y` is a grid of LOGITS by
default (`occupancy="sigmoid"`): the energy pools `sigmoid(y)`, so the pooled
occupancies always lie in (0, 1) whatever step the optimizer takes, gradients
stay defined everywhere (no clipping kink) and the outer losses can be
computed stably from logits. `occupancy="identity"` pools `y` unchanged (for
iterates that already are occupancies).

Derivatives: occupancy + pooling is one op with hand-written first and
second derivatives (`pooled_occupancy`, `occupancy_gradient`), equal to
autodiff of the plain ops but keeping fewer grid-sized buffers for the inner
gradient and its outer derivative.
"""
import itertools
import math

import keras
import tensorflow as tf

from ige_tf.core import EnergyConv2D, track_sublayers
from ige_tf.voxel import flops

OCCUPANCY_TRANSFORMS = ("sigmoid", "identity")


# The longest reduction `pool_frustum` takes in one step. XLA on CPU
# rewrites a reduction over more elements into a windowed reduction
# followed by a short one, and materializes the windowed reduction's
# operand: inside a kernel whose pooled grid is an elementwise product
# (the fused unroll's `adjoint_levels`), one grid-sized buffer more
# (measured at 256^3: IGE-MN's finest level pools 64 depth cells per bin;
# docs/benchmarks.md, issue 11, round 5). Stages of at most 32 elements
# give the same means and read the grid once.
_MAX_REDUCTION = 32


def _reduction_stages(factor):
  """Factors whose product is `factor`, each the largest divisor <=
  `_MAX_REDUCTION` of what is left (e.g. 64 -> [32, 2]); `[]` for 1. What
  has no divisor up to the limit (a prime above it) stays one stage."""
  stages = []
  while factor > _MAX_REDUCTION:
    stage = next((f for f in range(_MAX_REDUCTION, 1, -1) if factor % f == 0),
                 None)
    if stage is None:
      break
    stages.append(stage)
    factor //= stage
  if factor > 1:
    stages.append(factor)
  return stages


def pool_frustum(grid, height, width, depth):
  """Anisotropic average pooling of frustum grids.

  Args:
    grid: float `[B, H, W, D]`; H, W, D static and divisible by
      `height`, `width`, `depth`.
    height: int h, output rows.
    width: int w, output columns.
    depth: int d, output depth bins.

  Returns:
    float `[B, h, w, d]`: the mean of each `(H/h, W/w, D/d)` block.
  """
  grid = tf.convert_to_tensor(grid)
  _, rows, cols, bins = grid.shape
  for name, full, pooled in (("H", rows, height), ("W", cols, width),
                             ("D", bins, depth)):
    if full is None or pooled < 1 or full % pooled:
      raise ValueError(
          f"cannot average-pool frustum grid axis {name} of size {full} "
          f"to {pooled}")
  # One reshape + mean per pooled axis, largest reduction first and none for
  # a factor of 1, so intermediates stay small; ranks stay <= 5 (the CPU
  # BroadcastTo kernel used by reduce_mean's gradient rejects a rank-7
  # single-reshape version). A factor above `_MAX_REDUCTION` is taken in
  # stages of at most that many elements (`_reduction_stages`).
  sizes = {"H": rows, "W": cols, "D": bins}
  targets = {"H": height, "W": width, "D": depth}
  for axis in sorted(sizes, key=lambda a: -(sizes[a] // targets[a])):
    for factor in _reduction_stages(sizes[axis] // targets[axis]):
      h, w, d = sizes["H"], sizes["W"], sizes["D"]
      target = sizes[axis] // factor
      if axis == "H":
        grid = tf.reduce_mean(
            tf.reshape(grid, [-1, target, factor, w * d]), axis=2)
      elif axis == "W":
        grid = tf.reduce_mean(
            tf.reshape(grid, [-1, h, target, factor, d]), axis=3)
      else:
        grid = tf.reduce_mean(
            tf.reshape(grid, [-1, h, w, target, factor]), axis=4)
      sizes[axis] = target
  return tf.reshape(grid, [-1, height, width, depth])


def pool_frustum_levels(grid, level_sizes, depth_bins):
  """`pool_frustum` for every energy level, computed as a pyramid.

  Levels are visited from the finest to the coarsest: the grid is first
  average-pooled over rows and columns to the level's `(h, h)` from the
  previous (finer) level's row/column pooling, then over depth to `d`. The
  result equals `pool_frustum(grid, h, h, d)` per level (averages of
  averages of equal-sized blocks), but the gradient with respect to `grid`
  (taken at every inner step, and differentiated again by the outer
  optimizer) is accumulated coarse-to-fine through the pyramid: one
  `[B, R, R, R]` sum of two terms instead of one full-size term per level.

  Args:
    grid: float `[B, R, R, R]`.
    level_sizes: ints h_i (any order); each must divide R.
    depth_bins: ints d_i, one per level, each dividing R.

  Returns:
    List of float `[B, h_i, h_i, d_i]`, in the order of `level_sizes`.
  """
  grid = tf.convert_to_tensor(grid)
  depth = grid.shape[3]
  pooled = [None] * len(level_sizes)
  current, current_size = grid, grid.shape[1]
  for index in sorted(range(len(level_sizes)),
                      key=lambda i: -level_sizes[i]):
    size = level_sizes[index]
    if current_size % size:  # Not nested: pool from the full grid.
      current, current_size = grid, grid.shape[1]
    current = pool_frustum(current, size, size, depth)
    current_size = size
    pooled[index] = pool_frustum(current, size, size, depth_bins[index])
  return pooled


def _pyramid_chains(level_sizes, resolution):
  """The row/column pooling chains of `pool_frustum_levels`.

  Returns:
    List of chains, each a list of level indices by decreasing size; a chain
    starts from the full grid and each level is pooled from the previous.
  """
  chains, current_size = [], resolution
  for index in sorted(range(len(level_sizes)), key=lambda i: -level_sizes[i]):
    if not chains or current_size % level_sizes[index]:
      chains.append([])
    chains[-1].append(index)
    current_size = level_sizes[index]
  return chains


def _repeat_depth(coarse, depth):
  """Every depth bin of `coarse` `[B, h, h, d]` repeated `depth / d` times:
  float `[B, h, h, depth]` (one broadcast; ranks stay <= 5)."""
  _, size, _, bins = coarse.shape
  coarse = tf.reshape(coarse, [-1, size, size, bins, 1])
  rows = tf.shape(coarse)[0]
  return tf.reshape(
      tf.broadcast_to(coarse, tf.stack([rows, size, size, bins,
                                        depth // bins])),
      [-1, size, size, depth])


def _repeat_rows_cols(coarse, factor, finer=None):
  """`finer + nearest-upsampled coarse` over rows and columns.

  Optionally added to a finer term in the same broadcast (no separate
  upsampled grid). Ranks stay <= 5 (the CPU broadcast limit).

  Args:
    coarse: float `[B, h, h, D]`.
    factor: int f.
    finer: optional float `[B, f h, f h, D]`.

  Returns:
    float `[B, f h, f h, D]`.
  """
  _, size, _, depth = coarse.shape
  coarse = tf.reshape(coarse, [-1, 1, size, 1, depth])
  if finer is None:
    rows = tf.shape(coarse)[0]
    fine = tf.broadcast_to(coarse, tf.stack([rows, factor, size, factor,
                                             depth]))
  else:
    fine = tf.reshape(finer, [-1, factor, size, factor, depth]) + coarse
  return tf.reshape(fine, [-1, size * factor, size * factor, depth])


def _upsample_rows_cols(coarse, factor, finer=None):
  """`finer + nearest-upsampled coarse / factor^2` over rows and columns:
  the transpose of an average pooling of rows and columns by `factor`
  (`_repeat_rows_cols` of the scaled `coarse`)."""
  return _repeat_rows_cols(coarse / float(factor * factor), factor, finer)


def unpool_frustum_levels(level_grads, level_sizes, depth_bins, size, depth):
  """The transpose of `pool_frustum_levels`: `sum_i P_i^T level_grads_i`.

  Accumulated coarse to fine along each pooling chain, every level's depth
  bins broadcast to the full depth and added to the upsampled coarser sum in
  one broadcast, so the full-size result is the only full-size tensor the
  finest level creates.

  Args:
    level_grads: list of float `[B, h_i, h_i, d_i]`, in the order of
      `level_sizes`.
    level_sizes: ints h_i.
    depth_bins: ints d_i.
    size: int R, rows = columns of the pooled grid.
    depth: int D, its depth bins.

  Returns:
    float `[B, R, R, D]`: the gradient of `sum_i <level_grads_i,
    pool_frustum_levels(grid)_i>` with respect to `grid`.
  """
  total = None
  for chain in _pyramid_chains(level_sizes, size):
    accumulated, accumulated_size = None, None
    for index in reversed(chain):
      h, d = level_sizes[index], depth_bins[index]
      term = _repeat_depth(level_grads[index] / float(depth // d), depth)
      if accumulated is not None:
        term = _upsample_rows_cols(accumulated, h // accumulated_size, term)
      accumulated, accumulated_size = term, h
    if accumulated_size != size:
      accumulated = _upsample_rows_cols(accumulated, size // accumulated_size)
    total = accumulated if total is None else total + accumulated
  return total


def unpool_part_groups(level_sizes, depth_bins, size, depth, num_parts=2):
  """How `unpool_frustum_parts` groups the levels: the split with the
  fewest elements.

  Levels are taken by decreasing size `h_i`; each group is a run of
  consecutive levels, and its part is a `[B, H_g, H_g, D_g]` grid with
  `H_g`, `D_g` the least common multiples of the group's `h_i`, `d_i`
  (so every level of the group is constant on the part's cells). Of the
  splits into `num_parts` runs (all levels in one run when there are fewer),
  the one whose parts hold the fewest elements `sum_g H_g^2 D_g` is chosen
  (ties: the first found).

  Args:
    level_sizes: ints h_i; each divides `size`.
    depth_bins: ints d_i, one per level, each dividing `depth`.
    size: int R, rows = columns of the full grid.
    depth: int D, its depth bins.
    num_parts: int >= 1, the number of parts.

  Returns:
    List of `(indices, rows, bins)`: the level indices of each part (by
    decreasing size), its `H_g` and `D_g`.
  """
  order = sorted(range(len(level_sizes)), key=lambda i: -level_sizes[i])
  count = max(1, min(num_parts, len(order)))

  def group(indices):
    return (indices, math.lcm(*[level_sizes[i] for i in indices]),
            math.lcm(*[depth_bins[i] for i in indices]))

  best, best_elements = None, None
  for cuts in itertools.combinations(range(1, len(order)), count - 1):
    bounds = (0,) + cuts + (len(order),)
    groups = [group(order[start:end])
              for start, end in zip(bounds[:-1], bounds[1:])]
    elements = sum(rows * rows * bins for _, rows, bins in groups)
    if best is None or elements < best_elements:
      best, best_elements = groups, elements
  for _, rows, bins in best:
    if size % rows or depth % bins:
      raise ValueError(
          f"unpool parts: levels {level_sizes} x {depth_bins} do not divide "
          f"the grid {size} x {size} x {depth}")
  return best


def unpool_frustum_parts(level_grads, level_sizes, depth_bins, size, depth,
                         num_parts=2):
  """`unpool_frustum_levels` as a few small grids, summed by broadcasting.

  `sum_i P_i^T level_grads_i` is piecewise constant: each level is constant
  on blocks of `(R/h_i, R/h_i, D/d_i)` cells. Grouping the levels
  (`unpool_part_groups`) gives `num_parts` small grids whose broadcast sum
  (`expand_frustum_parts`) is the full result; inside an XLA kernel that
  sum reads `num_parts` values per voxel instead of evaluating one
  broadcast per level (index arithmetic for each of up to 7 levels, the
  fused unroll's most repeated per-voxel work). With IGE-MN's levels at
  128^3 (h_i = 128 .. 4, h_i d_i = 512) two parts hold 1/8 of a grid.

  Args:
    level_grads: list of float `[B, h_i, h_i, d_i]`, in the order of
      `level_sizes`.
    level_sizes: ints h_i.
    depth_bins: ints d_i.
    size: int R, rows = columns of the full grid.
    depth: int D, its depth bins.
    num_parts: int, the number of parts.

  Returns:
    List of float `[B, H_g, H_g, D_g]` (`unpool_part_groups`), scaled so
    that `expand_frustum_parts(parts, size, depth)` equals
    `unpool_frustum_levels(level_grads, level_sizes, depth_bins, size,
    depth)`.
  """
  parts = []
  for indices, rows, bins in unpool_part_groups(level_sizes, depth_bins, size,
                                                depth, num_parts):
    part = unpool_frustum_levels(
        [level_grads[i] for i in indices], [level_sizes[i] for i in indices],
        [depth_bins[i] for i in indices], rows, bins)
    # The transpose of averaging over the part's cells of (size/rows)^2
    # (depth/bins) voxels each.
    parts.append(part / float((size // rows) ** 2 * (depth // bins)))
  return parts


def expand_frustum_parts(parts, size, depth):
  """The broadcast sum of `unpool_frustum_parts`' parts.

  Args:
    parts: list of float `[B, H_g, H_g, D_g]`, each `H_g` dividing `size`
      and `D_g` dividing `depth`.
    size: int R.
    depth: int D.

  Returns:
    float `[B, R, R, D]`: every part repeated over its cells, summed. Ranks
    stay <= 5 (the CPU broadcast limit).
  """
  total = None
  for part in parts:
    _, rows, _, bins = part.shape
    if depth != bins:
      part = _repeat_depth(part, depth)
    if size != rows:
      part = _repeat_rows_cols(part, size // rows)
    total = part if total is None else total + part
  return total


def pooled_occupancy(y, level_sizes, depth_bins, occupancy="sigmoid"):
  """`pool_frustum_levels(sigmoid(y))` with hand-written 1st and 2nd order.

  Same values and gradients as autodiff of `tf.sigmoid` +
  `pool_frustum_levels` (tested), with fewer full-size buffers. The inner
  optimizer takes the gradient with respect to `y` at every step,

      g = sigmoid'(y) * sum_i P_i^T a_i          (a_i: level gradients),

  and the outer optimizer differentiates `g` again. Here `g` is one
  `tf.custom_gradient` op (`occupancy_gradient`) that keeps only `y` and the
  small `a_i` for its own backward pass and recomputes `sigmoid(y)` and the
  broadcast sum there, instead of autodiff storing the sigmoid, the broadcast
  gradient and their products per step.

  Args:
    y: float `[B, R, R, D]` logits (or occupancies with "identity").
    level_sizes: ints h_i, each dividing R.
    depth_bins: ints d_i, each dividing D.
    occupancy: "sigmoid" or "identity".

  Returns:
    List of float `[B, h_i, h_i, d_i]`, in the order of `level_sizes`.
  """
  level_sizes, depth_bins = tuple(level_sizes), tuple(depth_bins)

  @tf.custom_gradient
  def pooled(y):
    levels = _pooled_occupancy_kernel(level_sizes, depth_bins, occupancy)(y)

    def grad_fn(*level_grads):
      level_grads = [tf.zeros_like(level) if g is None else g
                     for g, level in zip(level_grads, levels)]
      return occupancy_gradient(y, level_grads, level_sizes, depth_bins,
                                occupancy)

    return levels, grad_fn

  return pooled(y)


def occupancy_gradient(y, level_grads, level_sizes, depth_bins,
                       occupancy="sigmoid"):
  """`sigmoid'(y) * sum_i P_i^T a_i`, the VJP of `pooled_occupancy`.

  A `tf.custom_gradient` op of `(y, a_1, ..., a_n)` whose backward pass (the
  outer optimizer's second-order term), for an upstream `u [B, R, R, D]`, is

      d a_i = P_i(sigmoid'(y) u),
      d y   = u * sum_i P_i^T a_i * sigmoid''(y),
      sigmoid'' = sigmoid' (1 - 2 sigmoid),

  recomputing `sigmoid(y)` and the broadcast sum from the kept `y` and `a_i`.
  With "identity" occupancy `sigmoid'` is 1 and `d y` is 0.

  Args:
    y: float `[B, R, R, D]`.
    level_grads: list of float `[B, h_i, h_i, d_i]`.
    level_sizes, depth_bins: as for `pool_frustum_levels`.
    occupancy: "sigmoid" or "identity".

  Returns:
    float `[B, R, R, D]`.
  """
  forward, backward = _occupancy_gradient_kernels(
      tuple(level_sizes), tuple(depth_bins), occupancy, y.shape[1],
      y.shape[3])

  @tf.custom_gradient
  def gradient(y, *level_grads):
    total = forward(y, list(level_grads))

    def grad_fn(upstream):
      d_y, d_levels = backward(y, list(level_grads), upstream)
      return [d_y] + list(d_levels)

    return total, grad_fn

  return gradient(y, *level_grads)


_KERNELS = {}


def _pooled_occupancy_kernel(level_sizes, depth_bins, occupancy):
  """`pool_frustum_levels(sigmoid(y))` as one XLA cluster (no sigmoid grid)."""
  key = ("pooled", level_sizes, depth_bins, occupancy)
  if key not in _KERNELS:

    @tf.function(jit_compile=True, autograph=False)
    def kernel(y):
      occupied = tf.sigmoid(y) if occupancy == "sigmoid" else y
      return pool_frustum_levels(occupied, level_sizes, depth_bins)

    _KERNELS[key] = kernel
  return _KERNELS[key]


def _occupancy_gradient_kernels(level_sizes, depth_bins, occupancy, size,
                                depth):
  """`(forward, backward)` of `occupancy_gradient`, each one XLA cluster.

  Every full-grid operation of the op (sigmoid, the broadcast sum of the
  level gradients, their products, the pooling of the backward pass) is
  elementwise or a block reduction, which XLA fuses into loops over the
  grid: each kernel writes its one `[B, R, R, D]` result and no grid-sized
  temporary (measured in docs/benchmarks.md). Compiled once per
  configuration and input shape (`tf.function(jit_compile=True)`; CPU and
  GPU alike).

    forward(y, level_grads) -> g = sigmoid'(y) * sum_i P_i^T a_i
    backward(y, level_grads, u) -> (u * sum_i P_i^T a_i * sigmoid''(y),
                                    [P_i(sigmoid'(y) u)])
  """
  key = (level_sizes, depth_bins, occupancy, size, depth)
  if key in _KERNELS:
    return _KERNELS[key]

  def broadcast_sum(level_grads):
    return unpool_frustum_levels(level_grads, level_sizes, depth_bins, size,
                                 depth)

  @tf.function(jit_compile=True, autograph=False)
  def forward(y, level_grads):
    total = broadcast_sum(level_grads)
    if occupancy == "sigmoid":
      total = tf.raw_ops.SigmoidGrad(y=tf.sigmoid(y), dy=total)
    return total

  @tf.function(jit_compile=True, autograph=False)
  def backward(y, level_grads, upstream):
    if occupancy != "sigmoid":
      return tf.zeros_like(y), pool_frustum_levels(upstream, level_sizes,
                                                   depth_bins)
    occupied = tf.sigmoid(y)
    d_levels = pool_frustum_levels(
        tf.raw_ops.SigmoidGrad(y=occupied, dy=upstream), level_sizes,
        depth_bins)
    d_y = tf.raw_ops.SigmoidGrad(
        y=occupied, dy=upstream * broadcast_sum(level_grads)) * (
            1.0 - 2.0 * occupied)
    return d_y, d_levels

  _KERNELS[key] = (forward, backward)
  return forward, backward


def default_depth_bins(resolution, feature_channels):
  """`d_i = R f_i / f_0`: depth bins proportional to the feature channels.

  Args:
    resolution: int R.
    feature_channels: channels f_i per level, coarsest (largest f) first.

  Returns:
    Tuple of ints d_i (at least 1), each dividing R.

  Raises:
    ValueError: if some `d_i` does not divide R.
  """
  f0 = max(feature_channels)
  bins = tuple(max(1, (int(resolution) * int(f)) // f0)
               for f in feature_channels)
  for d in bins:
    if resolution % d:
      raise ValueError(
          f"depth bins {bins} (R f_i / f_0) do not divide resolution "
          f"{resolution}; pass depth_bins explicitly")
  return bins


def level_kernel_sizes(size):
  """Kernel sizes of `CNN_i` for a level of spatial size `size`.

  Two 3x3 VALID convolutions; when the first leaves fewer than 3 positions
  (the 4^2 level) the second kernel covers what is left: 3x3 then 2x2.
  """
  if size < 3:
    raise ValueError(
        f"energy level of spatial size {size} is too small for a 3x3 VALID "
        "convolution")
  return (3, min(3, size - 2))


@keras.saving.register_keras_serializable(package="ige_tf")
class FrustumEnergy(keras.layers.Layer):
  """Multi-level frustum energy `E(y; x) = sum_i CNN_i(x_i ⊕ pool_i(y))`.

  Args:
    resolution: int R, the frustum grid is `[B, R, R, R]`.
    level_sizes: spatial size h_i = w_i of each image feature map, in the
      order of the context list (e.g. `(4, 8, 16, 32)`).
    feature_channels: channels f_i of each image feature map.
    depth_bins: depth bins d_i per level; default `R f_i / max(f)`.
    filters: per level, the two convolutions' filters `(n_i, m_i)`; default
      `(2 f_i, 2 f_i)`.
    kernel_scale: factor on each level's last (softabs) Glorot kernel.
    occupancy: "sigmoid" (iterate holds logits, default) or "identity".

  Call args:
    y: float `[B, R, R, R]` proposed frustum grid (logits or occupancies).
    context: list of float `[B, h_i, h_i, f_i]` image feature maps.

  Returns:
    float `[B]` energy.
  """

  def __init__(self, resolution, level_sizes, feature_channels,
               depth_bins=None, filters=None, kernel_scale=1e-3,
               occupancy="sigmoid", **kwargs):
    super().__init__(**kwargs)
    self.resolution = int(resolution)
    self.level_sizes = tuple(int(s) for s in level_sizes)
    self.feature_channels = tuple(int(f) for f in feature_channels)
    if len(self.level_sizes) != len(self.feature_channels):
      raise ValueError(
          f"FrustumEnergy: {len(self.level_sizes)} level sizes but "
          f"{len(self.feature_channels)} feature channel counts")
    if depth_bins is None:
      depth_bins = default_depth_bins(self.resolution, self.feature_channels)
    self.depth_bins = tuple(int(d) for d in depth_bins)
    if filters is None:
      filters = [(2 * f, 2 * f) for f in self.feature_channels]
    self.filters = tuple(tuple(int(n) for n in pair) for pair in filters)
    if not (len(self.depth_bins) == len(self.filters) == len(self.level_sizes)):
      raise ValueError(
          "FrustumEnergy: level_sizes, depth_bins and filters need one entry "
          f"per level, got {len(self.level_sizes)}, {len(self.depth_bins)}, "
          f"{len(self.filters)}")
    for size, d in zip(self.level_sizes, self.depth_bins):
      if self.resolution % size or self.resolution % d:
        raise ValueError(
            f"FrustumEnergy: level ({size}, {size}, {d}) does not divide the "
            f"resolution {self.resolution}")
    if occupancy not in OCCUPANCY_TRANSFORMS:
      raise ValueError(
          f"occupancy must be one of {OCCUPANCY_TRANSFORMS}, got {occupancy!r}")
    self.occupancy = occupancy
    self.kernel_scale = float(kernel_scale)
    self.level_cnns = [
        EnergyConv2D(filters=pair, kernel_sizes=level_kernel_sizes(size),
                     kernel_scale=self.kernel_scale, dtype=self.dtype_policy,
                     name=f"level_{size}")
        for size, pair in zip(self.level_sizes, self.filters)
    ]
    track_sublayers(self, self.level_cnns)

  def level_input_shapes(self):
    """Per level, the CNN input shape `(h_i, h_i, f_i + d_i)` (no batch)."""
    return [(s, s, f + d) for s, f, d in
            zip(self.level_sizes, self.feature_channels, self.depth_bins)]

  def build(self, y_shape, context_shape=None):
    del y_shape, context_shape  # Everything follows from the configuration.
    for cnn, shape in zip(self.level_cnns, self.level_input_shapes()):
      cnn.build((None,) + shape)

  def call(self, y, context, training=None):
    del training
    levels = pooled_occupancy(y, self.level_sizes, self.depth_bins,
                              self.occupancy)
    return self.energy_of_levels(levels, context)

  def energy_of_levels(self, levels, context):
    """`sum_i CNN_i(x_i ⊕ levels_i)`: the energy given the pooled occupancy.

    Args:
      levels: list of float `[B, h_i, h_i, d_i]`, `pool_i(occupancy(y))`.
      context: list of float `[B, h_i, h_i, f_i]` (or one tensor for one
        level).

    Returns:
      float `[B]` energy (the CNNs' compute dtype under mixed precision).
    """
    context = list(context) if isinstance(context, (list, tuple)) else [context]
    if len(context) != len(self.level_cnns):
      raise ValueError(
          f"FrustumEnergy expects {len(self.level_cnns)} context feature maps "
          f"(sizes {self.level_sizes}), got {len(context)}")
    energies = []
    for cnn, features, pooled in zip(self.level_cnns, context, levels):
      inputs = tf.concat([tf.cast(features, pooled.dtype), pooled], axis=-1)
      energies.append(cnn(inputs))
    return tf.add_n(energies)

  def compute_output_shape(self, y_shape, context_shape=None):
    return (y_shape[0],)

  def multiply_adds(self):
    """Multiply-adds of one energy evaluation per example, per level.

    Returns:
      List of ints, one per level (convolutions only; pooling, activations
      and sums are not multiply-adds of a weight layer).
    """
    counts = []
    for size, (f, d), pair in zip(
        self.level_sizes, zip(self.feature_channels, self.depth_bins),
        self.filters):
      total, rows, channels = 0, size, f + d
      for k, filters in zip(level_kernel_sizes(size), pair):
        rows = rows - k + 1
        total += flops.conv_multiply_adds((rows, rows), (k, k), channels,
                                          filters)
        channels = filters
      counts.append(total)
    return counts

  def get_config(self):
    config = super().get_config()
    config.update(resolution=self.resolution,
                  level_sizes=list(self.level_sizes),
                  feature_channels=list(self.feature_channels),
                  depth_bins=list(self.depth_bins),
                  filters=[list(p) for p in self.filters],
                  kernel_scale=self.kernel_scale,
                  occupancy=self.occupancy)
    return config
