"""The fused unroll: a hand-written adjoint of IGE's whole voxel inner loop.

For a `FrustumEnergy` under an `UnrolledSGD` without momentum (what
`models.ige_voxel_model` builds) and a loss with a sums form
(`ige_tf.voxel.losses`), one inner step is, with `P_i` the level poolings,
`U_i = P_i^T`, `s = sigmoid` (or the identity) and lr, c the step size and
clip value:

    p_t = P(s(y_t))                       small: [B, h_i, h_i, d_i] per level
    G_t = dE/dp (p_t; x)                  small: the 2D CNNs' backward pass
    S_t = sum_i U_i G_t,i,  g_t = s'(y_t) S_t
    y_{t+1} = y_t - lr clip(g_t, -c, c)

so every iterate `y_t` is an elementwise function of `y_0` and the small
`G_0 .. G_{t-1}`: a fused XLA kernel recomputes it per voxel (t elementwise
iterations, no CNN evaluation; the kernels take each `S_k` as its few small
parts, below), and nothing grid-sized but `y_0`, the last
iterate `y_T` (live at the end of the forward pass anyway; its only
backward use is the first kernel, `loss_gradient`) and the labels is kept
between the forward and the backward pass, whatever T.

The per-step loss `L_t = loss_from_statistics(sums of elementwise terms at
y_t, sums of the labels)` is folded in. The backward pass walks t = T-1 ..
0 with the adjoint `a = d Loss / d y_{t+1}` (starting from `d L_T / d y_T`,
kernel `loss_gradient` at the kept `y_T`):

    b = -lr 1[-c <= g_t <= c] a                       (adjoint of g_t)
    pass 1 (kernel `adjoint_levels`, small outputs): d G_t,i = P_i(s'(y_t) b),
        d lr += -sum a clip(g_t),  d c += sum_{g_t > c} (-lr a)
                                          - sum_{g_t < -c} (-lr a)
        (the unclipped part of d lr from the small d G_t and G_t, the
        latter as the second order below recomputes it)
    small: second order of the CNNs at p_t (nested tapes on the pooled
        levels): d p_t, d x, d weights from d G_t and d E_t
    pass 2 (kernel `adjoint_grid`, writes the new adjoint):
        a <- a + b s''(y_t) S_t + s'(y_t) sum_i U_i d p_t,i + d L_t / d y_t

and `d Loss / d y_0 = a` flows on into the initial estimate. Both passes
of a backward step t < T recompute `y_t` from `y_0` inside their kernel (t
elementwise iterations, no grid written; a kernel cannot run before its
input `a` exists), so the grid-sized buffers of the backward pass are
`y_0`, `a`, the new `a`, the labels and `adjoint_levels`' XLA temporaries
(the pooling's operand and its first row/column level, 1.25 grids; the
clipped sum's per-example sum adds none: moving it to pass 2 was measured
and saved no memory). The CNNs' second order of step t waits for its
upstream `d G_t` (a control dependency): otherwise the executor runs its
forward half during the forward pass and keeps every step's CNN
activations until the backward pass.

Forward pass, per step t: the CNNs' first order (`cnn_first_order`: E_t,
G_t from p_t), then three kernels, each holding as few grids at once as it
can: `squared_norm` (`||g_t||^2`, no grid written), `descent` (writes
`y_{t+1}` only) and `pool` (`p_{t+1} = P(s(y_{t+1}))` and the loss sums at
`y_{t+1}`; also p_0 and the sums at y_0); the last iterate is not pooled,
kernel `sums` takes its loss sums. So `y_t` is dead before the pooling's
temporaries exist (one grid less than one kernel doing all four, which
held `y_t`, `y_{t+1}` and the pooling's temporaries at once), and
`descent` keeps no `s(y_t)`: with the norm in the same kernel XLA kept it
for its two users, one grid. Traced at 256^3, B = 2, these kernels and
`pool_frustum`'s staged reductions took the training step's peak from 726
to 497 MB; at 128^3, B = 4, from 255 to 220-227 MB, at the same kernel
CPU time (docs/benchmarks.md, issue 11, "Round 5").

`S = sum_i U_i G_i` in the kernels: each kernel evaluating `S_t` (or
`U d p_t`) per voxel from the levels did one broadcast per level (up to 7,
each with its own index arithmetic), and `S` is evaluated 27 times per
voxel in one unroll at T = 3 (in every recomputed iteration, and in each
fusion of a kernel that needs `g_t`). Kernel `unpool_parts` turns the
levels of a step into `UNPOOL_PARTS` = 3 small grids
(`energy.unpool_frustum_parts`: at 128^3 `[B, 128, 128, 4]`, `[B, 64, 64,
16]`, `[B, 16, 16, 128]`, 0.078 grids; at 256^3 0.043 grids), and the grid
kernels sum them by broadcasting (`energy.expand_frustum_parts`, three
reads per voxel). The forward pass keeps the parts of every step for the
backward's recomputation instead of the levels `G_t` (those of `d lr` come
from the CNNs' second order, which recomputes `G_t` anyway). Measured
(session 8, `bench/bench_voxel_scaling.py --mode=kernels`, pairs against
the previous code): the grid kernels' CPU time at 128^3, B = 4, fell by
13-21 %, at 256^3, B = 2, by 19-34 %; the traced step peak stayed within
the allocator's spread (docs/benchmarks.md, issue 11, "Round 6").

Not kept: recomputing `y_t` in the forward kernel from `y_0` instead of
writing `y_{t+1}` (XLA wrote 3.25 grids of temporaries, 20 % more CPU
time; round 2); sharing one recomputed `y_t` between the two backward
passes (kernel `iterate`), with or without `y_{T-1}` kept from the
forward pass: it saves 33-81 of ~750 CPU ms of the inner loop's kernels
at 128^3, but the training step's peak at 256^3 goes back to 712-719 MB (one
grid more, and the allocator hands `adjoint_levels` a 256 MB chunk for
its 160 MB; round 5). With `store_iterates=True` the forward pass keeps
`y_1 .. y_{T-1}` too (T - 1 more grids) and nothing is recomputed; both
give the same values (tested). Round 7 (session 9) measured and did not
keep: the sigmoid as `0.5 + 0.5 tanh(y/2)` (no cheaper per voxel;
XLA then fuses the t = 2 recomputation without writing `y_1`, but
evaluates `y_1` once per user and is slower), the loss sums stacked into
one reduction (`sums` twice as slow), and round 6's clipped sum in the
finest level's pooling (`adjoint_levels` -20 %, but 1/16 grid more
temporaries at the backward peak; docs/benchmarks.md, issue 11,
"Round 7").

XLA on CPU materializes the operand of a pooling (a reduction over major
axes, and any reduction over more than 32 elements, which it rewrites
into a windowed one: `energy.pool_frustum` takes those in stages) and
fuses no expensive producer (a sigmoid) into several users; per-example
sums are products with ones (`losses.sum_per_example`) that read their
producer in place. So `pool` computes `s(y)` once and lets the loss sums
share it with the pooling (no memory against ordering the reductions
by data dependencies, session 5's `_after`, removed in session 6 round 4).

Every full-grid pass is one `tf.function(jit_compile=True)` kernel (CPU and
GPU), compiled once per configuration and shape (`_KERNELS`). Values and
every gradient equal `UnrolledSGD` + the loss of the returned steps (tested
in float64). Anything else (momentum, another energy, a loss without a sums
form) is refused by `unsupported_reason`, and the caller falls back.

The memory saving is realized inside `tf.function`, as in training: an
eager outer `GradientTape` also records the kernels of the forward pass
(as for `UnrolledSGD`'s recomputed steps).
"""
import tensorflow as tf

