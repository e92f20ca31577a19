"""Every ige_tf/configs/voxel experiment configures the run its name claims and its
training step runs.

Every file's `VoxelProblem` is built and its bindings checked against the
table cell the file name claims (the strict parse of every gin file is
tests/train/test_train_loop.py's); its data pipeline runs on the tiny
records; and one config per distinct training step trains one step through
the path of bin/train.py (`cli.parse_gin`, `cli.make_problem`,
`loop.train`) on tiny records, while every other config is shown to take
that same step (equal step bindings, see tests/config_steps.py, up to the
constants listed in STEP_CONSTANTS; for the Inception-ResNet-v2 configs,
equal up to the encoder, which steps in
tests/train/test_precision_xla.py::test_voxel_ige_i4).
The steps run eagerly (`train.run_eagerly = True`, and every `tf.function`
of the run, precise BN's forward pass included, under
`tf.config.run_functions_eagerly`), which gives the traced step's update
(tests/train/test_train_loop.py) without its tracing cost, which dominates a
one-step run of these models; precise BN, which ends every run, averages
over one batch (`precise_batch_norm.num_batches = 1`: the step tests check
the step, and the hook still runs; the recomputed statistics are checked in
test_voxel_problem_train.py and tests/train/test_precise_bn.py).
test_voxel_problem_train.py runs the traced IGE-MN step, evaluation and
export, and the world baseline's evaluation.
"""
import glob
import os
import re
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

import config_steps  # pylint: disable=import-error
from ige_tf.core import step_weights
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as run_lib
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
# The paper configs load ImageNet encoder weights (ENCODER_WEIGHTS =
# 'imagenet'); tests have no network, so the steps start from random weights.
OFFLINE = "ENCODER_WEIGHTS = None"
# Grid resolutions held by the tiny records (conftest.py).
RECORD_RESOLUTIONS = {"frustum": (32, 64), "world": (32,)}


def _problem(config, params=()):
  gin.clear_config()
  cli.parse_gin([config], [OFFLINE] + list(params))
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
def test_config_builds_the_run_its_name_claims(config):
  gin.clear_config()
  cli.parse_gin([config])
  macros = {m: gin.query_parameter(f"%{m}") for m in
            ("RECORDS_DIR", "RESOLUTION", "EPOCHS", "BATCH_SIZE", "NUM_STEPS")}
  assert isinstance(macros["RECORDS_DIR"], str)
  assert all(isinstance(macros[m], int) and macros[m] > 0
             for m in ("RESOLUTION", "EPOCHS", "BATCH_SIZE", "NUM_STEPS"))
  # Every voxel model has BatchNormalization: precise BN is on.
  assert gin.query_parameter("precise_batch_norm.num_batches") == 200
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
  if is_ige:
    # Memory: the configs at 64^3 and above recompute the inner steps.
    recompute = gin.get_bindings("ige_voxel_model").get("recompute_steps",
                                                        False)
    assert recompute == (problem.resolution >= 64), config


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
  with pytest.raises(ValueError, match="IGE-Net's energy pools frustum grids"):
    VoxelProblem(records_dir=voxel_records, model_fn=models.ige_voxel_model,
                 grid="world").build_model()
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


def _expected_run(config):
  """What the file name and the config's own macros promise for its run."""
  gin.clear_config()
  cli.parse_gin([config])
  own = {m: gin.query_parameter(f"%{m}") for m in
         ("RECORDS_DIR", "RESOLUTION", "NUM_STEPS", "EVAL_RESOLUTION")}
  name = os.path.basename(config)[:-4]
  is_ige = name.startswith("ige") or name == "demo"
  table4 = re.match(r"ige-(?:mn|i4)_(ciou|ce|a07|g2)_\d+$", name)
  return dict(
      own,
      model_fn="ige_voxel_model" if is_ige else "baseline_voxel_model",
      encoder="i4" if "i4" in name else "mn",
      grid="world" if "world" in name else "frustum",
      loss=LOSS_TAGS[table4.group(1) if table4 and "table4" in config
                     else "ciou"],
      num_steps=own["NUM_STEPS"] if is_ige else 0)


