"""IGE lifter assembly: the initial estimate from a trained baseline run."""
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import find_inner_optimizer
from ige_tf.pose import models
from ige_tf.train import loop
from ige_tf.pose.problem import PoseProblem


def b128_1(statistics=None):
  return models.baseline_lifter(units=128, num_blocks=1, statistics=statistics)


def _batch(records_gt):
  problem = PoseProblem(records_gt, b128_1)
  features, _ = next(iter(problem.dataset("test", 8)))
  return features


def test_initial_estimate_is_the_trained_baseline(records_gt, baseline_run):
  baseline = loop.restore_model(PoseProblem(records_gt, b128_1), baseline_run)
  ige = models.ige_lifter(num_steps=2, init_model_dir=baseline_run,
                          initial_estimate_fn=b128_1)
  features = _batch(records_gt)
  expected = baseline(features, training=False)["steps"][0]
  np.testing.assert_allclose(ige(features, training=False)["steps"][0],
                             expected, rtol=1e-6, atol=1e-6)
  # The statistics came with the checkpoint (the IGE got none of its own).
  stats = models.find_baseline(ige)
  assert float(tf.reduce_min(stats.output_std)) < 0.999


def test_frozen_initial_estimate_has_no_trainable_weights(baseline_run):
  ige = models.ige_lifter(num_steps=1, init_model_dir=baseline_run,
                          initial_estimate_fn=b128_1,
                          train_initial_estimate=False)
  inner = find_inner_optimizer(ige)
  assert len(ige.trainable_weights) == len(inner.trainable_weights) == 3 + 8


def test_zero_steps_returns_the_initial_estimate(records_gt, baseline_run):
  ige = models.ige_lifter(num_steps=0, init_model_dir=baseline_run,
                          initial_estimate_fn=b128_1)
  baseline = loop.restore_model(PoseProblem(records_gt, b128_1), baseline_run)
  features = _batch(records_gt)
  out = ige(features, training=False)
  # The one "step" is the trained baseline's estimate; no inner steps.
  assert out["steps"].shape == (1, 8, 16, 3)
  np.testing.assert_allclose(out["steps"][0],
                             baseline(features, training=False)["steps"][0],
                             rtol=1e-6, atol=1e-6)
  assert out["energy"].shape == (0, 8)
  assert not find_inner_optimizer(ige).trainable_weights
  with pytest.raises(ValueError, match="nothing is trainable"):
    models.ige_lifter(num_steps=0, init_model_dir=baseline_run,
                      initial_estimate_fn=b128_1,
                      train_initial_estimate=False)


def test_init_model_dir_errors_name_the_problem(baseline_run, tmp_path):
  with pytest.raises(FileNotFoundError,
                     match="INIT_MODEL_DIR .* has no checkpoint"):
    models.ige_lifter(init_model_dir=str(tmp_path), initial_estimate_fn=b128_1)
  # The train loop's checkpoint error, naming the checkpoint, the mismatch
  # and the likely cause.
  with pytest.raises(loop.CheckpointError,
                     match=r"baseline checkpoint .*b128-1/ckpt-\d+ "
                     r"\(INIT_MODEL_DIR\).*shape \(128,\).*\(256,\).*"
                     r"same baseline architecture") as error:
    models.ige_lifter(init_model_dir=baseline_run,
                      initial_estimate_fn=lambda statistics=None:
                      models.baseline_lifter(units=256, num_blocks=1))
  assert "delete it" not in str(error.value)
