"""The Martinez et al. baseline network and its camera-frame placement.

`MartinezBaseline` (paper 5.1) maps MPII16 2D joints, normalized image
coordinates `[B, 16, 2]`, to H36M16 joints relative to the pelvis
`[B, 16, 3]` in metres, standardized with training-set statistics;
`CameraPlacement` puts such a root-relative pose in the camera frame with
the closed-form root translation that best explains the observed 2D pose
(`geometry.solve_root_translation`). `NormClippedDense` is the max-norm
dense layer Martinez et al. use. The gin-configurable model built from them
is `models.baseline_lifter`.
"""
import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import track_sublayers
from ige_tf.pose import geometry
from ige_tf.pose import skeleton


@keras.saving.register_keras_serializable(package="ige_tf")
class NormClippedDense(keras.layers.Dense):
  """Dense layer whose kernel is used clipped to a maximum Frobenius norm.

  Martinez et al.'s "max-norm": the forward pass uses
  `tf.clip_by_norm(kernel, max_norm)` (the norm over the whole matrix), and
  gradients flow through the clip. The stored variable itself is not
  projected, so Adam's steps stay small relative to it.

  Args:
    units: output units.
    max_norm: bound on the Frobenius norm of the kernel used.
    **kwargs: `keras.layers.Dense` arguments.
  """

  def __init__(self, units, max_norm=1.0, **kwargs):
    super().__init__(units, **kwargs)
    self.max_norm = float(max_norm)

  def call(self, inputs, training=None):
    """Args: inputs float `[B, F]`. Returns: float `[B, units]`."""
    del training
    kernel = tf.clip_by_norm(self.kernel, self.max_norm)
    outputs = tf.matmul(inputs, kernel)
    if self.bias is not None:
      outputs = outputs + self.bias
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update(max_norm=self.max_norm)
    return config


