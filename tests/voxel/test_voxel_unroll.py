"""The fused unroll (`ige_tf.voxel.unroll`): the hand-written adjoint of the
whole voxel inner loop, against `UnrolledSGD` + the loss of the steps."""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import UnrolledSGD, dtype_policy
from ige_tf.core.unrolled import _clipped_descent_backward
from ige_tf.voxel import losses
from ige_tf.voxel import models
from ige_tf.voxel import unroll
from ige_tf.voxel.energy import FrustumEnergy
from ige_tf.voxel.problem import VoxelProblem

RESOLUTION = 16
LOSSES = {"continuous_iou": losses.ContinuousIoU(),
          "focal": losses.FocalCrossEntropy(alpha=0.7, gamma=2.0)}


def _batch(dtype, seed=0, batch=2):
  rng = np.random.default_rng(seed)
  features = {"image": tf.constant(rng.random((batch, 128, 128, 3)),
                                   tf.float32)}
  # Labels as the pipeline's evaluation grids may come: cast in the kernels.
  labels = {"frustum": tf.constant(
      rng.random((batch,) + (RESOLUTION,) * 3) > 0.6, dtype)}
  return features, labels


def _problem(loss_fn):
  return VoxelProblem(records_dir="unused", model_fn=models.ige_voxel_model,
                      resolution=RESOLUTION, loss_fn=loss_fn)


@pytest.fixture(scope="module")
def float64_model():
  """IGE-MN at 16^3, T = 3, recomputing, in float64, with the learned clip
  value set (negative: it acts as its absolute value) to the median |g| of
  the first step's energy gradient, so that about half the entries clip."""
  with dtype_policy("float64"):
    keras.utils.set_random_seed(3)
    model = models.ige_voxel_model("mn", resolution=RESOLUTION, num_steps=3,
                                   recompute_steps=True, kernel_scale=0.3)
  optimizer, inputs_fn = models.inner_optimizer_inputs(model)
  features, _ = _batch(tf.float64)
  initial, context = inputs_fn(features, training=True)
  with tf.GradientTape() as tape:
    tape.watch(initial)
    total = tf.reduce_sum(optimizer.energy(initial, context))
  median = float(np.median(np.abs(tape.gradient(total, initial).numpy())))
  assert median > 0
  optimizer._clip_value_weight.assign(-median)  # pylint: disable=protected-access
  return model


def _gradients(compute, variables):
  with tf.GradientTape() as tape:
    loss, outputs = compute()
  return loss, outputs, tape.gradient(loss, variables)


# Eager only (tf.function traces the whole model twice, ~25 s): the compiled
# path is tested on the energy alone below.
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_fused_unroll_equals_model_then_loss_in_float64(
    float64_model, monkeypatch, loss_name):
  model, problem = float64_model, _problem(LOSSES[loss_name])
  features, labels = _batch(tf.uint8)
  reference_labels = {"frustum": tf.cast(labels["frustum"], tf.float64)}
  variables = model.trainable_variables
  taken = []
  fused = unroll.fused_unroll
  monkeypatch.setattr(unroll, "fused_unroll",
                      lambda *a, **k: taken.append(1) or fused(*a, **k))

  def reference():
    outputs = model(features, training=True)
    return problem.loss(reference_labels, outputs), outputs

  want_loss, want_outputs, want = _gradients(reference, variables)
  got_loss, got_outputs, got = _gradients(
      lambda: problem.training_loss(model, features, labels), variables)
  assert taken and "steps" not in got_outputs
  assert got_outputs["step_loss"].shape == (4, 2)
  # Clipping is active at every step, on part of the grid only.
  optimizer = models.inner_optimizer_inputs(model)[0]
  assert float(optimizer.clip_value) > 0
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
  for key in ("energy", "grad_norm"):
    np.testing.assert_allclose(got_outputs[key], want_outputs[key],
                               rtol=1e-10, err_msg=key)
  per_step = [LOSSES[loss_name](reference_labels["frustum"], y)
              for y in tf.unstack(want_outputs["steps"])]
  np.testing.assert_allclose(got_outputs["step_loss"], per_step, rtol=1e-10)
  assert len(variables) > 100
  scale = max(float(tf.reduce_max(tf.abs(w))) for w in want)
  names = set()
  for variable, g, w in zip(variables, got, want):
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * scale,
                               err_msg=variable.path)
    if float(tf.reduce_max(tf.abs(w))) > 0:
      names.add(variable.path.split("/")[-1])
  # Every kind of weight gets a gradient, the inner step's included.
  assert {"learning_rate", "clip_value"} <= names


