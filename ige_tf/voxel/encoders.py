"""Image encoders for single-view voxel reconstruction (paper 6.3, Table 2).

Every encoder maps an image `[B, S, S, 3]` (float32 in [0, 1]) to a list of
feature maps at strides 2, 4, 8, 16 and 32, highest resolution first:

    [x_{S/2}, x_{S/4}, x_{S/8}, x_{S/16}, x_{S/32}]

At the paper's S = 128 these are 64^2, 32^2, 16^2, 8^2 and 4^2 maps; the last
one is the encoder output of Table 2 and the others are the skip connections
of the U-Net image decoder.

Encoders (`name`):

- `"mn"`: `keras.applications.MobileNetV2` (alpha 1) cut at
  `block_16_project_BN`: 4^2 x 320, 1,811,712 trainable parameters (IGE-MN).
- `"mn_full"`: MobileNetV2 without top (`out_relu`): 4^2 x 1280, 2,223,872
  trainable parameters (the MN baseline of Table 2).
- `"i4"`: Inception-ResNet-v2 without top with SAME padding everywhere, so a
  128^2 image gives 4^2 x 1536 (Keras' VALID-padded model gives 2^2). Padding
  does not change parameter shapes: 54,276,192 trainable parameters, exactly
  `keras.applications.InceptionResNetV2(include_top=False)`, and its layers
  are created in the same order, so Keras' ImageNet file loads into it.
- `"inception_v4"`: a true Inception-v4 (Szegedy et al. 2017, Figs. 3-8)
  without top, SAME padding everywhere (4^2 x 1536 at 128^2):
  41,111,232 trainable parameters (measured; BatchNorm without scale as in
  the TF-slim original). No Keras ImageNet file exists for it; `weights`
  accepts a `.weights.h5` saved from this encoder.

Weights (`weights`): `None` keeps the random initialisation; `"imagenet"`
loads the Keras-applications ImageNet file of the trunk (MobileNetV2 no-top
for "mn" / "mn_full", Inception-ResNet-v2 no-top for "i4"; none exists for
"inception_v4"), fetched with `keras.utils.get_file` as
`keras.applications` does: from Keras' cache (`$KERAS_HOME/models` or
`~/.keras/models`) when present, else downloaded once into it. A path loads
a local file: a Keras-applications ImageNet file (legacy `.h5`, loaded by
layer order, e.g. `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5`
or `inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5`) or a
Keras 3 `.weights.h5` file of the same trunk. Offline without a cached file,
`"imagenet"` is an error naming the file, the cache and the URL tried, and how
to provide the file.

Images are rescaled inside the encoder from [0, 1] to [-1, 1], the input range
of all these ImageNet networks.
"""
import os

import keras

from ige_tf.core.precision import dtype_policy

ENCODER_NAMES = ("mn", "mn_full", "i4", "inception_v4")

IMAGENET = "imagenet"
_KERAS_APPLICATIONS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/")
# MobileNetV2 ImageNet files exist for these input sizes; Keras uses the 224
# file otherwise (no-top weights have the same shapes at every size).
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)

# Layers whose outputs are the stride 2, 4, 8, 16, 32 feature maps.
_MOBILENET_V2_SKIPS = ("expanded_conv_project_BN", "block_2_add",
                       "block_5_add", "block_12_add")

# Output channels at strides 2, 4, 8, 16, 32.
ENCODER_CHANNELS = {
    "mn": (16, 24, 32, 96, 320),
    "mn_full": (16, 24, 32, 96, 1280),
    "i4": (64, 192, 320, 1088, 1536),
    "inception_v4": (64, 192, 384, 1024, 1536),
}


def _check_name(name):
  if name not in ENCODER_NAMES:
    raise ValueError(
        f"Unknown image encoder {name!r}; expected one of {ENCODER_NAMES}")


def encoder_channels(name):
  """Channel counts of the encoder's feature maps, highest resolution first.

  Args:
    name: one of `ENCODER_NAMES`.

  Returns:
    Tuple of 5 ints: channels at strides 2, 4, 8, 16, 32.
  """
  _check_name(name)
  return ENCODER_CHANNELS[name]


