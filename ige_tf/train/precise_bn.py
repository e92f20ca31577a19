"""Precise batch normalization: moving statistics recomputed after training.

A `keras.layers.BatchNormalization` layer normalizes with the statistics of
the current batch in training mode and with exponential moving averages of
them in inference mode (evaluation, export). With a momentum close to 1
(0.999 in keras.applications' MobileNetV2) the averages need thousands of
steps to forget their initial values (mean 0, variance 1), and they lag the
weights, which keep changing: a model that is good in training mode can be
useless in inference mode (voxel IGE-MN / MN baseline after 792 steps: IoU 0
in inference mode, 56.6 % with the same weights in training mode).

Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; pycls'
`compute_precise_bn_stats`, detectron2's `update_bn_stats`) replaces the
moving averages at the end of training by the average of the batch
statistics of the final weights over N training batches: every BN layer's
`moving_mean` is reset and set to the example-weighted mean of its batch
means, `moving_variance` to the mean of its batch variances. The model runs
in training mode (batch statistics, as during training) but no weight is
updated. Inference-mode outputs then match training-mode outputs on typical
batches, and, over one batch, exactly (`tests/train/test_precise_bn.py`).

`precise_batch_norm` is the hook the training loop calls once, after the
last step and before the final checkpoint is written, so `evaluate` and
`export` read the recomputed statistics. gin: `precise_batch_norm.num_batches`
(0 turns it off). `warn_if_inference_differs` logs a warning when the
inference-mode and training-mode metrics of one batch differ grossly (a sign
of unusable moving statistics); the loop calls it after precise BN and at
evaluation.

Limitation: a BN layer called several times in one forward pass ends up with
the statistics of its last call (none of this project's models do that).
"""
import math

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf
import tqdm

# Seed offset of the precise-BN pass's shuffle (distinct from every epoch's).
SEED_OFFSET = 1_000_003


def batch_norm_layers(model):
  """The trainable `keras.layers.BatchNormalization` layers of `model`.

  Frozen layers (`trainable=False`) are left alone: Keras never updates
  their statistics in training mode either.
  """
  return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)
          and layer.trainable and not getattr(layer, "renorm", False)]


def _batch_size(features):
  return int(tf.shape(tf.nest.flatten(features)[0])[0])


def update_statistics(model, dataset, num_batches, progress=False):
  """Recomputes every BN layer's moving statistics over `num_batches` batches.

  Args:
    model: a built Keras model.
    dataset: `tf.data.Dataset` of `(features, labels)` (or `features`) batches
      the model takes in training mode; only the first `num_batches` are read.
    num_batches: int > 0, batches to average over.
    progress: show a tqdm bar.

  Returns:
    The number of batches used (int; fewer than `num_batches` when the
    dataset is shorter), 0 when the model has no trainable BN layer.

  Raises:
    ValueError: `num_batches` < 1 or an empty dataset (the statistics are then
      left as they were).
  """
  if num_batches < 1:
    raise ValueError(f"precise BN: num_batches must be >= 1, got {num_batches}")
  layers = batch_norm_layers(model)
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
           for layer in layers]
  sums = [[np.zeros_like(m, np.float64), np.zeros_like(v, np.float64)]
          for m, v in saved]
  for layer in layers:
    # Momentum 0: each training-mode call stores that batch's statistics.
    # Read at trace time, so it must be set before the function is traced.
    layer.momentum = 0.0

  @tf.function(reduce_retracing=True)
  def forward(features):
    model(features, training=True)

  examples = 0
  used = 0
  try:
    for batch in tqdm.tqdm(dataset.take(num_batches), total=num_batches,
                           desc="precise BN", disable=not progress,
                           dynamic_ncols=True):
      features = batch[0] if isinstance(batch, tuple) else batch
      size = _batch_size(features)
      forward(features)
      for layer, (mean_sum, var_sum) in zip(layers, sums):
        mean_sum += size * layer.moving_mean.numpy().astype(np.float64)
        var_sum += size * layer.moving_variance.numpy().astype(np.float64)
      examples += size
      used += 1
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
    if used == 0:
      for layer, (mean, variance) in zip(layers, saved):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)
  if used == 0:
    raise ValueError("precise BN: the dataset yielded no batch")
  for layer, (mean_sum, var_sum) in zip(layers, sums):
    layer.moving_mean.assign(tf.cast(mean_sum / examples,
                                     layer.moving_mean.dtype))
    layer.moving_variance.assign(tf.cast(var_sum / examples,
                                         layer.moving_variance.dtype))
  return used


def _final_means(values):
  """dict metric -> float: batch mean of each `[T+1, B]` metric's last step."""
  out = {}
  for name, value in values.items():
    value = np.asarray(value, np.float64)
    out[name] = float(value.reshape(-1, value.shape[-1])[-1].mean())
  return out


