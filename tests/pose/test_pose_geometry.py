"""Pairwise distances, optimal scale, similarity Procrustes, undistortion and
root translation vs references."""
import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.transform
import tensorflow as tf

from ige_tf.pose import camera
from ige_tf.pose import geometry
from ige_tf.pose.data import pipeline

# Human3.6M-like distortion (subject 9, camera 1).
K = np.array([-0.2071, 0.2478, -0.0031], np.float32)
P = np.array([-0.00142, -0.00098], np.float32)


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


def _pairwise_reference(points):
  """numpy: `|p_i - p_j|^2` for j > i, row-major, summed over D in order."""
  n = points.shape[-2]
  return np.stack([np.sum((points[..., i, :] - points[..., j, :])**2, -1)
                   for i in range(n) for j in range(i + 1, n)], -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", [2, 3])
def test_pairwise_squared_distances_equal_the_direct_differences(dims, dtype):
  # The matrix-product form must give the differences bit for bit (the pose
  # energy's values depend on it), pairs ordered as pair_indices.
  points = np.random.default_rng(dims).normal(size=(4, 32, dims)).astype(
      dtype)
  got = geometry.pairwise_squared_distances(tf.constant(points)).numpy()
  assert got.shape == (4, 32 * 31 // 2) and got.dtype == dtype
  np.testing.assert_array_equal(got, _pairwise_reference(points))
  i, j = geometry.pair_indices(32)
  np.testing.assert_array_equal(
      got[:, 5], np.sum((points[:, i[5]] - points[:, j[5]])**2, -1))


def test_pairwise_squared_distances_gradient_is_the_analytic_one():
  rng = np.random.default_rng(7)
  points = rng.normal(size=(3, 16, 3))
  weights = rng.normal(size=16 * 15 // 2)
  x = tf.constant(points)
  with tf.GradientTape() as tape:
    tape.watch(x)
    total = tf.reduce_sum(geometry.pairwise_squared_distances(x) * weights)
  expected = np.zeros_like(points)
  for p, (i, j) in enumerate(zip(*geometry.pair_indices(16))):
    diff = points[:, i] - points[:, j]
    expected[:, i] += 2 * weights[p] * diff
    expected[:, j] -= 2 * weights[p] * diff
  np.testing.assert_allclose(tape.gradient(total, x), expected, rtol=1e-12,
                             atol=1e-12)


def test_pairwise_squared_distances_any_leading_dimensions():
  points = np.random.default_rng(4).normal(size=(2, 3, 5, 2))
  batched = geometry.pairwise_squared_distances(tf.constant(points)).numpy()
  assert batched.shape == (2, 3, 10)
  np.testing.assert_array_equal(batched, _pairwise_reference(points))
  single = geometry.pairwise_squared_distances(tf.constant(points[1, 2]))
  np.testing.assert_array_equal(single, batched[1, 2])


def test_pairwise_squared_distances_needs_static_sizes():
  fn = tf.function(geometry.pairwise_squared_distances,
                   input_signature=[tf.TensorSpec([2, None, 3], tf.float32)])
  with pytest.raises(ValueError, match="needs static N and D.*None, 3"):
    fn.get_concrete_function()


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


def test_undistort_inverts_the_distortion():
  rng = np.random.default_rng(0)
  x = rng.uniform(-0.45, 0.45, size=(3, 16, 2)).astype(np.float32)
  k = np.tile(K, (3, 1))
  p = np.tile(P, (3, 1))
  distorted = camera.distort(x, k, p)
  np.testing.assert_allclose(geometry.undistort(distorted, k, p), x,
                             atol=2e-6)


def test_root_translation_is_exact_for_projected_ground_truth(records_gt):
  features, labels = next(iter(pipeline.pose_dataset(records_gt, "test", 64,
                                                     shuffle=False)))
  root = labels["root_3d"]
  relative = labels["pose_3d"] - root[:, None, :]
  solved = geometry.solve_root_translation(relative, features["pose_2d"],
                                           features["distortion"])
  # GT 2D is the exact projection: the linear system is consistent.
  np.testing.assert_allclose(solved, root, atol=2e-4)


def test_root_translation_of_degenerate_input_is_finite_and_in_front():
  relative = np.zeros((3, 16, 3), np.float32)
  relative[1] = np.random.default_rng(1).normal(size=(16, 3))
  pose_2d = np.zeros((3, 16, 2), np.float32)  # every joint in one point
  pose_2d[2] = np.random.default_rng(2).normal(size=(16, 2)) * 1e3
  distortion = np.tile(np.concatenate([K, P]), (3, 1))
  root = geometry.solve_root_translation(relative, pose_2d, distortion,
                                         min_root_depth=1.0).numpy()
  assert np.all(np.isfinite(root))
  assert np.all(root[:, 2] >= 1.0)


def test_observed_scale_is_the_rms_spread_smoothed():
  pose_2d = np.random.default_rng(5).normal(size=(3, 16, 2))
  centred = pose_2d - pose_2d.mean(1, keepdims=True)
  rms = np.sqrt(np.mean(np.sum(centred**2, -1), -1))
  np.testing.assert_allclose(geometry.observed_scale(pose_2d, 1e-3),
                             np.sqrt(rms**2 + 1e-6), rtol=1e-12)
  # Every joint in one point: the smoothing, not zero.
  np.testing.assert_allclose(
      geometry.observed_scale(np.ones((1, 16, 2)), 1e-3), [1e-3], rtol=1e-9)
