"""tf.data reader of the voxel records, and anisotropic frustum pooling.

`voxel_dataset` reads the shards that `ige_tf.voxel.data.prepare` (or the
3D-R2N2 import) wrote and yields `(features, labels)`:

- `features = {"image": float32 [B, S, S, 3] in [0, 1]}`
- `labels = {"frustum": float32 [B, R, R, R] in {0, 1},
             "world": float32 [B, R, R, R] (if requested and stored),
             "synset": string [B], "model_id": string [B], "view": int32 [B],
             "intrinsics": float32 [B, 3, 3], "extrinsics": float32 [B, 3, 4],
             "near_far": float32 [B, 2]}`
  plus, on request, `"mask"` (float32 [B, S, S], the rendered silhouette) and
  `"frustum_pooled"` (a tuple of float32 `[B, h_i, w_i, d_i]`, the frustum
  grid average-pooled to each requested shape).

Shards are checked against `manifest.json` when the dataset is made (sizes)
and while it is read (record counts, TFRecord CRCs): a damaged shard is an
error naming it (`ige_tf.data.records_check`).

Voxels are decoded with a 256-entry bit lookup table (`tf.gather`) after
`tf.io.decode_compressed(..., "ZLIB")`, bit for bit what was written.
"""
import os

import numpy as np
import tensorflow as tf

from ige_tf.data import record_writer
from ige_tf.data import records_check
from ige_tf.voxel.data import records
from ige_tf.train import distributed

GRIDS = ("frustum", "world")

# Row b = the 8 bits of byte value b, most significant first (np.packbits order).
_BIT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)


PREPARE_COMMAND = "bin/prepare_shapenet.py (or bin/import_r2n2.py)"


def read_manifest(records_dir):
  """The `manifest.json` of a records directory (dict), of this version.

  Raises:
    FileNotFoundError: no manifest (naming the path).
    record_writer.ManifestError: an unreadable manifest or one of another
      version (naming it and the command that rewrites it).
  """
  return record_writer.read_manifest(records_dir, PREPARE_COMMAND)[1]


def split_shards(records_dir, split):
  """The finished shards of `split`, checked against the manifest (sizes).

  Returns:
    (files, counts): sorted shard paths and their recorded example counts.

  Raises:
    ValueError: unknown split or no finished shards (naming the directory).
    records_check.ShardError: a shard missing, of another size than recorded
      (e.g. truncated) or not listed; a manifest of another version
      (`record_writer.ManifestError`).
  """
  path, manifest = record_writer.read_manifest(records_dir, PREPARE_COMMAND)
  splits = manifest.get("splits", {})
  if split not in splits:
    raise ValueError(f"{records_dir}: no split {split!r}; available: {sorted(splits)}")
  entry = splits[split]
  files, counts = records_check.check_split(
      os.path.join(records_dir, split), entry, path,
      examples=entry["num_examples"], prepare_command=PREPARE_COMMAND)
  if not files:
    raise ValueError(f"{records_dir}: split {split!r} has no finished shards")
  return files, counts


def shard_files(records_dir, split):
  """Sorted list of the finished shard files of `split` (see `split_shards`)."""
  return split_shards(records_dir, split)[0]


def decode_voxels(data, shape, dtype=tf.float32):
  """Decodes one packed voxel grid (see `records.pack_voxels`).

  Args:
    data: string scalar tensor, zlib(packbits(grid)).
    shape: static shape (tuple of ints) of the grid.
    dtype: output dtype.

  Returns:
    `dtype` tensor of `shape` with values in {0, 1}.
  """
  size = int(np.prod(shape))
  packed = tf.io.decode_raw(tf.io.decode_compressed(data, compression_type="ZLIB"), tf.uint8)
  table = tf.constant(_BIT_TABLE, dtype=dtype)
  bits = tf.reshape(tf.gather(table, tf.cast(packed, tf.int32)), [-1])
  if size % 8:
    bits = bits[:size]
  return tf.reshape(bits, shape)


