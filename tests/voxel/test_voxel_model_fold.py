"""The folded training loss of IGE voxel models (`VoxelProblem.training_loss`)
on a whole model: which path it takes, and that the fused unroll it takes
for recomputing models gives the value and every trainable variable's
gradient of `problem.loss(labels, model(features, training=True))`.

The adjoint itself (clipping, losses, dtypes, tf.function, stored iterates)
is tested on a directly-built energy in test_voxel_unroll.py; the model here
has the same energy configuration, so the two files share compiled kernels.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import MultiStepLoss, dtype_policy
from ige_tf.voxel import losses
from ige_tf.voxel import models
from ige_tf.voxel import unroll
from ige_tf.voxel.problem import VoxelProblem

# The smallest IGE-MN: 128^2 images (4^2 encoder output, the coarsest level
# the energy's CNN accepts), R = 8, two steps, narrow decoders (the
# MobileNetV2 encoder keeps every kind of weight).
RESOLUTION, NUM_STEPS = 8, 2
LOSS = losses.ContinuousIoU()


def _problem(loss_fn=LOSS):
  return VoxelProblem(records_dir="unused", model_fn=models.ige_voxel_model,
                      resolution=RESOLUTION, loss_fn=loss_fn)


def _batch(dtype):
  rng = np.random.default_rng(0)
  features = {"image": tf.constant(rng.random((2, 128, 128, 3)), tf.float32)}
  labels = {"frustum": tf.constant(
      rng.random((2,) + (RESOLUTION,) * 3) > 0.6, dtype)}
  return features, labels


@pytest.fixture(scope="module")
def float64_model():
  """The model above, recomputing, in float64, with the learned clip value
  set (negative: it acts as its absolute value) to the median |g| of the
  first step's energy gradient, so that about half the entries clip."""
  with dtype_policy("float64"):
    keras.utils.set_random_seed(3)
    model = models.ige_voxel_model(
        "mn", resolution=RESOLUTION, num_steps=NUM_STEPS,
        recompute_steps=True, kernel_scale=0.3, image_decoder_channels=16,
        generator_channels=8)
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


@pytest.fixture(scope="module")
def reference(float64_model):
  """`(loss, outputs, gradients)` of `problem.loss(labels, model(features,
  training=True))` (every trainable variable), float64 labels."""
  model, problem = float64_model, _problem()
  features, labels = _batch(tf.float64)
  with tf.GradientTape() as tape:
    outputs = model(features, training=True)
    loss = problem.loss(labels, outputs)
  return loss, outputs, tape.gradient(loss, model.trainable_variables)


def test_recomputing_models_take_the_fused_unroll_with_the_same_gradients(
    float64_model, reference, monkeypatch):
  """Float64, eager, uint8 labels (cast in the kernels), clipping active on
  part of the grid: values, diagnostics and every trainable variable's
  gradient equal model-then-loss."""
  model, problem = float64_model, _problem()
  features, labels = _batch(tf.uint8)
  variables = model.trainable_variables
  taken = []
  fused = unroll.fused_unroll
  monkeypatch.setattr(unroll, "fused_unroll",
                      lambda *a, **k: taken.append(1) or fused(*a, **k))
  with tf.GradientTape() as tape:
    got_loss, got_outputs = problem.training_loss(model, features, labels)
  got = tape.gradient(got_loss, variables)
  want_loss, want_outputs, want = reference
  assert taken and "steps" not in got_outputs  # No stack of iterates.
  assert got_outputs["step_loss"].shape == (NUM_STEPS + 1, 2)
  assert got_loss.dtype == tf.float32 and got_loss.shape == ()
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
  for key in ("energy", "grad_norm"):
    np.testing.assert_allclose(got_outputs[key], want_outputs[key],
                               rtol=1e-10, err_msg=key)
  # The per-step losses are the loss of every step, and their means
  # MultiStepLoss's terms.
  steps = tf.unstack(want_outputs["steps"])
  float_labels = tf.cast(labels["frustum"], tf.float64)
  np.testing.assert_allclose(got_outputs["step_loss"],
                             [LOSS(float_labels, y) for y in steps],
                             rtol=1e-10)
  np.testing.assert_allclose(
      tf.reduce_mean(got_outputs["step_loss"], axis=1),
      MultiStepLoss(LOSS).per_step(float_labels, want_outputs["steps"]),
      rtol=1e-6)
  assert len(variables) > 100
  scale = max(float(tf.reduce_max(tf.abs(w))) for w in want)
  names = set()
  for variable, g, w in zip(variables, got, want):
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * scale,
                               err_msg=variable.path)
    if float(tf.reduce_max(tf.abs(w))) > 0:
      names.add(variable.path.split("/")[-1])
  # Every kind of weight gets a gradient, the inner step's included.
  assert {"learning_rate", "clip_value", "kernel", "gamma"} <= names


def test_storing_models_and_losses_without_sums_form_take_other_paths(
    float64_model, reference, monkeypatch):
  """A model whose inner optimizer stores its steps: model then loss, with
  the stack of iterates. A loss without a sums form: the reason is named,
  and the loss is folded into `UnrolledSGD`'s recomputed steps, same
  value (momentum's refusal: test_voxel_unroll.py)."""
  model = float64_model
  optimizer = models.inner_optimizer_inputs(model)[0]
  features, labels = _batch(tf.float64)
  want_loss, want_outputs, _ = reference

  def plain_loss(labels, logits):
    return losses.focal_cross_entropy(labels, logits, 0.7, 2.0)

  assert unroll.unsupported_reason(optimizer, plain_loss) == (
      "the loss function has no sums form (elementwise_statistics, "
      "label_statistics, loss_from_statistics)")
  monkeypatch.setattr(unroll, "fused_unroll", None)  # Fails if called.
  loss, outputs = _problem(plain_loss).training_loss(model, features, labels)
  assert "steps" not in outputs
  assert outputs["step_loss"].shape == (NUM_STEPS + 1, 2)
  want = _problem(losses.FocalCrossEntropy(alpha=0.7, gamma=2.0)).loss(
      labels, want_outputs)
  np.testing.assert_allclose(loss, want, rtol=1e-12)
  np.testing.assert_allclose(outputs["grad_norm"], want_outputs["grad_norm"],
                             rtol=1e-10)

  monkeypatch.setattr(optimizer, "recompute_steps", False)
  loss, outputs = _problem().training_loss(model, features, labels)
  assert outputs["steps"].shape == (NUM_STEPS + 1, 2) + (RESOLUTION,) * 3
  np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
  np.testing.assert_allclose(outputs["steps"], want_outputs["steps"],
                             rtol=1e-12)
