"""Single-view voxel reconstruction models: IGE-Net and 3D-deconv baselines.

Both builders return a functional `keras.Model` taking `{"image": float32
[B, S, S, 3] in [0, 1]}` and returning the task-model dict of
`ige_tf.train.problem`:

- `ige_voxel_model`: `{"steps": [T+1, B, R, R, R], "energy": [T, B],
  "grad_norm": [T, B]}`;
- `baseline_voxel_model`: `{"steps": [1, B, R, R, R]}`.

Every grid holds occupancy LOGITS (`tf.sigmoid` gives occupancy); use the
losses and metrics of this package with `from_logits=True` (their default).

IGE-Net (paper 6.1-6.3, Fig. 5):

    image -> image_encoder -> [x_{S/2}, ..., x_{S/32}]
    x_{S/32} -> 3d_decoder -> 32^3 logits -> trilinear -> y_0 [B, R, R, R]
    encoder maps -> image_decoder -> x_i at t^2, (2t)^2, ..., R^2
    inner_optimizer = UnrolledSGD(inner_cnn = FrustumEnergy, T steps,
                                  learned learning rate and clip value)
    steps = inner_optimizer(y_0, [x_i])

Sub-models and layers are named after Table 2's rows ("image_encoder",
"3d_decoder", "image_decoder", "inner_cnn", "inner_optimizer");
`component_params` and `multiply_adds_by_component` find the first three by
name and the inner optimizer by type (`ige_tf.core.find_inner_optimizer`).
"""
import weakref

import gin
import keras
import tensorflow as tf

from ige_tf.core import UnrolledSGD, find_inner_optimizer
from ige_tf.train.problem import count_trainable
from ige_tf.voxel import decoders
from ige_tf.voxel import encoders
from ige_tf.voxel import flops
from ige_tf.voxel.energy import FrustumEnergy

# Table 2: image-decoder start channels, 3D decoder start channels.
_IMAGE_DECODER_CHANNELS = {"mn": 128, "i4": 512, "inception_v4": 512}
_GENERATOR_CHANNELS = {"mn": 64, "i4": 256, "inception_v4": 256}
_BASELINE_ENCODERS = {"mn": "mn_full", "i4": "i4",
                      "inception_v4": "inception_v4"}
GRIDS = ("frustum", "world")


@keras.saving.register_keras_serializable(package="ige_tf")
class AddStepAxis(keras.layers.Layer):
  """`[B, ...]` -> `[1, B, ...]`: a single-step `steps` output (T = 0)."""

  def call(self, inputs):
    return tf.expand_dims(inputs, 0)

  def compute_output_shape(self, input_shape):
    return (1,) + tuple(input_shape)


def _check_encoder(encoder, allowed):
  if encoder not in allowed:
    raise ValueError(
        f"Unknown encoder {encoder!r}; expected one of {tuple(allowed)}")


def _check_resolution(resolution, top_size):
  decoders.level_sizes(top_size, resolution)  # Raises on a bad resolution.
  if resolution <= top_size:
    raise ValueError(
        f"resolution {resolution} must exceed the encoder output size "
        f"{top_size}")


def _encoder_maps(encoder_name, image, encoder_model, image_size):
  """dict spatial size -> feature map (encoder strides 2..32 and the image)."""
  maps = encoder_model(image)
  by_size = {image_size: image}
  for k, feature in enumerate(maps, start=1):
    by_size[image_size >> k] = feature
  channels = dict(zip((image_size >> k for k in range(1, 6)),
                      encoders.encoder_channels(encoder_name)))
  channels[image_size] = 3
  return by_size, channels


def ige_energy(encoder="mn", resolution=32, image_size=128,
               image_decoder_channels=None, depth_bins=None,
               energy_filters=None, kernel_scale=1e-3, min_channels=1):
  """The frustum energy `ige_voxel_model` builds (layer "inner_cnn"), alone:
  the same levels, depth bins and filters for the same arguments (theirs),
  without the image encoder (e.g. for benchmarks of the inner loop).

  Returns:
    `FrustumEnergy` over `[B, R, R, R]` grids, its feature maps
    `[B, h_i, h_i, f_i]` for `h_i = decoders.level_sizes(S / 32, R)` and
    `f_i = decoders.level_channels(...)` (its `level_sizes`,
    `feature_channels`).
  """
  _check_encoder(encoder, _IMAGE_DECODER_CHANNELS)
  top_size = image_size // 32
  _check_resolution(resolution, top_size)
  image_decoder_channels = int(image_decoder_channels
                               or _IMAGE_DECODER_CHANNELS[encoder])
  sizes = decoders.level_sizes(top_size, resolution)
  return FrustumEnergy(
      resolution, sizes,
      decoders.level_channels(image_decoder_channels, len(sizes),
                              min_channels),
      depth_bins=depth_bins, filters=energy_filters,
      kernel_scale=kernel_scale, occupancy="sigmoid", name="inner_cnn")