@keras.saving.register_keras_serializable(package="ige_tf")
class MartinezBaseline(keras.layers.Layer):
  """Martinez et al.'s lifting network (paper 5.1): 2D -> root-relative 3D.

  Input standardization, `Dense(units)` -> [BN] -> ReLU -> Dropout, then
  `num_blocks` residual blocks of two such layers, then `Dense(J3 * 3)`, then
  output de-standardization. Standardization statistics are non-trainable
  weights (`set_statistics`), so a checkpoint carries them.

  Args:
    units: hidden units per dense layer (1024 in Martinez et al.).
    num_blocks: residual blocks (2 in Martinez et al.).
    dropout_rate: dropout after every hidden layer (0.5).
    batch_norm: batch normalization before every ReLU.
    residual: residual connections around the blocks.
    max_norm: None, or bound on the Frobenius norm of every kernel as used
      in the forward pass (`NormClippedDense`; Martinez et al. clip to 1).
    num_joints_2d: J2, input joints (16).
    num_joints_3d: J3, output joints (16).
    standardize: standardize the input and de-standardize the output with
      the statistics of `set_statistics` (Martinez et al.); False feeds the
      normalized 2D joints as they are and returns the dense output as is
      (the paper author's camera-frame baseline; the statistics weights
      still exist, unused, so checkpoints keep one layout).
  """

  def __init__(self, units=1024, num_blocks=2, dropout_rate=0.5,
               batch_norm=True, residual=True, max_norm=None,
               num_joints_2d=skeleton.MPII16.num_joints,
               num_joints_3d=skeleton.H36M16.num_joints,
               standardize=True, **kwargs):
    super().__init__(**kwargs)
    self.units = int(units)
    self.num_blocks = int(num_blocks)
    self.dropout_rate = float(dropout_rate)
    self.batch_norm = bool(batch_norm)
    self.residual = bool(residual)
    self.max_norm = None if max_norm is None else float(max_norm)
    self.num_joints_2d = int(num_joints_2d)
    self.num_joints_3d = int(num_joints_3d)
    self.standardize = bool(standardize)

    def dense(units, name):
      if self.max_norm is None:
        return keras.layers.Dense(units, kernel_initializer="he_normal",
                                  dtype=self.dtype_policy, name=name)
      return NormClippedDense(units, max_norm=self.max_norm,
                              kernel_initializer="he_normal",
                              dtype=self.dtype_policy, name=name)

    def hidden(name):
      parts = [dense(self.units, f"{name}_dense")]
      if self.batch_norm:
        parts.append(keras.layers.BatchNormalization(
            dtype=self.dtype_policy, name=f"{name}_bn"))
      parts.append(keras.layers.ReLU(dtype=self.dtype_policy,
                                     name=f"{name}_relu"))
      parts.append(keras.layers.Dropout(self.dropout_rate,
                                        dtype=self.dtype_policy,
                                        name=f"{name}_dropout"))
      return parts

    self.input_layers = hidden("input")
    self.blocks = [hidden(f"block{b}_a") + hidden(f"block{b}_b")
                   for b in range(self.num_blocks)]
    self.output_dense = dense(self.num_joints_3d * 3, "output_dense")
    # tf.train.Checkpoint does not traverse Keras-tracked lists: without
    # this, checkpoints would miss these layers' weights (batch-norm moving
    # statistics included).
    track_sublayers(self, self.input_layers +
                    [l for b in self.blocks for l in b])

  def build(self, input_shape):
    j2, j3 = self.num_joints_2d, self.num_joints_3d
    if input_shape[-2] is not None and tuple(input_shape[-2:]) != (j2, 2):
      raise ValueError(f"MartinezBaseline expects pose_2d [B, {j2}, 2], got "
                       f"{tuple(input_shape)}")
    constant = keras.initializers.Constant
    self.input_mean = self.add_weight(name="input_mean", shape=(j2, 2),
                                      initializer="zeros", trainable=False)
    self.input_std = self.add_weight(name="input_std", shape=(j2, 2),
                                     initializer=constant(1.0),
                                     trainable=False)
    self.output_mean = self.add_weight(name="output_mean", shape=(j3, 3),
                                       initializer="zeros", trainable=False)
    self.output_std = self.add_weight(name="output_std", shape=(j3, 3),
                                      initializer=constant(1.0),
                                      trainable=False)
    shape = (input_shape[0], j2 * 2)
    for layer in self.input_layers + [l for b in self.blocks for l in b]:
      layer.build(shape)
      shape = layer.compute_output_shape(shape)
    self.output_dense.build(shape)

  def set_statistics(self, input_mean, input_std, output_mean, output_std):
    """Sets the standardization statistics.

    Args:
      input_mean, input_std: float `[J2, 2]` of the normalized 2D inputs.
      output_mean, output_std: float `[J3, 3]` of the root-relative 3D
        targets, metres.
    """
    for weight, value in ((self.input_mean, input_mean),
                          (self.input_std, input_std),
                          (self.output_mean, output_mean),
                          (self.output_std, output_std)):
      weight.assign(np.asarray(value, np.float32).reshape(weight.shape))

  def call(self, pose_2d, training=None):
    """Lifts a 2D pose.

    Args:
      pose_2d: float32 `[B, J2, 2]` normalized 2D joints.
      training: enables dropout and batch statistics.

    Returns:
      dict: "standardized" float32 `[B, J3, 3]` (the network's output) and
      "pose_3d" float32 `[B, J3, 3]` (de-standardized, metres; equal to
      "standardized" when `standardize` is False).
    """
    x = tf.cast(pose_2d, self.compute_dtype)
    if self.standardize:
      x = (x - self.input_mean) / tf.maximum(self.input_std, 1e-6)
    x = tf.reshape(x, [-1, self.num_joints_2d * 2])
    for layer in self.input_layers:
      x = _call(layer, x, training)
    for block in self.blocks:
      y = x
      for layer in block:
        y = _call(layer, y, training)
      x = x + y if self.residual else y
    out = tf.reshape(self.output_dense(x), [-1, self.num_joints_3d, 3])
    if not self.standardize:
      return {"standardized": out, "pose_3d": out}
    std_out = tf.maximum(self.output_std, 1e-6)
    return {"standardized": out,
            "pose_3d": out * std_out + self.output_mean}

  def compute_output_shape(self, input_shape):
    shape = (input_shape[0], self.num_joints_3d, 3)
    return {"standardized": shape, "pose_3d": shape}

  def dense_layers(self):
    """The `keras.layers.Dense` layers in call order (for multiply-adds)."""
    layers = self.input_layers + [l for b in self.blocks for l in b]
    return [l for l in layers if isinstance(l, keras.layers.Dense)] + [
        self.output_dense]

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, num_blocks=self.num_blocks,
                  dropout_rate=self.dropout_rate, batch_norm=self.batch_norm,
                  residual=self.residual, max_norm=self.max_norm,
                  num_joints_2d=self.num_joints_2d,
                  num_joints_3d=self.num_joints_3d,
                  standardize=self.standardize)
    return config


def _call(layer, x, training):
  if isinstance(layer, (keras.layers.Dropout,
                        keras.layers.BatchNormalization)):
    return layer(x, training=training)
  return layer(x)


@keras.saving.register_keras_serializable(package="ige_tf")
class CameraPlacement(keras.layers.Layer):
  """Root-relative pose + observed 2D -> camera-frame pose (no weights).

  See `geometry.solve_root_translation`.

  Args:
    min_root_depth: soft lower bound of the root depth, metres.
    undistort_iterations: fixed-point iterations of `undistort`.
  """

  def __init__(self, min_root_depth=1.0, undistort_iterations=5, **kwargs):
    super().__init__(**kwargs)
    self.min_root_depth = float(min_root_depth)
    self.undistort_iterations = int(undistort_iterations)

  def call(self, root_relative, pose_2d, distortion):
    """Args: root_relative float `[B, 16, 3]` (H36M16, metres), pose_2d
    float `[B, 16, 2]` (MPII16, normalized), distortion float `[B, 5]`.

    Returns: float `[B, 16, 3]` camera-frame pose, metres."""
    root = geometry.solve_root_translation(
        root_relative, pose_2d, distortion,
        min_root_depth=self.min_root_depth,
        undistort_iterations=self.undistort_iterations)
    return root_relative + root[:, None, :]

  def compute_output_shape(self, root_relative_shape, *args):
    return tuple(root_relative_shape)

  def get_config(self):
    config = super().get_config()
    config.update(min_root_depth=self.min_root_depth,
                  undistort_iterations=self.undistort_iterations)
    return config