from ige_tf.voxel.energy import FrustumEnergy
from ige_tf.voxel.energy import expand_frustum_parts
from ige_tf.voxel.energy import pool_frustum_levels
from ige_tf.voxel.energy import unpool_frustum_parts
from ige_tf.voxel.losses import per_example_shape
from ige_tf.voxel.losses import sum_per_example

# The number of parts of `U G` the grid kernels take
# (`energy.unpool_frustum_parts`).
UNPOOL_PARTS = 3


def has_sums_form(loss_fn):
  """Whether a per-example loss exposes the sums form of
  `ige_tf.voxel.losses` (`elementwise_statistics`, `label_statistics`,
  `loss_from_statistics`)."""
  return all(callable(getattr(loss_fn, name, None)) for name in (
      "elementwise_statistics", "label_statistics", "loss_from_statistics"))


def unsupported_reason(optimizer, loss_fn):
  """Why `fused_unroll` cannot take this optimizer and loss (str), or None.

  Args:
    optimizer: an `UnrolledSGD` layer.
    loss_fn: per-example loss `(labels, logits) -> [B]`.
  """
  energy = optimizer.energy
  if not isinstance(energy, FrustumEnergy):
    return f"the energy is a {type(energy).__name__}, not a FrustumEnergy"
  if optimizer.momentum is not None:
    return "the inner optimizer uses momentum"
  if optimizer.num_steps < 1:
    return "the inner optimizer takes no step"
  if not has_sums_form(loss_fn):
    return (f"the loss {type(loss_fn).__name__} has no sums form "
            "(elementwise_statistics, label_statistics, "
            "loss_from_statistics)")
  return None


