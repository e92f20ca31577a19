"""Decoders for single-view voxel reconstruction (paper 6.3, Table 2).

- `build_image_decoder`: U-Net style 2D decoder giving the energy's feature
  maps at t^2, (2t)^2, ..., R^2 (t = S/32 = 4 at the paper's 128^2 images),
  channels halving as the resolution doubles.
- `build_occupancy_decoder`: 3D deconvolution network in the style of the
  generator of Wu et al. 2016 (kernel 4, stride 2, BatchNorm + ReLU, channels
  halving), starting from a t^3 grid made from the t^2 encoder output. With
  `resolution=32` and a 4^3 start it has one layer fewer than Wu's 64^3
  generator: the IGE initial estimate. Extended to R = 64 ... 256 and with the
  channels doubled it is the 3D-deconvolution baseline.
- `upsample_trilinear` / `TrilinearUpsampling3D`: trilinear upsampling of
  `[B, R, R, R]` grids by an integer factor.

All voxel grids are `[B, H, W, D]` (frustum: image row, image column, depth
bin) with `H = W = D = R`. Decoders output logits: occupancy is
`sigmoid(logits)`.

Trilinear convention (half-pixel centres, edges clamped): output cell `j`
along an axis samples the input at continuous index `(j + 0.5) / f - 0.5`,
clamped to `[0, R - 1]`, i.e. cell centres are aligned, not cell corners
(`align_corners=False`). This equals
`scipy.ndimage.zoom(x, f, order=1, grid_mode=True, mode="nearest")` and
`tf.image.resize(..., "bilinear")` applied per axis.
"""
import keras
import numpy as np
import tensorflow as tf


def level_sizes(top_size, resolution):
  """Spatial sizes of the decoder levels: `top_size * 2^k` up to `resolution`.

  Args:
    top_size: int t, spatial size of the encoder output (4 at S = 128).
    resolution: int R, a power-of-two multiple of `top_size`.

  Returns:
    Tuple of ints `(t, 2t, ..., R)`.

  Raises:
    ValueError: if `resolution` is not `top_size * 2^k`.
  """
  sizes = [int(top_size)]
  while sizes[-1] < resolution:
    sizes.append(sizes[-1] * 2)
  if sizes[-1] != resolution:
    raise ValueError(
        f"resolution {resolution} is not the encoder output size "
        f"{top_size} times a power of two")
  return tuple(sizes)


def level_channels(base_channels, num_levels, min_channels=4):
  """Channels per level: `base_channels / 2^k`, at least `min_channels`."""
  return tuple(max(int(base_channels) >> k, int(min_channels))
               for k in range(num_levels))


def linear_upsampling_matrix(size, factor):
  """The `[f size, size]` matrix of 1D linear upsampling (module convention).

  Row `j` holds the weights of output cell `j`: it samples the input at
  `(j + 0.5) / f - 0.5`, clamped to `[0, size - 1]`.

  Returns:
    numpy float64 `[factor * size, size]`; every row sums to 1.
  """
  matrix = np.zeros((factor * size, size))
  for j in range(factor * size):
    source = min(max((j + 0.5) / factor - 0.5, 0.0), size - 1.0)
    low = int(np.floor(source))
    weight = source - low
    matrix[j, low] += 1.0 - weight
    matrix[j, min(low + 1, size - 1)] += weight
  return matrix


