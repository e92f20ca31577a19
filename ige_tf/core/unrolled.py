"""Unrolled inner optimization (paper section 4, eqs. 2-3).

`UnrolledSGD` minimizes a learned energy `E(y; context)` by a fixed number of
gradient-descent steps. Each step's gradient is taken with a nested
`tf.GradientTape`, so an enclosing tape (the outer, training optimizer)
differentiates through the whole unrolled sequence: second-order gradients
reach the energy's weights, the learned step hyper-parameters and the initial
estimate.

Memory: by default the outer backward pass keeps every inner step's
intermediates (the energy's activations and its gradient graph), O(T) times
one step's worth. With `recompute_steps=True` the unroll is one
`tf.custom_gradient` block that keeps only the stacked iterates (its output)
and, with momentum, the velocities; the outer backward pass recomputes each
step, inner tape included, from last to first: one step's intermediates live
at a time, for about one extra forward step of compute per step.

Folded per-step loss: `call(..., step_loss=fn)` takes a per-example loss of
every iterate, `fn(t, y_t) -> [B]` for t = 0..T, and returns those losses
`[T+1, B]` instead of the iterates. With `recompute_steps` the loss of step t
and its gradient with respect to `y_t` are taken when step t is computed and
recomputed, so neither the `[T+1, B, ...]` stack of iterates nor its gradient
is ever materialized: the block keeps the T+1 separate iterates (T without
the initial estimate's own buffer) and no loss gradient larger than one
iterate exists at a time.
(`tf.recompute_grad` cannot be used: it pauses every tape while it runs, so
the inner tape that takes the energy's gradient would record nothing.) The
saving is realized inside `tf.function`, as in training; an eager outer
`GradientTape` still records the forward ops.
"""
import inspect

import keras
import tensorflow as tf

# Paper 5.2: the inner optimizer's learning rate, momentum and clip value start
# at 1, 0.1 and 1.
DEFAULT_LEARNING_RATE = 1.0
DEFAULT_MOMENTUM = 0.1
DEFAULT_CLIP_VALUE = 1.0


def _norm_per_example(x):
  """Euclidean norm of each example of `x [B, ...]`, float `[B]`.

  A batched dot product, which creates no `x`-sized temporary (unlike
  `tf.square` then a sum).
  """
  flat = tf.reshape(x, tf.stack([tf.shape(x)[0], 1, -1]))
  return tf.sqrt(tf.reshape(tf.matmul(flat, flat, transpose_b=True), [-1]))


@tf.function(jit_compile=True, autograph=False)
def _clipped_descent_forward(y, grad, lr, clip):
  return y - lr * tf.clip_by_value(grad, -clip, clip)


@tf.function(jit_compile=True, autograph=False)
def _clipped_descent_backward(grad, upstream, lr, clip):
  """The VJP of `_clipped_descent_forward` but for `y` (whose is `upstream`).

  Same values as autodiff of `tf.clip_by_value` (a gradient passes where
  `-clip <= grad <= clip`; the bounds receive the rest).
  """
  d_clipped = -lr * upstream
  inside = tf.logical_and(grad >= -clip, grad <= clip)
  d_grad = tf.where(inside, d_clipped, tf.zeros_like(d_clipped))
  d_lr = -tf.reduce_sum(upstream * tf.clip_by_value(grad, -clip, clip))
  d_clip = (tf.reduce_sum(tf.where(grad > clip, d_clipped, 0.0 * d_clipped))
            - tf.reduce_sum(tf.where(grad < -clip, d_clipped,
                                     0.0 * d_clipped)))
  return d_grad, d_lr, d_clip


@tf.custom_gradient
def clipped_descent(y, grad, lr, clip):
  """`y - lr * clip_by_value(grad, -clip, clip)`, fused.

  One compiled elementwise kernel forward (XLA, CPU and GPU) and one for the
  backward pass, which keeps only `grad`: autodiff of the plain ops keeps
  the clipped gradient and creates several grid-sized temporaries (masks,
  products) per step. Values and gradients equal the plain ops' (tested).

  Args:
    y, grad: float `[B, ...]`.
    lr, clip: float scalars, same dtype.

  Returns:
    float `[B, ...]`.
  """
  result = _clipped_descent_forward(y, grad, lr, clip)

  def grad_fn(upstream):
    d_grad, d_lr, d_clip = _clipped_descent_backward(grad, upstream, lr, clip)
    return upstream, d_grad, d_lr, d_clip

  return result, grad_fn


