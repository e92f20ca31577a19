"""Readers of both layouts on generated files, and bad-input errors."""
import os
import shutil

import h5py
import numpy as np
import pytest

from ige_tf.data import safe_npz
from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m
from ige_tf.pose.data import synthetic


def read_raw_3d(h36m_dir, subject, sequence):
  """The DATA.md recipe, independently: `.T.reshape(N, 32, 3)`."""
  path = os.path.join(h36m_dir, subject, "MyPoses", "3D_positions",
                      sequence + ".h5")
  with h5py.File(path, "r") as h5:
    return h5["3D_positions"][()].T.reshape(-1, 32, 3)


def write_videopose3d_npz(h36m_dir, out_dir, subjects=("S1", "S9"),
                          unit="m"):
  """A tiny VideoPose3D set written in the test from the Martinez files.

  3D: `{subject: {sequence: float32 (N, 32, 3) metres}}` (millimetres with
  `unit="mm"`). 2D (H36M17 layout,
  pixels): projections of the 17 joints, computed here with the DATA.md
  formula; camera 0 of S9's first sequence is left out (None).
  """
  cameras = h36m.load_cameras(os.path.join(h36m_dir, "cameras.h5"))
  positions_3d, positions_2d = {}, {}
  for subject in subjects:
    folder = os.path.join(h36m_dir, subject, "MyPoses", "3D_positions")
    positions_3d[subject], positions_2d[subject] = {}, {}
    for name in sorted(os.listdir(folder)):
      sequence = name[:-3]
      world = read_raw_3d(h36m_dir, subject, sequence)
      positions_3d[subject][sequence] = (
          world / (1000 if unit == "m" else 1)).astype(np.float32)
      per_camera = []
      for camera_id in h36m.CAMERAS:
        cam = cameras[(subject, camera_id)]
        x = (world[:, skeleton.H36M32_TO_H36M17] - cam.T) @ cam.R.T
        xy = x[..., :2] / x[..., 2:]
        r2 = np.sum(xy**2, -1, keepdims=True)
        k, p = cam.k, cam.p
        radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
        tan = p[0] * xy[..., 1:] + p[1] * xy[..., :1]
        xd = xy * (radial + tan) + np.array([p[1], p[0]]) * r2
        per_camera.append((cam.f * xd + cam.c).astype(np.float32))
      positions_2d[subject][sequence] = per_camera
  first = sorted(positions_2d["S9"])[0]
  positions_2d["S9"][first][0] = None
  os.makedirs(out_dir, exist_ok=True)
  npz_3d = os.path.join(out_dir, "data_3d_h36m.npz")
  npz_2d = os.path.join(out_dir, "data_2d_h36m_test17.npz")
  np.savez_compressed(npz_3d, positions_3d=positions_3d)
  np.savez_compressed(npz_2d, positions_2d=positions_2d, metadata={
      "layout_name": "h36m", "num_joints": 17,
      "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]})
  return npz_3d, npz_2d, first


@pytest.fixture(scope="module")
def npz_files(synthetic_h36m, tmp_path_factory):
  return write_videopose3d_npz(synthetic_h36m,
                               str(tmp_path_factory.mktemp("vp3d")))


def test_martinez_sequences_and_3d(synthetic_h36m):
  layout = h36m.MartinezLayout(synthetic_h36m)
  sequences = layout.sequences("S1")
  assert len(sequences) == 6
  assert all("_" not in s for s in sequences)
  assert any(" " in s for s in sequences)  # take numbers with a space
  world = layout.positions_3d("S1", sequences[0])
  assert world.shape == (12, 32, 3) and world.dtype == np.float64
  np.testing.assert_array_equal(world, read_raw_3d(synthetic_h36m, "S1",
                                                   sequences[0]))


def test_martinez_detections_underscore_names_and_missing_camera(
    synthetic_h36m):
  layout = h36m.MartinezLayout(synthetic_h36m)
  spaced = [s for s in layout.sequences("S9") if " " in s][0]
  path = layout.detection_path("S9", spaced, h36m.CAMERAS[1], "sh")
  assert os.path.basename(path) == (f"{spaced.replace(' ', '_')}."
                                    f"{h36m.CAMERAS[1]}.h5")
  detections = h36m.read_detections(path)
  assert detections.shape == (12, 16, 2)
  assert layout.detection_path("S11", "Directions", "54138969", "sh") is None
  assert layout.detection_path("S11", "Directions", "55011271",
                               "sh_ft") is not None


def test_detections_under_mypose_are_found(tmp_path):
  synthetic.make_synthetic_h36m(
      str(tmp_path), frames_per_sequence=4, takes=1, subjects=("S5",),
      actions=("Walking",), detections_under_mypose=True, progress=False)
  layout = h36m.MartinezLayout(str(tmp_path))
  path = layout.detection_path("S5", "Walking", h36m.CAMERAS[0], "sh")
  assert os.path.join("MyPoses", "3D_positions", "StackedHourglass") in path
  assert h36m.read_detections(path).shape == (4, 16, 2)


def test_videopose3d_reader(synthetic_h36m, npz_files):
  npz_3d, npz_2d, first = npz_files
  layout = h36m.VideoPose3DLayout(npz_3d, npz_2d)
  assert layout.subjects() == ["S1", "S9"]
  world_mm = layout.positions_3d("S9", first)
  np.testing.assert_allclose(world_mm, read_raw_3d(synthetic_h36m, "S9",
                                                   first), atol=1e-3)
  pose_2d = layout.positions_2d("S9", first, h36m.CAMERAS[2])
  assert pose_2d.shape == (12, 16, 2)
  assert layout.positions_2d("S9", first, h36m.CAMERAS[0]) is None
  # H36M17 -> MPII16: e.g. MPII head_top is H36M17 joint 10.
  raw = safe_npz.load_npz(npz_2d)["positions_2d"].item()["S9"][first][2]
  np.testing.assert_allclose(pose_2d[:, skeleton.MPII16.index("head_top")],
                             raw[:, 10])
  np.testing.assert_allclose(pose_2d[:, skeleton.MPII16.index("pelvis")],
                             raw[:, 0])


def test_videopose3d_16_joint_and_coco_layouts(tmp_path):
  rng = np.random.default_rng(0)
  sh = rng.normal(size=(5, 16, 2))
  coco = rng.normal(size=(5, 17, 2))
  np.savez(tmp_path / "d3.npz", positions_3d={"S1": {
      "Walking": np.zeros((5, 32, 3), np.float32)}})
  np.savez(tmp_path / "sh.npz", positions_2d={"S1": {"Walking": [sh] * 4}},
           metadata={"num_joints": 16})
  np.savez(tmp_path / "coco.npz", positions_2d={"S1": {"Walking": [coco] * 4}},
           metadata={"layout_name": "coco", "num_joints": 17})
  np.savez(tmp_path / "bad.npz",
           positions_2d={"S1": {"Walking": [coco[:, :15]] * 4}},
           metadata={"num_joints": 15})
  d3 = str(tmp_path / "d3.npz")
  got = h36m.VideoPose3DLayout(d3, str(tmp_path / "sh.npz")).positions_2d(
      "S1", "Walking", h36m.CAMERAS[0])
  np.testing.assert_array_equal(got, sh)
  got = h36m.VideoPose3DLayout(d3, str(tmp_path / "coco.npz")).positions_2d(
      "S1", "Walking", h36m.CAMERAS[0])
  np.testing.assert_allclose(got, skeleton.coco17_to_mpii16(coco))
  bad = str(tmp_path / "bad.npz")
  with pytest.raises(h36m.H36MDataError, match="bad.npz.*15 joints"):
    h36m.VideoPose3DLayout(d3, bad).positions_2d("S1", "Walking",
                                                 h36m.CAMERAS[0])


def test_sequence_names_and_actions():
  assert h36m.canonical_sequence_name("Walking_1") == "Walking 1"
  assert h36m.action_of("Walking 1") == "Walking"
  assert h36m.action_of("WalkTogether_2") == "WalkTogether"
  assert h36m.action_of("SittingDown") == "SittingDown"
  assert h36m.action_of("TakingPhoto 1") == "Photo"
  assert h36m.split_of("S9") == "test" and h36m.split_of("S5") == "train"


# ---------------------------------------------------------------- bad input


def test_missing_cameras_h5_names_the_file(tmp_path):
  path = str(tmp_path / "cameras.h5")
  with pytest.raises(h36m.H36MDataError, match=f"{path}: file not found"):
    h36m.load_cameras(path)


def test_truncated_h5_names_the_file(synthetic_h36m, tmp_path):
  source = os.path.join(synthetic_h36m, "S1", "MyPoses", "3D_positions",
                        "Walking.h5")
  if not os.path.exists(source):
    source = os.path.join(os.path.dirname(source), "Walking 1.h5")
  path = str(tmp_path / "Walking.h5")
  with open(source, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(h36m.H36MDataError, match="Walking.h5.*truncated"):
    h36m.read_positions_3d(path)
  cameras = str(tmp_path / "cameras.h5")
  with open(os.path.join(synthetic_h36m, "cameras.h5"), "rb") as f:
    data = f.read()
  with open(cameras, "wb") as f:
    f.write(data[:300])
  with pytest.raises(h36m.H36MDataError, match="cameras.h5"):
    h36m.load_cameras(cameras)


def test_wrong_joint_count_names_the_file(tmp_path):
  path_3d = str(tmp_path / "Eating.h5")
  with h5py.File(path_3d, "w") as h5:
    h5["3D_positions"] = np.zeros((17 * 3, 10))
  with pytest.raises(h36m.H36MDataError,
                     match=r"Eating.h5: '3D_positions' has shape \(51, 10\)"):
    h36m.read_positions_3d(path_3d)
  path_2d = str(tmp_path / "Eating.54138969.h5")
  with h5py.File(path_2d, "w") as h5:
    h5["poses"] = np.zeros((10, 17, 2))
  with pytest.raises(h36m.H36MDataError,
                     match=r"Eating.54138969.h5: 'poses' has shape"):
    h36m.read_detections(path_2d)
  with h5py.File(path_2d, "w") as h5:
    h5["something"] = np.zeros((10, 16, 2))
  with pytest.raises(h36m.H36MDataError, match="no dataset 'poses'"):
    h36m.read_detections(path_2d)


def test_nan_joints_are_found(tmp_path):
  world = np.ones((6, 32, 3))
  world[[1, 4], 7, 2] = np.nan
  np.testing.assert_array_equal(h36m.nonfinite_frames(world), [1, 4])


def test_cameras_h5_with_wrong_shapes_or_names(synthetic_h36m, tmp_path):
  path = str(tmp_path / "cameras.h5")
  shutil.copy(os.path.join(synthetic_h36m, "cameras.h5"), path)
  with h5py.File(path, "a") as h5:
    del h5["subject1/camera2/f"]
    h5["subject1/camera2/f"] = np.zeros((3, 1))
  with pytest.raises(h36m.H36MDataError,
                     match=r"cameras.h5: subject1/camera2/f has shape"):
    h36m.load_cameras(path)
  shutil.copy(os.path.join(synthetic_h36m, "cameras.h5"), path)
  with h5py.File(path, "a") as h5:
    del h5["subject1/camera2/Name"]
    h5["subject1/camera2/Name"] = np.array(
        [ord(c) for c in "60457274"]).reshape(8, 1)
  with pytest.raises(h36m.H36MDataError, match="named '60457274'"):
    h36m.load_cameras(path)


def test_missing_npz_and_bad_npz(tmp_path):
  with pytest.raises(h36m.H36MDataError, match="nothere.npz: file not found"):
    h36m.VideoPose3DLayout(str(tmp_path / "nothere.npz"))
  np.savez(tmp_path / "wrong.npz", positions=np.zeros(3))
  with pytest.raises(h36m.H36MDataError, match="no key 'positions_3d'"):
    h36m.VideoPose3DLayout(str(tmp_path / "wrong.npz"))
  np.savez(tmp_path / "j.npz", positions_3d={"S1": {"Walking": np.zeros(
      (4, 17, 3))}})
  layout = h36m.VideoPose3DLayout(str(tmp_path / "j.npz"))
  with pytest.raises(h36m.H36MDataError,
                     match=r"j.npz: positions_3d\['S1'\]\['Walking'\] has "
                     r"shape \(4, 17, 3\)"):
    layout.positions_3d("S1", "Walking")
