"""pose_dataset: keys, units, projection consistency, flips, determinism."""
import collections
import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from ige_tf.data import records_check
from ige_tf.pose import camera
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline
from ige_tf.pose.data import records

TRAIN_EXAMPLES = 6 * 12 * 4  # S1: 6 sequences x 12 frames x 4 cameras


@pytest.fixture(params=[True, False], ids=["in_memory", "streaming"])
def in_memory(request):
  return request.param


def collect(dataset):
  out = collections.defaultdict(list)
  for features, labels in dataset:
    for key, value in {**features, **labels}.items():
      out[key].append(value.numpy())
  return {k: np.concatenate(v) for k, v in out.items()}


def keys_of(data):
  return [(s, q, c, int(f)) for s, q, c, f in zip(
      data["subject"], data["sequence"], data["camera"], data["frame"])]


def test_batch_keys_shapes_dtypes(records_gt, in_memory):
  dataset = pipeline.pose_dataset(records_gt, "train", 64, seed=0,
                                  in_memory=in_memory)
  assert dataset.cardinality().numpy() == int(np.ceil(TRAIN_EXAMPLES / 64))
  features, labels = next(iter(dataset))
  assert sorted(features) == ["distortion", "intrinsics", "pose_2d"]
  assert sorted(labels) == ["action", "camera", "flipped", "frame",
                            "pose_3d", "root_3d", "sequence", "subject"]
  shapes = {"pose_2d": (64, 16, 2), "intrinsics": (64, 4),
            "distortion": (64, 5), "pose_3d": (64, 16, 3), "root_3d": (64, 3)}
  for key, shape in shapes.items():
    value = features.get(key, labels.get(key))
    assert value.shape == shape and value.dtype == tf.float32, key
  assert labels["subject"].dtype == tf.string
  assert labels["frame"].dtype == tf.int32
  # Units: metres in the camera frame (people stand 2.5-8 m away).
  assert 2.0 < labels["root_3d"].numpy()[:, 2].min()
  assert labels["root_3d"].numpy()[:, 2].max() < 8.0


def test_epoch_covers_every_example_once(records_gt, in_memory):
  data = collect(pipeline.pose_dataset(records_gt, "train", 100, seed=1,
                                       in_memory=in_memory))
  keys = keys_of(data)
  assert len(keys) == len(set(keys)) == TRAIN_EXAMPLES
  shuffled = keys[:50]
  in_order = keys_of(collect(pipeline.pose_dataset(
      records_gt, "train", 100, shuffle=False)))
  assert shuffled != in_order[:50]


def test_unshuffled_order_and_values_match_records(records_gt, in_memory):
  data = collect(pipeline.pose_dataset(records_gt, "test", 50,
                                       shuffle=False,
                                       in_memory=in_memory))
  raw = records.read_records(sorted(glob.glob(os.path.join(
      records_gt, "test", "*.tfrecord"))))
  np.testing.assert_allclose(
      data["pose_2d"],
      (raw["pose_2d"] - raw["c"][:, None]) / raw["f"][:, None], rtol=1e-6)
  np.testing.assert_array_equal(data["pose_3d"], raw["pose_3d"][:, 1:])
  np.testing.assert_array_equal(data["root_3d"], raw["pose_3d"][:, 0])
  np.testing.assert_array_equal(data["intrinsics"],
                                np.concatenate([raw["f"], raw["c"]], -1))
  np.testing.assert_array_equal(data["distortion"],
                                np.concatenate([raw["k"], raw["p"]], -1))
  assert [a.decode() for a in data["action"]] == list(raw["action"])
  assert not data["flipped"].any()


@pytest.mark.parametrize("flip", [False, True])
def test_gt_projection_relation_holds(records_gt, flip, in_memory):
  data = collect(pipeline.pose_dataset(records_gt, "train", 128, seed=2,
                                       flip_augment=flip,
                                       in_memory=in_memory))
  k, p = camera.split_distortion(data["distortion"])
  projected = camera.project_normalized(
      tf.constant(data["pose_3d"], tf.float64), k, p).numpy()
  # Every MPII16 joint but the pelvis is an H36M16 joint.
  from_h36m16 = [skeleton.H36M16.index(j) for j in skeleton.MPII16.joints
                 if j != "pelvis"]
  np.testing.assert_allclose(projected[:, from_h36m16],
                             data["pose_2d"][:, _MPII_NON_PELVIS], atol=2e-6)
  # The MPII pelvis is the projection of the root joint.
  root = camera.project_normalized(
      tf.constant(data["root_3d"][:, None], tf.float64), k, p).numpy()[:, 0]
  np.testing.assert_allclose(root, data["pose_2d"][:, 6], atol=2e-6)
  if flip:
    fraction = data["flipped"].mean()
    assert 0.4 < fraction < 0.6


_MPII_NON_PELVIS = [i for i, j in enumerate(skeleton.MPII16.joints)
                    if j != "pelvis"]

def test_flip_mirrors_the_same_example(records_gt, in_memory):
  plain = collect(pipeline.pose_dataset(records_gt, "test", 64,
                                        shuffle=False,
                                        in_memory=in_memory))
  flipped = collect(pipeline.pose_dataset(records_gt, "test", 64,
                                          shuffle=False, flip_augment=True,
                                          seed=3, in_memory=in_memory))
  assert keys_of(plain) == keys_of(flipped)
  f = flipped["flipped"]
  assert f.any() and not f.all()
  np.testing.assert_allclose(
      flipped["pose_2d"][f], skeleton.mirror_x(plain["pose_2d"][f], "mpii16"))
  np.testing.assert_allclose(
      flipped["pose_3d"][f], skeleton.mirror_x(plain["pose_3d"][f], "h36m16"))
  np.testing.assert_allclose(flipped["root_3d"][f],
                             plain["root_3d"][f] * [-1, 1, 1])
  np.testing.assert_allclose(flipped["distortion"][f],
                             plain["distortion"][f] * [1, 1, 1, 1, -1])
  np.testing.assert_array_equal(flipped["pose_2d"][~f], plain["pose_2d"][~f])


