"""Multiply-add counting from layer shapes."""
import keras
import pytest

from ige_tf.voxel import flops


def _built(layer, shape):
  layer.build(shape)
  return layer


@pytest.mark.parametrize("layer,shape,expected", [
    (keras.layers.Dense(7), (None, 5), 5 * 7),
    (keras.layers.Dense(7), (None, 3, 5), 3 * 5 * 7),
    # 8x8 SAME stride 2 -> 4x4 outputs, 3x3x4 kernel, 6 filters.
    (keras.layers.Conv2D(6, 3, strides=2, padding="same"), (None, 8, 8, 4),
     4 * 4 * 9 * 4 * 6),
    (keras.layers.Conv2D(6, 3, groups=2), (None, 8, 8, 4),
     6 * 6 * 9 * 2 * 6),
    # 6^3 VALID 3x3x3 -> 4^3 outputs.
    (keras.layers.Conv3D(2, 3), (None, 6, 6, 6, 5), 64 * 27 * 5 * 2),
    # Every input voxel times the whole 4^3 kernel.
    (keras.layers.Conv3DTranspose(3, 4, strides=2, padding="same"),
     (None, 4, 4, 4, 8), 64 * 64 * 8 * 3),
    (keras.layers.Conv2DTranspose(3, 2, strides=2), (None, 4, 4, 8),
     16 * 4 * 8 * 3),
    (keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
     (None, 8, 8, 4), 64 * 9 * 4 * 2),
    (keras.layers.SeparableConv2D(5, 3), (None, 8, 8, 4),
     36 * 9 * 4 + 36 * 4 * 5),
    (keras.layers.BatchNormalization(), (None, 8, 8, 4), 0),
])
def test_layer_multiply_adds(layer, shape, expected):
  assert flops.layer_multiply_adds(_built(layer, shape), shape) == expected


def test_model_multiply_adds_walks_nested_models():
  inner_input = keras.Input((8, 8, 4))
  inner = keras.Model(inner_input,
                      keras.layers.Conv2D(2, 1, name="pointwise")(inner_input),
                      name="inner")
  image = keras.Input((8, 8, 4))
  x = inner(image)
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(3, name="head")(x)
  model = keras.Model(image, outputs)
  assert flops.model_multiply_adds(model) == {
      "inner/pointwise": 64 * 4 * 2, "head": 128 * 3}


def test_dynamic_spatial_shape_is_rejected():
  layer = _built(keras.layers.Conv2D(2, 3), (None, None, None, 4))
  with pytest.raises(ValueError, match="static spatial sizes"):
    flops.layer_multiply_adds(layer, (None, None, None, 4))
