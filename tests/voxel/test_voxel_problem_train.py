"""One strict-gin training step, evaluation, export and Figure 6 for the MN
IGE and baseline experiments on tiny generated records.

IGE-MN runs through ige_tf/configs/voxel/demo.gin (= ige-mn.gin with a small budget)
with one inner step (`RUN_PARAMS`: the traced graphs grow with the unrolled
steps; three cost 12 CPU s more, and the eager config steps of
test_voxel_problem_configs.py run the configs' 3 steps), traced
(`tf.function`: training step, precise BN, evaluation, export) as in a real
run, once per test run (`build_once`: the pytest-xdist workers share it). The world-aligned MN baseline runs through
ige_tf/configs/voxel/base-mn-world.gin eagerly (the same loop and metrics as
the traced IGE run; tracing was most of its cost). Every distinct training
step of the experiment configs runs eagerly in test_voxel_problem_configs.py
(the Inception-ResNet-v2 (I4) encoder's in
tests/train/test_precision_xla.py::test_voxel_ige_i4).
"""
import json
import os
import subprocess
import sys

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import precise_bn
from ige_tf.train import run as run_lib
from ige_tf.voxel import visualize
from ige_tf.voxel.data import pipeline

# The IGE-MN run's bindings on top of demo.gin, and its number of inner steps.
RUN_STEPS = 1
RUN_PARAMS = (f"NUM_STEPS = {RUN_STEPS}",)
TABLE2_ROWS = ("image_encoder", "3d_decoder", "image_decoder", "inner_cnn",
               "inner_optimizer")


def _problem(config, records_dir, extra=()):
  gin.clear_config()
  cli.parse_gin([config], [f"RECORDS_DIR = '{records_dir}'", "BATCH_SIZE = 2",
                           "train.max_steps = 1", "evaluate.batch_size = 2",
                           "train.progress = False",
                           "evaluate.progress = False",
                           "ENCODER_WEIGHTS = None", *extra])
  return cli.make_problem()


def _numpy_iou(truth, logits):
  """IoU per step and example: bool [B, R, R, R], float [T+1, B, R, R, R]."""
  predicted = logits > 0.0  # sigmoid(z) > 0.5
  truth = truth[None] > 0.5
  inter = np.logical_and(predicted, truth).sum(axis=(2, 3, 4))
  union = np.logical_or(predicted, truth).sum(axis=(2, 3, 4))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _numpy_upsampled_iou(truth_high, logits):
  """Reference trilinear (half-pixel centres, edge clamp) upsampling IoU."""
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  size, high = probs.shape[-1], truth_high.shape[-1]
  factor = high // size
  coords = (np.arange(high) + 0.5) / factor - 0.5
  lo = np.clip(np.floor(coords).astype(int), 0, size - 1)
  hi = np.clip(lo + 1, 0, size - 1)
  w = np.clip(coords - np.floor(coords), 0, 1)
  w = np.where(coords < 0, 0.0, w)
  up = probs
  for axis in (2, 3, 4):
    shape = [1] * up.ndim
    shape[axis] = high
    up = (np.take(up, lo, axis=axis) * (1 - w).reshape(shape)
          + np.take(up, hi, axis=axis) * w.reshape(shape))
  predicted = up > 0.5
  truth = truth_high[None]
  inter = np.logical_and(predicted, truth).sum(axis=(2, 3, 4))
  union = np.logical_or(predicted, truth).sum(axis=(2, 3, 4))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.fixture(scope="module")
