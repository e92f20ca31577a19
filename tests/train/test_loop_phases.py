"""The training loop's phases, one at a time (ige_tf/train/loop.py,
ige_tf/train/checkpoints.py): options, build, restore, step, summaries,
checkpoint, validate, finish. The whole loop is tested in test_train_loop.py
and test_train_run.py."""
import dataclasses
import glob
import inspect
import os

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.examples.denoising import DenoisingProblem
from ige_tf.train import checkpoints
from ige_tf.train import loop
from ige_tf.train.problem import Problem

SMALL = {"train": 256, "validation": 64, "test": 128}


def _events(directory):
  """{tag: {step: value}} of the TensorBoard scalars under `directory`."""
  scalars = {}
  for path in glob.glob(os.path.join(directory, "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = float(
            tf.make_ndarray(value.tensor))
  return scalars


class DropoutBNProblem(Problem):
  """Regression of 2 targets from 4 offset inputs by Dense, BatchNorm,
  Dropout, Dense: a model with BN statistics and a random state."""

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    rng = np.random.default_rng({"train": 0, "test": 1}[split])
    x = (5.0 + 3.0 * rng.standard_normal((32, 4))).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :2] - x[:, 2:]))
    if shuffle:
      data = data.shuffle(32, seed=seed)
    return data.batch(batch_size)

  def build_model(self):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    steps = keras.layers.Reshape((1, 2))(keras.layers.Dense(2)(x))
    return keras.Model(inputs, {"steps": steps})  # [B, 1, 2]

  def loss(self, labels, outputs):
    return tf.reduce_mean(tf.square(outputs["steps"][:, -1] - labels))

  def metrics(self, labels, outputs):
    steps = tf.transpose(outputs["steps"], [1, 0, 2])  # [T+1, B, 2]
    return {"mse": tf.reduce_mean(tf.square(steps - labels), axis=-1)}


def test_train_config_holds_exactly_the_train_bindings_with_their_defaults():
  """Every `train.<name>` gin binding is a `TrainConfig` field with the same
  default, and nothing else is."""
  params = dict(inspect.signature(loop.train).parameters)
  assert list(params)[:2] == ["problem", "model_dir"]
  defaults = {name: p.default for name, p in list(params.items())[2:]}
  fields = {f.name: f.default for f in dataclasses.fields(loop.TrainConfig)}
  assert defaults == fields


@pytest.mark.parametrize("binding, value, message", [
    ("checkpoint_every_steps", 0, "train.checkpoint_every_steps must be >= 1, "
     "got 0"),
    ("summary_every_steps", -5, "train.summary_every_steps must be >= 1"),
    ("validate_every_epochs", 0, "train.validate_every_epochs must be >= 1"),
    ("batch_size", 0, "train.batch_size must be >= 1, got 0"),
    ("epochs", -1, "train.epochs must be >= 0"),
    ("max_steps", -1, "train.max_steps must be >= 0"),
    ("epochs", 2.5, "train.epochs must be an integer, got 2.5"),
])
def test_a_bad_option_is_an_error_naming_the_binding_before_any_write(
    tmp_path, binding, value, message):
  gin.bind_parameter(f"train.{binding}", value)
  model_dir = tmp_path / "run"
  with pytest.raises(ValueError, match=message):
    loop.train(DenoisingProblem(split_sizes=SMALL), str(model_dir))
  assert not model_dir.exists()


def test_total_steps_is_epochs_of_batches_or_max_steps():
  assert loop.TrainConfig(epochs=3).total_steps(4) == 12
  assert loop.TrainConfig(epochs=3, max_steps=10).total_steps(4) == 10
  assert loop.TrainConfig(epochs=3, max_steps=20).total_steps(4) == 12
  assert loop.TrainConfig(epochs=0).total_steps(4) == 0


def test_precision_policy_is_put_back_even_after_an_error():
  assert keras.mixed_precision.global_policy().name == "float32"
  with pytest.raises(RuntimeError, match="inside"):
    with loop.precision_policy(True):
      assert keras.mixed_precision.global_policy().name == "mixed_float16"
      raise RuntimeError("inside")
  assert keras.mixed_precision.global_policy().name == "float32"
  with loop.precision_policy(False):
    assert keras.mixed_precision.global_policy().name == "float32"


