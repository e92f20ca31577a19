"""The generic loop on the denoising problem: train, resume, evaluate, export."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.examples.denoising import DenoisingProblem
from ige_tf.train import cli
from ige_tf.train import loop

SMALL = {"train": 256, "validation": 64, "test": 128}


def small_problem(**kwargs):
  return DenoisingProblem(split_sizes=SMALL, **kwargs)


def fast_adam():
  return loop.adam_optimizer(learning_rate=1e-2)


def test_training_makes_the_unrolled_estimate_beat_the_initial_one(tmp_path):
  problem = DenoisingProblem(split_sizes={"train": 2048, "test": 256})
  problem.split_sizes["validation"] = 128
  steps = loop.train(problem, str(tmp_path), epochs=6, batch_size=64,
                     optimizer_fn=fast_adam, progress=False,
                     summary_every_steps=20, validation_split="validation",
                     validate_every_epochs=3)
  assert steps == 6 * 2048 // 64
  metrics = loop.evaluate(problem, str(tmp_path), progress=False)
  with open(tmp_path / "metrics.json") as f:
    assert json.load(f) == metrics
  assert len(metrics["mse"]) == problem.num_steps + 1
  # Step 0 is the noisy input: its MSE is the noise variance.
  assert metrics["mse"][0] == pytest.approx(0.3 ** 2, rel=0.1)
  assert metrics["mse"][-1] < 0.6 * metrics["mse"][0]
  # TensorBoard: loss, learned inner hyper-parameters, per-step energy.
  tags = set()
  for path in glob.glob(str(tmp_path / "logs" / "train" / "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"loss", "inner/learning_rate", "inner/momentum", "inner/clip_value",
          "inner/energy/step_0", "inner/grad_norm/step_3"} <= tags
  # Validation every 3 epochs: per-step metrics at steps 96 and 192.
  steps_seen = set()
  for path in glob.glob(str(tmp_path / "logs" / "validation" / "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(v.tag == "validation/mse/step_4" for v in event.summary.value):
        steps_seen.add(event.step)
  assert steps_seen == {96, 192}


def test_resume_after_interruption_replays_the_uninterrupted_run(tmp_path):
  kwargs = dict(epochs=3, batch_size=32, optimizer_fn=fast_adam, progress=False,
                checkpoint_every_steps=5)
  full_dir, split_dir = str(tmp_path / "full"), str(tmp_path / "split")
  total = loop.train(small_problem(), full_dir, **kwargs)
  # "Killed" after 13 steps: mid-epoch, between checkpoints (last one at 10).
  assert loop.train(small_problem(), split_dir, max_steps=13, **kwargs) == 13
  for path in glob.glob(os.path.join(split_dir, "ckpt-13*")):
    os.remove(path)  # the kill came before the step-13 save
  with open(os.path.join(split_dir, "checkpoint"), "w") as f:
    f.write('model_checkpoint_path: "ckpt-10"\n'
            'all_model_checkpoint_paths: "ckpt-10"\n')
  assert loop.train(small_problem(), split_dir, **kwargs) == total == 24

  def restore(model_dir):
    problem = small_problem()
    model = problem.build_model()
    optimizer = fast_adam()
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(model=model, optimizer=optimizer, step=step).restore(
        tf.train.latest_checkpoint(model_dir)).assert_existing_objects_matched()
    return model, optimizer, int(step)

  full_model, full_opt, full_step = restore(full_dir)
  split_model, split_opt, split_step = restore(split_dir)
  assert full_step == split_step == int(split_opt.iterations) == total
  for a, b in zip(full_opt.variables, split_opt.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
  for a, b in zip(full_model.weights, split_model.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_export_reloads_with_the_keras_outputs(tmp_path):
  """In process (bin/export.py's path, the binary itself runs in
  tests/pose/test_pose_lifter.py): `loop.export` of the gin-configured run."""
  model_dir = str(tmp_path / "run")
  loop.train(small_problem(), model_dir, epochs=1, batch_size=64,
             progress=False)
  cli.parse_gin(["core/denoise.gin"])
  assert loop.export(cli.make_problem(), model_dir) == os.path.join(
      model_dir, "export")
  model = loop.restore_model(small_problem(), model_dir)
  reloaded = tf.saved_model.load(os.path.join(model_dir, "export"))
  noisy = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
  served = reloaded.signatures["serve"](noisy=tf.constant(noisy))
  expected = model({"noisy": noisy})["steps"].numpy()
  np.testing.assert_allclose(served["steps"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(served["final"], expected[-1], rtol=1e-5,
                             atol=1e-6)


def test_operative_config_records_the_model(tmp_path):
  cli.parse_gin(["core/denoise.gin"], ["train.epochs = 1",
                                      "DenoisingProblem.num_steps = 2"])
  loop.train(cli.make_problem(), str(tmp_path), progress=False)
  text = (tmp_path / "operative_config.gin").read_text()
  assert "DenoisingProblem.num_steps = 2" in text
  assert "train.epochs = 1" in text


# Run in a process of its own, whose CPU is split into two logical devices
# before TensorFlow starts (`strategies.split_cpu`).
_MIRRORED_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf, keras
from ige_tf.core import EnergyMLP, UnrolledSGD
from ige_tf.train import strategies
strategies.split_cpu(2)
from ige_tf.examples.denoising import DenoisingProblem
from ige_tf.train import loop
model_dir, split_sizes = sys.argv[1], json.loads(sys.argv[2])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategies.get_strategy("mirrored").num_replicas_in_sync == 2

# 1. UnrolledSGD's recomputed steps read the variables inside their custom
# gradient: under the strategy those must be the per-replica components.
class Energy(keras.layers.Layer):
  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.mlp = EnergyMLP((5,), 3, kernel_scale=0.5)
  def call(self, y, context, training=None):
    return self.mlp(tf.concat([y, context, y * context], axis=-1))

grads = {}
rng = np.random.default_rng(0)
y = rng.normal(size=(4, 3)).astype(np.float32)
for recompute in (False, True):
  with strategy.scope():
    keras.utils.set_random_seed(0)
    layer = UnrolledSGD(Energy(), 3, momentum=0.2, clip_value=0.5,
                        learn_learning_rate=True, learn_momentum=True,
                        learn_clip_value=True, recompute_steps=recompute)
    layer(tf.zeros((2, 3)), tf.zeros((2, 3)))
  data = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices((y, 0.5 * y)).batch(4))

  @tf.function
  def step(a, b):
    def replica(a, b):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(a, b)))
      return tape.gradient(loss, layer.trainable_variables)
    per_replica = strategy.run(replica, (a, b))
    return [strategy.reduce("SUM", g, None) for g in per_replica]

  grads[recompute] = [g.numpy() for g in step(*next(iter(data)))]
assert len(grads[True]) == 7
for want, got in zip(grads[False], grads[True]):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

# 2. The training loop trains and evaluates with two replicas.
p = DenoisingProblem(split_sizes=split_sizes)
n = loop.train(p, model_dir, epochs=1, batch_size=32, strategy="mirrored",
               progress=False)
print(json.dumps({"steps": n,
                  "mse": loop.evaluate(p, model_dir, progress=False)["mse"]}))
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
  """On two logical CPUs (one process: a TensorFlow import is ~4 CPU s):
  with `recompute_steps` the gradients of `UnrolledSGD` under a
  `MirroredStrategy` equal the stored steps' (variables read inside the
  custom gradient are per-replica components), and `train(...,
  strategy="mirrored")` takes its 8 steps and evaluates."""
  out = subprocess.run(
      [sys.executable, "-c", _MIRRORED_SCRIPT, str(tmp_path),
       json.dumps(SMALL)], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert out.returncode == 0, out.stderr[-3000:]  # the gradients' check
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["steps"] == 8
  assert all(np.isfinite(result["mse"]))


def test_mixed_precision_trains_and_restores_the_policy(tmp_path):
  steps = loop.train(small_problem(), str(tmp_path), epochs=1, batch_size=64,
                     mixed_precision=True, progress=False)
  assert steps == 4
  assert keras.mixed_precision.global_policy().name == "float32"


def test_xla_training_step(tmp_path):
  assert loop.train(small_problem(), str(tmp_path), epochs=1, batch_size=64,
                    jit_compile=True, progress=False) == 4


def test_model_stats_components_add_up():
  """In process (bin/model_stats.py's path; the binary itself runs in
  tests/pose/test_pose_runs.py)."""
  cli.parse_gin(["core/denoise.gin"])
  stats = loop.model_stats(cli.make_problem())
  # Counted from the architecture, not from the model: the energy is one
  # softabs layer, 64 units over [y - x, Dy, D^2 y] (3 * 32 - 3 = 93
  # features), kernel and bias; the inner optimizer learns its learning
  # rate, momentum and clip value. "total" counts the model's weights.
  energy = 93 * 64 + 64
  assert stats["trainable_params"] == {"energy": energy, "inner_optimizer": 3,
                                       "total": energy + 3}
  # 64 filters over [y - x, Dy, D^2 y] (3 * 32 - 3 = 93): forward and gradient.
  assert stats["multiply_adds"] == 2 * 93 * 64 * 4


GIN_FILES = sorted(os.path.relpath(p, cli.GIN_DIR) for p in glob.glob(
    os.path.join(cli.GIN_DIR, "**", "*.gin"), recursive=True))


def test_the_gin_files_are_found():
  assert {"core/denoise.gin", "pose/base.gin", "voxel/base.gin"} <= set(
      GIN_FILES)


@pytest.mark.parametrize("path", GIN_FILES)
def test_gin_file_parses_strictly(path):
  """Every gin file, experiments and the fragments they include, on its own
  (the one strict-parse test of the suite; the pose and voxel config tests
  check what the experiments configure)."""
  cli.parse_gin([os.path.join(cli.GIN_DIR, path)])
  assert gin.config_str()


def test_unknown_gin_parameter_is_a_clear_error():
  with pytest.raises(ValueError, match="No configurable matching 'trian'"):
    cli.parse_gin(["core/denoise.gin"], ["trian.epochs = 3"])
  with pytest.raises(FileNotFoundError, match="gin file 'nope.gin' not found"):
    cli.parse_gin(["nope.gin"])


def test_missing_model_dir_is_a_clear_error(tmp_path):
  """(`ige-train` without --model_dir: tests/bin/test_bin_programs.py.)"""
  with pytest.raises(FileNotFoundError, match="no checkpoint in model_dir"):
    loop.evaluate(small_problem(), str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="model_dir is required"):
    loop.train(small_problem(), "")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
  loop.train(small_problem(), str(tmp_path), epochs=1, batch_size=64,
             progress=False)
  data = glob.glob(str(tmp_path / "ckpt-4.data-*"))[0]
  with open(data, "r+b") as f:
    f.truncate(100)
  with pytest.raises(loop.CheckpointError, match="cannot restore checkpoint .*ckpt-4"):
    loop.train(small_problem(), str(tmp_path), epochs=2, batch_size=64,
               progress=False)
  with pytest.raises(loop.CheckpointError, match="corrupt"):
    loop.evaluate(small_problem(), str(tmp_path), progress=False)


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
  from ige_tf.train import strategies
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="needs the TF_CONFIG"):
    strategies.get_strategy("multi_worker")
  with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
    strategies.get_strategy("tpu")


def test_run_eagerly_takes_the_traced_step(tmp_path):
  """`run_eagerly=True` runs the step op by op (the loss sees eager tensors)
  and updates the weights and optimizer state as the traced step does."""
  runs = {}
  for eager in (False, True):
    problem = small_problem()
    loss, seen = problem.loss, []

    def spy_loss(labels, outputs, loss=loss, seen=seen):
      seen.append(tf.executing_eagerly())
      return loss(labels, outputs)

    problem.loss = spy_loss
    model_dir = str(tmp_path / f"eager_{eager}")
    assert loop.train(problem, model_dir, batch_size=32, max_steps=1,
                      optimizer_fn=fast_adam, progress=False,
                      run_eagerly=eager) == 1
    assert seen == [eager]  # traced: the loss ran once, while tracing
    runs[eager] = tf.train.latest_checkpoint(model_dir)
  names = [name for name, _ in tf.train.list_variables(runs[False])
           if name.startswith(("optimizer/", "step/"))]
  assert len(names) > 10  # the model's weights, Adam's moments, the step
  for name in names:
    traced = tf.train.load_variable(runs[False], name)
    eager = tf.train.load_variable(runs[True], name)
    np.testing.assert_allclose(eager, traced, rtol=1e-5, atol=1e-7,
                               err_msg=name)
  assert tf.train.load_variable(
      runs[True], "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 1
  moments = [tf.train.load_variable(runs[True], n) for n in names
             if n.startswith("optimizer/_variables/")]
  assert any(np.size(m) > 1 and np.any(m != 0) for m in moments)  # a real step
  models = [loop.restore_model(small_problem(), os.path.dirname(runs[eager]))
            for eager in (False, True)]
  assert len(models[0].weights) == len(models[1].weights) > 0
  for traced, eager in zip(models[0].weights, models[1].weights):
    np.testing.assert_allclose(eager.numpy(), traced.numpy(), rtol=1e-5,
                               atol=1e-7, err_msg=traced.path)
