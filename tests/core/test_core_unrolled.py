"""UnrolledSGD: closed-form iterates, learned hyper-parameters, gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.core import EnergyMLP, UnrolledSGD


@keras.saving.register_keras_serializable(package="ige_tf_tests")
class DiagonalQuadratic(keras.layers.Layer):
  """E(y; c) = 0.5 * sum(d * (y - c)^2) with fixed curvature d [F]."""

  def __init__(self, curvature, **kwargs):
    super().__init__(**kwargs)
    self.curvature = list(curvature)

  def call(self, y, context, training=None):
    d = tf.constant(self.curvature, y.dtype)
    return 0.5 * tf.reduce_sum(d * tf.square(y - context), axis=-1)

  def get_config(self):
    return dict(super().get_config(), curvature=self.curvature)


@keras.saving.register_keras_serializable(package="ige_tf_tests")
class MLPEnergy(keras.layers.Layer):
  """A non-quadratic learned energy: EnergyMLP([y, c, y * c])."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.mlp = EnergyMLP((5,), 3, kernel_scale=0.5, dtype=self.dtype_policy)

  def call(self, y, context, training=None):
    return self.mlp(tf.concat([y, context, y * context], axis=-1))


def test_fixed_rate_gives_closed_form_iterates():
  d = np.array([0.5, 1.0, 1.5, 3.0])
  c = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]])
  y0 = np.zeros_like(c)
  lr, num_steps = 0.4, 5
  layer = UnrolledSGD(DiagonalQuadratic(d), num_steps, learning_rate=lr)
  steps = layer(tf.constant(y0, tf.float32), tf.constant(c, tf.float32)).numpy()
  assert steps.shape == (num_steps + 1, 2, 4)
  for t in range(num_steps + 1):
    expected = c + (1 - lr * d) ** t * (y0 - c)
    np.testing.assert_allclose(steps[t], expected, rtol=1e-5, atol=1e-6)


def test_momentum_and_clipping_follow_the_documented_update():
  d = np.array([0.5, 4.0, 2.0])
  c = np.array([[3.0, -2.0, 0.5]])
  lr, mu, clip, num_steps = 0.3, -0.6, 0.8, 4
  layer = UnrolledSGD(DiagonalQuadratic(d), num_steps, learning_rate=lr,
                      momentum=mu, clip_value=clip)
  steps = layer(tf.zeros((1, 3)), tf.constant(c, tf.float32)).numpy()
  y, m = np.zeros((1, 3)), np.zeros((1, 3))
  for t in range(num_steps):
    g = np.clip(d * (y - c), -clip, clip)
    m = abs(mu) * m + g  # momentum enters as |mu|
    y = y - lr * m
    np.testing.assert_allclose(steps[t + 1], y, rtol=1e-5, atol=1e-6)


def test_learning_the_rate_reaches_the_minimizer():
  d = np.full(3, 2.0)  # the exact one-step rate is 1 / d = 0.5
  layer = UnrolledSGD(DiagonalQuadratic(d), 1, learning_rate=0.1,
                      learn_learning_rate=True)
  rng = np.random.default_rng(0)
  c = tf.constant(rng.normal(size=(8, 3)), tf.float32)
  y0 = tf.zeros((8, 3))
  layer(y0, c)
  opt = keras.optimizers.SGD(0.1)
  initial_error = float(tf.norm(layer(y0, c)[-1] - c))
  for _ in range(100):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(layer(y0, c)[-1] - c))
    opt.apply(tape.gradient(loss, layer.trainable_variables),
              layer.trainable_variables)
  final_error = float(tf.norm(layer(y0, c)[-1] - c))
  assert final_error < 1e-3 * initial_error
  assert float(layer.learning_rate) == pytest.approx(0.5, abs=0.02)


def _scalar_loss(layer, y0, c):
  steps = layer(y0, c)
  weights = tf.constant([0.3, 0.7, 1.1, 1.9], steps.dtype)[:, None, None]
  return tf.reduce_sum(weights * tf.sin(steps))


def _central_difference(fn, variable, eps=1e-6):
  value = variable.numpy()
  flat = value.reshape(-1)
  grad = np.zeros_like(flat)
  for i in range(flat.size):
    for sign in (1, -1):
      shifted = flat.copy()
      shifted[i] += sign * eps
      variable.assign(shifted.reshape(value.shape))
      grad[i] += sign * float(fn()) / (2 * eps)
  variable.assign(value)
  return grad.reshape(value.shape)


