"""Voxel IoU metrics and per-category aggregation against numpy references."""
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from ige_tf.voxel import metrics


def _numpy_iou(truth, predicted):
  truth = truth.reshape(len(truth), -1)
  predicted = predicted.reshape(len(predicted), -1)
  union = (truth | predicted).sum(1)
  return np.where(union > 0, (truth & predicted).sum(1) / np.maximum(union, 1),
                  1.0)


def test_voxel_iou_matches_numpy_per_step():
  rng = np.random.default_rng(0)
  labels = (rng.random((3, 8, 8, 8)) > 0.5).astype(np.float32)
  steps = rng.normal(size=(2, 3, 8, 8, 8)).astype(np.float32)
  iou = metrics.voxel_iou(labels, steps).numpy()
  assert iou.shape == (2, 3)
  for t in range(2):
    np.testing.assert_allclose(iou[t], _numpy_iou(labels > 0.5, steps[t] > 0),
                               rtol=1e-6)
  probabilities = 1 / (1 + np.exp(-steps[0]))
  np.testing.assert_allclose(
      metrics.voxel_iou(labels, probabilities, from_logits=False).numpy(),
      iou[0], rtol=1e-6)


def test_voxel_iou_of_empty_grids_is_one():
  empty = np.zeros((1, 4, 4, 4), np.float32)
  assert metrics.voxel_iou(empty, empty - 5.0).numpy() == pytest.approx([1.0])


@pytest.mark.parametrize("max_slab_voxels", [2 ** 22, 16 * 16 * 4])
def test_upsampled_iou_matches_numpy_reference(max_slab_voxels):
  rng = np.random.default_rng(1)
  # Smooth low-resolution logits so interpolation changes the thresholding.
  logits = scipy.ndimage.gaussian_filter(rng.normal(size=(2, 4, 4, 4)),
                                         (0, 1, 1, 1)) * 6
  labels = rng.random((2, 16, 16, 16)) > 0.5
  probabilities = 1 / (1 + np.exp(-logits))
  upsampled = np.stack([
      scipy.ndimage.zoom(p, 4, order=1, grid_mode=True, mode="nearest")
      for p in probabilities])
  expected = _numpy_iou(labels, upsampled > 0.5)
  result = metrics.upsampled_iou(labels.astype(np.float32),
                                 logits.astype(np.float32),
                                 max_slab_voxels=max_slab_voxels).numpy()
  np.testing.assert_allclose(result, expected, rtol=1e-6)
  # Interpolation matters: nearest-neighbour upsampling gives another value.
  nearest = logits.repeat(4, 1).repeat(4, 2).repeat(4, 3) > 0
  assert not np.allclose(expected, _numpy_iou(labels, nearest))


def test_upsampled_iou_over_steps_and_bool_labels():
  rng = np.random.default_rng(2)
  steps = rng.normal(size=(3, 2, 4, 4, 4)).astype(np.float32)
  labels = rng.random((2, 8, 8, 8)) > 0.4
  result = metrics.upsampled_iou(labels, steps).numpy()
  assert result.shape == (3, 2)
  for t in range(3):
    np.testing.assert_allclose(
        result[t], metrics.upsampled_iou(labels, steps[t]).numpy())


def test_upsampled_iou_rejects_incompatible_resolutions():
  with pytest.raises(ValueError, match="label resolution 10 must be a "
                                       "multiple of the prediction resolution 4"):
    metrics.upsampled_iou(np.zeros((1, 10, 10, 10)), np.zeros((1, 4, 4, 4)))


def test_per_category_and_class_mean():
  values = np.array([[0.2, 0.4, 0.9, 0.6, 0.5], [0.3, 0.5, 1.0, 0.7, 0.6]])
  categories = np.array([b"chair", b"chair", b"plane", b"chair", b"car"])
  per_category = metrics.per_category_mean(values, categories)
  assert per_category == {
      "car": pytest.approx([0.5, 0.6]), "chair": pytest.approx([0.4, 0.5]),
      "plane": pytest.approx([0.9, 1.0])}
  assert metrics.class_mean(per_category) == pytest.approx([0.6, 0.7])

  accumulator = metrics.CategoryIoU()
  accumulator.update(values[:, :2], categories[:2])
  accumulator.update(values[:, 2:], categories[2:])
  result = accumulator.result()
  assert result["per_category"] == per_category
  assert result["class_mean"] == pytest.approx([0.6, 0.7])
  assert result["instance_mean"] == pytest.approx([0.52, 0.62])
  with pytest.raises(ValueError, match="5 values but 2 categories"):
    metrics.per_category_mean(values, categories[:2])


def test_metrics_work_inside_tf_function():
  labels = tf.constant(np.ones((1, 8, 8, 8), np.float32))
  fn = tf.function(lambda p: (metrics.voxel_iou(labels[:, ::2, ::2, ::2], p),
                              metrics.upsampled_iou(labels, p)))
  iou, iou_high = fn(tf.fill((1, 4, 4, 4), 3.0))
  assert iou.numpy() == pytest.approx([1.0])
  assert iou_high.numpy() == pytest.approx([1.0])
