"""PoseProblem: losses, per-step metrics, evaluation, export, model stats."""
import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from conftest import gin_overrides  # pylint: disable=import-error
from ige_tf.pose import inference
from ige_tf.pose import metrics as pose_metrics
from ige_tf.pose import models
from ige_tf.pose import problem as problem_lib
from ige_tf.pose.data import pipeline
from ige_tf.train import cli
from ige_tf.train import loop


def test_scaled_l2_is_the_distance_after_the_optimal_scale():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(4, 16, 3)).astype(np.float32)
  prediction = (0.7 * target + rng.normal(scale=0.1, size=target.shape)
                ).astype(np.float32)
  got = problem_lib.scaled_l2(target, prediction).numpy()
  for b in range(4):
    p, y = prediction[b].astype(np.float64), target[b].astype(np.float64)
    k = np.sum(p * y) / np.sum(p * p)
    assert got[b] == pytest.approx(np.linalg.norm(k * p - y), rel=1e-5)
    # No other scale does better.
    for other in (0.9 * k, 1.1 * k):
      assert got[b] <= np.linalg.norm(other * p - y) + 1e-6


def test_losses_on_a_batch(records_gt):
  problem = problem_lib.PoseProblem(records_gt, models.baseline_lifter,
                                    loss_type="standardized_mse")
  features, labels = next(iter(problem.dataset("train", 16, shuffle=True)))
  stats = pipeline.load_statistics(records_gt)
  standardized = np.random.default_rng(1).normal(size=(16, 16, 3)).astype(
      np.float32)
  target = (labels["pose_3d"].numpy() - labels["root_3d"].numpy()[:, None]
            - stats["pose_3d_mean"]) / stats["pose_3d_std"]
  mse = problem.loss(labels, {"standardized": standardized,
                              "steps": tf.zeros((1, 16, 16, 3))})
  assert float(mse) == pytest.approx(np.mean((standardized - target)**2),
                                     rel=1e-5)
  # Multi-step loss: sum_t 0.9^(T-t) mean_b scaled_l2(steps[t]).
  problem = problem_lib.PoseProblem(records_gt, models.baseline_lifter)
  steps = labels["pose_3d"].numpy()[None] + np.random.default_rng(2).normal(
      scale=0.05, size=(3, 16, 16, 3)).astype(np.float32)
  expected = sum(0.9**(2 - t) * np.mean(problem_lib.scaled_l2(
      labels["pose_3d"], steps[t])) for t in range(3))
  assert float(problem.loss(labels, {"steps": steps})) == pytest.approx(
      expected, rel=1e-5)
  del features


def test_metrics_are_per_step_and_equal_the_metric_functions(records_gt):
  problem = problem_lib.PoseProblem(records_gt, models.baseline_lifter)
  _, labels = next(iter(problem.dataset("test", 8)))
  steps = labels["pose_3d"].numpy()[None] * np.array(
      [1.0, 1.1], np.float32)[:, None, None, None]
  steps[1, :, 2, 0] += 0.05  # r_ankle, 5 cm along x
  values = problem.metrics(labels, {"steps": tf.constant(steps)})
  assert set(values) == {"protocol1a_mm", "protocol2_mm", "mpjpe_mm"}
  for name, fn in pose_metrics.METRICS.items():
    assert values[name].shape == (2, 8)
    for t in range(2):
      np.testing.assert_allclose(values[name][t], fn(steps[t],
                                                     labels["pose_3d"]),
                                 rtol=1e-6)
  # Step 0 is the ground truth: zero error under every protocol; step 1 is
  # scaled by 1.1 (forgiven by protocols 1a and 2, not by MPJPE) and off by
  # 5 cm at one joint.
  for name in values:
    np.testing.assert_allclose(values[name][0], 0, atol=0.05)
    assert np.all(values[name][1] > 1.0)
  assert np.all(values["mpjpe_mm"][1] > values["protocol1a_mm"][1] + 10)


def test_evaluate_reports_every_step_and_action(ige_run):
  with open(os.path.join(ige_run, "metrics.json")) as f:
    metrics = json.load(f)
  for name in ("protocol1a_mm", "protocol2_mm", "mpjpe_mm"):
    assert len(metrics[name]) == 5  # steps 0..4
    assert all(np.isfinite(metrics[name]))
    per_action = metrics[f"{name}_per_action"]
    assert set(per_action) == {"Directions", "Eating", "Phoning", "Posing",
                               "Sitting", "Walking"}
    assert all(len(v) == 5 for v in per_action.values())
  stats = metrics["model_stats"]
  assert stats["architecture"] == {"kind": "ige", "units": 128, "blocks": 1,
                                   "max_norm": None, "num_steps": 4}


