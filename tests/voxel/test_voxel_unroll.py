"""The fused unroll (`ige_tf.voxel.unroll`): the hand-written adjoint of the
whole voxel inner loop, against `UnrolledSGD` + the loss of the steps, on a
directly-built `FrustumEnergy` (the whole model's wiring:
test_voxel_model_fold.py).

Cost: the kernels are compiled per configuration and shape
(`unroll._KERNELS`), so each property takes one configuration instead of a
cross product: float64 continuous IoU clipped, eager, stored and recomputed
(the whole-model test's configuration, whose kernels it shares: same level
sizes, depth bins, grid, batch and label dtype); float64 focal unclipped in
tf.function; float32 and mixed_float16 (float16 grids, as the mixed model's
initial estimate) continuous IoU clipped; the last three on one level.
"""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import UnrolledSGD, dtype_policy
from ige_tf.core.unrolled import _clipped_descent_backward
from ige_tf.voxel import losses
from ige_tf.voxel import unroll
from ige_tf.voxel.energy import FrustumEnergy

# The smallest energy of an IGE model: levels 4^2 (the coarsest a 3x3 + 2x2
# CNN accepts) and 8^2 at R = 8; depth bins (8, 4) as `ige_voxel_model`
# derives them from channels (16, 8) (test_voxel_model_fold.py's model).
RESOLUTION = 8
SIZES, CHANNELS = (4, 8), (8, 4)
# One level (4^2 x 4 bins, pooled on every axis) where the test is about
# the mode or the dtype rather than the pyramid: less to trace and compile.
ONE_LEVEL = {"sizes": (4,), "channels": (8,), "depth_bins": (4,)}
ONE_LEVEL_CLIP = 2e-4  # About the median |g| of its first step.
# T = 3 as IGE-MN: y_T is kept from the forward pass, y_1 and y_2 are
# recomputed from y_0 in the backward kernels.
NUM_STEPS = 3
LOSSES = {"continuous_iou": losses.ContinuousIoU(),
          "focal": losses.FocalCrossEntropy(alpha=0.7, gamma=2.0)}


def _small_setup(dtype, clip_value=0.002, momentum=None, sizes=SIZES,
                 channels=CHANNELS, depth_bins=None):
  """`(optimizer, initial [2, R, R, R], context, labels)`; float64 inputs
  (cast them for other dtypes), uint8 labels (as the pipeline's evaluation
  grids come; cast in the kernels). The clip value 0.002 clips part of the
  first step's gradient (asserted where it matters)."""
  keras.utils.set_random_seed(5)
  energy = FrustumEnergy(RESOLUTION, sizes, channels, depth_bins=depth_bins,
                         kernel_scale=0.5, dtype=dtype)
  optimizer = UnrolledSGD(energy, NUM_STEPS, learning_rate=0.8,
                          momentum=momentum, clip_value=clip_value,
                          learn_learning_rate=True,
                          learn_momentum=momentum is not None,
                          learn_clip_value=clip_value is not None,
                          dtype=dtype)
  rng = np.random.default_rng(1)
  initial = tf.constant(rng.normal(size=(2,) + (RESOLUTION,) * 3))
  context = [tf.constant(rng.normal(size=(2, s, s, f)))
             for s, f in zip(sizes, channels)]
  labels = tf.constant(rng.random(initial.shape) > 0.5, tf.uint8)
  # Built from the shapes (no eager run of the steps to build it).
  optimizer.build(initial.shape, [c.shape for c in context])
  return optimizer, initial, context, labels


def _weighted_total(step_loss, energy):
  """A scalar with an upstream on every step's loss and on the energies."""
  weights = tf.constant(np.linspace(0.2, 1.0, NUM_STEPS + 1), step_loss.dtype)
  return (tf.reduce_sum(weights * tf.reduce_mean(step_loss, axis=1))
          + 0.3 * tf.reduce_sum(energy))


