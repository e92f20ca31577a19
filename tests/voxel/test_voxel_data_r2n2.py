"""3D-R2N2 import (ShapeNetRendering + ShapeNetVox32) on a tiny generated tree."""
import os

import numpy as np
import PIL.Image
import pytest

from ige_tf.voxel import binvox as binvox_lib
from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import synthetic
from ige_tf.voxel.data import inspection
from ige_tf.voxel.data import pipeline
from ige_tf.voxel.data import r2n2
from ige_tf.voxel.data import records

VIEWS = 3


@pytest.fixture(scope="module")
def r2n2_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("r2n2")
  shapenet = str(root / "shapenet")
  models = synthetic.make_synthetic_shapenet(shapenet, 1, seed=2,
                                             synsets=["03001627", "02691156"])
  rendering_dir, voxel_dir = r2n2.make_synthetic_r2n2(shapenet, str(root / "data"), views=VIEWS)
  # A rendered model without voxels, and one with a broken metadata file.
  orphan = os.path.join(rendering_dir, "03001627", "orphan", "rendering")
  os.makedirs(orphan)
  broken = models[1]["model_id"]
  with open(os.path.join(rendering_dir, "03001627", broken, "rendering",
                         "rendering_metadata.txt"), "w") as f:
    f.write("10 25 0\n")
  out = str(root / "records")
  manifest = r2n2.import_r2n2(rendering_dir, voxel_dir, out, image_size=32,
                              resolutions=(16, 32), workers=1, progress=False)
  return rendering_dir, voxel_dir, models, out, manifest


def test_generated_tree_has_the_r2n2_layout(r2n2_tree):
  rendering_dir, voxel_dir, models, _, _ = r2n2_tree
  model = models[0]
  render_dir = os.path.join(rendering_dir, model["synset"], model["model_id"], "rendering")
  assert sorted(os.listdir(render_dir)) == [f"{v:02d}.png" for v in range(VIEWS)] + [
      "rendering_metadata.txt"]
  with PIL.Image.open(os.path.join(render_dir, "00.png")) as image:
    assert image.mode == "RGBA" and image.size == (137, 137)
  views = camera_lib.parse_r2n2_metadata(os.path.join(render_dir, "rendering_metadata.txt"))
  assert len(views) == VIEWS and all(25 <= v.elevation_deg <= 30 for v in views)
  voxels = binvox_lib.read_binvox(os.path.join(voxel_dir, model["synset"], model["model_id"],
                                               "model.binvox"))
  assert voxels.occupancy.shape == (32, 32, 32) and voxels.occupancy.any()


def test_import_writes_records_and_records_skips(r2n2_tree):
  rendering_dir, _, models, out, manifest = r2n2_tree
  skipped = {s["model_id"]: s["reason"] for s in manifest["skipped"]}
  assert skipped["orphan"].endswith("no voxels for this rendered model")
  broken = models[1]["model_id"]
  assert "rendering_metadata.txt: line 1: expected 5 numbers" in skipped[broken]
  assert manifest["counts"]["models_written"] == 1
  assert manifest["counts"]["examples"] == VIEWS
  assert manifest["parameters"]["kind"] == "r2n2"


def test_imported_views_match_their_voxels_and_images(r2n2_tree):
  rendering_dir, voxel_dir, models, out, manifest = r2n2_tree
  model = models[0]
  split = next(k for k, v in manifest["splits"].items() if v["num_examples"])
  examples = [records.parse(s) for f in pipeline.shard_files(out, split)
              for s in records.read_tfrecord(f)]
  assert [e.view for e in examples] == list(range(VIEWS))
  voxels = binvox_lib.read_binvox(os.path.join(voxel_dir, model["synset"], model["model_id"],
                                               "model.binvox"))
  metadata = camera_lib.parse_r2n2_metadata(os.path.join(
      rendering_dir, model["synset"], model["model_id"], "rendering", "rendering_metadata.txt"))
  for example, view in zip(examples, metadata):
    # World grid = the binvox grid, with its bounds.
    np.testing.assert_array_equal(example.world[32], voxels.occupancy)
    np.testing.assert_allclose(example.world_bounds, np.stack(voxels.bounds))
    # Camera: R2N2's, rescaled from 137 to 32 pixels.
    camera = camera_lib.r2n2_camera(view).resized(32)
    np.testing.assert_allclose(example.intrinsics, camera.intrinsics, rtol=1e-6)
    np.testing.assert_allclose(example.extrinsics, camera.extrinsics, atol=1e-6)
    # Image: RGBA composited over white and box-resized.
    with PIL.Image.open(os.path.join(rendering_dir, model["synset"], model["model_id"],
                                     "rendering", f"{example.view:02d}.png")) as image:
      alpha = np.asarray(image)[..., 3]
    assert example.image.shape == (32, 32, 3)
    assert (example.image[~example.mask] >= 128).all()
    coverage = (alpha > 0).reshape(1, 137, 1, 137).mean()
    assert abs(example.mask.mean() - coverage) < 0.05
    # The frustum grid of the cubes covers the object's silhouette.
    silhouette = inspection.grid_silhouette(example.frustum[32], 32)
    assert silhouette[example.mask].mean() > 0.97
    assert silhouette.mean() < 3 * example.mask.mean()
    # Nested resolutions: the 16^3 grid is the 32^3 one OR-pooled then filled.
    pooled = example.frustum[32].reshape(16, 2, 16, 2, 16, 2).any(axis=(1, 3, 5))
    assert (example.frustum[16] >= pooled).all()


def test_reader_reads_r2n2_records_at_32(r2n2_tree):
  *_, out, manifest = r2n2_tree
  split = next(k for k, v in manifest["splits"].items() if v["num_examples"])
  features, labels = next(iter(pipeline.voxel_dataset(out, split, 32, 2)))
  assert features["image"].shape == (2, 32, 32, 3)
  assert labels["frustum"].shape == (2, 32, 32, 32) and labels["world"].shape == (2, 32, 32, 32)
