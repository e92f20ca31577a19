"""Shared pose fixtures: a tiny generated Human3.6M, its records, trained runs.

Built once per test run (`build_once`: session-scoped, shared by the
pytest-xdist workers), so every pose test (the data readers' and the
models') reads the same files: a synthetic Human3.6M in the Martinez layout
(S1 for training, S9 and S11 for testing; the 6 default actions, one take
of 12 frames each, 4 cameras; S11 "Directions" lacks detections for camera
54138969 as in the real data), prepared through `prepare_h36m` exactly like
real data (records: train 6 x 12 x 4 = 288 examples, test 576, sh test 564),
a b128-1 run trained for a few steps on it (the INIT_MODEL_DIR of IGE
tests) and an IGE-4 run from it.
"""
import gin
import pytest

from ige_tf.pose.data import prepare
from ige_tf.pose.data import synthetic
from ige_tf.train import cli
from ige_tf.train import loop

SYNTHETIC_SUBJECTS = ("S1", "S9", "S11")
SYNTHETIC_FRAMES = 12
# Its S1 and S9 have take names with a space ("Directions 1", "Sitting 1").
SYNTHETIC_SEED = 1


@pytest.fixture(scope="session")
def synthetic_h36m(build_once):
  """The synthetic `h36m/` folder (Martinez layout)."""
  def build(out):
    synthetic.make_synthetic_h36m(out, frames_per_sequence=SYNTHETIC_FRAMES,
                                  takes=1, subjects=SYNTHETIC_SUBJECTS,
                                  seed=SYNTHETIC_SEED, progress=False)
  return build_once("h36m", build)[0]


def _prepare(source, h36m_dir, build_once):
  def build(out):
    prepare.prepare_h36m(out, source, h36m_dir=h36m_dir,
                         subjects=SYNTHETIC_SUBJECTS, progress=False)
  return build_once(f"records_{source}", build)[0]


@pytest.fixture(scope="session")
def records_gt(synthetic_h36m, build_once):
  """Records with ground-truth 2D (train 288, test 576 examples)."""
  return _prepare("gt", synthetic_h36m, build_once)


@pytest.fixture(scope="session")
def records_sh(synthetic_h36m, build_once):
  """Records with stacked-hourglass-like detections (one camera skipped:
  train 288, test 564 examples)."""
  return _prepare("sh", synthetic_h36m, build_once)


def gin_overrides(records, epochs=1, batch_size=16, init_model_dir=None):
  """The gin bindings that point an experiment at test data and budget."""
  params = [f"RECORDS_DIR = {records!r}", f"EPOCHS = {epochs}",
            f"BATCH_SIZE = {batch_size}", "PoseProblem.shuffle_buffer = 64"]
  if init_model_dir is not None:
    params.append(f"INIT_MODEL_DIR = {init_model_dir!r}")
  return params


@pytest.fixture(scope="session")
def baseline_run(records_gt, build_once):
  """A b128-1 run (ige_tf/configs/pose/b128-1.gin) trained for 18 steps on
  `records_gt`: the INIT_MODEL_DIR of IGE tests."""
  def build(model_dir):
    gin.clear_config()
    cli.parse_gin(["pose/b128-1.gin"], gin_overrides(records_gt))
    loop.train(cli.make_problem(), model_dir, progress=False)
    gin.clear_config()
  return build_once("b128-1", build)[0]


@pytest.fixture(scope="session")
def ige_run(records_gt, baseline_run, build_once):
  """An IGE-4 run (ige_tf/configs/pose/ige4.gin from `baseline_run`): 3 training steps,
  evaluated (metrics.json) and exported (export/). Train and evaluate run
  eagerly (tracing the unrolled second-order graph is the slow part)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def build(model_dir):
    gin.clear_config()
    cli.parse_gin(["pose/ige4.gin"], gin_overrides(
        records_gt, batch_size=32, init_model_dir=baseline_run) +
                  ["train.max_steps = 3", "evaluate.batch_size = 256"])
    problem = cli.make_problem()
    tf.config.run_functions_eagerly(True)
    try:
      loop.train(problem, model_dir, progress=False)
      loop.evaluate(problem, model_dir, progress=False)
    finally:
      tf.config.run_functions_eagerly(False)
    loop.export(problem, model_dir)
    gin.clear_config()
  return build_once("ige4", build)[0]
