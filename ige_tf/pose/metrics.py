"""Human3.6M evaluation metrics of the paper (section 5.3), per example, in mm.

Every metric takes a prediction and a target of shape `[B, J, 3]`:
  * J = 16: the paper's 3D set (`skeleton.H36M16`); the pelvis is prepended
    as the midpoint of the hips (`skeleton.add_pelvis`), giving 17 joints,
  * J = 17: already in `skeleton.H36M17` order (pelvis first), used as is,
and returns float32 `[B]`: the mean over the 17 joints of the euclidean
joint error, times `units_to_mm` (1000 for poses in metres, the pipeline's
unit; 1 for millimetres). Average the `[B]` values over a step or group
(`group_means`) to get the reported numbers.

  * `protocol1a_mm`: after scaling the prediction by the optimal k of
    `|k y_pred - y|^2` (paper eq. 9), no translation or rotation.
  * `protocol2_mm`: after the optimal similarity transform (rotation, scale,
    translation; reflections excluded), "Protocol 2" of Martinez et al.
  * `mpjpe_mm`: after translating the prediction's pelvis onto the target's.
"""
import tensorflow as tf

from ige_tf.pose import geometry
from ige_tf.pose import skeleton

METRIC_NAMES = ("protocol1a_mm", "protocol2_mm", "mpjpe_mm")


def with_pelvis(points):
  """`[B, 16, 3]` (H36M16) -> `[B, 17, 3]` (H36M17); 17 joints pass through.

  Raises:
    ValueError: if the joint count is neither 16 nor 17.
  """
  points = tf.convert_to_tensor(points)
  joints = points.shape[-2]
  if joints == skeleton.H36M16.num_joints:
    return skeleton.add_pelvis(points)
  if joints == skeleton.H36M17.num_joints:
    return points
  raise ValueError("pose metrics expect 16 (H36M16) or 17 (H36M17) joints, "
                   f"got shape {points.shape}")


def _prepare(prediction, target):
  prediction = tf.cast(with_pelvis(prediction), tf.float32)
  target = tf.cast(with_pelvis(target), tf.float32)
  return prediction, target


def protocol1a_mm(prediction, target, units_to_mm=1000.0):
  """Mean per-joint error after the optimal scale (Protocol 1a), in mm.

  Args:
    prediction: float `[B, 16 or 17, 3]`, camera frame.
    target: float `[B, 16 or 17, 3]`, camera frame.
    units_to_mm: factor from the input unit to millimetres.

  Returns:
    float32 `[B]`.
  """
  prediction, target = _prepare(prediction, target)
  aligned = geometry.scale_align(prediction, target)
  return geometry.mean_joint_distance(aligned, target) * units_to_mm


def protocol2_mm(prediction, target, units_to_mm=1000.0):
  """Mean per-joint error after similarity Procrustes (Protocol 2), in mm.

  Args:
    prediction, target: float `[B, 16 or 17, 3]`.
    units_to_mm: factor from the input unit to millimetres.

  Returns:
    float32 `[B]`.
  """
  prediction, target = _prepare(prediction, target)
  aligned = geometry.procrustes_align(prediction, target)
  return geometry.mean_joint_distance(aligned, target) * units_to_mm


def mpjpe_mm(prediction, target, units_to_mm=1000.0):
  """Mean per-joint error after aligning the pelvis (root), in mm.

  Args:
    prediction, target: float `[B, 16 or 17, 3]`.
    units_to_mm: factor from the input unit to millimetres.

  Returns:
    float32 `[B]`.
  """
  prediction, target = _prepare(prediction, target)
  aligned = geometry.root_align(prediction, target, root_index=0)
  return geometry.mean_joint_distance(aligned, target) * units_to_mm


METRICS = {
    "protocol1a_mm": protocol1a_mm,
    "protocol2_mm": protocol2_mm,
    "mpjpe_mm": mpjpe_mm,
}


def all_metrics(prediction, target, units_to_mm=1000.0):
  """Dict metric name -> float32 `[B]` for the three metrics above."""
  return {name: fn(prediction, target, units_to_mm)
          for name, fn in METRICS.items()}


def group_means(values, group_ids, num_groups):
  """Mean of per-example values within each group (e.g. per action).

  Args:
    values: float `[N]`.
    group_ids: int `[N]` in [0, num_groups); negative ids are ignored.
    num_groups: int.

  Returns:
    (means float32 `[num_groups]` (0 for empty groups), counts int32
    `[num_groups]`).
  """
  values = tf.cast(values, tf.float32)
  group_ids = tf.cast(group_ids, tf.int32)
  valid = group_ids >= 0
  values = tf.boolean_mask(values, valid)
  group_ids = tf.boolean_mask(group_ids, valid)
  sums = tf.math.unsorted_segment_sum(values, group_ids, num_groups)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(group_ids), group_ids,
                                        num_groups)
  return tf.math.divide_no_nan(sums, tf.cast(counts, tf.float32)), counts
