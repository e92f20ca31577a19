"""The generic training, evaluation and export loop for any `Problem`.

`train` (gin: `train.epochs`, `train.batch_size`, ...) collects its options
in a `TrainConfig` and runs the loop's phases, each a function or small
class of its own:

  build        `precision_policy` and `build`: the strategy, the model and
               the optimizer in its scope, the step counter (`TrainingState`).
  restore      `checkpoints.resume`: the latest checkpoint, restored exactly
               (weights, optimizer, step, random states).
  step         `make_train_step`: forward pass and loss
               (`Problem.training_loss`), gradient, update; `finite_loss`
               stops a run whose loss is NaN or infinite.
  summaries    `TrainSummaries`: TensorBoard scalars every N steps.
  checkpoint   `checkpoints.Checkpoints`: saves every N steps and at every
               epoch end.
  validate     `Validation`: per-step metrics on a split every N epochs.
  finish       `finish`: precise BN, then the final checkpoint.

A run's `model_dir` holds:
  ckpt-*              `tf.train.CheckpointManager` checkpoints (model,
                      optimizer, step, random states "rng"); training resumes
                      from the latest one, restored exactly
                      (`ige_tf.train.checkpoints`).
  config.gin          the parsed gin config (macros kept), written when
                      training starts (`write_run_record`).
  run.json            the problem's class and the bindings that rebuild its
                      model from the checkpoint alone (`write_run_record`).
  operative_config.gin  gin's operative config, written when training starts
                      and again after the first step (so it records the
                      model, the data pipeline and the traced step).
  A run is loaded back by `ige_tf.train.run.open_run`.
  logs/train, logs/validation, logs/eval  TensorBoard summaries.
  metrics.json        written by `evaluate`.
  export/             written by `export`: a SavedModel.

Under a multi-worker strategy only the chief writes `model_dir`
(`ige_tf.train.distributed`).
"""
import dataclasses
import json
import math
import os
from typing import Callable, Optional

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf
import tqdm

from ige_tf.atomic import write_text as atomic_write
from ige_tf.core.precision import dtype_policy
from ige_tf.core.unrolled import find_inner_optimizers
from ige_tf.train import checkpoints
from ige_tf.train import precise_bn
from ige_tf.train import distributed
from ige_tf.train import strategies
from ige_tf.train.problem import count_trainable
from ige_tf.train.run_files import (  # noqa: F401 (loop.<NAME> as before)
    EXPORT_DIR, METRICS_FILE, OPERATIVE_CONFIG, RUN_CONFIG, RUN_RECORD)

RUN_FORMAT = 1

# Public names of this module too, for its callers (they live in
# ige_tf/train/checkpoints.py).
CheckpointError = checkpoints.CheckpointError
restore_exact = checkpoints.restore_exact
random_states = checkpoints.random_states


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


