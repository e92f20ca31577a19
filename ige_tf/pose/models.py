"""Pose lifting models: the Martinez et al. baseline and the IGE lifter.

Every model maps
  pose_2d     float32 `[B, 16, 2]`  MPII16 joints, distorted normalized
                                    image coordinates `(uv - c) / f`
  distortion  float32 `[B, 5]`      (k1, k2, k3, p1, p2)
to the training loop's output dict
  steps       float32 `[T+1, B, 16, 3]`  H36M16 joints, camera frame, metres
                                         (T = 0 for the baseline)
  energy      float32 `[T, B]`      (IGE) energy at `steps[t]`
  grad_norm   float32 `[T, B]`      (IGE) energy-gradient norm at `steps[t]`
  standardized float32 `[B, 16, 3]` (default baseline) standardized
                                    root-relative output, for Martinez's
                                    training loss.

Parameterization (docs/pose_model.md). The baseline regresses the pose
relative to the pelvis, standardized with training-set statistics (paper 5.1,
Martinez et al.); `CameraPlacement` then places it in the camera frame with
the closed-form root translation that best explains the observed 2D pose
under perspective projection. The paper author's formulation
(`baseline_lifter(output_frame="camera")`, ige_tf/configs/pose/models/baseline_paper.gin)
regresses the camera-frame pose directly, without standardization. The IGE's inner variable is this camera-frame
pose itself, in metres (all 16 joints free): the reprojection energy needs
absolute depth, and every coordinate the optimizer can reach is finite:

  * the projection clamps depth softly (`camera.soft_min_depth`, 10 cm) and
    limits normalized coordinates softly (`camera.soft_limit`, +-2);
  * the feasibility normalizer divides by `sqrt(|hip_r - hip_l|^2 + m^2)`
    (m = 5 cm), never by zero;
  * the observed-2D scale used to normalize the reprojection features is
    bounded below;
so the energy and its first and second derivatives are finite for every
finite estimate (depth <= 0, coincident hips, all joints in one point).
"""
import gin
import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import EnergyMLP, UnrolledSGD, track_sublayers
from ige_tf.pose import camera
from ige_tf.pose import geometry
from ige_tf.pose import skeleton

NUM_JOINTS_2D = skeleton.MPII16.num_joints
NUM_JOINTS_3D = skeleton.H36M16.num_joints
# Indices into [pelvis, H36M16...] (i.e. H36M17) of the MPII16 joints: the
# 2D-3D correspondences used to solve for the root translation.
_MPII16_FROM_H36M17 = skeleton.conversion_indices(skeleton.H36M17,
                                                  skeleton.MPII16)

INITIAL_ESTIMATE = "initial_estimate"
INNER_OPTIMIZER = "inner_optimizer"
ENERGY = "energy"


# ---------------------------------------------------------------------------
# Geometry used by the models (pure TF functions).


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


def pair_difference_matrix(num_points):
  """Constant `[N, P]` matrix M with `(x @ M)[p] = x[i_p] - x[j_p]`.

  Column p has +1 at row i_p and -1 at row j_p, for the pairs
  `geometry.pair_indices(N)` (j > i, row-major).

  Returns:
    float32 numpy `[N, N (N - 1) / 2]`.
  """
  i, j = geometry.pair_indices(num_points)
  matrix = np.zeros((num_points, len(i)), np.float32)
  columns = np.arange(len(i))
  matrix[i, columns] = 1.0
  matrix[j, columns] = -1.0
  return matrix


def pairwise_squared_distances(points):
  """`geometry.pairwise_squared_distances` as one matrix product per axis.

  Same values (the products with the +-1 / 0 matrix are exact for finite
  input) and pair order; used inside the energies because on CPU a dense
  `[B, N] @ [N, P]` product and its transpose are several times faster than
  gathering the pairs and scattering their gradients back (IGE-8 inference
  2.4x faster at batch 1024). Not counted as multiply-adds: like the
  gather it replaces, it is not a learned dense layer.

  Args:
    points: float `[B, N, D]` with static N and D; finite.

  Returns:
    float `[B, N (N - 1) / 2]`.
  """
  points = tf.convert_to_tensor(points)
  num_points, dims = points.shape[-2], points.shape[-1]
  if num_points is None or dims is None:
    raise ValueError("pairwise_squared_distances needs static N and D, got "
                     f"shape {points.shape}")
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
  return tf.sqrt(mean_sq + tf.cast(min_scale, pose_2d.dtype)**2)