# Bindings a one-step run reads as plain numbers, never as a choice of
# computation: two configs differing only in them run the same ops (same
# graph, other constants), so one step covers both. The focal loss's α only
# scales its two terms (`(1 + α)`, `(1 - α)`: losses._focal_terms, no branch
# on it; γ does branch), the energy's kernel scale only scales the initial
# weights of its last kernels, and EPOCHS and the checkpoint and summary
# periods are the loop's budget and cadence (a one-step run checkpoints and
# writes its summary at its last step whatever they are). The values
# themselves are checked by test_config_builds_the_run_its_name_claims and
# the loss tests; demo.gin (kernel scale 10) also trains, evaluates and
# exports traced in test_voxel_problem_train.py.
STEP_CONSTANTS = ("voxel_loss.alpha", "ige_voxel_model.kernel_scale", "EPOCHS",
                  "train.checkpoint_every_steps", "train.summary_every_steps")


def _step_bindings():
  """The parsed config's bindings that decide a training step: gin's config
  minus RECORDS_DIR (the data), EVAL_RESOLUTION (read by evaluation only;
  training reads no evaluation grid) and STEP_CONSTANTS."""
  return config_steps.step_bindings(
      ignore=("RECORDS_DIR", "EVAL_RESOLUTION") + STEP_CONSTANTS)


def _encoder_free(bindings):
  """`bindings` with the image encoder's name blanked
  (`<model_fn>.encoder = ?`): equal for an I4 config and its MN twin."""
  return re.sub(r"^(\w+\.encoder) = '\w+'$", r"\1 = ?", bindings,
                flags=re.M)


def _step_plan(config):
  """How the step tests run `config` (see
  test_config_trains_one_strict_step)."""
  plan = _expected_run(config)
  stored = RECORD_RESOLUTIONS[plan["grid"]]
  plan["resolution"] = (plan["RESOLUTION"] if plan["RESOLUTION"] in stored
                        else max(stored))
  records_name = os.path.basename(plan["RECORDS_DIR"].rstrip("/"))
  plan["category"] = (records_name[len("shapenet_"):]
                      if records_name.startswith("shapenet_") else None)
  params = ["BATCH_SIZE = 2", f"RESOLUTION = {plan['resolution']}",
            "train.max_steps = 1", "train.run_eagerly = True",
            "train.progress = False", "precise_batch_norm.num_batches = 1",
            OFFLINE]
  eval_resolution = plan["EVAL_RESOLUTION"]
  if isinstance(eval_resolution, int) and eval_resolution not in stored:
    params.append("EVAL_RESOLUTION = None")
  plan["params"] = params
  gin.clear_config()
  cli.parse_gin([config], ["RECORDS_DIR = 'records'"] + params)
  plan["bindings"] = _step_bindings()
  return plan


def _parse_for_step(config, voxel_records, category_records):
  plan = PLANS[config]
  records = (category_records[plan["category"]] if plan["category"]
             else voxel_records)
  gin.clear_config()
  cli.parse_gin([config], [f"RECORDS_DIR = '{records}'"] + plan["params"])
  return plan, records


# Configs whose step bindings are equal form a class (CLASSES, derived from
# the parsed configs); the member needing the fewest overrides steps for its
# class (a paper config before a demo one: demo.gin trains traced in
# test_voxel_problem_train.py). The Inception-ResNet-v2 (I4) classes are MN
# classes with the image encoder swapped, and their steps are the slowest
# (the 54M-parameter trunk): every I4 class is covered by the step of its MN
# twin (equal bindings up to the encoder) plus I4_STEP's step, which runs in
# tests/train/test_precision_xla.py::test_voxel_ige_i4 (an IGE config, so the
# gradient reaches the trunk through the unrolled steps; there it also
# lowers to XLA and steps in mixed precision, on one build of the encoder
# per precision). Every I4 class has an MN twin
# (test_the_step_classes_cover_every_table_cell).
PLANS = {config: _step_plan(config) for config in EXPERIMENTS}
gin.clear_config()
CLASSES = config_steps.step_classes(
    EXPERIMENTS, {c: PLANS[c]["bindings"] for c in EXPERIMENTS},
    sort_key=lambda c: (PLANS[c]["resolution"] != PLANS[c]["RESOLUTION"],
                        PLANS[c]["category"] is not None,
                        os.path.basename(c).startswith("demo"), c))
_MN_TWINS = {_encoder_free(PLANS[m[0]]["bindings"]): m[0] for m in CLASSES
             if PLANS[m[0]]["encoder"] == "mn"}
I4_STEP = "voxel/ige-i4.gin"
STEPPED = {}  # config -> the config whose step stands for it
for _members in CLASSES:
  _stepped = _members[0]
  if PLANS[_stepped]["encoder"] == "i4":
    _stepped = _MN_TWINS.get(_encoder_free(PLANS[_stepped]["bindings"]))
  STEPPED.update({c: _stepped for c in _members})
