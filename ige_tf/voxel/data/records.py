"""The voxel record format: one `tf.train.Example` per rendered view.

Features of every example (`FORMAT_VERSION` 1):

| key                | type        | content                                          |
|--------------------|-------------|--------------------------------------------------|
| `image`            | bytes       | PNG, uint8 RGB `[S, S, 3]`                       |
| `mask`             | bytes       | PNG, uint8 gray `[S, S]`, 255 = silhouette       |
| `image_size`       | int64       | S                                                |
| `intrinsics`       | float x 9   | K, row-major, pixels of the S x S image          |
| `extrinsics`       | float x 12  | [R | t] row-major, X_cam = R X_world + t          |
| `near_far`         | float x 2   | depth range of the frustum grids                 |
| `azimuth`, `elevation` | float   | view angles in degrees (NaN if unknown)          |
| `synset`, `model_id` | bytes     | ShapeNet ids                                     |
| `view`             | int64       | view index within the model                      |
| `frustum/<R>`      | bytes       | voxels `[R, R, R]` (row, column, depth bin)      |
| `world/<R>`        | bytes       | voxels `[R, R, R]` (x, y, z) (optional)          |
| `world_bounds`     | float x 6   | lower (3), upper (3) world corners of world grids |
| `depth`            | bytes       | optional: zlib(float32 `[S, S]` little-endian)   |

Voxel grids are bool arrays flattened in C order, bit-packed with
`np.packbits` (big bit order: the first cell is the most significant bit of
the first byte) and zlib-compressed (`zlib.compress`, RFC 1950 with header):
`pack_voxels` / `unpack_voxels` here and the tf.data reader of
`ige_tf.voxel.data.pipeline` decode them bit for bit.

Floats are stored as float32 (`tf.train.FloatList`).

This module imports TensorFlow only inside the functions that need it, so
data-preparation worker processes stay light.
"""
import dataclasses
import io
import zlib

import numpy as np
import PIL.Image

from ige_tf.data import records_check

FORMAT_VERSION = 1
ZLIB_LEVEL = 6


def frustum_key(resolution):
  return f"frustum/{int(resolution)}"


def world_key(resolution):
  return f"world/{int(resolution)}"


def pack_voxels(grid, level=ZLIB_LEVEL):
  """Bit-packs and zlib-compresses a boolean grid.

  Args:
    grid: bool (or 0/1) array of any shape; flattened in C order.
    level: zlib compression level.

  Returns:
    bytes.
  """
  bits = np.packbits(np.asarray(grid, dtype=bool).ravel())
  return zlib.compress(bits.tobytes(), level)


def unpack_voxels(data, shape):
  """Inverse of `pack_voxels`: bool array of `shape`.

  Raises:
    ValueError: the data do not hold `prod(shape)` cells.
  """
  shape = tuple(int(s) for s in shape)
  size = int(np.prod(shape))
  bits = np.frombuffer(zlib.decompress(data), dtype=np.uint8)
  if len(bits) != (size + 7) // 8:
    raise ValueError(f"packed voxels hold {len(bits)} bytes, {shape} needs {(size + 7) // 8}")
  return np.unpackbits(bits, count=size).astype(bool).reshape(shape)


def encode_png(image):
  """PNG bytes of a uint8 `[H, W]` (gray) or `[H, W, 3|4]` image (deterministic)."""
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  if image.dtype != np.uint8:
    raise ValueError(f"encode_png expects uint8 or bool, got {image.dtype}")
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
  return buffer.getvalue()


def decode_png(data):
  """uint8 `[H, W]` or `[H, W, C]` from PNG bytes."""
  with PIL.Image.open(io.BytesIO(data)) as image:
    return np.asarray(image).copy()


@dataclasses.dataclass
class ViewExample:
  """One view of one model, as stored.

  Attributes:
    synset: str, 8-digit synset id.
    model_id: str.
    view: int.
    image: uint8 `[S, S, 3]`.
    mask: bool `[S, S]` rendered silhouette.
    intrinsics: float `[3, 3]`.
    extrinsics: float `[3, 4]`.
    near_far: float `[2]`.
    frustum: dict R -> bool `[R, R, R]`.
    world: dict R -> bool `[R, R, R]` (may be empty).
    azimuth: float degrees (NaN if unknown).
    elevation: float degrees (NaN if unknown).
    depth: float32 `[S, S]` or None.
    world_bounds: float `[2, 3]` lower and upper world corners covered by
      the world grids ([-0.5, 0.5]^3 for ShapeNet; the binvox bounds for
      3D-R2N2 data).
  """
  synset: str
  model_id: str
  view: int
  image: np.ndarray
  mask: np.ndarray
  intrinsics: np.ndarray
  extrinsics: np.ndarray
  near_far: np.ndarray
  frustum: dict
  world: dict = dataclasses.field(default_factory=dict)
  azimuth: float = float("nan")
  elevation: float = float("nan")
  depth: np.ndarray = None
  world_bounds: np.ndarray = dataclasses.field(
      default_factory=lambda: np.array([[-0.5] * 3, [0.5] * 3]))


