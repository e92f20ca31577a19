"""Pose model layers: geometry they rely on, finiteness, serialization."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import UnrolledSGD
from ige_tf.pose import camera
from ige_tf.pose import models
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline

# Human3.6M-like distortion (DATA.md, subject9/camera1).
K = np.array([-0.2071, 0.2478, -0.0031], np.float32)
P = np.array([-0.00142, -0.00098], np.float32)


def test_pose_feature_sizes_are_the_papers_pairwise_counts():
  # E_x sees all pairs of 16 projected + 16 observed joints, E_y all pairs of
  # the 16 estimated joints (paper eqs. 6-8).
  layer = models.PoseEnergy()
  layer.build((None, 16, 3), {"pose_2d": (None, 16, 2),
                              "distortion": (None, 5)})
  assert layer.reprojection.hidden_layers[0].kernel.shape == (32 * 31 // 2, 64)
  assert layer.feasibility.hidden_layers[0].kernel.shape == (16 * 15 // 2, 64)


def test_undistort_inverts_the_distortion():
  rng = np.random.default_rng(0)
  x = rng.uniform(-0.45, 0.45, size=(3, 16, 2)).astype(np.float32)
  k = np.tile(K, (3, 1))
  p = np.tile(P, (3, 1))
  distorted = camera.distort(x, k, p)
  np.testing.assert_allclose(models.undistort(distorted, k, p), x, atol=2e-6)


def _camera_frame_examples(records_gt, n=64):
  features, labels = next(iter(pipeline.pose_dataset(records_gt, "test", n,
                                                     shuffle=False)))
  return features, labels


def test_root_translation_is_exact_for_projected_ground_truth(records_gt):
  features, labels = _camera_frame_examples(records_gt)
  root = labels["root_3d"]
  relative = labels["pose_3d"] - root[:, None, :]
  solved = models.solve_root_translation(relative, features["pose_2d"],
                                         features["distortion"])
  # GT 2D is the exact projection: the linear system is consistent.
  np.testing.assert_allclose(solved, root, atol=2e-4)
  placed = models.CameraPlacement()(relative, features["pose_2d"],
                                    features["distortion"])
  np.testing.assert_allclose(placed, labels["pose_3d"], atol=2e-4)


def test_root_translation_of_degenerate_input_is_finite_and_in_front():
  relative = np.zeros((3, 16, 3), np.float32)
  relative[1] = np.random.default_rng(1).normal(size=(16, 3))
  pose_2d = np.zeros((3, 16, 2), np.float32)  # every joint in one point
  pose_2d[2] = np.random.default_rng(2).normal(size=(16, 2)) * 1e3
  distortion = np.tile(np.concatenate([K, P]), (3, 1))
  root = models.solve_root_translation(relative, pose_2d, distortion,
                                       min_root_depth=1.0).numpy()
  assert np.all(np.isfinite(root))
  assert np.all(root[:, 2] >= 1.0)


def adversarial_estimates():
  """Camera-frame estimates that break a naive energy: `[6, 16, 3]`."""
  rng = np.random.default_rng(0)
  base = rng.normal(scale=0.3, size=(16, 3)) + [0, 0, 4.0]
  cases = [base.copy() for _ in range(6)]
  cases[0][:, 2] = 0.0                               # every joint at depth 0
  cases[1][:, 2] = -2.0                              # behind the camera
  cases[2][:, 2] = np.linspace(-1, 1, 16)            # crossing z = 0
  hips = skeleton.H36M16_HIPS
  cases[3][hips[1]] = cases[3][hips[0]]              # coincident hips
  cases[4][:] = [0.0, 0.0, 0.0]                      # all joints at the origin
  cases[5][hips[1]] = cases[5][hips[0]]
  cases[5][:, 2] = 1e-7                              # both at once
  return np.stack(cases).astype(np.float32)


def _context(batch):
  rng = np.random.default_rng(3)
  return {"pose_2d": tf.constant(rng.normal(scale=0.1, size=(batch, 16, 2)),
                                 tf.float32),
          "distortion": tf.constant(np.tile(np.concatenate([K, P]),
                                            (batch, 1)), tf.float32)}


def test_energy_and_its_gradients_are_finite_for_adversarial_estimates():
  keras.utils.set_random_seed(0)
  # A steep energy (output kernel not scaled down) to stress the guards.
  energy = models.PoseEnergy(kernel_scale=1.0)
  y = tf.constant(adversarial_estimates())
  context = _context(len(y))
  with tf.GradientTape() as outer:
    outer.watch(y)
    with tf.GradientTape() as inner:
      inner.watch(y)
      values = energy(y, context)
      total = tf.reduce_sum(values)
    grad = inner.gradient(total, y)
    second = tf.reduce_sum(tf.square(grad))
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
  hessian_terms = outer.gradient(second, [y] + energy.trainable_variables)
  for g in hessian_terms:
    assert np.all(np.isfinite(g))


def test_unrolled_steps_and_outer_gradients_stay_finite():
  # lr * clip = 1 m per coordinate per step: steps cross z = 0 and can bring
  # the hips together; values and all outer gradients must stay finite.
  keras.utils.set_random_seed(1)
  energy = models.PoseEnergy(kernel_scale=1.0)
  inner = UnrolledSGD(
      energy, 6, learning_rate=1.0, momentum=0.1, clip_value=1.0,
      learn_learning_rate=True, learn_momentum=True, learn_clip_value=True)
  initial = tf.constant(adversarial_estimates())
  context = _context(len(initial))
  with tf.GradientTape() as tape:
    tape.watch(initial)
    out = inner(initial, context, return_diagnostics=True)
    loss = tf.reduce_sum(tf.square(out["steps"]))
  assert all(np.all(np.isfinite(out[k])) for k in out)
  moved = np.abs(out["steps"][-1] - out["steps"][0]).max()
  assert moved > 0.5  # the steep energy really moves the estimate
  grads = tape.gradient(loss, [initial] + inner.trainable_variables)
  assert len(grads) == 1 + 3 + 8  # initial, lr/mu/clip, two 2-layer MLPs
  for g in grads:
    assert g is not None and np.all(np.isfinite(g))


def test_norm_clipped_dense_uses_the_clipped_kernel():
  layer = models.NormClippedDense(3, max_norm=0.5)
  x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  y = layer(x).numpy()
  kernel = layer.kernel.numpy()
  norm = np.linalg.norm(kernel)
  expected = x @ (kernel * min(1.0, 0.5 / norm)) + layer.bias.numpy()
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("units,blocks", [(1024, 2), (128, 1)])
def test_baseline_size_matches_martinez(units, blocks):
  model = models.baseline_lifter(units=units, num_blocks=blocks)
  dense = models.find_baseline(model).dense_layers()
  assert len(dense) == 2 + 2 * blocks
  expected = (32 * units + units) + blocks * 2 * (units * units + units) + (
      units * 48 + 48)
  batch_norm = (1 + 2 * blocks) * 2 * units  # gamma, beta
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == (
      expected + batch_norm)


@pytest.mark.parametrize("make_layer", [
    lambda: models.NormClippedDense(7, max_norm=2.0),
    lambda: models.MartinezBaseline(32, 1, 0.25, max_norm=1.0),
    lambda: models.CameraPlacement(min_root_depth=0.5,
                                   undistort_iterations=3),
    lambda: models.PoseEnergy((8,), 4, (6,), 3, kernel_scale=0.1,
                              hip_min_length=0.02,
                              feasibility_feature_scale=0.5),
    lambda: UnrolledSGD(models.PoseEnergy((8,), 4, (6,), 3), 2,
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
      inputs, models.NormClippedDense(4, max_norm=0.7)(
          keras.ops.reshape(inputs["pose_2d"], (-1, 32))))
  net = models.MartinezBaseline(16, 1, 0.5, max_norm=1.0)
  yield "MartinezBaseline", keras.Model(inputs, net(inputs["pose_2d"]))
  yield "CameraPlacement", models.baseline_lifter(units=16, num_blocks=1)
  energy = models.PoseEnergy((8,), 4, (8,), 4, kernel_scale=1.0)
  y = keras.Input((16, 3), name="y")
  yield "PoseEnergy", keras.Model(
      {"y": y, **inputs},
      energy(y, {"pose_2d": inputs["pose_2d"],
                 "distortion": inputs["distortion"]}))
  yield "UnrolledSGD", models.ige_lifter(
      num_steps=2, initial_estimate_fn=lambda statistics=None:
      models.baseline_lifter(units=16, num_blocks=1),
      energy_fn=lambda name, dtype=None: models.PoseEnergy(
          (8,), 4, (8,), 4, name=name, dtype=dtype))


@pytest.mark.parametrize("name,model", list(_models_per_layer()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_saved_model_and_keras_file_reload_equal(name, model, tmp_path):
  # Moderate weights for the unrolled model: a steep energy makes the steps
  # sensitive to float rounding, which differs between eager and graph.
  _perturb(model, scale=0.01 if name == "UnrolledSGD" else 0.05)
  x = _inputs()
  if name == "PoseEnergy":
    x["y"] = adversarial_estimates()[:1].repeat(5, 0) + np.float32(3.0)
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


@pytest.mark.parametrize("dims", [2, 3])
def test_matmul_pairwise_distances_equal_the_gather_version(dims):
  from ige_tf.pose import geometry  # pylint: disable=import-outside-toplevel
  points = tf.constant(np.random.default_rng(dims).normal(
      size=(3, 16, dims)), tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(points)
    ours = models.pairwise_squared_distances(points)
    reference = geometry.pairwise_squared_distances(points)
    weights = tf.range(1.0, ours.shape[-1] + 1.0)
    ours_sum = tf.reduce_sum(ours * weights)
    reference_sum = tf.reduce_sum(reference * weights)
  np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(tape.gradient(ours_sum, points),
                             tape.gradient(reference_sum, points),
                             rtol=1e-5, atol=1e-5)
