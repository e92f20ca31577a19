"""Tiny generated voxel records shared by the voxel problem tests.

Two categories (plane, chair) x 3 generated models x 2 views, 128^2 images,
frustum grids at 32 and 64, world grids at 32. A split file puts 2 models per
category in train and 1 in test (train: 8 examples, test: 4).
"""
import importlib.util
import json
import os

import pytest

SYNSETS = ("02691156", "03001627")
CATEGORY_SYNSETS = {"car": "02958343", "plane": "02691156", "table": "04379243"}


def _split_file(path, shapes, synsets, num_train):
  """Writes a Pix2Vox-style split to `path` (str): the first `num_train`
  models train."""
  split = []
  for synset in synsets:
    ids = sorted(m["model_id"] for m in shapes if m["synset"] == synset)
    split.append({"taxonomy_id": synset, "train": ids[:num_train],
                  "test": ids[num_train:]})
  with open(path, "w") as f:
    json.dump(split, f)
  return path


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Tests have no network: `keras.utils.get_file` (how ImageNet encoder
  weights are fetched) fails as Keras does offline."""
  import keras  # pylint: disable=import-outside-toplevel

  def offline(fname, origin=None, **kwargs):
    del fname, kwargs
    raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] "  # pylint: disable=broad-exception-raised
                    "Temporary failure in name resolution")

  monkeypatch.setattr(keras.utils, "get_file", offline)


@pytest.fixture(scope="session")
def voxel_records(build_once):
  """Path (str) of the records directory described in the module docstring
  (built once per test run)."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet

  def build(root):
    shapes_dir = os.path.join(root, "shapes")
    shapes = make_synthetic_shapenet(shapes_dir, models_per_synset=3, seed=0,
                                     synsets=SYNSETS)
    split_file = _split_file(os.path.join(root, "split.json"), shapes,
                             SYNSETS, 2)
    out = os.path.join(root, "records")
    prepare_shapenet(shapes_dir, out, synsets=SYNSETS, split_file=split_file,
                     resolutions=(32, 64), world_resolutions=(32,), views=2,
                     workers=1, progress=False)
    assert os.path.exists(os.path.join(out, "manifest.json"))
  return os.path.join(build_once("voxel_problem", build)[0], "records")


@pytest.fixture(scope="session")
def category_records(build_once):
  """dict category ("car", "plane", "table") -> records directory (str)
  holding only that category (see the module docstring; built once per
  test run)."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet

  def build(root):
    for name, synset in CATEGORY_SYNSETS.items():
      shapes_dir = os.path.join(root, f"shapes_{name}")
      shapes = make_synthetic_shapenet(shapes_dir, models_per_synset=2,
                                       seed=1, synsets=(synset,))
      prepare_shapenet(shapes_dir, os.path.join(root, f"shapenet_{name}"),
                       synsets=(synset,),
                       split_file=_split_file(
                           os.path.join(root, f"split_{name}.json"), shapes,
                           (synset,), 1),
                       resolutions=(32, 64), views=2, workers=1,
                       progress=False)
  root = build_once("voxel_categories", build)[0]
  return {name: os.path.join(root, f"shapenet_{name}")
          for name in CATEGORY_SYNSETS}


@pytest.fixture(scope="session")
def bench_voxel_scaling():
  """`bench/bench_voxel_scaling.py` as a module, loaded once per process:
  its absl flags can be defined only once."""
  path = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                      "bench", "bench_voxel_scaling.py")
  spec = importlib.util.spec_from_file_location("bench_voxel_scaling", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
