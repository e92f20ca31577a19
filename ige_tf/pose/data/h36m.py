"""Readers for Human3.6M in the two layouts users have (see docs/data_pose.md).

* Martinez et al.'s `h36m/` folder (3d-pose-baseline's `h36m.zip`):
  `cameras.h5`, `S*/MyPoses/3D_positions/<Sequence>.h5` (dataset
  `3D_positions`, `(96, N)` float64 mm, world frame) and detections
  `S*/StackedHourglass/<Sequence>.<camera>.h5` (dataset `poses`, `(N, 16, 2)`
  pixels, MPII order), fine-tuned ones in `StackedHourglassFineTuned240`;
  detection folders are also accepted under `S*/MyPoses/3D_positions/`.
* VideoPose3D's npz files: `data_3d_h36m.npz` (`positions_3d`:
  `{subject: {sequence: (N, 32, 3) metres}}`) and `data_2d_h36m_<source>.npz`
  (`positions_2d`: `{subject: {sequence: [4 x (N, J, 2) pixels]}}` plus
  `metadata`). Cameras still come from `cameras.h5`.

Every reader raises `H36MDataError`, whose message names the file and the
problem, for unreadable or malformed input; deciding what to skip is the job
of the caller (`ige_tf.pose.data.prepare`).
"""
import dataclasses
import os
import re

import h5py
import numpy as np

from ige_tf.data import safe_npz
from ige_tf.pose import skeleton

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
SUBJECTS = TRAIN_SUBJECTS + TEST_SUBJECTS
SPLITS = {"train": TRAIN_SUBJECTS, "test": TEST_SUBJECTS}
CAMERAS = ("54138969", "55011271", "58860488", "60457274")
ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning",
           "Photo", "Posing", "Purchases", "Sitting", "SittingDown", "Smoking",
           "Waiting", "WalkDog", "Walking", "WalkTogether")
# Names some copies use for the same actions.
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}

# Detection folders of the Martinez layout, by 2D source name.
DETECTION_FOLDERS = {"sh": "StackedHourglass",
                     "sh_ft": "StackedHourglassFineTuned240"}
POSITIONS_3D_DIR = os.path.join("MyPoses", "3D_positions")


class H36MDataError(ValueError):
  """Malformed or unreadable Human3.6M input; the message names the file."""

  def __init__(self, path, problem):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{path}: {problem}")


def split_of(subject):
  """"train" or "test" for a subject id like "S9"."""
  for split, subjects in SPLITS.items():
    if subject in subjects:
      return split
  raise ValueError(f"unknown Human3.6M subject {subject!r}; known {SUBJECTS}")


def canonical_sequence_name(name):
  """Sequence name with spaces as in 3D files: "Walking_1" -> "Walking 1"."""
  return name.replace("_", " ").strip()


def action_of(sequence):
  """Action of a sequence: "Walking 1" -> "Walking", "TakingPhoto" -> "Photo".

  Returns the name without its take number, mapped through `ACTION_ALIASES`.
  Unknown actions are returned unchanged (their pipeline action id is -1).
  """
  name = canonical_sequence_name(sequence)
  match = re.fullmatch(r"(.*?)(?:\s+\d+)?", name)
  action = match.group(1) if match else name
  return ACTION_ALIASES.get(action, action)


def _open_h5(path):
  if not os.path.exists(path):
    raise H36MDataError(path, "file not found")
  try:
    return h5py.File(path, "r")
  except OSError as e:
    raise H36MDataError(path, f"cannot read HDF5 file (truncated or not "
                        f"HDF5): {e}") from e


def _read_dataset(path, key):
  with _open_h5(path) as h5:
    if key not in h5:
      raise H36MDataError(path, f"no dataset {key!r} (found {list(h5.keys())})")
    try:
      return np.asarray(h5[key][()])
    except (OSError, KeyError, ValueError) as e:
      raise H36MDataError(path, f"cannot read dataset {key!r} (truncated "
                          f"file?): {e}") from e