def inference_gap(problem, model, features, labels):
  """The problem's metrics on one batch in training and in inference mode.

  The training-mode pass would move the BN statistics; they are restored.
  Dropout is switched off for it (rate 0), so the two passes differ only in
  the BN statistics they normalize with.

  Returns:
    dict metric -> `(training_mode, inference_mode)` floats: the batch mean
    at the final step of each of `problem.metrics`.
  """
  layers = batch_norm_layers(model)
  saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy())
           for layer in layers]
  dropouts = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
              if isinstance(layer, keras.layers.Dropout)]
  rates = [layer.rate for layer in dropouts]
  try:
    for layer in dropouts:
      layer.rate = 0.0
    training = _final_means(problem.metrics(
        labels, model(features, training=True)))
  finally:
    for layer, rate in zip(dropouts, rates):
      layer.rate = rate
    for layer, (mean, variance) in zip(layers, saved):
      layer.moving_mean.assign(mean)
      layer.moving_variance.assign(variance)
  inference = _final_means(problem.metrics(
      labels, model(features, training=False)))
  return {name: (training[name], inference[name]) for name in training}


def gross_differences(gap, rtol=0.25, atol=1e-3):
  """Metrics of `inference_gap` whose two values differ grossly.

  A difference is gross when it exceeds `atol` and `rtol` times the larger
  magnitude of the two values.

  Returns:
    dict metric -> `(training_mode, inference_mode)`, possibly empty.
  """
  return {name: (a, b) for name, (a, b) in gap.items()
          if math.isfinite(a) and math.isfinite(b) and abs(a - b) > atol
          and abs(a - b) > rtol * max(abs(a), abs(b))}


def warn_if_inference_differs(problem, model, dataset, rtol=0.25, where=""):
  """Logs a warning when inference- and training-mode metrics differ grossly.

  Args:
    problem: the `Problem` (its `metrics` are compared).
    model: the model, with its BN statistics as they will be used.
    dataset: `(features, labels)` batches; the first one is used.
    rtol: relative difference called gross (see `gross_differences`).
    where: words naming the run or split, for the message.

  Returns:
    dict of the gross differences (empty: no warning); `{}` too for a model
    without trainable BN layers (the two modes are then the same).
  """
  if not batch_norm_layers(model):
    return {}
  for features, labels in dataset.take(1):
    gross = gross_differences(inference_gap(problem, model, features, labels),
                              rtol)
    if gross:
      details = ", ".join(f"{name} {a:.4g} (training mode) vs {b:.4g} "
                          "(inference mode)" for name, (a, b) in gross.items())
      logging.warning(
          "%sbatch-norm moving statistics look unusable: on one batch %s. "
          "Evaluation and export use the moving statistics; recompute them "
          "with precise BN (gin: precise_batch_norm.num_batches, run at the "
          "end of bin/train.py) or train longer.",
          f"{where}: " if where else "", details)
    return gross
  return {}


@gin.configurable(denylist=["problem", "model", "batch_size", "seed"])
def precise_batch_norm(problem, model, batch_size, seed=0, num_batches=200,
                       split="train", progress=False, warn_rtol=0.25):
  """The training loop's end-of-training hook: precise BN, then a check.

  Recomputes the model's BN moving statistics (`update_statistics`) over
  `min(num_batches, batches in one epoch)` shuffled batches of `split` (no
  weight update); then warns if inference-mode metrics still differ grossly
  from training-mode ones on a batch (`warn_if_inference_differs`).

  Args:
    problem: the trained `Problem`.
    model: its model (BN statistics are changed in place).
    batch_size: the training batch size (statistics are those of batches of
      this size, as in training).
    seed: training base seed; the pass shuffles with `seed + SEED_OFFSET`.
    num_batches: batches to average over (detectron2's default, 200); 0
      turns precise BN off. At most one epoch is read.
    split: the split whose batches are used.
    progress: show a progress bar.
    warn_rtol: see `warn_if_inference_differs`.

  Returns:
    The number of batches used (int), 0 if off or the model has no BN layer.
  """
  if not num_batches or not batch_norm_layers(model):
    return 0
  data = problem.dataset(split, batch_size, shuffle=True,
                         seed=seed + SEED_OFFSET)
  cardinality = int(data.cardinality())
  if cardinality > 0:
    num_batches = min(int(num_batches), cardinality)
  used = update_statistics(model, data, int(num_batches), progress=progress)
  logging.info("precise BN: moving statistics of %d BatchNormalization layers "
               "recomputed over %d %s batches", len(batch_norm_layers(model)),
               used, split)
  warn_if_inference_differs(problem, model, data, rtol=warn_rtol,
                            where="after precise BN")
  return used
