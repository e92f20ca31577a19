"""Skeleton definitions and index maps between the joint sets of the paper.

Joint sets (all orders are fixed and part of the record format):

* `H36M32`: the 32 joints of a Human3.6M 3D file (`3D_positions`, `(96, N)`,
  `.T.reshape(N, 32, 3)`). Several are duplicates or unused.
* `H36M17`: the paper's evaluation skeleton: the 17 used joints of `H36M32`
  in increasing H36M index, pelvis first.
* `H36M16`: the paper's 3D output set, `H36M17` without the pelvis.
* `MPII16`: the stacked-hourglass 2D detections (MPII order); the 2D input of
  every model. `neck` is MPII's "upper neck" and matches H36M joint 13.
* `COCO17`: COCO keypoints, for 2D detections from COCO-trained detectors.

Joint names are shared across sets where they mean the same body point, so
`conversion_indices(src, dst)` maps any set onto another whose joints it
contains. Names starting with `l_` / `r_` are left / right joints (the
subject's own left and right), which defines the flip permutations.

Every function accepts numpy arrays or tensors whose joint axis is `axis`
(default -2, i.e. `[..., J, D]`). TensorFlow is imported only by the tensor
paths, so TF-free tools (bin/table1.py) can use the joint sets.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A named, ordered joint set with a parent per joint.

  Attributes:
    name: short identifier, e.g. "h36m17".
    joints: joint names in index order.
    parents: parent index of every joint, -1 for a root. Used for drawing and
      bone lengths; a set may have several roots.
  """
  name: str
  joints: tuple
  parents: tuple

  def __post_init__(self):
    if len(self.joints) != len(self.parents):
      raise ValueError(f"Skeleton {self.name}: {len(self.joints)} joints but "
                       f"{len(self.parents)} parents")
    if len(set(self.joints)) != len(self.joints):
      raise ValueError(f"Skeleton {self.name}: duplicate joint names")
    for i, parent in enumerate(self.parents):
      if not -1 <= parent < len(self.joints) or parent == i:
        raise ValueError(f"Skeleton {self.name}: bad parent {parent} for "
                         f"joint {i} ({self.joints[i]})")

  @property
  def num_joints(self):
    return len(self.joints)

  def index(self, joint):
    """Index of the joint called `joint`; KeyError naming the skeleton."""
    try:
      return self.joints.index(joint)
    except ValueError:
      raise KeyError(f"joint {joint!r} is not in skeleton {self.name} "
                     f"{self.joints}") from None

  def indices(self, joints):
    """Tuple of indices of several joint names."""
    return tuple(self.index(j) for j in joints)

  @property
  def bones(self):
    """`(child, parent)` index pairs of every non-root joint."""
    return tuple((i, p) for i, p in enumerate(self.parents) if p >= 0)

  @property
  def left_indices(self):
    return tuple(i for i, j in enumerate(self.joints) if j.startswith("l_"))

  @property
  def right_indices(self):
    return tuple(i for i, j in enumerate(self.joints) if j.startswith("r_"))

  @property
  def flip_permutation(self):
    """Permutation swapping every `l_x` with `r_x` (others map to themselves).

    `points[..., flip_permutation, :]` relabels a mirrored pose so that left
    joints are again at the left-joint indices. It is its own inverse.
    """
    perm = []
    for joint in self.joints:
      if joint.startswith("l_"):
        perm.append(self.index("r_" + joint[2:]))
      elif joint.startswith("r_"):
        perm.append(self.index("l_" + joint[2:]))
      else:
        perm.append(self.index(joint))
    return tuple(perm)


# H36M 32-joint hierarchy (the names of DATA.md where it names a joint; the
# unused ones after the mocap segments they belong to). Parents follow the
# Human3.6M motion-capture skeleton.
H36M32 = Skeleton(
    name="h36m32",
    joints=(
        "pelvis", "r_hip", "r_knee", "r_ankle", "r_toe_base", "r_toe_end",
        "l_hip", "l_knee", "l_ankle", "l_toe_base", "l_toe_end",
        "spine", "thorax", "neck", "head_center", "head_top",
        "l_clavicle", "l_shoulder", "l_elbow", "l_wrist", "l_thumb",
        "l_thumb_end", "l_hand", "l_hand_end",
        "r_clavicle", "r_shoulder", "r_elbow", "r_wrist", "r_thumb",
        "r_thumb_end", "r_hand", "r_hand_end"),
    parents=(-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17,
             18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30))