def load_cameras(path):
  """Reads `cameras.h5`: every `subject<n>/camera<k>` group.

  `R` is stored transposed in the file and returned un-transposed, so
  `X_cam = R (X_world - T)`; camera k (1..4) is `CAMERAS[k - 1]`, checked
  against the group's `Name` (ASCII codes) when present.

  Args:
    path: the `cameras.h5` file.

  Returns:
    dict `(subject "S<n>", camera id) -> camera.Camera`.

  Raises:
    H36MDataError: missing or unreadable file, missing parameters, wrong
      shapes, or a `Name` that disagrees with the group's position.
  """
  # Imported here: `camera` imports TensorFlow, and this module's constants
  # (ACTIONS, SUBJECTS) serve TF-free tools (bin/table1.py).
  from ige_tf.pose import camera as camera_lib  # pylint: disable=g-import-not-at-top
  cameras = {}
  with _open_h5(path) as h5:
    try:
      subject_keys = [k for k in h5.keys() if re.fullmatch(r"subject\d+", k)]
    except OSError as e:
      raise H36MDataError(path, f"cannot read HDF5 file: {e}") from e
    if not subject_keys:
      raise H36MDataError(path, "no 'subject<n>' groups; not a Human3.6M "
                          "cameras.h5")
    for subject_key in subject_keys:
      subject = "S" + subject_key[len("subject"):]
      for k, camera_id in enumerate(CAMERAS, start=1):
        name = f"{subject_key}/camera{k}"
        if name not in h5:
          continue
        group = h5[name]
        params = {}
        for key, size in (("R", 9), ("T", 3), ("f", 2), ("c", 2), ("k", 3),
                          ("p", 2)):
          if key not in group:
            raise H36MDataError(path, f"{name} has no {key!r}")
          try:
            value = np.asarray(group[key][()], np.float64)
          except (OSError, ValueError) as e:
            raise H36MDataError(path, f"cannot read {name}/{key}: {e}") from e
          if value.size != size:
            raise H36MDataError(path, f"{name}/{key} has shape {value.shape}, "
                                f"expected {size} values")
          params[key] = value
        if "Name" in group:
          codes = np.asarray(group["Name"][()]).reshape(-1)
          stored = "".join(chr(int(c)) for c in codes).strip("\x00 ")
          if stored and stored != camera_id:
            raise H36MDataError(path, f"{name} is named {stored!r}, expected "
                                f"{camera_id!r} (camera order {CAMERAS})")
        cameras[(subject, camera_id)] = camera_lib.Camera(
            R=params["R"].reshape(3, 3).T, T=params["T"], f=params["f"],
            c=params["c"], k=params["k"], p=params["p"], name=camera_id)
  return cameras


def read_positions_3d(path):
  """Reads a Martinez 3D file: dataset `3D_positions`, `(96, N)`, mm, world.

  Returns:
    float64 `[N, 32, 3]` millimetres, world frame (may contain NaN; see
    `nonfinite_frames`).

  Raises:
    H36MDataError: unreadable file, missing dataset, or not `(96, N)`.
  """
  data = _read_dataset(path, "3D_positions")
  if data.ndim != 2 or data.shape[0] != 32 * 3:
    raise H36MDataError(path, f"'3D_positions' has shape {data.shape}, "
                        "expected (96, N) (32 joints x 3 coordinates)")
  return data.T.reshape(-1, 32, 3).astype(np.float64)


def read_detections(path):
  """Reads a stacked-hourglass detection file: dataset `poses`, `(N, 16, 2)`.

  Returns:
    float64 `[N, 16, 2]` pixels, MPII16 order.

  Raises:
    H36MDataError: unreadable file, missing dataset, or not `(N, 16, 2)`.
  """
  data = _read_dataset(path, "poses")
  if data.ndim != 3 or data.shape[1:] != (16, 2):
    raise H36MDataError(path, f"'poses' has shape {data.shape}, expected "
                        "(N, 16, 2) (16 MPII joints, pixels)")
  return data.astype(np.float64)


def nonfinite_frames(points):
  """Indices of frames with any NaN/inf coordinate: `[N, ...]` -> int `[M]`."""
  points = np.asarray(points)
  return np.nonzero(~np.all(np.isfinite(points.reshape(len(points), -1)),
                            axis=1))[0]


