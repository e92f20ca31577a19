"""Reads `.npz` files without running code from them.

`np.load(path, allow_pickle=True)` unpickles object arrays with the standard
unpickler, which calls whatever the file names (an npz downloaded from a
stranger can run `os.system`). `load_npz` reads numeric arrays with
`allow_pickle=False` and object arrays (VideoPose3D's dicts of arrays)
through `RestrictedUnpickler`, which admits only what such files hold:
numpy arrays, dtypes and numpy's reconstruction helpers, and dicts, lists,
tuples, sets, strings, bytes and numbers (built by pickle opcodes, no
import). Anything else is refused with `UnsafePickleError` naming the file
and the refused class, before it is called.
"""
import pickle
import zipfile

import numpy as np

_np_core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1

# (module, name) -> object: all a pickled numpy array or scalar refers to,
# under the module names numpy 1 and numpy 2 write.
_ALLOWED = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
  _ALLOWED[(_module, "_reconstruct")] = _np_core.multiarray._reconstruct
  _ALLOWED[(_module, "scalar")] = _np_core.multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
  _ALLOWED[(_module, "_frombuffer")] = _np_core.numeric._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
for _builtin in (dict, list, tuple, set, frozenset, str, bytes, bytearray, int,
                 float, complex, bool):
  _ALLOWED[("builtins", _builtin.__name__)] = _builtin
  _ALLOWED[("__builtin__", _builtin.__name__)] = _builtin   # protocol 2


class UnsafePickleError(ValueError):
  """A pickle in an npz file refers to something that is not data."""

  def __init__(self, path, refused):
    self.path = str(path)
    self.refused = refused
    self.problem = (f"refused to unpickle {refused}: an npz data file may hold "
                    "only numpy arrays, dtypes, dicts, lists, tuples, strings "
                    "and numbers (the file would run code)")
    super().__init__(f"{path}: {self.problem}")


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the data-only globals of `_ALLOWED`.

  Args:
    file: binary file object holding the pickle.
    path: the file named in errors.
  """

  def __init__(self, file, path):
    super().__init__(file)
    self._path = path

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafePickleError(self._path, f"{module}.{name}") from None


def _read_header(fp):
  version = np.lib.format.read_magic(fp)
  if version == (1, 0):
    return np.lib.format.read_array_header_1_0(fp)
  if version == (2, 0):
    return np.lib.format.read_array_header_2_0(fp)
  raise ValueError(f".npy format version {version} is not supported")


def load_npz(path, names=None):
  """Arrays of an npz file; object arrays through `RestrictedUnpickler`.

  Args:
    path: `.npz` file.
    names: array names to read (None: all).

  Returns:
    dict name -> numpy array (object arrays hold the unpickled values, e.g.
    a 0-d object array holding a dict).

  Raises:
    UnsafePickleError: an object array refers to a class or function that is
      not data (names the file and it).
    KeyError: a requested name is not in the file.
    ValueError / zipfile.BadZipFile / OSError: a damaged file.
  """
  arrays = {}
  with zipfile.ZipFile(path) as archive:
    members = {m[:-len(".npy")]: m for m in archive.namelist()
               if m.endswith(".npy")}
    for name in members if names is None else names:
      if name not in members:
        raise KeyError(name)
      with archive.open(members[name]) as fp:
        _, _, dtype = _read_header(fp)
        if not dtype.hasobject:
          fp.seek(0)
          arrays[name] = np.lib.format.read_array(fp, allow_pickle=False)
          continue
        value = RestrictedUnpickler(fp, path).load()
      if not isinstance(value, np.ndarray):
        raise ValueError(f"{members[name]} holds a {type(value).__name__}, "
                         "not an array")
      arrays[name] = value
  return arrays


def npz_names(path):
  """Array names in an npz file (without reading them)."""
  with zipfile.ZipFile(path) as archive:
    return [m[:-len(".npy")] for m in archive.namelist() if m.endswith(".npy")]
