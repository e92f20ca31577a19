"""The Martinez baseline layers: max-norm dense, network size, placement."""
import numpy as np
import pytest

from ige_tf.pose import baseline
from ige_tf.pose import flops
from ige_tf.pose import models
from ige_tf.pose.data import pipeline


def test_norm_clipped_dense_uses_the_clipped_kernel():
  layer = baseline.NormClippedDense(3, max_norm=0.5)
  x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  y = layer(x).numpy()
  kernel = layer.kernel.numpy()
  norm = np.linalg.norm(kernel)
  expected = x @ (kernel * min(1.0, 0.5 / norm)) + layer.bias.numpy()
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("units,blocks", [(1024, 2), (128, 1)])
def test_baseline_size_matches_martinez(units, blocks):
  model = models.baseline_lifter(units=units, num_blocks=blocks)
  dense = models.find_baseline(model).dense_layers()
  assert len(dense) == 2 + 2 * blocks
  kernels = 32 * units + blocks * 2 * units * units + units * 48
  assert flops.dense_multiply_adds(dense) == kernels
  biases = units + blocks * 2 * units + 48
  batch_norm = (1 + 2 * blocks) * 2 * units  # gamma, beta
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == (
      kernels + biases + batch_norm)


def test_camera_placement_puts_ground_truth_back_in_the_camera_frame(
    records_gt):
  features, labels = next(iter(pipeline.pose_dataset(records_gt, "test", 64,
                                                     shuffle=False)))
  relative = labels["pose_3d"] - labels["root_3d"][:, None, :]
  placed = baseline.CameraPlacement()(relative, features["pose_2d"],
                                      features["distortion"])
  np.testing.assert_allclose(placed, labels["pose_3d"], atol=2e-4)