@dataclasses.dataclass
class MartinezLayout:
  """The `h36m/` folder of 3d-pose-baseline.

  Attributes:
    h36m_dir: folder with `cameras.h5` and `S*/`.
    detections_dir: root of the detection folders (`S*/StackedHourglass...`);
      defaults to `h36m_dir`. The fine-tuned detections come in their own
      archive, so point this at wherever it was extracted.
  """
  h36m_dir: str
  detections_dir: str = None

  def __post_init__(self):
    if not os.path.isdir(self.h36m_dir):
      raise H36MDataError(self.h36m_dir, "Human3.6M folder not found")
    if self.detections_dir is None:
      self.detections_dir = self.h36m_dir

  def positions_3d_dir(self, subject):
    return os.path.join(self.h36m_dir, subject, POSITIONS_3D_DIR)

  def sequences(self, subject):
    """Sorted sequence names (with spaces) of a subject's 3D files.

    Raises:
      H36MDataError: the subject's 3D folder does not exist.
    """
    folder = self.positions_3d_dir(subject)
    if not os.path.isdir(folder):
      raise H36MDataError(folder, "3D positions folder not found")
    names = [f[:-len(".h5")] for f in os.listdir(folder)
             if f.endswith(".h5") and os.path.isfile(os.path.join(folder, f))]
    return sorted(canonical_sequence_name(n) for n in names)

  def positions_3d_path(self, subject, sequence):
    folder = self.positions_3d_dir(subject)
    for name in (sequence, sequence.replace(" ", "_")):
      path = os.path.join(folder, name + ".h5")
      if os.path.exists(path):
        return path
    return os.path.join(folder, sequence + ".h5")

  def positions_3d(self, subject, sequence):
    """float64 `[N, 32, 3]` mm, world frame."""
    return read_positions_3d(self.positions_3d_path(subject, sequence))

  def detection_candidates(self, subject, sequence, camera, source):
    """Paths searched, in order, for one detection file."""
    folder = DETECTION_FOLDERS[source]
    names = [f"{sequence.replace(' ', '_')}.{camera}.h5",
             f"{sequence}.{camera}.h5"]
    roots = [os.path.join(self.detections_dir, subject, folder),
             os.path.join(self.detections_dir, subject, POSITIONS_3D_DIR,
                          folder)]
    return [os.path.join(root, name) for root in roots
            for name in dict.fromkeys(names)]

  def detection_path(self, subject, sequence, camera, source):
    """The detection file if one exists, else None."""
    for path in self.detection_candidates(subject, sequence, camera, source):
      if os.path.exists(path):
        return path
    return None


def _load_npz_dict(path, key):
  """`(value, metadata)` of a VideoPose3D npz file, via `safe_npz` (object
  arrays through a restricted unpickler: a file that would run code is
  refused)."""
  if not os.path.exists(path):
    raise H36MDataError(path, "file not found")
  try:
    names = safe_npz.npz_names(path)
    if key not in names:
      raise H36MDataError(path, f"no key {key!r} (found {names})")
    arrays = safe_npz.load_npz(
        path, [key] + (["metadata"] if "metadata" in names else []))
    value = arrays[key]
    metadata = arrays["metadata"].item() if "metadata" in arrays else {}
  except H36MDataError:
    raise
  except safe_npz.UnsafePickleError as e:
    raise H36MDataError(path, e.problem) from None
  except Exception as e:  # zipfile / pickle errors of a damaged file
    raise H36MDataError(path, f"cannot read npz file: {e}") from e
  try:
    value = value.item()
  except ValueError:
    value = None
  if not isinstance(value, dict):
    raise H36MDataError(path, f"{key!r} is not a pickled dict "
                        "{subject: {sequence: array}} (VideoPose3D format)")
  return value, metadata


def npz_2d_skeleton(metadata, num_joints, path):
  """Joint set of a VideoPose3D 2D file from its metadata and joint count.

  16 joints: MPII16 (VideoPose3D's stacked-hourglass files keep SH order);
  17 joints: COCO17 if `metadata["layout_name"]` starts with "coco", else
  H36M17 (`gt`, `cpn_ft_h36m_dbb`, ...).

  Raises:
    H36MDataError: any other joint count.
  """
  layout = str(metadata.get("layout_name", "")).lower()
  if num_joints == 16:
    return skeleton.MPII16
  if num_joints == 17:
    return skeleton.COCO17 if layout.startswith("coco") else skeleton.H36M17
  raise H36MDataError(path, f"2D poses have {num_joints} joints; expected 16 "
                      "(MPII / stacked hourglass) or 17 (H36M or COCO)")


