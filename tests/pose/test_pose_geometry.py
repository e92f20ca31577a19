"""Pairwise distances, optimal scale and similarity Procrustes vs references."""
import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.transform
import tensorflow as tf

from ige_tf.pose import geometry


def horn_similarity(prediction, target):
  """Horn (1987) closed form with unit quaternions: rotations only.

  An independent reference for the SVD implementation: the optimal rotation
  is the eigenvector of the largest eigenvalue of a 4x4 symmetric matrix, so
  reflections cannot occur by construction. Returns the aligned prediction.
  """
  p0 = prediction - prediction.mean(0)
  y0 = target - target.mean(0)
  m = p0.T @ y0  # sum_i p_i y_i^T
  sxx, sxy, sxz = m[0]
  syx, syy, syz = m[1]
  szx, szy, szz = m[2]
  n = np.array([
      [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
      [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
      [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
      [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz]])
  values, vectors = np.linalg.eigh(n)
  w, x, y, z = vectors[:, np.argmax(values)]
  rot = scipy.spatial.transform.Rotation.from_quat([x, y, z, w]).as_matrix()
  rotated = p0 @ rot.T
  scale = np.sum(rotated * y0) / np.sum(p0 * p0)
  return scale * rotated + target.mean(0)


def random_rotation(rng):
  return scipy.spatial.transform.Rotation.random(random_state=rng).as_matrix()


def test_pairwise_squared_distances_order_and_values():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(2, 5, 3))
  got = geometry.pairwise_squared_distances(tf.constant(points)).numpy()
  expected = [[np.sum((pts[i] - pts[j])**2) for i in range(5)
               for j in range(i + 1, 5)] for pts in points]
  assert got.shape == (2, 10)
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_pairwise_squared_distances_2d_and_gradient_at_coincident_points():
  points = tf.constant(np.zeros((2, 32, 2)))  # 16 + 16 joints, all coincident
  with tf.GradientTape() as tape:
    tape.watch(points)
    d = geometry.pairwise_squared_distances(points)
    total = tf.reduce_sum(d)
  assert d.shape == (2, 32 * 31 // 2)
  grad = tape.gradient(total, points).numpy()
  assert np.all(np.isfinite(grad))


def test_optimal_scale_closed_form_and_minimizer():
  rng = np.random.default_rng(1)
  prediction = rng.normal(size=(2, 16, 3))
  target = 1.7 * prediction + 0.1 * rng.normal(size=(2, 16, 3))
  k = geometry.optimal_scale(tf.constant(prediction), target).numpy()
  for b in range(2):
    best = scipy.optimize.minimize_scalar(
        lambda s, b=b: np.sum((s * prediction[b] - target[b])**2)).x
    np.testing.assert_allclose(k[b], best, rtol=1e-6)
    np.testing.assert_allclose(
        k[b], np.sum(prediction[b] * target[b]) / np.sum(prediction[b]**2))


def test_optimal_scale_zero_prediction_is_finite():
  k = geometry.optimal_scale(tf.zeros((1, 4, 3)), tf.ones((1, 4, 3)))
  assert k.numpy()[0] == 0.0


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_procrustes_equals_quaternion_reference(seed):
  rng = np.random.default_rng(seed)
  target = rng.normal(size=(3, 17, 3))
  prediction = rng.normal(size=(3, 17, 3)) + 0.5 * target
  got = geometry.procrustes_align(tf.constant(prediction), target).numpy()
  for b in range(3):
    np.testing.assert_allclose(got[b], horn_similarity(prediction[b],
                                                       target[b]), atol=1e-9)


def test_procrustes_recovers_similarity_transform():
  rng = np.random.default_rng(5)
  target = rng.normal(size=(2, 17, 3))
  rot = np.stack([random_rotation(rng) for _ in range(2)])
  # prediction = (target - t) R / s: the exact inverse of a similarity.
  prediction = np.einsum("bij,bnj->bni", rot, target - 0.3) / 2.5
  scale, rotation, translation = geometry.procrustes_transform(
      tf.constant(prediction), target)
  np.testing.assert_allclose(scale.numpy(), 2.5, rtol=1e-9)
  np.testing.assert_allclose(rotation.numpy(), np.transpose(rot, (0, 2, 1)),
                             atol=1e-9)
  aligned = geometry.procrustes_align(tf.constant(prediction), target).numpy()
  np.testing.assert_allclose(aligned, target, atol=1e-9)
  assert translation.shape == (2, 3)


def test_procrustes_does_not_align_by_reflection():
  rng = np.random.default_rng(6)
  target = rng.normal(size=(1, 17, 3)) * [3.0, 2.0, 1.0]
  mirrored = target * [-1.0, 1.0, 1.0]  # reflection: not a rotation
  _, rotation, _ = geometry.procrustes_transform(tf.constant(mirrored), target)
  np.testing.assert_allclose(np.linalg.det(rotation.numpy()), 1.0, atol=1e-9)
  aligned = geometry.procrustes_align(tf.constant(mirrored), target).numpy()
  np.testing.assert_allclose(aligned[0], horn_similarity(mirrored[0],
                                                         target[0]), atol=1e-9)
  assert np.abs(aligned - target).max() > 0.1  # a reflection would be exact


def test_root_relative_and_align():
  rng = np.random.default_rng(7)
  prediction = rng.normal(size=(2, 17, 3))
  target = rng.normal(size=(2, 17, 3))
  rel = geometry.root_relative(tf.constant(prediction)).numpy()
  np.testing.assert_allclose(rel, prediction - prediction[:, :1])
  aligned = geometry.root_align(tf.constant(prediction), target).numpy()
  np.testing.assert_allclose(aligned[:, 0], target[:, 0], atol=1e-12)
  np.testing.assert_allclose(aligned - aligned[:, :1], rel, atol=1e-12)


def test_scale_normalize_finite_for_coincident_hips():
  points = tf.constant(np.ones((2, 16, 3)))
  with tf.GradientTape() as tape:
    tape.watch(points)
    normalized = geometry.scale_normalize(points, 0, 3, min_length=1e-3)
    total = tf.reduce_sum(normalized)
  grad = tape.gradient(total, points).numpy()
  assert np.all(np.isfinite(normalized.numpy()))
  assert np.all(np.isfinite(grad))
  rng = np.random.default_rng(8)
  pose = rng.normal(size=(1, 16, 3))
  got = geometry.scale_normalize(tf.constant(pose), 0, 3, min_length=0).numpy()
  hips = np.linalg.norm(pose[0, 0] - pose[0, 3])
  np.testing.assert_allclose(got, pose / hips)
