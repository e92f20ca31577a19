"""Record encoding, the tf.data reader and frustum pooling: bit-exact round trips."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from ige_tf.data import records_check
from ige_tf.voxel.data import pipeline
from ige_tf.voxel.data import prepare
from ige_tf.voxel.data import records

RES = (4, 8)
SIZE = 16


def _random_example(rng, model_id="m0", view=0, with_world=True):
  frustum = {r: rng.uniform(size=(r, r, r)) < 0.3 for r in RES}
  world = {r: rng.uniform(size=(r, r, r)) < 0.5 for r in RES} if with_world else {}
  return records.ViewExample(
      synset="03001627", model_id=model_id, view=view,
      image=rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8),
      mask=rng.uniform(size=(SIZE, SIZE)) < 0.4,
      intrinsics=np.array([[21.97, 0, 8], [0, 21.97, 8], [0, 0, 1]]),
      extrinsics=rng.normal(size=(3, 4)), near_far=np.array([2.1, 2.9]),
      frustum=frustum, world=world, azimuth=float(rng.uniform(0, 360)), elevation=27.5)


@pytest.mark.parametrize("shape", [(5, 3, 7), (8, 8, 8), (1,), (16, 16, 16)])
def test_pack_unpack_is_bit_exact(shape):
  grid = np.random.default_rng(0).uniform(size=shape) < 0.37
  data = records.pack_voxels(grid)
  np.testing.assert_array_equal(records.unpack_voxels(data, shape), grid)
  # The TF decoder reads the same bits.
  decoded = pipeline.decode_voxels(tf.constant(data), shape, tf.uint8).numpy()
  np.testing.assert_array_equal(decoded.astype(bool), grid)


def test_unpack_rejects_wrong_shape():
  data = records.pack_voxels(np.ones((4, 4, 4), bool))
  with pytest.raises(ValueError, match=r"hold 8 bytes, \(8, 8, 8\) needs 64"):
    records.unpack_voxels(data, (8, 8, 8))


def test_serialize_parse_round_trip_is_exact():
  rng = np.random.default_rng(1)
  example = _random_example(rng)
  example.depth = rng.uniform(2, 3, size=(SIZE, SIZE)).astype(np.float32)
  parsed = records.parse(records.serialize(records.to_features(example)))
  np.testing.assert_array_equal(parsed.image, example.image)
  np.testing.assert_array_equal(parsed.mask, example.mask)
  np.testing.assert_array_equal(parsed.depth, example.depth)
  for r in RES:
    np.testing.assert_array_equal(parsed.frustum[r], example.frustum[r])
    np.testing.assert_array_equal(parsed.world[r], example.world[r])
  # Floats are stored as float32: exact at float32.
  np.testing.assert_array_equal(parsed.extrinsics, example.extrinsics.astype(np.float32))
  np.testing.assert_array_equal(parsed.intrinsics, example.intrinsics.astype(np.float32))
  np.testing.assert_array_equal(parsed.near_far, example.near_far.astype(np.float32))
  np.testing.assert_array_equal(parsed.world_bounds, [[-0.5] * 3, [0.5] * 3])
  assert (parsed.synset, parsed.model_id, parsed.view) == ("03001627", "m0", 0)
  assert parsed.azimuth == pytest.approx(example.azimuth, rel=1e-6)


def test_to_features_checks_shapes():
  example = _random_example(np.random.default_rng(2))
  example.frustum[8] = np.zeros((8, 8, 4), bool)
  with pytest.raises(ValueError, match=r"frustum grid for R=8 has shape \(8, 8, 4\)"):
    records.to_features(example)


# A module-level process function so that write_records can use it.
_EXAMPLES = {}


def _process_stored(job, params):
  del params
  return [records.to_features(e) for e in _EXAMPLES[job.model_id]], []


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
  rng = np.random.default_rng(3)
  jobs = []
  for index in range(3):
    model_id = f"model{index}"
    _EXAMPLES[model_id] = [_random_example(rng, model_id, view) for view in range(2)]
    jobs.append(prepare.Job("03001627", model_id, "train" if index < 2 else "test",
                            {"mesh": f"/nowhere/{model_id}.obj"}))
  out = str(tmp_path_factory.mktemp("records"))
  params = {"kind": "test", "resolutions": list(RES), "world_resolutions": list(RES),
            "image_size": SIZE, "models_per_shard": 1}
  manifest = prepare.write_records(jobs, _process_stored, params, out, workers=1,
                                   progress=False)
  assert manifest["complete"] and manifest["counts"]["examples"] == 6
  return out


def test_tasks_sharing_a_directory_write_one_manifest(records_dir, tmp_path):
  """`num_tasks` machines share `out_dir`: each writes its shards (index %
  num_tasks == task_index); the manifest is complete, and equal to one
  task's, once every task is done."""
  jobs = [prepare.Job("03001627", model_id, "train" if model_id != "model2" else "test",
                      {"mesh": f"/nowhere/{model_id}.obj"}) for model_id in sorted(_EXAMPLES)]
  params = {"kind": "test", "resolutions": list(RES), "world_resolutions": list(RES),
            "image_size": SIZE, "models_per_shard": 1}
  out = str(tmp_path / "shared")
  first = prepare.write_records(jobs, _process_stored, params, out, workers=1,
                                progress=False, task_index=1, num_tasks=2)
  assert not first["complete"]
  assert first["splits"]["train"]["shards"] == ["train/train-00001-of-00002.tfrecord"]
  assert (first["splits"]["train"]["num_shards"], first["counts"]["shards_finished"]) == (2, 1)
  with pytest.raises(ValueError, match="split 'test' has no finished shards"):
    pipeline.voxel_dataset(out, "test", 8, 2)   # task 0's shard is not written
  second = prepare.write_records(jobs, _process_stored, params, out, workers=1,
                                 progress=False, task_index=0, num_tasks=2)
  with open(os.path.join(records_dir, "manifest.json")) as f:
    alone = json.load(f)
  timing = "mean_seconds_per_model"
  assert second["complete"]
  assert {k: v for k, v in second.items() if k != "counts"} == {
      k: v for k, v in alone.items() if k != "counts"}
  assert ({k: v for k, v in second["counts"].items() if k != timing} ==
          {k: v for k, v in alone["counts"].items() if k != timing})