def ige_run(voxel_records, build_once):
  """IGE-MN trained one step via demo.gin, evaluated and exported (built
  once per test run; tests must not write into its directory).

  Returns:
    (problem, model_dir, steps: int returned by `train`, metrics: dict
    returned by `evaluate` (through JSON), export_dir).
  """
  def build(model_dir):
    problem = _problem("voxel/demo.gin", voxel_records, RUN_PARAMS)
    steps = loop.train(problem, model_dir)
    metrics = loop.evaluate(problem, model_dir)
    export_dir = loop.export(problem, model_dir)
    gin.clear_config()
    return {"steps": steps, "metrics": metrics,
            "export": os.path.relpath(export_dir, model_dir)}

  model_dir, run = build_once("voxel_ige_mn_run", build)
  problem = _problem("voxel/demo.gin", voxel_records, RUN_PARAMS)
  gin.clear_config()
  return (problem, model_dir, run["steps"], run["metrics"],
          os.path.join(model_dir, run["export"]))


def _restore(model_dir):
  """The trained model of the run in `model_dir`, rebuilt from the run's
  record (`open_run`: its RUN_PARAMS included, which a problem built under
  gin no longer sees once the config is cleared)."""
  with run_lib.open_run(model_dir) as loaded:
    return loaded.model


def test_ige_step_and_evaluation_metrics(ige_run, voxel_records):
  _, model_dir, steps, metrics, _ = ige_run
  assert steps == 1
  with open(os.path.join(model_dir, "metrics.json")) as f:
    assert json.load(f) == metrics
  assert "VoxelProblem.records_dir" in open(
      os.path.join(model_dir, "operative_config.gin")).read()
  num_steps = RUN_STEPS + 1
  for key in ("iou", "iou_64", "iou_class_mean", "iou_64_class_mean"):
    assert len(metrics[key]) == num_steps, key
  assert set(metrics["iou_per_category"]) == {"02691156", "03001627"}
  assert metrics["categories"] == {"02691156": "plane", "03001627": "chair"}
  # Class mean = unweighted mean over categories (Table 3).
  np.testing.assert_allclose(
      metrics["iou_class_mean"],
      np.mean(list(metrics["iou_per_category"].values()), axis=0))
  # The numbers equal a numpy IoU of the restored model's logits.
  model = _restore(model_dir)
  data = pipeline.voxel_dataset(voxel_records, "test", 32, 4,
                                grids=("frustum",))
  features, labels = next(iter(data))
  high = next(iter(pipeline.voxel_dataset(voxel_records, "test", 64, 4,
                                          grids=("frustum",))))[1]["frustum"]
  logits = model(features, training=False)["steps"].numpy()
  assert logits.shape == (num_steps, 4, 32, 32, 32)
  iou = _numpy_iou(labels["frustum"].numpy(), logits)
  # Graph (batch 2) vs eager (batch 4) float differences may flip a voxel
  # whose probability is within ~1e-6 of 0.5: a tolerance of a few voxels.
  np.testing.assert_allclose(metrics["iou"], iou.mean(axis=1), atol=5e-4)
  synsets = labels["synset"].numpy()
  for synset, values in metrics["iou_per_category"].items():
    np.testing.assert_allclose(
        values, iou[:, synsets == synset.encode()].mean(axis=1), atol=1e-3)
  iou64 = _numpy_upsampled_iou(high.numpy() > 0.5, logits)
  np.testing.assert_allclose(metrics["iou_64"], iou64.mean(axis=1), atol=2e-3)


def test_final_checkpoint_holds_precise_bn_statistics(ige_run):
  """train ends with precise BN (voxel/base.gin): the restored moving
  statistics are those recomputed over the training batches."""
  problem, model_dir, _, _, _ = ige_run
  model = _restore(model_dir)
  norms = precise_bn.batch_norm_layers(model)
  assert len(norms) > 10
  restored = [l.moving_mean.numpy() for l in norms]
  # train seeds every random generator (train.seed = 0) before it draws the
  # precise-BN batches; so does this pass, which may run in another process
  # than the run's (build_once), where no training has set the seeds.
  keras.utils.set_random_seed(0)
  assert precise_bn.precise_batch_norm(problem, model, 2, seed=0) == 4
  for layer, mean in zip(norms, restored):
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4,
                               atol=1e-5, err_msg=layer.path)
  # VoxelProblem.batch_norm_momentum still reaches every BN layer.
  gin.clear_config()
  cli.parse_gin(["voxel/demo.gin"], ["VoxelProblem.batch_norm_momentum = 0.9",
                                     f"RECORDS_DIR = '{problem.records_dir}'"])
  built = cli.make_problem().build_model()
  assert all(l.momentum == 0.9 for l in precise_bn.batch_norm_layers(built))