def pool_frustum(grid, output_shape):
  """Average-pools a frustum grid anisotropically to `output_shape`.

  Each output cell is the mean of the `(H/h, W/w, D/d)` block of input cells
  it covers (paper 6.1: the proposed grid averaged over coarser frustum
  voxels at each image-feature resolution).

  Args:
    grid: float `[B, H, W, D]` (or `[H, W, D]`).
    output_shape: (h, w, d) dividing (H, W, D).

  Returns:
    float `[B, h, w, d]` (or `[h, w, d]`).
  """
  grid = tf.convert_to_tensor(grid)
  unbatched = grid.shape.rank == 3
  if unbatched:
    grid = grid[None]
  in_shape = grid.shape[1:]
  if None in in_shape.as_list():
    raise ValueError(f"pool_frustum needs static grid dims, got {grid.shape}")
  h, w, d = (int(s) for s in output_shape)
  big_h, big_w, big_d = in_shape.as_list()
  if big_h % h or big_w % w or big_d % d:
    raise ValueError(f"pool_frustum: output shape {(h, w, d)} must divide grid shape "
                     f"{(big_h, big_w, big_d)}")
  # One axis at a time with rank <= 4 reshapes (a single rank-7 reshape's
  # reduce_mean gradient hits a CPU BroadcastTo rank limit).
  pooled = grid
  if big_h != h:
    pooled = tf.reduce_mean(tf.reshape(pooled, [-1, h, big_h // h, big_w * big_d]), axis=2)
    pooled = tf.reshape(pooled, [-1, h, big_w, big_d])
  if big_w != w:
    pooled = tf.reduce_mean(tf.reshape(pooled, [-1, w, big_w // w, big_d]), axis=2)
    pooled = tf.reshape(pooled, [-1, h, w, big_d])
  if big_d != d:
    pooled = tf.reduce_mean(tf.reshape(pooled, [-1, d, big_d // d]), axis=2)
    pooled = tf.reshape(pooled, [-1, h, w, d])
  return pooled[0] if unbatched else pooled


def pooled_shapes_for(resolution, feature_sizes, depth_sizes):
  """Pooled frustum shapes `(h_i, h_i, d_i)` for square feature maps.

  Args:
    resolution: R of the frustum grid.
    feature_sizes: image-feature spatial sizes h_i (e.g. (64, 32, 16, 8, 4)).
    depth_sizes: depth sizes d_i, same length.

  Returns:
    tuple of (h, h, d) tuples, checked to divide (R, R, R).
  """
  if len(feature_sizes) != len(depth_sizes):
    raise ValueError("feature_sizes and depth_sizes must have the same length")
  shapes = []
  for h, d in zip(feature_sizes, depth_sizes):
    if resolution % h or resolution % d:
      raise ValueError(f"pooled shape {(h, h, d)} does not divide R={resolution}")
    shapes.append((int(h), int(h), int(d)))
  return tuple(shapes)


def _feature_spec(grids, resolution, include_mask):
  spec = {
      "image": tf.io.FixedLenFeature([], tf.string),
      "intrinsics": tf.io.FixedLenFeature([9], tf.float32),
      "extrinsics": tf.io.FixedLenFeature([12], tf.float32),
      "near_far": tf.io.FixedLenFeature([2], tf.float32),
      "synset": tf.io.FixedLenFeature([], tf.string),
      "model_id": tf.io.FixedLenFeature([], tf.string),
      "view": tf.io.FixedLenFeature([], tf.int64),
  }
  if include_mask:
    spec["mask"] = tf.io.FixedLenFeature([], tf.string)
  for grid in grids:
    spec[f"{grid}/{resolution}"] = tf.io.FixedLenFeature([], tf.string)
  return spec


def voxel_dataset(records_dir, split, resolution, batch_size, shuffle=False, seed=None,
                  repeat=False, grids=None, include_mask=False, pooled_shapes=None,
                  drop_remainder=False, shuffle_buffer=1024, voxel_dtype=tf.float32,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=None,
                  prefetch=tf.data.AUTOTUNE):
  """Batched `(features, labels)` from voxel records (see module docstring).

  Args:
    records_dir: directory with `manifest.json` and the split folders.
    split: "train", "val" or "test" (whatever the manifest lists).
    resolution: R; must be one of the stored frustum/world resolutions.
    batch_size: B.
    shuffle: shuffle shard order and examples (buffer `shuffle_buffer`).
    seed: int seed for shuffling (None: nondeterministic).
    repeat: repeat forever.
    grids: which grids to decode: None = "frustum" plus "world" if the
      records store world grids at R; or a subset of ("frustum", "world").
      World-aligned baselines use `grids=("world",)`.
    include_mask: also yield `labels["mask"]` float32 `[B, S, S]`.
    pooled_shapes: optional sequence of (h, w, d); adds
      `labels["frustum_pooled"]`, the frustum grid pooled to each shape.
    drop_remainder: drop the last partial batch.
    shuffle_buffer: examples in the shuffle buffer.
    voxel_dtype: dtype of the decoded grids (float32 by default).
    num_parallel_calls: parallelism of decoding.
    deterministic: tf.data determinism (None: tf.data default).
    prefetch: batches to prefetch (None: no prefetch).

  Returns:
    `tf.data.Dataset` of `(features, labels)`. In a multi-worker cluster it
    is sharded across workers by file where the shards allow, else by data
    (`distributed.shard_input`).

  Raises:
    ValueError: unknown split, missing resolution or grid (naming the dir).
  """
  manifest = read_manifest(records_dir)
  version = manifest.get("format_version", records.FORMAT_VERSION)
  if version != records.FORMAT_VERSION:
    raise ValueError(f"{records_dir}: records format version {version}; this reader "
                     f"reads version {records.FORMAT_VERSION}")
  params = manifest.get("parameters", {})
  frustum_res = [int(r) for r in params.get("resolutions", [])]
  world_res = [int(r) for r in params.get("world_resolutions", [])]
  available = {"frustum": frustum_res, "world": world_res}
  if grids is None:
    grids = ("frustum",) + (("world",) if resolution in world_res else ())
  grids = tuple(grids)
  for grid in grids:
    if grid not in GRIDS:
      raise ValueError(f"unknown grid {grid!r}; expected one of {GRIDS}")
    if resolution not in available[grid]:
      raise ValueError(f"{records_dir}: no {grid} grids at R={resolution}; stored "
                       f"resolutions: {available[grid]}")
  if pooled_shapes and "frustum" not in grids:
    raise ValueError("pooled_shapes needs the frustum grid")
  image_size = int(params.get("image_size", 0)) or None
  files, counts = split_shards(records_dir, split)
  spec = _feature_spec(grids, resolution, include_mask)
  shape = (resolution,) * 3

  def decode(serialized):
    parsed = tf.io.parse_single_example(serialized, spec)
    image = tf.io.decode_png(parsed["image"], channels=3)
    if image_size:
      image = tf.ensure_shape(image, [image_size, image_size, 3])
    features = {"image": tf.cast(image, tf.float32) / 255.0}
    labels = {
        "synset": parsed["synset"],
        "model_id": parsed["model_id"],
        "view": tf.cast(parsed["view"], tf.int32),
        "intrinsics": tf.reshape(parsed["intrinsics"], [3, 3]),
        "extrinsics": tf.reshape(parsed["extrinsics"], [3, 4]),
        "near_far": parsed["near_far"],
    }
    for grid in grids:
      labels[grid] = decode_voxels(parsed[f"{grid}/{resolution}"], shape, voxel_dtype)
    if include_mask:
      mask = tf.io.decode_png(parsed["mask"], channels=1)[..., 0]
      labels["mask"] = tf.cast(mask > 127, tf.float32)
    if pooled_shapes:
      frustum = tf.cast(labels["frustum"], tf.float32)
      labels["frustum_pooled"] = tuple(pool_frustum(frustum, s) for s in pooled_shapes)
    return features, labels

  dataset = records_check.checked_record_dataset(
      files, counts, shuffle=shuffle, seed=seed, cycle_length=8,
      deterministic=deterministic)
  if shuffle:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls,
                        deterministic=deterministic)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  dataset = distributed.shard_input(dataset, counts, batch_size, drop_remainder)
  if prefetch is not None:
    dataset = dataset.prefetch(prefetch)
  return dataset