def imagenet_weights_file(name, image_size=128):
  """The Keras-applications ImageNet file of encoder `name`'s no-top trunk.

  Args:
    name: one of `ENCODER_NAMES`.
    image_size: int S (selects MobileNetV2's file, as `keras.applications`).

  Returns:
    `(file_name, url, md5 or None)`, what `keras.applications` fetches.

  Raises:
    ValueError: `name` has no ImageNet file ("inception_v4").
  """
  _check_name(name)
  if name in ("mn", "mn_full"):
    rows = image_size if image_size in _MOBILENET_V2_SIZES else 224
    file_name = ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_"
                 f"{rows}_no_top.h5")
    return file_name, f"{_KERAS_APPLICATIONS_URL}mobilenet_v2/{file_name}", None
  if name == "i4":
    file_name = ("inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_"
                 "notop.h5")
    return (file_name,
            f"{_KERAS_APPLICATIONS_URL}inception_resnet_v2/{file_name}",
            "d19885ff4a710c122648d3b5c3b684e4")
  raise ValueError(
      f"image encoder {name!r} has no ImageNet weights (Keras ships none for "
      "Inception-v4): use weights=None or a local .weights.h5 file saved "
      "from this encoder")


def _keras_cache_path(file_name):
  """Where `keras.utils.get_file(file_name, cache_subdir="models")` caches."""
  home = os.environ.get("KERAS_HOME",
                        os.path.join(os.path.expanduser("~"), ".keras"))
  return os.path.join(home, "models", file_name)


def fetch_imagenet_weights(name, image_size=128):
  """Path of encoder `name`'s ImageNet file: Keras' cache or a download.

  Uses `keras.utils.get_file` (the cache of `keras.applications`; downloads
  only when the file is not cached, checking the MD5 where Keras has one).

  Args:
    name: one of "mn", "mn_full", "i4".
    image_size: int S (MobileNetV2's file depends on it).

  Returns:
    str, the local path of the weights file.

  Raises:
    ValueError: no ImageNet file for `name`.
    FileNotFoundError: neither cached nor downloadable (e.g. offline); the
      message names the file, the cache and the URL, and how to provide it.
  """
  file_name, url, md5 = imagenet_weights_file(name, image_size)
  try:
    return keras.utils.get_file(file_name, url, cache_subdir="models",
                                file_hash=md5)
  except Exception as error:  # Keras raises a bare Exception when offline.
    raise FileNotFoundError(
        f"ImageNet weights of image encoder {name!r} are not available: "
        f"{file_name} is not in Keras' cache ({_keras_cache_path(file_name)}) "
        f"and downloading {url} failed ({error}). Download that file where "
        "there is network access, then copy it into that cache folder or "
        "pass its path as the weights (Python: weights='/path/to/"
        f"{file_name}'; voxel gin configs: ENCODER_WEIGHTS = '/path/to/"
        f"{file_name}'), or use None for random initialisation ("
        "ENCODER_WEIGHTS = None)") from error


def _load_weights(model, weights_path, name):
  """Loads `weights_path` into `model` with an error naming the file."""
  path = os.fspath(weights_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path}: weights file for image encoder {name!r} does not exist "
        f"(pass a local file, '{IMAGENET}' or None)")
  if not (path.endswith(".h5") or path.endswith(".hdf5")):
    raise ValueError(
        f"{path}: expected a Keras weights file ending in .weights.h5 or a "
        f"legacy .h5 / .hdf5 file for image encoder {name!r}")
  try:
    model.load_weights(path)
  except Exception as error:  # Keras raises ValueError/KeyError/OSError.
    raise ValueError(
        f"{path}: cannot load weights into image encoder {name!r} "
        f"(expected the no-top weights of the same architecture): {error}"
    ) from error


def _conv_bn(x, filters, kernel_size, strides=1, padding="same",
             activation="relu", use_bias=False, name=None):
  """Conv2D + BatchNorm (without scale) + activation, Keras-applications style.

  The layer creation order (conv, BN, activation) matches
  `keras.applications.inception_resnet_v2.conv2d_bn` so order-based ImageNet
  weight files load into the I4 trunk.
  """
  x = keras.layers.Conv2D(filters, kernel_size, strides=strides,
                          padding=padding, use_bias=use_bias, name=name)(x)
  if not use_bias:
    x = keras.layers.BatchNormalization(
        axis=-1, scale=False, name=None if name is None else f"{name}_bn")(x)
  if activation is not None:
    x = keras.layers.Activation(
        activation, name=None if name is None else f"{name}_ac")(x)
  return x


