"""FrustumEnergy: anisotropic pooling, gradients (1st and 2nd order), config."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import UnrolledSGD
from ige_tf.voxel import energy as energy_lib
from ige_tf.voxel.energy import FrustumEnergy, pool_frustum


def test_pool_frustum_known_grid():
  # grid[0, i, j, k] = 16 i + 4 j + k on a 4^3 grid.
  grid = np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4)
  # (2, 2, 1): mean over 2 rows, 2 columns, all 4 depth bins.
  np.testing.assert_allclose(
      pool_frustum(grid, 2, 2, 1).numpy()[0, :, :, 0],
      [[11.5, 19.5], [43.5, 51.5]])
  # (1, 4, 2): all rows, single columns, depth pairs: 24 + 4 j + {0.5, 2.5}.
  np.testing.assert_allclose(
      pool_frustum(grid, 1, 4, 2).numpy()[0, 0],
      [[24.5, 26.5], [28.5, 30.5], [32.5, 34.5], [36.5, 38.5]])
  # (4, 4, 4) is the identity.
  np.testing.assert_allclose(pool_frustum(grid, 4, 4, 4).numpy(), grid)


def test_pool_frustum_matches_block_mean_on_random_grid():
  rng = np.random.default_rng(0)
  grid = rng.random((2, 8, 8, 8)).astype(np.float32)
  expected = grid.reshape(2, 2, 4, 4, 2, 8, 1).mean(axis=(2, 4, 6))
  np.testing.assert_allclose(pool_frustum(grid, 2, 4, 8).numpy(), expected,
                             rtol=1e-6)


@pytest.mark.parametrize("shape, pooled", [
    ((1, 2, 2, 256), (2, 2, 4)),     # Depth factor 64: stages 32, 2.
    ((1, 128, 2, 2), (2, 1, 1)),     # Rows 64, columns 2, depth 2.
    ((1, 2, 2, 74), (1, 2, 2)),      # 37, a prime above the limit: one stage.
])
def test_pool_frustum_in_stages_matches_block_mean(shape, pooled):
  """Factors above 32 are taken in stages (`energy._reduction_stages`; XLA
  on CPU materializes a longer reduction's operand): same block means."""
  rng = np.random.default_rng(1)
  grid = rng.random(shape)
  (b, rows, cols, bins), (h, w, d) = shape, pooled
  expected = grid.reshape(b, h, rows // h, w, cols // w, d,
                          bins // d).mean(axis=(2, 4, 6))
  np.testing.assert_allclose(pool_frustum(grid, h, w, d).numpy(), expected,
                             rtol=1e-12)


def test_reduction_stages():
  stages = energy_lib._reduction_stages  # pylint: disable=protected-access
  assert stages(1) == [] and stages(2) == [2] and stages(32) == [32]
  assert stages(64) == [32, 2] and stages(256) == [32, 8]
  assert stages(96) == [32, 3] and stages(37) == [37] and stages(74) == [2, 37]


def test_pool_frustum_rejects_non_divisor():
  with pytest.raises(ValueError, match="axis D of size 8 to 3"):
    pool_frustum(tf.zeros((1, 8, 8, 8)), 2, 2, 3)


def test_default_depth_bins_proportional_to_channels():
  assert energy_lib.default_depth_bins(32, (128, 64, 32, 16)) == (32, 16, 8, 4)
  assert energy_lib.default_depth_bins(128, (512, 256, 128, 64, 32, 16)) == (
      128, 64, 32, 16, 8, 4)
  with pytest.raises(ValueError, match="do not divide resolution 32"):
    energy_lib.default_depth_bins(32, (96, 64))


def test_lowest_level_uses_3x3_then_2x2():
  assert energy_lib.level_kernel_sizes(4) == (3, 2)
  assert energy_lib.level_kernel_sizes(8) == (3, 3)


def _tiny_energy(dtype="float32", occupancy="sigmoid"):
  return FrustumEnergy(8, (4, 8), (4, 2), filters=((5, 3), (4, 2)),
                       kernel_scale=0.7, occupancy=occupancy, dtype=dtype,
                       name="inner_cnn")


def _tiny_inputs(dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=(2, 8, 8, 8)).astype(dtype)
  context = [rng.normal(size=(2, 4, 4, 4)).astype(dtype),
             rng.normal(size=(2, 8, 8, 2)).astype(dtype)]
  return y, context


def test_energy_equals_sum_of_level_cnns_on_pooled_sigmoid():
  energy = _tiny_energy()
  y, context = _tiny_inputs()
  value = energy(tf.constant(y), [tf.constant(c) for c in context]).numpy()
  assert value.shape == (2,)
  occupancy = 1 / (1 + np.exp(-y))
  expected = 0
  for cnn, features, size, depth in zip(energy.level_cnns, context, (4, 8),
                                        (8, 4)):
    pooled = occupancy.reshape(2, size, 8 // size, size, 8 // size, depth,
                               8 // depth).mean(axis=(2, 4, 6))
    expected = expected + cnn(np.concatenate([features, pooled], -1)).numpy()
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  assert energy.depth_bins == (8, 4)


@pytest.fixture
def float64_energy():
  energy = _tiny_energy("float64")
  y, context = _tiny_inputs(np.float64)
  energy(tf.constant(y), [tf.constant(c) for c in context])
  return energy, y, context


def _subspace(point, dimension=5, seed=0):
  """Random affine map a [dimension] -> point + sum_k a_k basis_k.

  Gradient checks along a few random directions keep the finite-difference
  cost small while testing every voxel's contribution.
  """
  basis = np.random.default_rng(seed).normal(size=(dimension,) + point.shape)
  point, basis = tf.constant(point), tf.constant(basis)
  return lambda a: point + tf.tensordot(a, basis, axes=1)


def _check(fn, dimensions, rtol):
  """compute_gradient of a tf.function of float64 parameter vectors."""
  args = [tf.constant(np.random.default_rng(9 + i).normal(size=(d,)) * 0.1)
          for i, d in enumerate(dimensions)]
  theoretical, numerical = tf.test.compute_gradient(tf.function(fn), args,
                                                    delta=1e-5)
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, rtol=rtol, atol=1e-9)
    assert np.abs(t).max() > 0
  return theoretical


def test_energy_gradient_wrt_grid_and_features(float64_energy):
  energy, y, context = float64_energy
  grid, coarse, fine = (_subspace(y, seed=1), _subspace(context[0], seed=2),
                        _subspace(context[1], seed=3))
  _check(lambda a, b, c: energy(grid(a), [coarse(b), fine(c)]), (5, 5, 5),
         rtol=1e-6)


def test_energy_second_order_gradient(float64_energy):
  """The inner optimizer differentiates grad_y E again: check its Jacobian."""
  energy, y, context = float64_energy
  direction = tf.constant(np.random.default_rng(1).normal(size=y.shape))
  grid, fine = _subspace(y, seed=4), _subspace(context[1], seed=5)

  def directional_gradient(a, c):
    point = grid(a)
    with tf.GradientTape() as tape:
      tape.watch(point)
      value = tf.reduce_sum(energy(point, [tf.constant(context[0]), fine(c)]))
    return tf.reduce_sum(tape.gradient(value, point) * direction,
                         axis=[1, 2, 3])

  _check(directional_gradient, (5, 5), rtol=1e-5)


def test_unrolled_steps_gradient_through_pooling_energy(float64_energy):
  energy, y, context = float64_energy
  optimizer = UnrolledSGD(energy, 2, learning_rate=3.0, dtype="float64")
  weights = tf.constant(np.random.default_rng(2).normal(size=y.shape))
  grid, coarse = _subspace(y, seed=6), _subspace(context[0], seed=7)

  def final_step(a, b):
    steps = optimizer(grid(a), [coarse(b), tf.constant(context[1])])
    return tf.reduce_sum(steps[-1] * weights, axis=[1, 2, 3])

  # Non-zero d final / d context (checked in _check): the steps move.
  _check(final_step, (5, 5), rtol=1e-5)


def test_identity_occupancy_pools_raw_grid():
  energy = _tiny_energy(occupancy="identity")
  y, context = _tiny_inputs()
  value = energy(tf.constant(y), [tf.constant(c) for c in context]).numpy()
  cnn = energy.level_cnns[0]
  pooled = y.reshape(2, 4, 2, 4, 2, 8, 1).mean(axis=(2, 4, 6))
  first = cnn(np.concatenate([context[0], pooled], -1)).numpy()
  second_pooled = y.reshape(2, 8, 1, 8, 1, 4, 2).mean(axis=(2, 4, 6))
  second = energy.level_cnns[1](
      np.concatenate([context[1], second_pooled], -1)).numpy()
  np.testing.assert_allclose(value, first + second, rtol=1e-5)


def test_config_round_trip_and_keras_save(tmp_path):
  energy = _tiny_energy()
  y, context = _tiny_inputs()
  expected = energy(tf.constant(y), [tf.constant(c) for c in context]).numpy()
  config = energy.get_config()
  clone = FrustumEnergy.from_config(config)
  clone(tf.constant(y), [tf.constant(c) for c in context])
  clone.set_weights(energy.get_weights())
  assert clone.get_config() == config
  np.testing.assert_allclose(
      clone(tf.constant(y), [tf.constant(c) for c in context]).numpy(),
      expected, rtol=1e-6)

  grid = keras.Input((8, 8, 8))
  coarse, fine = keras.Input((4, 4, 4)), keras.Input((8, 8, 2))
  model = keras.Model([grid, coarse, fine], energy(grid, [coarse, fine]))
  path = str(tmp_path / "energy.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded([y] + context).numpy(), expected,
                             rtol=1e-6)


def test_bad_context_and_configuration_raise():
  energy = _tiny_energy()
  y, context = _tiny_inputs()
  with pytest.raises(ValueError, match="expects 2 context feature maps"):
    energy(tf.constant(y), [tf.constant(context[0])])
  with pytest.raises(ValueError, match="occupancy must be one of"):
    FrustumEnergy(8, (4, 8), (4, 2), occupancy="clip")
  with pytest.raises(ValueError, match="2 level sizes but 1 feature"):
    FrustumEnergy(8, (4, 8), (4,))


def test_multiply_adds_per_level_and_equal_nominal_cost():
  # IGE-MN at 32^3: f = (128, 64, 32, 16), d = (32, 16, 8, 4), n = m = 2 f.
  energy = FrustumEnergy(32, (4, 8, 16, 32), (128, 64, 32, 16))
  expected = [
      2 * 2 * 9 * 160 * 256 + 1 * 1 * 4 * 256 * 256,
      6 * 6 * 9 * 80 * 128 + 4 * 4 * 9 * 128 * 128,
      14 * 14 * 9 * 40 * 64 + 12 * 12 * 9 * 64 * 64,
      30 * 30 * 9 * 20 * 32 + 28 * 28 * 9 * 32 * 32,
  ]
  assert energy.multiply_adds() == expected
  # Without the VALID border losses every level costs the same:
  # h_i w_i (f_i + d_i) n_i.
  nominal = {s * s * (f + d) * n for s, f, d, (n, _) in zip(
      energy.level_sizes, energy.feature_channels, energy.depth_bins,
      energy.filters)}
  assert nominal == {16 * 160 * 256}


@pytest.mark.parametrize("size,sizes,bins", [
    (16, (4, 8, 16), (16, 8, 4)),
    (16, (16, 4, 8), (2, 16, 1)),   # any order
    (24, (8, 12, 4), (4, 8, 16)),   # 12 and 8 not nested: from the full grid
])
def test_pyramid_pooling_equals_direct_pooling(size, sizes, bins):
  grid = np.random.default_rng(3).random((2, size, size, 16)).astype(
      np.float32)
  pooled = energy_lib.pool_frustum_levels(grid, sizes, bins)
  for level, h, depth in zip(pooled, sizes, bins):
    np.testing.assert_allclose(
        level.numpy(), pool_frustum(grid, h, h, depth).numpy(), rtol=1e-5,
        atol=1e-6)


def _autodiff_pooled(y, sizes, bins, occupancy):
  """Today's reference: autodiff of sigmoid + pyramid pooling."""
  occupied = tf.sigmoid(y) if occupancy == "sigmoid" else y
  return energy_lib.pool_frustum_levels(occupied, sizes, bins)


@pytest.mark.parametrize("occupancy", ["sigmoid", "identity"])
@pytest.mark.parametrize("size,sizes,bins", [
    (8, (2, 4, 8), (8, 4, 2)),
    (12, (6, 4, 12), (3, 12, 1)),   # 6 and 4 not nested: two chains
])
def test_pooled_occupancy_matches_autodiff_to_second_order(occupancy, size,
                                                           sizes, bins):
  """Hand-written gradients == autodiff of the plain ops, float64."""
  rng = np.random.default_rng(4)
  y = tf.constant(rng.normal(size=(2, size, size, size)) * 2.0)
  level_weights = [tf.constant(rng.normal(size=(2, h, h, d)))
                   for h, d in zip(sizes, bins)]
  direction = tf.constant(rng.normal(size=y.shape))

  def second_order(pool):
    # A nonlinear function of the pooled levels, its gradient g wrt y (the
    # inner step), then d<g, direction>/dy and /d weights (the outer step).
    with tf.GradientTape(persistent=True) as outer:
      outer.watch([y] + level_weights)
      with tf.GradientTape() as inner:
        inner.watch(y)
        levels = pool(y)
        value = tf.add_n([tf.reduce_sum(tf.sin(w * level))
                          for w, level in zip(level_weights, levels)])
      grad = inner.gradient(value, y)
      projected = tf.reduce_sum(grad * direction)
    return ([l.numpy() for l in levels], grad.numpy(),
            [g.numpy() for g in outer.gradient(
                projected, [y] + level_weights,
                unconnected_gradients=tf.UnconnectedGradients.ZERO)])

  new = second_order(lambda y: energy_lib.pooled_occupancy(
      y, sizes, bins, occupancy))
  reference = second_order(lambda y: _autodiff_pooled(y, sizes, bins,
                                                      occupancy))
  for got, want in zip(new[0] + [new[1]] + new[2],
                       reference[0] + [reference[1]] + reference[2]):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  assert np.abs(new[2][1]).max() > 0
  if occupancy == "sigmoid":
    assert np.abs(new[2][0]).max() > 0  # sigmoid'' term


def test_unpool_is_the_transpose_of_pyramid_pooling():
  rng = np.random.default_rng(5)
  sizes, bins = (4, 8, 2), (2, 4, 8)
  grid = tf.constant(rng.normal(size=(2, 8, 8, 8)))
  grads = [tf.constant(rng.normal(size=(2, h, h, d)))
           for h, d in zip(sizes, bins)]
  with tf.GradientTape() as tape:
    tape.watch(grid)
    levels = energy_lib.pool_frustum_levels(grid, sizes, bins)
    value = tf.add_n([tf.reduce_sum(g * l) for g, l in zip(grads, levels)])
  np.testing.assert_allclose(
      energy_lib.unpool_frustum_levels(grads, sizes, bins, 8, 8).numpy(),
      tape.gradient(value, grid).numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("resolution,sizes,bins,num_parts,shapes", [
    # IGE's levels (h_i d_i constant): the split with the fewest elements.
    (16, (2, 4, 8, 16), (16, 8, 4, 2), 2, [(16, 4), (4, 16)]),
    (16, (2, 4, 8, 16), (16, 8, 4, 2), 3, [(16, 2), (8, 4), (4, 16)]),
    # Not nested (the pyramid restarts from the grid), any order of levels;
    # lcm rows 12 and depth 6 for the first part.
    (12, (4, 6, 12), (3, 2, 6), 2, [(12, 6), (4, 3)]),
    # One part: the full unpooled sum; more parts than levels: one each.
    (8, (4, 8), (8, 4), 1, [(8, 8)]),
    (8, (4, 8), (8, 4), 5, [(8, 4), (4, 8)]),
])
def test_unpool_parts_expand_to_the_unpooled_sum(resolution, sizes, bins,
                                                 num_parts, shapes):
  """`expand_frustum_parts(unpool_frustum_parts(...))` equals
  `unpool_frustum_levels` (float64), with the parts' shapes of the fewest
  elements."""
  rng = np.random.default_rng(7)
  grads = [tf.constant(rng.normal(size=(2, h, h, d)))
           for h, d in zip(sizes, bins)]
  parts = energy_lib.unpool_frustum_parts(grads, sizes, bins, resolution,
                                          resolution, num_parts)
  assert [(p.shape[1], p.shape[3]) for p in parts] == shapes
  assert all(p.shape[0] == 2 and p.shape[1] == p.shape[2] for p in parts)
  np.testing.assert_allclose(
      energy_lib.expand_frustum_parts(parts, resolution, resolution).numpy(),
      energy_lib.unpool_frustum_levels(grads, sizes, bins, resolution,
                                       resolution).numpy(),
      rtol=1e-12, atol=1e-14)


def test_unpool_parts_reject_levels_that_do_not_divide_the_grid():
  with pytest.raises(ValueError, match=r"do not divide the grid 8 x 8 x 6"):
    energy_lib.unpool_part_groups((4, 8), (4, 4), 8, 6)


def test_occupancy_gradient_numerical_gradient_check():
  """tf.test.compute_gradient of the hand-written second-order op."""
  rng = np.random.default_rng(6)
  sizes, bins = (2, 4), (4, 2)
  y = rng.normal(size=(1, 4, 4, 4))
  grads = [rng.normal(size=(1, h, h, d)) for h, d in zip(sizes, bins)]
  grid = _subspace(y, seed=7)
  coarse, fine = _subspace(grads[0], seed=8), _subspace(grads[1], seed=9)
  weights = tf.constant(rng.normal(size=y.shape))
  _check(lambda a, b, c: tf.reduce_sum(weights * energy_lib.occupancy_gradient(
      grid(a), [coarse(b), fine(c)], sizes, bins)), (5, 5, 5), rtol=1e-6)


@pytest.mark.parametrize("recompute", [False, True])
def test_unrolled_energy_training_gradients_equal_the_autodiff_path(
    float64_energy, monkeypatch, recompute):
  """The whole inner loop + per-step IoU loss, new pooling op vs today's
  autodiff pooling: same steps, energies and gradients (float64)."""
  from ige_tf.voxel import losses

  energy, y, context = float64_energy
  optimizer = UnrolledSGD(energy, 2, learning_rate=300.0, clip_value=0.002,
                          learn_learning_rate=True, learn_clip_value=True,
                          recompute_steps=recompute, dtype="float64")
  labels = tf.constant((np.random.default_rng(3).random(y.shape) > 0.6)
                       .astype(np.float64))
  initial = tf.constant(y)
  features = [tf.constant(c) for c in context]

  @tf.function
  def run():
    with tf.GradientTape() as tape:
      tape.watch([initial] + features)
      out = optimizer(initial, features, return_diagnostics=True)
      # MultiStepLoss's sum in float64 (it casts to float32).
      value = tf.add_n([
          0.9 ** (2 - t) * tf.reduce_mean(losses.continuous_iou_loss(
              labels, step)) for t, step in enumerate(tf.unstack(out["steps"]))
      ]) + 0.1 * tf.reduce_sum(out["energy"])
    return out, tape.gradient(
        value, [initial] + features + optimizer.trainable_variables)

  new_out, new_grads = run()
  monkeypatch.setattr(energy_lib, "pooled_occupancy", _autodiff_pooled)
  old_out, old_grads = tf.function(run.python_function)()
  for key in ("steps", "energy", "grad_norm"):
    np.testing.assert_allclose(new_out[key], old_out[key], rtol=1e-12,
                               atol=1e-12, err_msg=key)
  # The iterates move and some gradients are clipped (both branches tested).
  assert np.abs(new_out["steps"][-1] - new_out["steps"][0]).max() > 1e-3
  assert len(new_grads) == 1 + len(context) + len(
      optimizer.trainable_variables)
  for got, want in zip(new_grads, old_grads):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert np.abs(got).max() > 0
