"""Pose model layers and models: config round trip, SavedModel / .keras
reload, checkpoint contents, and the names saved files depend on."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import UnrolledSGD
from ige_tf.pose import baseline
from ige_tf.pose import energy as energy_lib
from ige_tf.pose import models

# Human3.6M-like distortion (subject 9, camera 1).
K = np.array([-0.2071, 0.2478, -0.0031], np.float32)
P = np.array([-0.00142, -0.00098], np.float32)


@pytest.mark.parametrize("make_layer", [
    lambda: baseline.NormClippedDense(7, max_norm=2.0),
    lambda: baseline.MartinezBaseline(32, 1, 0.25, max_norm=1.0),
    lambda: baseline.CameraPlacement(min_root_depth=0.5,
                                   undistort_iterations=3),
    lambda: energy_lib.PoseEnergy((8,), 4, (6,), 3, kernel_scale=0.1,
                              hip_min_length=0.02,
                              feasibility_feature_scale=0.5),
    lambda: UnrolledSGD(energy_lib.PoseEnergy((8,), 4, (6,), 3), 2,
                        momentum=0.2, clip_value=0.5,
                        learn_learning_rate=True),
])
def test_config_round_trip(make_layer, config_round_trip):
  config_round_trip(make_layer())


def _inputs(batch=5, seed=0):
  rng = np.random.default_rng(seed)
  return {"pose_2d": rng.normal(scale=0.15, size=(batch, 16, 2)).astype(
              np.float32),
          "distortion": np.tile(np.concatenate([K, P]), (batch, 1))}


def _perturb(model, seed=0, scale=0.05):
  rng = np.random.default_rng(seed)
  for w in model.weights:
    w.assign(w.numpy() + rng.normal(scale=scale, size=w.shape).astype(
        np.float32))


def _models_per_layer():
  keras.utils.set_random_seed(0)
  inputs = models.model_inputs()
  yield "NormClippedDense", keras.Model(
      inputs, baseline.NormClippedDense(4, max_norm=0.7)(
          keras.ops.reshape(inputs["pose_2d"], (-1, 32))))
  net = baseline.MartinezBaseline(16, 1, 0.5, max_norm=1.0)
  yield "MartinezBaseline", keras.Model(inputs, net(inputs["pose_2d"]))
  yield "CameraPlacement", models.baseline_lifter(units=16, num_blocks=1)
  energy = energy_lib.PoseEnergy((8,), 4, (8,), 4, kernel_scale=1.0)
  y = keras.Input((16, 3), name="y")
  yield "PoseEnergy", keras.Model(
      {"y": y, **inputs},
      energy(y, {"pose_2d": inputs["pose_2d"],
                 "distortion": inputs["distortion"]}))
  yield "UnrolledSGD", models.ige_lifter(
      num_steps=2, initial_estimate_fn=lambda statistics=None:
      models.baseline_lifter(units=16, num_blocks=1),
      energy_fn=lambda name, dtype=None: energy_lib.PoseEnergy(
          (8,), 4, (8,), 4, name=name, dtype=dtype))


@pytest.mark.parametrize("name,model", list(_models_per_layer()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_saved_model_and_keras_file_reload_equal(name, model, tmp_path):
  # Moderate weights for the unrolled model: a steep energy makes the steps
  # sensitive to float rounding, which differs between eager and graph.
  _perturb(model, scale=0.01 if name == "UnrolledSGD" else 0.05)
  x = _inputs()
  if name == "PoseEnergy":
    x["y"] = np.random.default_rng(1).normal(
        scale=0.3, size=(5, 16, 3)).astype(np.float32) + [0, 0, 4.0]
  expected = keras.tree.map_structure(np.asarray, model(x))
  if name == "UnrolledSGD":  # the inner steps really move the estimate
    assert np.abs(expected["steps"][-1] - expected["steps"][0]).max() > 1e-3
  saved = os.path.join(tmp_path, "saved")
  model.export(saved, verbose=False)
  reloaded = tf.saved_model.load(saved)
  served = reloaded.serve({k: tf.constant(v, tf.float32)
                           for k, v in x.items()})
  keras.tree.map_structure(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
      expected, keras.tree.map_structure(np.asarray, served))
  path = os.path.join(tmp_path, "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  keras.tree.map_structure(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
      expected, keras.tree.map_structure(np.asarray, loaded(x)))


def test_checkpoint_restores_every_weight_of_an_ige_model(tmp_path):
  # Regression: sublayers held in lists (Martinez blocks, EnergyMLP hidden
  # layers) were invisible to tf.train.Checkpoint, so evaluation restored
  # nothing but the output layers.
  def build():
    keras.utils.set_random_seed(0)
    return models.ige_lifter(
        num_steps=1, initial_estimate_fn=lambda statistics=None:
        models.baseline_lifter(units=16, num_blocks=1))
  model = build()
  _perturb(model, seed=5)
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  clone = build()
  status = tf.train.Checkpoint(model=clone).restore(path)
  status.assert_existing_objects_matched()
  assert len(model.weights) == len(clone.weights) > 20
  for a, b in zip(model.weights, clone.weights):
    assert a.path == b.path
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("cls", [baseline.NormClippedDense,
                                 baseline.MartinezBaseline,
                                 baseline.CameraPlacement,
                                 energy_lib.PoseEnergy])
def test_registered_names_saved_files_refer_to(cls):
  # A .keras file names each layer "ige_tf>Class" (its module path is only a
  # fallback): files written before a layer moves module still load.
  assert keras.saving.get_registered_name(cls) == f"ige_tf>{cls.__name__}"
  assert keras.saving.get_registered_object(f"ige_tf>{cls.__name__}") is cls


# The variables a checkpoint of this tiny IGE lifter holds (path below
# "model/" and shape), as written by the code before pose/models.py was split
# into baseline.py, energy.py, geometry.py and flops.py: checkpoints of
# existing runs (and INIT_MODEL_DIR baselines) restore by these paths.
_BASELINE = "_operations/2/_operations/1/"
_INNER = "_operations/4/"
_CHECKPOINT_LAYOUT = sorted(
    [(f"{_BASELINE}_{layer}_bn/{name}", [16])
     for layer in ("block0_a", "block0_b", "input")
     for name in ("beta", "gamma", "moving_mean", "moving_variance")] +
    [(f"{_BASELINE}_{layer}_dense/{name}", shape)
     for layer, kernel in (("block0_a", [16, 16]), ("block0_b", [16, 16]),
                           ("input", [32, 16]))
     for name, shape in (("_kernel", kernel), ("bias", [16]))] +
    [(f"{_BASELINE}{name}", shape) for name, shape in (
        ("input_mean", [16, 2]), ("input_std", [16, 2]),
        ("output_mean", [16, 3]), ("output_std", [16, 3]),
        ("output_dense/_kernel", [16, 48]), ("output_dense/bias", [48]))] +
    [(f"{_INNER}_{name}_weight", []) for name in ("clip_value",
                                                 "learning_rate", "momentum")] +
    [(f"{_INNER}energy/{mlp}/{layer}/{name}", shape)
     for mlp, features in (("feasibility", 120), ("reprojection", 496))
     for layer, kernel, units in (("_hidden_0", [features, 64], 64),
                                  ("output_layer", [64, 16], 16))
     for name, shape in (("_kernel", kernel), ("bias", [units]))])


def test_checkpoint_variable_paths_are_those_existing_runs_hold(tmp_path):
  keras.utils.set_random_seed(0)
  model = models.ige_lifter(
      num_steps=2, initial_estimate_fn=lambda statistics=None:
      models.baseline_lifter(units=16, num_blocks=1, max_norm=1.0))
  path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
  layout = sorted((name[len("model/"):-len(suffix)], shape)
                  for name, shape in tf.train.list_variables(path)
                  if name.startswith("model/"))
  assert len(layout) == 35
  assert layout == _CHECKPOINT_LAYOUT