@keras.saving.register_keras_serializable(package="ige_tf")
class ScaledResidual(keras.layers.Layer):
  """`shortcut + scale * residual` (Inception-ResNet blocks).

  Args:
    scale: float factor on the residual branch.

  Call args: `[shortcut, residual]`, two float tensors of the same shape.
  """

  def __init__(self, scale, **kwargs):
    super().__init__(**kwargs)
    self.scale = float(scale)

  def call(self, inputs):
    shortcut, residual = inputs
    return shortcut + residual * self.scale

  def compute_output_shape(self, input_shape):
    return input_shape[0]

  def get_config(self):
    config = super().get_config()
    config.update(scale=self.scale)
    return config


def _inception_resnet_block(x, block_type, index, scale, activation="relu"):
  """One Inception-ResNet-A/B/C block (`block35`, `block17`, `block8`).

  All convolutions inside the blocks are SAME-padded in the original too.
  """
  if block_type == "block35":
    branches = [
        _conv_bn(x, 32, 1),
        _conv_bn(_conv_bn(x, 32, 1), 32, 3),
        _conv_bn(_conv_bn(_conv_bn(x, 32, 1), 48, 3), 64, 3),
    ]
  elif block_type == "block17":
    branches = [
        _conv_bn(x, 192, 1),
        _conv_bn(_conv_bn(_conv_bn(x, 128, 1), 160, (1, 7)), 192, (7, 1)),
    ]
  else:  # block8
    branches = [
        _conv_bn(x, 192, 1),
        _conv_bn(_conv_bn(_conv_bn(x, 192, 1), 224, (1, 3)), 256, (3, 1)),
    ]
  name = f"{block_type}_{index}"
  mixed = keras.layers.Concatenate(name=f"{name}_mixed")(branches)
  residual = _conv_bn(mixed, x.shape[-1], 1, activation=None, use_bias=True,
                      name=f"{name}_conv")
  x = ScaledResidual(scale, name=f"{name}_residual")([x, residual])
  if activation is not None:
    x = keras.layers.Activation(activation, name=f"{name}_ac")(x)
  return x


def inception_resnet_v2_trunk(image_size=128, padding="same",
                              blocks=(10, 20, 10)):
  """Inception-ResNet-v2 without top as a Keras functional model.

  Same layers, in the same creation order, as
  `keras.applications.InceptionResNetV2(include_top=False)`, except that the
  stride-2 and stem convolutions/poolings use `padding` (Keras: VALID).
  With SAME padding a 128^2 input gives a 4^2 x 1536 output.

  Args:
    image_size: int S, input height and width.
    padding: "same" (I4 encoder) or "valid" (Keras' original).
    blocks: the numbers (A, B, C) of Inception-ResNet-A, -B and -C blocks,
      each at least 1; the network's are (10, 20, 10), which the I4 encoder
      and its weight files need. Fewer give a smaller network with the
      same layer types if C is at least 2 (the last C block differs).

  Returns:
    `keras.Model` named "inception_resnet_v2": float32 `[B, S, S, 3]` in
    [-1, 1] -> float32 `[B, S/32, S/32, 1536]` (SAME padding). Layers
    `stem_64_ac`, `stem_192_ac`, `block35_{A}_ac`, `block17_{B}_ac`,
    `conv_7b_ac` give the stride 2, 4, 8, 16 and 32 maps (`block35_10_ac`
    and `block17_20_ac` with the default `blocks`).
  """
  if min(blocks) < 1:
    raise ValueError(f"blocks must be at least 1 each, got {blocks}")
  image = keras.Input((image_size, image_size, 3), name="image")
  x = _conv_bn(image, 32, 3, strides=2, padding=padding)
  x = _conv_bn(x, 32, 3, padding=padding)
  x = _conv_bn(x, 64, 3, name="stem_64")
  x = keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x)
  x = _conv_bn(x, 80, 1, padding=padding)
  x = _conv_bn(x, 192, 3, padding=padding, name="stem_192")
  x = keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x)

  branch_0 = _conv_bn(x, 96, 1)
  branch_1 = _conv_bn(_conv_bn(x, 48, 1), 64, 5)
  branch_2 = _conv_bn(_conv_bn(_conv_bn(x, 64, 1), 96, 3), 96, 3)
  branch_pool = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
  branch_pool = _conv_bn(branch_pool, 64, 1)
  x = keras.layers.Concatenate(name="mixed_5b")(
      [branch_0, branch_1, branch_2, branch_pool])
  num_a, num_b, num_c = blocks
  for index in range(1, num_a + 1):
    x = _inception_resnet_block(x, "block35", index, 0.17)

  branch_0 = _conv_bn(x, 384, 3, strides=2, padding=padding)
  branch_1 = _conv_bn(_conv_bn(_conv_bn(x, 256, 1), 256, 3), 384, 3,
                      strides=2, padding=padding)
  branch_pool = keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x)
  x = keras.layers.Concatenate(name="mixed_6a")([branch_0, branch_1,
                                                 branch_pool])
  for index in range(1, num_b + 1):
    x = _inception_resnet_block(x, "block17", index, 0.1)

  branch_0 = _conv_bn(_conv_bn(x, 256, 1), 384, 3, strides=2, padding=padding)
  branch_1 = _conv_bn(_conv_bn(x, 256, 1), 288, 3, strides=2, padding=padding)
  branch_2 = _conv_bn(_conv_bn(_conv_bn(x, 256, 1), 288, 3), 320, 3,
                      strides=2, padding=padding)
  branch_pool = keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x)
  x = keras.layers.Concatenate(name="mixed_7a")(
      [branch_0, branch_1, branch_2, branch_pool])
  for index in range(1, num_c):
    x = _inception_resnet_block(x, "block8", index, 0.2)
  x = _inception_resnet_block(x, "block8", num_c, 1.0, activation=None)
  x = _conv_bn(x, 1536, 1, name="conv_7b")
  return keras.Model(image, x, name="inception_resnet_v2")