def test_same_seed_same_order_and_flips(records_gt, in_memory):
  def first(seed):
    features, labels = next(iter(pipeline.pose_dataset(
        records_gt, "train", 32, seed=seed, flip_augment=True,
        in_memory=in_memory)))
    return (labels["frame"].numpy(), labels["camera"].numpy(),
            labels["flipped"].numpy(), features["pose_2d"].numpy())
  a, b, c = first(5), first(5), first(6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_repeat_and_drop_remainder(records_gt, in_memory):
  dataset = pipeline.pose_dataset(records_gt, "train", 100, repeat=True,
                                  drop_remainder=True, seed=0,
                                  in_memory=in_memory)
  assert dataset.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
  batches = list(dataset.take(4))
  assert all(f["pose_2d"].shape[0] == 100 for f, _ in batches)
  finite = pipeline.pose_dataset(records_gt, "train", 100,
                                 drop_remainder=True, in_memory=in_memory)
  assert finite.cardinality().numpy() == TRAIN_EXAMPLES // 100


def test_repeated_epochs_are_reshuffled(records_gt, in_memory):
  dataset = pipeline.pose_dataset(records_gt, "train", 96, repeat=True,
                                  seed=4, in_memory=in_memory)
  data = collect(dataset.take(2 * TRAIN_EXAMPLES // 96))
  keys = keys_of(data)
  first, second = keys[:TRAIN_EXAMPLES], keys[TRAIN_EXAMPLES:]
  assert sorted(first) == sorted(second) and len(set(first)) == len(first)
  assert first != second


def test_mirrored_statistics_are_symmetric(records_gt):
  stats = pipeline.compute_statistics(records_gt, "train",
                                      include_mirrored=True)
  mean = stats["pose_3d_mean"]
  perm = list(skeleton.H36M16.flip_permutation)
  np.testing.assert_allclose(mean[perm] * [-1, 1, 1], mean, atol=1e-6)
  np.testing.assert_allclose(stats["pose_3d_std"][perm], stats["pose_3d_std"],
                             rtol=1e-4)
  assert stats["count"] == 2 * TRAIN_EXAMPLES


def test_standardize_round_trip(records_gt):
  stats = pipeline.load_statistics(records_gt)
  features, labels = next(iter(pipeline.pose_dataset(records_gt,
                                                     "train", 256,
                                                     seed=0)))
  rel = labels["pose_3d"] - labels["root_3d"][:, None]
  z = pipeline.standardize(rel, stats["pose_3d_mean"], stats["pose_3d_std"])
  np.testing.assert_allclose(
      pipeline.destandardize(z, stats["pose_3d_mean"],
                             stats["pose_3d_std"]).numpy(), rel.numpy(),
      atol=1e-6)
  # Standardized over the whole split: mean ~0, std ~1 per coordinate.
  z2 = pipeline.standardize(features["pose_2d"], stats["pose_2d_mean"],
                            stats["pose_2d_std"]).numpy()
  assert np.abs(z2.mean()) < 0.3 and 0.7 < z2.std() < 1.3


def test_missing_split_and_manifest_errors(records_gt, tmp_path):
  with pytest.raises(FileNotFoundError, match="validation: no such split"):
    pipeline.pose_dataset(records_gt, "validation", 8)
  with pytest.raises(FileNotFoundError, match="manifest.json: no manifest"):
    pipeline.num_examples(str(tmp_path), "train")


@pytest.fixture
def damaged_copy(records_gt, tmp_path, damage_shard):
  """`damaged_copy(how)`: a copy of `records_gt` with one test shard (48
  records) damaged by `damage_shard`; returns (records_dir, shard path)."""
  import shutil  # pylint: disable=import-outside-toplevel

  def make(how):
    out = str(tmp_path / how)
    shutil.copytree(records_gt, out)
    shard = sorted(glob.glob(os.path.join(out, "test", "*.tfrecord")))[2]
    damage_shard(shard, how, records=24)
    return out, shard
  return make


@pytest.mark.parametrize("how", ["boundary", "mid"])
def test_truncated_shard_is_refused_when_opened(damaged_copy, how,
                                                in_memory):
  out, shard = damaged_copy(how)
  with pytest.raises(records_check.ShardError,
                     match=re.escape(shard) + r": \d+ bytes but .*manifest."
                     r"json records \d+ bytes \(48 examples\): the shard is "
                     "truncated"):
    pipeline.pose_dataset(out, "test", 64, in_memory=in_memory)


def test_bit_flip_is_an_error_naming_the_shard(damaged_copy, in_memory):
  out, shard = damaged_copy("flip")
  if in_memory:
    with pytest.raises(records_check.ShardError,
                       match=re.escape(shard) + r": corrupt shard \(corrupted "
                       r"record at \d+\); re-run the prepare command"):
      pipeline.pose_dataset(out, "test", 64, in_memory=True)
    return
  dataset = pipeline.pose_dataset(out, "test", 64, shuffle=True, seed=1,
                                  in_memory=False)

  @tf.function
  def count():
    total = tf.constant(0)
    for features, _ in dataset:
      total += tf.shape(features["pose_2d"])[0]
    return total
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape(shard) + ": shard damaged: 24 of the 48 "
                     "records listed in the manifest read back"):
    count()
