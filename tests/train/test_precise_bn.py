"""Precise BN: recomputed moving statistics make inference mode usable."""
import logging

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.train import loop
from ige_tf.train import precise_bn
from ige_tf.train.problem import Problem


def _inputs(num, seed):
  """float32 [num, 4]: far from BN's initial statistics (mean 0, var 1)."""
  rng = np.random.default_rng(seed)
  return (5.0 + 3.0 * rng.standard_normal((num, 4))).astype(np.float32)


def _bn_model(momentum=0.999, seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((4,))
  x = keras.layers.Dense(8)(inputs)
  x = keras.layers.BatchNormalization(momentum=momentum)(x)
  x = keras.layers.ReLU()(x)
  return keras.Model(inputs, keras.layers.Dense(2)(x))


class TinyBNProblem(Problem):
  """Regress 2 linear targets of 4 offset inputs with a BN model."""

  sizes = {"train": 64, "test": 32}

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    x = _inputs(self.sizes[split], {"train": 1, "test": 2}[split])
    y = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=-1) / 3.0
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
      data = data.shuffle(len(x), seed=seed)
    return data.batch(batch_size)

  def build_model(self):
    return _bn_model()

  def loss(self, labels, outputs):
    return tf.reduce_mean(tf.square(outputs["steps"][-1] - labels))

  def metrics(self, labels, outputs):
    return {"mse": tf.reduce_mean(tf.square(outputs["steps"] - labels), -1)}


class TinyStepsProblem(TinyBNProblem):
  """The same model with the loop's output convention `{"steps": [1, B, 2]}`."""

  def build_model(self):
    inner = _bn_model()
    inputs = keras.Input((4,))
    steps = keras.layers.Reshape((1, 2))(inner(inputs))
    steps = keras.layers.Permute((2, 1))(steps)  # [B, 2, 1] -> [1, B, 2] below
    return keras.Model(inputs, {"steps": steps})

  def loss(self, labels, outputs):
    return tf.reduce_mean(tf.square(self._steps(outputs) - labels))

  def metrics(self, labels, outputs):
    return {"mse": tf.reduce_mean(tf.square(self._steps(outputs) - labels), -1)}

  @staticmethod
  def _steps(outputs):
    return tf.transpose(outputs["steps"], [2, 0, 1])  # [1, B, 2]


def test_inference_outputs_equal_training_outputs_on_the_batch_used():
  model = _bn_model()
  batch = tf.constant(_inputs(16, 0))
  training = model(batch, training=True).numpy()
  model.get_layer(index=2).moving_mean.assign(tf.zeros(8))  # undo that update
  model.get_layer(index=2).moving_variance.assign(tf.ones(8))
  weights = [w.numpy() for w in model.trainable_weights]
  # Initial moving statistics: inference mode is far off.
  assert np.abs(model(batch, training=False).numpy() - training).max() > 1.0
  used = precise_bn.update_statistics(
      model, tf.data.Dataset.from_tensors((batch, batch)), num_batches=5)
  assert used == 1
  np.testing.assert_allclose(model(batch, training=False).numpy(), training,
                             atol=1e-4)
  for before, after in zip(weights, model.trainable_weights):
    np.testing.assert_array_equal(before, after.numpy())  # no weight update
  assert model.get_layer(index=2).momentum == 0.999  # restored


def test_statistics_are_example_weighted_means_of_batch_statistics():
  inputs = keras.Input((4,))
  model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
  x = _inputs(10, 3)
  data = tf.data.Dataset.from_tensor_slices(x).batch(4)  # sizes 4, 4, 2
  assert precise_bn.update_statistics(model, data, num_batches=100) == 3
  batches = [x[:4], x[4:8], x[8:]]
  expected_var = sum(len(b) * b.var(axis=0) for b in batches) / 10
  layer = precise_bn.batch_norm_layers(model)[0]
  np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean(axis=0),
                             rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(), expected_var,
                             rtol=1e-4)
  # num_batches bounds the pass: the first batch only.
  assert precise_bn.update_statistics(model, data, num_batches=1) == 1
  np.testing.assert_allclose(layer.moving_mean.numpy(), x[:4].mean(axis=0),
                             rtol=1e-5)


