"""The interface between a task and the generic training loop.

A `Problem` (idea kept from jackd/ige) bundles data, model, loss and metrics.
The loop in `ige_tf.train.loop` only talks to this interface, so the pose and
voxel tasks are a `Problem` subclass plus gin configuration.

Model outputs follow one convention: a dict with
  "steps":     float `[T+1, B, ...]` every inner-optimizer iterate (T = 0 for
               models without an inner optimizer),
  "energy":    optional float `[T, B]`, energy at `steps[t]`,
  "grad_norm": optional float `[T, B]`, energy-gradient norm at `steps[t]`.
"""
import tensorflow as tf


class Problem:
  """Base class. Subclasses implement the methods that raise."""

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    """Batched `tf.data.Dataset` of `(features, labels)` nests.

    Args:
      split: "train", "validation" or "test".
      batch_size: global batch size.
      shuffle: shuffle examples (training).
      seed: int seed for the shuffle order; the loop passes a different seed
        every epoch, so a resumed run replays the exact order.

    The dataset should have a known cardinality (use
    `tf.data.experimental.assert_cardinality` for record files) so the loop
    knows the epoch length without a counting pass.
    """
    raise NotImplementedError

  def build_model(self):
    """A Keras model mapping `features` to the output dict above."""
    raise NotImplementedError

  def loss(self, labels, outputs):
    """Scalar float32 training loss (mean over the local batch)."""
    raise NotImplementedError

  def training_loss(self, model, features, labels):
    """The training forward pass and its loss, as the loop's step runs it.

    The default is `model(features, training=True)` followed by `loss`. A
    problem overrides it when the loss is cheaper taken inside the forward
    pass (e.g. a per-step loss folded into a recomputed unroll, so the
    `[T+1, B, ...]` stack is never materialized).

    Returns:
      `(loss, outputs)`: the scalar float32 loss (mean over the local batch,
      without `model.losses`) and a dict holding at least what the loop
      logs, "energy" and "grad_norm" `[T, B]` when the model has an inner
      optimizer.
    """
    outputs = model(features, training=True)
    return self.loss(labels, outputs), outputs

  def metrics(self, labels, outputs):
    """Per-example, per-step metrics: dict name -> float `[T+1, B]`."""
    raise NotImplementedError

  def groups(self, labels):
    """Optional grouping of examples for per-group metrics.

    Returns:
      dict group name (e.g. "action") -> string `[B]`. Evaluation then also
      reports `"<metric>_per_<group>": {value: [step 0..T]}`.
    """
    del labels
    return {}

  def finalize_metrics(self, metrics):
    """Hook to add derived entries (e.g. a class mean) to evaluation results."""
    return metrics

  def serving_function(self, model):
    """Function for SavedModel export and its input signature.

    Returns:
      `(fn, input_signature)`; `fn(*inputs)` returns a dict with at least
      "final" `[B, ...]` and "steps" `[T+1, B, ...]`. The default serves the
      model's own inputs.
    """
    inputs = model.inputs
    if isinstance(model.input, dict):
      names = list(model.input.keys())
      signature = [{name: tf.TensorSpec(t.shape, t.dtype, name=name)
                    for name, t in model.input.items()}]
      def fn(features):
        return serving_outputs(model({n: features[n] for n in names},
                                     training=False))
    else:
      signature = [tf.TensorSpec(t.shape, t.dtype) for t in inputs]
      def fn(*args):
        return serving_outputs(model(list(args) if len(args) > 1 else args[0],
                                     training=False))
    return fn, signature

  def rebuild_bindings(self):
    """Gin bindings (strings) that let this problem's model be rebuilt
    without its data or other runs, for restoring a checkpoint or counting
    parameters (e.g. "PoseProblem.require_statistics = False"). Recorded in
    a run's `run.json`; applied by `ige_tf.train.run.open_run`."""
    return []

  def evaluation_bindings(self):
    """Patterns ("Configurable.param", fnmatch) of bindings that may differ
    from a run's record when it is evaluated or exported (records directory,
    shuffle buffer...): they change neither the model nor the problem."""
    return []

  def component_params(self, model):
    """Trainable parameters per component: dict name -> int (no "total")."""
    return {"model": count_trainable(model)}

  def multiply_adds(self, model):
    """Multiply-adds per example at inference, inner steps included."""
    raise NotImplementedError


def serving_outputs(outputs):
  """Maps a model's output dict to the exported `{"final", "steps"}` dict."""
  steps = outputs["steps"]
  return {"final": steps[-1], "steps": steps}


def count_trainable(layer_or_model):
  """Number of trainable scalars in a Keras layer or model (int)."""
  return int(sum(int(tf.size(v)) for v in layer_or_model.trainable_weights))
