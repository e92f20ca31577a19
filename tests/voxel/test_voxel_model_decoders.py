"""Trilinear upsampling, image decoder, 3D deconvolution decoder."""
import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from ige_tf.voxel import decoders


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_upsample_trilinear_matches_scipy_zoom(factor):
  grid = np.random.default_rng(factor).random((2, 4, 5, 3))
  expected = np.stack([
      scipy.ndimage.zoom(g, factor, order=1, grid_mode=True, mode="nearest")
      for g in grid])
  result = decoders.upsample_trilinear(grid, factor).numpy()
  assert result.shape == (2, 4 * factor, 5 * factor, 3 * factor)
  np.testing.assert_allclose(result, expected, atol=1e-12)


def test_upsample_trilinear_gradient_is_the_numerical_jacobian():
  grid = tf.constant(np.random.default_rng(7).random((1, 3, 2, 4)))
  theoretical, numerical = tf.test.compute_gradient(
      lambda g: decoders.upsample_trilinear(g, 3), [grid], delta=1e-3)
  np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-9)
  # Each input cell spreads weight 3^3 over the output (rows sum to 1).
  np.testing.assert_allclose(theoretical[0].sum(axis=0), 27.0, rtol=1e-12)


def test_linear_upsampling_matrix_rows_are_convex_weights():
  matrix = decoders.linear_upsampling_matrix(4, 2)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
  np.testing.assert_allclose(matrix[:3], [[1, 0, 0, 0], [0.75, 0.25, 0, 0],
                                          [0.25, 0.75, 0, 0]])


def test_upsample_trilinear_half_pixel_values():
  # 1D along the first axis: [0, 1] -> centres at -0.25, 0.25, 0.75, 1.25
  # in input cells, clamped: [0, 0.25, 0.75, 1].
  grid = np.zeros((1, 2, 1, 1))
  grid[0, 1] = 1.0
  result = decoders.upsample_trilinear(grid, 2).numpy()[0, :, 0, 0]
  np.testing.assert_allclose(result, [0.0, 0.25, 0.75, 1.0])


def test_upsample_trilinear_keeps_static_shape_in_graph():
  fn = tf.function(lambda g: decoders.upsample_trilinear(g, 2)).get_concrete_function(
      tf.TensorSpec([None, 4, 4, 4]))
  assert fn.structured_outputs.shape.as_list() == [None, 8, 8, 8]


def test_trilinear_layer_config_round_trip():
  layer = decoders.TrilinearUpsampling3D(4, name="up")
  clone = decoders.TrilinearUpsampling3D.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  grid = np.random.default_rng(0).random((1, 2, 2, 2)).astype(np.float32)
  np.testing.assert_allclose(clone(grid).numpy(), layer(grid).numpy())
  assert layer.compute_output_shape((None, 2, 2, 2)) == (None, 8, 8, 8)
  with pytest.raises(ValueError, match="positive int"):
    decoders.TrilinearUpsampling3D(0)


def test_level_sizes_and_channels():
  assert decoders.level_sizes(4, 32) == (4, 8, 16, 32)
  assert decoders.level_channels(128, 6) == (128, 64, 32, 16, 8, 4)
  assert decoders.level_channels(128, 7) == (128, 64, 32, 16, 8, 4, 4)
  with pytest.raises(ValueError, match="resolution 48 is not the encoder "
                                       "output size 4 times a power of two"):
    decoders.level_sizes(4, 48)


