"""Voxel losses (paper eqs. 11, 12) against numpy references."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import MultiStepLoss
from ige_tf.voxel import losses


def _numpy_focal(labels, p, alpha, gamma):
  """Eq. 11 literally, per example, from probabilities."""
  terms = (labels * (1 - p) ** gamma * (1 + alpha) * np.log(p)
           + (1 - labels) * p ** gamma * (1 - alpha) * np.log(1 - p))
  return -terms.reshape(len(labels), -1).sum(axis=1)


def _numpy_iou_loss(labels, p):
  flat_p, flat_y = p.reshape(len(p), -1), labels.reshape(len(p), -1)
  intersection = (flat_p * flat_y).sum(1)
  return 1 - intersection / ((flat_p + flat_y).sum(1) - intersection)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  labels = (rng.random((3, 4, 4, 4)) > 0.6).astype(np.float64)
  logits = rng.normal(scale=2.0, size=(3, 4, 4, 4))
  return labels, logits, 1 / (1 + np.exp(-logits))


@pytest.mark.parametrize("alpha,gamma", [(0.0, 0.0), (0.7, 0.0), (0.0, 2.0),
                                         (0.7, 2.0), (-0.3, 0.5)])
def test_focal_cross_entropy_matches_eq_11(batch, alpha, gamma):
  labels, logits, p = batch
  expected = _numpy_focal(labels, p, alpha, gamma)
  from_logits = losses.focal_cross_entropy(labels, logits, alpha, gamma)
  from_probabilities = losses.focal_cross_entropy(labels, p, alpha, gamma,
                                                  from_logits=False)
  assert from_logits.shape == (3,)
  np.testing.assert_allclose(from_logits.numpy(), expected, rtol=1e-10)
  np.testing.assert_allclose(from_probabilities.numpy(), expected, rtol=1e-6)


def test_alpha_gamma_zero_is_plain_cross_entropy(batch):
  labels, logits, _ = batch
  plain = keras.losses.binary_crossentropy(
      labels.reshape(3, -1, 1), logits.reshape(3, -1, 1), from_logits=True)
  np.testing.assert_allclose(
      losses.focal_cross_entropy(labels, logits).numpy(),
      np.asarray(plain).sum(axis=1), rtol=1e-6)


def test_focal_from_logits_is_stable_at_extreme_logits():
  labels = np.array([[1.0, 0.0, 1.0, 0.0]]).reshape(1, 1, 2, 2)
  logits = tf.constant(np.array([[200.0, -200.0, -200.0, 200.0]]).reshape(
      1, 1, 2, 2), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    value = losses.focal_cross_entropy(labels, logits, alpha=0.7, gamma=2.0)
  gradient = tape.gradient(value, logits).numpy()
  # Two confident right voxels (~0) and two confident wrong ones:
  # (1 + 0.7) * 200 + (1 - 0.7) * 200 with (1 - p)^2 = p^2 = 1.
  np.testing.assert_allclose(value.numpy(), [400.0], rtol=1e-6)
  assert np.all(np.isfinite(gradient))


def test_continuous_iou_matches_eq_12(batch):
  labels, logits, p = batch
  expected = _numpy_iou_loss(labels, p)
  np.testing.assert_allclose(
      losses.continuous_iou_loss(labels, logits, epsilon=0.0).numpy(),
      expected, rtol=1e-10)
  np.testing.assert_allclose(
      losses.continuous_iou_loss(labels, p, from_logits=False).numpy(),
      expected, rtol=1e-6)


def test_continuous_iou_gradient_matches_the_analytic_derivative(batch):
  """The custom gradient (p recomputed in backward) against eq. 12 by hand.

  With I = sum p y, U = sum p + sum y - I and loss = 1 - I / U:
  d loss / d p = -(y U - I (1 - y)) / U^2, and d p / d z = p (1 - p).
  Also the second-order path: the gradient of a gradient-weighted sum.
  """
  labels, logits, p = batch
  z = tf.constant(logits)
  weights = tf.constant(np.arange(1.0, 4.0))
  with tf.GradientTape() as outer:
    outer.watch(z)
    with tf.GradientTape() as tape:
      tape.watch(z)
      loss = tf.reduce_sum(weights * losses.continuous_iou_loss(
          labels, z, epsilon=0.0))
    grad = tape.gradient(loss, z)
    total = tf.reduce_sum(tf.square(grad))
  flat_p, flat_y = p.reshape(3, -1), labels.reshape(3, -1)
  inter = (flat_p * flat_y).sum(1, keepdims=True)
  union = (flat_p + flat_y).sum(1, keepdims=True) - inter
  d_p = -(flat_y * union - inter * (1 - flat_y)) / union ** 2
  expected = (np.arange(1.0, 4.0)[:, None] * d_p * flat_p * (1 - flat_p))
  np.testing.assert_allclose(grad.numpy().reshape(3, -1), expected,
                             rtol=1e-10)
  # Second order against the same formula differentiated by TensorFlow.
  y = tf.constant(labels)
  with tf.GradientTape() as reference:
    reference.watch(z)
    with tf.GradientTape() as inner:
      inner.watch(z)
      q = tf.sigmoid(z)
      i = tf.reduce_sum(q * y, axis=[1, 2, 3])
      u = tf.reduce_sum(q + y, axis=[1, 2, 3]) - i
      plain = tf.reduce_sum(weights * (1 - i / u))
    plain_total = tf.reduce_sum(tf.square(inner.gradient(plain, z)))
  np.testing.assert_allclose(outer.gradient(total, z),
                             reference.gradient(plain_total, z), rtol=1e-8)


def test_continuous_iou_limits():
  full = np.ones((1, 2, 2, 2))
  empty = np.zeros((1, 2, 2, 2))
  assert losses.continuous_iou_loss(full, full, from_logits=False).numpy() == (
      pytest.approx([0.0]))
  assert losses.continuous_iou_loss(empty, empty, from_logits=False).numpy() \
      == pytest.approx([0.0])
  assert losses.continuous_iou_loss(full, empty, from_logits=False).numpy() \
      == pytest.approx([1.0])


def test_loss_objects_round_trip_and_work_with_multistep_loss(batch):
  labels, logits, _ = batch
  focal = losses.FocalCrossEntropy(alpha=0.7, gamma=2.0)
  iou = losses.ContinuousIoU()
  for loss in (focal, iou):
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
  steps = tf.constant(np.stack([logits, 2 * logits]), tf.float32)
  labels32 = tf.constant(labels, tf.float32)
  multi = MultiStepLoss(iou, decay=0.9)
  expected = (0.9 * np.mean(_numpy_iou_loss(labels, 1 / (1 + np.exp(-logits))))
              + np.mean(_numpy_iou_loss(labels,
                                        1 / (1 + np.exp(-2 * logits)))))
  np.testing.assert_allclose(multi(labels32, steps).numpy(), expected,
                             rtol=1e-5)


def test_voxel_loss_factory():
  assert isinstance(losses.voxel_loss(), losses.ContinuousIoU)
  focal = losses.voxel_loss("focal_cross_entropy", alpha=0.7, gamma=2.0)
  assert (focal.alpha, focal.gamma, focal.from_logits) == (0.7, 2.0, True)
  with pytest.raises(ValueError, match="Unknown voxel loss 'dice'"):
    losses.voxel_loss("dice")
  with pytest.raises(ValueError, match="alpha must lie in"):
    losses.FocalCrossEntropy(alpha=1.5)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 6), (2, 4, 3, 8),
                                   (0, 4, 4, 4), (2, 4, 0)])
def test_sum_per_example_equals_reduce_sum_with_gradient(shape, jit):
  """The matrix-product form == reduce_sum over the axes, float64, values
  and gradient, eager and under XLA."""
  values = tf.constant(np.random.default_rng(11).normal(size=shape))
  weights = tf.constant(np.random.default_rng(12).normal(size=shape[:1]))
  axes = list(range(1, len(shape)))

  def weighted(fn):
    with tf.GradientTape() as tape:
      tape.watch(values)
      sums = fn(values)
      value = tf.reduce_sum(weights * sums)
    return sums, tape.gradient(value, values)

  fn = tf.function(losses.sum_per_example, jit_compile=True) if jit else (
      losses.sum_per_example)
  got, got_grad = weighted(fn)
  want, want_grad = weighted(lambda v: tf.reduce_sum(v, axis=axes))
  assert got.shape == (shape[0],) and got.dtype == tf.float64
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12,
                             atol=1e-12)
  np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(),
                             rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [tf.int32, tf.float16])
def test_sum_per_example_other_dtypes_keep_their_dtype(dtype):
  values = tf.cast(tf.reshape(tf.range(24), (2, 3, 4)), dtype)
  sums = losses.sum_per_example(values)
  assert sums.dtype == dtype
  np.testing.assert_array_equal(sums.numpy(), [66, 210])