def _make_model(problem):
  model = problem.build_model()
  if not model.built:
    raise ValueError("Problem.build_model must return a built model")
  return model


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The training loop's options: the arguments of `train` (gin `train.*`).

  Attributes:
    epochs: number of passes over the training split.
    batch_size: global batch size (split across replicas).
    optimizer_fn: builds the outer Keras optimizer.
    strategy: see `strategies.get_strategy` ("default", "mirrored",
      "multi_worker").
    mixed_precision: compute in float16 with float32 variables and loss
      scaling.
    jit_compile: compile the training step with XLA.
    checkpoint_every_steps: checkpoint period (also saved at every epoch end).
    summary_every_steps: TensorBoard period (also written at the last step).
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

  Raises (on construction):
    ValueError: a count or period below its minimum, naming the `train.*`
      binding.
  """
  epochs: int = 1
  batch_size: int = 64
  optimizer_fn: Callable[[], keras.optimizers.Optimizer] = adam_optimizer
  strategy: str = "default"
  mixed_precision: bool = False
  jit_compile: bool = False
  checkpoint_every_steps: int = 1000
  summary_every_steps: int = 100
  max_steps: Optional[int] = None
  seed: int = 0
  progress: bool = True
  validation_split: Optional[str] = None
  validate_every_epochs: int = 1
  run_eagerly: bool = False

  def __post_init__(self):
    minimum = {"epochs": 0, "batch_size": 1, "checkpoint_every_steps": 1,
               "summary_every_steps": 1, "validate_every_epochs": 1}
    if self.max_steps is not None:
      minimum["max_steps"] = 0
    for name, least in minimum.items():
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"train.{name} must be an integer, got {value!r}")
      if value < least:
        raise ValueError(f"train.{name} must be >= {least}, got {value}")

  def total_steps(self, steps_per_epoch):
    """The run's last step (int): `epochs` epochs of `steps_per_epoch`
    steps, or `max_steps` if fewer."""
    total = self.epochs * steps_per_epoch
    if self.max_steps is not None:
      total = min(total, int(self.max_steps))
    return total


def precision_policy(mixed_precision):
  """Context manager: Keras' global dtype policy "mixed_float16" if
  `mixed_precision` (else left as it is), the previous policy put back on
  exit (`ige_tf.core.dtype_policy`)."""
  return dtype_policy("mixed_float16" if mixed_precision else None)


@dataclasses.dataclass(frozen=True)
class TrainingState:
  """What the build phase makes and the other phases share.

  Attributes:
    strategy: the `tf.distribute.Strategy` the model lives in.
    model: the problem's built Keras model (made in the strategy's scope).
    optimizer: its outer optimizer, built (a `LossScaleOptimizer` under
      mixed precision).
    step: int64 `[]` variable, the optimizer steps taken (across resumes).
    objects: what a checkpoint holds (`checkpoints.training_objects`).
  """
  strategy: tf.distribute.Strategy
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  objects: dict


def build(problem, config):
  """The build phase: strategy, model, optimizer and step counter.

  Run it under `precision_policy(config.mixed_precision)`, which must stay
  in force while the model trains.

  Args:
    problem: the `Problem` (its `build_model`).
    config: a `TrainConfig` (strategy, optimizer_fn, mixed_precision).

  Returns:
    A `TrainingState` at step 0 (before any restore).
  """
  dist = strategies.get_strategy(config.strategy)
  with dist.scope():
    model = _make_model(problem)
    optimizer = config.optimizer_fn()
    if config.mixed_precision:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
  # The step counter is host-side bookkeeping: kept out of the strategy scope.
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
  return TrainingState(dist, model, optimizer, step,
                       checkpoints.training_objects(model, optimizer, step))


def make_train_step(problem, model, optimizer, dist, jit_compile=False,
                    run_eagerly=False):
  """The step phase: forward, loss, gradient, update.

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


def finite_loss(logs, step, last_good):
  """The step's loss (float), checked finite.

  Args:
    logs: the step's logs (`make_train_step`), with "loss" float32 `[]`.
    step: the number of steps taken, this one included (int).
    last_good: the last checkpoint saved (str or None), for the message.

  Raises:
    FloatingPointError: the loss is NaN or infinite; the message names the
      step and the last good checkpoint.
  """
  loss = float(logs["loss"])
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"training loss is {loss} at step {step}; last good "
        f"checkpoint: {last_good}")
  return loss