# Indices into H36M32 of the paper's 17 joints (DATA.md), pelvis first.
H36M32_TO_H36M17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26,
                    27)

H36M17 = Skeleton(
    name="h36m17",
    joints=tuple(H36M32.joints[i] for i in H36M32_TO_H36M17),
    #        pel rhp rkn ran lhp lkn lan tho nck hdc hdt lsh lel lwr rsh rel rwr
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15))

H36M16 = Skeleton(
    name="h36m16",
    joints=H36M17.joints[1:],
    # Without the pelvis, the hips and the thorax are roots; draw the 16-joint
    # set after `add_pelvis` to get a connected skeleton.
    parents=tuple(p - 1 if p > 0 else -1 for p in H36M17.parents[1:]))

MPII16 = Skeleton(
    name="mpii16",
    joints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
            "pelvis", "thorax", "neck", "head_top", "r_wrist", "r_elbow",
            "r_shoulder", "l_shoulder", "l_elbow", "l_wrist"),
    # The shoulders hang from the neck, as in H36M17 (the same body point:
    # H36M joint 13), so 2D and 3D skeletons are drawn with one
    # connectivity (`contracted_bones`).
    parents=(1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 8, 8, 13, 14))

COCO17 = Skeleton(
    name="coco17",
    joints=("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder",
            "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hip",
            "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"),
    parents=(-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14))

SKELETONS = {s.name: s for s in (H36M32, H36M17, H36M16, MPII16, COCO17)}


def contracted_bones(skel, joints):
  """`skel`'s bones between the joints named in `joints`, by name.

  A joint of `skel` not in `joints` is contracted into its parent, so a chain
  a -> b -> c with b absent becomes the bone a -> c. Two joint sets are drawn
  with one connectivity when `contracted_bones(big, small.joints)` equals
  `small`'s own bones (by name).

  Args:
    skel: a `Skeleton` (or name).
    joints: iterable of joint names.

  Returns:
    frozenset of `(child name, parent name)` pairs.
  """
  skel = _skeleton(skel)
  keep = set(joints)
  bones = set()
  for i, name in enumerate(skel.joints):
    if name not in keep:
      continue
    parent = skel.parents[i]
    while parent >= 0 and skel.joints[parent] not in keep:
      parent = skel.parents[parent]
    if parent >= 0:
      bones.add((name, skel.joints[parent]))
  return frozenset(bones)

# Convenience index tuples used throughout the pose code.
H36M32_TO_H36M16 = H36M32_TO_H36M17[1:]
# Hip joints of H36M16 and H36M17 (right, left).
H36M16_HIPS = (H36M16.index("r_hip"), H36M16.index("l_hip"))
H36M17_HIPS = (H36M17.index("r_hip"), H36M17.index("l_hip"))


def conversion_indices(src, dst):
  """Indices into `src` of the joints of `dst` (every `dst` joint must exist).

  Args:
    src, dst: `Skeleton`s or their names.

  Returns:
    tuple of ints, `len == dst.num_joints`, so `points[..., idx, :]` converts.

  Raises:
    KeyError: a joint of `dst` has no counterpart in `src` (e.g. COCO17 ->
      MPII16 has no pelvis; use `coco17_to_mpii16`).
  """
  src = _skeleton(src)
  dst = _skeleton(dst)
  return tuple(src.index(j) for j in dst.joints)


def convert(points, src, dst, axis=-2):
  """Selects and reorders joints of `src` into the order of `dst`.

  Args:
    points: array or tensor `[..., J_src, D]` (joint axis `axis`).
    src, dst: `Skeleton`s or names.
    axis: the joint axis.

  Returns:
    same type, `[..., J_dst, D]`.
  """
  src = _skeleton(src)
  _check_joint_axis(points, src, axis)
  return _take(points, conversion_indices(src, dst), axis)


def flip_left_right(points, skeleton, axis=-2):
  """Swaps left and right joints (no coordinate change; see `mirror_x`).

  Args:
    points: `[..., J, D]` array or tensor in the order of `skeleton`.
    skeleton: `Skeleton` or name.
    axis: the joint axis.
  """
  skeleton = _skeleton(skeleton)
  _check_joint_axis(points, skeleton, axis)
  return _take(points, skeleton.flip_permutation, axis)