def upsample_trilinear(grid, factor):
  """Trilinear upsampling of voxel grids by an integer factor.

  Half-pixel-centre convention with clamped edges (see the module docstring);
  a linear, differentiable map.

  Args:
    grid: float `[B, R, R, R]` (any three static spatial sizes).
    factor: positive int f.

  Returns:
    float `[B, f R, f R, f R]`, same dtype.
  """
  factor = int(factor)
  if factor < 1:
    raise ValueError(f"upsampling factor must be a positive int, got {factor}")
  grid = tf.convert_to_tensor(grid)
  if grid.shape.rank != 4:
    raise ValueError(f"expected a [B, R, R, R] grid, got shape {grid.shape}")
  if factor == 1:
    return grid
  # One matrix product per axis (a linear map, so its gradient is the
  # transposed products): no shifted copies or per-phase samples of the
  # grid, and no transposes. Rows, then columns, then depth, so the forward
  # pass writes [B, fR, R R] (1/f^2 of the output), [B fR, fR, R] (1/f)
  # and the output; autodiff's backward pass, given the output's gradient,
  # writes [B fR fR, R] (1/f), [B fR, R, R] (1/f^2) and the result: no
  # other full-size tensor (tested). Measured at 32^3 -> 128^3 against the
  # same products as XLA kernels behind a custom gradient, which were
  # leaner in neither memory nor time (docs/benchmarks.md, issue 11).
  _, rows, cols, bins = grid.shape
  def matrix(size):
    return tf.constant(linear_upsampling_matrix(size, factor), grid.dtype)
  grid = tf.matmul(matrix(rows), tf.reshape(grid, [-1, rows, cols * bins]))
  grid = tf.matmul(matrix(cols), tf.reshape(grid, [-1, cols, bins]))
  grid = tf.matmul(tf.reshape(grid, [-1, bins]), matrix(bins),
                   transpose_b=True)
  return tf.reshape(grid, [-1, factor * rows, factor * cols, factor * bins])


@keras.saving.register_keras_serializable(package="ige_tf")
class TrilinearUpsampling3D(keras.layers.Layer):
  """Layer form of `upsample_trilinear`: `[B, R, R, R]` -> `[B, fR, fR, fR]`.

  Args:
    factor: positive int upsampling factor f.
  """

  def __init__(self, factor, **kwargs):
    super().__init__(**kwargs)
    self.factor = int(factor)
    if self.factor < 1:
      raise ValueError(f"factor must be a positive int, got {factor}")

  def call(self, grid):
    return upsample_trilinear(grid, self.factor)

  def compute_output_shape(self, input_shape):
    return (input_shape[0],) + tuple(
        None if s is None else s * self.factor for s in input_shape[1:])

  def get_config(self):
    config = super().get_config()
    config.update(factor=self.factor)
    return config


def _bn_relu(x, name):
  x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_image_decoder(top_channels, skip_channels, top_size, resolution,
                        base_channels=128, min_channels=4,
                        name="image_decoder"):
  """U-Net style image decoder: encoder maps -> energy feature maps.

  Level 0 (t^2): 1x1 conv of the encoder output to `base_channels`. Level k
  (t 2^k): 2x2 stride-2 transposed conv of level k-1 to c_k channels, plus a
  1x1 projection of the encoder skip map of that size (if any; additive skip),
  BatchNorm + ReLU, a 3x3 conv, BatchNorm + ReLU. Convolutions have no bias
  (BatchNorm follows). `c_k = max(base_channels / 2^k, min_channels)`.

  Args:
    top_channels: channels F of the encoder output `[B, t, t, F]`.
    skip_channels: dict spatial size -> channels of the available skip maps
      (e.g. the encoder's stride 2..16 maps and the image itself).
    top_size: int t, spatial size of the encoder output.
    resolution: int R, finest level size (`t 2^k`).
    base_channels: c_0 (128 for MN, 512 for I4).
    min_channels: lower bound on c_k.
    name: model name.

  Returns:
    `keras.Model`: inputs `[top [B, t, t, F]] + [skip [B, s, s, skip_channels[s]]
    for s in level sizes (increasing) if s in skip_channels]`; outputs list
    of float32 `[B, t 2^k, t 2^k, c_k]`, k = 0..K (coarsest first).
  """
  sizes = level_sizes(top_size, resolution)
  channels = level_channels(base_channels, len(sizes), min_channels)
  top = keras.Input((top_size, top_size, top_channels), name="top")
  inputs = [top]
  skips = {}
  for size in sizes[1:]:
    if size in skip_channels:
      skips[size] = keras.Input((size, size, skip_channels[size]),
                                name=f"skip_{size}")
      inputs.append(skips[size])
  x = keras.layers.Conv2D(channels[0], 1, use_bias=False,
                          name=f"level_{sizes[0]}_conv")(top)
  x = _bn_relu(x, f"level_{sizes[0]}")
  outputs = [x]
  for size, c in zip(sizes[1:], channels[1:]):
    prefix = f"level_{size}"
    x = keras.layers.Conv2DTranspose(c, 2, strides=2, use_bias=False,
                                     name=f"{prefix}_up")(x)
    if size in skips:
      projected = keras.layers.Conv2D(c, 1, use_bias=False,
                                      name=f"{prefix}_skip")(skips[size])
      x = keras.layers.Add(name=f"{prefix}_add")([x, projected])
    x = _bn_relu(x, f"{prefix}_merge")
    x = keras.layers.Conv2D(c, 3, padding="same", use_bias=False,
                            name=f"{prefix}_conv")(x)
    x = _bn_relu(x, prefix)
    outputs.append(x)
  return keras.Model(inputs, outputs, name=name)


