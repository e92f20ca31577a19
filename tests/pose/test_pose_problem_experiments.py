"""Every experiment config under ige_tf/configs/pose: strict parse and one
training step.

Each config is pointed at the tiny generated records (and, for IGE, at a
b128-1 run) through the macros a user overrides on the command line
(`RECORDS_DIR`, `EPOCHS`, `BATCH_SIZE`, `INIT_MODEL_DIR`), parsed strictly
and trained for one step. The step runs eagerly: tracing the unrolled
second-order graph of every config would take minutes, and eager execution
runs the same ops.
"""
import glob
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from conftest import gin_overrides  # pylint: disable=import-error
from ige_tf.train import cli
from ige_tf.train import loop

GIN_POSE = os.path.join(cli.GIN_DIR, "pose")
# Fragments included by experiments (not experiments themselves); they are
# parsed on their own by tests/train's every-gin-file test.
FRAGMENTS = ("base.gin", "models")
EXPERIMENTS = sorted(
    os.path.relpath(p, cli.GIN_DIR)
    for p in glob.glob(os.path.join(GIN_POSE, "**", "*.gin"), recursive=True)
    if os.path.relpath(p, GIN_POSE).split(os.sep)[0] not in FRAGMENTS)


def test_every_table1_and_figure4_experiment_exists():
  names = set(EXPERIMENTS)
  for source in ("gt", "sh", "ft"):
    for model in ("b1024-2", "b128-1", "ige4", "ige8"):
      assert f"pose/table1/{model}_{source}.gin" in names
      assert f"pose/table1/{model}_paper_{source}.gin" in names
  for units in (128, 256, 512, 1024):
    for blocks in (1, 2):
      assert f"pose/figure4/base_{units}x{blocks}.gin" in names
  for steps in (0, 1, 2, 4, 6, 8, 12, 16):
    assert f"pose/figure4/ige_{steps}.gin" in names
  assert {"pose/b1024-2.gin", "pose/b128-1.gin", "pose/ige4.gin",
          "pose/ige8.gin", "pose/demo_b128-1.gin",
          "pose/demo_ige4.gin", "pose/b128-1_paper.gin",
          "pose/b1024-2_paper.gin", "pose/ige4_paper.gin",
          "pose/ige8_paper.gin", "pose/demo_b128-1_paper.gin",
          "pose/demo_ige4_paper.gin"} <= names


@pytest.fixture
def eager():
  tf.config.run_functions_eagerly(True)
  yield
  tf.config.run_functions_eagerly(False)


@pytest.mark.parametrize("config", EXPERIMENTS)
def test_config_trains_one_step(config, records_gt, baseline_run, tmp_path,
                                eager):
  del eager
  gin.clear_config()
  # INIT_MODEL_DIR only where the config has it (strict macros).
  init = baseline_run if "ige" in config else None
  cli.parse_gin([config], gin_overrides(records_gt, epochs=3, batch_size=4,
                                        init_model_dir=init) +
                ["train.max_steps = 1"])
  problem = cli.make_problem()
  # The command-line macros reached their configurables.
  assert problem.records_dir == records_gt
  assert loop.train(problem, str(tmp_path), progress=False) == 1
  text = (tmp_path / loop.OPERATIVE_CONFIG).read_text()
  for line in ("BATCH_SIZE = 4", "EPOCHS = 3", "train.batch_size = %BATCH_SIZE",
               "train.epochs = %EPOCHS", f"RECORDS_DIR = {records_gt!r}"):
    assert line in text
  stats = problem.last_model_stats
  arch = stats["architecture"]
  if "ige" in os.path.basename(config):
    assert arch["kind"] == "ige"
    assert f"INIT_MODEL_DIR = {baseline_run!r}" in text
    assert (arch["units"], arch["blocks"]) == (128, 1)
  else:
    assert arch["kind"] == "baseline"
  # The paper author's formulation reaches the baseline (also IGE's).
  paper = "_paper" in config
  assert ("baseline_lifter.output_frame = 'camera'" in text) == paper
  assert ("PoseProblem.loss_type = 'scaled_joint_distance'" in text) == paper
  # Every saved value (weights, optimizer slots) is finite after the step.
  reader = tf.train.load_checkpoint(str(tmp_path))
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if np.asarray(value).dtype.kind == "f":
      assert np.all(np.isfinite(value)), name
