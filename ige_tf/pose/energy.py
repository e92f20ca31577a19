"""The IGE pose energy: reprojection `E_x` plus feasibility `E_y` (eqs. 5-8).

`PoseEnergy` is the inner objective of `models.ige_lifter`: a function of a
camera-frame pose estimate y `[B, 16, 3]` (H36M16, metres, every joint free)
given the observation (MPII16 2D joints `[B, 16, 2]`, distorted normalized
coordinates, and the distortion `[B, 5]`). The reprojection energy needs
absolute depth, and every coordinate the inner optimizer can reach is
finite:

  * the projection clamps depth softly (`camera.soft_min_depth`, 10 cm) and
    limits normalized coordinates softly (`camera.soft_limit`, +-2);
  * the feasibility normalizer divides by `sqrt(|hip_r - hip_l|^2 + m^2)`
    (m = 5 cm), never by zero;
  * the observed-2D scale used to normalize the reprojection features is
    bounded below;
so the energy and its first and second derivatives are finite for every
finite estimate (depth <= 0, coincident hips, all joints in one point).
The gin-configurable builder is `models.pose_energy`.
"""
import keras
import tensorflow as tf

from ige_tf.core import EnergyMLP
from ige_tf.pose import camera
from ige_tf.pose import geometry
from ige_tf.pose import skeleton


@keras.saving.register_keras_serializable(package="ige_tf")
class PoseEnergy(keras.layers.Layer):
  """`E(y; x) = E_x(D(proj(y) + x)) + E_y(D(y / |hip_r - hip_l|))` (eqs. 5-8).

  `D` is the vector of pairwise squared distances (`geometry.
  pairwise_squared_distances`), `+` concatenation along the joints, `proj`
  the camera projection with distortion to normalized coordinates. Both
  terms are `EnergyMLP`s (softplus hidden layer, softabs output layer scaled
  by `kernel_scale` at initialization).

  Reprojection features are divided by the squared RMS spread of the
  observed 2D pose (`geometry.observed_scale`), which makes `E_x`
  independent of the subject's distance and of the image scale (an
  observation-only constant: no gradient flows through it). All divisions
  are guarded (module doc).

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
    j2 = skeleton.MPII16.num_joints
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
      scale = geometry.observed_scale(observed,
                                      self.min_observed_scale)
      points = points / scale[:, None, None]
    return geometry.pairwise_squared_distances(points)

  def feasibility_features(self, y):
    """Pairwise squared distances of the hip-normalized pose, `[B, P]`."""
    normalized = geometry.scale_normalize(y, *skeleton.H36M16_HIPS,
                                          min_length=self.hip_min_length)
    return (self.feasibility_feature_scale *
            geometry.pairwise_squared_distances(normalized))

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