def _small_setup(dtype, clip_value=0.05, momentum=None):
  keras.utils.set_random_seed(5)
  sizes, channels = (4, 8, 16), (16, 8, 4)
  energy = FrustumEnergy(RESOLUTION, sizes, channels, kernel_scale=0.5,
                         dtype=dtype)
  optimizer = UnrolledSGD(energy, 3, learning_rate=0.8, momentum=momentum,
                          clip_value=clip_value, learn_learning_rate=True,
                          learn_clip_value=clip_value is not None,
                          dtype=dtype)
  rng = np.random.default_rng(1)
  initial = tf.constant(rng.normal(size=(2,) + (RESOLUTION,) * 3), dtype)
  context = [tf.constant(rng.normal(size=(2, s, s, f)), dtype)
             for s, f in zip(sizes, channels)]
  labels = tf.constant(rng.random(initial.shape) > 0.5)
  optimizer(initial, context)
  return optimizer, initial, context, labels


@pytest.mark.parametrize("clip_value,mode", [
    (0.002, "eager"), (None, "eager"), (0.002, "function")])
def test_stored_iterates_recomputed_iterates_and_autodiff_agree(clip_value,
                                                                 mode):
  """`store_iterates` on and off equal `UnrolledSGD` + loss, also with an
  upstream on the energies, without clipping and in tf.function
  (float64)."""
  optimizer, initial, context, labels = _small_setup("float64", clip_value)
  loss_fn = LOSSES["continuous_iou"]
  sources = [initial] + context + optimizer.trainable_variables
  weights = tf.constant([0.2, 0.5, 0.7, 1.0], tf.float64)

  def total(step_loss, energy):
    return (tf.reduce_sum(weights * tf.reduce_mean(step_loss, axis=1))
            + 0.3 * tf.reduce_sum(energy))

  def reference():
    with tf.GradientTape() as tape:
      tape.watch(sources[:4])
      out = optimizer(initial, context, training=True,
                      return_diagnostics=True)
      loss = total(tf.stack([loss_fn(tf.cast(labels, tf.float64), y)
                             for y in tf.unstack(out["steps"])]),
                   out["energy"])
    return loss, out, tape.gradient(loss, sources)

  def fused(store):
    with tf.GradientTape() as tape:
      tape.watch(sources[:4])
      out = unroll.fused_unroll(optimizer, initial, context, labels, loss_fn,
                                store_iterates=store)
      loss = total(out["step_loss"], out["energy"])
    return loss, out, tape.gradient(loss, sources)

  if mode == "function":
    reference, fused = tf.function(reference), tf.function(fused)
  want_loss, out, want = reference()
  if clip_value is not None:  # Clipping active at the first step.
    assert float(tf.reduce_max(out["grad_norm"])) > clip_value
  for store in (False, True):
    got_loss, got, grads = fused(store)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(got["grad_norm"], out["grad_norm"], rtol=1e-12)
    for index, (g, w) in enumerate(zip(grads, want)):
      assert g is not None, index
      np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-13,
                                 err_msg=f"{index} store={store}")
    if clip_value is not None:  # The clip value's gradient.
      clip_grad, = [g for g, v in zip(grads[4:], sources[4:])
                    if v.path.endswith("clip_value")]
      assert abs(float(clip_grad)) > 0