def test_restore_recovers_every_trained_weight(ige_run):
  """Includes the inner CNN's listed level CNNs (`core.track_sublayers`)."""
  _, model_dir, _, _, _ = ige_run
  first, second = _restore(model_dir), _restore(model_dir)
  inner = [w.path for w in first.get_layer("inner_optimizer").energy.weights]
  assert len(inner) == 2 * 4 * 2  # 4 levels x 2 convolutions x (kernel, bias)
  for a, b in zip(first.weights, second.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_run_is_rebuilt_from_its_record_whatever_the_callers_config(
    ige_run):
  """The builder's bindings come from the run's record (`open_run`), not
  from the caller's gin config, which here describes another IGE-MN (64^3,
  2 steps): the run's 32^3, 1-step model with demo.gin's kernel scale is
  restored, and the caller's config is intact afterwards."""
  _, model_dir, _, _, _ = ige_run
  cli.parse_gin(["voxel/ige-mn.gin"], ["NUM_STEPS = 2", "RESOLUTION = 64",
                                       "ENCODER_WEIGHTS = None"])
  before = gin.config_str()
  with run_lib.open_run(model_dir) as loaded:
    model = loaded.model
  inner = model.get_layer("inner_optimizer")
  assert (model.name, inner.num_steps) == ("ige_mn_32", RUN_STEPS)
  assert inner.energy.kernel_scale == 10.0
  assert gin.config_str() == before


def test_export_reloads_with_the_keras_outputs(ige_run):
  _, model_dir, _, _, export_dir = ige_run
  model = _restore(model_dir)
  image = np.random.default_rng(0).uniform(size=(2, 128, 128, 3)).astype(
      np.float32)
  reloaded = tf.saved_model.load(export_dir)  # keep: it owns the variables
  served = reloaded.signatures["serve"](image=tf.constant(image))
  expected = tf.sigmoid(model({"image": image}, training=False)["steps"]).numpy()
  assert served["steps"].shape == (RUN_STEPS + 1, 2, 32, 32, 32)
  np.testing.assert_allclose(served["steps"], expected, atol=1e-5)
  np.testing.assert_allclose(served["final"], expected[-1], atol=1e-5)


def test_visualize_writes_figure6(ige_run, voxel_records, tmp_path, repo_dir):
  _, _, _, metrics, export_dir = ige_run
  out = str(tmp_path / "fig6.png")
  result = visualize.figure6_from_records(export_dir, voxel_records, out,
                                          split="test", indices=(0, 1), dpi=50)
  assert result["png"] == out and os.path.getsize(out) > 1000
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert len(result["iou"]) == 2 and len(result["iou"][0]) == RUN_STEPS + 1
  assert all(0.0 <= v <= 1.0 for row in result["iou"] for v in row)
  assert [e["view"] for e in result["examples"]] == [0, 1]
  # The binary, on the run directory (finds export/ itself).
  out2 = str(tmp_path / "fig6_bin.png")
  proc = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "visualize.py"),
       "--task=voxel", f"--model={os.path.dirname(export_dir)}",
       f"--records_dir={voxel_records}", "--num_examples=1", "--dpi=40",
       f"--out={out2}"], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  assert printed["png"] == out2 and os.path.exists(out2)
  with pytest.raises(FileNotFoundError, match="not a SavedModel"):
    visualize.load_predictor(str(tmp_path))


