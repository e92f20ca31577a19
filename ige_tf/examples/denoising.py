"""A small IGE problem: denoising 1D signals under a learned energy.

Signals are sums of a few random sinusoids; the observation adds Gaussian
noise. The initial estimate is the noisy observation itself and the learned
energy `E(y; x) = sum_k softabs(w_k . [y - x, Dy, D^2 y] + b_k)` (D = finite
difference; an `EnergyMLP` without hidden layers, i.e. a field of learned
robust penalties on linear filters) combines a data term with a learned
smoothness prior. (With a softplus hidden layer the same budget learns a much
worse energy: measured MSE after 4 steps above the noisy input's.) After training, the unrolled
estimate must be closer to the clean signal than the initial estimate. The
problem needs no files, so it doubles as the core's end-to-end check.
"""
import gin
import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import (EnergyMLP, MultiStepLoss, UnrolledSGD,
                         find_inner_optimizer)
from ige_tf.train.problem import Problem, count_trainable

SPLIT_SIZES = {"train": 4096, "validation": 512, "test": 1024}
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


def make_signals(num, length, noise_std, seed):
  """Clean and noisy signals.

  Returns:
    `(clean, noisy)`, float32 `[num, length]` each.
  """
  rng = np.random.default_rng(seed)
  t = np.linspace(0.0, 1.0, length, dtype=np.float64)[None, None, :]
  freq = rng.uniform(0.5, 4.0, size=(num, 3, 1))
  phase = rng.uniform(0.0, 2 * np.pi, size=(num, 3, 1))
  amp = rng.uniform(0.2, 1.0, size=(num, 3, 1))
  clean = np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=1)
  noisy = clean + rng.normal(0.0, noise_std, size=clean.shape)
  return clean.astype(np.float32), noisy.astype(np.float32)


@keras.saving.register_keras_serializable(package="ige_tf")
class DenoisingEnergy(keras.layers.Layer):
  """`E(y; x) = MLP([y - x, Dy, D^2 y])`: y, x float `[B, L]` -> `[B]`."""

  def __init__(self, hidden_units=(), output_units=64, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = tuple(hidden_units)
    self.output_units = int(output_units)
    self.mlp = EnergyMLP(self.hidden_units, self.output_units,
                         dtype=self.dtype_policy, name="mlp")

  def build(self, y_shape, context_shape=None):
    length = y_shape[-1]
    self.mlp.build((None, 3 * length - 3))

  def call(self, y, context, training=None):
    dy = y[:, 1:] - y[:, :-1]
    ddy = dy[:, 1:] - dy[:, :-1]
    return self.mlp(tf.concat([y - context, dy, ddy], axis=-1))

  def get_config(self):
    config = super().get_config()
    config.update(hidden_units=list(self.hidden_units),
                  output_units=self.output_units)
    return config


def mse_per_example(clean, prediction):
  """Mean squared error per example: `[B, L]`, `[B, L]` -> `[B]`."""
  return tf.reduce_mean(tf.square(tf.cast(prediction, tf.float32) - clean), axis=-1)


@gin.configurable
class DenoisingProblem(Problem):
  """Learned-energy denoising of 1D signals.

  Args:
    length: samples per signal, L.
    noise_std: standard deviation of the additive noise.
    num_steps: T, inner optimizer steps.
    hidden_units, output_units: energy network sizes.
    learn_momentum: use learned momentum (initial 0.1) in the inner optimizer.
    split_sizes: optional dict overriding the number of examples per split.
  """

  def __init__(self, length=32, noise_std=0.3, num_steps=4,
               hidden_units=(), output_units=64, learn_momentum=True,
               split_sizes=None):
    self.length = length
    self.noise_std = noise_std
    self.num_steps = num_steps
    self.hidden_units = tuple(hidden_units)
    self.output_units = output_units
    self.learn_momentum = learn_momentum
    self.split_sizes = dict(SPLIT_SIZES, **(split_sizes or {}))
    self._loss = MultiStepLoss(mse_per_example)

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    if split not in self.split_sizes:
      raise ValueError(f"unknown split {split!r}; expected one of "
                       f"{sorted(self.split_sizes)}")
    clean, noisy = make_signals(self.split_sizes[split], self.length,
                                self.noise_std, SPLIT_SEEDS[split])
    data = tf.data.Dataset.from_tensor_slices(({"noisy": noisy}, clean))
    if shuffle:
      data = data.shuffle(len(clean), seed=seed, reshuffle_each_iteration=False)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def build_model(self):
    noisy = keras.Input((self.length,), name="noisy")
    # The energy and the unrolled loop compute in float32 under any global
    # policy (docs/distributed.md: in half precision the second-order update
    # of the energy's weights is off by ~40%).
    energy = DenoisingEnergy(self.hidden_units, self.output_units,
                             dtype="float32", name="energy")
    optimizer = UnrolledSGD(
        energy, self.num_steps, learn_learning_rate=True, learn_clip_value=True,
        learn_momentum=self.learn_momentum, dtype="float32",
        name="inner_optimizer")
    outputs = optimizer(noisy, noisy, return_diagnostics=True)
    return keras.Model({"noisy": noisy}, outputs, name="ige_denoiser")

  def loss(self, labels, outputs):
    return self._loss(labels, outputs["steps"])

  def metrics(self, labels, outputs):
    steps = outputs["steps"]
    mse = tf.stack([mse_per_example(labels, steps[t])
                    for t in range(steps.shape[0])])
    return {"mse": mse, "rmse": tf.sqrt(mse)}

  def component_params(self, model):
    inner = find_inner_optimizer(model)
    energy = count_trainable(inner.energy)
    return {"energy": energy,
            "inner_optimizer": count_trainable(inner) - energy}

  def multiply_adds(self, model):
    mlp = find_inner_optimizer(model).energy.mlp
    dense = mlp.hidden_layers + [mlp.output_layer]
    forward = sum(int(np.prod(layer.kernel.shape)) for layer in dense)
    # Each inner step evaluates the energy and its gradient with respect to y,
    # which costs one more pass of the same size.
    return 2 * forward * self.num_steps
