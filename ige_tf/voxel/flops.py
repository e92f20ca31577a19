"""Multiply-add counts of weight layers, computed from shapes (per example).

One multiply-add (MAC) is one `a * b + c` of a weight with an input value.
Counted layers: Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose,
DepthwiseConv1D/2D and SeparableConv1D/2D. Biases, BatchNorm, activations,
pooling and element-wise ops are not counted (they are O(activations), not
O(activations x fan-in)).

- Dense: `prod(leading non-batch dims) * in * units`.
- Convolution: `prod(output spatial) * prod(kernel) * in / groups * filters`.
- Transposed convolution: `prod(input spatial) * prod(kernel) * in * filters`
  (every input value is multiplied by the whole kernel).
- Depthwise: `prod(output spatial) * prod(kernel) * in * depth_multiplier`.
- Separable: depthwise plus a 1x1 convolution on its output.
"""
import math

import keras


def conv_multiply_adds(output_spatial, kernel_size, in_channels, filters,
                       groups=1):
  """MACs of a convolution from its output spatial shape.

  Args:
    output_spatial: ints, output spatial sizes (e.g. `(h, w)`).
    kernel_size: ints, kernel sizes (same length).
    in_channels: int input channels.
    filters: int output channels.
    groups: int channel groups.

  Returns:
    int multiply-adds per example.
  """
  return (math.prod(int(s) for s in output_spatial)
          * math.prod(int(k) for k in kernel_size)
          * (int(in_channels) // int(groups)) * int(filters))


def _spatial(shape):
  """Spatial dims of a channels-last `(batch, *spatial, channels)` shape."""
  spatial = tuple(shape[1:-1])
  if any(s is None for s in spatial):
    raise ValueError(
        f"multiply-adds need static spatial sizes, got shape {tuple(shape)}")
  return spatial


def layer_multiply_adds(layer, input_shape):
  """Multiply-adds of one call of `layer` per example.

  Args:
    layer: a Keras layer (channels-last data format).
    input_shape: the layer's input shape, with the batch dimension first
      (its value is ignored), e.g. `(None, 64, 64, 32)`.

  Returns:
    int multiply-adds per example; 0 for layers that are not counted.
  """
  input_shape = tuple(input_shape)
  if getattr(layer, "data_format", "channels_last") == "channels_first":
    raise ValueError(
        f"layer {layer.name}: multiply-adds are counted for channels_last only")
  if isinstance(layer, keras.layers.Dense):
    leading = math.prod(int(s) for s in input_shape[1:-1])
    return leading * int(input_shape[-1]) * int(layer.units)
  in_channels = int(input_shape[-1])
  if isinstance(layer, (keras.layers.Conv1DTranspose,
                        keras.layers.Conv2DTranspose,
                        keras.layers.Conv3DTranspose)):
    return conv_multiply_adds(_spatial(input_shape), layer.kernel_size,
                              in_channels, layer.filters)
  output_shape = tuple(layer.compute_output_shape(input_shape))
  if isinstance(layer, (keras.layers.SeparableConv1D,
                        keras.layers.SeparableConv2D)):
    depthwise = conv_multiply_adds(_spatial(output_shape), layer.kernel_size,
                                   in_channels, layer.depth_multiplier)
    pointwise = conv_multiply_adds(_spatial(output_shape), (1,),
                                   in_channels * layer.depth_multiplier,
                                   layer.filters)
    return depthwise + pointwise
  if isinstance(layer, (keras.layers.DepthwiseConv1D,
                        keras.layers.DepthwiseConv2D)):
    return conv_multiply_adds(_spatial(output_shape), layer.kernel_size,
                              in_channels, layer.depth_multiplier)
  if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D,
                        keras.layers.Conv3D)):
    return conv_multiply_adds(_spatial(output_shape), layer.kernel_size,
                              in_channels, layer.filters,
                              getattr(layer, "groups", 1))
  return 0


def model_multiply_adds(model):
  """Multiply-adds per example of a functional model's weight layers.

  Walks `model.layers` (recursing into nested functional models) and counts
  each layer once with the shape of its symbolic input. Layers used inside
  other layers' `call` (not part of the functional graph) are not seen; count
  them separately (e.g. `FrustumEnergy.multiply_adds`).

  Args:
    model: a built functional `keras.Model`.

  Returns:
    dict layer path (`"outer/inner/layer"`) -> int, only non-zero entries.
  """
  counts = {}
  for layer in model.layers:
    if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
      for name, count in model_multiply_adds(layer).items():
        counts[f"{layer.name}/{name}"] = count
      continue
    if not layer.weights:
      continue
    try:
      symbolic_input = layer.input
    except (AttributeError, ValueError) as error:
      raise ValueError(
          f"layer {layer.name} has no single symbolic input; count it "
          f"separately: {error}") from error
    if isinstance(symbolic_input, (list, tuple)):
      continue  # Weight layers counted here take a single tensor.
    count = layer_multiply_adds(layer, symbolic_input.shape)
    if count:
      counts[layer.name] = count
  return counts
