"""Pose geometry in TF: pairwise distances, scale and similarity alignment,
undistortion and the camera-frame placement of a root-relative pose.

All functions are batched over leading dimensions and use the input dtype
unless stated otherwise.
"""
import numpy as np
import tensorflow as tf

from ige_tf.pose import camera
from ige_tf.pose import skeleton

# Indices into [pelvis, H36M16...] (i.e. H36M17) of the MPII16 joints: the
# 2D-3D correspondences used to solve for the root translation.
_MPII16_FROM_H36M17 = skeleton.conversion_indices(skeleton.H36M17,
                                                  skeleton.MPII16)


def pair_indices(num_points):
  """Index pairs (i, j), j > i, row-major: (0,1), (0,2), ..., (N-2,N-1).

  Args:
    num_points: N.

  Returns:
    (i, j): two int32 numpy arrays of length N (N - 1) / 2.
  """
  i, j = np.triu_indices(num_points, k=1)
  return i.astype(np.int32), j.astype(np.int32)


def pair_difference_matrix(num_points):
  """Constant `[N, P]` matrix M with `(x @ M)[p] = x[i_p] - x[j_p]`.

  Column p has +1 at row i_p and -1 at row j_p, for the pairs
  `pair_indices(N)` (j > i, row-major).

  Returns:
    float32 numpy `[N, N (N - 1) / 2]`.
  """
  i, j = pair_indices(num_points)
  matrix = np.zeros((num_points, len(i)), np.float32)
  columns = np.arange(len(i))
  matrix[i, columns] = 1.0
  matrix[j, columns] = -1.0
  return matrix


def pairwise_squared_distances(points):
  """Squared euclidean distances between all point pairs (paper eq. 6).

  No square root, so the gradient is finite (zero) for coincident points.
  Computed as one product per coordinate with the constant +-1 / 0 matrix of
  `pair_difference_matrix`: for finite input each product is an exact
  difference `x_i - x_j`, so the values equal gathering the pairs and
  subtracting, bit for bit in float32 and float64 on CPU (tested). TF32
  matrix products (TensorFloat-32, on by default on NVIDIA Ampere and later
  GPUs) round the coordinates to 10 mantissa bits first;
  `tf.config.experimental.enable_tensor_float_32_execution(False)` restores
  full precision there. On CPU the product and its transpose are several
  times faster than gathering the pairs and scattering their gradients back
  (IGE-8 inference 2.4x faster at batch 1024), and its gradient uses only
  TFLite builtins. Not counted as multiply-adds (`ige_tf.pose.flops`): like
  a gather, it is not a learned dense layer.

  Args:
    points: float `[..., N, D]` with static N and D and at least one leading
      (batch) dimension or none (`[N, D]`); finite.

  Returns:
    float `[..., N (N - 1) / 2]`: `|z_i - z_j|^2` for j > i, ordered as
    `pair_indices(N)`.

  Raises:
    ValueError: N or D is not static.
  """
  points = tf.convert_to_tensor(points)
  num_points, dims = points.shape[-2], points.shape[-1]
  if num_points is None or dims is None:
    raise ValueError("pairwise_squared_distances needs static N and D, got "
                     f"shape {points.shape}")
  if points.shape.rank == 2:
    return pairwise_squared_distances(points[None])[0]
  matrix = tf.constant(pair_difference_matrix(num_points), points.dtype)
  total = 0.0
  # tf.unstack, not slicing: its gradient is a stack (a TFLite builtin).
  for coordinate in tf.unstack(points, num=dims, axis=-1):
    total += tf.square(tf.matmul(coordinate, matrix))
  return total


def observed_scale(pose_2d, min_scale=1e-3):
  """Root-mean-square distance of 2D joints from their centroid, per example.

  Args:
    pose_2d: float `[B, J, 2]`.
    min_scale: smoothing: the result is `sqrt(rms^2 + min_scale^2)` > 0.

  Returns:
    float `[B]`.
  """
  pose_2d = tf.convert_to_tensor(pose_2d)
  centred = pose_2d - tf.reduce_mean(pose_2d, axis=-2, keepdims=True)
  mean_sq = tf.reduce_mean(tf.reduce_sum(tf.square(centred), -1), -1)
  return tf.sqrt(mean_sq + tf.constant(min_scale, pose_2d.dtype)**2)


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
                   tf.constant(min_length, points.dtype)**2)
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