def inception_v4_trunk(image_size=128, padding="same"):
  """Inception-v4 without top (Szegedy et al. 2017) as a functional model.

  Stem (Fig. 3), 4 x Inception-A (Fig. 4), Reduction-A (Fig. 7, k=192,
  l=224, m=256, n=384), 7 x Inception-B (Fig. 5), Reduction-B (Fig. 8),
  3 x Inception-C (Fig. 6). Convolutions have no bias and are followed by
  BatchNorm without scale and ReLU. The paper's VALID convolutions use
  `padding`; with "same" a 128^2 input gives a 4^2 x 1536 output.

  Args:
    image_size: int S, input height and width.
    padding: "same" (default) or "valid" (the paper's 299 -> 8^2 network).

  Returns:
    `keras.Model` named "inception_v4": float32 `[B, S, S, 3]` in [-1, 1] ->
    float32 `[B, S/32, S/32, 1536]` (SAME padding). Layers `stem_64_ac`,
    `mixed_4a`, `inception_a_4`, `inception_b_7`, `inception_c_3` give the
    stride 2, 4, 8, 16 and 32 maps.
  """
  image = keras.Input((image_size, image_size, 3), name="image")
  x = _conv_bn(image, 32, 3, strides=2, padding=padding)
  x = _conv_bn(x, 32, 3, padding=padding)
  x = _conv_bn(x, 64, 3, name="stem_64")
  x = keras.layers.Concatenate(name="mixed_3a")([
      keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x),
      _conv_bn(x, 96, 3, strides=2, padding=padding)])
  x = keras.layers.Concatenate(name="mixed_4a")([
      _conv_bn(_conv_bn(x, 64, 1), 96, 3, padding=padding),
      _conv_bn(_conv_bn(_conv_bn(_conv_bn(x, 64, 1), 64, (7, 1)), 64, (1, 7)),
               96, 3, padding=padding)])
  x = keras.layers.Concatenate(name="mixed_5a")([
      _conv_bn(x, 192, 3, strides=2, padding=padding),
      keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x)])

  def average_pool(inputs):
    return keras.layers.AveragePooling2D(3, strides=1, padding="same")(inputs)

  for index in range(1, 5):
    x = keras.layers.Concatenate(name=f"inception_a_{index}")([
        _conv_bn(average_pool(x), 96, 1),
        _conv_bn(x, 96, 1),
        _conv_bn(_conv_bn(x, 64, 1), 96, 3),
        _conv_bn(_conv_bn(_conv_bn(x, 64, 1), 96, 3), 96, 3)])
  x = keras.layers.Concatenate(name="reduction_a")([
      keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x),
      _conv_bn(x, 384, 3, strides=2, padding=padding),
      _conv_bn(_conv_bn(_conv_bn(x, 192, 1), 224, 3), 256, 3, strides=2,
               padding=padding)])
  for index in range(1, 8):
    x = keras.layers.Concatenate(name=f"inception_b_{index}")([
        _conv_bn(average_pool(x), 128, 1),
        _conv_bn(x, 384, 1),
        _conv_bn(_conv_bn(_conv_bn(x, 192, 1), 224, (1, 7)), 256, (7, 1)),
        _conv_bn(_conv_bn(_conv_bn(_conv_bn(_conv_bn(
            x, 192, 1), 192, (7, 1)), 224, (1, 7)), 224, (7, 1)),
                 256, (1, 7))])
  x = keras.layers.Concatenate(name="reduction_b")([
      keras.layers.MaxPooling2D(3, strides=2, padding=padding)(x),
      _conv_bn(_conv_bn(x, 192, 1), 192, 3, strides=2, padding=padding),
      _conv_bn(_conv_bn(_conv_bn(_conv_bn(x, 256, 1), 256, (1, 7)), 320,
                        (7, 1)), 320, 3, strides=2, padding=padding)])
  for index in range(1, 4):
    branch_2 = _conv_bn(x, 384, 1)
    branch_3 = _conv_bn(_conv_bn(_conv_bn(x, 384, 1), 448, (3, 1)), 512,
                        (1, 3))
    x = keras.layers.Concatenate(name=f"inception_c_{index}")([
        _conv_bn(average_pool(x), 256, 1),
        _conv_bn(x, 256, 1),
        _conv_bn(branch_2, 256, (1, 3)),
        _conv_bn(branch_2, 256, (3, 1)),
        _conv_bn(branch_3, 256, (1, 3)),
        _conv_bn(branch_3, 256, (3, 1))])
  return keras.Model(image, x, name="inception_v4")


