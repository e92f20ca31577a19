"""Shared test setup: quiet TensorFlow, a clean gin config per test, and
helpers every part's tests use (as fixtures: tests/ is not a package)."""
import fcntl
import functools
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # a failed earlier attempt
      path.mkdir()
      value = build(str(path))
      done.write_text(json.dumps({"value": value}))
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
