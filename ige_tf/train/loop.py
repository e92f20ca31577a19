"""The generic training, evaluation and export loop for any `Problem`.

A run's `model_dir` holds:
  ckpt-*              `tf.train.CheckpointManager` checkpoints (model,
                      optimizer, step, random states "rng"); training resumes
                      from the latest one, restored exactly (`restore_exact`).
  config.gin          the parsed gin config (macros kept), written when
                      training starts (`write_run_record`).
  run.json            the problem's class and the bindings that rebuild its
                      model from the checkpoint alone (`write_run_record`).
  operative_config.gin  gin's operative config, written after the model and
                      the data pipeline are built (so it records both).
  A run is loaded back by `ige_tf.train.run.open_run`.
  logs/train, logs/eval  TensorBoard summaries.
  metrics.json        written by `evaluate`.
  export/             written by `export`: a SavedModel.
"""
import json
import math
import os

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf
import tqdm

from ige_tf.atomic import write_text as atomic_write
from ige_tf.core.unrolled import find_inner_optimizers
from ige_tf.train import precise_bn
from ige_tf.train import distributed
from ige_tf.train import strategies
from ige_tf.train.problem import count_trainable
from ige_tf.train.run_files import (  # noqa: F401 (loop.<NAME> as before)
    EXPORT_DIR, METRICS_FILE, OPERATIVE_CONFIG, RUN_CONFIG, RUN_RECORD)

RUN_FORMAT = 1


class CheckpointError(RuntimeError):
  """A checkpoint in a model directory cannot be restored."""


def _require_model_dir(model_dir):
  if not model_dir:
    raise ValueError("model_dir is required (pass --model_dir=<directory>)")
  return os.fspath(model_dir)


@gin.configurable
def adam_optimizer(learning_rate=1e-3, decay_steps=100000, decay_rate=0.96,
                   staircase=True, clipnorm=None):
  """Adam with the exponential decay of Martinez et al. (0.96 every 100k steps)."""
  schedule = keras.optimizers.schedules.ExponentialDecay(
      learning_rate, decay_steps=decay_steps, decay_rate=decay_rate,
      staircase=staircase)
  return keras.optimizers.Adam(schedule, clipnorm=clipnorm)


def _write_operative_config(model_dir):
  path = os.path.join(model_dir, OPERATIVE_CONFIG)
  atomic_write(path, gin.operative_config_str())


def write_run_record(model_dir, problem):
  """Writes `config.gin` (the current gin config, macros kept) and
  `run.json` (`{"format", "problem": class, "rebuild_bindings": [...]}`, see
  `Problem.rebuild_bindings`), atomically."""
  atomic_write(os.path.join(model_dir, RUN_CONFIG), gin.config_str())
  record = {"format": RUN_FORMAT,
            "problem": f"{type(problem).__module__}.{type(problem).__name__}",
            "rebuild_bindings": list(problem.rebuild_bindings())}
  atomic_write(os.path.join(model_dir, RUN_RECORD),
               json.dumps(record, indent=2) + "\n")


def _num_batches(dataset):
  cardinality = int(dataset.cardinality())
  if cardinality == tf.data.INFINITE_CARDINALITY:
    raise ValueError("the training dataset is infinite; give steps_per_epoch")
  if cardinality >= 0:
    return cardinality
  logging.info("Dataset cardinality unknown: counting batches once.")
  return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def _training_state(model, optimizer, step):
  """What a training checkpoint holds: everything a resumed run needs to
  continue bit for bit (weights, optimizer slots, step, random states)."""
  return {"model": model, "optimizer": optimizer, "step": step,
          "rng": random_states(model)}


def _variables(obj):
  """The variables a checkpointed object owns: a Keras model's weights, a
  Keras optimizer's variables, a variable, or a list of variables."""
  if isinstance(obj, (list, tuple)):
    return list(obj)
  if isinstance(obj, keras.layers.Layer):
    return list(obj.weights)
  if isinstance(obj, keras.optimizers.Optimizer):
    return list(obj.variables)
  return [obj]


