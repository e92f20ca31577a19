"""Voxel reconstruction metrics: IoU at the training resolution and at 256^3.

- `voxel_iou`: IoU of predictions thresholded at 0.5 against labels, at the
  training resolution (Tables 3 and 4).
- `upsampled_iou`: IoU of predictions trilinearly upsampled from the training
  resolution R to the label resolution (256^3 in Table 5), thresholded at
  0.5. Occupancy probabilities (not logits) are interpolated, with the
  half-pixel-centre convention of `ige_tf.voxel.decoders.upsample_trilinear`.
  Computed in slabs of the first axis so a 256^3 float grid is never held
  whole.
- `per_category_mean` / `class_mean` / `CategoryIoU`: per-category means and
  their unweighted mean over categories ("mean values are calculated by
  class", Table 3).

The IoU of two empty grids is defined as 1.
"""
import collections

import numpy as np
import tensorflow as tf

from ige_tf.voxel.decoders import upsample_trilinear


def _occupied(predictions, threshold, from_logits):
  predictions = tf.convert_to_tensor(predictions)
  probabilities = tf.sigmoid(predictions) if from_logits else predictions
  return probabilities > threshold


def _ratio(intersection, union):
  intersection = tf.cast(intersection, tf.float64)
  union = tf.cast(union, tf.float64)
  iou = tf.where(union > 0, intersection / tf.maximum(union, 1.0),
                 tf.ones_like(union))
  return tf.cast(iou, tf.float32)


def voxel_iou(labels, predictions, threshold=0.5, from_logits=True):
  """IoU of thresholded predictions at the training resolution.

  Args:
    labels: float `[B, R, R, R]` occupancy (occupied where > 0.5).
    predictions: float `[..., B, R, R, R]` logits or probabilities, e.g. the
      model's `[T+1, B, R, R, R]` steps (labels broadcast over leading axes).
    threshold: occupancy probability threshold.
    from_logits: whether `predictions` are logits.

  Returns:
    float32 `[..., B]` IoU per example.
  """
  predicted = _occupied(predictions, threshold, from_logits)
  truth = tf.convert_to_tensor(labels) > 0.5
  truth = tf.broadcast_to(truth, tf.shape(predicted))
  axes = [-3, -2, -1]
  intersection = tf.math.count_nonzero(predicted & truth, axis=axes)
  union = tf.math.count_nonzero(predicted | truth, axis=axes)
  return _ratio(intersection, union)


def _upsampled_counts(labels, probabilities, factor, threshold, slab_rows):
  """(intersection, union) int64 `[B]` of one batch, computed in slabs.

  `labels` is bool `[B, Q, Q, Q]`, `probabilities` float `[B, R, R, R]`.
  """
  size = probabilities.shape[1]
  intersection = tf.zeros(tf.shape(probabilities)[:1], tf.int64)
  union = tf.zeros(tf.shape(probabilities)[:1], tf.int64)
  for start in range(0, size, slab_rows):
    stop = min(start + slab_rows, size)
    first, last = max(start - 1, 0), min(stop + 1, size)  # One-row halo.
    slab = upsample_trilinear(probabilities[:, first:last], factor)
    offset = (start - first) * factor
    slab = slab[:, offset:offset + (stop - start) * factor]
    truth = labels[:, start * factor:stop * factor]
    predicted = slab > threshold
    intersection += tf.math.count_nonzero(predicted & truth, axis=[1, 2, 3])
    union += tf.math.count_nonzero(predicted | truth, axis=[1, 2, 3])
  return intersection, union