def cnn_first_order(energy, levels, context):
  """The energy and its gradient at the pooled levels (the 2D CNNs' forward
  and backward pass; small tensors only).

  Args:
    energy: a `FrustumEnergy`.
    levels: list of float `[B, h_i, h_i, d_i]`, the pooled occupancy p_t.
    context: list of float `[B, h_i, h_i, f_i]`, the feature maps.

  Returns:
    `(E [B], G_t)`: the energy per example and `dE/dp` at `levels` (list
    like `levels`).
  """
  with tf.GradientTape() as tape:
    tape.watch(levels)
    value = energy.energy_of_levels(levels, context)
    total = tf.reduce_sum(value)
  return value, tape.gradient(total, levels)


def cnn_second_order(energy, levels, context, variables, d_levels, d_energy):
  """The backward pass of `cnn_first_order` (the CNNs' second order).

  Args:
    energy, levels, context: as `cnn_first_order`.
    variables: list of the trainable variables to differentiate.
    d_levels: list like `levels`, the upstream gradient of `G_t`.
    d_energy: float `[B]` upstream gradient of the energy, or None.

  Returns:
    `(d levels, d context, d variables, G)`: lists like `levels`, `context`,
    `variables` (zeros where unconnected), and the first order's `dE/dp`
    at `levels` (recomputed here; list like `levels`).
  """
  with tf.GradientTape() as tape:
    tape.watch(list(levels) + list(context) + list(variables))
    value, gradient = cnn_first_order(energy, levels, context)
  upstream = list(d_levels) + [
      tf.zeros_like(value) if d_energy is None else
      tf.cast(d_energy, value.dtype)]
  grads = tape.gradient(
      list(gradient) + [value], list(levels) + list(context)
      + list(variables), output_gradients=upstream,
      unconnected_gradients=tf.UnconnectedGradients.ZERO)
  num_levels, num_context = len(levels), len(context)
  return (grads[:num_levels], grads[num_levels:num_levels + num_context],
          grads[num_levels + num_context:], gradient)


