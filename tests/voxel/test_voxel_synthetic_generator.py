"""Procedural ShapeNet-like models: layout, determinism, variety, materials."""
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ige_tf.voxel import mesh as mesh_lib
from ige_tf.voxel import synthetic

R2N2_SYNSETS = ("02691156", "02828884", "02933112", "02958343", "03001627", "03211117",
                "03636649", "03691459", "04090263", "04256520", "04379243", "04401088",
                "04530566")


def _tree_digest(root):
  digest = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return digest


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic"))
  models = synthetic.make_synthetic_shapenet(root, models_per_synset=3, seed=7)
  return root, models


def test_writes_v1_layout_under_real_synset_ids(tree):
  root, models = tree
  assert synthetic.SYNSET_IDS == R2N2_SYNSETS
  assert sorted(os.listdir(root)) == list(R2N2_SYNSETS)
  assert len(models) == 3 * 13
  for entry in models:
    model_dir = os.path.join(root, entry["synset"], entry["model_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", entry["model_id"])
    assert sorted(f for f in os.listdir(model_dir) if f.startswith("model.")) == [
        "model.mtl", "model.obj"]
    with open(os.path.join(model_dir, "model.obj")) as f:
      text = f.read()
    assert "mtllib model.mtl" in text and "usemtl " in text
  # The project's own loader finds every model as a v1 model.
  found = mesh_lib.find_models(root)
  assert [(m.synset, m.model_id, m.layout) for m in found] == [
      (e["synset"], e["model_id"], "v1") for e in models]


def test_same_seed_same_bytes_other_seed_other_models(tmp_path):
  first = synthetic.make_synthetic_shapenet(str(tmp_path / "a"), 2, seed=3,
                                            synsets=["03001627", "02958343"])
  second = synthetic.make_synthetic_shapenet(str(tmp_path / "b"), 2, seed=3,
                                             synsets=["03001627", "02958343"])
  assert [m["model_id"] for m in first] == [m["model_id"] for m in second]
  assert _tree_digest(str(tmp_path / "a")) == _tree_digest(str(tmp_path / "b"))
  other = synthetic.make_synthetic_shapenet(str(tmp_path / "c"), 2, seed=4,
                                            synsets=["03001627", "02958343"])
  assert not {m["model_id"] for m in other} & {m["model_id"] for m in first}


def test_rerun_keeps_existing_models(tmp_path):
  root = str(tmp_path)
  synthetic.make_synthetic_shapenet(root, 1, seed=0, synsets=["04379243"])
  again = synthetic.make_synthetic_shapenet(root, 2, seed=0, synsets=["04379243"])
  # The first model existed (no fresh info), the second is new.
  fresh = [m for m in again if m["num_faces"] is not None]
  assert len(again) == 2 and len(fresh) == 1


def test_shapes_vary_within_each_category(tree):
  root, models = tree
  for synset in ("03001627", "04379243", "03636649", "02691156", "02958343"):
    extents = []
    for entry in [m for m in models if m["synset"] == synset]:
      mesh = mesh_lib.load_mesh(entry["path"])
      extents.append(np.ptp(mesh.vertices, axis=0))
      # Canonical frame: longest side 1, centred.
      assert np.ptp(mesh.vertices, axis=0).max() == pytest.approx(1.0)
    extents = np.array(extents)
    # Proportions differ between the models of a category.
    assert np.ptp(extents, axis=0).max() > 0.05, synset


def test_models_are_unions_of_closed_parts_with_colours_and_textures(tree):
  root, models = tree
  textured = [m for m in models if m["textured"]]
  plain = [m for m in models if not m["textured"]]
  assert textured and plain
  # Textures are PNG files referenced by the MTL, some under images/.
  subdirs = set()
  for entry in textured:
    model_dir = os.path.dirname(entry["path"])
    with open(os.path.join(model_dir, "model.mtl")) as f:
      maps = re.findall(r"map_Kd (\S+)", f.read())
    assert maps
    for name in maps:
      assert os.path.isfile(os.path.join(model_dir, name)), name
      subdirs.add(os.path.dirname(name))
  assert subdirs == {"", "images"}
  for entry in textured:
    mesh = mesh_lib.load_mesh(entry["path"])
    assert mesh.textures and (mesh.face_texture >= 0).any(), entry["path"]
    assert not [w for w in mesh.warnings if "texture" in w], mesh.warnings
  mesh = mesh_lib.load_mesh(plain[0]["path"])
  assert (mesh.face_texture < 0).all()
  colors = {tuple(c) for c in mesh.face_colors.tolist()}
  assert len(colors) >= 2 and tuple(mesh_lib.FALLBACK_COLOR) not in colors


def test_unknown_synset_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="no synthetic generator for synset '12345678'"):
    synthetic.make_synthetic_shapenet(str(tmp_path), 1, synsets=["12345678"])


def test_binary_writes_the_tree(tmp_path, repo_dir):
  out = tmp_path / "bin"
  result = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "make_synthetic_shapenet.py"),
       f"--out_dir={out}", "--models_per_synset=1", "--seed=5", "--synsets=03636649"],
      capture_output=True, text=True, check=True, cwd=repo_dir)
  assert "1 models in" in result.stdout
  (model_id,) = os.listdir(out / "03636649")
  assert model_id == synthetic.model_id_for(5, "03636649", 0)