def build_occupancy_decoder(top_channels, top_size, base_channels=64,
                            resolution=32, output_resolution=None,
                            min_channels=4, name="3d_decoder"):
  """3D deconvolution decoder: encoder output -> occupancy logits.

  `[B, t, t, F]` -> 1x1 conv to `t * base_channels` channels -> reshape to a
  `[B, t, t, t, base_channels]` grid (H, W from the image, D from channels)
  -> BatchNorm + ReLU -> `log2(resolution / t)` Conv3DTranspose layers
  (kernel 4, stride 2, SAME), channels halving (at least `min_channels`),
  BatchNorm + ReLU between, the last one to 1 channel with bias and no
  activation (logits) -> optional trilinear upsampling to `output_resolution`.

  Args:
    top_channels: channels F of the encoder output.
    top_size: int t, its spatial size (4 at S = 128).
    base_channels: channels of the t^3 grid (64 MN / 256 I4 for the IGE
      initial estimate; doubled, 128 / 512, for the baseline).
    resolution: int, resolution reached by the deconvolutions.
    output_resolution: optional int R, a multiple of `resolution`; the logits
      are trilinearly upsampled to it.
    min_channels: lower bound on hidden channels.
    name: model name.

  Returns:
    `keras.Model`: float32 `[B, t, t, F]` -> logits float32 `[B, R, R, R]`.
  """
  sizes = level_sizes(top_size, resolution)
  if len(sizes) < 2:
    raise ValueError(
        f"3D decoder resolution {resolution} must exceed the encoder output "
        f"size {top_size}")
  output_resolution = int(output_resolution or resolution)
  if output_resolution % resolution:
    raise ValueError(
        f"output_resolution {output_resolution} is not a multiple of the 3D "
        f"decoder resolution {resolution}")
  channels = level_channels(base_channels, len(sizes), min_channels)
  top = keras.Input((top_size, top_size, top_channels), name="top")
  x = keras.layers.Conv2D(top_size * channels[0], 1, use_bias=False,
                          name="to_depth")(top)
  x = keras.layers.Reshape((top_size, top_size, top_size, channels[0]),
                           name="to_grid")(x)
  x = _bn_relu(x, f"grid_{top_size}")
  for k, size in enumerate(sizes[1:], start=1):
    last = k == len(sizes) - 1
    x = keras.layers.Conv3DTranspose(
        1 if last else channels[k], 4, strides=2, padding="same",
        use_bias=last, name=f"deconv_{size}")(x)
    if not last:
      x = _bn_relu(x, f"grid_{size}")
  x = keras.layers.Reshape((resolution,) * 3, name="logits")(x)
  if output_resolution != resolution:
    x = TrilinearUpsampling3D(output_resolution // resolution,
                              name="upsample")(x)
  return keras.Model(top, x, name=name)
