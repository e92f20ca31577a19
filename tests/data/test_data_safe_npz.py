"""safe_npz: npz data files are read without running code from them."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from ige_tf.data import safe_npz
from ige_tf.pose.data import h36m


class _RunsCommand:
  """Pickles as a call to os.system (what a crafted npz would hold)."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def _videopose3d_like(path, legacy_numpy_names=False):
  """A VideoPose3D-format 3D file: {subject: {sequence: (N, 32, 3) m}};
  with `legacy_numpy_names` its pickle names numpy 1's `numpy.core` module
  (as the published files, written with numpy 1, do)."""
  positions = {"S1": {"Walking 1": np.full((2, 32, 3), 0.5, np.float32)},
               "S9": {"Sitting": np.zeros((3, 32, 3), np.float64)}}
  np.savez(path, positions_3d=positions, metadata={
      "layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": [
          [4, 5, 6], [1, 2, 3]]}, plain=np.arange(4, dtype=np.int16))
  if legacy_numpy_names:
    # numpy 1's np.save: pickle protocol 3, whose GLOBAL opcodes are
    # newline-terminated text, naming `numpy.core.multiarray`.
    with zipfile.ZipFile(path) as archive:
      members = {n: archive.read(n) for n in archive.namelist()}
    array = np.array(positions, dtype=object)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, np.lib.format.header_data_from_array_1_0(array))
    data = pickle.dumps(array, protocol=3)
    assert b"numpy._core.multiarray\n" in data
    members["positions_3d.npy"] = buffer.getvalue() + data.replace(
        b"numpy._core.", b"numpy.core.")
    with zipfile.ZipFile(path, "w") as archive:
      for name, data in members.items():
        archive.writestr(name, data)
  return positions


@pytest.mark.parametrize("legacy", [False, True], ids=["numpy2", "numpy1"])
def test_genuine_videopose3d_npz_loads(tmp_path, legacy):
  path = str(tmp_path / "data_3d_h36m.npz")
  positions = _videopose3d_like(path, legacy_numpy_names=legacy)
  arrays = safe_npz.load_npz(path)
  assert sorted(arrays) == ["metadata", "plain", "positions_3d"]
  loaded = arrays["positions_3d"].item()
  for subject, sequences in positions.items():
    for sequence, value in sequences.items():
      np.testing.assert_array_equal(loaded[subject][sequence], value)
      assert loaded[subject][sequence].dtype == value.dtype
  assert arrays["metadata"].item()["keypoints_symmetry"] == [[4, 5, 6],
                                                             [1, 2, 3]]
  np.testing.assert_array_equal(arrays["plain"], np.arange(4))
  assert h36m.VideoPose3DLayout(path).sequences("S1") == ["Walking 1"]


def test_npz_whose_pickle_runs_code_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / "marker"
  path = str(tmp_path / "data_3d_h36m.npz")
  np.savez(path, positions_3d=np.array(_RunsCommand(f"touch {marker}"),
                                       dtype=object))
  with pytest.raises(safe_npz.UnsafePickleError,
                     match=r"data_3d_h36m.npz: refused to unpickle "
                     r"(posix|os)\.system"):
    safe_npz.load_npz(path)
  with pytest.raises(h36m.H36MDataError,
                     match=r"data_3d_h36m.npz: refused to unpickle "
                     r"(posix|os)\.system"):
    h36m.VideoPose3DLayout(path)
  assert not marker.exists()
  # The same file really would have run the command when unpickled freely.
  with np.load(path, allow_pickle=True) as npz:
    npz["positions_3d"]
  assert marker.exists()


def test_other_classes_are_refused(tmp_path):
  path = str(tmp_path / "x.npz")
  np.savez(path, positions_3d=np.array({"S1": io.BytesIO(b"")}, dtype=object))
  with pytest.raises(safe_npz.UnsafePickleError,
                     match=r"x.npz: refused to unpickle _io.BytesIO"):
    safe_npz.load_npz(path)
