"""The folded training loss of IGE voxel models (`VoxelProblem.training_loss`).

With `recompute_steps=True` the per-step loss is taken inside the recomputed
unroll; its value and every trainable variable's gradient must equal those
of `problem.loss(labels, model(features, training=True))`.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import MultiStepLoss, UnrolledSGD, dtype_policy
from ige_tf.voxel import losses
from ige_tf.voxel import models
from ige_tf.voxel.energy import FrustumEnergy
from ige_tf.voxel.problem import VoxelProblem

RESOLUTION = 16
LOSSES = {"continuous_iou": losses.ContinuousIoU(),
          "focal": losses.FocalCrossEntropy(alpha=0.7, gamma=2.0)}


@pytest.fixture(scope="module")
def recomputing_model():
  keras.utils.set_random_seed(3)
  return models.ige_voxel_model("mn", resolution=RESOLUTION, num_steps=2,
                                recompute_steps=True)


def _batch(seed=0, batch=2):
  rng = np.random.default_rng(seed)
  features = {"image": tf.constant(rng.random((batch, 128, 128, 3)),
                                   tf.float32)}
  labels = {"frustum": tf.constant(
      rng.random((batch,) + (RESOLUTION,) * 3) > 0.6, tf.float32)}
  return features, labels


def _problem(loss_name):
  return VoxelProblem(records_dir="unused", model_fn=models.ige_voxel_model,
                      resolution=RESOLUTION, loss_fn=LOSSES[loss_name])


def _gradients(compute, variables):
  with tf.GradientTape() as tape:
    loss, outputs = compute()
  return loss, outputs, tape.gradient(loss, variables)


def _assert_same(got, want, variables):
  (got_loss, got_grads), (want_loss, want_grads) = got, want
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  assert len(variables) > 100
  # Float32 summation order differs (the loss gradient joins the adjoint
  # inside the step's tape): relative 1e-4, plus 1e-5 of the largest
  # gradient entry for entries that are rounding noise in both (e.g. a batch
  # normalization's beta followed by another batch normalization).
  scale = max(float(tf.reduce_max(tf.abs(w))) for w in want_grads)
  for variable, g, w in zip(variables, got_grads, want_grads):
    assert g is not None and w is not None, variable.path
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=variable.path)


# tf.function traces the whole model twice (about 15 s): one loss there; the
# compiled path with momentum and both losses is also tested in
# tests/core/test_core_unrolled.py on a small energy.
@pytest.mark.parametrize("mode,loss_name", [
    ("eager", "continuous_iou"), ("eager", "focal"),
    ("function", "continuous_iou")])
def test_folded_loss_and_gradients_equal_model_then_loss(
    recomputing_model, mode, loss_name):
  model, problem = recomputing_model, _problem(loss_name)
  features, labels = _batch()
  variables = model.trainable_variables

  def reference():
    outputs = model(features, training=True)
    return problem.loss(labels, outputs), outputs

  def folded():
    return problem.training_loss(model, features, labels)

  def run(compute):
    if mode == "function":
      return tf.function(lambda: _gradients(compute, variables))()
    return _gradients(compute, variables)

  want_loss, want_outputs, want_grads = run(reference)
  got_loss, got_outputs, got_grads = run(folded)
  assert "steps" not in got_outputs  # The stack is never materialized.
  assert got_outputs["step_loss"].shape == (3, 2)
  for key in ("energy", "grad_norm"):
    np.testing.assert_allclose(got_outputs[key], want_outputs[key],
                               rtol=1e-5, err_msg=key)
  # The per-step losses are MultiStepLoss's terms.
  np.testing.assert_allclose(
      tf.reduce_mean(got_outputs["step_loss"], axis=1),
      MultiStepLoss(LOSSES[loss_name]).per_step(labels["frustum"],
                                                want_outputs["steps"]),
      rtol=1e-5)
  _assert_same((got_loss, got_grads), (want_loss, want_grads), variables)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_folded_voxel_loss_with_momentum(loss_name):
  """The frustum energy under a momentum optimizer: folded == steps + loss."""
  keras.utils.set_random_seed(5)
  sizes, channels = (4, 8, 16), (16, 8, 4)
  energy = FrustumEnergy(RESOLUTION, sizes, channels, kernel_scale=0.5)
  optimizer = UnrolledSGD(energy, 3, learning_rate=0.8, momentum=0.5,
                          clip_value=0.05, learn_learning_rate=True,
                          learn_momentum=True, learn_clip_value=True,
                          recompute_steps=True)
  rng = np.random.default_rng(1)
  initial = tf.constant(rng.normal(size=(2,) + (RESOLUTION,) * 3), tf.float32)
  context = [tf.constant(rng.normal(size=(2, s, s, f)), tf.float32)
             for s, f in zip(sizes, channels)]
  labels = tf.constant(rng.random(initial.shape) > 0.5, tf.float32)
  optimizer(initial, context)
  per_example, multi = LOSSES[loss_name], MultiStepLoss(LOSSES[loss_name])
  sources = [initial] + context + optimizer.trainable_variables

  def reference():
    with tf.GradientTape() as tape:
      tape.watch(sources[:4])
      loss = multi(labels, optimizer(initial, context, training=True))
    return loss, tape.gradient(loss, sources)

  def folded():
    with tf.GradientTape() as tape:
      tape.watch(sources[:4])
      out = optimizer(initial, context, training=True,
                      step_loss=lambda t, y: per_example(labels, y))
      per_step = tf.reduce_mean(out["step_loss"], axis=1)
      loss = tf.reduce_sum(
          tf.constant([0.729, 0.81, 0.9, 1.0]) * per_step)
    return loss, tape.gradient(loss, sources)

  want_loss, want = reference()
  got_loss, got = folded()
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  assert len(sources) == 4 + len(energy.trainable_variables) + 3
  scale = max(float(tf.reduce_max(tf.abs(w))) for w in want)
  for index, (g, w) in enumerate(zip(got, want)):
    assert g is not None and w is not None, index
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=str(index))
  momentum = [g for g, v in zip(got[4:], optimizer.trainable_variables)
              if v.path.endswith("momentum")]
  assert len(momentum) == 1 and float(tf.abs(momentum[0])) > 0.0


def test_baseline_and_storing_models_take_the_default_path():
  keras.utils.set_random_seed(3)
  model = models.ige_voxel_model("mn", resolution=RESOLUTION, num_steps=1)
  features, labels = _batch(batch=1)
  loss, outputs = _problem("continuous_iou").training_loss(model, features,
                                                           labels)
  assert outputs["steps"].shape == (2, 1) + (RESOLUTION,) * 3
  assert loss.shape == ()


def test_folded_loss_under_mixed_precision():
  """Under `mixed_float16` the folded path gives the model-then-loss value
  and gradients (eager), to float16 tolerance."""
  with dtype_policy("mixed_float16"):
    keras.utils.set_random_seed(3)
    model = models.ige_voxel_model("mn", resolution=RESOLUTION, num_steps=2,
                                   recompute_steps=True)
  problem, (features, labels) = _problem("continuous_iou"), _batch()
  variables = model.trainable_variables

  def reference():
    outputs = model(features, training=True)
    return problem.loss(labels, outputs), outputs

  want_loss, _, want = _gradients(reference, variables)
  got_loss, outputs, got = _gradients(
      lambda: problem.training_loss(model, features, labels), variables)
  assert got_loss.dtype == tf.float32 and "steps" not in outputs
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-3)
  scale = max(float(tf.reduce_max(tf.abs(tf.cast(w, tf.float32))))
              for w in want)
  for variable, g, w in zip(variables, got, want):
    np.testing.assert_allclose(tf.cast(g, tf.float32), tf.cast(w, tf.float32),
                               rtol=1e-2, atol=1e-3 * scale,
                               err_msg=variable.path)