def test_gradients_match_finite_differences():
  keras.utils.set_random_seed(1)
  layer = UnrolledSGD(MLPEnergy(dtype="float64"), 3, learning_rate=0.7,
                      momentum=0.3, clip_value=0.9, learn_learning_rate=True,
                      learn_momentum=True, learn_clip_value=True,
                      dtype="float64", name="inner")
  rng = np.random.default_rng(2)
  y0 = tf.Variable(rng.normal(size=(2, 3)))
  c = tf.constant(rng.normal(size=(2, 3)))
  layer(y0, c)
  variables = [y0] + layer.trainable_variables
  names = ["initial"] + [v.path for v in layer.trainable_variables]
  assert {"inner/learning_rate", "inner/momentum",
          "inner/clip_value"} <= set(names)
  assert any("mlp" in n and "kernel" in n for n in names)
  with tf.GradientTape() as tape:
    loss = _scalar_loss(layer, y0, c)
  grads = tape.gradient(loss, variables)
  for name, variable, grad in zip(names, variables, grads):
    assert grad is not None, name
    numeric = _central_difference(lambda: _scalar_loss(layer, y0, c), variable)
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-5, atol=1e-7,
                               err_msg=name)


def test_negative_learned_momentum_acts_as_its_absolute_value():
  energy = DiagonalQuadratic([1.0, 2.0])
  pos = UnrolledSGD(energy, 3, learning_rate=0.2, momentum=0.5,
                    learn_momentum=True)
  neg = UnrolledSGD(energy, 3, learning_rate=0.2, momentum=0.5,
                    learn_momentum=True)
  y0, c = tf.zeros((1, 2)), tf.ones((1, 2))
  pos(y0, c)
  neg(y0, c)
  neg.trainable_variables[0].assign(-0.5)  # changed after build: used per call
  np.testing.assert_allclose(pos(y0, c).numpy(), neg(y0, c).numpy())


def test_zero_steps_returns_initial_and_empty_diagnostics():
  layer = UnrolledSGD(DiagonalQuadratic([1.0, 2.0]), 0)
  initial = np.random.default_rng(4).normal(size=(3, 2)).astype(np.float32)
  out = layer(tf.constant(initial), tf.zeros((3, 2)), return_diagnostics=True)
  # The initial estimate itself, unchanged, and no per-step diagnostics.
  np.testing.assert_array_equal(out["steps"].numpy(), initial[None])
  assert out["energy"].shape == (0, 3)
  assert out["grad_norm"].shape == (0, 3)
  np.testing.assert_array_equal(layer(tf.constant(initial),
                                      tf.zeros((3, 2))).numpy(),
                                initial[None])


def test_diagnostics_energy_and_gradient_norm():
  d = np.array([1.0, 3.0])
  layer = UnrolledSGD(DiagonalQuadratic(d), 2, learning_rate=0.1)
  c = np.array([[1.0, 2.0]])
  out = layer(tf.zeros((1, 2)), tf.constant(c, tf.float32),
              return_diagnostics=True)
  y0 = out["steps"][0].numpy()
  np.testing.assert_allclose(out["energy"][0], 0.5 * np.sum(d * (y0 - c) ** 2),
                             rtol=1e-6)
  np.testing.assert_allclose(out["grad_norm"][0],
                             np.linalg.norm(d * (y0 - c)), rtol=1e-6)
  assert float(out["energy"][1, 0]) < float(out["energy"][0, 0])


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_matches_eager(jit_compile):
  keras.utils.set_random_seed(3)
  layer = UnrolledSGD(MLPEnergy(), 3, learn_learning_rate=True,
                      learn_clip_value=True, learn_momentum=True)
  y0 = tf.random.normal((4, 3))
  c = tf.random.normal((4, 3))
  eager = layer(y0, c)

  @tf.function(jit_compile=jit_compile)
  def compiled_grads(y0, c):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(layer(y0, c)))
    return layer(y0, c), tape.gradient(loss, layer.trainable_variables)

  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(layer(y0, c)))
  eager_grads = tape.gradient(loss, layer.trainable_variables)
  steps, grads = compiled_grads(y0, c)
  np.testing.assert_allclose(steps, eager, rtol=1e-4, atol=1e-5)
  for g, e in zip(grads, eager_grads):
    np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-5)


def test_rejects_bad_arguments():
  with pytest.raises(TypeError, match="energy must be callable"):
    UnrolledSGD(3, 2)
  with pytest.raises(ValueError, match="num_steps must be >= 0"):
    UnrolledSGD(DiagonalQuadratic([1.0]), -1)


