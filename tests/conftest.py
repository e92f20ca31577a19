"""Shared test setup: quiet TensorFlow, a clean gin config per test, and
helpers every part's tests use (as fixtures: tests/ is not a package)."""
import os

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