@gin.configurable
def ige_voxel_model(encoder="mn", resolution=32, num_steps=3, image_size=128,
                    grid="frustum", encoder_weights=None, train_encoder=True,
                    image_decoder_channels=None, generator_channels=None,
                    generator_resolution=32, depth_bins=None,
                    energy_filters=None, kernel_scale=1e-3,
                    learning_rate=1.0, clip_value=1.0, min_channels=1,
                    recompute_steps=False, encoder_dtype=None, name=None):
  """IGE-Net for single-view reconstruction in frustum space.

  Args:
    encoder: "mn" (MobileNetV2 to 4^2 x 320), "i4" (Inception-ResNet-v2,
      SAME padding) or "inception_v4".
    resolution: R, frustum grid resolution `t 2^k`, k >= 1 (t = image_size /
      32), e.g. 32, 64, 128, 256 at 128^2 images.
    num_steps: T, unrolled inner-optimizer steps.
    image_size: S, a multiple of 32.
    grid: "frustum", the only grid IGE-Net models (its energy pools frustum
      grids, paper 6.1); accepted so that every builder takes the problem's
      grid (`VoxelProblem.build_model`).
    encoder_weights: the encoder trunk's weights: None (random), "imagenet"
      (Keras-applications file, cached or downloaded) or a local file
      (`encoders.build_image_encoder(weights=...)`).
    train_encoder: whether the encoder is trained.
    image_decoder_channels: channels of the coarsest image-decoder map
      (default 128 MN / 512 I4, Table 2), halving per level.
    generator_channels: channels of the 4^3 initial-estimate grid (default
      64 MN / 256 I4, Table 2).
    generator_resolution: resolution of the deconvolution initial estimate
      (32, paper), trilinearly upsampled to R (capped at R).
    depth_bins: per-level depth bins of the energy (default `R f_i / f_0`).
    energy_filters: per-level `(n_i, m_i)` filters (default `(2 f_i, 2 f_i)`).
    kernel_scale: factor on the energy's output kernels (paper 5.2: 1e-3).
    learning_rate: initial learned inner learning rate (paper 5.2: 1).
    clip_value: initial learned gradient clip value (paper 5.2: 1).
    min_channels: lower bound on the image decoder's channels f_i at fine
      levels (and so on the energy's depth bins and filters). The default 1
      keeps the paper's rule (f_i halves as the level size doubles, so every
      level costs the same multiply-adds, 6.1) at every R the image size
      allows; a floor of 4 broke it at 256^3 for IGE-MN (f = 4 instead of 2:
      the 256^2 level cost 4x the others). Unchanged up to 128^3.
    recompute_steps: recompute each inner step in the backward pass instead
      of storing its intermediates (`UnrolledSGD.recompute_steps`): less
      memory at high resolution for some extra compute; same values and
      gradients.
    encoder_dtype: dtype policy of the image encoder (None: the global
      policy; "float32" keeps it in float32 under mixed precision, see
      docs/distributed.md).
    name: model name (default "ige_<encoder>_<R>").

  Returns:
    `keras.Model`: `{"image": float32 [B, S, S, 3]}` -> `{"steps": float32
    [T+1, B, R, R, R] logits, "energy": [T, B], "grad_norm": [T, B]}`.
  """
  if grid != "frustum":
    raise ValueError(f"ige_voxel_model: grid {grid!r}: IGE-Net's energy pools "
                     "frustum grids (paper 6.1); use VoxelProblem.grid = "
                     "'frustum' (world-grid models are baselines)")
  _check_encoder(encoder, _IMAGE_DECODER_CHANNELS)
  top_size = image_size // 32
  _check_resolution(resolution, top_size)
  image_decoder_channels = int(image_decoder_channels
                               or _IMAGE_DECODER_CHANNELS[encoder])
  generator_channels = int(generator_channels or _GENERATOR_CHANNELS[encoder])
  generator_resolution = min(int(generator_resolution), resolution)

  image = keras.Input((image_size, image_size, 3), name="image")
  encoder_model = encoders.build_image_encoder(
      encoder, image_size, weights=encoder_weights, trainable=train_encoder,
      dtype=encoder_dtype)
  by_size, channels = _encoder_maps(encoder, image, encoder_model, image_size)
  top = by_size[top_size]

  generator = decoders.build_occupancy_decoder(
      channels[top_size], top_size, base_channels=generator_channels,
      resolution=generator_resolution, output_resolution=resolution,
      name="3d_decoder")
  initial = generator(top)

  sizes = decoders.level_sizes(top_size, resolution)
  skip_sizes = [s for s in sizes[1:] if s in by_size]
  image_decoder = decoders.build_image_decoder(
      channels[top_size], {s: channels[s] for s in skip_sizes}, top_size,
      resolution, base_channels=image_decoder_channels,
      min_channels=min_channels, name="image_decoder")
  feature_maps = image_decoder([top] + [by_size[s] for s in skip_sizes])

  energy = ige_energy(encoder, resolution, image_size, image_decoder_channels,
                      depth_bins, energy_filters, kernel_scale, min_channels)
  optimizer = UnrolledSGD(
      energy, num_steps, learning_rate=learning_rate, momentum=None,
      clip_value=clip_value, learn_learning_rate=True, learn_clip_value=True,
      recompute_steps=recompute_steps, name="inner_optimizer")
  outputs = optimizer(initial, feature_maps, return_diagnostics=True)
  return keras.Model({"image": image}, outputs,
                     name=name or f"ige_{encoder}_{resolution}")