class _Twin:
  """The same energy weights behind a recorded and a recomputed UnrolledSGD."""

  def __init__(self, energy, num_steps, **kwargs):
    self.recorded = UnrolledSGD(energy, num_steps, **kwargs)
    self.recomputed = UnrolledSGD(energy, num_steps, recompute_steps=True,
                                  **kwargs)


def _loss_and_grads(layer, y0, context):
  """Loss over every step and the energies; gradients w.r.t. everything."""
  with tf.GradientTape() as tape:
    tape.watch([y0] + tf.nest.flatten(context))
    out = layer(y0, context, return_diagnostics=True)
    weights = tf.range(1.0, out["steps"].shape[0] + 1.0, dtype=y0.dtype)
    loss = (tf.reduce_sum(weights[:, None, None] * tf.sin(out["steps"]))
            + 0.5 * tf.reduce_sum(out["energy"]))
  sources = [y0] + tf.nest.flatten(context) + layer.trainable_variables
  return out, tape.gradient(loss, sources)


@pytest.mark.parametrize("mode,momentum", [
    ("eager", None), ("eager", -0.4), ("function", None), ("function", -0.4),
    ("xla", -0.4)])
def test_recompute_steps_gives_the_same_values_and_gradients(mode, momentum):
  keras.utils.set_random_seed(4)
  twin = _Twin(MLPEnergy(dtype="float64"), 3, learning_rate=0.6,
               momentum=momentum, clip_value=0.5, learn_learning_rate=True,
               learn_momentum=momentum is not None, learn_clip_value=True,
               dtype="float64")
  rng = np.random.default_rng(5)
  y0 = tf.constant(rng.normal(size=(3, 3)))
  c = tf.constant(rng.normal(size=(3, 3)))
  twin.recorded(y0, c)
  twin.recomputed(y0, c)
  for src, dst in zip(twin.recorded.weights, twin.recomputed.weights):
    dst.assign(src)  # Hyper-parameters (the energy is shared).
  assert len(twin.recomputed.trainable_variables) >= 4

  def run(layer):
    if mode == "eager":
      return _loss_and_grads(layer, y0, c)
    compiled = tf.function(_loss_and_grads, jit_compile=mode == "xla")
    return compiled(layer, y0, c)

  expected_out, expected_grads = run(twin.recorded)
  out, grads = run(twin.recomputed)
  for key in ("steps", "energy", "grad_norm"):
    np.testing.assert_allclose(out[key], expected_out[key], rtol=1e-12,
                               atol=1e-12, err_msg=key)
  names = ["initial", "context"] + [v.path for v in
                                    twin.recomputed.trainable_variables]
  for name, got, want in zip(names, grads, expected_grads):
    assert got is not None and want is not None, name
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                               err_msg=name)


def test_recompute_steps_with_a_weightless_energy_and_nested_context():
  def energy(y, context):
    return 0.5 * tf.reduce_sum(context["scale"] * tf.square(
        y - context["target"]), axis=-1)

  context = {"scale": tf.constant([[1.0, 3.0]]),
             "target": tf.constant([[2.0, -1.0]])}
  y0 = tf.zeros((1, 2))
  recorded = UnrolledSGD(energy, 3, learning_rate=0.2, clip_value=1.5)
  recomputed = UnrolledSGD(energy, 3, learning_rate=0.2, clip_value=1.5,
                           recompute_steps=True)
  _, want = _loss_and_grads(recorded, y0, context)
  _, got = _loss_and_grads(recomputed, y0, context)
  assert len(got) == 3
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


def test_recompute_steps_round_trips_in_the_config():
  layer = UnrolledSGD(DiagonalQuadratic([1.0]), 2, recompute_steps=True)
  clone = UnrolledSGD.from_config(layer.get_config())
  assert clone.recompute_steps and clone.num_steps == 2
  assert not UnrolledSGD(DiagonalQuadratic([1.0]), 2).recompute_steps


@keras.saving.register_keras_serializable(package="ige_tf_tests")
class CountingShapeEnergy(keras.layers.Layer):
  """A learned quadratic that builds from shapes and counts its calls."""

  calls = 0

  def build(self, y_shape, context_shape=None):
    del context_shape
    self.scale = self.add_weight(shape=(y_shape[-1],), initializer="ones")

  def call(self, y, context, training=None):
    CountingShapeEnergy.calls += 1
    return tf.reduce_sum(self.scale * tf.square(y - context), axis=-1)