class TrainSummaries:
  """The summaries phase: TensorBoard scalars of the training steps.

  Every `every_steps` steps and at the last step: "loss",
  "outer/learning_rate", for models with an inner optimizer
  "inner/energy/step_<t>" and "inner/grad_norm/step_<t>" (batch means) and
  the inner optimizers' learned hyper-parameters ("inner/<name>", or
  "inner_<i>/<name>" when there are several).
  """

  def __init__(self, writer, optimizer, unrolled, every_steps, total_steps):
    """
    Args:
      writer: a `tf.summary` writer (`distributed.summary_writer`).
      optimizer: the outer optimizer (its learning rate is logged).
      unrolled: the model's inner optimizers (`find_inner_optimizers`).
      every_steps: int >= 1, the period in steps.
      total_steps: the run's last step (int), also written.
    """
    self.writer = writer
    self.optimizer = optimizer
    self.unrolled = unrolled
    self.every_steps = int(every_steps)
    self.total_steps = int(total_steps)

  def after_step(self, step, logs):
    """Writes the summaries of `logs` at `step` (int) if it is due.

    Returns:
      Whether they were written (bool).
    """
    if step % self.every_steps and step != self.total_steps:
      return False
    with self.writer.as_default(step=step):
      tf.summary.scalar("loss", logs["loss"])
      lr = self.optimizer.learning_rate
      tf.summary.scalar("outer/learning_rate", lr() if callable(lr) else lr)
      for name in ("energy", "grad_norm"):
        if name in logs:
          for t, value in enumerate(np.asarray(logs[name]).reshape(-1)):
            tf.summary.scalar(f"inner/{name}/step_{t}", value)
      for i, layer in enumerate(self.unrolled):
        prefix = "inner" if len(self.unrolled) == 1 else f"inner_{i}"
        for name, value in layer.hyperparameters().items():
          tf.summary.scalar(f"{prefix}/{name}", value)
    return True

  def flush(self):
    self.writer.flush()