def test_build_makes_a_mixed_precision_model_and_a_built_loss_scale_optimizer():
  problem = DenoisingProblem(split_sizes=SMALL, num_steps=2)
  config = loop.TrainConfig(mixed_precision=True)
  with loop.precision_policy(config.mixed_precision):
    state = loop.build(problem, config)
  assert isinstance(state.optimizer, keras.optimizers.LossScaleOptimizer)
  assert state.model.dtype_policy.name == "mixed_float16"
  assert all(v.dtype == "float32" for v in state.model.trainable_variables)
  # Built: Adam's two moments of every trainable variable exist already, so
  # a checkpoint can be restored into them before the first step.
  moments = [v.path for v in state.optimizer.variables
             if v.path.endswith(("_momentum", "_velocity"))]
  assert len(moments) == 2 * len(state.model.trainable_variables)
  assert int(state.step) == 0 and state.step.dtype == tf.int64
  assert sorted(state.objects) == ["model", "optimizer", "rng", "step"]


def _build(problem, seed=0):
  keras.utils.set_random_seed(seed)
  return loop.build(problem, loop.TrainConfig())


def test_checkpoint_phase_saves_at_the_period_and_at_epoch_ends(tmp_path):
  """Period 3, epochs of 4 steps: saves at 3, 4 (epoch end), 6, 8 (epoch
  end), not again at the end of training; the latest 3 are kept, each
  holding its own step."""
  state = _build(DenoisingProblem(split_sizes=SMALL, num_steps=1))
  saver = checkpoints.Checkpoints(state.objects, str(tmp_path), every_steps=3)
  saved = []
  for step in range(1, 9):
    state.step.assign(step)
    if saver.after_step(step):
      saved.append(step)
    if step % 4 == 0:
      saver.save(step)
      saved.append(step)
  assert saved == [3, 4, 6, 8]
  assert saver.save_final(8) is None  # the epoch end saved step 8 already
  kept = tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths
  assert [os.path.basename(p) for p in kept] == ["ckpt-4", "ckpt-6", "ckpt-8"]
  for path in kept:
    assert tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE") == (
        int(path.split("-")[-1]))
  assert saver.save_final(8, changed=True).endswith("ckpt-8")
  state.step.assign(9)
  assert saver.save_final(9).endswith("ckpt-9")  # stopped mid-period


def test_restore_phase_resumes_weights_step_and_dropout_masks(tmp_path):
  problem = DropoutBNProblem()
  assert checkpoints.resume(_build(problem).objects, str(tmp_path)) is None
  state = _build(problem)
  for variable in state.model.trainable_variables:
    variable.assign(variable + 0.25)
  state.step.assign(5)
  (rng,) = checkpoints.random_states(state.model)
  rng.assign_add(tf.ones_like(rng) * 7)
  saved = checkpoints.Checkpoints(state.objects, str(tmp_path), 1).save(5)
  x = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
  expected = state.model(x, training=True)["steps"].numpy()  # draws a mask

  restored = _build(problem)  # the same initial state as `state` had
  assert checkpoints.resume(restored.objects, str(tmp_path)) == saved
  assert int(restored.step) == 5
  for a, b in zip(restored.model.weights, state.model.weights):
    if a.trainable:
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  # The random state came back: the next dropout mask is the one the
  # uninterrupted model drew after the save.
  np.testing.assert_array_equal(
      restored.model(x, training=True)["steps"].numpy(), expected)


def test_restore_phase_refuses_a_checkpoint_of_another_model(tmp_path):
  state = _build(DenoisingProblem(split_sizes=SMALL, num_steps=1))
  checkpoints.Checkpoints(state.objects, str(tmp_path), 1).save(1)
  other = _build(DenoisingProblem(split_sizes=SMALL, num_steps=1,
                                  learn_momentum=False))
  with pytest.raises(loop.CheckpointError,
                     match="ckpt-1: .*written by a different model "
                     "configuration"):
    checkpoints.resume(other.objects, str(tmp_path))