# ---------------------------------------------------------------------------
# Layers.


@keras.saving.register_keras_serializable(package="ige_tf")
class NormClippedDense(keras.layers.Dense):
  """Dense layer whose kernel is used clipped to a maximum Frobenius norm.

  Martinez et al.'s "max-norm": the forward pass uses
  `tf.clip_by_norm(kernel, max_norm)` (the norm over the whole matrix), and
  gradients flow through the clip. The stored variable itself is not
  projected, so Adam's steps stay small relative to it.

  Args:
    units: output units.
    max_norm: bound on the Frobenius norm of the kernel used.
    **kwargs: `keras.layers.Dense` arguments.
  """

  def __init__(self, units, max_norm=1.0, **kwargs):
    super().__init__(units, **kwargs)
    self.max_norm = float(max_norm)

  def call(self, inputs, training=None):
    """Args: inputs float `[B, F]`. Returns: float `[B, units]`."""
    del training
    kernel = tf.clip_by_norm(self.kernel, self.max_norm)
    outputs = tf.matmul(inputs, kernel)
    if self.bias is not None:
      outputs = outputs + self.bias
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update(max_norm=self.max_norm)
    return config


@keras.saving.register_keras_serializable(package="ige_tf")
class MartinezBaseline(keras.layers.Layer):
  """Martinez et al.'s lifting network (paper 5.1): 2D -> root-relative 3D.

  Input standardization, `Dense(units)` -> [BN] -> ReLU -> Dropout, then
  `num_blocks` residual blocks of two such layers, then `Dense(J3 * 3)`, then
  output de-standardization. Standardization statistics are non-trainable
  weights (`set_statistics`), so a checkpoint carries them.

  Args:
    units: hidden units per dense layer (1024 in Martinez et al.).
    num_blocks: residual blocks (2 in Martinez et al.).
    dropout_rate: dropout after every hidden layer (0.5).
    batch_norm: batch normalization before every ReLU.
    residual: residual connections around the blocks.
    max_norm: None, or bound on the Frobenius norm of every kernel as used
      in the forward pass (`NormClippedDense`; Martinez et al. clip to 1).
    num_joints_2d: J2, input joints (16).
    num_joints_3d: J3, output joints (16).
    standardize: standardize the input and de-standardize the output with
      the statistics of `set_statistics` (Martinez et al.); False feeds the
      normalized 2D joints as they are and returns the dense output as is
      (the paper author's camera-frame baseline; the statistics weights
      still exist, unused, so checkpoints keep one layout).
  """

  def __init__(self, units=1024, num_blocks=2, dropout_rate=0.5,
               batch_norm=True, residual=True, max_norm=None,
               num_joints_2d=NUM_JOINTS_2D, num_joints_3d=NUM_JOINTS_3D,
               standardize=True, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    self.num_blocks = int(num_blocks)
    self.dropout_rate = float(dropout_rate)
    self.batch_norm = bool(batch_norm)
    self.residual = bool(residual)
    self.max_norm = None if max_norm is None else float(max_norm)
    self.num_joints_2d = int(num_joints_2d)
    self.num_joints_3d = int(num_joints_3d)
    self.standardize = bool(standardize)

    def dense(units, name):
      if self.max_norm is None:
        return keras.layers.Dense(units, kernel_initializer="he_normal",
                                  dtype=self.dtype_policy, name=name)
      return NormClippedDense(units, max_norm=self.max_norm,
                              kernel_initializer="he_normal",
                              dtype=self.dtype_policy, name=name)

    def hidden(name):
      parts = [dense(self.units, f"{name}_dense")]
      if self.batch_norm:
        parts.append(keras.layers.BatchNormalization(
            dtype=self.dtype_policy, name=f"{name}_bn"))
      parts.append(keras.layers.ReLU(dtype=self.dtype_policy,
                                     name=f"{name}_relu"))
      parts.append(keras.layers.Dropout(self.dropout_rate,
                                        dtype=self.dtype_policy,
                                        name=f"{name}_dropout"))
      return parts

    self.input_layers = hidden("input")
    self.blocks = [hidden(f"block{b}_a") + hidden(f"block{b}_b")
                   for b in range(self.num_blocks)]
    self.output_dense = dense(self.num_joints_3d * 3, "output_dense")
    # tf.train.Checkpoint does not traverse Keras-tracked lists: without
    # this, checkpoints would miss these layers' weights (batch-norm moving
    # statistics included).
    track_sublayers(self, self.input_layers +
                    [l for b in self.blocks for l in b])

  def build(self, input_shape):
    j2, j3 = self.num_joints_2d, self.num_joints_3d
    if input_shape[-2] is not None and tuple(input_shape[-2:]) != (j2, 2):
      raise ValueError(f"MartinezBaseline expects pose_2d [B, {j2}, 2], got "
                       f"{tuple(input_shape)}")
    constant = keras.initializers.Constant
    self.input_mean = self.add_weight(name="input_mean", shape=(j2, 2),
                                      initializer="zeros", trainable=False)
    self.input_std = self.add_weight(name="input_std", shape=(j2, 2),
                                     initializer=constant(1.0),
                                     trainable=False)
    self.output_mean = self.add_weight(name="output_mean", shape=(j3, 3),
                                       initializer="zeros", trainable=False)
    self.output_std = self.add_weight(name="output_std", shape=(j3, 3),
                                      initializer=constant(1.0),
                                      trainable=False)
    shape = (input_shape[0], j2 * 2)
    for layer in self.input_layers + [l for b in self.blocks for l in b]:
      layer.build(shape)
      shape = layer.compute_output_shape(shape)
    self.output_dense.build(shape)

  def set_statistics(self, input_mean, input_std, output_mean, output_std):
    """Sets the standardization statistics.

    Args:
      input_mean, input_std: float `[J2, 2]` of the normalized 2D inputs.
      output_mean, output_std: float `[J3, 3]` of the root-relative 3D
        targets, metres.
    """
    for weight, value in ((self.input_mean, input_mean),
                          (self.input_std, input_std),
                          (self.output_mean, output_mean),
                          (self.output_std, output_std)):
      weight.assign(np.asarray(value, np.float32).reshape(weight.shape))

  def call(self, pose_2d, training=None):
    """Lifts a 2D pose.

    Args:
      pose_2d: float32 `[B, J2, 2]` normalized 2D joints.
      training: enables dropout and batch statistics.

    Returns:
      dict: "standardized" float32 `[B, J3, 3]` (the network's output) and
      "pose_3d" float32 `[B, J3, 3]` (de-standardized, metres; equal to
      "standardized" when `standardize` is False).
    """
    x = tf.cast(pose_2d, self.compute_dtype)
    if self.standardize:
      x = (x - self.input_mean) / tf.maximum(self.input_std, 1e-6)
    x = tf.reshape(x, [-1, self.num_joints_2d * 2])
    for layer in self.input_layers:
      x = _call(layer, x, training)
    for block in self.blocks:
      y = x
      for layer in block:
        y = _call(layer, y, training)
      x = x + y if self.residual else y
    out = tf.reshape(self.output_dense(x), [-1, self.num_joints_3d, 3])
    if not self.standardize:
      return {"standardized": out, "pose_3d": out}
    std_out = tf.maximum(self.output_std, 1e-6)
    return {"standardized": out,
            "pose_3d": out * std_out + self.output_mean}

  def compute_output_shape(self, input_shape):
    shape = (input_shape[0], self.num_joints_3d, 3)
    return {"standardized": shape, "pose_3d": shape}

  def dense_layers(self):
    """The `keras.layers.Dense` layers in call order (for multiply-adds)."""
    layers = self.input_layers + [l for b in self.blocks for l in b]
    return [l for l in layers if isinstance(l, keras.layers.Dense)] + [
        self.output_dense]

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, num_blocks=self.num_blocks,
                  dropout_rate=self.dropout_rate, batch_norm=self.batch_norm,
                  residual=self.residual, max_norm=self.max_norm,
                  num_joints_2d=self.num_joints_2d,
                  num_joints_3d=self.num_joints_3d,
                  standardize=self.standardize)
    return config