def random_states(model):
  """The model's random-number states: its variables that are not weights
  (the `keras.random.SeedGenerator` state of every Dropout and other random
  layer, int `[2]` each). Keras does not checkpoint them with the model; the
  training checkpoint does ("rng"), so a resumed run draws the same dropout
  masks as the uninterrupted one."""
  weights = {id(v) for v in model.weights}
  return [v for v in model.variables if id(v) not in weights]


def _variable_name(variable):
  return getattr(variable, "path", None) or variable.name


def restore_exact(objects, path):
  """Restores `objects` from checkpoint `path`, exactly or not at all.

  Every variable of every object must receive a value from the checkpoint,
  and every variable the checkpoint stores under those objects' names must be
  used. Values the checkpoint holds under other names (e.g. "optimizer" and
  "step" when only a model is restored) are ignored.

  Args:
    objects: dict checkpoint name -> Keras model (its weights), Keras
      optimizer, variable or list of variables (the keyword arguments of
      `tf.train.Checkpoint`).
    path: a checkpoint prefix (e.g. `tf.train.latest_checkpoint(model_dir)`).

  Raises:
    CheckpointError: the checkpoint is unreadable, a shape differs, or
      variables do not match (the message lists them).
  """
  try:
    status = tf.train.Checkpoint(**objects).restore(path)
    # Unmatched values are checked below, naming them; silence TF's warning.
    status.expect_partial()
  except Exception as e:  # pylint: disable=broad-except  (any failure = unusable)
    raise CheckpointError(
        f"cannot restore checkpoint {path}: {type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}. The checkpoint is corrupt "
        "or was written by a different model configuration; delete it or use "
        "another --model_dir.") from e
  # TF's public status checks cannot tell "optimizer not restored on purpose"
  # from "model weight unused": read the matching the restore made
  # (`assert_consumed` does the same over the whole checkpoint).
  restore = status._checkpoint  # pylint: disable=protected-access
  matched_ids = {id(o) for o in restore.object_by_proto_id.values()}
  missing = [f"{name}: {_variable_name(v)}" for name, obj in objects.items()
             for v in _variables(obj) if id(v) not in matched_ids]
  nodes = restore.object_graph_proto.nodes
  unused = []
  queue = [(child.node_id, child.local_name) for child in nodes[0].children
           if child.local_name in objects]
  seen = set()
  while queue:
    node_id, node_path = queue.pop(0)
    if node_id in seen:
      continue
    seen.add(node_id)
    node = nodes[node_id]
    if node.attributes and node_id not in restore.object_by_proto_id:
      unused.append(node_path)
    queue.extend((c.node_id, f"{node_path}/{c.local_name}")
                 for c in node.children)
  if missing or unused:
    lines = []
    if missing:
      lines.append(f"{len(missing)} variable(s) of the model have no value in "
                   "the checkpoint: " + ", ".join(sorted(missing)))
    if unused:
      lines.append(f"{len(unused)} checkpointed variable(s) match nothing in "
                   "the model: " + ", ".join(sorted(unused)))
    raise CheckpointError(
        f"checkpoint {path} does not match the model built from this "
        "configuration (was it written by another configuration?): "
        + "; ".join(lines))


def _make_model(problem):
  model = problem.build_model()
  if not model.built:
    raise ValueError("Problem.build_model must return a built model")
  return model


