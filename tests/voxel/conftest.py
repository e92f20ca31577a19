"""Tiny generated voxel records shared by the voxel problem tests.

Two categories (plane, chair) x 3 generated models x 2 views, 128^2 images,
frustum grids at 32 and 64, world grids at 32. A split file puts 2 models per
category in train and 1 in test (train: 8 examples, test: 4).
"""
import json
import os

import pytest

SYNSETS = ("02691156", "03001627")


@pytest.fixture(scope="session")
def voxel_records(tmp_path_factory):
  """Path (str) of the records directory described in the module docstring."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel.data.prepare import prepare_shapenet
  from ige_tf.voxel.synthetic import make_synthetic_shapenet
  root = tmp_path_factory.mktemp("voxel_problem")
  shapes = make_synthetic_shapenet(str(root / "shapes"), models_per_synset=3,
                                   seed=0, synsets=SYNSETS)
  split = []
  for synset in SYNSETS:
    ids = sorted(m["model_id"] for m in shapes if m["synset"] == synset)
    split.append({"taxonomy_id": synset, "train": ids[:2], "test": ids[2:]})
  split_file = root / "split.json"
  split_file.write_text(json.dumps(split))
  out = str(root / "records")
  prepare_shapenet(str(root / "shapes"), out, synsets=SYNSETS,
                   split_file=str(split_file), resolutions=(32, 64),
                   world_resolutions=(32,), views=2, workers=1,
                   progress=False)
  assert os.path.exists(os.path.join(out, "manifest.json"))
  return out