def test_reader_decodes_bit_for_bit_what_was_written(records_dir):
  written = {(e.model_id, e.view): e for ex in _EXAMPLES.values() for e in ex}
  dataset = pipeline.voxel_dataset(records_dir, "train", 8, batch_size=3, include_mask=True)
  seen = 0
  for features, labels in dataset:
    assert features["image"].dtype == tf.float32
    assert labels["frustum"].dtype == tf.float32
    for b in range(features["image"].shape[0]):
      key = (labels["model_id"][b].numpy().decode(), int(labels["view"][b]))
      example = written[key]
      np.testing.assert_array_equal(features["image"][b].numpy(),
                                    example.image.astype(np.float32) / np.float32(255))
      np.testing.assert_array_equal(labels["frustum"][b].numpy(), example.frustum[8])
      np.testing.assert_array_equal(labels["world"][b].numpy(), example.world[8])
      np.testing.assert_array_equal(labels["mask"][b].numpy(), example.mask)
      np.testing.assert_array_equal(labels["extrinsics"][b].numpy(),
                                    example.extrinsics.astype(np.float32))
      np.testing.assert_array_equal(labels["intrinsics"][b].numpy(),
                                    example.intrinsics.astype(np.float32))
      np.testing.assert_array_equal(labels["near_far"][b].numpy(), np.float32([2.1, 2.9]))
      assert labels["synset"][b].numpy() == b"03001627"
      seen += 1
  assert seen == 4
  assert labels["view"].dtype == tf.int32