def make_train_step(problem, model, optimizer, dist, jit_compile=False,
                    run_eagerly=False):
  """The training step the loop runs: forward, loss, gradient, update.

  Args:
    problem: the `Problem` (its `training_loss`).
    model: the model, built in `dist`'s scope.
    optimizer: the outer optimizer (a `LossScaleOptimizer` under mixed
      precision: the loss is scaled before the gradient and unscaled in
      `apply`).
    dist: the `tf.distribute.Strategy` the model lives in.
    jit_compile: compile the whole step with XLA (`tf.function(jit_compile=
      True)` demands every op be compilable: one that is not is an error).
    run_eagerly: run op by op (no `tf.function`; ignores `jit_compile`).

  Returns:
    `step(features, labels) -> {"loss": float32 [], "energy": float32 [T],
    "grad_norm": float32 [T]}` for distributed `(features, labels)` of the
    global batch (per-replica values averaged; energy and grad_norm only for
    models with an inner optimizer).
  """
  num_replicas = dist.num_replicas_in_sync

  def replica_step(features, labels):
    with tf.GradientTape() as tape:
      loss, outputs = problem.training_loss(model, features, labels)
      if model.losses:
        loss += tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
      scaled = optimizer.scale_loss(loss / num_replicas)
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    optimizer.apply(grads, variables)
    logs = {"loss": loss}
    for name in ("energy", "grad_norm"):
      if name in outputs:
        logs[name] = tf.reduce_mean(tf.cast(outputs[name], tf.float32), axis=-1)
    return logs

  def train_step(features, labels):
    logs = dist.run(replica_step, args=(features, labels))
    return {k: dist.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in logs.items()}

  if run_eagerly:
    if jit_compile:
      logging.warning("train: run_eagerly=True ignores jit_compile=True")
    return train_step
  compiled = tf.function(train_step, jit_compile=jit_compile)
  if not jit_compile:
    return compiled

  def numeric_step(features, labels):
    # XLA takes no string tensors (e.g. a voxel example's model id): they
    # are dropped before the compiled step; the loss never needs them.
    return compiled(_without_strings(features), _without_strings(labels))

  return numeric_step


def _is_string(value):
  if isinstance(value, tf.distribute.DistributedValues):
    value = value.values[0]
  return getattr(value, "dtype", None) == tf.string


def _without_strings(nest):
  """`nest` without its string tensors (dicts lose those entries)."""
  if isinstance(nest, dict):
    return {k: _without_strings(v) for k, v in nest.items()
            if not _is_string(v)}
  return nest


@gin.configurable(denylist=["problem", "model_dir"])
def train(problem, model_dir, epochs=1, batch_size=64, optimizer_fn=adam_optimizer,
          strategy="default", mixed_precision=False, jit_compile=False,
          checkpoint_every_steps=1000, summary_every_steps=100, max_steps=None,
          seed=0, progress=True, validation_split=None,
          validate_every_epochs=1, run_eagerly=False):
  """Trains `problem`'s model, resuming from the latest checkpoint if any.

  Args:
    problem: a `Problem`.
    model_dir: run directory (created if needed).
    epochs: number of passes over the training split.
    batch_size: global batch size (split across replicas).
    optimizer_fn: builds the outer Keras optimizer.
    strategy: see `strategies.get_strategy` ("default", "mirrored",
      "multi_worker").
    mixed_precision: compute in float16 with float32 variables and loss scaling.
    jit_compile: compile the training step with XLA.
    checkpoint_every_steps: checkpoint period (also saved at every epoch end).
    summary_every_steps: TensorBoard period.
    max_steps: stop after this many total steps (None: run all epochs).
    seed: base seed; epoch e shuffles with seed + e.
    progress: show a tqdm progress bar.
    validation_split: if set (e.g. "validation"), per-step metrics on this
      split are written to TensorBoard (`logs/validation`) every
      `validate_every_epochs` epochs.
    validate_every_epochs: validation period in epochs.
    run_eagerly: run the training step op by op instead of as a
      `tf.function` graph (like Keras' `run_eagerly`): Python breakpoints and
      prints inside the model and loss work, and there is no tracing cost, at
      the price of slower steps. Ignores `jit_compile`.

  Returns:
    The total number of optimizer steps taken (int), counted across resumes.
  """
  model_dir = _require_model_dir(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  keras.utils.set_random_seed(seed)
  previous_policy = keras.mixed_precision.global_policy()
  if mixed_precision:
    keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    return _train(problem, model_dir, epochs, batch_size, optimizer_fn,
                  strategy, mixed_precision, jit_compile,
                  checkpoint_every_steps, summary_every_steps, max_steps, seed,
                  progress, validation_split, validate_every_epochs,
                  run_eagerly)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)


