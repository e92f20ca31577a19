"""Image encoders: Table 2 parameter counts, feature-map shapes, weights."""
import os

import keras
import numpy as np
import pytest

from ige_tf.core import dtype_policy
from ige_tf.voxel import encoders


def _count(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _shapes(model):
  return [tuple(o.shape[1:]) for o in model.outputs]


@pytest.mark.parametrize("name,params,top_channels", [
    ("mn", 1811712, 320), ("mn_full", 2223872, 1280)])
def test_mobilenet_v2_counts_and_maps(name, params, top_channels):
  encoder = encoders.build_image_encoder(name, 128)
  assert encoder.name == "image_encoder"
  assert _count(encoder) == params  # Table 2.
  assert _shapes(encoder) == [(64, 64, 16), (32, 32, 24), (16, 16, 32),
                              (8, 8, 96), (4, 4, top_channels)]
  assert encoders.encoder_channels(name) == tuple(s[-1] for s in
                                                  _shapes(encoder))


def test_i4_matches_inception_resnet_v2_with_a_4x4_output():
  """Table 2's count; Keras' weights in Keras' order (ImageNet files load by
  layer order); SAME padding gives 4^2 where Keras' VALID model gives 1^2 at
  75^2 (2^2 at 128^2). Builds I4 once."""
  encoder = encoders.build_image_encoder("i4", 128)
  assert _count(encoder) == 54276192
  assert _shapes(encoder) == [(64, 64, 64), (32, 32, 192), (16, 16, 320),
                              (8, 8, 1088), (4, 4, 1536)]
  reference = keras.applications.InceptionResNetV2(
      weights=None, include_top=False, input_shape=(75, 75, 3))

  def layout(model):
    return [tuple(w.shape) for layer in model.layers
            for w in layer.trainable_weights + layer.non_trainable_weights]

  assert layout(encoder.get_layer("i4_features")) == layout(reference)


def test_inception_resnet_v2_trunk_with_fewer_blocks():
  """`blocks` sets the number of A/B/C blocks, the last C block always
  without activation; the maps keep their shapes; 0 blocks is an error."""
  trunk = encoders.inception_resnet_v2_trunk(64, blocks=(1, 2, 2))
  names = [layer.name for layer in trunk.layers]
  assert [n for n in names if n.endswith("_residual")] == [
      "block35_1_residual", "block17_1_residual", "block17_2_residual",
      "block8_1_residual", "block8_2_residual"]
  assert "block8_1_ac" in names and "block8_2_ac" not in names
  assert tuple(trunk.output.shape) == (None, 2, 2, 1536)
  with pytest.raises(ValueError, match=r"blocks must be at least 1 each, "
                     r"got \(10, 0, 10\)"):
    encoders.inception_resnet_v2_trunk(64, blocks=(10, 0, 10))


def test_inception_v4_counts_and_maps():
  encoder = encoders.build_image_encoder("inception_v4", 128)
  assert _count(encoder) == 41111232
  assert _shapes(encoder) == [(64, 64, 64), (32, 32, 192), (16, 16, 384),
                              (8, 8, 1024), (4, 4, 1536)]


def test_loads_keras_applications_weights_local_or_imagenet(tmp_path,
                                                           monkeypatch):
  """A local Keras-applications file, and weights="imagenet" served by
  `keras.utils.get_file` (replaced: tests have no network), load exactly."""
  reference = keras.applications.MobileNetV2(
      weights=None, include_top=False, input_shape=(128, 128, 3))
  rng = np.random.default_rng(0)
  reference.set_weights([rng.normal(size=w.shape).astype(np.float32)
                         for w in reference.get_weights()])
  path = str(tmp_path / "mobilenet_v2_no_top.h5")
  reference.save(path)  # Legacy HDF5, as the Keras-applications files.
  image = rng.random((1, 128, 128, 3)).astype(np.float32)
  top = keras.Model(reference.input,
                    reference.get_layer("block_16_project_BN").output)
  expected = top(image * 2 - 1).numpy()
  encoder = encoders.build_image_encoder("mn", 128, weights=path)
  np.testing.assert_allclose(encoder(image)[-1].numpy(), expected,
                             rtol=1e-4, atol=1e-4)

  requests = []

  def cached_file(fname, origin=None, **kwargs):
    requests.append(dict(kwargs, fname=fname, origin=origin))
    return path

  monkeypatch.setattr(keras.utils, "get_file", cached_file)
  encoder = encoders.build_image_encoder("mn", 128, weights="imagenet")
  np.testing.assert_allclose(encoder(image)[-1].numpy(), expected,
                             rtol=1e-4, atol=1e-4)
  file_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5"
  assert requests == [{
      "fname": file_name, "cache_subdir": "models", "file_hash": None,
      "origin": "https://storage.googleapis.com/tensorflow/"
                f"keras-applications/mobilenet_v2/{file_name}"}]


@pytest.mark.parametrize("name, image_size, file_name", [
    ("mn", 128, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_"
                "no_top.h5"),
    ("mn_full", 256, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_"
                     "no_top.h5"),
    ("i4", 128, "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_"
                "notop.h5"),
])
def test_imagenet_offline_is_a_clear_error(name, image_size, file_name,
                                           tmp_path, monkeypatch):
  """Offline and not cached (conftest.py's get_file fails as Keras does):
  the error names the file, the cache and the URL, and how to provide it."""
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
  with pytest.raises(FileNotFoundError) as error:
    encoders.build_image_encoder(name, image_size, weights="imagenet")
  message = str(error.value)
  cache = os.path.join(str(tmp_path / "keras"), "models", file_name)
  assert message.startswith(f"ImageNet weights of image encoder {name!r} are "
                            f"not available: {file_name} is not in Keras' "
                            f"cache ({cache}) and downloading https://")
  assert "/keras-applications/" in message and f"/{file_name}" in message
  assert "Temporary failure in name resolution" in message
  assert f"ENCODER_WEIGHTS = '/path/to/{file_name}'" in message
  assert "ENCODER_WEIGHTS = None" in message


def test_inception_v4_has_no_imagenet_weights():
  with pytest.raises(ValueError, match="'inception_v4' has no ImageNet "
                                       "weights"):
    encoders.build_image_encoder("inception_v4", 128, weights="imagenet")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_weights_errors_name_the_file(tmp_path):
  missing = str(tmp_path / "missing.h5")
  with pytest.raises(FileNotFoundError, match="missing.h5: weights file"):
    encoders.build_image_encoder("mn", 128, weights=missing)
  other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
  wrong = str(tmp_path / "dense.weights.h5")
  other.save_weights(wrong)
  with pytest.raises(ValueError, match="dense.weights.h5: cannot load weights "
                                       "into image encoder 'mn'"):
    encoders.build_image_encoder("mn", 128, weights=wrong)


def test_bad_arguments():
  with pytest.raises(ValueError, match="Unknown image encoder 'vgg'"):
    encoders.build_image_encoder("vgg")
  with pytest.raises(ValueError, match="multiple of 32, got 100"):
    encoders.build_image_encoder("mn", 100)


def test_scaled_residual_config_round_trip():
  layer = encoders.ScaledResidual(0.17, name="block")
  clone = encoders.ScaledResidual.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  a, b = np.ones((1, 2)), np.full((1, 2), 2.0)
  np.testing.assert_allclose(clone([a, b]).numpy(), [[1.34, 1.34]])


def test_dtype_keeps_the_encoder_in_float32_under_mixed_precision():
  with dtype_policy("mixed_float16"):
    mixed = encoders.build_image_encoder("mn", 32)
    kept = encoders.build_image_encoder("mn", 32, dtype="float32")
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
  image = np.random.default_rng(0).uniform(size=(1, 32, 32, 3))
  assert [o.dtype for o in mixed(image)] == ["float16"] * 5
  assert [o.dtype for o in kept(image)] == ["float32"] * 5
  kept_layers = [l for l in kept._flatten_layers() if l.weights]  # pylint: disable=protected-access
  assert kept_layers and {l.compute_dtype for l in kept_layers} == {"float32"}