def mirror_x(points, skeleton, axis=-2):
  """Mirrors a pose in its x axis: negates x and swaps left/right joints.

  For camera-frame 3D poses (x right) and principal-point-centred 2D poses
  (e.g. `(uv - c) / f`), this is the pose seen in a horizontally flipped image.

  Args:
    points: float `[..., J, D]` (D >= 1, x first), order of `skeleton`.
    skeleton: `Skeleton` or name.
    axis: the joint axis (the coordinate axis must be last).
  """
  flipped = flip_left_right(points, skeleton, axis)
  if isinstance(flipped, np.ndarray):
    sign = np.ones(flipped.shape[-1], flipped.dtype)
    sign[0] = -1
    return flipped * sign
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sign = tf.one_hot(0, tf.shape(flipped)[-1], on_value=-1.0, off_value=1.0,
                    dtype=flipped.dtype)
  return flipped * sign


def add_pelvis(points, axis=-2):
  """Prepends the pelvis as the midpoint of the hips: H36M16 -> H36M17.

  This is the paper's evaluation convention ("17 joints with the pelvis
  appended as the midpoint of the hips").

  Args:
    points: float `[..., 16, D]` in H36M16 order (array or tensor).
    axis: the joint axis.

  Returns:
    float `[..., 17, D]` in H36M17 order (pelvis at index 0).
  """
  _check_joint_axis(points, H36M16, axis)
  r_hip, l_hip = H36M16_HIPS
  if isinstance(points, np.ndarray):
    pelvis = 0.5 * (np.take(points, [r_hip], axis) + np.take(points, [l_hip],
                                                             axis))
    return np.concatenate([pelvis, points], axis)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  points = tf.convert_to_tensor(points)
  pelvis = 0.5 * (tf.gather(points, [r_hip], axis=axis) +
                  tf.gather(points, [l_hip], axis=axis))
  return tf.concat([pelvis, points], axis)


def coco17_to_mpii16(points, axis=-2):
  """Approximate MPII16 keypoints from COCO17 keypoints.

  COCO has no pelvis, thorax, upper neck or head top; they are synthesized:
    pelvis   = midpoint of the hips,
    thorax   = midpoint of the shoulders,
    head     = mean of nose, eyes and ears,
    neck     = thorax + 0.5 (head - thorax),
    head_top = head + 1.0 (head - neck)  (as far above the head centre as
               the neck is below it).
  The result is an approximation: a model trained on true MPII16 inputs sees
  slightly different head and neck points.

  Args:
    points: float `[..., 17, 2]` (or `[..., 17, D]`) in COCO17 order.
    axis: the joint axis.

  Returns:
    float `[..., 16, D]` in MPII16 order, same type as `points`.
  """
  _check_joint_axis(points, COCO17, axis)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  is_np = isinstance(points, np.ndarray)
  if not is_np:
    points = tf.convert_to_tensor(points)

  def joint(name):
    i = COCO17.index(name)
    return np.take(points, [i], axis) if is_np else tf.gather(points, [i],
                                                              axis=axis)

  pelvis = 0.5 * (joint("l_hip") + joint("r_hip"))
  thorax = 0.5 * (joint("l_shoulder") + joint("r_shoulder"))
  head = (joint("nose") + joint("l_eye") + joint("r_eye") + joint("l_ear") +
          joint("r_ear")) / 5.0
  neck = thorax + 0.5 * (head - thorax)
  head_top = head + (head - neck)
  extra = {"pelvis": pelvis, "thorax": thorax, "neck": neck,
           "head_top": head_top}
  parts = [extra[name] if name in extra else joint(name)
           for name in MPII16.joints]
  return np.concatenate(parts, axis) if is_np else tf.concat(parts, axis)


def _skeleton(skeleton):
  if isinstance(skeleton, Skeleton):
    return skeleton
  try:
    return SKELETONS[skeleton]
  except KeyError:
    raise KeyError(f"unknown skeleton {skeleton!r}; known: "
                   f"{sorted(SKELETONS)}") from None


def _check_joint_axis(points, skeleton, axis):
  size = points.shape[axis]
  if size is not None and size != skeleton.num_joints:
    raise ValueError(f"expected {skeleton.num_joints} joints ({skeleton.name})"
                     f" on axis {axis}, got shape {tuple(points.shape)}")


def _take(points, indices, axis):
  if isinstance(points, np.ndarray):
    return np.take(points, indices, axis)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.gather(points, indices, axis=axis)
