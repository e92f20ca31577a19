"""Activations used by IGE energies (paper section 5.1).

`softabs` is a smooth, even, non-negative surrogate for `|x|`: energies built
from it are bounded below and have gradients everywhere, which the unrolled
inner optimizer needs (it differentiates the energy twice).
"""
import keras
import tensorflow as tf


def _stable_softplus(x):
  """`x/2 + |x|/2 + log1p(exp(-|x|))`: `tf.math.softplus` from plain ops.

  The same values (to float rounding; `x/2 + |x|/2` is exactly `max(x, 0)`)
  from ops that every runtime evaluates stably: TFLite lowers
  `tf.math.softplus` to `log(1 + exp(x))`, which is inf beyond x = 88 (a
  converted energy was inf and its gradient NaN). Written this way, the
  automatic gradient is exactly `sigmoid(x)` everywhere, x = 0 included
  (`1/2 + sign(x)/2 - sign(x) sigmoid(-|x|)`).
  """
  abs_x = tf.abs(x)
  return 0.5 * x + 0.5 * abs_x + tf.math.log1p(tf.exp(-abs_x))


@keras.saving.register_keras_serializable(package="ige_tf")
def softplus(x):
  """Elementwise `log(1 + exp(x))`, numerically stable.

  Args:
    x: float tensor of any shape.

  Returns:
    Tensor of the same shape and dtype as `x`.
  """
  return _stable_softplus(x)


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
  return (_stable_softplus(x) + _stable_softplus(-x)) / 2
