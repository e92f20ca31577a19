"""TFRecord schema of prepared Human3.6M examples (one per frame and camera).

Every `tf.train.Example` holds:

  key         type          shape  content
  pose_2d     float32 list   32    16 MPII16 joints (x, y) in pixels
  pose_3d     float32 list   51    17 H36M17 joints (x, y, z), camera frame,
                                   metres; index 0 is Human3.6M's pelvis joint
  f           float32 list    2    focal lengths (fx, fy), pixels
  c           float32 list    2    principal point (cx, cy), pixels
  k           float32 list    3    radial distortion (k1, k2, k3)
  p           float32 list    2    tangential distortion (p1, p2)
  subject     bytes           1    e.g. b"S9"
  action      bytes           1    e.g. b"Walking" (take number removed)
  sequence    bytes           1    e.g. b"Walking 1" (as the 3D file name)
  camera      bytes           1    e.g. b"54138969"
  frame       int64           1    frame index in the original sequence
"""
import numpy as np
import tensorflow as tf

from ige_tf.data import records_check

FLOAT_FEATURES = {"pose_2d": 32, "pose_3d": 51, "f": 2, "c": 2, "k": 3,
                  "p": 2}
STRING_FEATURES = ("subject", "action", "sequence", "camera")
INT_FEATURES = ("frame",)

FEATURE_SPEC = {
    **{k: tf.io.FixedLenFeature([n], tf.float32)
       for k, n in FLOAT_FEATURES.items()},
    **{k: tf.io.FixedLenFeature([], tf.string) for k in STRING_FEATURES},
    **{k: tf.io.FixedLenFeature([], tf.int64) for k in INT_FEATURES},
}

SHAPES = {"pose_2d": (16, 2), "pose_3d": (17, 3), "f": (2,), "c": (2,),
          "k": (3,), "p": (2,)}


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(
      value=np.asarray(values, np.float32).reshape(-1)))


def _bytes(value):
  if isinstance(value, str):
    value = value.encode("utf-8")
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_example(pose_2d, pose_3d, f, c, k, p, subject, action, sequence,
                   camera, frame):
  """Serializes one example.

  Args:
    pose_2d: `[16, 2]` pixels (MPII16).
    pose_3d: `[17, 3]` metres, camera frame (H36M17).
    f, c: `[2]`; k: `[3]`; p: `[2]`.
    subject, action, sequence, camera: str.
    frame: int.

  Returns:
    bytes, a serialized `tf.train.Example`.

  Raises:
    ValueError: an array of the wrong size.
  """
  floats = {"pose_2d": pose_2d, "pose_3d": pose_3d, "f": f, "c": c, "k": k,
            "p": p}
  feature = {}
  for key, value in floats.items():
    value = np.asarray(value, np.float32).reshape(-1)
    if value.size != FLOAT_FEATURES[key]:
      raise ValueError(f"encode_example: {key} has {value.size} values, "
                       f"expected {FLOAT_FEATURES[key]}")
    feature[key] = _floats(value)
  for key, value in (("subject", subject), ("action", action),
                     ("sequence", sequence), ("camera", camera)):
    feature[key] = _bytes(value)
  feature["frame"] = tf.train.Feature(int64_list=tf.train.Int64List(
      value=[int(frame)]))
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def parse_batch(serialized):
  """Parses a batch of serialized examples.

  Args:
    serialized: string `[B]`.

  Returns:
    dict: pose_2d float32 `[B, 16, 2]`, pose_3d float32 `[B, 17, 3]`, f, c
    `[B, 2]`, k `[B, 3]`, p `[B, 2]`, subject/action/sequence/camera string
    `[B]`, frame int64 `[B]`.
  """
  parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
  for key, shape in SHAPES.items():
    parsed[key] = tf.reshape(parsed[key], (-1,) + shape)
  return parsed


def read_records(paths):
  """Reads record files into numpy arrays, in file order (for tests, tools).

  Args:
    paths: a path or a list of paths.

  Returns:
    dict of numpy arrays as `parse_batch` (strings decoded to `str`).

  Raises:
    records_check.ShardError: a corrupt file (names it).
  """
  if isinstance(paths, str):
    paths = [paths]
  out = {k: [] for k in FEATURE_SPEC}
  batches = (batch for path in paths
             for batch in records_check.read_checked(path, batch_size=4096))
  for batch in batches:
    parsed = parse_batch(batch)
    for key, value in parsed.items():
      out[key].append(value.numpy())
  result = {}
  for key, chunks in out.items():
    if chunks:
      value = np.concatenate(chunks)
    else:
      shape = (0,) + SHAPES.get(key, ())
      value = np.zeros(shape, np.float32 if key in SHAPES else object)
    if key in STRING_FEATURES:
      value = np.array([v.decode("utf-8") for v in value], dtype=object)
    result[key] = value
  return result