class _Kernels:
  """The full-grid passes of `fused_unroll` for one configuration.

  `history` arguments are lists of the unpooled level gradients `U G_k`
  of the steps between the given grid and `y_t`, each in the parts of
  `unpool_parts` (list of small grids); every kernel first recomputes
  `y_t` from them (none when the iterate is stored). `parts` arguments are
  such parts of one step. Labels enter in their own dtype and are cast in
  the kernel.
  """

  # The kernels (each a `tf.function(jit_compile=True)` of the method named
  # with a leading underscore), in the order `fused_unroll` first calls
  # them; `bench/bench_voxel_scaling.py --mode=kernels` times each call.
  NAMES = ("pool", "unpool_parts", "squared_norm", "descent", "sums",
           "loss_gradient", "adjoint_levels", "adjoint_grid")

  def __init__(self, energy, loss_fn, size, depth, clipped,
               num_parts=UNPOOL_PARTS):
    self.level_sizes = energy.level_sizes
    self.depth_bins = energy.depth_bins
    self.occupancy = energy.occupancy
    self.size, self.depth, self.clipped = size, depth, clipped
    self.num_parts = num_parts
    self.statistics = loss_fn.elementwise_statistics
    jit = lambda fn: tf.function(fn, jit_compile=True, autograph=False)  # pylint: disable=unnecessary-lambda-assignment
    for name in self.NAMES:  # `self.pool = jit(self._pool)`, ...
      setattr(self, name, jit(getattr(self, "_" + name)))

  # -- elementwise pieces (inside the kernels) ------------------------------
  def _occupancy(self, y):
    """`(s(y), s'(y), s''(y))`; scalars for the identity's derivatives."""
    if self.occupancy != "sigmoid":
      return y, 1.0, 0.0
    s = tf.sigmoid(y)
    first = s * (1.0 - s)
    return s, first, first * (1.0 - 2.0 * s)

  def _pool_levels(self, grid):
    return pool_frustum_levels(grid, self.level_sizes, self.depth_bins)

  def _unpool(self, parts):
    return expand_frustum_parts(list(parts), self.size, self.depth)

  def _gradient(self, y, parts):
    """`(g, S, s'(y), s''(y))` of the step at `y` with `S = U G` given by
    its parts."""
    _, first, second = self._occupancy(y)
    total = self._unpool(parts)
    return first * total, total, first, second

  def _clip(self, g, clip):
    return tf.clip_by_value(g, -clip, clip) if self.clipped else g

  def _recompute(self, y, history, lr, clip):
    for parts in history:
      g = self._gradient(y, parts)[0]
      y = y - lr * self._clip(g, clip)
    return y

  def _shared_sums(self, labels, y):
    """Per-example sums of the loss terms at `y` (list of float `[B]`),
    unordered. In `pool` the pooling materializes `s(y)` (XLA on CPU fuses
    no producer into a reduction over major axes), and the sums of terms of
    `s(y)` (continuous IoU's `p y`, `p`) read that buffer (common
    subexpression) instead of evaluating the sigmoid once more each; in
    `sums` XLA materializes `s(y)` for the two terms (one grid).
    `sum_per_example` holds no grid-sized operand of its own."""
    labels = tf.cast(labels, y.dtype)
    return [sum_per_example(term) for term in self.statistics(labels, y)]

  def _loss_terms_gradient(self, labels, y, d_sums):
    """`d L / d y` (elementwise) for upstream gradients `d_sums` of the sums."""
    labels = tf.cast(labels, y.dtype)
    with tf.GradientTape() as tape:
      tape.watch(y)
      terms = self.statistics(labels, y)
      total = tf.add_n([tf.reduce_sum(per_example_shape(d, y) * term)
                        for d, term in zip(d_sums, terms)])
    return tape.gradient(total, y,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  # -- the kernels ----------------------------------------------------------
  def _pool(self, y, labels):
    """`(P(s(y_t)), loss sums at y_t)` from `y_t` `[B, R, R, R]` alone: the
    levels the CNNs see (list of `[B, h_i, h_i, d_i]`) and the step's loss
    sums (list of `[B]`)."""
    pooled = self._pool_levels(self._occupancy(y)[0])
    return pooled, self._shared_sums(labels, y)

  def _unpool_parts(self, levels):
    """The parts of `U G = sum_i U_i G_i` (`energy.unpool_frustum_parts`:
    a few small grids, 0.078 grids at IGE-MN's 128^3) from the level
    gradients G (list of `[B, h_i, h_i, d_i]`). The grid kernels take
    these instead of the levels: inside them `U G` reads one value per part
    and voxel instead of one broadcast per level."""
    return unpool_frustum_parts(list(levels), self.level_sizes,
                                self.depth_bins, self.size, self.depth,
                                self.num_parts)

  def _squared_norm(self, y, parts):
    """`||g_t||^2 [B]` at `y_t` `[B, R, R, R]` for the parts of `U G_t`
    (a diagnostic; no grid written)."""
    g = self._gradient(y, parts)[0]
    return sum_per_example(g * g)

  def _descent(self, y, parts, lr, clip):
    """One descent step: `y_{t+1}` `[B, R, R, R]` from `y_t` and the parts
    of `U G_t`.

    Only `y_{t+1}` is written: the norm in the same kernel made XLA keep
    `s(y_t)` for its two users (one grid), and the pooling of `y_{t+1}`
    is the next kernel's, so `y_t` is dead before its temporaries exist.
    """
    return y - lr * self._clip(self._gradient(y, parts)[0], clip)

  def _sums(self, y, labels):
    """The loss sums (list of `[B]`) at `y_T` (the last iterate is not
    pooled)."""
    return self._shared_sums(labels, y)

  def _loss_gradient(self, y, history, labels, d_sums, lr, clip):
    """`d L / d y_t`, `y_t` recomputed from `y` and `history`."""
    return self._loss_terms_gradient(
        labels, self._recompute(y, history, lr, clip), d_sums)

  def _step_adjoint(self, y, parts, adjoint, lr, clip):
    """`(b, g, S, s', s'')` of step t at `y_t` for the adjoint of y_{t+1}."""
    g, total, first, second = self._gradient(y, parts)
    b = -lr * adjoint
    if self.clipped:
      inside = tf.logical_and(g >= -clip, g <= clip)
      b = tf.where(inside, b, tf.zeros_like(b))
    return b, g, total, first, second

  def _adjoint_levels(self, y, history, parts, adjoint, lr, clip):
    """Pass 1: `(q [levels], o)`, only small outputs: `d G_t = -lr q`,
    and `hyper_gradients` gives `d lr`, `d c`; `parts` those of `U G_t`.

    `q_i = P_i(s'(y_t) 1[inside] a)` and the clipped part
    `o = sum a sign(g_t) 1[|g_t| > c]` (a scalar; 0 without clipping).
    The pooling's operand is the only grid-sized temporary (the
    per-example sum reads its producer in place; measured: moving it to
    pass 2 saved no memory).
    """
    y = self._recompute(y, history, lr, clip)
    g, _, first, _ = self._gradient(y, parts)
    weighted = first * adjoint
    if self.clipped:
      inside = tf.logical_and(g >= -clip, g <= clip)
      weighted = tf.where(inside, weighted, tf.zeros_like(weighted))
    pooled = self._pool_levels(weighted)
    clipped_part = tf.zeros([], y.dtype)
    if self.clipped:
      # +1 where g > c, -1 where g < -c, 0 inside (bounds included).
      outside = (tf.cast(g > clip, g.dtype) - tf.cast(g < -clip, g.dtype))
      clipped_part = tf.reduce_sum(sum_per_example(adjoint * outside))
    return pooled, clipped_part

  @staticmethod
  def hyper_gradients(pooled, clipped_part, levels, lr, clip):
    """`(d lr, d c)` of step t from `adjoint_levels`' `(q, o)` and the
    level gradients `G_t` (small tensors only).

    The unclipped part of `d lr = -sum a clip(g_t)`,
    `-sum_inside a s' S_t`, is `-sum_i <q_i, G_t,i>` (`U_i = P_i^T`), so
    only the clipped part needed a second reduction over the grid:
    `d lr = -sum_i <q_i, G_t,i> - c o`, `d c = -lr o` (None without
    clipping).
    """
    d_lr = -tf.add_n([tf.reduce_sum(q * tf.cast(level, q.dtype))
                      for q, level in zip(pooled, levels)])
    d_clip = None
    if clip is not None:
      d_lr -= clip * clipped_part
      d_clip = -lr * clipped_part
    return d_lr, d_clip

  def _adjoint_grid(self, y, history, parts, adjoint, d_parts, labels,
                    d_sums, lr, clip):
    """Pass 2: the adjoint of `y_t` `[B, R, R, R]` (one grid written);
    `parts` those of `U G_t`, `d_parts` of `U d p_t`."""
    y = self._recompute(y, history, lr, clip)
    b, _, total, first, second = self._step_adjoint(y, parts, adjoint, lr,
                                                    clip)
    return (adjoint + b * second * total + first * self._unpool(d_parts)
            + self._loss_terms_gradient(labels, y, d_sums))


_KERNELS = {}


def _kernels(energy, loss_fn, shape, clipped):
  config = getattr(loss_fn, "get_config", dict)()
  key = (energy.level_sizes, energy.depth_bins, energy.occupancy,
         type(loss_fn), tuple(sorted(config.items())), shape[1], shape[3],
         clipped)
  if key not in _KERNELS:
    _KERNELS[key] = _Kernels(energy, loss_fn, shape[1], shape[3], clipped)
  return _KERNELS[key]


def fused_unroll(optimizer, initial, context, labels, loss_fn,
                 store_iterates=False):
  """`optimizer(initial, context, step_loss=loss)` by the hand-written adjoint.

  Args:
    optimizer: `UnrolledSGD` over a `FrustumEnergy`, without momentum
      (`unsupported_reason(optimizer, loss_fn)` must be None).
    initial: float `[B, R, R, R]` initial estimate y_0 (logits).
    context: list of float `[B, h_i, h_i, f_i]`, the energy's feature maps.
    labels: `[B, R, R, R]` occupancy (float, bool or uint8; cast in the
      kernels), no gradient.
    loss_fn: per-example loss with a sums form (`ige_tf.voxel.losses`).
    store_iterates: keep `y_1 .. y_{T-1}` too (T - 1 grids; `y_T` is
      always kept) instead of recomputing them from `y_0` in the backward
      kernels (module docstring).

  Returns:
    dict `{"step_loss": [T+1, B], "energy": [T, B], "grad_norm": [T, B]}`
    as `UnrolledSGD.call(..., step_loss=...)`: `step_loss[t]` is
    `loss_fn(labels, y_t)`, `energy[t]` the energy at `y_t`, `grad_norm[t]`
    the norm of the unclipped energy gradient at `y_t` (no gradient).

  Raises:
    ValueError: the optimizer or loss is unsupported (the reason).
  """
  reason = unsupported_reason(optimizer, loss_fn)
  if reason is not None:
    raise ValueError(f"fused_unroll: {reason}")
  energy, num_steps = optimizer.energy, optimizer.num_steps
  initial = tf.convert_to_tensor(initial)
  dtype = initial.dtype
  lr = tf.cast(optimizer.learning_rate, dtype)
  clip = (None if optimizer.clip_value is None else
          tf.cast(optimizer.clip_value, dtype))
  context = list(context) if isinstance(context, (list, tuple)) else [context]
  kernels = _kernels(energy, loss_fn, initial.shape, clip is not None)
  hyper = [lr] + ([] if clip is None else [clip])
  # The kernels take a clip tensor even without clipping (then unused).
  clip_arg = lambda c: lr if c is None else c  # pylint: disable=unnecessary-lambda-assignment

  @tf.custom_gradient
  def unrolled(*tensors):
    y0 = tensors[0]
    step_lr = tensors[1]
    step_clip = None if clip is None else tensors[2]
    step_context = list(tensors[1 + len(hyper):])
    # Sums of the labels alone (e.g. IoU's |y|), the same at every step.
    label_sums = loss_fn.label_statistics(labels)
    pooled, sums = kernels.pool(y0, labels)
    all_pooled, all_sums, history = [pooled], [sums], []
    energies, squared_norms, iterates = [], [], [y0]
    y = y0
    for t in range(num_steps):
      value, levels = cnn_first_order(energy, pooled, step_context)
      parts = kernels.unpool_parts(levels)
      squared = kernels.squared_norm(y, parts)
      y = kernels.descent(y, parts, step_lr, clip_arg(step_clip))
      history.append(parts)
      energies.append(value)
      squared_norms.append(squared)
      if t + 1 < num_steps:
        pooled, sums = kernels.pool(y, labels)
        all_pooled.append(pooled)
        if store_iterates:
          iterates.append(y)
      else:
        # y_T is live at the end of the forward pass anyway: kept for the
        # first backward kernel (the others recompute theirs from y_0).
        sums = kernels.sums(y, labels)
        iterates.append(y)
      all_sums.append(sums)
    del y
    losses = tf.stack([loss_fn.loss_from_statistics(s, label_sums)
                       for s in all_sums])
    outputs = (losses, tf.stack(energies),
               tf.stack([tf.sqrt(s) for s in squared_norms]))

    def grad_fn(d_losses, d_energies, d_grad_norms, variables=None):
      del d_grad_norms  # Diagnostic without gradient.
      variables = list(variables or [])
      if d_losses is None:
        d_losses = tf.zeros_like(losses)
      d_losses = tf.unstack(d_losses, num=num_steps + 1, axis=0)
      # Upstream of each step's sums: the small loss function's gradient.
      d_sums = []
      for t in range(num_steps + 1):
        with tf.GradientTape() as tape:
          tape.watch(all_sums[t])
          loss = loss_fn.loss_from_statistics(all_sums[t], label_sums)
        d_sums.append(tape.gradient(
            loss, all_sums[t], output_gradients=d_losses[t],
            unconnected_gradients=tf.UnconnectedGradients.ZERO))
      adjoint = kernels.loss_gradient(iterates[-1], [], labels,
                                      d_sums[num_steps], step_lr,
                                      clip_arg(step_clip))
      d_lr = tf.zeros_like(step_lr)
      d_clip = tf.zeros_like(step_lr)
      d_context = [tf.zeros_like(x) for x in step_context]
      d_variables = [tf.zeros_like(v) for v in variables]
      for t in reversed(range(num_steps)):
        grid, before = ((iterates[t], []) if store_iterates else
                        (y0, history[:t]))
        q, clipped_part = kernels.adjoint_levels(
            grid, before, history[t], adjoint, step_lr, clip_arg(step_clip))
        d_levels = [-step_lr * level for level in q]
        # Second order of the CNNs, on the small pooled levels only. Its
        # forward half needs only forward tensors: without this order the
        # executor runs it for every step during the forward pass and keeps
        # each step's CNN activations until the backward pass (measured at
        # 128^3, B = 4: ~1.2 grids more per inner step).
        with tf.control_dependencies(list(d_levels)):
          levels_in = [tf.identity(level) for level in all_pooled[t]]
        d_pooled, d_context_t, d_variables_t, levels_t = cnn_second_order(
            energy, levels_in, step_context, variables, d_levels,
            None if d_energies is None else d_energies[t])
        # G_t as the second order recomputed it: the forward pass keeps no
        # levels G_t (1/32 grid per step at 256^3), only their parts.
        d_lr_t, d_clip_t = kernels.hyper_gradients(
            q, clipped_part, levels_t, step_lr, step_clip)
        d_lr += d_lr_t
        if d_clip_t is not None:
          d_clip += d_clip_t
        d_context = [acc + g for acc, g in zip(d_context, d_context_t)]
        d_variables = [acc + g for acc, g in zip(d_variables, d_variables_t)]
        adjoint = kernels.adjoint_grid(
            grid, before, history[t], adjoint, kernels.unpool_parts(d_pooled),
            labels, d_sums[t], step_lr, clip_arg(step_clip))
      input_grads = ([adjoint, d_lr] + ([] if clip is None else [d_clip])
                     + d_context)
      if not variables:
        return input_grads
      return input_grads, d_variables

    return outputs, grad_fn

  losses, energies, grad_norms = unrolled(initial, *hyper, *context)
  return {"step_loss": losses, "energy": energies, "grad_norm": grad_norms}
