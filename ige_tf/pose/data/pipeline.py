"""`tf.data` input pipeline over prepared Human3.6M records.

Every split is checked against `manifest.json` when it is opened (shard
sizes and counts) and while it is read (record counts, TFRecord CRCs): a
damaged shard is an error naming it (`ige_tf.data.records_check`).

`pose_dataset` yields `(features, labels)` batches:

features:
  pose_2d     float32 [B, 16, 2]  MPII16 joints, normalized `(uv - c) / f`
                                  (distorted normalized image coordinates)
  intrinsics  float32 [B, 4]      (fx, fy, cx, cy) pixels
  distortion  float32 [B, 5]      (k1, k2, k3, p1, p2)
labels:
  pose_3d     float32 [B, 16, 3]  H36M16 joints, camera frame, metres
  root_3d     float32 [B, 3]      Human3.6M pelvis joint, camera frame, metres
  subject     string  [B]         e.g. b"S9"
  action      string  [B]         e.g. b"Walking"
  sequence    string  [B]         e.g. b"Walking 1"
  camera      string  [B]         e.g. b"54138969"
  frame       int32   [B]         frame index in the original sequence
  flipped     bool    [B]         whether flip augmentation mirrored it

So `camera.project_normalized(pose_3d, k, p)` with `(k, p) =
camera.split_distortion(distortion)` reproduces `pose_2d` for the `gt`
source (exactly up to float32 rounding).

Flip augmentation mirrors an example with probability 1/2: x -> -x for the
normalized 2D joints, the 3D joints and the root, left/right joints swapped,
and p2 -> -p2 (the mirrored camera's distortion, see
`camera.mirror_distortion`), so the projection relation above still holds.
"""
import json
import math
import os

import numpy as np
import tensorflow as tf

from ige_tf.data import record_writer
from ige_tf.data import records_check
from ige_tf.pose import camera
from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m
from ige_tf.pose.data import prepare
from ige_tf.pose.data import records
from ige_tf.train import distributed

STATISTIC_KEYS = ("pose_2d", "pose_3d", "pose_3d_camera", "root_3d")


def _read_manifest(records_dir):
  """(path, manifest) of a records directory, of this version (see
  `record_writer.read_manifest`)."""
  return record_writer.read_manifest(records_dir, prepare.PREPARE_COMMAND)