@keras.saving.register_keras_serializable(package="ige_tf")
class UnrolledSGD(keras.layers.Layer):
  """`num_steps` steps of (momentum, clipped) gradient descent on an energy.

  One step, with `g` the gradient of the energy at `y`:
    g <- clip(g, -|c|, |c|)                       (if clipping)
    m <- |mu| * m + g;  y <- y - lr * m           (with momentum, m_0 = 0)
    y <- y - lr * g                               (without momentum)

  The learning rate `lr`, momentum `mu` and clip value `c` are each a fixed
  number or a learned scalar weight. Momentum and clip value enter through
  their absolute values, computed at every call (paper 5.2: "the absolute
  value of a learned parameter"), so a learned value may change sign without
  making the step ascend.

  Args:
    energy: callable `energy(y, context) -> [B]`, `y` of shape `[B, ...]`.
      A Keras layer (registered serializable) so that its weights are tracked
      and the layer's config round-trips. If the layer defines `build`, it
      must accept `build(y_shape, context_shape)` (Keras' convention for a
      two-input call); it is then built with this layer, from shapes.
    num_steps: T, the number of unrolled steps (0 returns the initial value).
    learning_rate: step size, or its initial value when learned.
    momentum: momentum coefficient, or None for plain gradient descent. When
      `learn_momentum` is set and this is None, it starts at 0.1.
    clip_value: elementwise gradient clip, or None for no clipping. When
      `learn_clip_value` is set and this is None, it starts at 1.
    learn_learning_rate, learn_momentum, learn_clip_value: make the
      corresponding hyper-parameter a trainable scalar weight.
    recompute_steps: recompute each step in the outer backward pass instead
      of storing its intermediates (gradient checkpointing per step; see the
      module docstring). Values and gradients are unchanged.
    monotone_inference: at inference (`training` falsy) never accept a step
      that raises the energy: a step whose energy is higher than (or not
      comparable to, e.g. NaN) the current one is rejected per example, the
      iterate stays where it was (`steps[t+1] == steps[t]` exactly), its
      momentum is reset and the step size of that example is halved for the
      following steps. Costs one more energy-and-gradient evaluation (T + 1
      in all). Training always runs the plain steps.
  """

  def __init__(self, energy, num_steps, learning_rate=DEFAULT_LEARNING_RATE,
               momentum=None, clip_value=None, learn_learning_rate=False,
               learn_momentum=False, learn_clip_value=False,
               recompute_steps=False, monotone_inference=False, **kwargs):
    super().__init__(**kwargs)
    if not callable(energy):
      raise TypeError(f"UnrolledSGD: energy must be callable, got {energy!r}")
    if int(num_steps) < 0:
      raise ValueError(f"UnrolledSGD: num_steps must be >= 0, got {num_steps}")
    self.energy = energy
    self.num_steps = int(num_steps)
    self.learn_learning_rate = bool(learn_learning_rate)
    self.learn_momentum = bool(learn_momentum)
    self.learn_clip_value = bool(learn_clip_value)
    self.recompute_steps = bool(recompute_steps)
    self.monotone_inference = bool(monotone_inference)
    if momentum is None and self.learn_momentum:
      momentum = DEFAULT_MOMENTUM
    if clip_value is None and self.learn_clip_value:
      clip_value = DEFAULT_CLIP_VALUE
    self.initial_learning_rate = float(learning_rate)
    self.initial_momentum = None if momentum is None else float(momentum)
    self.initial_clip_value = None if clip_value is None else float(clip_value)

  def build(self, initial_shape, context_shape=None):
    def scalar(name, value, trainable):
      if not trainable:
        return None
      return self.add_weight(
          name=name, shape=(),
          initializer=keras.initializers.Constant(value),
          trainable=True)

    self._learning_rate_weight = scalar(
        "learning_rate", self.initial_learning_rate, self.learn_learning_rate)
    self._momentum_weight = scalar(
        "momentum", self.initial_momentum, self.learn_momentum)
    self._clip_value_weight = scalar(
        "clip_value", self.initial_clip_value, self.learn_clip_value)
    if self._energy_builds_from_shapes() and not self.energy.built:
      build = type(self.energy).build
      try:
        inspect.signature(build).bind(self.energy, initial_shape,
                                      context_shape)
      except TypeError as error:
        raise TypeError(
            f"UnrolledSGD: the energy {type(self.energy).__name__} defines "
            f"build{inspect.signature(build)}; an energy called as "
            "energy(y, context) must accept build(y_shape, context_shape)"
        ) from error
      self.energy.build(initial_shape, context_shape)

  def _energy_builds_from_shapes(self):
    """Whether the energy is a Keras layer with its own `build`.

    Keras builds a layer `call(y, context)` as `build(y_shape,
    context_shape)`; such an energy is built here, from the shapes, so a
    functional model needs no symbolic trace of the inner loop.
    """
    return (isinstance(self.energy, keras.layers.Layer)
            and type(self.energy).build is not keras.layers.Layer.build)

  def compute_output_spec(self, initial, context=None, training=None,
                          return_diagnostics=False):
    """Output shapes without tracing the T nested-gradient steps.

    Building a functional model calls every layer once symbolically; for
    this layer a trace would cost seconds per step. An energy layer without
    its own `build` creates its weights when first called, so it is still
    traced once.
    """
    if isinstance(self.energy, keras.layers.Layer) and not self.energy.built:
      return super().compute_output_spec(
          initial, context, training=training,
          return_diagnostics=return_diagnostics)
    steps = keras.KerasTensor((self.num_steps + 1,) + tuple(initial.shape),
                              dtype=initial.dtype)
    if not return_diagnostics:
      return steps
    shape = (self.num_steps, initial.shape[0])
    return {"steps": steps,
            "energy": keras.KerasTensor(shape, dtype=initial.dtype),
            "grad_norm": keras.KerasTensor(shape, dtype=initial.dtype)}


  # -- the hyper-parameters as used by a step ------------------------------
  @property
  def learning_rate(self):
    """Scalar float32 tensor: the step size in use."""
    if self._learning_rate_weight is not None:
      return tf.convert_to_tensor(self._learning_rate_weight)
    return tf.constant(self.initial_learning_rate, tf.float32)

  @property
  def momentum(self):
    """Scalar float32 tensor `|mu|`, or None without momentum."""
    if self.initial_momentum is None:
      return None
    if self._momentum_weight is not None:
      return tf.abs(tf.convert_to_tensor(self._momentum_weight))
    return tf.constant(abs(self.initial_momentum), tf.float32)

  @property
  def clip_value(self):
    """Scalar float32 tensor `|c|`, or None without clipping."""
    if self.initial_clip_value is None:
      return None
    if self._clip_value_weight is not None:
      return tf.abs(tf.convert_to_tensor(self._clip_value_weight))
    return tf.constant(abs(self.initial_clip_value), tf.float32)

  def hyperparameters(self):
    """Dict of the step hyper-parameters in use (scalar tensors), for summaries."""
    values = {"learning_rate": self.learning_rate}
    if self.momentum is not None:
      values["momentum"] = self.momentum
    if self.clip_value is not None:
      values["clip_value"] = self.clip_value
    return values

  # -- the unrolled loop ---------------------------------------------------
  def _energy_and_gradient(self, y, context, training):
    with tf.GradientTape() as tape:
      tape.watch(y)
      energy = self.energy(y, context, training=training) if isinstance(
          self.energy, keras.layers.Layer) else self.energy(y, context)
      total = tf.reduce_sum(energy)
    return energy, tape.gradient(total, y)

  def _step(self, y, velocity, lr, mu, clip, context, training):
    """One update; returns `(y_next, velocity_next, energy [B], grad_norm [B])`.

    `velocity` is None before the first momentum step and without momentum.
    `grad_norm` is a diagnostic: no gradient flows through it.
    """
    energy, grad = self._energy_and_gradient(y, context, training)
    grad_norm = tf.stop_gradient(_norm_per_example(grad))
    if clip is not None and mu is None:
      return clipped_descent(y, grad, lr, clip), velocity, energy, grad_norm
    if clip is not None:
      grad = tf.clip_by_value(grad, -clip, clip)
    if mu is not None:
      velocity = grad if velocity is None else mu * velocity + grad
      grad = velocity
    return y - lr * grad, velocity, energy, grad_norm

  def _unroll(self, initial, lr, mu, clip, context, training):
    """The T steps, every tensor kept (the default, fully recorded path).

    Returns:
      Lists: iterates `[T+1]` of `[B, ...]` (`iterates[0] is initial`),
      the velocity entering each step `[T]` (None without momentum and at
      the first step), energies `[T]` and gradient norms `[T]` of `[B]`.
    """
    y, velocity = initial, None
    iterates, velocities, energies, grad_norms = [y], [], [], []
    for _ in range(self.num_steps):
      velocities.append(velocity)
      y, velocity, energy, grad_norm = self._step(y, velocity, lr, mu, clip,
                                                  context, training)
      iterates.append(y)
      energies.append(energy)
      grad_norms.append(grad_norm)
    return iterates, velocities, energies, grad_norms

  def _unroll_monotone(self, initial, lr, mu, clip, context, training):
    """The T steps with rejection of energy-raising steps (inference only).

    See `monotone_inference` in the class docstring. Every tensor op is
    batched (`tf.where` per example), so the loop unrolls into a fixed graph.

    Returns:
      `(steps [T+1, B, ...], energies [T, B], grad_norms [T, B])`, entry t of
      `energies` / `grad_norms` at `steps[t]` as in `_unroll`.
    """
    reduce_axes = list(range(1, len(initial.shape)))

    def per_example(values):  # [B] -> [B, 1, ..., 1], broadcast against y
      return tf.reshape(values, [-1] + [1] * len(reduce_axes))

    y = initial
    energy, grad = self._energy_and_gradient(y, context, training)
    step_scale = tf.ones_like(energy)
    velocity = None
    iterates, energies, grad_norms = [y], [], []
    for _ in range(self.num_steps):
      energies.append(energy)
      grad_norms.append(tf.sqrt(tf.reduce_sum(tf.square(grad),
                                              axis=reduce_axes)))
      update = grad if clip is None else tf.clip_by_value(grad, -clip, clip)
      if mu is not None:
        update = update if velocity is None else mu * velocity + update
      candidate = y - lr * per_example(step_scale) * update
      candidate_energy, candidate_grad = self._energy_and_gradient(
          candidate, context, training)
      # NaN compares False: a non-finite candidate is rejected too.
      accept = candidate_energy <= energy
      keep = per_example(accept)
      y = tf.where(keep, candidate, y)
      energy = tf.where(accept, candidate_energy, energy)
      grad = tf.where(keep, candidate_grad, grad)
      if mu is not None:
        velocity = tf.where(keep, update, tf.zeros_like(update))
      step_scale = tf.where(accept, step_scale, 0.5 * step_scale)
      iterates.append(y)
    return (tf.stack(iterates, axis=0), tf.stack(energies),
            tf.stack(grad_norms))

  def _unroll_recomputed(self, initial, lr, mu, clip, context, training,
                         step_loss=None):
    """`_unroll` as one `tf.custom_gradient` block that recomputes in backward.

    The forward pass keeps the iterates (stacked: the layer's output) and,
    with momentum, the velocities; the backward pass walks the steps from
    last to first, recomputing each step (inner tape included) under its own
    tape and chaining the vector-Jacobian products. Only one step's
    intermediates exist at a time.

    With `step_loss` (see `call`) the block's first output is the per-step
    losses `[T+1, B]` instead of the iterates: the forward pass takes the
    loss of each iterate as it is computed, and the backward pass adds the
    loss gradient of `y_t` (upstream: the loss's `[B]` gradient) while step
    t is recomputed, under the same tape.

    Returns:
      `(steps [T+1, B, ...] or step losses [T+1, B], energies [T, B],
      grad_norms [T, B])`.
    """
    num_steps = self.num_steps
    # custom_gradient takes a flat list of tensors; absent hyper-parameters
    # (None) are left out and restored by `unpack`.
    hyper = [lr, mu, clip]
    flat_context = tf.nest.flatten(context)
    present = [x is not None for x in hyper + flat_context]
    tensors = [initial] + [x for x in hyper + flat_context if x is not None]

    def unpack(tensors):
      values = iter(tensors[1:])
      full = [next(values) if p else None for p in present]
      return full[:3], tf.nest.pack_sequence_as(context, full[3:])

    @tf.custom_gradient
    def unrolled(*tensors):
      (lr, mu, clip), step_context = unpack(tensors)
      iterates, velocities, energies, grad_norms = self._unroll(
          tensors[0], lr, mu, clip, step_context, training)
      if step_loss is None:
        steps = tf.stack(iterates, axis=0)
        first_output = steps
        del iterates  # The backward pass reads the iterates from `steps`.
        iterate = lambda t: steps[t]  # pylint: disable=unnecessary-lambda-assignment
      else:
        # Kept one by one (a stack would copy them all into one buffer).
        first_output = tf.stack([step_loss(t, y) for t, y in
                                 enumerate(iterates)])
        iterate = lambda t: iterates[t]  # pylint: disable=unnecessary-lambda-assignment
      outputs = (first_output, tf.stack(energies), tf.stack(grad_norms))

      def grad_fn(d_first, d_energies, d_grad_norms, variables=None):
        del d_grad_norms  # Diagnostic without gradient.
        variables = list(variables or [])
        if d_first is None:
          d_first = tf.zeros_like(first_output)
        d_energies = ([None] * num_steps if d_energies is None else
                      tf.unstack(d_energies, num=num_steps, axis=0))
        # Hyper-parameters and context (`lr, mu, clip, step_context` above).
        others = list(tensors[1:])
        d_others = [None] * len(others)
        d_variables = [None] * len(variables)

        def accumulate(grads):
          nonlocal d_others, d_variables
          d_others = [g if acc is None else acc + g
                      for acc, g in zip(d_others, grads[:len(others)])]
          d_variables = [g if acc is None else acc + g
                         for acc, g in zip(d_variables, grads[len(others):])]

        if step_loss is None:
          d_iterates = tf.unstack(d_first, num=num_steps + 1, axis=0)
          d_y = d_iterates[num_steps]
        else:
          d_losses = tf.unstack(d_first, num=num_steps + 1, axis=0)
          y_last = iterate(num_steps)
          with tf.GradientTape() as tape:
            tape.watch([y_last] + others + variables)
            loss = step_loss(num_steps, y_last)
          grads = tape.gradient(
              loss, [y_last] + others + variables,
              output_gradients=d_losses[num_steps],
              unconnected_gradients=tf.UnconnectedGradients.ZERO)
          d_y = grads[0]
          accumulate(grads[1:])
        d_velocity = None
        for t in reversed(range(num_steps)):
          # Recompute step t only once its upstream gradient exists (a data
          # dependency, which XLA respects, unlike control dependencies);
          # otherwise the executor may recompute every step at once.
          # The zero goes on the iterate itself (one grid copy per step):
          # tying only the small context tensors lets the executor start
          # every step's grid-sized work at once (measured: 324 MB instead
          # of 228 MB for IGE-MN's inner loop at 128^3, B = 2).
          first = tf.reduce_max(tf.reshape(d_y, [-1])[:1])
          stored = iterate(t)
          y_t = stored + tf.cast(tf.minimum(tf.abs(first), 0.0), stored.dtype)
          velocity = velocities[t]
          with tf.GradientTape() as tape:
            watched = [y_t] + ([] if velocity is None else [velocity])
            tape.watch(watched + others + variables)
            y_next, v_next, energy, _ = self._step(
                y_t, velocity, lr, mu, clip, step_context, training)
            loss = None if step_loss is None else step_loss(t, y_t)
          targets, upstream = [y_next], [d_y]
          if d_velocity is not None:
            targets.append(v_next)
            upstream.append(d_velocity)
          if d_energies[t] is not None:
            targets.append(energy)
            upstream.append(d_energies[t])
          if loss is not None:
            targets.append(loss)
            upstream.append(d_losses[t])
          grads = tape.gradient(
              targets, watched + others + variables, output_gradients=upstream,
              unconnected_gradients=tf.UnconnectedGradients.ZERO)
          d_y = grads[0] if step_loss is not None else grads[0] + d_iterates[t]
          d_velocity = None if velocity is None else grads[1]
          accumulate(grads[len(watched):])
        input_grads = [d_y] + d_others
        if not variables:
          return input_grads
        return input_grads, d_variables

      return outputs, grad_fn

    return unrolled(*tensors)

  def call(self, initial, context=None, training=None,
           return_diagnostics=False, step_loss=None):
    """Runs the unrolled optimizer.

    Args:
      initial: float `[B, ...]`, the initial estimate y_0.
      context: tensor or nest of tensors passed unchanged to the energy.
      training: passed to the energy when it is a Keras layer.
      return_diagnostics: also return per-step energy and gradient norm.
      step_loss: optional per-step loss folded into the unroll (module
        docstring): `step_loss(t, y_t) -> [B]` for t = 0..T (a Python int
        and the float `[B, ...]` iterate), differentiable in `y_t`. Then the
        iterates are not returned.

    Returns:
      `steps`, float `[T+1, B, ...]` with `steps[0] == initial`; or, with
      `return_diagnostics`, a dict `{"steps": [T+1, B, ...], "energy": [T, B],
      "grad_norm": [T, B]}` where entry t is the energy at, and the norm of
      the (unclipped) energy gradient at, `steps[t]`. `grad_norm` carries no
      gradient. With `step_loss`, always the dict `{"step_loss": [T+1, B],
      "energy": [T, B], "grad_norm": [T, B]}` (`step_loss[t]` is
      `step_loss(t, steps[t])`; values and gradients equal those of the
      loss applied to `steps`).
    """
    dtype = initial.dtype
    lr = tf.cast(self.learning_rate, dtype)
    mu = None if self.momentum is None else tf.cast(self.momentum, dtype)
    clip = None if self.clip_value is None else tf.cast(self.clip_value, dtype)
    if self.num_steps == 0:
      steps = tf.expand_dims(initial, 0)
      energies = grad_norms = tf.zeros([0, tf.shape(initial)[0]], dtype)
    elif self.monotone_inference and not training:
      steps, energies, grad_norms = self._unroll_monotone(
          initial, lr, mu, clip, context, training)
    elif self.recompute_steps:
      first, energies, grad_norms = self._unroll_recomputed(
          initial, lr, mu, clip, context, training, step_loss)
      if step_loss is not None:
        return {"step_loss": first, "energy": energies,
                "grad_norm": grad_norms}
      steps = first
    else:
      iterates, _, energies, grad_norms = self._unroll(
          initial, lr, mu, clip, context, training)
      steps = tf.stack(iterates, axis=0)
      energies, grad_norms = tf.stack(energies), tf.stack(grad_norms)
    if step_loss is not None:
      losses = tf.stack([step_loss(t, y) for t, y in enumerate(
          tf.unstack(steps, num=self.num_steps + 1, axis=0))])
      return {"step_loss": losses, "energy": energies,
              "grad_norm": grad_norms}
    if not return_diagnostics:
      return steps
    return {"steps": steps, "energy": energies, "grad_norm": grad_norms}

  def get_config(self):
    config = super().get_config()
    config.update(
        energy=keras.saving.serialize_keras_object(self.energy),
        num_steps=self.num_steps,
        learning_rate=self.initial_learning_rate,
        momentum=self.initial_momentum,
        clip_value=self.initial_clip_value,
        learn_learning_rate=self.learn_learning_rate,
        learn_momentum=self.learn_momentum,
        learn_clip_value=self.learn_clip_value,
        recompute_steps=self.recompute_steps,
        monotone_inference=self.monotone_inference)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["energy"] = keras.saving.deserialize_keras_object(config["energy"])
    return cls(**config)


def find_inner_optimizers(model):
  """Every `UnrolledSGD` layer inside a Keras model, depth first (by type,
  not by layer name); `[]` for a model without an inner optimizer."""
  # pylint: disable-next=protected-access
  return [layer for layer in model._flatten_layers(include_self=False)
          if isinstance(layer, UnrolledSGD)]


def find_inner_optimizer(model):
  """The `UnrolledSGD` layer of an IGE model, or None for a baseline.

  Raises:
    ValueError: the model holds more than one `UnrolledSGD` layer (use
      `find_inner_optimizers`).
  """
  layers = find_inner_optimizers(model)
  if len(layers) > 1:
    raise ValueError(
        f"model {model.name} has {len(layers)} UnrolledSGD layers "
        f"({', '.join(layer.name for layer in layers)}); expected at most one")
  return layers[0] if layers else None
