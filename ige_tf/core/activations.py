"""Activations used by IGE energies (paper section 5.1).

`softabs` is a smooth, even, non-negative surrogate for `|x|`: energies built
from it are bounded below and have gradients everywhere, which the unrolled
inner optimizer needs (it differentiates the energy twice).
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ige_tf")
def softplus(x):
  """Elementwise `log(1 + exp(x))`, numerically stable.

  Args:
    x: float tensor of any shape.

  Returns:
    Tensor of the same shape and dtype as `x`.
  """
  return tf.math.softplus(x)


@keras.saving.register_keras_serializable(package="ige_tf")
def softabs(x):
  """Elementwise `(softplus(x) + softplus(-x)) / 2`.

  Equals `|x| / 2 + log(1 + exp(-|x|))`: minimum `log(2)` at 0, slope +-1/2
  far from 0.

  Args:
    x: float tensor of any shape.

  Returns:
    Tensor of the same shape and dtype as `x`.
  """
  return (tf.math.softplus(x) + tf.math.softplus(-x)) / 2
