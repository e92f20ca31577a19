"""Activations, energy networks, multi-step loss, and layer serialization."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import (EnergyConv2D, EnergyMLP, MultiStepLoss, UnrolledSGD,
                         softabs, softplus, step_weights)
from ige_tf.examples.denoising import DenoisingEnergy


def test_softplus_and_softabs_values():
  x = np.array([-30.0, -2.0, 0.0, 0.5, 30.0])
  sp = np.log1p(np.exp(x))
  np.testing.assert_allclose(softplus(tf.constant(x)), sp, rtol=1e-12)
  np.testing.assert_allclose(softabs(tf.constant(x)),
                             (sp + np.log1p(np.exp(-x))) / 2, rtol=1e-12)
  # Even, minimum log(2) at 0, ~|x|/2 far away.
  assert float(softabs(tf.constant(0.0))) == pytest.approx(np.log(2))
  assert float(softabs(tf.constant(30.0))) == pytest.approx(15.0, rel=1e-6)


def test_energy_mlp_output_layer_is_scaled_glorot():
  keras.utils.set_random_seed(0)
  mlp = EnergyMLP((64,), 32, kernel_scale=1e-3)
  energy = mlp(tf.random.normal((5, 100)))
  assert energy.shape == (5,)
  hidden_limit = np.sqrt(6 / (100 + 64))
  out_limit = 1e-3 * np.sqrt(6 / (64 + 32))
  hidden = mlp.hidden_layers[0].kernel.numpy()
  output = mlp.output_layer.kernel.numpy()
  assert np.abs(hidden).max() <= hidden_limit
  assert np.abs(hidden).max() > 0.9 * hidden_limit
  assert np.abs(output).max() <= out_limit
  assert np.abs(output).max() > 0.9 * out_limit


def test_energy_conv2d_shapes_and_valid_padding():
  conv = EnergyConv2D(filters=(4, 3), kernel_sizes=((3, 3), (2, 2)))
  x = tf.random.normal((2, 6, 6, 5))
  energy = conv(x)
  assert energy.shape == (2,)
  # VALID 3x3 then 2x2 on 6x6 leaves 3x3x3 softabs outputs, each >= log 2.
  assert np.all(energy.numpy() >= 27 * np.log(2) - 1e-4)
  with pytest.raises(ValueError, match="2 filters but 3 kernel sizes"):
    EnergyConv2D(filters=(4, 3), kernel_sizes=(3, 3, 3))


def test_multi_step_loss_weights_and_value():
  np.testing.assert_allclose(step_weights(3, 0.9), [0.729, 0.81, 0.9, 1.0],
                             rtol=1e-6)
  labels = tf.constant([[1.0], [2.0]])
  steps = tf.constant([[[0.0], [0.0]], [[1.0], [1.0]], [[1.0], [2.0]]])
  loss = MultiStepLoss(lambda y, p: tf.reduce_sum(tf.abs(p - y), -1), decay=0.5)
  np.testing.assert_allclose(loss.per_step(labels, steps), [1.5, 0.5, 0.0])
  assert float(loss(labels, steps)) == pytest.approx(0.25 * 1.5 + 0.5 * 0.5)


@pytest.mark.parametrize("make_layer", [
    lambda: EnergyMLP((3, 4), 2, kernel_scale=0.1),
    lambda: EnergyConv2D((3, 2), ((3, 3), (2, 2))),
    lambda: DenoisingEnergy((), 5),
    lambda: UnrolledSGD(DenoisingEnergy((), 5), 3, learning_rate=0.5,
                        momentum=-0.2, clip_value=2.0, learn_learning_rate=True,
                        learn_momentum=True),
])
def test_config_round_trip(make_layer, config_round_trip):
  config_round_trip(make_layer())


def test_unrolled_model_saves_and_reloads_with_equal_outputs(tmp_path):
  keras.utils.set_random_seed(0)
  noisy = keras.Input((8,))
  inner = UnrolledSGD(DenoisingEnergy((6,), 5), 3, learn_learning_rate=True,
                      learn_clip_value=True, learn_momentum=True)
  model = keras.Model(noisy, inner(noisy, noisy, return_diagnostics=True))
  # Move the weights away from their initial values.
  for v in model.trainable_variables:
    v.assign(v + 0.05)
  x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
  a = model(x)
  saved = os.path.join(tmp_path, "saved")
  model.export(saved, verbose=False)
  reloaded = tf.saved_model.load(saved)  # keep a reference: it owns the variables
  served = reloaded.serve(tf.constant(x))
  np.testing.assert_allclose(served["steps"], a["steps"], rtol=1e-5, atol=1e-6)
  path = os.path.join(tmp_path, "model.keras")
  model.save(path)
  b = keras.models.load_model(path)(x)
  for key in ("steps", "energy", "grad_norm"):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_object_checkpoints_restore_every_energy_weight(tmp_path):
  """Layers held in lists (hidden Dense / Conv layers) are checkpointed too."""

  def build():
    y = keras.Input((8,))
    feats = keras.Input((6, 6, 2))
    return keras.Model([y, feats], [EnergyMLP((5, 4), 3)(y),
                                    EnergyConv2D((3, 2), 3)(feats)])

  keras.utils.set_random_seed(0)
  source = build()
  for v in source.weights:
    v.assign(v + 1.0)
  path = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
  keras.utils.set_random_seed(1)
  target = build()
  tf.train.Checkpoint(model=target).restore(path).assert_consumed()
  assert len(target.weights) == 2 * 3 + 2 * 2
  for a, b in zip(source.weights, target.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
