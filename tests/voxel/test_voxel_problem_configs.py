"""Every gin/voxel experiment parses strictly and configures the right run.

A training step per configuration is too slow for the unit tests (tracing
one MobileNetV2 IGE step takes ~30 s on 2 cores, Inception-ResNet-v2 ~135 s);
test_voxel_problem_train.py trains the MN IGE and baseline models through
their configs. Here every file is parsed strictly, its `VoxelProblem` built,
its bindings checked against the table cell the file name claims, and its
data pipeline run on the tiny records.
"""
import glob
import os
import re

import gin
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import step_weights
from ige_tf.train import cli
from ige_tf.voxel import losses
from ige_tf.voxel import models
from ige_tf.voxel.problem import VoxelProblem

GIN_VOXEL = os.path.join(cli.GIN_DIR, "voxel")
CONFIGS = sorted(os.path.relpath(p, cli.GIN_DIR) for p in glob.glob(
    os.path.join(GIN_VOXEL, "**", "*.gin"), recursive=True))
EXPERIMENTS = [c for c in CONFIGS if c != "voxel/base.gin"]
LOSS_TAGS = {"ciou": ("ContinuousIoU", None, None),
             "ce": ("FocalCrossEntropy", 0.0, 0.0),
             "a07": ("FocalCrossEntropy", 0.7, 0.0),
             "g2": ("FocalCrossEntropy", 0.0, 2.0)}
CATEGORY_SYNSETS = {"car": "02958343", "plane": "02691156", "table": "04379243"}


def _problem(config, params=()):
  gin.clear_config()
  cli.parse_gin([config], list(params))
  return cli.make_problem()


def test_the_tables_have_their_configs():
  names = set(CONFIGS)
  for base in ("ige-mn", "ige-i4", "base-mn", "base-i4", "base-mn-world",
               "base-i4-world"):
    assert f"voxel/{base}.gin" in names
    assert f"voxel/table3/{base}.gin" in names
  assert {"voxel/base.gin", "voxel/demo.gin"} <= names
  table4 = [c for c in names if c.startswith("voxel/table4/")]
  table5 = [c for c in names if c.startswith("voxel/table5/")]
  assert len(table4) == 2 * 4 * 3   # model x loss x resolution
  assert len(table5) == 2 * 4 * 4   # model x (13 cat. + 3 single) x resolution


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses_strictly_and_builds_its_problem(config):
  gin.clear_config()
  cli.parse_gin([config])
  macros = {m: gin.query_parameter(f"%{m}") for m in
            ("RECORDS_DIR", "RESOLUTION", "EPOCHS", "BATCH_SIZE", "NUM_STEPS")}
  assert isinstance(macros["RECORDS_DIR"], str)
  assert all(isinstance(macros[m], int) and macros[m] > 0
             for m in ("RESOLUTION", "EPOCHS", "BATCH_SIZE", "NUM_STEPS"))
  if config == "voxel/base.gin":
    return  # shared settings only: the model configs set model_fn
  problem = cli.make_problem()
  assert isinstance(problem, VoxelProblem)
  name = os.path.basename(config)[:-4]
  is_ige = name.startswith("ige") or name == "demo"
  assert problem.model_fn.__name__ == ("ige_voxel_model" if is_ige
                                       else "baseline_voxel_model")
  assert problem.grid == ("world" if "world" in name else "frustum")
  encoder = gin.query_parameter(
      ("ige_voxel_model" if is_ige else "baseline_voxel_model") + ".encoder")
  assert encoder == ("i4" if "i4" in name else "mn")
  if is_ige:
    assert repr(gin.query_parameter("ige_voxel_model.num_steps")) == "%NUM_STEPS"
  assert problem.resolution == gin.query_parameter("%RESOLUTION")
  match = re.match(r"ige-(mn|i4)_(\w+)_(\d+)$", name)
  if "table3" in config:
    assert problem.resolution == 32
    assert isinstance(problem.loss_fn, losses.ContinuousIoU)
  if "table4" in config:
    loss_cls, alpha, gamma = LOSS_TAGS[match.group(2)]
    assert type(problem.loss_fn).__name__ == loss_cls
    if alpha is not None:
      assert (problem.loss_fn.alpha, problem.loss_fn.gamma) == (alpha, gamma)
    assert problem.resolution == int(match.group(3))
  if "table5" in config:
    assert isinstance(problem.loss_fn, losses.ContinuousIoU)
    assert problem.resolution == int(match.group(3))
    assert problem.eval_resolution == 256
    group = match.group(2)
    if group != "13":
      assert problem.records_dir.endswith(group)
      assert CATEGORY_SYNSETS[group]  # a Table 5 column


