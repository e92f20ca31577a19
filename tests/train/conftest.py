"""Tiny generated records in the real on-disk layouts, for the training
tests that run pose and voxel experiments (precision/XLA, distributed).

Pose: a synthetic Human3.6M (S1 train, S9 test; 6 actions x 1 take x 4
frames x 4 cameras) prepared with ground-truth 2D. Voxel: one category
(plane), 2 generated models (1 train, 1 test) x 2 views, 128^2 images,
frustum grids at 32^3; `voxel_records_small` the same at the smallest size
the IGE models accept (96^2 images: a 3^2 encoder output, the smallest a
3x3 energy convolution takes; 6^3 grids, twice that).
"""
import json

import pytest


def _pose_records(tmp_path_factory):
  from ige_tf.pose.data import prepare  # pylint: disable=import-outside-toplevel
  from ige_tf.pose.data import synthetic  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("pose_train")
  subjects = ("S1", "S9")
  synthetic.make_synthetic_h36m(str(root / "h36m"), frames_per_sequence=4,
                                takes=1, subjects=subjects, seed=0,
                                progress=False)
  prepare.prepare_h36m(str(root / "records"), "gt", h36m_dir=str(root / "h36m"),
                       subjects=subjects, progress=False)
  return str(root / "records")


def _voxel_records(tmp_path_factory, image_size, resolution=32):
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet
  root = tmp_path_factory.mktemp(f"voxel_train_{image_size}_{resolution}")
  synsets = ("02691156",)
  shapes = make_synthetic_shapenet(str(root / "shapes"), models_per_synset=2,
                                   seed=0, synsets=synsets)
  ids = sorted(m["model_id"] for m in shapes)
  (root / "split.json").write_text(json.dumps(
      [{"taxonomy_id": synsets[0], "train": ids[:1], "test": ids[1:]}]))
  prepare_shapenet(str(root / "shapes"), str(root / "records"),
                   synsets=synsets, split_file=str(root / "split.json"),
                   resolutions=(resolution,), views=2, image_size=image_size,
                   workers=1, progress=False)
  return str(root / "records")


@pytest.fixture(scope="session")
def pose_records(tmp_path_factory):
  return _pose_records(tmp_path_factory)


@pytest.fixture(scope="session")
def voxel_records(tmp_path_factory):
  return _voxel_records(tmp_path_factory, 128)




@pytest.fixture(scope="session")
def voxel_records_small(tmp_path_factory):
  return _voxel_records(tmp_path_factory, 96, 6)
