"""Unrolled inner optimization (paper section 4, eqs. 2-3).

`UnrolledSGD` minimizes a learned energy `E(y; context)` by a fixed number of
gradient-descent steps. Each step's gradient is taken with a nested
`tf.GradientTape`, so an enclosing tape (the outer, training optimizer)
differentiates through the whole unrolled sequence: second-order gradients
reach the energy's weights, the learned step hyper-parameters and the initial
estimate.
"""
import keras
import tensorflow as tf

# Paper 5.2: the inner optimizer's learning rate, momentum and clip value start
# at 1, 0.1 and 1.
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_MOMENTUM = 0.1
DEFAULT_CLIP_VALUE = 1.0


@keras.saving.register_keras_serializable(package="ige_tf")
class UnrolledSGD(keras.layers.Layer):
  """`num_steps` steps of (momentum, clipped) gradient descent on an energy.

  One step, with `g` the gradient of the energy at `y`:
    g <- clip(g, -|c|, |c|)                       (if clipping)
    m <- |mu| * m + g;  y <- y - lr * m           (with momentum, m_0 = 0)
    y <- y - lr * g                               (without momentum)

  The learning rate `lr`, momentum `mu` and clip value `c` are each a fixed
  number or a learned scalar weight. Momentum and clip value enter through
  their absolute values, computed at every call (paper 5.2: "the absolute
  value of a learned parameter"), so a learned value may change sign without
  making the step ascend.

  Args:
    energy: callable `energy(y, context) -> [B]`, `y` of shape `[B, ...]`.
      A Keras layer (registered serializable) so that its weights are tracked
      and the layer's config round-trips.
    num_steps: T, the number of unrolled steps (0 returns the initial value).
    learning_rate: step size, or its initial value when learned.
    momentum: momentum coefficient, or None for plain gradient descent. When
      `learn_momentum` is set and this is None, it starts at 0.1.
    clip_value: elementwise gradient clip, or None for no clipping. When
      `learn_clip_value` is set and this is None, it starts at 1.
    learn_learning_rate, learn_momentum, learn_clip_value: make the
      corresponding hyper-parameter a trainable scalar weight.
  """

  def __init__(self, energy, num_steps, learning_rate=DEFAULT_LEARNING_RATE,
               momentum=None, clip_value=None, learn_learning_rate=False,
               learn_momentum=False, learn_clip_value=False, **kwargs):
    super().__init__(**kwargs)
    if not callable(energy):
      raise TypeError(f"UnrolledSGD: energy must be callable, got {energy!r}")
    if int(num_steps) < 0:
      raise ValueError(f"UnrolledSGD: num_steps must be >= 0, got {num_steps}")
    self.energy = energy
    self.num_steps = int(num_steps)
    self.learn_learning_rate = bool(learn_learning_rate)
    self.learn_momentum = bool(learn_momentum)
    self.learn_clip_value = bool(learn_clip_value)
    if momentum is None and self.learn_momentum:
      momentum = DEFAULT_MOMENTUM
    if clip_value is None and self.learn_clip_value:
      clip_value = DEFAULT_CLIP_VALUE
    self.initial_learning_rate = float(learning_rate)
    self.initial_momentum = None if momentum is None else float(momentum)
    self.initial_clip_value = None if clip_value is None else float(clip_value)

  def build(self, initial_shape, context_shape=None):
    def scalar(name, value, trainable):
      if not trainable:
        return None
      return self.add_weight(
          name=name, shape=(),
          initializer=keras.initializers.Constant(value),
          trainable=True)

    self._learning_rate_weight = scalar(
        "learning_rate", self.initial_learning_rate, self.learn_learning_rate)
    self._momentum_weight = scalar(
        "momentum", self.initial_momentum, self.learn_momentum)
    self._clip_value_weight = scalar(
        "clip_value", self.initial_clip_value, self.learn_clip_value)

  # -- the hyper-parameters as used by a step ------------------------------
  @property
  def learning_rate(self):
    """Scalar float32 tensor: the step size in use."""
    if self._learning_rate_weight is not None:
      return tf.convert_to_tensor(self._learning_rate_weight)
    return tf.constant(self.initial_learning_rate, tf.float32)

  @property
  def momentum(self):
    """Scalar float32 tensor `|mu|`, or None without momentum."""
    if self.initial_momentum is None:
      return None
    if self._momentum_weight is not None:
      return tf.abs(tf.convert_to_tensor(self._momentum_weight))
    return tf.constant(abs(self.initial_momentum), tf.float32)

  @property
  def clip_value(self):
    """Scalar float32 tensor `|c|`, or None without clipping."""
    if self.initial_clip_value is None:
      return None
    if self._clip_value_weight is not None:
      return tf.abs(tf.convert_to_tensor(self._clip_value_weight))
    return tf.constant(abs(self.initial_clip_value), tf.float32)

  def hyperparameters(self):
    """Dict of the step hyper-parameters in use (scalar tensors), for summaries."""
    values = {"learning_rate": self.learning_rate}
    if self.momentum is not None:
      values["momentum"] = self.momentum
    if self.clip_value is not None:
      values["clip_value"] = self.clip_value
    return values

  # -- the unrolled loop ---------------------------------------------------
  def _energy_and_gradient(self, y, context, training):
    with tf.GradientTape() as tape:
      tape.watch(y)
      energy = self.energy(y, context, training=training) if isinstance(
          self.energy, keras.layers.Layer) else self.energy(y, context)
      total = tf.reduce_sum(energy)
    return energy, tape.gradient(total, y)

  def call(self, initial, context=None, training=None,
           return_diagnostics=False):
    """Runs the unrolled optimizer.

    Args:
      initial: float `[B, ...]`, the initial estimate y_0.
      context: tensor or nest of tensors passed unchanged to the energy.
      training: passed to the energy when it is a Keras layer.
      return_diagnostics: also return per-step energy and gradient norm.

    Returns:
      `steps`, float `[T+1, B, ...]` with `steps[0] == initial`; or, with
      `return_diagnostics`, a dict `{"steps": [T+1, B, ...], "energy": [T, B],
      "grad_norm": [T, B]}` where entry t is the energy at, and the norm of
      the (unclipped) energy gradient at, `steps[t]`.
    """
    y = initial
    dtype = y.dtype
    lr = tf.cast(self.learning_rate, dtype)
    mu = None if self.momentum is None else tf.cast(self.momentum, dtype)
    clip = None if self.clip_value is None else tf.cast(self.clip_value, dtype)
    velocity = None
    steps, energies, grad_norms = [y], [], []
    reduce_axes = list(range(1, len(initial.shape)))
    for _ in range(self.num_steps):
      energy, grad = self._energy_and_gradient(y, context, training)
      energies.append(energy)
      grad_norms.append(tf.sqrt(tf.reduce_sum(tf.square(grad), axis=reduce_axes)))
      if clip is not None:
        grad = tf.clip_by_value(grad, -clip, clip)
      if mu is not None:
        velocity = grad if velocity is None else mu * velocity + grad
        grad = velocity
      y = y - lr * grad
      steps.append(y)
    steps = tf.stack(steps, axis=0)
    if not return_diagnostics:
      return steps
    batch = tf.shape(initial)[0]
    empty = tf.zeros([0, batch], dtype)
    return {
        "steps": steps,
        "energy": tf.stack(energies) if energies else empty,
        "grad_norm": tf.stack(grad_norms) if grad_norms else empty,
    }

  def get_config(self):
    config = super().get_config()
    config.update(
        energy=keras.saving.serialize_keras_object(self.energy),
        num_steps=self.num_steps,
        learning_rate=self.initial_learning_rate,
        momentum=self.initial_momentum,
        clip_value=self.initial_clip_value,
        learn_learning_rate=self.learn_learning_rate,
        learn_momentum=self.learn_momentum,
        learn_clip_value=self.learn_clip_value)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["energy"] = keras.saving.deserialize_keras_object(config["energy"])
    return cls(**config)