def test_empty_dataset_and_bad_num_batches_are_errors_that_keep_statistics():
  model = _bn_model()
  layer = precise_bn.batch_norm_layers(model)[0]
  layer.moving_mean.assign(tf.fill([8], 3.0))
  empty = tf.data.Dataset.from_tensor_slices(_inputs(4, 0)).batch(2).take(0)
  with pytest.raises(ValueError, match="yielded no batch"):
    precise_bn.update_statistics(model, empty, num_batches=3)
  with pytest.raises(ValueError, match="num_batches must be >= 1"):
    precise_bn.update_statistics(model, empty, num_batches=0)
  np.testing.assert_array_equal(layer.moving_mean.numpy(), np.full(8, 3.0))


def _train(model_dir, num_batches):
  gin.bind_parameter("precise_batch_norm.num_batches", num_batches)
  problem = TinyStepsProblem()
  loop.train(problem, model_dir, epochs=2, batch_size=16, progress=False,
             optimizer_fn=lambda: loop.adam_optimizer(learning_rate=1e-2))
  return problem


def _gap(problem, model_dir):
  model = loop.restore_model(problem, model_dir)
  features, labels = next(iter(problem.dataset("test", 32)))
  return precise_bn.inference_gap(problem, model, features, labels)["mse"]


def test_train_saves_precise_statistics_and_evaluate_warns_without(
    tmp_path, caplog):
  # 8 steps at momentum 0.999: moving statistics stay near (0, 1).
  off = _train(str(tmp_path / "off"), num_batches=0)
  training_mse, inference_mse = _gap(off, str(tmp_path / "off"))
  assert inference_mse > 2 * training_mse
  with caplog.at_level(logging.WARNING):
    loop.evaluate(off, str(tmp_path / "off"), progress=False)
  assert "batch-norm moving statistics look unusable" in caplog.text
  assert "mse" in caplog.text and str(tmp_path / "off") in caplog.text

  on = _train(str(tmp_path / "on"), num_batches=200)
  training_mse, inference_mse = _gap(on, str(tmp_path / "on"))
  # The restored final checkpoint holds the recomputed statistics.
  assert inference_mse == pytest.approx(training_mse, rel=0.1)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    loop.evaluate(on, str(tmp_path / "on"), progress=False)
  assert "look unusable" not in caplog.text


def test_gross_differences_uses_relative_and_absolute_tolerances():
  gap = {"iou": (0.566, 0.0), "close": (0.50, 0.45), "tiny": (1e-5, 0.0)}
  assert precise_bn.gross_differences(gap) == {"iou": (0.566, 0.0)}


def test_inference_gap_compares_batch_norm_only_not_dropout():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((4,))
  x = keras.layers.Dropout(0.9)(keras.layers.Dense(64)(inputs))
  model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
  batch = tf.constant(_inputs(32, 0))
  # BN statistics of this batch without dropout: the only remaining
  # difference between the modes would be dropout (rate 0.9), which the
  # check must not count.
  dropout = model.layers[2]
  dropout.rate = 0.0
  precise_bn.update_statistics(model, tf.data.Dataset.from_tensors(batch), 1)
  dropout.rate = 0.9

  class Identity(Problem):
    def metrics(self, labels, outputs):
      return {"mean_abs": tf.reduce_mean(tf.abs(outputs), -1)[None]}

  gap = precise_bn.inference_gap(Identity(), model, batch, None)
  training, inference = gap["mean_abs"]
  assert training == pytest.approx(inference, rel=1e-4)
  assert dropout.rate == 0.9