def _autodiff(optimizer, initial, context, labels, loss_fn):
  """`(total, outputs, gradients)` of `UnrolledSGD` + `loss_fn` of every
  returned step; gradients for `[initial] + context + trainable weights`."""
  sources = [initial] + context
  with tf.GradientTape() as tape:
    tape.watch(sources)
    out = optimizer(initial, context, training=True, return_diagnostics=True)
    step_loss = tf.stack([loss_fn(tf.cast(labels, y.dtype), y)
                          for y in tf.unstack(out["steps"])])
    total = _weighted_total(step_loss, out["energy"])
  return total, dict(out, step_loss=step_loss), tape.gradient(
      total, sources + optimizer.trainable_variables)


def _fused(optimizer, initial, context, labels, loss_fn, store):
  """`_autodiff`'s `(total, outputs, gradients)` by `unroll.fused_unroll`."""
  sources = [initial] + context
  with tf.GradientTape() as tape:
    tape.watch(sources)
    out = unroll.fused_unroll(optimizer, initial, context, labels, loss_fn,
                              store_iterates=store)
    total = _weighted_total(out["step_loss"], out["energy"])
  return total, out, tape.gradient(total,
                                   sources + optimizer.trainable_variables)


def _assert_equal_float64(got, want, store):
  (got_total, got_out, got_grads), (want_total, want_out, want_grads) = (
      got, want)
  np.testing.assert_allclose(got_total, want_total, rtol=1e-12)
  for key in ("step_loss", "energy", "grad_norm"):
    np.testing.assert_allclose(got_out[key], want_out[key], rtol=1e-12,
                               err_msg=f"{key} store={store}")
  assert len(got_grads) == len(want_grads)
  for index, (g, w) in enumerate(zip(got_grads, want_grads)):
    assert g is not None, index
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-13,
                               err_msg=f"{index} store={store}")


def _clip_gradient(optimizer, grads):
  clip_grad, = [g for g, v in zip(grads[-len(optimizer.trainable_variables):],
                                  optimizer.trainable_variables)
                if v.path.endswith("clip_value")]
  return float(clip_grad)


def _clipped_fraction(optimizer, initial, context):
  """Fraction of the first step's energy gradient entries beyond +-c."""
  with tf.GradientTape() as tape:
    tape.watch(initial)
    total = tf.reduce_sum(optimizer.energy(initial, context))
  g = tape.gradient(total, initial).numpy()
  return float(np.mean(np.abs(g) > float(optimizer.clip_value)))


def test_stored_and_recomputed_iterates_equal_autodiff_with_clipping():
  """Eager, float64, continuous IoU, clipping active on part of the grid:
  `store_iterates` on and off give the values and every gradient (initial
  estimate, context, energy weights, learning rate, clip value) of
  `UnrolledSGD` + the loss, also with an upstream on the energies; without
  storing, the backward kernels of step t recompute y_t over t steps."""
  optimizer, initial, context, labels = _small_setup("float64")
  loss_fn = LOSSES["continuous_iou"]
  want = _autodiff(optimizer, initial, context, labels, loss_fn)
  # The first step clips part of the grid only.
  assert 0.1 < _clipped_fraction(optimizer, initial, context) < 0.9
  kernels = unroll._kernels(optimizer.energy, loss_fn, initial.shape,  # pylint: disable=protected-access
                             clipped=True)
  adjoint_levels = kernels.adjoint_levels
  for store in (False, True):
    recomputed = []  # Steps each adjoint_levels call recomputes y_t over.
    kernels.adjoint_levels = lambda *a: (recomputed.append(len(a[1]))  # pylint: disable=cell-var-from-loop
                                         or adjoint_levels(*a))
    try:
      got = _fused(optimizer, initial, context, labels, loss_fn, store)
    finally:
      kernels.adjoint_levels = adjoint_levels
    _assert_equal_float64(got, want, store)
    assert abs(_clip_gradient(optimizer, got[2])) > 0
    # t = T-1 .. 0: y_t recomputed from y_0 over t steps, or stored.
    assert recomputed == ([0] * NUM_STEPS if store else
                          list(reversed(range(NUM_STEPS))))