def test_functional_models_are_built_without_tracing_the_inner_loop():
  CountingShapeEnergy.calls = 0
  y = keras.Input((3,))
  c = keras.Input((3,))
  layer = UnrolledSGD(CountingShapeEnergy(), 5, learn_learning_rate=True)
  out = layer(y, c, return_diagnostics=True)
  model = keras.Model([y, c], out)
  assert CountingShapeEnergy.calls == 0  # shapes stated, energy built
  assert len(model.trainable_weights) == 2  # learning rate, scale
  assert tuple(out["steps"].shape) == (6, None, 3)
  assert tuple(out["energy"].shape) == (5, None)
  result = model([tf.zeros((2, 3)), tf.ones((2, 3))])
  assert result["steps"].shape == (6, 2, 3)
  assert CountingShapeEnergy.calls == 5
  # An energy without its own build still gets its weights: by a trace.
  traced = UnrolledSGD(MLPEnergy(), 2)
  model = keras.Model([y, c], traced(y, c))
  assert len(model.trainable_weights) == 4  # the EnergyMLP's two layers
  assert model([tf.zeros((2, 3)), tf.ones((2, 3))]).shape == (3, 2, 3)


class OneShapeBuildEnergy(keras.layers.Layer):
  """An energy whose build takes one shape: cannot be built from (y, context)."""

  def build(self, input_shape):
    self.scale = self.add_weight(shape=(input_shape[-1],))

  def call(self, y, context, training=None):
    return tf.reduce_sum(self.scale * tf.square(y - context), axis=-1)


def test_an_energy_build_without_the_context_shape_is_a_clear_error():
  layer = UnrolledSGD(OneShapeBuildEnergy(), 2)
  with pytest.raises(TypeError, match=r"OneShapeBuildEnergy defines "
                     r"build\(self, input_shape\); .* must accept "
                     r"build\(y_shape, context_shape\)"):
    layer(tf.zeros((2, 3)), tf.zeros((2, 3)))


def test_monotone_inference_never_raises_the_energy():
  """Curvature 3, step 1: plain steps overshoot (y -> -2 y, the energy
  grows 4x per step). At inference the safeguard rejects such a step
  (iterate unchanged, energy not raised) and halves the step size, which
  then converges. With curvature 0.5 no step is rejected: the plain
  iterates exactly. Training (`training=True`) runs the plain steps."""
  energy = DiagonalQuadratic([3.0])
  y0 = tf.constant([[1.0], [1.0]])
  context = tf.constant([[0.0], [0.0]])
  layer = UnrolledSGD(energy, 4, learning_rate=1.0, monotone_inference=True)
  gentle = UnrolledSGD(DiagonalQuadratic([0.5]), 4, learning_rate=1.0,
                       monotone_inference=True)
  out = layer(y0, context, return_diagnostics=True)
  steps = out["steps"].numpy()[:, 0, 0]
  # Step 1 (y = 1 - 3 = -2, energy 6 > 1.5) rejected, then lr 0.5:
  # y = 1 - 1.5 = -0.5 (accepted), then y = -0.5 + 0.75 = 0.25, ...
  np.testing.assert_allclose(steps, [1.0, 1.0, -0.5, 0.25, -0.125])
  energies = 1.5 * steps**2
  assert np.all(np.diff(energies) <= 0)
  np.testing.assert_allclose(out["energy"].numpy()[:, 0], energies[:-1])
  plain = gentle(y0, context).numpy()[:, 0, 0]
  np.testing.assert_allclose(plain, 0.5**np.arange(5))
  trained = layer(y0, context, training=True).numpy()[:, 0, 0]
  np.testing.assert_allclose(trained, (-2.0)**np.arange(5))
  assert UnrolledSGD.from_config(layer.get_config()).monotone_inference


def test_find_inner_optimizer_goes_by_type_not_by_name():
  from ige_tf.core import find_inner_optimizer, find_inner_optimizers
  y = keras.Input((3,))
  first = UnrolledSGD(DiagonalQuadratic([1.0] * 3), num_steps=1,
                      name="renamed")
  out = first(y, y)
  assert find_inner_optimizer(keras.Model(y, out)) is first
  assert find_inner_optimizer(keras.Model(y, keras.layers.Dense(3)(y))) is None
  second = UnrolledSGD(DiagonalQuadratic([2.0] * 3), num_steps=1,
                       name="second")
  both = keras.Model(y, [out, second(y, y)])
  assert find_inner_optimizers(both) == [first, second]
  with pytest.raises(ValueError, match="2 UnrolledSGD layers"):
    find_inner_optimizer(both)