class NanAfterFiveSteps(DenoisingProblem):
  """The denoising problem whose training loss turns NaN at its 6th step."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)

  def training_loss(self, model, features, labels):
    loss, outputs = super().training_loss(model, features, labels)
    self.calls.assign_add(1)
    return tf.where(self.calls > 5, tf.constant(np.nan, loss.dtype), loss), (
        outputs)


def test_step_calls_training_loss_and_a_nan_loss_names_the_last_checkpoint(
    tmp_path):
  with pytest.raises(FloatingPointError,
                     match=r"training loss is nan at step 6; last good "
                     r"checkpoint: \S*/ckpt-4\n"):
    loop.train(NanAfterFiveSteps(split_sizes=SMALL), str(tmp_path),
               batch_size=32, checkpoint_every_steps=2, progress=False)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")


def test_finite_loss_returns_the_loss():
  assert loop.finite_loss({"loss": tf.constant(0.5)}, 1, None) == 0.5
  with pytest.raises(FloatingPointError, match="inf at step 3; last good "
                     "checkpoint: None"):
    loop.finite_loss({"loss": tf.constant(np.inf)}, 3, None)


def test_summaries_phase_writes_at_the_period_and_at_the_last_step(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path))
  summaries = loop.TrainSummaries(writer, loop.adam_optimizer(1e-3), [],
                                  every_steps=3, total_steps=7)
  written = [step for step in range(1, 8) if summaries.after_step(
      step, {"loss": tf.constant(10.0 * step),
             "energy": tf.constant([2.0, 1.0])})]
  summaries.flush()
  assert written == [3, 6, 7]
  scalars = _events(str(tmp_path))
  assert scalars["loss"] == {3: 30.0, 6: 60.0, 7: 70.0}
  assert scalars["inner/energy/step_1"] == {3: 1.0, 6: 1.0, 7: 1.0}
  assert scalars["outer/learning_rate"][7] == pytest.approx(1e-3)


def test_validate_phase_writes_logs_validation_at_the_configured_epochs(
    tmp_path):
  problem = DenoisingProblem(split_sizes=SMALL, num_steps=2)
  state = _build(problem)
  strategy = tf.distribute.get_strategy()
  off = loop.Validation(problem, state.model, str(tmp_path / "off"), strategy,
                        loop.TrainConfig())
  assert off.after_epoch(8, 4) is None
  assert not (tmp_path / "off").exists()

  config = loop.TrainConfig(validation_split="validation",
                            validate_every_epochs=2, batch_size=64)
  validation = loop.Validation(problem, state.model, str(tmp_path), strategy,
                               config)
  # 4 steps per epoch: epochs 1, 2, 3, 4 end at steps 4, 8, 12, 16.
  done = {step: validation.after_epoch(step, 4) for step in (4, 6, 8, 12, 16)}
  assert [step for step, metrics in done.items() if metrics] == [8, 16]
  expected = loop.compute_metrics(problem, state.model, "validation", 64,
                                  progress=False)
  assert done[16] == expected
  scalars = _events(str(tmp_path / "logs" / "validation"))
  assert set(scalars["validation/mse/step_2"]) == {8, 16}
  assert scalars["validation/mse/final"][16] == pytest.approx(
      expected["mse"][-1])


def test_finish_recomputes_bn_keeps_random_states_and_saves_the_last_step(
    tmp_path):
  problem = DropoutBNProblem()
  state = _build(problem)
  saver = checkpoints.Checkpoints(state.objects, str(tmp_path), 1000)
  state.step.assign(5)
  (bn,) = [layer for layer in state.model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
  (rng,) = checkpoints.random_states(state.model)
  rng_before = rng.numpy()
  assert loop.finish(problem, state, saver, loop.TrainConfig(batch_size=8)) == 5
  np.testing.assert_array_equal(rng.numpy(), rng_before)
  # Precise BN read the whole training split (4 batches of 8): the moving
  # mean is the mean of the BN layer's inputs over it.
  features = np.concatenate([x for x, _ in problem.dataset("train", 32)])
  np.testing.assert_allclose(
      bn.moving_mean.numpy(),
      state.model.layers[1](features).numpy().mean(axis=0), rtol=1e-5,
      atol=1e-5)
  final = tf.train.latest_checkpoint(str(tmp_path))
  assert final.endswith("ckpt-5")
  restored = loop.restore_model(problem, str(tmp_path))
  (restored_bn,) = [layer for layer in restored.layers
                    if isinstance(layer, keras.layers.BatchNormalization)]
  np.testing.assert_array_equal(restored_bn.moving_mean.numpy(),
                                bn.moving_mean.numpy())
