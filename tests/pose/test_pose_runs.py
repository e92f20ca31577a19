"""Pose runs from their directory alone (docs/reliability.md): evaluation
and model statistics need no gin files, a mismatched config is refused, and a
resumed run with dropout continues bit for bit."""
import json
import os
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run

from conftest import gin_overrides  # tests/pose/conftest.py
import programs  # pylint: disable=import-error


@pytest.fixture
def baseline_copy(baseline_run, tmp_path):
  model_dir = str(tmp_path / "b128-1")
  shutil.copytree(baseline_run, model_dir)
  return model_dir


def test_evaluate_from_model_dir_alone_matches_the_gin_files(
    baseline_copy, records_gt):
  cli.parse_gin(["pose/b128-1.gin"], gin_overrides(records_gt) +
                ["evaluate.progress = False"])
  expected = loop.evaluate(cli.make_problem(), baseline_copy)
  gin.clear_config()
  with run.open_run(baseline_copy, gin_params=["evaluate.progress = False"],
                    restore=False) as loaded:
    assert loop.evaluate(loaded.problem, baseline_copy) == expected
  assert expected["protocol2_mm"][0] > 0


def test_a_b128_run_evaluated_with_an_ige_config_is_refused(
    baseline_copy, records_gt):
  metrics = os.path.join(baseline_copy, "metrics.json")
  with open(metrics, "w") as f:
    f.write('{"protocol2_mm": [51.0]}')
  # What bin/evaluate.py --model_dir=D --gin_file=pose/demo_ige4.gin does.
  with pytest.raises(run.ConfigMismatchError) as error:
    with run.open_run(baseline_copy, ["pose/demo_ige4.gin"],
                      gin_overrides(records_gt), restore=False) as loaded:
      loop.evaluate(loaded.problem, baseline_copy)
  message = str(error.value)
  assert "PoseProblem.model_fn: run @baseline_lifter, given @ige_lifter" in message
  assert "PoseProblem.loss_type: run 'standardized_mse', given 'scaled_l2'" in message
  with open(metrics) as f:
    assert f.read() == '{"protocol2_mm": [51.0]}'


@pytest.fixture(scope="module")
def program_runs(baseline_run, build_once):
  """In one process (`programs.run_programs`; built once per test run), in
  an empty directory (no records/, no runs/): `bin/model_stats.py
  --gin_file=pose/ige8.gin`, then `bin/visualize.py --model=<baseline_run>
  --index=5 --out=<dir>/figure3.png`.
  `(the directory, [result of each run])`."""
  def build(root):
    bin_dir = os.path.join(programs.REPO_DIR, "bin")
    return programs.run_programs([
        ("model_stats", [os.path.join(bin_dir, "model_stats.py"),
                         "--gin_file=pose/ige8.gin"]),
        ("visualize", [os.path.join(bin_dir, "visualize.py"),
                       f"--model={baseline_run}",
                       "--index=5",
                       f"--out={os.path.join(root, 'figure3.png')}"])],
                                 cwd=root)
  return build_once("pose_program_runs", build)


def test_model_stats_of_ige8_need_no_data_and_no_initial_run(
    records_gt, baseline_run, program_runs):
  out = program_runs[1][0]
  assert out["code"] == 0 and out["raised"] is None, out
  stats = json.loads(out["out"].strip().splitlines()[-1])
  # The same counts as the model built from real statistics and baseline.
  cli.parse_gin(["pose/ige8.gin"], gin_overrides(
      records_gt, init_model_dir=baseline_run))
  assert stats == loop.model_stats(cli.make_problem())
  assert stats["trainable_params"]["energy"] > 0


def test_resume_with_dropout_is_bit_identical(records_gt, tmp_path):
  """b128-1 has dropout: its random states are checkpointed ("rng"), so a
  run stopped at step 7 and resumed equals the uninterrupted run."""
  def train(model_dir, max_steps=None):
    gin.clear_config()
    cli.parse_gin(["pose/b128-1.gin"], gin_overrides(records_gt) + [
        "train.progress = False", "train.checkpoint_every_steps = 7",
        f"train.max_steps = {max_steps}"])
    return loop.train(cli.make_problem(), model_dir)

  full, split = str(tmp_path / "full"), str(tmp_path / "split")
  assert train(full) == 18
  assert train(split, max_steps=7) == 7
  assert train(split) == 18
  readers = [tf.train.load_checkpoint(os.path.join(d, "ckpt-18"))
             for d in (full, split)]
  names = [n for n in readers[0].get_variable_to_shape_map()
           if not n.startswith(("save_counter", "_CHECKPOINTABLE"))]
  assert any(n.startswith("rng/") for n in names)
  for name in names:
    np.testing.assert_array_equal(readers[0].get_tensor(name),
                                  readers[1].get_tensor(name), err_msg=name)


def test_visualize_from_the_run_directory_alone(program_runs):
  """bin/visualize.py --model=<run> finds the run's records itself."""
  root, (_, proc) = program_runs
  assert proc["code"] == 0 and proc["raised"] is None, proc
  out = os.path.join(root, "figure3.png")
  result = json.loads(proc["out"].strip().splitlines()[-1])
  assert result["png"] == out and os.path.getsize(out) > 0


def test_loading_a_lifter_leaves_a_notebook_gin_config_as_it_was(ige_run):
  """`Lifter.from_run` / `inference.load_lifter` rebuild the run's IGE-4
  from its record while the caller's gin config describes another
  experiment (IGE-8); that config is intact afterwards, nothing added."""
  from ige_tf.pose import inference  # pylint: disable=import-outside-toplevel
  from ige_tf.pose import lifter as lifter_lib  # pylint: disable=import-outside-toplevel
  cli.parse_gin(["pose/ige8.gin"], ["RECORDS_DIR = '/nowhere'"])
  gin.bind_parameter("evaluate.batch_size", 7)
  before = gin.config_str()
  assert lifter_lib.Lifter.from_run(ige_run).view_scale > 0
  rng = np.random.default_rng(0)
  lifted = inference.load_lifter(ige_run)(
      rng.uniform(400, 600, (2, 16, 2)), np.full((2, 2), 1000.0),
      np.full((2, 2), 500.0), np.zeros((2, 3)), np.zeros((2, 2)))
  assert lifted["steps"].shape == (4 + 1, 2, 16, 3)  # the run's 4 steps
  assert np.isfinite(lifted["steps"]).all()
  assert gin.config_str() == before
  assert gin.query_parameter("%NUM_STEPS") == 8
  assert gin.query_parameter("evaluate.batch_size") == 7
  # The caller's INIT_MODEL_DIR, not the run's.
  assert gin.query_parameter("%INIT_MODEL_DIR") == "runs/pose/b128-1"
