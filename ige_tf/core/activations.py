"""Activations used by IGE energies (paper section 5.1).

`softabs` is a smooth, even, non-negative surrogate for `|x|`: energies built
from it are bounded below and have gradients everywhere, which the unrolled
inner optimizer needs (it differentiates the energy twice).
"""
import keras
import tensorflow as tf


@tf.custom_gradient
def _stable_softplus(x):
  """`max(x, 0) + log1p(exp(-|x|))` with gradient `sigmoid(x)`.

  The values of `tf.math.softplus` (to float rounding) from ops that every
  runtime evaluates stably: TFLite lowers `tf.math.softplus` to
  `log(1 + exp(x))`, which is inf beyond x = 88 (a converted energy was inf
  and its gradient NaN). The gradient is one `sigmoid` (exact at x = 0, the
  same op eagerly and traced, differentiable again for the outer
  optimizer's second-order terms).
  """
  value = tf.maximum(x, 0.0) + tf.math.log1p(tf.exp(-tf.abs(x)))

  def grad(upstream):
    return upstream * tf.sigmoid(x)

  return value, grad


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
