"""ige_tf.atomic: a file holds its old content or all of the new; failures
leave no temporary; importable without TensorFlow."""
import json
import math
import os
import subprocess
import sys

import pytest

from ige_tf import atomic


def test_writes_replace_the_whole_file_and_leave_no_temporary(tmp_path):
  path = tmp_path / "out.json"
  atomic.write_text(path, "old\n")
  assert path.read_text() == "old\n"
  atomic.write_json(path, {"b": 1, "a": [1.5, "x"]}, sort_keys=True)
  assert path.read_text() == '{\n "a": [\n  1.5,\n  "x"\n ],\n "b": 1\n}\n'
  atomic.write_bytes(str(path), b"\x00\xff")
  assert path.read_bytes() == b"\x00\xff"
  atomic.write_text(path, "é\n")
  assert path.read_bytes() == "é\n".encode("utf-8")
  assert os.listdir(tmp_path) == ["out.json"]


def test_a_failed_write_keeps_the_old_content_and_removes_the_temporary(
    tmp_path):
  path = tmp_path / "metrics.json"
  atomic.write_json(path, {"loss": 1.0})
  with pytest.raises(TypeError, match="not JSON serializable"):
    atomic.write_json(path, {"loss": object()})
  with pytest.raises(ValueError, match="Out of range float"):
    atomic.write_json(path, {"loss": math.nan}, allow_nan=False)
  with pytest.raises(RuntimeError, match="writer died"):
    with atomic.replacing(path) as tmp:
      with open(tmp, "w") as f:
        f.write('{"loss": 2')   # half of a new file
      raise RuntimeError("writer died")
  assert json.loads(path.read_text()) == {"loss": 1.0}
  assert os.listdir(tmp_path) == ["metrics.json"]
  # A first write that fails leaves nothing at all.
  with pytest.raises(RuntimeError):
    with atomic.replacing(tmp_path / "new.bin") as tmp:
      open(tmp, "wb").close()
      raise RuntimeError
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_temporary_names(tmp_path):
  pid = os.getpid()
  assert atomic.temporary_path("a/b.json") == f"a/b.json.tmp-{pid}"
  assert atomic.temporary_path("fig.png", keep_suffix=True) == (
      f"fig.png.tmp-{pid}.png")
  # Writers that choose the format by the name (np.savez adds ".npz" to a
  # name without it) see the suffix with keep_suffix.
  path = str(tmp_path / "example.npz")
  np = pytest.importorskip("numpy")
  with atomic.replacing(path, keep_suffix=True) as tmp:
    np.savez(tmp, x=np.arange(3))
  with np.load(path) as data:
    assert data["x"].tolist() == [0, 1, 2]
  assert os.listdir(tmp_path) == ["example.npz"]


@pytest.mark.parametrize("modules", [
    "ige_tf.atomic, ige_tf.data.record_writer, ige_tf.data.workers, "
    "ige_tf.train.run_files", "ige_tf.bin.table1", "ige_tf.bin.table_voxel"])
def test_light_modules_do_not_import_tensorflow(repo_dir, modules):
  """The atomic writes, the record writer's module and the result-reading
  tools import without TensorFlow (worker processes, bin/table1.py). (The
  programs define absl flags: one program per process.)"""
  code = (f"import sys; import {modules}; loaded = [m for m in ("
          "'tensorflow', 'keras') if m in sys.modules]; assert not loaded, "
          "loaded")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=repo_dir))
  assert result.returncode == 0, result.stderr