def _train(problem, model_dir, epochs, batch_size, optimizer_fn, strategy,
           mixed_precision, jit_compile, checkpoint_every_steps,
           summary_every_steps, max_steps, seed, progress, validation_split,
           validate_every_epochs, run_eagerly):
  """`train` without the global mixed-precision policy handling."""
  dist = strategies.get_strategy(strategy)
  with dist.scope():
    model = _make_model(problem)
    optimizer = optimizer_fn()
    if mixed_precision:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
  # The step counter is host-side bookkeeping: kept out of the strategy scope.
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
  state = _training_state(model, optimizer, step)
  checkpoint = tf.train.Checkpoint(**state)
  # Every worker saves (a collective); only the chief's copy is model_dir's.
  save_dir = distributed.write_dir(model_dir, dist)
  try:
    return _train_loop(problem, model_dir, epochs, batch_size, dist, model,
                       optimizer, step, checkpoint, state, save_dir,
                       jit_compile, checkpoint_every_steps, summary_every_steps,
                       max_steps, seed, progress, validation_split,
                       validate_every_epochs, run_eagerly)
  finally:
    distributed.cleanup(save_dir, model_dir)


def _train_loop(problem, model_dir, epochs, batch_size, dist, model,
                optimizer, step, checkpoint, state, save_dir, jit_compile,
                checkpoint_every_steps, summary_every_steps, max_steps, seed,
                progress, validation_split, validate_every_epochs,
                run_eagerly):
  """`_train` from the checkpoint on; `save_dir` from `distributed.write_dir`,
  `state` the checkpointed objects (`_training_state`)."""
  chief = distributed.is_chief(dist)
  manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=3)
  latest = distributed.latest_checkpoint(model_dir)  # the chief's, for all
  if latest:
    restore_exact(state, latest)
    logging.info("Resumed from %s at step %d", latest, int(step))
  if chief:
    write_run_record(model_dir, problem)
    _write_operative_config(model_dir)

  first = problem.dataset("train", batch_size, shuffle=True, seed=seed)
  steps_per_epoch = _num_batches(first)
  total_steps = epochs * steps_per_epoch
  if max_steps is not None:
    total_steps = min(total_steps, int(max_steps))
  unrolled = find_inner_optimizers(model)
  train_step = make_train_step(problem, model, optimizer, dist, jit_compile,
                               run_eagerly)

  writer = distributed.summary_writer(model_dir, dist, "train")
  bar = tqdm.tqdm(total=total_steps, initial=int(step), desc="train",
                  disable=not (progress and chief), dynamic_ncols=True)
  config_written_after_step = False
  validation_writer = None
  try:
    while int(step) < total_steps:
      epoch, skip = divmod(int(step), steps_per_epoch)
      data = first if epoch == 0 else problem.dataset(
          "train", batch_size, shuffle=True, seed=seed + epoch)
      data = data.skip(skip).take(total_steps - int(step))
      for features, labels in distributed.distribute_dataset(dist, data):
        logs = train_step(features, labels)
        step.assign_add(1)
        current = int(step)
        bar.update(1)
        loss = float(logs["loss"])
        if not math.isfinite(loss):
          raise FloatingPointError(
              f"training loss is {loss} at step {current}; last good "
              f"checkpoint: {manager.latest_checkpoint}")
        if not config_written_after_step:
          if chief:
            _write_operative_config(model_dir)
          config_written_after_step = True
        if current % summary_every_steps == 0 or current == total_steps:
          bar.set_postfix(loss=f"{loss:.4g}", epoch=epoch)
          _write_train_summaries(writer, current, logs, optimizer, unrolled)
        if current % checkpoint_every_steps == 0:
          manager.save(checkpoint_number=current)
      manager.save(checkpoint_number=int(step))
      finished_epoch = int(step) // steps_per_epoch
      if (validation_split and int(step) % steps_per_epoch == 0
          and finished_epoch % validate_every_epochs == 0):
        if validation_writer is None:
          validation_writer = distributed.summary_writer(model_dir, dist,
                                                         "validation")
        _write_metric_summaries(
            validation_writer, int(step), validation_split,
            compute_metrics(problem, model, validation_split, batch_size,
                            progress=False))
  finally:
    bar.close()
    writer.flush()
  # Precise BN (ige_tf/train/precise_bn.py): recompute the BN moving
  # statistics for evaluation/export, then save them in the final checkpoint.
  # Its forward passes draw dropout masks: the random states are put back,
  # so a run stopped here (max_steps) and resumed draws what the
  # uninterrupted run draws (the statistics are recomputed from scratch at
  # the end of every run).
  rng = random_states(model)
  rng_before = [v.numpy() for v in rng]
  recomputed = precise_bn.precise_batch_norm(problem, model, batch_size, seed)
  for variable, value in zip(rng, rng_before):
    variable.assign(value)
  if recomputed or manager.latest_checkpoint is None or not (
      manager.latest_checkpoint.endswith(f"-{int(step)}")):
    manager.save(checkpoint_number=int(step))
  return int(step)


