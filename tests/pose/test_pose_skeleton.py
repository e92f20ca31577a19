"""Joint sets and index maps (DATA.md)."""
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.pose import skeleton


def test_h36m32_to_mpii16_matches_data_md():
  # DATA.md: MPII order, each joint's index in the 32-joint H36M set.
  expected = [3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19]
  assert list(skeleton.conversion_indices(skeleton.H36M32,
                                          skeleton.MPII16)) == expected


def test_paper_joint_sets():
  assert skeleton.H36M32_TO_H36M17 == (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15,
                                       17, 18, 19, 25, 26, 27)
  assert skeleton.H36M16.joints == skeleton.H36M17.joints[1:]
  assert skeleton.H36M17.joints[0] == "pelvis"
  # MPII16 from H36M17 drops exactly the nose / head centre.
  missing = set(skeleton.H36M17.joints) - set(skeleton.MPII16.joints)
  assert missing == {"head_center"}
  assert skeleton.H36M16.joints[skeleton.H36M16_HIPS[0]] == "r_hip"
  assert skeleton.H36M16.joints[skeleton.H36M16_HIPS[1]] == "l_hip"


@pytest.mark.parametrize("name", sorted(skeleton.SKELETONS))
def test_flip_permutation_is_an_involution_swapping_sides(name):
  skel = skeleton.SKELETONS[name]
  perm = skel.flip_permutation
  assert [perm[i] for i in perm] == list(range(skel.num_joints))
  for i, j in enumerate(perm):
    a, b = skel.joints[i], skel.joints[j]
    if a.startswith("l_"):
      assert b == "r_" + a[2:]
    elif not a.startswith("r_"):
      assert i == j
  # Parents are a forest: following parents always reaches a root.
  for i in range(skel.num_joints):
    seen = set()
    while i >= 0:
      assert i not in seen
      seen.add(i)
      i = skel.parents[i]


def test_add_pelvis_numpy_and_tf():
  rng = np.random.default_rng(0)
  pose = rng.normal(size=(2, 16, 3))
  expected = 0.5 * (pose[:, 0] + pose[:, 3])
  np_out = skeleton.add_pelvis(pose)
  tf_out = skeleton.add_pelvis(tf.constant(pose)).numpy()
  np.testing.assert_allclose(np_out[:, 0], expected)
  np.testing.assert_allclose(np_out[:, 1:], pose)
  np.testing.assert_allclose(tf_out, np_out)
  with pytest.raises(ValueError, match="expected 16 joints"):
    skeleton.add_pelvis(np.zeros((2, 17, 3)))


def test_mirror_x_negates_x_and_swaps_sides():
  rng = np.random.default_rng(1)
  pose = rng.normal(size=(2, 16, 2))
  mirrored = skeleton.mirror_x(pose, skeleton.MPII16)
  r_wrist, l_wrist = (skeleton.MPII16.index("r_wrist"),
                      skeleton.MPII16.index("l_wrist"))
  np.testing.assert_allclose(mirrored[:, r_wrist], pose[:, l_wrist] * [-1, 1])
  np.testing.assert_allclose(
      skeleton.mirror_x(tf.constant(pose), skeleton.MPII16).numpy(), mirrored)
  np.testing.assert_allclose(skeleton.mirror_x(mirrored, "mpii16"), pose)


def test_coco17_to_mpii16():
  rng = np.random.default_rng(2)
  coco = rng.normal(size=(3, 17, 2))
  mpii = skeleton.coco17_to_mpii16(coco)
  c = {n: coco[:, i] for i, n in enumerate(skeleton.COCO17.joints)}
  m = {n: mpii[:, i] for i, n in enumerate(skeleton.MPII16.joints)}
  np.testing.assert_allclose(m["pelvis"], 0.5 * (c["l_hip"] + c["r_hip"]))
  np.testing.assert_allclose(m["thorax"],
                             0.5 * (c["l_shoulder"] + c["r_shoulder"]))
  np.testing.assert_allclose(m["r_wrist"], c["r_wrist"])
  head = (c["nose"] + c["l_eye"] + c["r_eye"] + c["l_ear"] + c["r_ear"]) / 5
  np.testing.assert_allclose(m["neck"], 0.5 * (m["thorax"] + head))
  np.testing.assert_allclose(m["head_top"], 2 * head - m["neck"])
  np.testing.assert_allclose(
      skeleton.coco17_to_mpii16(tf.constant(coco)).numpy(), mpii)


def test_convert_errors_name_the_problem():
  with pytest.raises(KeyError, match="pelvis.*coco17"):
    skeleton.conversion_indices(skeleton.COCO17, skeleton.MPII16)
  with pytest.raises(KeyError, match="unknown skeleton"):
    skeleton.convert(np.zeros((1, 16, 2)), "mpii", "h36m17")


def test_2d_and_3d_skeletons_share_one_connectivity():
  # The 2D input (MPII16) is drawn with the bones of the 3D skeleton
  # (H36M17) once its extra joints (head_center) are contracted: e.g. both
  # hang the shoulders from the neck, not one from the neck and one from
  # the thorax.
  mpii = {(skeleton.MPII16.joints[c], skeleton.MPII16.joints[p])
          for c, p in skeleton.MPII16.bones}
  assert skeleton.contracted_bones(skeleton.H36M17,
                                   skeleton.MPII16.joints) == mpii
  assert ("l_shoulder", "neck") in mpii and ("head_top", "neck") in mpii
  h36m17 = {(skeleton.H36M17.joints[c], skeleton.H36M17.joints[p])
            for c, p in skeleton.H36M17.bones}
  assert skeleton.contracted_bones("h36m17", skeleton.H36M17.joints) == h36m17