def split_shards(records_dir, split):
  """Shards of a split, checked against `manifest.json` (cheap: sizes).

  Returns:
    (files, counts): sorted shard paths and their recorded example counts.

  Raises:
    FileNotFoundError: no such split folder, no shards or no manifest (names
      it).
    records_check.ShardError: a shard missing, of another size than recorded
      (e.g. truncated) or not listed; a manifest of another version
      (`record_writer.ManifestError`, names the file and the command).
  """
  folder = os.path.join(records_dir, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(
        f"{folder}: no such split folder (splits: {sorted(h36m.SPLITS)}; run "
        "bin/prepare_h36m.py first)")
  path, manifest = _read_manifest(records_dir)
  entry = manifest.get("splits", {}).get(split)
  if entry is None:
    raise KeyError(f"{path}: no split {split!r}")
  files, counts = records_check.check_split(
      folder, entry, path, examples=entry["num_examples"],
      prepare_command=prepare.PREPARE_COMMAND)
  if not files:
    raise FileNotFoundError(f"{folder}: no .tfrecord shards")
  return files, counts


def record_files(records_dir, split):
  """Sorted shard paths of a split (checked as `split_shards`)."""
  return split_shards(records_dir, split)[0]


def num_examples(records_dir, split):
  """Number of examples of a split, from `manifest.json`.

  Raises:
    FileNotFoundError: no manifest (names the path).
    record_writer.ManifestError: a manifest of another version.
  """
  path, manifest = _read_manifest(records_dir)
  try:
    return int(manifest["splits"][split]["num_examples"])
  except KeyError:
    raise KeyError(f"{path}: no split {split!r}") from None


# Float features and labels packed side by side, [N, 92]; see `_pack`.
_FLOAT_LAYOUT = (("pose_2d", (16, 2)), ("intrinsics", (4,)),
                 ("distortion", (5,)), ("pose_3d", (16, 3)), ("root_3d", (3,)))
_FEATURE_KEYS = ("pose_2d", "intrinsics", "distortion")
_STRING_KEYS = ("subject", "action", "sequence", "camera")


def _mirror_columns():
  """Column permutation and signs that mirror a packed float row."""
  perm, sign = [], []
  for key, shape in _FLOAT_LAYOUT:
    offset = len(perm)
    if key in ("pose_2d", "pose_3d"):
      joints, dims = shape
      skel = skeleton.MPII16 if key == "pose_2d" else skeleton.H36M16
      for j in range(joints):
        for d in range(dims):
          perm.append(offset + skel.flip_permutation[j] * dims + d)
          sign.append(-1.0 if d == 0 else 1.0)
    else:
      size = int(np.prod(shape))
      perm.extend(range(offset, offset + size))
      sign.extend([1.0] * size)
      if key == "root_3d":
        sign[offset] = -1.0           # x
      elif key == "distortion":
        sign[offset + 4] = -1.0       # p2, see camera.mirror_distortion
  return np.array(perm, np.int32), np.array(sign, np.float32)


_MIRROR_PERM, _MIRROR_SIGN = _mirror_columns()


def _pack(parsed):
  """Parsed records -> (floats `[N, 92]`, strings `[N, 4]`, frame `[N]`)."""
  f, c = parsed["f"], parsed["c"]
  pose_2d = camera.normalize_pixels(parsed["pose_2d"], f, c)
  columns = [tf.reshape(pose_2d, [-1, 32]), f, c, parsed["k"], parsed["p"],
             tf.reshape(parsed["pose_3d"][:, 1:], [-1, 48]),
             parsed["pose_3d"][:, 0]]
  strings = tf.stack([parsed[k] for k in _STRING_KEYS], axis=1)
  return (tf.concat(columns, axis=1), strings,
          tf.cast(parsed["frame"], tf.int32))


def _unpack(floats, strings, frame, flip=None):
  """Packed batch (+ optional flips) -> `(features, labels)`."""
  if flip is None:
    flip = tf.zeros_like(frame, dtype=tf.bool)
  else:
    mirrored = tf.gather(floats, _MIRROR_PERM, axis=1) * _MIRROR_SIGN
    floats = tf.where(flip[:, None], mirrored, floats)
  out, offset = {}, 0
  for key, shape in _FLOAT_LAYOUT:
    size = int(np.prod(shape))
    out[key] = tf.reshape(floats[:, offset:offset + size], (-1,) + shape)
    offset += size
  features = {k: out[k] for k in _FEATURE_KEYS}
  labels = {"pose_3d": out["pose_3d"], "root_3d": out["root_3d"]}
  for i, key in enumerate(_STRING_KEYS):
    labels[key] = strings[:, i]
  labels["frame"] = frame
  labels["flipped"] = flip
  return features, labels


def to_features_labels(parsed, flip=None):
  """Maps parsed records (`records.parse_batch`) to `(features, labels)`.

  Args:
    parsed: dict from `records.parse_batch` (batched).
    flip: None, or bool `[B]`: which examples to mirror.

  Returns:
    `(features, labels)` as in the module docstring.
  """
  return _unpack(*_pack(parsed), flip=flip)


# Splits up to this many examples are held in memory by default (about
# 0.5 KB each: the full Human3.6M training set at 50 fps takes ~0.8 GB).
IN_MEMORY_MAX_EXAMPLES = 2_000_000
_SPLIT_CACHE = {}


def load_split(records_dir, split):
  """All examples of a split, parsed and packed into tensors (cached).

  The cache key includes the manifest's modification time, so re-preparing
  the records invalidates it; `clear_cache()` frees the memory.

  Returns:
    (floats float32 `[N, 92]`, strings string `[N, 4]`, frame int32 `[N]`)
    in file order; `_unpack` turns rows into `(features, labels)`.
  """
  files, counts = split_shards(records_dir, split)
  manifest = os.path.join(records_dir, prepare.MANIFEST_FILE)
  key = (os.path.abspath(records_dir), split,
         os.stat(manifest).st_mtime_ns if os.path.exists(manifest) else 0)
  if key not in _SPLIT_CACHE:
    parts = [_pack(records.parse_batch(batch))
             for path, count in zip(files, counts)
             for batch in records_check.read_checked(path, count, 65536)]
    _SPLIT_CACHE[key] = tuple(tf.concat([p[i] for p in parts], axis=0)
                              for i in range(3))
  return _SPLIT_CACHE[key]


def clear_cache():
  """Frees the splits held by `load_split`."""
  _SPLIT_CACHE.clear()


def _flip_draw(seed, counter, batch):
  draw = tf.random.stateless_uniform(
      [batch], seed=tf.stack([tf.cast(seed, tf.int64),
                              tf.cast(counter, tf.int64)]))
  return draw < 0.5


def _in_memory_dataset(records_dir, split, batch_size, shuffle, flip_augment,
                       repeat, seed, drop_remainder):
  floats, strings, frames = load_split(records_dir, split)
  count = int(frames.shape[0])
  num_batches = (count // batch_size if drop_remainder else
                 math.ceil(count / batch_size))

  def epoch_batches(epoch):
    if shuffle:
      order = tf.random.experimental.stateless_shuffle(
          tf.range(count), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
    else:
      order = tf.range(count)

    def batch_indices(b):
      start = tf.cast(b, tf.int32) * batch_size
      stop = tf.minimum(start + batch_size, count)
      return order[start:stop], epoch * num_batches + b

    return tf.data.Dataset.range(num_batches).map(batch_indices)

  epochs = tf.data.Dataset.range(2**62 if repeat else 1)
  dataset = epochs.flat_map(epoch_batches)

  def transform(indices, counter):
    flip = (_flip_draw(seed, counter, tf.shape(indices)[0]) if flip_augment
            else None)
    return _unpack(tf.gather(floats, indices), tf.gather(strings, indices),
                   tf.gather(frames, indices), flip)

  dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  dataset = dataset.apply(tf.data.experimental.assert_cardinality(
      tf.data.INFINITE_CARDINALITY if repeat else num_batches))
  return dataset.prefetch(tf.data.AUTOTUNE)


def pose_dataset(records_dir, split, batch_size, shuffle=True,
                 flip_augment=False, repeat=False, seed=None,
                 shuffle_buffer=16384, drop_remainder=False, cycle_length=8,
                 in_memory="auto"):
  """Batched `(features, labels)` dataset of a prepared split.

  Args:
    records_dir: `--out_dir` of `bin/prepare_h36m.py`.
    split: "train" or "test".
    batch_size: examples per batch.
    shuffle: shuffle the examples. In memory: a full permutation per epoch.
      Streaming: shuffled shard order, `cycle_length` shards interleaved, a
      `shuffle_buffer` example buffer. Without it, examples come in file
      order (shards sorted by name) in both modes.
    flip_augment: mirror each example with probability 1/2 (module doc).
    repeat: repeat forever (else one epoch, with known cardinality).
    seed: int seed for shuffling and flips; None is random. The same seed
      gives the same order and flips.
    shuffle_buffer: streaming mode: examples in the shuffle buffer.
    drop_remainder: drop the last partial batch.
    cycle_length: streaming mode: shards read concurrently when shuffling.
    in_memory: True to parse the whole split once into memory (cached per
      process, see `load_split`) and gather batches from it, which is several
      times faster; False to stream from the files; "auto" (default) holds
      splits of at most `IN_MEMORY_MAX_EXAMPLES` examples in memory.
      In a multi-worker cluster a streamed split is sharded across workers
      by file where its shards allow (`distributed.shard_input`), an
      in-memory one by data.

  Returns:
    `tf.data.Dataset` of `(features, labels)`; see the module docstring.
  """
  files, counts = split_shards(records_dir, split)
  if seed is None:
    seed = int(np.random.default_rng().integers(2**31 - 1))
  if in_memory == "auto":
    in_memory = num_examples(records_dir, split) <= IN_MEMORY_MAX_EXAMPLES
  if in_memory:
    return _in_memory_dataset(records_dir, split, batch_size, shuffle,
                              flip_augment, repeat, seed, drop_remainder)
  if shuffle:
    dataset = records_check.checked_record_dataset(
        files, counts, shuffle=True, seed=seed, cycle_length=cycle_length,
        deterministic=True)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                              reshuffle_each_iteration=True)
  else:
    dataset = records_check.checked_record_dataset(files, counts)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  dataset = distributed.shard_input(
      dataset, counts, batch_size, drop_remainder,
      unshardable="flip augmentation numbers the batches" if flip_augment
      else None)
  if not repeat:
    count = num_examples(records_dir, split)
    batches = (count // batch_size if drop_remainder else
               math.ceil(count / batch_size))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))

  def transform(serialized, counter=None):
    parsed = records.parse_batch(serialized)
    flip = (_flip_draw(seed, counter, tf.shape(serialized)[0])
            if flip_augment else None)
    return to_features_labels(parsed, flip)

  if flip_augment:
    # Flips are drawn per batch number: `enumerate` zips in a `range`
    # dataset, which tf.data cannot shard by file.
    dataset = dataset.enumerate().map(lambda n, batch: transform(batch, n),
                                      num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)
  else:
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _as_arrays(stats):
  out = {"count": int(stats["count"])}
  for key in STATISTIC_KEYS:
    for suffix in ("_mean", "_std"):
      out[key + suffix] = np.asarray(stats[key + suffix], np.float32)
  return out