def _write_train_summaries(writer, step, logs, optimizer, unrolled):
  with writer.as_default(step=step):
    tf.summary.scalar("loss", logs["loss"])
    lr = optimizer.learning_rate
    tf.summary.scalar("outer/learning_rate", lr() if callable(lr) else lr)
    for name in ("energy", "grad_norm"):
      if name in logs:
        for t, value in enumerate(np.asarray(logs[name]).reshape(-1)):
          tf.summary.scalar(f"inner/{name}/step_{t}", value)
    for i, layer in enumerate(unrolled):
      prefix = "inner" if len(unrolled) == 1 else f"inner_{i}"
      for name, value in layer.hyperparameters().items():
        tf.summary.scalar(f"{prefix}/{name}", value)


def restore_model(problem, model_dir):
  """Builds the problem's model and loads the latest checkpoint of `model_dir`.

  Raises:
    FileNotFoundError: `model_dir` has no checkpoint.
    CheckpointError: the checkpoint cannot be restored, or its model
      variables and the model's differ (`restore_exact`; the optimizer and
      step it also holds are not needed).
  """
  model_dir = _require_model_dir(model_dir)
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise FileNotFoundError(
        f"no checkpoint in model_dir {model_dir!r}: train a model there first")
  model = _make_model(problem)
  restore_exact({"model": model}, latest)
  return model


