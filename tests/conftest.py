"""Shared test setup: quiet TensorFlow, a clean gin config per test, and
helpers every part's tests use (as fixtures: tests/ is not a package)."""
import fcntl
import functools
import json
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's CPU backend without LLVM's optimization passes: the same HLO (every
# HLO pass still runs, so what compiles and what it computes are what a run
# gets), only the machine code generation is cheaper (the IGE-MN XLA-step
# test: 30-38 % less CPU), and the tests' kernels are too small for the
# slower code to matter (docs/decisions.md, "The test suite"). The
# binaries the tests start inherit it; a caller's own setting is kept.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [
      os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"]))

import struct  # noqa: E402

import gin  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The order of the tests under `pytest -n 2 --dist worksteal` (pytest.ini):
# the scheduler hands the first half of the collected tests to one worker
# and the second half to the other, and a worker that runs out takes the
# last tests of the other's queue. Each half starts with the tests of the
# expensive shared builds (`build_once`) it alone needs, so neither worker
# waits for the other's build: the voxel half with the traced IGE-MN run
# (test_voxel_problem_train.py), the pose half with the pose runs (the
# lifter's trained IGE-4 first); then the long tests; the queues end on
# the short tests of no shared build (tests/bin, core, data), which the
# other worker may take. Paths relative to tests/; a test matches the first
# prefix it starts with.
XDIST_HALVES = (
    ("voxel/test_voxel_problem_train.py", "voxel/test_voxel_problem_configs.py",
     "voxel/"),
    ("pose/test_pose_lifter.py", "pose/", "train/test_precision_xla.py",
     "train/test_distributed.py", "train/"),
)


def _xdist_order(paths):
  """The run order of tests at `paths` (str, relative to tests/) for two
  xdist workers (see XDIST_HALVES): a list of indices into `paths`, the
  first `len(paths) // 2` of them the first worker's queue."""
  ranked = {}  # (half, rank) -> indices, in collection order
  rest = []
  for i, path in enumerate(paths):
    for half, prefixes in enumerate(XDIST_HALVES):
      rank = next((r for r, p in enumerate(prefixes) if path.startswith(p)),
                  None)
      if rank is not None:
        ranked.setdefault((half, rank), []).append(i)
        break
    else:
      rest.append(i)
  halves = [[i for key in sorted(ranked) if key[0] == half
             for i in ranked[key]] for half in range(len(XDIST_HALVES))]
  # The short tests of no shared build fill the first half up to its size.
  fill = max(0, len(paths) // 2 - len(halves[0]))
  return halves[0] + rest[:fill] + halves[1] + rest[fill:]


def pytest_collection_modifyitems(config, items):
  """Under `pytest -n 2`, reorders the tests (`_xdist_order`); otherwise
  the collection order stands."""
  del config
  if os.environ.get("PYTEST_XDIST_WORKER_COUNT") != "2":
    return
  tests_dir = os.path.join(REPO, "tests")
  paths = [os.path.relpath(str(item.path), tests_dir).replace(os.sep, "/")
           for item in items]
  items[:] = [items[i] for i in _xdist_order(paths)]


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def repo_dir():
  return REPO


def _build_once(tmp_path_factory, name, build):
  """See the `build_once` fixture."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the run's directory, above the workers' own
  root = base / "built_once"
  root.mkdir(exist_ok=True)
  path, done = root / name, root / f"{name}.json"
  start = time.time()
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    waited, built = time.time() - start, None
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # a failed earlier attempt
      path.mkdir()
      value = build(str(path))
      done.write_text(json.dumps({"value": value}))
      built = time.time() - start - waited
    if built is not None or waited > 0.5:
      with open(root / "log.jsonl", "a") as log:
        log.write(json.dumps({
            "name": name, "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "waited_s": round(waited, 1),
            "built_s": built if built is None else round(built, 1)}) + "\n")
  return str(path), json.loads(done.read_text())["value"]


@pytest.fixture(scope="session")
def build_once(tmp_path_factory):
  """`build_once(name, build) -> (path, value)`: a generated data set built
  once per test run.

  `build(path)` fills the new, empty directory `path` (str, named `name`)
  and returns a JSON-serializable value. Under pytest-xdist the workers
  share one build: the first to take the file lock builds, the others wait
  for it and reuse it. `value` is what `build` returned, read back from
  JSON (tuples come back as lists). Tests must not modify the directory.

  Every build, and every wait of more than 0.5 s for another worker's, is
  a line of `built_once/log.jsonl` in the run's temporary directory
  (`/tmp/pytest-of-<user>/pytest-current/` after the run): name, worker,
  waited_s, built_s (wall seconds; built_s null for a wait).
  """
  return functools.partial(_build_once, tmp_path_factory)


def _config_round_trip(layer):
  """Rebuilds `layer` from its config, directly and through its registered
  name (`keras.saving` serialization); asserts both clones have the same
  config and class. Returns the direct clone."""
  import keras  # pylint: disable=import-outside-toplevel
  config = layer.get_config()
  clone = layer.__class__.from_config(config)
  assert clone.get_config() == config
  revived = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(revived) is type(layer)
  assert revived.get_config() == config
  return clone


@pytest.fixture
def config_round_trip():
  """`config_round_trip(layer) -> clone`: the Keras config round trip check
  every serializable layer's test runs."""
  return _config_round_trip


def _record_offsets(path):
  """Start offsets of the records of a TFRecord file, and its size (parsed
  from the framing independently: uint64 length, crc, data, crc)."""
  offsets, offset = [], 0
  with open(path, "rb") as f:
    data = f.read()
  while offset < len(data):
    offsets.append(offset)
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    offset += 8 + 4 + length + 4
  return offsets, len(data)


def _damage_shard(path, how, records=None):
  """Damages a TFRecord shard in place: "boundary" keeps the first `records`
  records, "mid" cuts the file in the middle of a record's data, "header" in
  its length header, "flip" flips one bit in a record's data (same size)."""
  offsets, _ = _record_offsets(path)
  with open(path, "rb") as f:
    data = bytearray(f.read())
  middle = offsets[len(offsets) // 2]
  if how == "boundary":
    data = data[:offsets[records]]
  elif how == "mid":
    data = data[:middle + 20]
  elif how == "header":
    data = data[:middle + 5]
  elif how == "flip":
    data[middle + 16] ^= 0x10
  else:
    raise ValueError(how)
  with open(path, "wb") as f:
    f.write(bytes(data))


@pytest.fixture
def damage_shard():
  """`damage_shard(path, how, records=None)`: truncates ("boundary", "mid",
  "header") or bit-flips ("flip") a TFRecord shard in place."""
  return _damage_shard
