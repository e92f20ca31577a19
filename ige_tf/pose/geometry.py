"""Pose geometry in TF: pairwise distances, scale and similarity alignment.

All functions are batched over leading dimensions and use the input dtype
unless stated otherwise.
"""
import numpy as np
import tensorflow as tf


def pair_indices(num_points):
  """Index pairs (i, j), j > i, row-major: (0,1), (0,2), ..., (N-2,N-1).

  Args:
    num_points: N.

  Returns:
    (i, j): two int32 numpy arrays of length N (N - 1) / 2.
  """
  i, j = np.triu_indices(num_points, k=1)
  return i.astype(np.int32), j.astype(np.int32)


def pairwise_squared_distances(points):
  """Squared euclidean distances between all point pairs (paper eq. 6).

  No square root, so the gradient is finite (zero) for coincident points.

  Args:
    points: float `[..., N, D]` with static N.

  Returns:
    float `[..., N (N - 1) / 2]`: `|z_i - z_j|^2` for j > i, ordered as
    `pair_indices(N)`.
  """
  points = tf.convert_to_tensor(points)
  num_points = points.shape[-2]
  if num_points is None:
    raise ValueError("pairwise_squared_distances needs a static number of "
                     f"points, got shape {points.shape}")
  i, j = pair_indices(num_points)
  diff = tf.gather(points, i, axis=-2) - tf.gather(points, j, axis=-2)
  return tf.reduce_sum(tf.square(diff), axis=-1)


def optimal_scale(prediction, target):
  """Scale k minimizing `|k prediction - target|^2` per example.

  `k = <prediction, target> / <prediction, prediction>` over all joints and
  coordinates; 0 when the prediction is identically zero.

  Args:
    prediction: float `[B, J, D]`.
    target: float `[B, J, D]`.

  Returns:
    float `[B]`.
  """
  prediction = tf.convert_to_tensor(prediction)
  target = tf.cast(target, prediction.dtype)
  num = tf.reduce_sum(prediction * target, axis=[-2, -1])
  den = tf.reduce_sum(tf.square(prediction), axis=[-2, -1])
  return tf.math.divide_no_nan(num, den)


def scale_align(prediction, target):
  """`k * prediction` with the optimal scale k of `optimal_scale`.

  Args:
    prediction, target: float `[B, J, D]`.

  Returns:
    float `[B, J, D]`.
  """
  prediction = tf.convert_to_tensor(prediction)
  return optimal_scale(prediction, target)[..., None, None] * prediction


def root_relative(points, root_index=0):
  """Subtracts joint `root_index` from every joint.

  Args:
    points: float `[..., J, D]`.
    root_index: int joint index.

  Returns:
    float `[..., J, D]` with the root at the origin.
  """
  points = tf.convert_to_tensor(points)
  return points - points[..., root_index:root_index + 1, :]


def root_align(prediction, target, root_index=0):
  """Translates `prediction` so its root joint coincides with `target`'s.

  Args:
    prediction, target: float `[..., J, D]`.
    root_index: int joint index.

  Returns:
    float `[..., J, D]`.
  """
  prediction = tf.convert_to_tensor(prediction)
  target = tf.cast(target, prediction.dtype)
  return (root_relative(prediction, root_index) +
          target[..., root_index:root_index + 1, :])


def scale_normalize(points, index_a, index_b, min_length=1e-3):
  """Divides a pose by the distance between two of its joints, safely.

  Used for the feasibility energy (paper eq. 8, hips). The divisor is
  `sqrt(|p_a - p_b|^2 + min_length^2)`, so coincident joints give a finite
  result and gradient instead of a division by zero.

  Args:
    points: float `[..., J, D]`.
    index_a, index_b: joint indices (e.g. `skeleton.H36M16_HIPS`).
    min_length: smoothing length, same unit as `points`.

  Returns:
    float `[..., J, D]`.
  """
  points = tf.convert_to_tensor(points)
  # A weighted sum rather than indexing: the same values, and its gradient
  # is a product (indexing's, StridedSliceGrad, is no TFLite builtin).
  num_joints = points.shape[-2]
  weights = np.zeros([num_joints, 1], np.float32)
  weights[index_a] += 1.0
  weights[index_b] -= 1.0
  diff = tf.reduce_sum(points * tf.constant(weights, points.dtype), axis=-2)
  length = tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1) +
                   tf.cast(min_length, points.dtype)**2)
  return points / tf.expand_dims(tf.expand_dims(length, -1), -1)


def procrustes_transform(prediction, target):
  """Similarity transform (s, R, t) minimizing `|s R p + t - y|^2` per example.

  Rotations only (det R = +1): when the best orthogonal fit is a reflection,
  the smallest singular direction is flipped (Umeyama 1991), so a mirrored
  prediction is not "aligned" by a reflection.

  Computed in float64 internally. Gradients through the SVD are unreliable for
  (near-)degenerate poses: use for metrics, not as a training loss.

  Args:
    prediction: float `[B, J, D]`.
    target: float `[B, J, D]`.

  Returns:
    (scale `[B]`, rotation `[B, D, D]`, translation `[B, D]`), float64, such
    that `aligned = scale * prediction @ rotation^T + translation`.
  """
  p = tf.cast(prediction, tf.float64)
  y = tf.cast(target, tf.float64)
  mu_p = tf.reduce_mean(p, axis=-2, keepdims=True)
  mu_y = tf.reduce_mean(y, axis=-2, keepdims=True)
  p0 = p - mu_p
  y0 = y - mu_y
  # Cross-covariance H = Y0^T P0 ([B, D, D]); R = U diag(1, .., d) V^T.
  cov = tf.linalg.matmul(y0, p0, transpose_a=True)
  sing, u, v = tf.linalg.svd(cov)
  d = tf.sign(tf.linalg.det(tf.linalg.matmul(u, v, transpose_b=True)))
  d = tf.where(tf.equal(d, 0.0), tf.ones_like(d), d)
  dims = sing.shape[-1]
  signs = tf.concat(
      [tf.ones_like(sing[..., :-1]), d[..., None]], axis=-1) if dims > 1 else (
          d[..., None])
  rotation = tf.linalg.matmul(u * signs[..., None, :], v, transpose_b=True)
  var_p = tf.reduce_sum(tf.square(p0), axis=[-2, -1])
  scale = tf.math.divide_no_nan(tf.reduce_sum(sing * signs, axis=-1), var_p)
  translation = (mu_y[..., 0, :] - scale[..., None] * tf.linalg.matvec(
      rotation, mu_p[..., 0, :]))
  return scale, rotation, translation


def procrustes_align(prediction, target):
  """`prediction` after the optimal similarity transform onto `target`.

  Args:
    prediction, target: float `[B, J, D]`.

  Returns:
    float `[B, J, D]` in the dtype of `prediction`.
  """
  prediction = tf.convert_to_tensor(prediction)
  scale, rotation, translation = procrustes_transform(prediction, target)
  p = tf.cast(prediction, tf.float64)
  aligned = (scale[..., None, None] *
             tf.linalg.matmul(p, rotation, transpose_b=True) +
             translation[..., None, :])
  return tf.cast(aligned, prediction.dtype)


def mean_joint_distance(prediction, target):
  """Mean over joints of the euclidean distance, per example.

  Args:
    prediction, target: float `[..., J, D]`.

  Returns:
    float `[...]`.
  """
  prediction = tf.convert_to_tensor(prediction)
  target = tf.cast(target, prediction.dtype)
  return tf.reduce_mean(tf.norm(prediction - target, axis=-1), axis=-1)