def compute_metrics(problem, model, split, batch_size=256, jit_compile=False,
                    progress=True):
  """Mean per-step metrics of `model` over a split.

  Returns:
    dict metric name -> list of T+1 floats (mean over the split at every
    step), plus `"<metric>_per_<group>": {group value: [T+1 floats]}` for
    the problem's groups and anything `finalize_metrics` adds.
  """

  @tf.function(jit_compile=jit_compile)
  def eval_step(features, labels):
    outputs = model(features, training=False)
    return problem.metrics(labels, outputs), problem.groups(labels)

  sums, counts = {}, 0
  group_sums = {}  # (group, value) -> [{metric: sum [T+1]}, count]
  data = problem.dataset(split, batch_size, shuffle=False)
  total = int(data.cardinality())
  for features, labels in tqdm.tqdm(data, total=total if total >= 0 else None,
                                    desc=f"evaluate {split}",
                                    disable=not progress, dynamic_ncols=True):
    values, groups = eval_step(features, labels)
    values = {k: np.asarray(v, np.float64) for k, v in values.items()}
    for name, v in values.items():
      sums[name] = sums.get(name, 0.0) + v.sum(axis=1)
    counts += next(iter(values.values())).shape[1]
    for group, keys in groups.items():
      keys = np.array([k.decode() if isinstance(k, bytes) else str(k)
                       for k in np.asarray(keys).reshape(-1)])
      for key in np.unique(keys):
        mask = keys == key
        entry = group_sums.setdefault((group, str(key)), [{}, 0])
        for name, v in values.items():
          entry[0][name] = entry[0].get(name, 0.0) + v[:, mask].sum(axis=1)
        entry[1] += int(mask.sum())
  if counts == 0:
    raise ValueError(f"the {split!r} split is empty")
  metrics = {name: (s / counts).tolist() for name, s in sums.items()}
  for (group, key), (gsums, n) in sorted(group_sums.items()):
    for name, s in gsums.items():
      metrics.setdefault(f"{name}_per_{group}", {})[key] = (s / n).tolist()
  return problem.finalize_metrics(metrics)


def _write_metric_summaries(writer, step, split, metrics):
  """Per-step and final values of every list-valued metric."""
  with writer.as_default(step=step):
    for name, values in metrics.items():
      if isinstance(values, list):
        tf.summary.scalar(f"{split}/{name}/final", values[-1])
        for t, value in enumerate(values):
          tf.summary.scalar(f"{split}/{name}/step_{t}", value)
  writer.flush()


@gin.configurable(denylist=["problem", "model_dir"])
def evaluate(problem, model_dir, split="test", batch_size=256,
             jit_compile=False, progress=True):
  """Evaluates the latest checkpoint and writes `metrics.json`.

  Returns:
    The metrics of `compute_metrics`.
  """
  model_dir = _require_model_dir(model_dir)
  model = restore_model(problem, model_dir)
  precise_bn.warn_if_inference_differs(
      problem, model, problem.dataset(split, batch_size), where=model_dir)
  metrics = compute_metrics(problem, model, split, batch_size, jit_compile,
                            progress)
  atomic_write(os.path.join(model_dir, METRICS_FILE),
                json.dumps(metrics, indent=2, sort_keys=True))
  step = int(os.path.basename(tf.train.latest_checkpoint(model_dir)).split("-")[-1])
  _write_metric_summaries(
      tf.summary.create_file_writer(os.path.join(model_dir, "logs", "eval")),
      step, split, metrics)
  return metrics


@gin.configurable(denylist=["problem", "model_dir"])
def export(problem, model_dir, export_dir=None):
  """Writes a SavedModel of the latest checkpoint.

  The "serve" signature takes the problem's raw serving inputs and returns
  `{"final": [B, ...], "steps": [T+1, B, ...]}`.

  Returns:
    The export directory (str), `model_dir/export` by default.
  """
  model_dir = _require_model_dir(model_dir)
  model = restore_model(problem, model_dir)
  export_dir = export_dir or os.path.join(model_dir, EXPORT_DIR)
  fn, signature = problem.serving_function(model)
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serve", fn, input_signature=signature)
  tmp = export_dir.rstrip("/") + ".tmp"
  if tf.io.gfile.exists(tmp):
    tf.io.gfile.rmtree(tmp)
  archive.write_out(tmp, verbose=False)
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  tf.io.gfile.rename(tmp, export_dir)
  return export_dir


@gin.configurable(denylist=["problem"])
def model_stats(problem):
  """Parameter counts per component and multiply-adds per example.

  Returns:
    `{"trainable_params": {component: n, ..., "total": n}, "multiply_adds": n}`.
  """
  model = _make_model(problem)
  params = dict(problem.component_params(model))
  params["total"] = count_trainable(model)
  return {"trainable_params": params,
          "multiply_adds": int(problem.multiply_adds(model))}