def test_world_baseline_step_uses_the_world_grid(voxel_records, tmp_path):
  problem = _problem("voxel/base-mn-world.gin", voxel_records)
  model_dir = str(tmp_path)
  tf.config.run_functions_eagerly(True)
  try:
    assert loop.train(problem, model_dir) == 1
    metrics = loop.evaluate(problem, model_dir)
  finally:
    tf.config.run_functions_eagerly(False)
  assert len(metrics["iou"]) == 1
  # No world grid above 32^3 in the records: no upsampled metric.
  assert not any(k.startswith("iou_") and k[4:].isdigit() for k in metrics)
  model = _restore(model_dir)
  assert "_world_" in model.name
  features, labels = next(iter(pipeline.voxel_dataset(
      voxel_records, "test", 32, 4, grids=("world",))))
  logits = model(features, training=False)["steps"].numpy()
  np.testing.assert_allclose(
      metrics["iou"], _numpy_iou(labels["world"].numpy(), logits).mean(axis=1),
      atol=5e-4)
  # Figure 6's loader on the run directory (no export/): rebuilt from the
  # run's record, the caller's config (another experiment) left as it was.
  gin.clear_config()
  cli.parse_gin(["voxel/demo.gin"])
  before = gin.config_str()
  predict = visualize.load_predictor(model_dir)
  assert gin.config_str() == before
  assert visualize.model_grid(model_dir) == "world"
  np.testing.assert_allclose(predict(features["image"].numpy()),
                             tf.sigmoid(logits).numpy(), atol=1e-5)


def test_table2_components_and_multiply_adds():
  gin.clear_config()
  cli.parse_gin(["voxel/ige-mn.gin"], ["ENCODER_WEIGHTS = None"])
  stats = loop.model_stats(cli.make_problem())
  params = stats["trainable_params"]
  assert set(params) == set(TABLE2_ROWS) | {"total"}
  assert sum(params[k] for k in TABLE2_ROWS) == params["total"]
  assert params["inner_optimizer"] == 2   # learning rate and clip value
  assert params["image_encoder"] == 1_811_712   # Table 2, IGE MN2
  assert stats["multiply_adds"] > 0
  gin.clear_config()
  cli.parse_gin(["voxel/base-mn.gin"], ["ENCODER_WEIGHTS = None"])
  base = loop.model_stats(cli.make_problem())["trainable_params"]
  assert base["image_encoder"] == 2_223_872     # Table 2, Base MN2
  assert base["inner_cnn"] == base["image_decoder"] == base["inner_optimizer"] == 0



def test_figure6_draws_models_side_by_side_each_in_its_own_grid(
    voxel_records, tmp_path):
  """A frustum "model" predicting the frustum ground truth and a world one
  predicting the world ground truth both score IoU 1 in their own frame; an
  empty prediction scores 0."""
  from ige_tf.voxel.data import inspection  # pylint: disable=import-outside-toplevel
  folder = os.path.join(voxel_records, "test")
  examples = [inspection.read_example(folder, i)[0] for i in (0, 2)]
  frustum = np.stack([e.frustum[32] for e in examples]).astype(np.float32)
  world = np.stack([e.world[32] for e in examples]).astype(np.float32)
  steps = [np.stack([np.zeros_like(frustum), frustum]), world[None]]
  out = str(tmp_path / "fig6.png")
  result = visualize.figure6(out, examples, steps, kind=["frustum", "world"],
                             labels=["IGE", "world baseline"], dpi=40)
  assert [r["kind"] for r in result["runs"]] == ["frustum", "world"]
  assert result["runs"][0]["iou"] == [[0.0, 1.0], [0.0, 1.0]]
  assert result["runs"][1]["iou"] == [[1.0], [1.0]]
  # Columns: input/ground truth, 2 IGE steps, world ground truth, baseline.
  assert result["size"] == [int(round(2.3 * 5 * 40)),
                            int(round((5.7 * 2 + 0.6) * 40))]
  assert os.path.getsize(out) > 1000
  with pytest.raises(ValueError, match="2 models but 2 kinds and 1 labels"):
    visualize.figure6(out, examples, steps, kind=["frustum", "world"],
                      labels=["IGE"])
  assert visualize.category_name("02691156") == "plane"