@pytest.mark.parametrize("mode,momentum,recompute", [
    ("eager", None, True), ("eager", -0.4, True), ("function", None, True),
    ("function", -0.4, True), ("function", -0.4, False)])
def test_folded_step_loss_equals_the_loss_of_the_steps(mode, momentum,
                                                       recompute):
  """`step_loss` gives the per-step losses and gradients of the loss applied
  to the returned steps (float64, every trainable variable)."""
  keras.utils.set_random_seed(4)
  layer = UnrolledSGD(MLPEnergy(dtype="float64"), 3, learning_rate=0.6,
                      momentum=momentum, clip_value=0.5,
                      learn_learning_rate=True,
                      learn_momentum=momentum is not None,
                      learn_clip_value=True, recompute_steps=recompute,
                      dtype="float64")
  rng = np.random.default_rng(5)
  y0 = tf.constant(rng.normal(size=(3, 3)))
  c = tf.constant(rng.normal(size=(3, 3)))
  target = tf.constant(rng.normal(size=(3, 3)))
  layer(y0, c)
  weights = tf.constant([0.2, 0.5, 0.7, 1.0], tf.float64)

  def per_example(t, y):  # [B]; depends on t, like a decayed loss.
    return (1.0 + t) * tf.reduce_sum(tf.sin(y - target) ** 2, axis=-1)

  def reference():
    with tf.GradientTape() as tape:
      tape.watch([y0, c])
      out = layer(y0, c, return_diagnostics=True)
      losses = tf.stack([per_example(t, y) for t, y in
                         enumerate(tf.unstack(out["steps"]))])
      loss = (tf.reduce_sum(weights[:, None] * losses)
              + 0.3 * tf.reduce_sum(out["energy"]))
    return losses, tape.gradient(loss, [y0, c] + layer.trainable_variables)

  def folded():
    with tf.GradientTape() as tape:
      tape.watch([y0, c])
      out = layer(y0, c, step_loss=per_example)
      assert set(out) == {"step_loss", "energy", "grad_norm"}
      loss = (tf.reduce_sum(weights[:, None] * out["step_loss"])
              + 0.3 * tf.reduce_sum(out["energy"]))
    return out["step_loss"], tape.gradient(
        loss, [y0, c] + layer.trainable_variables)

  if mode == "function":
    reference, folded = tf.function(reference), tf.function(folded)
  want_losses, want = reference()
  got_losses, got = folded()
  assert got_losses.shape == (4, 3)
  np.testing.assert_allclose(got_losses, want_losses, rtol=1e-12)
  names = ["initial", "context"] + [v.path for v in layer.trainable_variables]
  assert len(names) >= 6
  for name, g, w in zip(names, got, want):
    assert g is not None and w is not None, name
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


def test_folded_step_loss_without_steps():
  layer = UnrolledSGD(DiagonalQuadratic([2.0]), 0, recompute_steps=True)
  y0 = tf.constant([[1.0], [3.0]])
  out = layer(y0, None, step_loss=lambda t, y: tf.reduce_sum(y, axis=-1))
  np.testing.assert_allclose(out["step_loss"], [[1.0, 3.0]])


def test_clipped_descent_equals_the_plain_ops():
  """The fused step `y - lr clip(g)`: values and gradients of autodiff of
  `tf.clip_by_value`, entries at, inside and outside the bounds included."""
  from ige_tf.core.unrolled import clipped_descent  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  y = tf.constant(rng.normal(size=(3, 4, 5)))
  grad = tf.constant(np.concatenate(
      [rng.normal(scale=2.0, size=(3, 4, 4)), np.full((3, 4, 1), 0.7)], -1))
  lr, clip = tf.constant(0.3, tf.float64), tf.constant(0.7, tf.float64)
  upstream = tf.constant(rng.normal(size=(3, 4, 5)))

  def run(fn):
    with tf.GradientTape() as tape:
      tape.watch([y, grad, lr, clip])
      out = fn(y, grad, lr, clip)
    return [out] + tape.gradient(out, [y, grad, lr, clip],
                                 output_gradients=upstream)

  got = run(clipped_descent)
  want = run(lambda y, g, lr, c: y - lr * tf.clip_by_value(g, -c, c))
  assert np.any(np.abs(grad.numpy()) > 0.7)  # Some entries are clipped.
  for name, g, w in zip(["value", "y", "grad", "lr", "clip"], got, want):
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=name)