def upsampled_iou(labels, predictions, threshold=0.5, from_logits=True,
                  max_slab_voxels=2 ** 22):
  """IoU of predictions trilinearly upsampled to the label resolution.

  Args:
    labels: float or bool `[B, Q, Q, Q]` high-resolution occupancy (Q = 256
      in the paper), occupied where > 0.5.
    predictions: float `[..., B, R, R, R]` logits or probabilities at the
      training resolution R; Q must be a multiple of R.
    threshold: occupancy probability threshold after interpolation.
    from_logits: whether `predictions` are logits (converted to
      probabilities before interpolating).
    max_slab_voxels: upper bound on high-resolution voxels per example held at
      once (the slab size along the first axis follows from it).

  Returns:
    float32 `[..., B]` IoU per example.
  """
  predictions = tf.convert_to_tensor(predictions)
  labels = tf.convert_to_tensor(labels)
  if labels.dtype != tf.bool:
    labels = labels > 0.5
  size = predictions.shape[-1]
  high = labels.shape[-1]
  if (predictions.shape.rank < 4 or size is None or high is None
      or high % size):
    raise ValueError(
        f"label resolution {high} must be a multiple of the prediction "
        f"resolution {size} (shapes {labels.shape} and {predictions.shape})")
  factor = high // size
  slab_rows = max(1, int(max_slab_voxels) // (factor * high * high))
  leading = tf.shape(predictions)[:-4]
  flat = tf.reshape(predictions, tf.concat([[-1], tf.shape(predictions)[-4:]],
                                           axis=0))
  probabilities = tf.sigmoid(flat) if from_logits else flat

  def one_prediction_set(grids):
    return _upsampled_counts(labels, grids, factor, threshold, slab_rows)

  intersection, union = tf.map_fn(
      one_prediction_set, probabilities,
      fn_output_signature=(tf.int64, tf.int64), parallel_iterations=1)
  iou = _ratio(intersection, union)
  return tf.reshape(iou, tf.concat([leading, tf.shape(labels)[:1]], axis=0))


def per_category_mean(values, categories):
  """Mean of per-example values for every category.

  Args:
    values: array `[..., N]` per-example values (e.g. IoU per step `[T+1, N]`).
    categories: `[N]` category labels (str or bytes, e.g. synset ids).

  Returns:
    dict category (str) -> float (or list of floats over the leading axes).
  """
  values = np.asarray(values, np.float64)
  categories = [c.decode() if isinstance(c, bytes) else str(c)
                for c in np.asarray(categories).reshape(-1)]
  if values.shape[-1] != len(categories):
    raise ValueError(
        f"{values.shape[-1]} values but {len(categories)} categories")
  result = {}
  for category in sorted(set(categories)):
    mask = np.array([c == category for c in categories])
    mean = values[..., mask].mean(axis=-1)
    result[category] = mean.tolist() if mean.ndim else float(mean)
  return result


def class_mean(per_category):
  """Unweighted mean over categories of `per_category_mean`'s output."""
  if not per_category:
    raise ValueError("class_mean needs at least one category")
  mean = np.mean([np.asarray(v, np.float64) for v in per_category.values()],
                 axis=0)
  return mean.tolist() if mean.ndim else float(mean)


class CategoryIoU:
  """Accumulates per-example IoU over batches; reports per-category means.

  Example:
    acc = CategoryIoU()
    for batch: acc.update(voxel_iou(labels, steps), synsets)   # [T+1, B]
    acc.result() -> {"per_category": {synset: [step 0..T]},
                     "class_mean": [step 0..T], "instance_mean": [...]}
  """

  def __init__(self):
    self._values = collections.defaultdict(list)

  def update(self, values, categories):
    """Adds per-example values `[..., B]` for categories `[B]`."""
    values = np.asarray(values, np.float64)
    categories = np.asarray(categories).reshape(-1)
    if values.shape[-1] != categories.shape[0]:
      raise ValueError(
          f"{values.shape[-1]} values but {categories.shape[0]} categories")
    for index, category in enumerate(categories):
      key = category.decode() if isinstance(category, bytes) else str(category)
      self._values[key].append(values[..., index])

  def result(self):
    """dict with "per_category", "class_mean" and "instance_mean"."""
    if not self._values:
      raise ValueError("CategoryIoU.result() called before any update")
    per_category = {}
    for key in sorted(self._values):
      mean = np.mean(self._values[key], axis=0)
      per_category[key] = mean.tolist() if mean.ndim else float(mean)
    everything = np.mean(
        [v for values in self._values.values() for v in values], axis=0)
    return {"per_category": per_category,
            "class_mean": class_mean(per_category),
            "instance_mean": (everything.tolist() if everything.ndim
                              else float(everything))}
