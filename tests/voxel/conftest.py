"""Tiny generated voxel records shared by the voxel problem tests.

Two categories (plane, chair) x 3 generated models x 2 views, 128^2 images,
frustum grids at 32 and 64, world grids at 32. A split file puts 2 models per
category in train and 1 in test (train: 8 examples, test: 4).
"""
import json
import os

import pytest

SYNSETS = ("02691156", "03001627")
CATEGORY_SYNSETS = {"car": "02958343", "plane": "02691156", "table": "04379243"}


def _split_file(path, shapes, synsets, num_train):
  """Writes a Pix2Vox-style split: the first `num_train` models train."""
  split = []
  for synset in synsets:
    ids = sorted(m["model_id"] for m in shapes if m["synset"] == synset)
    split.append({"taxonomy_id": synset, "train": ids[:num_train],
                  "test": ids[num_train:]})
  path.write_text(json.dumps(split))
  return str(path)


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
def voxel_records(tmp_path_factory):
  """Path (str) of the records directory described in the module docstring."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet
  root = tmp_path_factory.mktemp("voxel_problem")
  shapes = make_synthetic_shapenet(str(root / "shapes"), models_per_synset=3,
                                   seed=0, synsets=SYNSETS)
  split_file = _split_file(root / "split.json", shapes, SYNSETS, 2)
  out = str(root / "records")
  prepare_shapenet(str(root / "shapes"), out, synsets=SYNSETS,
                   split_file=split_file, resolutions=(32, 64),
                   world_resolutions=(32,), views=2, workers=1,
                   progress=False)
  assert os.path.exists(os.path.join(out, "manifest.json"))
  return out


@pytest.fixture(scope="session")
def category_records(tmp_path_factory):
  """dict category ("car", "plane", "table") -> records directory (str)
  holding only that category (see the module docstring)."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet
  root = tmp_path_factory.mktemp("voxel_categories")
  out = {}
  for name, synset in CATEGORY_SYNSETS.items():
    shapes_dir = str(root / f"shapes_{name}")
    shapes = make_synthetic_shapenet(shapes_dir, models_per_synset=2, seed=1,
                                     synsets=(synset,))
    out[name] = str(root / f"shapenet_{name}")
    prepare_shapenet(shapes_dir, out[name], synsets=(synset,),
                     split_file=_split_file(root / f"split_{name}.json",
                                            shapes, (synset,), 1),
                     resolutions=(32, 64), views=2, workers=1,
                     progress=False)
  return out