def to_mpii16(points, source_skeleton):
  """2D poses of a supported joint set, `[N, J, 2]` -> MPII16 `[N, 16, 2]`."""
  if source_skeleton is skeleton.MPII16:
    return points
  if source_skeleton is skeleton.COCO17:
    return skeleton.coco17_to_mpii16(points)
  return skeleton.convert(points, source_skeleton, skeleton.MPII16)


_MM_PER_UNIT = {"m": 1000.0, "mm": 1.0}


class VideoPose3DLayout:
  """VideoPose3D's `data_3d_h36m.npz` and optionally a `data_2d_h36m_*.npz`.

  Args:
    npz_3d: path of `data_3d_h36m.npz`, or None to read only 2D poses (e.g.
      3D from the Martinez layout with CPN detections from an npz file).
    npz_2d: path of a 2D file, or None (then only the `gt` source, projected
      from the 3D poses, is available).
    positions_unit: unit of the 3D positions in `npz_3d`: "m" (VideoPose3D's
      files) or "mm".

  Raises:
    H36MDataError: missing or malformed files (wrong keys, not a dict).
  """

  def __init__(self, npz_3d, npz_2d=None, positions_unit="m"):
    if positions_unit not in _MM_PER_UNIT:
      raise ValueError(f"positions_unit must be one of {sorted(_MM_PER_UNIT)}, "
                       f"got {positions_unit!r}")
    self.positions_unit = positions_unit
    self.npz_3d = npz_3d
    self.npz_2d = npz_2d
    self._positions_3d = {}
    if npz_3d is not None:
      positions, _ = _load_npz_dict(npz_3d, "positions_3d")
      self._positions_3d = {
          s: {canonical_sequence_name(a): v for a, v in seqs.items()}
          for s, seqs in positions.items()}
    self._positions_2d = None
    self.metadata_2d = {}
    if npz_2d is not None:
      positions_2d, self.metadata_2d = _load_npz_dict(npz_2d, "positions_2d")
      self._positions_2d = {
          s: {canonical_sequence_name(a): v for a, v in seqs.items()}
          for s, seqs in positions_2d.items()}

  def subjects(self):
    return sorted(self._positions_3d)

  def sequences(self, subject):
    """Sorted sequence names of a subject; H36MDataError if absent."""
    if subject not in self._positions_3d:
      raise H36MDataError(self.npz_3d, f"no subject {subject!r} in "
                          "'positions_3d'")
    return sorted(self._positions_3d[subject])

  def positions_3d(self, subject, sequence):
    """float64 `[N, 32, 3]` in **millimetres** (the file holds metres, or
    `positions_unit`).

    Raises:
      H36MDataError: not an `(N, 32, 3)` array.
    """
    value = np.asarray(self._positions_3d[subject][sequence])
    if value.ndim != 3 or value.shape[1:] != (32, 3):
      raise H36MDataError(self.npz_3d, f"positions_3d[{subject!r}]"
                          f"[{sequence!r}] has shape {value.shape}, expected "
                          "(N, 32, 3)")
    return value.astype(np.float64) * _MM_PER_UNIT[self.positions_unit]

  def has_2d(self, subject, sequence):
    return (self._positions_2d is not None and
            sequence in self._positions_2d.get(subject, {}))

  def positions_2d(self, subject, sequence, camera):
    """2D poses of one camera converted to MPII16, or None if absent.

    Args:
      subject, sequence: keys.
      camera: camera id (position in `CAMERAS` selects the list entry).

    Returns:
      float64 `[N, 16, 2]` pixels, or None when the file has no array for
      this camera (e.g. S11 Directions of the stacked-hourglass files).

    Raises:
      H36MDataError: arrays of the wrong shape or joint count.
    """
    if not self.has_2d(subject, sequence):
      return None
    per_camera = self._positions_2d[subject][sequence]
    index = CAMERAS.index(camera)
    if index >= len(per_camera) or per_camera[index] is None:
      return None
    value = np.asarray(per_camera[index])
    where = f"positions_2d[{subject!r}][{sequence!r}][{index}]"
    if value.ndim != 3 or value.shape[-1] != 2:
      raise H36MDataError(self.npz_2d, f"{where} has shape {value.shape}, "
                          "expected (N, J, 2)")
    source = npz_2d_skeleton(self.metadata_2d, value.shape[1], self.npz_2d)
    return to_mpii16(value.astype(np.float64), source)