def _trunk_and_skips(name, image_size):
  """(single-output trunk model, names of the 5 feature-map layers)."""
  if name in ("mn", "mn_full"):
    trunk = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), include_top=False,
        weights=None)
    top = "block_16_project_BN" if name == "mn" else "out_relu"
    return trunk, _MOBILENET_V2_SKIPS + (top,)
  if name == "i4":
    return inception_resnet_v2_trunk(image_size), (
        "stem_64_ac", "stem_192_ac", "block35_10_ac", "block17_20_ac",
        "conv_7b_ac")
  return inception_v4_trunk(image_size), (
      "stem_64_ac", "mixed_4a", "inception_a_4", "inception_b_7",
      "inception_c_3")


def build_image_encoder(name="mn", image_size=128, weights=None,
                        trainable=True, dtype=None):
  """Builds an image encoder returning multi-scale feature maps.

  Args:
    name: one of `ENCODER_NAMES` ("mn", "mn_full", "i4", "inception_v4").
    image_size: int S, a multiple of 32 (128 in the paper).
    weights: `None` (random initialisation), "imagenet" (the
      Keras-applications ImageNet file, cached or downloaded; see the module
      docstring) or the path of a local weights file of the no-top trunk.
    trainable: whether the encoder's weights are trained.
    dtype: dtype policy name of every encoder layer, e.g. "float32" to keep
      the encoder in float32 under `mixed_float16`; None follows the global
      policy.

  Returns:
    `keras.Model` named "image_encoder": float32 `[B, S, S, 3]` in [0, 1] ->
    list of 5 float32 maps `[B, S/2^k, S/2^k, encoder_channels(name)[k-1]]`
    for k = 1..5 (highest resolution first; the last is the encoder output).

  Raises:
    ValueError: unknown name, bad image size, weights that do not fit, or
      "imagenet" for "inception_v4".
    FileNotFoundError: the weights file does not exist, or "imagenet" is
      neither cached nor downloadable.
  """
  _check_name(name)
  if image_size % 32 or image_size < 32:
    raise ValueError(
        f"image_size must be a positive multiple of 32, got {image_size}")
  weights_path = weights
  if weights is not None and os.fspath(weights) == IMAGENET:
    # Before building: an unavailable file fails fast (I4 takes seconds).
    weights_path = fetch_imagenet_weights(name, image_size)
  # keras.applications trunks take no dtype: their layers follow the
  # global policy while they are built.
  with dtype_policy(dtype):
    trunk, skip_names = _trunk_and_skips(name, image_size)
    if weights_path is not None:
      _load_weights(trunk, weights_path, name)
    features = keras.Model(
        trunk.input, [trunk.get_layer(n).output for n in skip_names],
        name=f"{name}_features")
    features.trainable = trainable
    image = keras.Input((image_size, image_size, 3), name="image")
    scaled = keras.layers.Rescaling(2.0, offset=-1.0,
                                    name="to_minus_one_one")(image)
    return keras.Model(image, features(scaled), name="image_encoder")
