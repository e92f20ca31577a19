"""Losses and metrics over the whole unrolled sequence (paper eq. 4)."""
import keras
import tensorflow as tf


def step_weights(num_steps, decay=0.9, dtype=tf.float32):
  """Per-step weights `k_t = decay ** (T - t)` for t = 0..T.

  Args:
    num_steps: T (int).
    decay: float, the paper uses 0.9.

  Returns:
    float `[T+1]`; the last (final-step) weight is 1.
  """
  exponents = tf.range(num_steps, -1, -1, dtype=dtype)
  return tf.pow(tf.cast(decay, dtype), exponents)


def per_step_mean(fn, labels, steps):
  """Mean over the batch of `fn(labels, steps[t])` for every step.

  Args:
    fn: `fn(labels, prediction [B, ...]) -> [B]`.
    labels: tensor or nest, passed unchanged to `fn`.
    steps: float `[T+1, B, ...]`.

  Returns:
    float32 `[T+1]`.
  """
  num = steps.shape[0]
  if num is None:
    raise ValueError("per_step_mean: the number of steps must be static")
  # unstack, not steps[t]: the gradient of T+1 strided slices is T+1
  # full-size [T+1, B, ...] tensors summed, that of unstack one stack.
  return tf.stack([
      tf.reduce_mean(tf.cast(fn(labels, step), tf.float32))
      for step in tf.unstack(steps, num=num, axis=0)
  ])


@keras.saving.register_keras_serializable(package="ige_tf")
class MultiStepLoss:
  """`sum_t decay^(T-t) * mean_b loss_fn(labels, steps[t])`.

  Args:
    loss_fn: `loss_fn(labels, prediction [B, ...]) -> [B]` per-example loss.
    decay: weight ratio between consecutive steps (paper: 0.9).
  """

  def __init__(self, loss_fn, decay=0.9):
    self.loss_fn = loss_fn
    self.decay = float(decay)

  def per_step(self, labels, steps):
    """Mean loss at every step, float32 `[T+1]`."""
    return per_step_mean(self.loss_fn, labels, steps)

  def __call__(self, labels, steps):
    """Weighted total loss, float32 scalar. `steps`: `[T+1, B, ...]`."""
    per_step = self.per_step(labels, steps)
    return tf.reduce_sum(step_weights(per_step.shape[0] - 1, self.decay) * per_step)

  def get_config(self):
    return {"loss_fn": keras.saving.serialize_keras_object(self.loss_fn),
            "decay": self.decay}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["loss_fn"] = keras.saving.deserialize_keras_object(config["loss_fn"])
    return cls(**config)
