"""IGE and baseline voxel models: outputs, Table 2 components, serialization."""
import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.voxel import decoders
from ige_tf.voxel import models

# Measured IGE-MN at 32^3 (docs/voxel_model.md compares with Table 2).
IGE_MN_32 = {"image_encoder": 1811712, "3d_decoder": 247009,
             "image_decoder": 140608, "inner_cnn": 946240,
             "inner_optimizer": 2, "total": 3145571}


@pytest.fixture(scope="module")
def ige_mn_32():
  return models.ige_voxel_model("mn", resolution=32, num_steps=2)


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).random((1, 128, 128, 3)).astype(np.float32)


def test_ige_mn_32_outputs(ige_mn_32, image):
  outputs = ige_mn_32({"image": image})
  assert set(outputs) == {"steps", "energy", "grad_norm"}
  assert outputs["steps"].shape == (3, 1, 32, 32, 32)
  assert outputs["energy"].shape == (2, 1)
  assert outputs["grad_norm"].shape == (2, 1)
  # steps[0] is the 3D decoder's estimate from the encoder output.
  top = ige_mn_32.get_layer("image_encoder")(image)[-1]
  initial = ige_mn_32.get_layer("3d_decoder")(top)
  np.testing.assert_allclose(outputs["steps"][0].numpy(), initial.numpy(),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(outputs["energy"].numpy()))


def test_ige_inner_optimizer_learns_rate_and_clip_only(ige_mn_32):
  optimizer = ige_mn_32.get_layer("inner_optimizer")
  assert optimizer.momentum is None
  assert sorted(w.name for w in optimizer.trainable_weights
                if w.name in ("learning_rate", "clip_value", "momentum")) == [
                    "clip_value", "learning_rate"]
  assert optimizer.energy.name == "inner_cnn"
  assert optimizer.energy.level_sizes == (4, 8, 16, 32)
  assert optimizer.energy.depth_bins == (32, 16, 8, 4)


def test_ige_energy_alone_is_the_models_energy(ige_mn_32):
  """`models.ige_energy` builds the energy `ige_voxel_model` does (what the
  inner-loop benchmarks measure) without the encoder."""
  alone = models.ige_energy("mn", 32)
  energy = ige_mn_32.get_layer("inner_optimizer").energy
  for name in ("level_sizes", "feature_channels", "depth_bins", "filters",
               "occupancy", "resolution"):
    assert getattr(alone, name) == getattr(energy, name), name
  # At 256^3 the default min_channels=1 keeps halving: the finest level
  # (256^2) has 4 depth bins of 64 cells, as in training at that R.
  at_256 = models.ige_energy("mn", 256)
  assert at_256.level_sizes == (4, 8, 16, 32, 64, 128, 256)
  assert at_256.depth_bins == (256, 128, 64, 32, 16, 8, 4)
  with pytest.raises(ValueError):
    models.ige_energy("mn", 48)


def test_ige_component_params_and_multiply_adds(ige_mn_32):
  assert models.component_params(ige_mn_32) == IGE_MN_32
  macs = models.multiply_adds_by_component(ige_mn_32)
  energy = ige_mn_32.get_layer("inner_optimizer").energy
  assert macs["inner_cnn"] == 2 * 2 * sum(energy.multiply_adds())
  assert macs["total"] == (macs["image_encoder"] + macs["3d_decoder"]
                           + macs["image_decoder"] + macs["inner_cnn"])
  assert models.multiply_adds(ige_mn_32) == macs["total"]
  # The 3D decoder: 1x1 conv 320 -> 4 * 64 on 4^2, then three deconvs.
  assert macs["3d_decoder"] == (16 * 320 * 256 + 64 * 64 * 64 * 32
                                + 512 * 64 * 32 * 16 + 4096 * 64 * 16)


def test_ige_model_keras_save_load(ige_mn_32, image, tmp_path):
  path = str(tmp_path / "ige.keras")
  ige_mn_32.save(path)
  loaded = keras.models.load_model(path)
  expected = ige_mn_32({"image": image})
  restored = loaded({"image": image})
  for key in ("steps", "energy"):
    np.testing.assert_allclose(restored[key].numpy(), expected[key].numpy(),
                               rtol=1e-4, atol=1e-5)


def test_ige_64_from_gin(image):
  gin.parse_config("""
      ige_voxel_model.resolution = 64
      ige_voxel_model.num_steps = 1
      ige_voxel_model.encoder = "mn"
  """)
  model = models.ige_voxel_model()
  assert model.name == "ige_mn_64"
  outputs = model({"image": image})
  assert outputs["steps"].shape == (2, 1, 64, 64, 64)
  energy = model.get_layer("inner_optimizer").energy
  assert energy.level_sizes == (4, 8, 16, 32, 64)
  assert energy.depth_bins == (64, 32, 16, 8, 4)
  # The 32^3 estimate is trilinearly upsampled to 64^3.
  generator = model.get_layer("3d_decoder")
  coarse = keras.Model(generator.input, generator.get_layer("logits").output)
  top = model.get_layer("image_encoder")(image)[-1]
  np.testing.assert_allclose(
      outputs["steps"][0].numpy(),
      decoders.upsample_trilinear(coarse(top), 2).numpy(), rtol=1e-5,
      atol=1e-5)


@pytest.mark.parametrize("grid,resolution", [("world", 32), ("frustum", 64)])
def test_baseline_outputs_and_components(grid, resolution, image):
  model = models.baseline_voxel_model("mn", resolution=resolution, grid=grid)
  assert model.name == f"base_mn_{grid}_{resolution}"
  outputs = model({"image": image})
  assert set(outputs) == {"steps"}
  assert outputs["steps"].shape == (1, 1) + (resolution,) * 3
  params = models.component_params(model)
  assert params["image_encoder"] == 2223872  # Table 2: MobileNetV2, 1280.
  assert params["image_decoder"] == params["inner_cnn"] == 0
  assert params["total"] == params["image_encoder"] + params["3d_decoder"]
  if resolution == 32:
    assert params["3d_decoder"] == 1313217


def test_bad_model_arguments():
  with pytest.raises(ValueError, match="Unknown grid 'camera'"):
    models.baseline_voxel_model("mn", grid="camera")
  with pytest.raises(ValueError, match="Unknown encoder 'mn_full'"):
    models.ige_voxel_model("mn_full")
  with pytest.raises(ValueError, match="resolution 48 is not the encoder"):
    models.ige_voxel_model("mn", resolution=48)


def test_add_step_axis_config_round_trip():
  layer = models.AddStepAxis(name="steps")
  clone = models.AddStepAxis.from_config(layer.get_config())
  assert clone(tf.zeros((2, 3))).shape == (1, 2, 3)