def test_compiled_unclipped_focal_equals_autodiff():
  """In tf.function (the training step's mode: recomputed iterates, their
  order by data dependencies), float64, focal loss, without clipping,
  against eager autodiff."""
  optimizer, initial, context, labels = _small_setup(
      "float64", clip_value=None, **ONE_LEVEL)
  loss_fn = LOSSES["focal"]
  assert optimizer.clip_value is None
  want = _autodiff(optimizer, initial, context, labels, loss_fn)
  compiled = tf.function(lambda: _fused(optimizer, initial, context, labels,
                                       loss_fn, store=False))
  _assert_equal_float64(compiled(), want, store=False)


def test_clip_bounds_follow_clipped_descent():
  """Entries exactly on +-c pass their gradient, as `clipped_descent`: the
  kernels of one step against the core op's backward, with a single level
  as large as the grid (pooling is the identity) and identity occupancy, so
  that g equals the level gradient entered; the descent and the norm kernels
  against the step they split."""
  energy = types.SimpleNamespace(level_sizes=(4,), depth_bins=(4,),
                                 occupancy="identity")
  loss_fn = LOSSES["focal"]
  kernels = unroll._Kernels(energy, loss_fn, 4, 4, clipped=True)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  clip = tf.constant(0.5, tf.float64)
  lr = tf.constant(0.7, tf.float64)
  g = rng.normal(size=(2, 4, 4, 4))
  g.flat[:4] = [0.5, -0.5, 0.5, -0.5]  # On the bounds.
  g = tf.constant(g)
  adjoint = tf.constant(rng.normal(size=(2, 4, 4, 4)))
  y = tf.constant(rng.normal(size=(2, 4, 4, 4)))
  # The level is its own (single) part of `U G`.
  q, clipped_part = kernels.adjoint_levels(y, [], [g], adjoint, lr, clip)
  d_levels = [-lr * q[0]]
  d_lr, d_clip = kernels.hyper_gradients(q, clipped_part, [g], lr, clip)
  want_g, want_lr, want_clip = _clipped_descent_backward(g, adjoint, lr, clip)
  np.testing.assert_allclose(d_levels[0], want_g, rtol=1e-14)
  assert np.all(d_levels[0].numpy().flat[:4] != 0)  # The bounds pass.
  np.testing.assert_allclose(d_lr, want_lr, rtol=1e-14)
  np.testing.assert_allclose(d_clip, want_clip, rtol=1e-14)
  parts = kernels.unpool_parts([g])
  assert len(parts) == 1  # One level: its part is the level itself.
  next_y = kernels.descent(y, parts, lr, clip)
  np.testing.assert_allclose(
      next_y, y - lr * tf.clip_by_value(g, -clip, clip), rtol=1e-14)
  np.testing.assert_allclose(kernels.squared_norm(y, parts),
                             tf.reduce_sum(g * g, axis=[1, 2, 3]),
                             rtol=1e-14)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_unroll_in_lower_precision_equals_float64(policy):
  """Float32, and mixed precision as the IGE model runs it (float16 initial
  estimate and context, the decoders' outputs; float16 CNNs with float32
  weights), with float32 labels (the training pipeline's), against the
  float64 result of the same weights. Gradients come in the dtype of their
  source."""
  optimizer64, initial, context, labels = _small_setup(
      "float64", ONE_LEVEL_CLIP, **ONE_LEVEL)
  with dtype_policy(policy):
    optimizer = _small_setup(None, ONE_LEVEL_CLIP, **ONE_LEVEL)[0]
  assert 0.1 < _clipped_fraction(optimizer64, initial, context) < 0.9
  grid_dtype = tf.float32 if policy == "float32" else tf.float16
  assert optimizer.energy.compute_dtype == grid_dtype.name
  for low, high in zip(optimizer.weights, optimizer64.weights):
    low.assign(tf.cast(high, low.dtype))
  loss_fn = LOSSES["continuous_iou"]
  _, want_out, want = _autodiff(optimizer64, initial, context, labels,
                                loss_fn)
  _, got_out, got = _fused(
      optimizer, tf.cast(initial, grid_dtype),
      [tf.cast(c, grid_dtype) for c in context], tf.cast(labels, tf.float32),
      loss_fn, store=False)
  assert got_out["step_loss"].dtype == grid_dtype
  rtol = 1e-5 if policy == "float32" else 2e-2
  for key in ("step_loss", "energy", "grad_norm"):
    np.testing.assert_allclose(tf.cast(got_out[key], tf.float64),
                               want_out[key], rtol=rtol, err_msg=key)
  sources = [initial] + context + optimizer.trainable_variables
  for index, (g, w, source) in enumerate(zip(got, want, sources)):
    assert g.dtype == (grid_dtype if index <= len(context) else tf.float32)
    scale = float(tf.reduce_max(tf.abs(w)))
    np.testing.assert_allclose(tf.cast(g, tf.float64), w, rtol=rtol,
                               atol=rtol * scale, err_msg=source.name
                               if index > len(context) else str(index))


