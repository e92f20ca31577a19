"""The synthetic Human3.6M: real layout, plausible people, realistic noise."""
import os

import h5py
import numpy as np
import pytest

from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m
from ige_tf.pose.data import synthetic
from conftest import SYNTHETIC_SUBJECTS  # pylint: disable=import-error


def all_world(h36m_dir, subject):
  layout = h36m.MartinezLayout(h36m_dir)
  return {s: layout.positions_3d(subject, s) for s in layout.sequences(subject)}


def bone_lengths(world):
  parents = skeleton.H36M32.parents
  return np.stack([np.linalg.norm(world[:, j] - world[:, p], axis=-1)
                   for j, p in enumerate(parents) if p >= 0], -1)


def test_file_layout_and_dtypes(synthetic_h36m):
  path = os.path.join(synthetic_h36m, "S1", "MyPoses", "3D_positions")
  names = sorted(os.listdir(path))
  assert len(names) == 6 and all(n.endswith(".h5") for n in names)
  with h5py.File(os.path.join(path, names[0]), "r") as h5:
    assert list(h5.keys()) == ["3D_positions"]
    assert h5["3D_positions"].shape == (96, 12)
    assert h5["3D_positions"].dtype == np.float64
  folder = os.path.join(synthetic_h36m, "S1", "StackedHourglass")
  assert len(os.listdir(folder)) == 6 * 4
  detection = os.path.join(folder, names[-1][:-3].replace(" ", "_") +
                           ".60457274.h5")
  with h5py.File(detection, "r") as h5:
    assert h5["poses"].shape == (12, 16, 2) and h5["poses"].dtype == np.float64
  with h5py.File(os.path.join(synthetic_h36m, "cameras.h5"), "r") as h5:
    group = h5["subject11/camera4"]
    assert sorted(group.keys()) == ["Name", "R", "T", "c", "f", "k", "p"]
    shapes = {k: group[k].shape for k in group}
    assert shapes == {"Name": (8, 1), "R": (3, 3), "T": (3, 1), "c": (2, 1),
                      "f": (2, 1), "k": (3, 1), "p": (2, 1)}
  s11 = os.listdir(os.path.join(synthetic_h36m, "S11", "StackedHourglass"))
  assert "Directions.54138969.h5" not in s11
  assert "Directions.55011271.h5" in s11


def test_people_have_rigid_subject_specific_bones(synthetic_h36m):
  lengths = {}
  for subject in ("S1", "S9"):
    per_seq = [bone_lengths(w) for w in all_world(synthetic_h36m,
                                                  subject).values()]
    stacked = np.concatenate(per_seq)
    np.testing.assert_allclose(stacked, stacked[:1].repeat(len(stacked), 0),
                               atol=1e-6)  # rigid over time and actions
    lengths[subject] = stacked[0]
  assert np.abs(lengths["S1"] - lengths["S9"]).max() > 5.0  # mm


def test_pelvis_is_hip_midpoint_and_feet_on_floor(synthetic_h36m):
  for world in all_world(synthetic_h36m, "S9").values():
    np.testing.assert_allclose(world[:, 0], 0.5 * (world[:, 1] + world[:, 6]),
                               atol=1e-9)
    feet = world[:, [4, 5, 9, 10], 2].min(1)
    assert np.all(feet > -1e-6) and np.all(feet < 60)
    assert world[..., 2].max() < 2200


def test_actions_differ(synthetic_h36m):
  worlds = all_world(synthetic_h36m, "S1")
  height = {h36m.action_of(s): w[:, 0, 2].mean() for s, w in worlds.items()}
  assert height["Sitting"] < height["Walking"] - 200  # pelvis lower seated
  walk = [w for s, w in worlds.items() if s.startswith("Walking")][0]
  travelled = np.linalg.norm(walk[-1, 0, :2] - walk[0, 0, :2])
  assert travelled > 200  # mm in 12 frames at 25 fps
  sit = [w for s, w in worlds.items() if s.startswith("Sitting")][0]
  assert np.linalg.norm(sit[-1, 0, :2] - sit[0, 0, :2]) < 100


def test_joint_limits_respected():
  rng = np.random.default_rng(0)
  t = np.arange(200) / 25.0
  for name, generator in synthetic.ACTION_GENERATORS.items():
    angles, xy = generator(rng, t)
    assert xy.shape == (200, 2), name
    limited = synthetic._limit(angles)  # pylint: disable=protected-access
    knees = limited["r_knee_flex"]
    assert knees.min() >= 0 and knees.max() <= 150
    world = synthetic.forward_kinematics(
        synthetic.subject_offsets(rng), angles, xy)
    assert np.all(np.isfinite(world)) and world.shape == (200, 32, 3)


def test_views_and_detection_noise(synthetic_h36m):
  cameras = h36m.load_cameras(os.path.join(synthetic_h36m, "cameras.h5"))
  layout = h36m.MartinezLayout(synthetic_h36m)
  mpii = skeleton.conversion_indices(skeleton.H36M32, skeleton.MPII16)
  errors, distances = [], []
  for subject in SYNTHETIC_SUBJECTS:
    for sequence, world in all_world(synthetic_h36m, subject).items():
      for camera_id in h36m.CAMERAS:
        cam = cameras[(subject, camera_id)]
        depth = cam.world_to_camera(world)[..., 2]
        distances.append(depth.mean())
        uv = cam.project(world)
        assert np.all((uv >= 0) & (uv <= 1000)), (subject, sequence)
        path = layout.detection_path(subject, sequence, camera_id, "sh")
        if path:
          det = h36m.read_detections(path)
          errors.append(np.linalg.norm(det - uv[:, mpii], axis=-1))
  assert 3000 < np.mean(distances) < 6500  # mm: cameras about 4-5 m away
  errors = np.concatenate(errors)
  assert 3 < np.median(errors) < 15        # pixels, like the real detections
  assert np.mean(errors > 30) > 0.001      # occasional gross errors


def test_deterministic_in_seed(tmp_path):
  kwargs = dict(frames_per_sequence=5, takes=1, subjects=("S5",),
                actions=("Posing",), progress=False)
  for name, seed in (("a", 1), ("b", 1), ("c", 2)):
    synthetic.make_synthetic_h36m(str(tmp_path / name), seed=seed, **kwargs)
  read = lambda n: h36m.MartinezLayout(str(tmp_path / n)).positions_3d(  # noqa
      "S5", h36m.MartinezLayout(str(tmp_path / n)).sequences("S5")[0])
  np.testing.assert_array_equal(read("a"), read("b"))
  assert not np.allclose(read("a"), read("c"))


def test_unknown_action_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="unknown synthetic actions"):
    synthetic.make_synthetic_h36m(str(tmp_path), actions=("Juggling",))