class Validation:
  """The validate phase: per-step metrics of a split every N epochs.

  At the end of every `config.validate_every_epochs`-th epoch,
  `compute_metrics` of `config.validation_split` is written to
  `model_dir/logs/validation` (chief only) as "<split>/<metric>/step_<t>"
  and "<split>/<metric>/final". Nothing happens without a validation split.
  """

  def __init__(self, problem, model, model_dir, strategy, config):
    """
    Args:
      problem: the `Problem` (its dataset and metrics).
      model: the model being trained.
      model_dir: the run directory.
      strategy: the `tf.distribute.Strategy` (who writes).
      config: the `TrainConfig` (validation_split, validate_every_epochs,
        batch_size).
    """
    self.problem = problem
    self.model = model
    self.model_dir = model_dir
    self.strategy = strategy
    self.split = config.validation_split
    self.every_epochs = config.validate_every_epochs
    self.batch_size = config.batch_size
    self._writer = None  # made at the first validation: no empty log dir

  def after_epoch(self, step, steps_per_epoch):
    """Validates if `step` (int) ends an epoch whose number is a multiple of
    the period.

    Returns:
      The metrics written (dict, see `compute_metrics`), or None.
    """
    if not self.split or step % steps_per_epoch:
      return None
    if (step // steps_per_epoch) % self.every_epochs:
      return None
    if self._writer is None:
      self._writer = distributed.summary_writer(self.model_dir, self.strategy,
                                                "validation")
    metrics = compute_metrics(self.problem, self.model, self.split,
                              self.batch_size, progress=False)
    _write_metric_summaries(self._writer, step, self.split, metrics)
    return metrics


def finish(problem, state, saver, config):
  """The finish phase: precise BN, then the final checkpoint.

  Precise BN (ige_tf/train/precise_bn.py) recomputes the BN moving
  statistics for evaluation and export. Its forward passes draw dropout
  masks: the random states are put back, so a run stopped here (max_steps)
  and resumed draws what the uninterrupted run draws (the statistics are
  recomputed from scratch at the end of every run). The final checkpoint
  is saved if the statistics changed or the last save is older than the
  last step.

  Args:
    problem: the `Problem`.
    state: the `TrainingState`.
    saver: the `checkpoints.Checkpoints` phase.
    config: the `TrainConfig` (batch_size, seed).

  Returns:
    The number of steps taken (int).
  """
  rng = checkpoints.random_states(state.model)
  rng_before = [v.numpy() for v in rng]
  recomputed = precise_bn.precise_batch_norm(problem, state.model,
                                             config.batch_size, config.seed)
  for variable, value in zip(rng, rng_before):
    variable.assign(value)
  saver.save_final(int(state.step), changed=bool(recomputed))
  return int(state.step)


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
    epochs, batch_size, optimizer_fn, strategy, mixed_precision, jit_compile,
    checkpoint_every_steps, summary_every_steps, max_steps, seed, progress,
    validation_split, validate_every_epochs, run_eagerly: the options of
      `TrainConfig` (documented there; the defaults are the same).

  Returns:
    The total number of optimizer steps taken (int), counted across resumes.
  """
  config = TrainConfig(
      epochs=epochs, batch_size=batch_size, optimizer_fn=optimizer_fn,
      strategy=strategy, mixed_precision=mixed_precision,
      jit_compile=jit_compile, checkpoint_every_steps=checkpoint_every_steps,
      summary_every_steps=summary_every_steps, max_steps=max_steps, seed=seed,
      progress=progress, validation_split=validation_split,
      validate_every_epochs=validate_every_epochs, run_eagerly=run_eagerly)
  return run_training(problem, model_dir, config)


def run_training(problem, model_dir, config):
  """`train` with its options in a `TrainConfig`: runs the phases.

  Returns:
    The total number of optimizer steps taken (int), counted across resumes.
  """
  model_dir = _require_model_dir(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  keras.utils.set_random_seed(config.seed)
  with precision_policy(config.mixed_precision):
    state = build(problem, config)
    # Every worker saves (a collective); only the chief's copy is model_dir's.
    save_dir = distributed.write_dir(model_dir, state.strategy)
    try:
      saver = checkpoints.Checkpoints(state.objects, save_dir,
                                      config.checkpoint_every_steps)
      checkpoints.resume(state.objects, model_dir)
      if distributed.is_chief(state.strategy):
        write_run_record(model_dir, problem)
        _write_operative_config(model_dir)
      _train_epochs(problem, model_dir, config, state, saver)
      return finish(problem, state, saver, config)
    finally:
      distributed.cleanup(save_dir, model_dir)


def _train_epochs(problem, model_dir, config, state, saver):
  """Steps from `state.step` to the last step, epoch by epoch: the step,
  summaries, checkpoint and validate phases, the operative config after the
  first step, the progress bar."""
  chief = distributed.is_chief(state.strategy)
  first = problem.dataset("train", config.batch_size, shuffle=True,
                          seed=config.seed)
  steps_per_epoch = _num_batches(first)
  total_steps = config.total_steps(steps_per_epoch)
  summaries = TrainSummaries(
      distributed.summary_writer(model_dir, state.strategy, "train"),
      state.optimizer, find_inner_optimizers(state.model),
      config.summary_every_steps, total_steps)
  validation = Validation(problem, state.model, model_dir, state.strategy,
                          config)
  train_step = make_train_step(problem, state.model, state.optimizer,
                               state.strategy, config.jit_compile,
                               config.run_eagerly)
  bar = tqdm.tqdm(total=total_steps, initial=int(state.step), desc="train",
                  disable=not (config.progress and chief), dynamic_ncols=True)
  config_written_after_step = False
  try:
    while int(state.step) < total_steps:
      # A resumed run skips the steps its epoch already took: same batches.
      epoch, skip = divmod(int(state.step), steps_per_epoch)
      data = first if epoch == 0 else problem.dataset(
          "train", config.batch_size, shuffle=True, seed=config.seed + epoch)
      data = data.skip(skip).take(total_steps - int(state.step))
      for features, labels in distributed.distribute_dataset(state.strategy,
                                                             data):
        logs = train_step(features, labels)
        state.step.assign_add(1)
        current = int(state.step)
        bar.update(1)
        loss = finite_loss(logs, current, saver.latest)
        if not config_written_after_step:
          if chief:
            _write_operative_config(model_dir)
          config_written_after_step = True
        if summaries.after_step(current, logs):
          bar.set_postfix(loss=f"{loss:.4g}", epoch=epoch)
        saver.after_step(current)
      saver.save(int(state.step))
      validation.after_epoch(int(state.step), steps_per_epoch)
  finally:
    bar.close()
    summaries.flush()


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
  checkpoints.restore_exact({"model": model}, latest)
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