def _call(layer, x, training):
  if isinstance(layer, (keras.layers.Dropout,
                        keras.layers.BatchNormalization)):
    return layer(x, training=training)
  return layer(x)


@keras.saving.register_keras_serializable(package="ige_tf")
class CameraPlacement(keras.layers.Layer):
  """Root-relative pose + observed 2D -> camera-frame pose (no weights).

  See `solve_root_translation`.

  Args:
    min_root_depth: soft lower bound of the root depth, metres.
    undistort_iterations: fixed-point iterations of `undistort`.
  """

  def __init__(self, min_root_depth=1.0, undistort_iterations=5, **kwargs):
    super().__init__(**kwargs)
    self.min_root_depth = float(min_root_depth)
    self.undistort_iterations = int(undistort_iterations)

  def call(self, root_relative, pose_2d, distortion):
    """Args: root_relative float `[B, 16, 3]` (H36M16, metres), pose_2d
    float `[B, 16, 2]` (MPII16, normalized), distortion float `[B, 5]`.

    Returns: float `[B, 16, 3]` camera-frame pose, metres."""
    root = solve_root_translation(
        root_relative, pose_2d, distortion,
        min_root_depth=self.min_root_depth,
        undistort_iterations=self.undistort_iterations)
    return root_relative + root[:, None, :]

  def compute_output_shape(self, root_relative_shape, *args):
    return tuple(root_relative_shape)

  def get_config(self):
    config = super().get_config()
    config.update(min_root_depth=self.min_root_depth,
                  undistort_iterations=self.undistort_iterations)
    return config


