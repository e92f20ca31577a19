"""Energy networks: learned scalar functions reduced to one value per example.

Both builders follow paper 5.2: hidden layers use softplus and Glorot kernels;
the output layer uses softabs and a Glorot kernel scaled by `kernel_scale`
(1e-3), so at initialisation the energy is nearly flat and the inner optimizer
barely moves its estimate, growing its effect as training proceeds.
"""
import keras
import tensorflow as tf

from ige_tf.core.activations import softabs, softplus


def scaled_glorot_uniform(scale, seed=None):
  """Glorot-uniform initializer whose samples are multiplied by `scale`.

  Glorot uniform is `VarianceScaling(1, "fan_avg", "uniform")`; variance
  scales with the square of the weights, hence `scale ** 2`.
  """
  return keras.initializers.VarianceScaling(
      scale=float(scale) ** 2, mode="fan_avg", distribution="uniform", seed=seed)


def track_sublayers(layer, sublayers):
  """Makes sublayers held in a list visible to `tf.train.Checkpoint`.

  Keras 3 tracks a list attribute with its own `TrackedList`, which
  TensorFlow's object-based checkpoints do not traverse: without this, the
  listed layers' weights are saved only through the optimizer and are not
  restored by `tf.train.Checkpoint(model=...)` (evaluation, export). Each
  sublayer is also assigned to an attribute `_<its name>`; Keras de-duplicates
  by identity, so nothing is tracked twice. Call it on every list of layers a
  layer holds (tests/train/test_checkpoint_invariant.py checks every model
  family).
  """
  for sublayer in sublayers:
    setattr(layer, f"_{sublayer.name}", sublayer)


@keras.saving.register_keras_serializable(package="ige_tf")
class EnergyMLP(keras.layers.Layer):
  """Dense energy network: features `[B, F]` -> energy `[B]`.

  Args:
    hidden_units: sizes of the softplus hidden layers (may be empty).
    output_units: size of the softabs output layer, summed to the energy.
    kernel_scale: factor on the output layer's Glorot kernel.
  """

  def __init__(self, hidden_units=(64,), output_units=8, kernel_scale=1e-3,
               **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = tuple(int(u) for u in hidden_units)
    self.output_units = int(output_units)
    self.kernel_scale = float(kernel_scale)
    self.hidden_layers = [
        keras.layers.Dense(units, activation=softplus,
                           kernel_initializer="glorot_uniform",
                           dtype=self.dtype_policy, name=f"hidden_{i}")
        for i, units in enumerate(self.hidden_units)
    ]
    track_sublayers(self, self.hidden_layers)
    self.output_layer = keras.layers.Dense(
        self.output_units, activation=softabs,
        kernel_initializer=scaled_glorot_uniform(self.kernel_scale),
        dtype=self.dtype_policy, name="output")

  def build(self, input_shape):
    shape = tuple(input_shape)
    for layer in self.hidden_layers:
      layer.build(shape)
      shape = shape[:-1] + (layer.units,)
    self.output_layer.build(shape)

  def call(self, features):
    """Args: features: float `[B, F]`. Returns: energy, float `[B]`."""
    x = features
    for layer in self.hidden_layers:
      x = layer(x)
    return tf.reduce_sum(self.output_layer(x), axis=-1)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1])

  def get_config(self):
    config = super().get_config()
    config.update(hidden_units=list(self.hidden_units),
                  output_units=self.output_units,
                  kernel_scale=self.kernel_scale)
    return config


@keras.saving.register_keras_serializable(package="ige_tf")
class EnergyConv2D(keras.layers.Layer):
  """2D convolutional energy: feature maps `[B, H, W, C]` -> energy `[B]`.

  A stack of VALID convolutions, softplus on all but the last, softabs on the
  last (whose kernel is scaled by `kernel_scale`), summed over H, W and
  channels. No 3D convolutions: the voxel task feeds depth as channels.

  Args:
    filters: output channels of each convolution.
    kernel_sizes: one int or `(kh, kw)` per convolution (or one for all).
    kernel_scale: factor on the last convolution's Glorot kernel.
  """

  def __init__(self, filters=(32, 32), kernel_sizes=3, kernel_scale=1e-3,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = tuple(int(f) for f in filters)
    if isinstance(kernel_sizes, (int, float)):
      kernel_sizes = [int(kernel_sizes)] * len(self.filters)
    self.kernel_sizes = tuple(
        (int(k), int(k)) if isinstance(k, (int, float)) else tuple(int(v) for v in k)
        for k in kernel_sizes)
    if len(self.kernel_sizes) != len(self.filters):
      raise ValueError(
          f"EnergyConv2D: {len(self.filters)} filters but "
          f"{len(self.kernel_sizes)} kernel sizes")
    self.kernel_scale = float(kernel_scale)
    last = len(self.filters) - 1
    self.conv_layers = [
        keras.layers.Conv2D(
            f, k, padding="valid",
            activation=softabs if i == last else softplus,
            kernel_initializer=(scaled_glorot_uniform(self.kernel_scale)
                                if i == last else "glorot_uniform"),
            dtype=self.dtype_policy, name=f"conv_{i}")
        for i, (f, k) in enumerate(zip(self.filters, self.kernel_sizes))
    ]
    track_sublayers(self, self.conv_layers)

  def build(self, input_shape):
    shape = tuple(input_shape)
    for layer in self.conv_layers:
      layer.build(shape)
      shape = layer.compute_output_shape(shape)

  def call(self, features):
    """Args: features: float `[B, H, W, C]`. Returns: energy, float `[B]`."""
    x = features
    for layer in self.conv_layers:
      x = layer(x)
    return tf.reduce_sum(x, axis=[1, 2, 3])

  def compute_output_shape(self, input_shape):
    return (input_shape[0],)

  def get_config(self):
    config = super().get_config()
    config.update(filters=list(self.filters),
                  kernel_sizes=[list(k) for k in self.kernel_sizes],
                  kernel_scale=self.kernel_scale)
    return config