def test_each_config_reads_the_tiny_records(voxel_records):
  """Every experiment's data pipeline, pointed at the tiny records at 32^3."""
  seen = set()
  for config in EXPERIMENTS:
    problem = _problem(config, [f"RECORDS_DIR = '{voxel_records}'",
                                "RESOLUTION = 32", "EVAL_RESOLUTION = 'highest'"])
    key = (problem.grid,)
    if key in seen:
      continue
    seen.add(key)
    data = problem.dataset("test", 2)
    assert int(data.cardinality()) == 2
    features, labels = next(iter(data))
    assert features["image"].shape == (2, 128, 128, 3)
    assert labels[problem.grid].shape == (2, 32, 32, 32)
    if problem.grid == "frustum":
      # Evaluation also carries the 64^3 grid for iou_64.
      assert labels["frustum_64"].shape == (2, 64, 64, 64)
      assert labels["frustum_64"].dtype == tf.bool
      # Pooling the 64^3 grid 2x2x2 with "any" gives a 32^3 grid that
      # contains the 32^3 grid's occupied cells almost everywhere
      # (both are conservative voxelizations of the same surface).
      high = labels["frustum_64"].numpy().reshape(2, 32, 2, 32, 2, 32, 2)
      coarse = high.any(axis=(2, 4, 6))
      low = labels["frustum"].numpy() > 0.5
      assert np.mean(coarse[low]) > 0.9
    else:
      assert not any(k.startswith("world_") for k in labels)
  assert seen == {("frustum",), ("world",)}


def test_loss_is_the_paper_multistep_loss():
  rng = np.random.default_rng(0)
  labels = (rng.uniform(size=(2, 32, 32, 32)) > 0.7).astype(np.float32)
  steps = rng.normal(size=(3, 2, 32, 32, 32)).astype(np.float32)
  for name, alpha, gamma in (("continuous_iou", 0.0, 0.0),
                             ("focal_cross_entropy", 0.7, 0.0),
                             ("focal_cross_entropy", 0.0, 2.0)):
    problem = VoxelProblem(records_dir="unused", model_fn=models.ige_voxel_model,
                           loss_fn=losses.voxel_loss(name, alpha, gamma))
    p = 1.0 / (1.0 + np.exp(-steps.astype(np.float64)))
    y = labels[None].astype(np.float64)
    if name == "continuous_iou":
      inter = (p * y).sum(axis=(2, 3, 4))
      per = 1.0 - (inter + 1e-6) / ((p + y).sum(axis=(2, 3, 4)) - inter + 1e-6)
    else:
      per = -(y * (1 - p) ** gamma * (1 + alpha) * np.log(p)
              + (1 - y) * p ** gamma * (1 - alpha) * np.log(1 - p)).sum(
                  axis=(2, 3, 4))
    expected = float((np.asarray(step_weights(2)) * per.mean(axis=1)).sum())
    got = float(problem.loss({"frustum": labels}, {"steps": steps}))
    assert got == pytest.approx(expected, rel=1e-4)


def test_bad_settings_are_clear_errors(voxel_records):
  with pytest.raises(ValueError, match="use grid='frustum' with ige_voxel_model"):
    VoxelProblem(records_dir=voxel_records, model_fn=models.ige_voxel_model,
                 grid="world")
  with pytest.raises(ValueError, match="grid must be one of"):
    VoxelProblem(records_dir=voxel_records, model_fn=models.ige_voxel_model,
                 grid="camera")
  problem = VoxelProblem(records_dir=voxel_records,
                         model_fn=models.ige_voxel_model, eval_resolution=256)
  with pytest.raises(ValueError, match=re.escape(voxel_records)
                     + r".*no frustum grids at R=256.*\[32, 64\]"):
    problem.dataset("test", 2)
  problem = VoxelProblem(records_dir=voxel_records,
                         model_fn=models.ige_voxel_model, image_size=64)
  with pytest.raises(ValueError, match="128x128 images but VoxelProblem.image_size is 64"):
    problem.dataset("train", 2)
  problem = VoxelProblem(records_dir=voxel_records,
                         model_fn=models.ige_voxel_model)
  with pytest.raises(ValueError, match="no split 'val'; available: \\['test', 'train'\\]"):
    problem.dataset("val", 2)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    VoxelProblem(records_dir=voxel_records + "_nope",
                 model_fn=models.ige_voxel_model).dataset("train", 2)
  # 'highest' with nothing above R: no upsampled metric.
  assert VoxelProblem(records_dir=voxel_records, model_fn=models.ige_voxel_model,
                      resolution=64).high_resolution() is None
  assert VoxelProblem(records_dir=voxel_records,
                      model_fn=models.baseline_voxel_model,
                      grid="world").high_resolution() is None