def load_statistics(records_dir, split="train"):
  """Statistics written by `prepare_h36m` (without flips).

  Returns:
    dict of float32 numpy arrays:
      pose_2d_mean, pose_2d_std         `[16, 2]` normalized 2D inputs,
      pose_3d_mean, pose_3d_std         `[16, 3]` root-relative 3D, metres,
      pose_3d_camera_mean, _std         `[16, 3]` camera-frame 3D, metres,
      root_3d_mean, root_3d_std         `[3]` pelvis, metres,
    and "count" (int).

  Raises:
    FileNotFoundError / KeyError: no statistics file or no such split.
  """
  path = os.path.join(records_dir, prepare.STATISTICS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no statistics; run bin/prepare_h36m.py")
  with open(path) as f:
    stats = json.load(f)
  if not stats.get(split):
    raise KeyError(f"{path}: no statistics for split {split!r}")
  return _as_arrays(stats[split])


def compute_statistics(records_dir, split="train", include_mirrored=False,
                       batch_size=4096):
  """Statistics of `load_statistics`, computed by reading the records.

  Args:
    records_dir, split: as `pose_dataset`.
    include_mirrored: also count every example mirrored (the distribution
      seen with `flip_augment=True`).
    batch_size: read batch size.

  Returns:
    dict like `load_statistics`.
  """
  sums = {}

  def add(key, value):
    value = value.astype(np.float64)
    s, s2 = sums.get(key, (0.0, 0.0))
    sums[key] = (s + value.sum(0), s2 + np.square(value).sum(0))

  count = 0
  data = pose_dataset(records_dir, split, batch_size, shuffle=False,
                      in_memory=False)
  for features, labels in data:
    variants = [(features, labels)]
    if include_mirrored:
      variants.append(_mirrored(features, labels))
    for feats, labs in variants:
      pose_3d = labs["pose_3d"].numpy()
      root = labs["root_3d"].numpy()
      add("pose_2d", feats["pose_2d"].numpy())
      add("pose_3d", pose_3d - root[:, None, :])
      add("pose_3d_camera", pose_3d)
      add("root_3d", root)
      count += len(root)
  stats = {"count": count}
  for key, (s, s2) in sums.items():
    mean = s / max(count, 1)
    stats[key + "_mean"] = mean
    stats[key + "_std"] = np.sqrt(np.maximum(s2 / max(count, 1) - mean**2, 0))
  return _as_arrays(stats)


def _mirrored(features, labels):
  return ({"pose_2d": skeleton.mirror_x(features["pose_2d"],
                                        skeleton.MPII16)},
          {"pose_3d": skeleton.mirror_x(labels["pose_3d"], skeleton.H36M16),
           "root_3d": labels["root_3d"] * tf.constant([-1.0, 1.0, 1.0])})


def standardize(value, mean, std, min_std=1e-6):
  """`(value - mean) / max(std, min_std)`; broadcasts `[..., J, D]` stats."""
  value = tf.convert_to_tensor(value)
  std = tf.maximum(tf.cast(std, value.dtype), min_std)
  return (value - tf.cast(mean, value.dtype)) / std


def destandardize(value, mean, std, min_std=1e-6):
  """Inverse of `standardize`."""
  value = tf.convert_to_tensor(value)
  std = tf.maximum(tf.cast(std, value.dtype), min_std)
  return value * std + tf.cast(mean, value.dtype)