def _normalized(pose_2d, f, c):
  return (pose_2d - c[:, None]) / f[:, None]


def test_serving_signature_takes_raw_pixels(ige_run, records_gt):
  features, _ = next(iter(pipeline.pose_dataset(records_gt, "test", 6,
                                                shuffle=False)))
  f = features["intrinsics"][:, :2].numpy()
  c = features["intrinsics"][:, 2:].numpy()
  pixels = features["pose_2d"].numpy() * f[:, None] + c[:, None]
  distortion = features["distortion"].numpy()
  problem, model = inference.restore_run(ige_run)
  expected = model({"pose_2d": _normalized(pixels, f, c),
                    "distortion": distortion}, training=False)["steps"]
  reloaded = tf.saved_model.load(os.path.join(ige_run, "export"))
  served = reloaded.signatures["serve"](
      pose_2d=tf.constant(pixels), f=tf.constant(f), c=tf.constant(c),
      k=tf.constant(distortion[:, :3]), p=tf.constant(distortion[:, 3:]))
  np.testing.assert_allclose(served["steps"], expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(served["final"], expected[-1], rtol=1e-4,
                             atol=1e-5)
  # The same through load_lifter, from the export and from the run dir.
  for path in (os.path.join(ige_run, "export"), ige_run):
    out = inference.load_lifter(path)(pixels, f, c, distortion[:, :3],
                                      distortion[:, 3:])
    np.testing.assert_allclose(out["steps"], expected, rtol=1e-4, atol=1e-5)
  del problem


def _stats(config, records_gt, baseline_run, **params):
  gin.clear_config()
  # INIT_MODEL_DIR only where the config has it (strict macros).
  init = baseline_run if "ige" in config else None
  cli.parse_gin([config], gin_overrides(records_gt, init_model_dir=init) +
                [f"{k} = {v}" for k, v in params.items()])
  return loop.model_stats(cli.make_problem())


def _martinez_params(units, blocks):
  """Trainable scalars of the Martinez et al. baseline (16 2D joints in, 16
  3D joints out, batch norm): per hidden layer a dense kernel and bias and a
  batch-norm scale and offset; the input layer, `blocks` residual blocks of
  two layers, the output dense layer."""
  def hidden(fan_in):
    return fan_in * units + units + 2 * units
  return hidden(16 * 2) + blocks * 2 * hidden(units) + units * 16 * 3 + 16 * 3


# The pose energy (eqs. 5-8): E_x over the 496 pairwise distances of 32 2D
# points and E_y over the 120 of 16 3D joints, each a 64-unit softplus layer
# and a 16-unit softabs layer (kernels and biases).
POSE_ENERGY_PARAMS = (496 * 64 + 64 + 64 * 16 + 16) + (120 * 64 + 64 + 64 * 16
                                                       + 16)


def test_model_stats_add_up_and_meet_the_size_targets(records_gt,
                                                      baseline_run):
  base = _stats("pose/b1024-2.gin", records_gt, baseline_run)
  ige8 = _stats("pose/ige8.gin", records_gt, baseline_run)
  small = _stats("pose/b128-1.gin", records_gt, baseline_run)
  # Each component against its count from the architecture; "total" counts
  # the model's trainable weights.
  assert base["trainable_params"] == {
      "initial_estimate": _martinez_params(1024, 2), "energy": 0,
      "inner_optimizer": 0, "total": _martinez_params(1024, 2)}
  assert small["trainable_params"] == {
      "initial_estimate": _martinez_params(128, 1), "energy": 0,
      "inner_optimizer": 0, "total": _martinez_params(128, 1)}
  assert ige8["trainable_params"] == {
      "initial_estimate": _martinez_params(128, 1),
      "energy": POSE_ENERGY_PARAMS, "inner_optimizer": 3,
      "total": _martinez_params(128, 1) + POSE_ENERGY_PARAMS + 3}
  # Dense multiply-adds: Martinez's 6 layers; IGE adds 2x its energies' dense
  # kernels per step (forward + gradient).
  assert base["multiply_adds"] == 32 * 1024 + 4 * 1024**2 + 1024 * 48
  assert small["multiply_adds"] == 32 * 128 + 2 * 128**2 + 128 * 48
  energy = 496 * 64 + 64 * 16 + 120 * 64 + 64 * 16
  assert ige8["multiply_adds"] == small["multiply_adds"] + 2 * 8 * energy
  # Acceptance: >= 20x fewer parameters, <= half the multiply-adds.
  assert base["trainable_params"]["total"] >= 20 * ige8["trainable_params"][
      "total"]
  assert 2 * ige8["multiply_adds"] <= base["multiply_adds"]


def test_scaled_joint_distance_is_the_original_codes_loss():
  rng = np.random.default_rng(3)
  target = rng.normal(scale=0.3, size=(3, 16, 3)).astype(np.float32)
  target[..., 2] += np.array([3.0, 5.0, 7.0])[:, None]  # camera frame
  prediction = (2.5 * target + rng.normal(scale=0.1, size=target.shape)
                ).astype(np.float32)
  got = problem_lib.scaled_joint_distance(target, prediction).numpy()
  for b in range(3):
    p, y = prediction[b].astype(np.float64), target[b].astype(np.float64)
    pelvis = (y[0] + y[3]) / 2  # midpoint of r_hip, l_hip (H36M16)
    y = y / np.linalg.norm(pelvis)
    k = np.sum(p * y) / np.sum(p * p)
    assert got[b] == pytest.approx(
        np.sum(np.linalg.norm(k * p - y, axis=-1)), rel=1e-5)
  # Invariant to the prediction's scale.
  np.testing.assert_allclose(
      problem_lib.scaled_joint_distance(target, 0.01 * prediction), got,
      rtol=1e-4)


def test_camera_frame_baseline_outputs_its_dense_layer(records_gt):
  model = models.baseline_lifter(units=8, num_blocks=1, output_frame="camera",
                                 statistics=pipeline.load_statistics(
                                     records_gt))
  assert set(model.output) == {"steps"}
  baseline = models.find_baseline(model)
  assert not baseline.standardize
  pose_2d = np.random.default_rng(4).normal(size=(2, 16, 2)).astype(
      np.float32)
  out = model({"pose_2d": pose_2d, "distortion": np.zeros((2, 5), "f")})
  # No standardization on either side: the statistics are not applied.
  raw = baseline(pose_2d)["standardized"]
  np.testing.assert_allclose(out["steps"][0], raw, rtol=1e-6)
  problem = problem_lib.PoseProblem(records_gt, lambda statistics: model,
                                    loss_type="standardized_mse")
  with pytest.raises(ValueError, match="needs a baseline model"):
    problem.loss({"pose_3d": tf.zeros((2, 16, 3)),
                  "root_3d": tf.zeros((2, 3))}, out)
  with pytest.raises(ValueError, match="output_frame must be one of"):
    models.baseline_lifter(output_frame="world")


def _trained_weights(records_gt, tmp_path, seed):
  gin.clear_config()
  cli.parse_gin(["pose/b128-1.gin"], gin_overrides(records_gt) + [
      "train.max_steps = 4", f"train.seed = {seed}",
      "PoseProblem.flip_augment = True"])
  model_dir = str(tmp_path / f"seed{seed}_{len(os.listdir(tmp_path))}")
  loop.train(cli.make_problem(), model_dir, progress=False)
  reader = tf.train.load_checkpoint(model_dir)
  # Weights, batch-norm statistics and optimizer slots.
  names = sorted(n for n in reader.get_variable_to_shape_map()
                 if n.endswith("VARIABLE_VALUE") and "_iterations" not in n)
  return {n: reader.get_tensor(n) for n in names}


def test_train_seed_drives_initialization_shuffling_and_dropout(records_gt,
                                                                tmp_path):
  first = _trained_weights(records_gt, tmp_path, seed=0)
  again = _trained_weights(records_gt, tmp_path, seed=0)
  other = _trained_weights(records_gt, tmp_path, seed=1)
  assert len(first) > 10 and first.keys() == other.keys()
  for name in first:  # same seed: the same run
    np.testing.assert_array_equal(first[name], again[name], err_msg=name)
  differ = [n for n in first if not np.allclose(first[n], other[n])]
  assert len(differ) > len(first) // 2
  # Shuffling (and flipping) follow the seed ...
  problem = problem_lib.PoseProblem(records_gt, models.baseline_lifter,
                                    flip_augment=True)
  def batch(seed):
    return next(iter(problem.dataset("train", 16, shuffle=True, seed=seed)))[
        0]["pose_2d"].numpy()
  np.testing.assert_array_equal(batch(0), batch(0))
  assert not np.allclose(batch(0), batch(1))
  # ... and so does dropout, after keras.utils.set_random_seed (as train).
  def dropped(seed):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.layers.Dropout(0.5)(tf.ones((64,)), training=True).numpy()
  np.testing.assert_array_equal(dropped(0), dropped(0))
  assert not np.array_equal(dropped(0), dropped(1))