def _count(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_image_decoder_shapes_and_mn_parameter_count():
  # IGE-MN at 32^3: MobileNetV2 skips at 8, 16, 32 (96, 32, 24 channels).
  decoder = decoders.build_image_decoder(
      320, {8: 96, 16: 32, 32: 24, 64: 16}, 4, 32, base_channels=128)
  assert [tuple(o.shape) for o in decoder.outputs] == [
      (None, 4, 4, 128), (None, 8, 8, 64), (None, 16, 16, 32),
      (None, 32, 32, 16)]
  assert len(decoder.inputs) == 4  # top + 3 skips (64 unused at R = 32)
  # Table 2: 140,992; ours 140,608 (see docs/voxel_model.md).
  assert _count(decoder) == 140608
  rng = np.random.default_rng(0)
  outputs = decoder([rng.random((2, 4, 4, 320)), rng.random((2, 8, 8, 96)),
                     rng.random((2, 16, 16, 32)), rng.random((2, 32, 32, 24))])
  assert [o.shape[1] for o in outputs] == [4, 8, 16, 32]


def test_occupancy_decoder_mn_counts_shapes_and_upsampling():
  generator = decoders.build_occupancy_decoder(320, 4, base_channels=64,
                                               resolution=32,
                                               output_resolution=64)
  # Table 2: 238,009 (see docs/voxel_model.md for the 9,000 difference).
  assert _count(generator) == 247009
  assert tuple(generator.output.shape) == (None, 64, 64, 64)
  top = np.random.default_rng(0).random((1, 4, 4, 320)).astype(np.float32)
  full = generator(top).numpy()
  coarse = keras.Model(generator.input,
                       generator.get_layer("logits").output)(top).numpy()
  np.testing.assert_allclose(
      full, decoders.upsample_trilinear(coarse, 2).numpy(), rtol=1e-5,
      atol=1e-6)
  baseline = decoders.build_occupancy_decoder(1280, 4, base_channels=128,
                                              resolution=128)
  assert tuple(baseline.output.shape) == (None, 128, 128, 128)
  assert [l.filters for l in baseline.layers
          if isinstance(l, keras.layers.Conv3DTranspose)] == [64, 32, 16, 8, 1]
  with pytest.raises(ValueError, match="not a multiple of the 3D decoder"):
    decoders.build_occupancy_decoder(320, 4, resolution=32,
                                     output_resolution=48)


def _dense_upsampling(grid, factor):
  """Reference: the separable map applied as one einsum (numpy float64)."""
  matrices = [decoders.linear_upsampling_matrix(s, factor)
              for s in grid.shape[1:]]
  return np.einsum("ai,bj,ck,nijk->nabc", *matrices, grid)


@pytest.mark.parametrize("factor,shape", [
    (1, (2, 3, 5, 2)), (2, (2, 4, 4, 4)), (4, (1, 3, 5, 2)),
    (8, (2, 4, 4, 4))])
def test_upsample_trilinear_values_and_gradient_in_float64(factor, shape):
  rng = np.random.default_rng(factor)
  grid = tf.constant(rng.normal(size=shape))
  upstream = rng.normal(size=(shape[0],) + tuple(factor * s
                                                 for s in shape[1:]))
  with tf.GradientTape() as tape:
    tape.watch(grid)
    fine = decoders.upsample_trilinear(grid, factor)
  gradient = tape.gradient(fine, grid, output_gradients=tf.constant(upstream))
  assert fine.dtype == tf.float64
  np.testing.assert_allclose(fine.numpy(), _dense_upsampling(grid.numpy(),
                                                             factor),
                             rtol=0, atol=1e-13)
  # The gradient is the transposed map: <U x, u> = <x, U^T u>.
  matrices = [decoders.linear_upsampling_matrix(s, factor)
              for s in shape[1:]]
  expected = np.einsum("ai,bj,ck,nabc->nijk", *matrices, upstream)
  np.testing.assert_allclose(gradient.numpy(), expected, rtol=0, atol=1e-12)


def test_upsample_trilinear_writes_no_other_full_size_tensor():
  # What its memory at high resolution relies on (docs/benchmarks.md, issue
  # 11): forward and backward each produce, besides their result, only
  # tensors of at most 1/f of the upsampled grid (reshapes are views).
  factor, shape = 4, (2, 8, 8, 8)
  full = np.prod(shape) * factor ** 3

  @tf.function
  def forward_and_backward(grid, upstream):
    with tf.GradientTape() as tape:
      tape.watch(grid)
      fine = decoders.upsample_trilinear(grid, factor)
    return fine, tape.gradient(fine, grid, output_gradients=upstream)

  graph = forward_and_backward.get_concrete_function(
      tf.TensorSpec(shape), tf.TensorSpec((2, 32, 32, 32))).graph
  sizes = {}
  for op in graph.get_operations():
    if op.type in ("Reshape", "Placeholder", "Identity", "Const"):
      continue
    for output in op.outputs:
      if output.dtype.is_floating:  # Not the shape/index vectors.
        sizes[op.name] = int(np.prod(output.shape.as_list()))
  full_size = [name for name, size in sizes.items() if size == full]
  assert len(full_size) == 1, full_size  # The forward's last product.
  assert sorted(sizes.values())[-2] <= full // factor