@gin.configurable
def baseline_voxel_model(encoder="mn", resolution=32, grid="frustum",
                         image_size=128, encoder_weights=None,
                         train_encoder=True, base_channels=None, min_channels=4,
                         encoder_dtype=None, name=None):
  """3D-deconvolution baseline (paper 6.3: the initial-estimate network with
  the features doubled), extendable to R = 64, 128, 256.

  Args:
    encoder: "mn" (full MobileNetV2 without top, 4^2 x 1280, Table 2's MN
      baseline), "i4" or "inception_v4".
    resolution: R, output grid resolution (`t 2^k`, t = image_size / 32).
    grid: "frustum" or "world": which label grid the model is trained on.
      The architecture is the same; it is recorded in the model name (the
      data side, `VoxelProblem(grid=...)`, picks the labels).
    image_size: S, a multiple of 32.
    encoder_weights: the encoder trunk's weights: None (random), "imagenet"
      (Keras-applications file, cached or downloaded) or a local file
      (`encoders.build_image_encoder(weights=...)`).
    train_encoder: whether the encoder is trained.
    base_channels: channels of the 4^3 grid (default 128 MN / 512 I4, twice
      the IGE initial-estimate network's).
    min_channels: lower bound on hidden channels at fine resolutions.
    encoder_dtype: dtype policy of the image encoder (None: the global
      policy; "float32" keeps it in float32 under mixed precision, see
      docs/distributed.md).
    name: model name (default "base_<encoder>_<grid>_<R>").

  Returns:
    `keras.Model`: `{"image": float32 [B, S, S, 3]}` -> `{"steps": float32
    [1, B, R, R, R] logits}`.
  """
  _check_encoder(encoder, _BASELINE_ENCODERS)
  if grid not in GRIDS:
    raise ValueError(f"Unknown grid {grid!r}; expected one of {GRIDS}")
  top_size = image_size // 32
  _check_resolution(resolution, top_size)
  base_channels = int(base_channels or 2 * _GENERATOR_CHANNELS[encoder])
  encoder_name = _BASELINE_ENCODERS[encoder]

  image = keras.Input((image_size, image_size, 3), name="image")
  encoder_model = encoders.build_image_encoder(
      encoder_name, image_size, weights=encoder_weights,
      trainable=train_encoder, dtype=encoder_dtype)
  top = encoder_model(image)[-1]
  decoder = decoders.build_occupancy_decoder(
      encoders.encoder_channels(encoder_name)[-1], top_size,
      base_channels=base_channels, resolution=resolution,
      min_channels=min_channels, name="3d_decoder")
  steps = AddStepAxis(name="steps")(decoder(top))
  model = keras.Model({"image": image}, {"steps": steps},
                      name=name or f"base_{encoder}_{grid}_{resolution}")
  return model