def undistort(points, k, p, iterations=5, limit=4.0):
  """Inverts the distortion of `camera.distort` by fixed-point iteration.

  `x <- (x_d - (p2, p1) r2(x)) / (radial(x) + tan(x))`, starting at `x_d`.
  For Human3.6M's cameras (|k1| ~ 0.2, image half-width ~ 0.45) five
  iterations recover `x` to ~1e-6. The denominator is bounded below by 0.5
  and the iterate is clipped to +-`limit`, so the result is finite for any
  finite input.

  Args:
    points: float `[B, J, 2]` distorted normalized coordinates.
    k: float `[B, 3]` radial distortion.
    p: float `[B, 2]` tangential distortion (p1, p2).
    iterations: number of fixed-point iterations.
    limit: bound on each undistorted coordinate.

  Returns:
    float `[B, J, 2]` undistorted normalized coordinates `X[:2] / X[2]`.
  """
  x_d = tf.convert_to_tensor(points)
  k = tf.cast(k, x_d.dtype)[..., None, :]
  p = tf.cast(p, x_d.dtype)[..., None, :]
  p_swapped = tf.reverse(p, axis=[-1])
  x = x_d
  for _ in range(iterations):
    r2 = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
    radial = 1 + r2 * (k[..., 0:1] + r2 * (k[..., 1:2] + r2 * k[..., 2:3]))
    tan = p[..., 0:1] * x[..., 1:2] + p[..., 1:2] * x[..., 0:1]
    x = (x_d - p_swapped * r2) / tf.maximum(radial + tan, 0.5)
    x = tf.clip_by_value(x, -limit, limit)
  return x


def solve_root_translation(root_relative, pose_2d, distortion,
                           min_root_depth=1.0, prior_depth=5.0, ridge=1e-6,
                           undistort_iterations=5):
  """Translation placing a root-relative pose in the camera frame.

  Minimizes, over t, the linearized perspective residuals of the MPII16
  joints the 3D pose shares with the observation,
    sum_j |(X_j + t)_xy - x_j (X_j + t)_z|^2,
  with x_j the undistorted observation. Closed form: with centred quantities
  (bar = mean over joints), `t_z = -sum(du * da + dv * db) / sum(du^2 + dv^2)`
  and `t_xy = mean(x) t_z + mean(a, b)`, where `a = u Z - X`, `b = v Z - Y`.
  A tiny ridge towards `prior_depth` keeps a degenerate observation (all
  joints in one point) finite, and the depth is soft-clamped to at least
  `min_root_depth` (`camera.soft_min_depth`), so a mirrored or implausible
  pose is still placed in front of the camera.

  Args:
    root_relative: float `[B, 16, 3]` H36M16 joints relative to the pelvis.
    pose_2d: float `[B, 16, 2]` MPII16 distorted normalized coordinates.
    distortion: float `[B, 5]` (k1, k2, k3, p1, p2).
    min_root_depth: lower bound of the root depth (soft), same unit.
    prior_depth: depth the ridge pulls towards (only matters when the
      observation has no spread).
    ridge: ridge weight relative to the number of joints.
    undistort_iterations: see `undistort`.

  Returns:
    float `[B, 3]` root (pelvis) position in the camera frame.
  """
  root_relative = tf.convert_to_tensor(root_relative)
  dtype = root_relative.dtype
  k, p = camera.split_distortion(tf.cast(distortion, dtype))
  x = undistort(tf.cast(pose_2d, dtype), k, p, undistort_iterations)
  with_root = tf.concat([tf.zeros_like(root_relative[:, :1]), root_relative],
                        axis=1)
  points = tf.gather(with_root, _MPII16_FROM_H36M17, axis=1)  # [B, 16, 3]
  u, v = x[..., 0], x[..., 1]
  X, Y, Z = points[..., 0], points[..., 1], points[..., 2]
  a = u * Z - X
  b = v * Z - Y
  du = u - tf.reduce_mean(u, -1, keepdims=True)
  dv = v - tf.reduce_mean(v, -1, keepdims=True)
  da = a - tf.reduce_mean(a, -1, keepdims=True)
  db = b - tf.reduce_mean(b, -1, keepdims=True)
  num_joints = tf.cast(tf.shape(u)[-1], dtype)
  eps = ridge * num_joints
  num = -tf.reduce_sum(du * da + dv * db, -1) + eps * prior_depth
  den = tf.reduce_sum(tf.square(du) + tf.square(dv), -1) + eps
  t_z = camera.soft_min_depth(num / den, min_root_depth)
  t_x = tf.reduce_mean(u, -1) * t_z + tf.reduce_mean(a, -1)
  t_y = tf.reduce_mean(v, -1) * t_z + tf.reduce_mean(b, -1)
  return tf.stack([t_x, t_y, t_z], axis=-1)
