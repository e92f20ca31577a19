"""Tiny generated records in the real on-disk layouts, for the training
tests that run pose and voxel experiments (precision/XLA, distributed).

Pose: a synthetic Human3.6M (S1 train, S9 test; 6 actions x 1 take x 4
frames x 4 cameras) prepared with ground-truth 2D. Voxel: one category
(plane), 2 generated models (1 train, 1 test) x 2 views, 128^2 images,
frustum grids at 32^3; `voxel_records_small` the same at the smallest size
the IGE models accept (96^2 images: a 3^2 encoder output, the smallest a
3x3 energy convolution takes; 6^3 grids, twice that).
"""
import os

import pytest


def _pose_records(root):
  """Fills `root` (str) with h36m/ and records/ (see the module docstring)."""
  from ige_tf.pose.data import prepare  # pylint: disable=import-outside-toplevel
  from ige_tf.pose.data import synthetic  # pylint: disable=import-outside-toplevel
  subjects = ("S1", "S9")
  synthetic.make_synthetic_h36m(os.path.join(root, "h36m"),
                                frames_per_sequence=4, takes=1,
                                subjects=subjects, seed=0, progress=False)
  prepare.prepare_h36m(os.path.join(root, "records"), "gt",
                       h36m_dir=os.path.join(root, "h36m"), subjects=subjects,
                       progress=False)


def _voxel_records(root, image_size=128, resolution=32):
  """Fills `root` (str) with shapes/, split.json and records/ (see the
  module docstring)."""
  from ige_tf.voxel.synthetic import make_synthetic_records  # pylint: disable=import-outside-toplevel
  make_synthetic_records(root, models_per_synset=2, num_train=1,
                         resolutions=(resolution,), views=2,
                         image_size=image_size)


@pytest.fixture(scope="session")
def pose_records(build_once):
  """Records directory (str) of the pose data set in the module docstring
  (built once per test run, shared by the xdist workers)."""
  return os.path.join(build_once("train_pose", _pose_records)[0], "records")


@pytest.fixture(scope="session")
def voxel_records(build_once):
  """Records directory (str) of the voxel data set in the module docstring
  (built once per test run, shared by the xdist workers)."""
  return os.path.join(build_once("train_voxel_128", _voxel_records)[0],
                      "records")


@pytest.fixture(scope="session")
def voxel_records_small(build_once):
  """The same at 96^2 images and 6^3 grids (see the module docstring)."""
  return os.path.join(
      build_once("train_voxel_96_6",
                 lambda root: _voxel_records(root, 96, 6))[0], "records")
