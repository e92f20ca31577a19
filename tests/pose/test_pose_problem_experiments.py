"""Every experiment config under ige_tf/configs/pose: strict parse and one
training step.

Each config is pointed at the tiny generated records (and, for IGE, at a
b128-1 run) through the macros a user overrides on the command line
(`RECORDS_DIR`, `EPOCHS`, `BATCH_SIZE`, `INIT_MODEL_DIR`) and parsed
strictly. One config per distinct training step (equal step bindings, see
tests/config_steps.py) trains one step; every other config is shown to take
that same step. The step runs eagerly: tracing the unrolled second-order
graph of every config would take minutes, and eager execution runs the same
ops. Precise BN, which ends every run, averages over one batch
(`precise_batch_norm.num_batches = 1`; the default, one epoch of the tiny
records, is 72 eager forward passes, 90 % of an IGE-16 step test): the hook
still runs after each config's step; the statistics it computes are checked
in tests/train/test_precise_bn.py.
"""
import glob
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

import config_steps  # pylint: disable=import-error
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


def _parse_for_step(config, records, init_model_dir):
  """Parses `config` strictly with the step overrides (the test data and
  budget, one step, precise BN over one batch); returns its step bindings
  (gin config minus RECORDS_DIR and INIT_MODEL_DIR, which the overrides set
  to the same records and baseline run for every config)."""
  gin.clear_config()
  # INIT_MODEL_DIR only where the config has it (macros are strict).
  if "ige" not in os.path.basename(config):
    init_model_dir = None
  cli.parse_gin([config], gin_overrides(records, epochs=3, batch_size=4,
                                        init_model_dir=init_model_dir) +
                ["train.max_steps = 1", "precise_batch_norm.num_batches = 1"])
  return config_steps.step_bindings(ignore=("RECORDS_DIR", "INIT_MODEL_DIR"))


# Configs whose step bindings are equal form a class (e.g. a Table 1 row's
# gt/sh/ft configs differ only in their records and baseline run, which the
# tests replace); the member nearest ige_tf/configs/pose (then by name) steps for its
# class.
BINDINGS = {c: _parse_for_step(c, "records", "baseline_run")
            for c in EXPERIMENTS}
gin.clear_config()
CLASSES = config_steps.step_classes(EXPERIMENTS, BINDINGS,
                                    sort_key=lambda c: (c.count("/"), c))
STEPPED = {c: members[0] for members in CLASSES for c in members}
STEPS = [members[0] for members in CLASSES]
COVERED = [c for c in EXPERIMENTS if STEPPED[c] != c]


@pytest.mark.parametrize("config", STEPS)
def test_config_trains_one_step(config, records_gt, baseline_run, tmp_path,
                                eager):
  del eager
  assert _parse_for_step(config, records_gt, baseline_run) == BINDINGS[config]
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


@pytest.mark.parametrize("config", COVERED)
def test_config_shares_the_step_of_a_stepped_config(config, records_gt,
                                                    baseline_run):
  """A config that does not step: parsed strictly with the real step
  overrides, its step bindings equal those of the stepped config of its
  class, so its step would run the same computation; the overrides reached
  its problem."""
  stepped = STEPPED[config]
  assert stepped != config and stepped in STEPS
  assert _parse_for_step(config, records_gt, baseline_run) == BINDINGS[stepped]
  problem = cli.make_problem()
  assert problem.records_dir == records_gt
  if "ige" in os.path.basename(config):
    assert gin.query_parameter("%INIT_MODEL_DIR") == baseline_run


def test_the_step_classes_cover_every_experiment():
  """Every Figure 4 point steps; a Table 1 row's gt/sh/ft configs share
  the step of its model config."""
  assert len(STEPPED) == len(EXPERIMENTS) == 52
  assert len(STEPS) == 25
  for steps in (0, 1, 2, 6, 12, 16):
    assert f"pose/figure4/ige_{steps}.gin" in STEPS
  for model in ("b1024-2", "b128-1", "ige4", "ige8"):
    for source in ("gt", "sh", "ft"):
      assert STEPPED[f"pose/table1/{model}_{source}.gin"] == f"pose/{model}.gin"
      assert (STEPPED[f"pose/table1/{model}_paper_{source}.gin"] ==
              f"pose/{model}_paper.gin")
  assert STEPPED["pose/figure4/ige_4.gin"] == "pose/ige4.gin"
  assert STEPPED["pose/figure4/base_1024x2.gin"] == "pose/b1024-2.gin"
