"""Protocol 1a, Protocol 2 and MPJPE (mm, 17 joints with the pelvis added)."""
import numpy as np
import pytest
import scipy.spatial.transform
import tensorflow as tf

from ige_tf.pose import metrics
from test_pose_geometry import horn_similarity  # pylint: disable=import-error


def with_pelvis_np(pose_16):
  """H36M16 -> H36M17: pelvis = midpoint of r_hip (0) and l_hip (3)."""
  pelvis = 0.5 * (pose_16[:, 0] + pose_16[:, 3])
  return np.concatenate([pelvis[:, None], pose_16], axis=1)


def poses(seed, batch=3):
  rng = np.random.default_rng(seed)
  target = rng.normal(size=(batch, 16, 3)) * 0.3 + [0.0, 0.0, 5.0]  # metres
  prediction = 1.1 * target + rng.normal(size=(batch, 16, 3)) * 0.05
  return prediction, target


def test_protocol1a_matches_closed_form():
  prediction, target = poses(0)
  p, y = with_pelvis_np(prediction), with_pelvis_np(target)
  k = np.sum(p * y, axis=(1, 2)) / np.sum(p * p, axis=(1, 2))
  expected = np.linalg.norm(k[:, None, None] * p - y, axis=-1).mean(1) * 1000
  got = metrics.protocol1a_mm(tf.constant(prediction, tf.float32), target)
  assert got.shape == (3,) and got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_protocol2_matches_quaternion_procrustes():
  prediction, target = poses(1)
  p, y = with_pelvis_np(prediction), with_pelvis_np(target)
  expected = [np.linalg.norm(horn_similarity(p[b], y[b]) - y[b], axis=-1)
              .mean() * 1000 for b in range(3)]
  got = metrics.protocol2_mm(prediction, target).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_mpjpe_matches_root_aligned_error():
  prediction, target = poses(2)
  p, y = with_pelvis_np(prediction), with_pelvis_np(target)
  expected = np.linalg.norm((p - p[:, :1]) - (y - y[:, :1]),
                            axis=-1).mean(1) * 1000
  got = metrics.mpjpe_mm(prediction, target).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_metric_invariances():
  prediction, target = poses(3)
  rot = scipy.spatial.transform.Rotation.random(
      3, random_state=0).as_matrix()
  moved = 3.0 * np.einsum("bij,bnj->bni", rot, prediction) + [1.0, -2.0, 0.5]
  np.testing.assert_allclose(metrics.protocol2_mm(moved, target),
                             metrics.protocol2_mm(prediction, target),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics.protocol1a_mm(0.2 * prediction, target),
                             metrics.protocol1a_mm(prediction, target),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics.mpjpe_mm(prediction + 7.0, target),
                             metrics.mpjpe_mm(prediction, target), rtol=1e-4)
  # Perfect predictions score 0; Protocol 2 <= 1a <= error without alignment.
  assert np.allclose(metrics.protocol2_mm(target, target), 0, atol=1e-3)
  p2 = metrics.protocol2_mm(prediction, target).numpy()
  p1a = metrics.protocol1a_mm(prediction, target).numpy()
  assert np.all(p2 <= p1a + 1e-3)


def test_16_and_17_joint_inputs_agree_and_units():
  prediction, target = poses(4)
  for name, fn in metrics.METRICS.items():
    a = fn(prediction, target).numpy()
    b = fn(with_pelvis_np(prediction), with_pelvis_np(target)).numpy()
    c = fn(prediction * 1000, target * 1000, units_to_mm=1.0).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(a, c, rtol=1e-4, err_msg=name)
  with pytest.raises(ValueError, match="16 .* or 17"):
    metrics.mpjpe_mm(np.zeros((1, 15, 3)), np.zeros((1, 15, 3)))


def test_all_metrics_keys_and_group_means():
  prediction, target = poses(5)
  values = metrics.all_metrics(prediction, target)
  assert sorted(values) == sorted(metrics.METRIC_NAMES)
  means, counts = metrics.group_means([1.0, 2.0, 3.0, 10.0], [0, 0, 2, -1], 3)
  np.testing.assert_allclose(means.numpy(), [1.5, 0.0, 3.0])
  np.testing.assert_array_equal(counts.numpy(), [2, 0, 1])