def test_clip_bounds_follow_clipped_descent():
  """Entries exactly on +-c pass their gradient, as `clipped_descent`: the
  kernel of one step against the core op's backward, with a single level
  as large as the grid (pooling is the identity) and identity occupancy, so
  that g equals the level gradient entered."""
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
  d_levels, d_lr, d_clip = kernels.adjoint_levels(y, [], [g], adjoint, lr,
                                                  clip)
  want_g, want_lr, want_clip = _clipped_descent_backward(g, adjoint, lr, clip)
  np.testing.assert_allclose(d_levels[0], want_g, rtol=1e-14)
  assert np.all(d_levels[0].numpy().flat[:4] != 0)  # The bounds pass.
  np.testing.assert_allclose(d_lr, want_lr, rtol=1e-14)
  np.testing.assert_allclose(d_clip, want_clip, rtol=1e-14)
  next_y = kernels.descent(y, [g], lr, clip)
  np.testing.assert_allclose(
      next_y, y - lr * tf.clip_by_value(g, -clip, clip), rtol=1e-14)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_unroll_in_lower_precision(policy):
  """Float32 and mixed precision (grids in float32, CNNs in float16)
  against the float64 result of the same weights."""
  optimizer64, initial, context, labels = _small_setup("float64")
  with dtype_policy(policy):
    optimizer, _, _, _ = _small_setup(None)
  for low, high in zip(optimizer.weights, optimizer64.weights):
    low.assign(tf.cast(high, low.dtype))
  loss_fn = LOSSES["focal"]

  def run(opt, dtype):
    sources = [tf.cast(initial, dtype)] + [tf.cast(c, dtype) for c in context]
    with tf.GradientTape() as tape:
      tape.watch(sources)
      out = unroll.fused_unroll(opt, sources[0], sources[1:], labels, loss_fn)
      loss = tf.reduce_sum(tf.cast(out["step_loss"], tf.float64))
    return loss, tape.gradient(loss, sources + opt.trainable_variables)

  want_loss, want = run(optimizer64, tf.float64)
  got_loss, got = run(optimizer, tf.float32)
  rtol = 1e-5 if policy == "float32" else 2e-2
  np.testing.assert_allclose(got_loss, want_loss, rtol=rtol)
  for index, (g, w) in enumerate(zip(got, want)):
    assert g.dtype == tf.float32, index
    scale = float(tf.reduce_max(tf.abs(w)))
    np.testing.assert_allclose(tf.cast(g, tf.float64), w, rtol=rtol,
                               atol=rtol * scale, err_msg=str(index))


def test_unsupported_configurations_are_named_and_the_problem_falls_back(
    float64_model, monkeypatch):
  optimizer = _small_setup("float32", momentum=0.5)[0]
  assert unroll.unsupported_reason(optimizer, LOSSES["focal"]) == (
      "the inner optimizer uses momentum")
  with pytest.raises(ValueError, match="fused_unroll: the inner optimizer "
                     "uses momentum"):
    unroll.fused_unroll(optimizer, None, None, None, LOSSES["focal"])

  def plain_loss(labels, logits):
    return losses.focal_cross_entropy(labels, logits, 0.7, 2.0)

  assert "the loss function has no sums form" in unroll.unsupported_reason(
      models.inner_optimizer_inputs(float64_model)[0], plain_loss)
  # A loss without a sums form: UnrolledSGD's folded path, same values.
  monkeypatch.setattr(unroll, "fused_unroll", None)  # Fails if called.
  features, labels = _batch(tf.float64, batch=1)
  loss, outputs = _problem(plain_loss).training_loss(float64_model, features,
                                                     labels)
  want = _problem(LOSSES["focal"]).loss(labels, float64_model(
      features, training=True))
  assert outputs["step_loss"].shape == (4, 1)
  np.testing.assert_allclose(loss, want, rtol=1e-12)


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