STEPS = sorted(set(STEPPED.values()) - {None})
COVERED = [c for c in EXPERIMENTS if STEPPED[c] != c]


@pytest.mark.parametrize("config", STEPS)
def test_config_trains_one_strict_step(config, voxel_records, category_records,
                                       tmp_path):
  """One eager training step of an experiment on the tiny records.

  Overrides: RECORDS_DIR (the tiny records; a Table 5 single-category config's
  `.../shapenet_<category>` maps to records of that category only),
  BATCH_SIZE = 2, RESOLUTION capped to the largest grid in the records
  (frustum 128^3 and 256^3 configs train at 64^3), EVAL_RESOLUTION = None
  where the records lack the config's evaluation grid (evaluation only), one
  step, eager, precise BN over one batch, no progress bar. Everything else
  is the config's own.

  One MN config per step class steps (see the comment above CLASSES); the
  others are checked by test_config_shares_the_step_of_a_stepped_config.
  """
  plan, records = _parse_for_step(config, voxel_records, category_records)
  problem = cli.make_problem()

  # Spies (the real methods run): the model train builds, what the loss sees.
  seen = {}
  build_model, training_loss = problem.build_model, problem.training_loss

  def spy_build_model():
    seen["model"] = model = build_model()
    parts = [model.get_layer("3d_decoder")]
    if plan["num_steps"]:
      parts.append(model.get_layer("inner_optimizer").energy)
    seen["kernels"] = [(w, w.numpy()) for part in parts
                       for w in part.trainable_weights
                       if w.path.endswith("kernel")]
    return model

  def spy_training_loss(model, features, labels):
    value, outputs = training_loss(model, features, labels)
    # Recomputing IGE models fold the loss into the unroll (no "steps",
    # one loss per step and example instead).
    per_step = outputs["steps"] if "steps" in outputs else outputs["step_loss"]
    seen.update(steps_shape=tuple(per_step.shape[:2]),
                step_grid=tuple(per_step.shape[2:]),
                label_grid=tuple(labels[problem.grid].shape[1:]),
                synsets=set(np.asarray(labels["synset"]).tolist()),
                loss=float(value))
    return value, outputs

  problem.build_model = spy_build_model
  problem.training_loss = spy_training_loss
  model_dir = str(tmp_path / "run")
  tf.config.run_functions_eagerly(True)
  try:
    assert loop.train(problem, model_dir) == 1
    tf.config.run_functions_eagerly(False)
    model = seen["model"]
    r = plan["resolution"]
    assert seen["steps_shape"] == (plan["num_steps"] + 1, 2)
    assert seen["label_grid"] == (r, r, r)
    assert seen["step_grid"] in ((r, r, r), ()), seen["step_grid"]
    assert np.isfinite(seen["loss"]) and seen["loss"] > 0
    if plan["category"]:
      assert seen["synsets"] == {CATEGORY_SYNSETS[plan["category"]].encode()}
    assert all(np.all(np.isfinite(w.numpy())) for w in model.trainable_weights)
    # The step moved every kernel of the initial-estimate network and (IGE)
    # of the inner CNN: the gradient reached them through the unrolled steps.
    assert len(seen["kernels"]) >= (8 if plan["num_steps"] else 3)
    for weight, before in seen["kernels"]:
      assert not np.array_equal(before, weight.numpy()), weight.path
    checkpoint = tf.train.latest_checkpoint(model_dir)
    assert checkpoint.endswith("ckpt-1")
    assert tf.train.load_variable(
        checkpoint, "step/.ATTRIBUTES/VARIABLE_VALUE") == 1
    assert tf.train.load_variable(
        checkpoint, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 1
    # The run's record of its configuration.
    prefix = "ige" if plan["model_fn"] == "ige_voxel_model" else "base"
    assert model.name.startswith(f"{prefix}_{plan['encoder']}_")
    assert model.name.endswith(f"_{r}")
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
      text = config_steps.unwrap(f.read())
    loss_name, alpha, gamma = plan["loss"]
    lines = [f"VoxelProblem.model_fn = @{plan['model_fn']}",
             f"VoxelProblem.grid = '{plan['grid']}'", f"RESOLUTION = {r}",
             f"RECORDS_DIR = '{records}'", "train.run_eagerly = True",
             f"{plan['model_fn']}.encoder = '{plan['encoder']}'"]
    if loss_name == "ContinuousIoU":
      lines.append("voxel_loss.name = 'continuous_iou'")
    else:
      lines += ["voxel_loss.name = 'focal_cross_entropy'",
                f"voxel_loss.alpha = {alpha}", f"voxel_loss.gamma = {gamma}"]
    for line in lines:
      assert line in text.splitlines(), line
    assert type(problem.loss_fn).__name__ == loss_name
  finally:
    tf.config.run_functions_eagerly(False)
    shutil.rmtree(model_dir, ignore_errors=True)


@pytest.mark.parametrize("config", COVERED)
def test_config_shares_the_step_of_a_stepped_config(
    config, voxel_records, category_records):
  """A config that does not step: parsed strictly with the step overrides,
  its step bindings (gin config minus RECORDS_DIR, EVAL_RESOLUTION and
  STEP_CONSTANTS) equal those of the stepped config standing for it, so its
  step would run the same computation on its own records; an I4 config's
  equal them up to the image encoder (its stepped config is its MN twin; the
  I4 encoder steps in tests/train/test_precision_xla.py::test_voxel_ige_i4,
  on I4_STEP). Its training data is its own records (a single-category
  config's hold only that category)."""
  plan, _ = _parse_for_step(config, voxel_records, category_records)
  stepped = STEPPED[config]
  assert stepped != config and stepped in STEPS
  bindings = _step_bindings()
  if PLANS[stepped]["encoder"] == plan["encoder"]:
    assert bindings == PLANS[stepped]["bindings"]
  else:
    assert (plan["encoder"], PLANS[stepped]["encoder"]) == ("i4", "mn")
    assert _encoder_free(bindings) == _encoder_free(PLANS[stepped]["bindings"])
    assert f"{plan['model_fn']}.encoder = 'i4'" in bindings.splitlines()
  # No validation during training: EVAL_RESOLUTION cannot affect the step.
  assert "validation_split" not in bindings
  problem = cli.make_problem()
  features, labels = next(iter(problem.dataset("train", 2, shuffle=True,
                                               seed=0)))
  r = plan["resolution"]
  assert features["image"].shape == (2, 128, 128, 3)
  assert labels[plan["grid"]].shape == (2, r, r, r)
  if plan["category"]:
    assert set(labels["synset"].numpy().tolist()) == {
        CATEGORY_SYNSETS[plan["category"]].encode()}


def test_operative_config_records_the_model_bindings():
  gin.clear_config()
  cli.parse_gin(["voxel/table4/ige-mn_ce_64.gin"], [OFFLINE])
  problem = cli.make_problem()
  problem.build_model()
  text = gin.operative_config_str()
  assert "ige_voxel_model.encoder = 'mn'" in text
  assert "ige_voxel_model.num_steps = %NUM_STEPS" in text
  assert "ige_voxel_model.recompute_steps = True" in text
  # (A run rebuilt later gets these bindings from its record, `open_run`:
  # test_voxel_problem_train.py.)


def test_the_problem_hands_its_builder_resolution_image_size_and_grid():
  """Any callable builds the model: called with R, S and the grid, nothing
  looked up by its name or signature; BatchNormalization momentum set."""
  import keras  # pylint: disable=import-outside-toplevel
  calls = []

  def builder(**kwargs):
    calls.append(kwargs)
    return keras.Sequential([keras.Input((4,)),
                             keras.layers.BatchNormalization()])

  problem = VoxelProblem(records_dir="unused", model_fn=builder,
                         resolution=16, grid="world", image_size=64,
                         batch_norm_momentum=0.5)
  model = problem.build_model()
  assert calls == [{"resolution": 16, "image_size": 64, "grid": "world"}]
  assert model.layers[0].momentum == 0.5
  # IGE-Net's builder refuses the world grid itself.
  with pytest.raises(ValueError, match="grid 'world': IGE-Net's energy pools "
                     "frustum grids"):
    VoxelProblem(records_dir="unused", model_fn=models.ige_voxel_model,
                 grid="world").build_model()


@pytest.mark.parametrize("config", CONFIGS)
def test_paper_configs_use_imagenet_encoder_weights(config):
  """The paper's encoders are ImageNet-pretrained: every experiment but the
  offline demo asks for 'imagenet' (tests override it with OFFLINE)."""
  gin.clear_config()
  cli.parse_gin([config])
  demo = os.path.basename(config).startswith("demo")
  assert gin.query_parameter("%ENCODER_WEIGHTS") == (None if demo
                                                     else "imagenet")


@pytest.mark.parametrize("config", [
    "voxel/ige-mn.gin", "voxel/ige-i4.gin", "voxel/base-mn.gin",
    "voxel/base-i4.gin", "voxel/base-mn-world.gin", "voxel/base-i4-world.gin"])
def test_model_configs_pass_the_encoder_weights(config):
  """Built offline (conftest.py: no network), each model config fails on
  the ImageNet file of its own encoder: the macro reaches the builder."""
  problem = _problem(config, ["ENCODER_WEIGHTS = 'imagenet'"])
  file_name = ("inception_resnet_v2_" if "i4" in config
               else "mobilenet_v2_") + "weights_tf_dim_ordering_tf_kernels_"
  with pytest.raises(FileNotFoundError, match=file_name):
    problem.build_model()


@pytest.mark.parametrize("config", ["voxel/ige-mn.gin", "voxel/base-mn.gin"])
def test_rebuilding_a_paper_config_needs_no_imagenet_file(config,
                                                          voxel_records):
  """evaluate / export / model_stats rebuild a trained model whose
  checkpoint holds every encoder weight: offline (conftest.py), the rebuilt
  problem of a paper config (ENCODER_WEIGHTS = 'imagenet') builds, and
  counts the same parameters as the model built with random weights."""
  gin.clear_config()
  cli.parse_gin([config], [f"RECORDS_DIR = {voxel_records!r}"])
  assert gin.query_parameter("%ENCODER_WEIGHTS") == "imagenet"
  stats = loop.model_stats(run_lib.rebuildable_problem())
  reference = loop.model_stats(_problem(config, [
      f"RECORDS_DIR = {voxel_records!r}"]))
  assert stats["trainable_params"] == reference["trainable_params"]
  assert stats["trainable_params"]["total"] > 1_800_000


def test_the_step_classes_cover_every_table_cell():
  """The stepped configs differ in model, loss, resolution or budget; each
  I4 class is an MN class with the encoder swapped (the I4 encoder steps
  once, in test_precision_xla.py, on I4_STEP, an IGE config of the
  lowest resolution)."""
  assert len(CLASSES) == 16 and len(STEPPED) == len(EXPERIMENTS) == 70
  assert len(STEPS) == 8 and len(COVERED) == 62
  assert all(PLANS[c]["encoder"] == "mn" for c in STEPS)
  assert PLANS[I4_STEP]["encoder"] == "i4" and PLANS[I4_STEP]["num_steps"]
  assert PLANS[I4_STEP]["resolution"] == 32 and STEPPED[I4_STEP] in STEPS
  cells = {(PLANS[c]["model_fn"], PLANS[c]["grid"], PLANS[c]["loss"],
            PLANS[c]["resolution"]) for c in STEPS}
  # Every loss of Table 4 at both resolutions; plain cross-entropy (α = 0) is
  # stepped as the reweighted one (α = 0.7): the same ops (STEP_CONSTANTS).
  stepped_losses = {(loss, r) for model_fn, _, loss, r in cells
                    if model_fn == "ige_voxel_model"}
  for name, alpha, gamma in LOSS_TAGS.values():
    if (name, alpha, gamma) == LOSS_TAGS["ce"]:
      alpha = LOSS_TAGS["a07"][1]
    for r in (32, 64):
      assert ((name, alpha, gamma), r) in stepped_losses
  for grid in ("frustum", "world"):
    assert ("baseline_voxel_model", grid, LOSS_TAGS["ciou"], 32) in cells
  for members in CLASSES:
    stepped = STEPPED[members[0]]
    assert all(STEPPED[c] == stepped for c in members)
    assert stepped in STEPS, members  # an I4 class without an MN twin
    if PLANS[members[0]]["encoder"] == "i4":
      assert PLANS[stepped]["encoder"] == "mn", members


def test_eval_resolution_equal_to_training_resolution_writes_iou_at_r(
    voxel_records):
  """Table 5's models trained at 256^3 (EVAL_RESOLUTION = RESOLUTION = 256)
  must still write iou_256; here R = Q = 64 on the tiny records."""
  problem = VoxelProblem(records_dir=voxel_records,
                         model_fn=models.ige_voxel_model, resolution=64,
                         eval_resolution=64)
  assert problem.high_resolution() == 64
  features, labels = next(iter(problem.dataset("test", 4)))
  np.testing.assert_array_equal(labels["frustum_64"].numpy(),
                                labels["frustum"].numpy() > 0.5)
  logits = tf.random.stateless_normal([2, 4, 64, 64, 64], seed=[1, 2])
  values = problem.metrics(labels, {"steps": logits})
  np.testing.assert_array_equal(values["iou_64"].numpy(), values["iou"].numpy())
  per_category = problem.finalize_metrics(
      {"iou_64_per_category": {"02691156": [0.25, 0.5]}})
  assert per_category["iou_64_class_mean"] == [0.25, 0.5]