def to_features(example, level=ZLIB_LEVEL):
  """Encodes a `ViewExample` as plain Python feature values (no TensorFlow).

  Returns:
    dict key -> ("bytes" | "float" | "int", list of values), picklable, to be
    turned into a `tf.train.Example` by `serialize`.
  """
  image = np.asarray(example.image)
  size = image.shape[0]
  if image.shape != (size, size, 3) or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [S, S, 3], got {image.dtype} {image.shape}")
  mask = np.asarray(example.mask, dtype=bool)
  if mask.shape != (size, size):
    raise ValueError(f"mask must be bool [{size}, {size}], got {mask.shape}")
  features = {
      "image": ("bytes", [encode_png(image)]),
      "mask": ("bytes", [encode_png(mask)]),
      "image_size": ("int", [size]),
      "intrinsics": ("float", np.asarray(example.intrinsics, np.float64).reshape(9).tolist()),
      "extrinsics": ("float", np.asarray(example.extrinsics, np.float64).reshape(12).tolist()),
      "near_far": ("float", np.asarray(example.near_far, np.float64).reshape(2).tolist()),
      "azimuth": ("float", [float(example.azimuth)]),
      "elevation": ("float", [float(example.elevation)]),
      "synset": ("bytes", [example.synset.encode()]),
      "model_id": ("bytes", [example.model_id.encode()]),
      "view": ("int", [int(example.view)]),
      "world_bounds": ("float", np.asarray(example.world_bounds, np.float64).reshape(6).tolist()),
  }
  for resolution, grid in sorted(example.frustum.items()):
    _check_grid(grid, resolution, "frustum")
    features[frustum_key(resolution)] = ("bytes", [pack_voxels(grid, level)])
  for resolution, grid in sorted(example.world.items()):
    _check_grid(grid, resolution, "world")
    features[world_key(resolution)] = ("bytes", [pack_voxels(grid, level)])
  if example.depth is not None:
    depth = np.asarray(example.depth, dtype="<f4")
    features["depth"] = ("bytes", [zlib.compress(depth.tobytes(), level)])
  return features


def _check_grid(grid, resolution, name):
  shape = np.shape(grid)
  if shape != (resolution,) * 3:
    raise ValueError(f"{name} grid for R={resolution} has shape {shape}")


def serialize(features):
  """Serialized `tf.train.Example` bytes from `to_features` output."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {}
  for key, (kind, values) in features.items():
    if kind == "bytes":
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif kind == "float":
      feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    elif kind == "int":
      feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    else:
      raise ValueError(f"unknown feature kind {kind!r} for {key!r}")
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(serialized):
  """Decodes serialized example bytes to a `ViewExample` with numpy arrays.

  Floats come back as float32 values (widened to float64 arrays), voxels and
  images exactly as written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature

  def bytes_of(key):
    return feature[key].bytes_list.value[0]

  def floats(key):
    return np.asarray(feature[key].float_list.value, np.float64)

  frustum, world = {}, {}
  for key in feature:
    if key.startswith("frustum/") or key.startswith("world/"):
      kind, res = key.split("/")
      res = int(res)
      grid = unpack_voxels(bytes_of(key), (res,) * 3)
      (frustum if kind == "frustum" else world)[res] = grid
  depth = None
  size = int(feature["image_size"].int64_list.value[0])
  if "depth" in feature:
    depth = np.frombuffer(zlib.decompress(bytes_of("depth")), "<f4").reshape(size, size)
  return ViewExample(
      synset=bytes_of("synset").decode(),
      model_id=bytes_of("model_id").decode(),
      view=int(feature["view"].int64_list.value[0]),
      image=decode_png(bytes_of("image")),
      mask=decode_png(bytes_of("mask")) > 127,
      intrinsics=floats("intrinsics").reshape(3, 3),
      extrinsics=floats("extrinsics").reshape(3, 4),
      near_far=floats("near_far"),
      frustum=dict(sorted(frustum.items())),
      world=dict(sorted(world.items())),
      azimuth=float(floats("azimuth")[0]),
      elevation=float(floats("elevation")[0]),
      depth=depth,
      world_bounds=(floats("world_bounds").reshape(2, 3) if "world_bounds" in feature
                    else np.array([[-0.5] * 3, [0.5] * 3])),
  )


def read_tfrecord(path):
  """Yields the serialized examples of one TFRecord file (eager).

  Raises:
    records_check.ShardError: a corrupt record (names the file and offset).
  """
  yield from records_check.read_checked(path)