def _inner_layers(model):
  """(UnrolledSGD layer, its energy) of an IGE model, or (None, None)."""
  optimizer = find_inner_optimizer(model)
  return (None, None) if optimizer is None else (optimizer, optimizer.energy)


_INNER_INPUTS = weakref.WeakKeyDictionary()


def inner_optimizer_inputs(model):
  """The part of an IGE model before its inner optimizer, as a model.

  For folding a loss into the unroll (`VoxelProblem.training_loss`): the
  returned `(optimizer, inputs_fn)` run as `optimizer(*inputs_fn(features,
  training), ...)` is `model(features, training)` with the
  `UnrolledSGD` call exposed. `inputs_fn` is a functional model sharing the
  model's layers and weights (encoder, 3D decoder, image decoder), built once
  per model (cached).

  Args:
    model: a functional model with one `UnrolledSGD` layer called once
      (`ige_voxel_model`, also after `keras.models.load_model`).

  Returns:
    `(optimizer, inputs_fn)`; `inputs_fn(features, training) -> (initial
    [B, R, R, R], context list of [B, h_i, h_i, f_i])`; or `(None, None)`
    for a model without an inner optimizer.
  """
  if model in _INNER_INPUTS:
    return _INNER_INPUTS[model]
  optimizer = find_inner_optimizer(model)
  if optimizer is None:
    return None, None
  nodes = [n for n in optimizer._inbound_nodes]  # pylint: disable=protected-access
  if len(nodes) != 1:
    raise ValueError(f"model {model.name}: the inner optimizer "
                     f"{optimizer.name} is called {len(nodes)} times; "
                     "expected once")
  initial, context = nodes[0].arguments.args[:2]
  flat_context = tf.nest.flatten(context)
  part = keras.Model(model.input, [initial] + flat_context,
                     name=f"{model.name}_before_inner_optimizer")

  def inputs_fn(features, training):
    outputs = part(features, training=training)
    return outputs[0], tf.nest.pack_sequence_as(context, outputs[1:])

  _INNER_INPUTS[model] = (optimizer, inputs_fn)
  return optimizer, inputs_fn


def _component_or_zero(model, name):
  try:
    return model.get_layer(name)
  except ValueError:
    return None


def component_params(model):
  """Trainable parameters per Table 2 row.

  Args:
    model: a model from `ige_voxel_model` or `baseline_voxel_model`.

  Returns:
    dict with int entries "image_encoder", "3d_decoder", "image_decoder",
    "inner_cnn", "inner_optimizer" (0 where a model has no such part) and
    "total" (all trainable parameters of the model).
  """
  counts = {}
  for name in ("image_encoder", "3d_decoder", "image_decoder"):
    layer = _component_or_zero(model, name)
    counts[name] = 0 if layer is None else count_trainable(layer)
  optimizer, energy = _inner_layers(model)
  counts["inner_cnn"] = 0 if energy is None else count_trainable(energy)
  counts["inner_optimizer"] = (0 if optimizer is None else
                               count_trainable(optimizer)
                               - counts["inner_cnn"])
  counts["total"] = count_trainable(model)
  return counts


def multiply_adds_by_component(model):
  """Multiply-adds per example at inference, per Table 2 row.

  Weight layers of the functional graph are counted from their shapes
  (`ige_tf.voxel.flops`). Each of the T inner steps evaluates the energy and
  its gradient with respect to the iterate; that backward pass through the
  VALID convolutions costs the same multiply-adds as the forward pass (a
  transposed convolution of the same kernel), so "inner_cnn" is
  `2 T * FrustumEnergy.multiply_adds()`. The weight gradients are not needed
  at inference and are not counted.

  Returns:
    dict "image_encoder", "3d_decoder", "image_decoder", "inner_cnn", "total"
    -> int.
  """
  per_layer = flops.model_multiply_adds(model)
  counts = {}
  for name in ("image_encoder", "3d_decoder", "image_decoder"):
    counts[name] = sum(v for k, v in per_layer.items()
                       if k.startswith(f"{name}/"))
  optimizer, energy = _inner_layers(model)
  counts["inner_cnn"] = (0 if energy is None else
                         2 * optimizer.num_steps * sum(energy.multiply_adds()))
  counts["total"] = sum(per_layer.values()) + counts["inner_cnn"]
  return counts


def multiply_adds(model):
  """Total multiply-adds per example at inference (int); see above."""
  return multiply_adds_by_component(model)["total"]