@keras.saving.register_keras_serializable(package="ige_tf")
class PoseEnergy(keras.layers.Layer):
  """`E(y; x) = E_x(D(proj(y) + x)) + E_y(D(y / |hip_r - hip_l|))` (eqs. 5-8).

  `D` is the vector of pairwise squared distances (`geometry.
  pairwise_squared_distances`), `+` concatenation along the joints, `proj`
  the camera projection with distortion to normalized coordinates. Both
  terms are `EnergyMLP`s (softplus hidden layer, softabs output layer scaled
  by `kernel_scale` at initialization).

  Reprojection features are divided by the squared RMS spread of the
  observed 2D pose (`observed_scale`), which makes `E_x` independent of the
  subject's distance and of the image scale (an observation-only constant:
  no gradient flows through it). All divisions are guarded (module doc).

  Args:
    reprojection_units: hidden units of `E_x`.
    reprojection_outputs: softabs output units of `E_x`.
    feasibility_units: hidden units of `E_y`.
    feasibility_outputs: softabs output units of `E_y`.
    kernel_scale: scale of the output layers' initial kernels (1e-3).
    min_depth: soft minimum depth of the projection, metres.
    max_normalized: soft bound on undistorted normalized coordinates.
    hip_min_length: smoothing length of the hip-distance normalizer, metres.
    normalize_observed_scale: divide reprojection points by `observed_scale`.
    min_observed_scale: lower bound (smoothing) of that scale.
    feasibility_feature_scale: factor on the `E_y` features.
  """

  def __init__(self, reprojection_units=(64,), reprojection_outputs=16,
               feasibility_units=(64,), feasibility_outputs=16,
               kernel_scale=1e-3, min_depth=camera.SAFE_PROJECTION["min_depth"],
               max_normalized=camera.SAFE_PROJECTION["max_normalized"],
               hip_min_length=0.05, normalize_observed_scale=True,
               min_observed_scale=1e-3, feasibility_feature_scale=1.0,
               **kwargs):
    super().__init__(**kwargs)
    self.reprojection_units = tuple(int(u) for u in reprojection_units)
    self.reprojection_outputs = int(reprojection_outputs)
    self.feasibility_units = tuple(int(u) for u in feasibility_units)
    self.feasibility_outputs = int(feasibility_outputs)
    self.kernel_scale = float(kernel_scale)
    self.min_depth = float(min_depth)
    self.max_normalized = float(max_normalized)
    self.hip_min_length = float(hip_min_length)
    self.normalize_observed_scale = bool(normalize_observed_scale)
    self.min_observed_scale = float(min_observed_scale)
    self.feasibility_feature_scale = float(feasibility_feature_scale)
    self.reprojection = EnergyMLP(self.reprojection_units,
                                  self.reprojection_outputs,
                                  kernel_scale=self.kernel_scale,
                                  dtype=self.dtype_policy, name="reprojection")
    self.feasibility = EnergyMLP(self.feasibility_units,
                                 self.feasibility_outputs,
                                 kernel_scale=self.kernel_scale,
                                 dtype=self.dtype_policy, name="feasibility")

  def build(self, y_shape, context_shape=None):
    j3 = y_shape[-2]
    j2 = NUM_JOINTS_2D
    if isinstance(context_shape, dict) and "pose_2d" in context_shape:
      j2 = context_shape["pose_2d"][-2]
    if j3 is None or j2 is None:
      raise ValueError("PoseEnergy needs static joint counts, got "
                       f"{y_shape} and {context_shape}")
    n = j2 + j3
    self.reprojection.build((None, n * (n - 1) // 2))
    self.feasibility.build((None, j3 * (j3 - 1) // 2))

  def reprojection_features(self, y, context):
    """Pairwise squared distances of [projected y, observed], `[B, P]`."""
    k, p = camera.split_distortion(context["distortion"])
    projected = camera.project_normalized(
        y, k, p, min_depth=self.min_depth, max_normalized=self.max_normalized)
    observed = tf.cast(context["pose_2d"], y.dtype)
    points = tf.concat([projected, observed], axis=-2)
    if self.normalize_observed_scale:
      scale = observed_scale(observed, self.min_observed_scale)
      points = points / scale[:, None, None]
    return pairwise_squared_distances(points)

  def feasibility_features(self, y):
    """Pairwise squared distances of the hip-normalized pose, `[B, P]`."""
    normalized = geometry.scale_normalize(y, *skeleton.H36M16_HIPS,
                                          min_length=self.hip_min_length)
    return (self.feasibility_feature_scale *
            pairwise_squared_distances(normalized))

  def call(self, y, context, training=None):
    """Energy of a camera-frame pose.

    Args:
      y: float32 `[B, 16, 3]` H36M16 camera-frame pose, metres.
      context: dict with "pose_2d" float32 `[B, 16, 2]` (observed MPII16,
        normalized) and "distortion" float32 `[B, 5]`.
      training: unused (no dropout or batch norm).

    Returns:
      float32 `[B]`.
    """
    del training
    return (self.reprojection(self.reprojection_features(y, context)) +
            self.feasibility(self.feasibility_features(y)))

  def components(self, y, context):
    """`(E_x [B], E_y [B])`, for diagnostics."""
    return (self.reprojection(self.reprojection_features(y, context)),
            self.feasibility(self.feasibility_features(y)))

  def compute_output_shape(self, y_shape, context_shape=None):
    return (y_shape[0],)

  def dense_layers(self):
    """The Dense layers of both energies (for multiply-adds)."""
    return [l for mlp in (self.reprojection, self.feasibility)
            for l in mlp.hidden_layers + [mlp.output_layer]]

  def get_config(self):
    config = super().get_config()
    config.update(
        reprojection_units=list(self.reprojection_units),
        reprojection_outputs=self.reprojection_outputs,
        feasibility_units=list(self.feasibility_units),
        feasibility_outputs=self.feasibility_outputs,
        kernel_scale=self.kernel_scale, min_depth=self.min_depth,
        max_normalized=self.max_normalized,
        hip_min_length=self.hip_min_length,
        normalize_observed_scale=self.normalize_observed_scale,
        min_observed_scale=self.min_observed_scale,
        feasibility_feature_scale=self.feasibility_feature_scale)
    return config


# ---------------------------------------------------------------------------
# Model builders (gin-configurable).


def model_inputs():
  """Keras inputs of every pose model: `{"pose_2d", "distortion"}`."""
  return {"pose_2d": keras.Input((NUM_JOINTS_2D, 2), name="pose_2d"),
          "distortion": keras.Input((5,), name="distortion")}


def set_baseline_statistics(model, statistics):
  """Copies `pipeline.load_statistics` output into a baseline model.

  Args:
    model: a model from `baseline_lifter` (or containing one).
    statistics: dict with pose_2d_mean/std `[16, 2]` and pose_3d_mean/std
      `[16, 3]` (root-relative, metres).
  """
  layer = find_baseline(model)
  layer.set_statistics(statistics["pose_2d_mean"], statistics["pose_2d_std"],
                       statistics["pose_3d_mean"], statistics["pose_3d_std"])


def find_baseline(model):
  """The `MartinezBaseline` layer inside a pose model."""
  # pylint: disable-next=protected-access
  for layer in model._flatten_layers(include_self=False):
    if isinstance(layer, MartinezBaseline):
      return layer
  raise ValueError(f"model {model.name} has no MartinezBaseline layer")


OUTPUT_FRAMES = ("root_relative", "camera")


@gin.configurable
def baseline_lifter(units=1024, num_blocks=2, dropout_rate=0.5,
                    batch_norm=True, residual=True, max_norm=None,
                    min_root_depth=1.0, output_frame="root_relative",
                    statistics=None, name="baseline"):
  """Martinez baseline with camera-frame outputs.

  Two formulations (docs/pose_model.md):
    * output_frame "root_relative" (default, Martinez et al.): standardized
      inputs, a standardized root-relative output, placed in the camera
      frame by `CameraPlacement`; outputs "steps" and "standardized" (for
      the "standardized_mse" loss).
    * output_frame "camera" (the paper author's code): unstandardized
      inputs, the dense output is the camera-frame pose itself (known up to
      scale: train it with a scale-invariant loss, "scaled_joint_distance");
      outputs "steps" only.

  Args:
    units, num_blocks, dropout_rate, batch_norm, residual, max_norm: see
      `MartinezBaseline`.
    min_root_depth: see `CameraPlacement` ("root_relative" only).
    output_frame: one of `OUTPUT_FRAMES`.
    statistics: optional `pipeline.load_statistics` dict to standardize with.
    name: model name.

  Returns:
    A built functional `keras.Model`: inputs `{"pose_2d" [B, 16, 2],
    "distortion" [B, 5]}`, outputs `{"steps" [1, B, 16, 3] camera frame
    metres, "standardized" [B, 16, 3] ("root_relative" only)}`.

  Raises:
    ValueError: an unknown `output_frame`.
  """
  if output_frame not in OUTPUT_FRAMES:
    raise ValueError(f"baseline_lifter.output_frame must be one of "
                     f"{OUTPUT_FRAMES}, got {output_frame!r}")
  inputs = model_inputs()
  camera_output = output_frame == "camera"
  net = MartinezBaseline(units, num_blocks, dropout_rate, batch_norm, residual,
                         max_norm, standardize=not camera_output,
                         name=INITIAL_ESTIMATE)
  out = net(inputs["pose_2d"])
  if camera_output:
    outputs = {"steps": keras.ops.expand_dims(out["pose_3d"], 0)}
  else:
    pose = CameraPlacement(min_root_depth, name="camera_placement")(
        out["pose_3d"], inputs["pose_2d"], inputs["distortion"])
    outputs = {"steps": keras.ops.expand_dims(pose, 0),
               "standardized": out["standardized"]}
  model = keras.Model(inputs, outputs, name=name)
  if statistics is not None:
    set_baseline_statistics(model, statistics)
  return model


def _first_line(error):
  text = str(error)
  return text.splitlines()[0] if text else ""


class InitModelError(RuntimeError):
  """INIT_MODEL_DIR holds no usable baseline checkpoint (message says why)."""


def restore_baseline(model, init_model_dir):
  """Loads a trained baseline run's latest checkpoint into `model`.

  Args:
    model: a model built by `baseline_lifter` with the run's architecture.
    init_model_dir: the baseline run's `--model_dir`.

  Raises:
    InitModelError: no checkpoint, or one written by another architecture.
  """
  latest = tf.train.latest_checkpoint(init_model_dir)
  if latest is None:
    raise InitModelError(
        f"INIT_MODEL_DIR {init_model_dir!r} has no checkpoint: train the "
        "initial-estimate baseline there first (e.g. bin/train.py "
        "--gin_file=pose/b128-1.gin --model_dir=...)")
  from ige_tf.train import loop  # pylint: disable=import-outside-toplevel
  try:
    loop.restore_exact({"model": model}, latest)
  except Exception as e:  # pylint: disable=broad-except
    raise InitModelError(
        f"cannot load the baseline checkpoint {latest} into the initial "
        f"estimate: {type(e).__name__}: {_first_line(e)}"
        ". Was INIT_MODEL_DIR trained with the same baseline architecture "
        "(units, blocks) as this IGE config's baseline_lifter?") from e


@gin.configurable
def pose_energy(reprojection_units=(64,), reprojection_outputs=16,
                feasibility_units=(64,), feasibility_outputs=16,
                kernel_scale=1e-3, hip_min_length=0.05,
                normalize_observed_scale=True, feasibility_feature_scale=1.0,
                name=ENERGY, dtype=None):
  """Builds the IGE energy layer (`PoseEnergy`); see its arguments. `dtype`:
  its Keras dtype policy (None: the global one)."""
  return PoseEnergy(
      reprojection_units=reprojection_units,
      reprojection_outputs=reprojection_outputs,
      feasibility_units=feasibility_units,
      feasibility_outputs=feasibility_outputs, kernel_scale=kernel_scale,
      hip_min_length=hip_min_length,
      normalize_observed_scale=normalize_observed_scale,
      feasibility_feature_scale=feasibility_feature_scale, dtype=dtype,
      name=name)


@gin.configurable
def ige_lifter(num_steps=4, init_model_dir=None, train_initial_estimate=True,
               initial_estimate_fn=baseline_lifter, energy_fn=pose_energy,
               learning_rate=1.0, clip_value=1.0, momentum=0.1,
               learn_learning_rate=True, learn_clip_value=True,
               learn_momentum=True, safeguard=True, statistics=None,
               name="ige"):
  """IGE lifter: a baseline's estimate refined by `num_steps` inner steps.

  Args:
    num_steps: T, unrolled inner steps.
    init_model_dir: a trained baseline run whose latest checkpoint
      initializes the initial-estimate network (its statistics included).
      None skips loading (only to rebuild a trained IGE before restoring it).
    train_initial_estimate: fine-tune the initial-estimate network (else it
      is frozen: its batch norm runs in inference mode, dropout is off).
    initial_estimate_fn: builds the baseline (`baseline_lifter` with that
      run's architecture).
    energy_fn: builds the energy layer from `name` and `dtype` keyword
      arguments (`pose_energy`).
    learning_rate, clip_value, momentum: the inner optimizer's (initial)
      hyper-parameters (paper 5.2: 1, 1, 0.1).
    learn_learning_rate, learn_clip_value, learn_momentum: learn them.
    safeguard: at inference (evaluation, export, lifting) reject every inner
      step that raises the energy (`UnrolledSGD.monotone_inference`): the
      pose stays at the previous step and that example's step size halves.
      Training runs the plain steps either way.
    statistics: optional `pipeline.load_statistics` dict, used when
      `init_model_dir` is None.
    name: model name.

  Returns:
    A built functional `keras.Model`: inputs `{"pose_2d", "distortion"}`,
    outputs `{"steps" [T+1, B, 16, 3], "energy" [T, B], "grad_norm" [T, B]}`.
  """
  initial_model = initial_estimate_fn(statistics=statistics)
  if init_model_dir:
    restore_baseline(initial_model, init_model_dir)
  initial_model.trainable = bool(train_initial_estimate)
  if int(num_steps) == 0 and not train_initial_estimate:
    raise ValueError("ige_lifter: with num_steps = 0 and a frozen initial "
                     "estimate nothing is trainable")
  inputs = model_inputs()
  initial = initial_model(inputs)["steps"][0]
  context = {"pose_2d": inputs["pose_2d"], "distortion": inputs["distortion"]}
  # The energy and the inner loop compute in float32 under any global
  # policy: in half precision the reprojection energy's gradient overflows
  # for a joint near or behind the camera (NaN iterates from the first inner
  # step). Only the initial-estimate network follows mixed precision.
  energy = energy_fn(name=ENERGY, dtype="float32")
  # Built explicitly: with num_steps = 0 the energy is never called, yet the
  # model's structure (and checkpoint) should not depend on num_steps.
  energy.build((None, NUM_JOINTS_3D, 3),
               {"pose_2d": (None, NUM_JOINTS_2D, 2), "distortion": (None, 5)})
  inner = UnrolledSGD(
      energy, int(num_steps), learning_rate=learning_rate,
      momentum=momentum, clip_value=clip_value,
      learn_learning_rate=learn_learning_rate,
      learn_momentum=learn_momentum, learn_clip_value=learn_clip_value,
      monotone_inference=safeguard, dtype="float32", name=INNER_OPTIMIZER)
  outputs = inner(initial, context, return_diagnostics=True)
  if int(num_steps) == 0:
    inner.trainable = False  # nothing to learn without steps
  return keras.Model(inputs, outputs, name=name)


def dense_multiply_adds(layers):
  """Multiply-adds of Dense layers per example: sum of kernel sizes (int)."""
  return int(sum(int(np.prod(layer.kernel.shape)) for layer in layers))