def test_momentum_is_refused_and_folds_into_unrolled_sgd():
  """The fused unroll names what it cannot take (momentum here; a loss
  without sums form in test_voxel_model_fold.py); the frustum energy under
  momentum then folds the loss into `UnrolledSGD`'s recomputed steps, with
  the values and every gradient (momentum's included) of the steps + loss
  (float64)."""
  optimizer, initial, context, labels = _small_setup("float64", 0.05, 0.5)
  loss_fn = LOSSES["focal"]
  assert unroll.unsupported_reason(optimizer, loss_fn) == (
      "the inner optimizer uses momentum")
  with pytest.raises(ValueError, match="fused_unroll: the inner optimizer "
                     "uses momentum"):
    unroll.fused_unroll(optimizer, initial, context, labels, loss_fn)
  optimizer.recompute_steps = True
  labels = tf.cast(labels, tf.float64)
  sources = [initial] + context + optimizer.trainable_variables
  weights = tf.constant([0.73, 0.81, 0.9, 1.0], tf.float64)

  def gradients(folded):
    with tf.GradientTape() as tape:
      tape.watch(sources[:1 + len(context)])
      if folded:
        step_loss = optimizer(initial, context, training=True,
                              step_loss=lambda t, y: loss_fn(labels, y)
                              )["step_loss"]
      else:
        step_loss = tf.stack([
            loss_fn(labels, y) for y in tf.unstack(
                optimizer(initial, context, training=True))])
      loss = tf.reduce_sum(weights * tf.reduce_mean(step_loss, axis=1))
    return loss, tape.gradient(loss, sources)

  want_loss, want = gradients(folded=False)
  got_loss, got = gradients(folded=True)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
  assert len(got) == 1 + len(context) + len(
      optimizer.energy.trainable_variables) + 3
  for index, (g, w) in enumerate(zip(got, want)):
    assert g is not None and w is not None, index
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-13,
                               err_msg=str(index))
  momentum, = [g for g, v in zip(got[len(context) + 1:],
                                 optimizer.trainable_variables)
               if v.path.endswith("momentum")]
  assert float(tf.abs(momentum)) > 0.0


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_sums_form_equals_the_loss(loss_name):
  loss_fn = LOSSES[loss_name]
  rng = np.random.default_rng(2)
  logits = tf.constant(rng.normal(size=(3, 4, 4, 4)) * 3)
  labels = tf.constant(rng.random((3, 4, 4, 4)) > 0.5, tf.float64)
  sums = [tf.reduce_sum(term, axis=[1, 2, 3])
          for term in loss_fn.elementwise_statistics(labels, logits)]
  label_sums = loss_fn.label_statistics(labels)
  np.testing.assert_allclose(loss_fn.loss_from_statistics(sums, label_sums),
                             loss_fn(labels, logits), rtol=1e-13)
