"""Atomic file writes: a file holds either its old content or all of the new.

Every writer of ige_tf that creates a file a user or a later run relies on
(records, sidecars, manifests, run records, metrics, tables, figures) goes
through this module:

  write_text(path, text)      str, UTF-8
  write_bytes(path, data)     bytes
  write_json(path, value)     `json.dumps(value, indent=1)` + newline
  with replacing(path) as tmp: ...   for writers that need a file name
                              (TFRecordWriter, h5py, `fig.savefig`)

How: the content goes to `<path>.tmp-<pid>` in the same folder, is flushed
to disk (`os.fsync`) and moved over `path` with `os.replace` (atomic on
POSIX and Windows); the folder is then synced (POSIX) so the rename itself
survives a power cut. On any error the temporary file is removed and the
error propagates; `path` is untouched. Temporaries of killed processes
(`*.tmp-PID`) are removed by `ige_tf.data.records_check.
remove_stale_temporaries`.

Parent folders are not created: callers decide where files may go.

This module depends on the standard library only (no TensorFlow, no
numpy), so light tools (`bin/table1.py`) and worker processes can use it.
"""
import contextlib
import json
import os

TMP_INFIX = ".tmp-"


def temporary_path(path, keep_suffix=False):
  """`<path>.tmp-<pid>`: the temporary name of `path` for this process.

  With `keep_suffix`, the name ends in the suffix of `path` as well
  (`fig.png` -> `fig.png.tmp-<pid>.png`), for writers that pick the format
  from the name.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1] if keep_suffix else ""
  return f"{path}{TMP_INFIX}{os.getpid()}{suffix}"


def _fsync_file(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_folder(path):
  """Syncs the folder holding `path` (POSIX; a no-op where folders cannot
  be opened, e.g. Windows)."""
  try:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def replacing(path, keep_suffix=False):
  """Yields a temporary file name; on a clean exit it replaces `path`.

  The caller writes the complete file to the yielded name (and closes it).
  The file is then synced and renamed over `path`. If the block raises, the
  temporary file is removed and `path` keeps its old content (or stays
  absent).

  Args:
    path: the final file (str or path-like).
    keep_suffix: the temporary name ends in `path`'s suffix too (for
      `fig.savefig`, `np.savez`, which pick the format or add a suffix by
      the name); see `temporary_path`.

  Yields:
    str, the temporary file name in the same folder.
  """
  path = os.fspath(path)
  tmp = temporary_path(path, keep_suffix)
  try:
    yield tmp
    _fsync_file(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  _fsync_folder(path)


def write_bytes(path, data):
  """Writes `data` (bytes) to `path` atomically."""
  with replacing(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path, text):
  """Writes `text` (str, UTF-8) to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path, value, indent=1, sort_keys=False, allow_nan=True):
  """Writes `json.dumps(value, ...)` and a newline to `path` atomically.

  Args:
    path: the file.
    value: a JSON-serializable value.
    indent, sort_keys, allow_nan: as for `json.dumps` (`allow_nan=False`
      refuses NaN and infinities, for strict JSON).

  Raises:
    TypeError / ValueError: `value` is not serializable; nothing is written.
  """
  write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys,
                              allow_nan=allow_nan) + "\n")