def test_reader_options(records_dir):
  # World-grid mode for world-aligned baselines.
  _, labels = next(iter(pipeline.voxel_dataset(records_dir, "test", 4, 2, grids=("world",))))
  assert "frustum" not in labels and labels["world"].shape == (2, 4, 4, 4)
  np.testing.assert_array_equal(labels["world"][0].numpy(), _EXAMPLES["model2"][0].world[4])
  # Pooled labels for the energy's feature resolutions.
  _, labels = next(iter(pipeline.voxel_dataset(
      records_dir, "test", 8, 2, pooled_shapes=[(4, 4, 2), (2, 2, 8)])))
  grid = _EXAMPLES["model2"][0].frustum[8].astype(np.float32)
  expected = grid.reshape(4, 2, 4, 2, 2, 4).mean(axis=(1, 3, 5))
  np.testing.assert_allclose(labels["frustum_pooled"][0][0].numpy(), expected, rtol=1e-6)
  assert labels["frustum_pooled"][1].shape == (2, 2, 2, 8)
  # Shuffled, repeated, seeded: deterministic order for a seed.
  def order(seed):
    ds = pipeline.voxel_dataset(records_dir, "train", 4, 1, shuffle=True, seed=seed,
                                repeat=True, deterministic=True)
    return [(l["model_id"][0].numpy(), int(l["view"][0])) for _, l in ds.take(8)]
  assert order(5) == order(5)
  assert sorted(set(order(5))) == sorted(
      (m.encode(), v) for m in ("model0", "model1") for v in range(2))


def test_reader_errors_name_the_problem(records_dir, tmp_path):
  with pytest.raises(ValueError, match=r"no frustum grids at R=32; stored resolutions: \[4, 8\]"):
    pipeline.voxel_dataset(records_dir, "train", 32, 1)
  with pytest.raises(ValueError, match=r"no split 'val'; available: \['test', 'train'\]"):
    pipeline.voxel_dataset(records_dir, "val", 8, 1)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    pipeline.voxel_dataset(str(tmp_path), "train", 8, 1)


def test_pool_frustum_is_the_block_mean():
  grid = np.random.default_rng(4).uniform(size=(2, 8, 8, 16)).astype(np.float32)
  pooled = pipeline.pool_frustum(tf.constant(grid), (2, 4, 4)).numpy()
  np.testing.assert_allclose(pooled, grid.reshape(2, 2, 4, 4, 2, 4, 4).mean(axis=(2, 4, 6)),
                             rtol=1e-6)
  assert pipeline.pool_frustum(tf.constant(grid[0]), (8, 8, 1)).shape == (8, 8, 1)
  # Differentiable (usable inside a model): d mean / d cell = 1 / block size.
  x = tf.constant(grid)
  with tf.GradientTape() as tape:
    tape.watch(x)
    total = tf.reduce_sum(pipeline.pool_frustum(x, (4, 2, 8)))
  np.testing.assert_allclose(tape.gradient(total, x).numpy(), 1 / (2 * 4 * 2), rtol=1e-6)
  with pytest.raises(ValueError, match="must divide grid shape"):
    pipeline.pool_frustum(tf.constant(grid), (3, 4, 4))
  assert pipeline.pooled_shapes_for(32, (16, 8, 4), (32, 16, 8)) == (
      (16, 16, 32), (8, 8, 16), (4, 4, 8))


@pytest.mark.parametrize("how", ["boundary", "mid", "flip"])
def test_damaged_shard_is_an_error_naming_it(records_dir, tmp_path, how,
                                             damage_shard):
  copy = str(tmp_path / "copy")
  shutil.copytree(records_dir, copy)
  shard = sorted(glob.glob(os.path.join(copy, "train", "*.tfrecord")))[1]
  damage_shard(shard, how, records=1)
  if how != "flip":   # a truncated shard has another size: refused at open
    with pytest.raises(records_check.ShardError,
                       match=re.escape(shard) + r": \d+ bytes but .*manifest."
                       r"json records \d+ bytes \(2 examples\)"):
      pipeline.voxel_dataset(copy, "train", 8, batch_size=2)
    return
  dataset = pipeline.voxel_dataset(copy, "train", 8, batch_size=2,
                                   shuffle=True, seed=3)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape(shard) + ": shard damaged: 1 of the 2 "
                     "records listed in the manifest read back"):
    for _ in dataset:
      pass
  with pytest.raises(records_check.ShardError,
                     match=re.escape(shard) + r": corrupt shard \(corrupted "
                     r"record at \d+, after 1 good records\)"):
    list(records.read_tfrecord(shard))
