"""`VoxelProblem`: single-view voxel reconstruction for the generic loop.

Data: records written by `bin/prepare_shapenet.py` or `bin/import_r2n2.py`
(`RECORDS_DIR`), read by `ige_tf.voxel.data.pipeline.voxel_dataset`. Model:
`models.ige_voxel_model` (IGE-Net, frustum grid) or
`models.baseline_voxel_model` (3D deconvolution, frustum or world grid),
chosen with gin `VoxelProblem.model_fn`. Loss: `MultiStepLoss` (weights
0.9^(T-t)) of a per-example loss from `losses.voxel_loss` (continuous IoU,
eq. 12, by default; focal cross-entropy, eq. 11, with α and γ).

Metrics (`metrics.json`, lists over steps 0..T):
  * `iou`: IoU at the training resolution R, occupancy probability > 0.5,
    against the grid the model is trained on (`grid`: frustum or world).
  * `iou_<Q>` (optional, `eval_resolution`): the predictions trilinearly
    upsampled from R to Q and thresholded at 0.5 (`metrics.upsampled_iou`),
    against the records' Q^3 grid. Q = 256 reproduces Table 5. The name
    always carries the resolution actually used: with
    `eval_resolution="highest"`, Q is the highest resolution the records
    store (e.g. `iou_128` when no 256^3 grids were prepared), and only
    resolutions above R. An explicit `eval_resolution` equal to R (Table 5's
    models trained at 256^3) writes `iou_<R>`, equal to `iou`.
  * `iou_per_category`, `iou_<Q>_per_category`: per synset (the loop's
    grouping, `groups`); `finalize_metrics` adds `iou_class_mean` (and
    `iou_<Q>_class_mean`), the unweighted mean over categories ("mean values
    are calculated by class", Table 3), and `categories` (synset -> name).

Serving (`bin/export.py`): `image` float32 `[B, S, S, 3]` in [0, 1] ->
`{"final": [B, R, R, R], "steps": [T+1, B, R, R, R]}` occupancy
PROBABILITIES (the sigmoid of the model's logits).
"""
import math

from absl import logging
import gin
import keras
import tensorflow as tf

from ige_tf.core import MultiStepLoss, step_weights
from ige_tf.train.problem import Problem
from ige_tf.voxel import losses as voxel_losses
from ige_tf.voxel import metrics as voxel_metrics
from ige_tf.voxel import models
from ige_tf.voxel import unroll
from ige_tf.voxel.data import pipeline
from ige_tf.voxel.mesh import SYNSETS

GRIDS = ("frustum", "world")
HIGHEST = "highest"


def _high_key(grid, resolution):
  return f"{grid}_{resolution}"


@gin.configurable
class VoxelProblem(Problem):
  """Single-view reconstruction on prepared voxel records.

  Args:
    records_dir: output of `bin/prepare_shapenet.py` / `bin/import_r2n2.py`
      (`RECORDS_DIR`); only read by `dataset` (a model can be rebuilt and
      restored without it).
    model_fn: the model builder, `models.ige_voxel_model` or
      `models.baseline_voxel_model` (configured by gin), or any callable
      `model_fn(resolution=R, image_size=S, grid=grid) -> keras.Model` with
      the outputs of those builders; a builder refuses a grid it cannot
      model (IGE-Net: frustum only). A run rebuilt by
      `ige_tf.train.run.open_run` gets its builder's bindings from the run's
      record.
    resolution: R, the training grid resolution (stored in the records).
    grid: "frustum" (paper 6.1; IGE-Net needs it) or "world" (world-aligned
      baselines of Table 3).
    loss_fn: per-example loss `(labels [B, R, R, R], logits [B, R, R, R]) ->
      [B]`; default `losses.voxel_loss()` (continuous IoU unless gin
      configures `voxel_loss`).
    step_decay: weight ratio of consecutive steps in the multi-step loss.
    eval_resolution: None (no upsampled IoU), "highest" (highest resolution
      of `grid` stored in the records, if above R) or an int Q (a multiple
      of R, R itself included; an error if the records lack it).
    image_size: S of the model input; must match the records.
    shuffle_buffer: training shuffle buffer (examples).
    threshold: occupancy probability threshold of the IoU metrics.
    batch_norm_momentum: if set, the momentum of every BatchNormalization
      layer's moving statistics (Keras' MobileNetV2 uses 0.999, which needs
      thousands of steps before inference-mode statistics are usable; short
      runs such as the demo use 0.9). None keeps the architecture's values.
  """

  def __init__(self, records_dir=gin.REQUIRED, model_fn=gin.REQUIRED,
               resolution=32, grid="frustum", loss_fn=None, step_decay=0.9,
               eval_resolution=HIGHEST, image_size=128, shuffle_buffer=1024,
               threshold=0.5, batch_norm_momentum=None):
    if grid not in GRIDS:
      raise ValueError(f"VoxelProblem.grid must be one of {GRIDS}, got {grid!r}")
    if not (eval_resolution is None or eval_resolution == HIGHEST
            or (isinstance(eval_resolution, int) and eval_resolution > 0)):
      raise ValueError("VoxelProblem.eval_resolution must be None, "
                       f"'{HIGHEST}' or a positive int, got {eval_resolution!r}")
    self.records_dir = records_dir
    self.model_fn = model_fn
    self.resolution = int(resolution)
    self.grid = grid
    self.step_decay = float(step_decay)
    self.loss_fn = loss_fn if loss_fn is not None else voxel_losses.voxel_loss()
    self._loss = MultiStepLoss(self.loss_fn, decay=self.step_decay)
    self.eval_resolution = eval_resolution
    self.image_size = int(image_size)
    self.shuffle_buffer = int(shuffle_buffer)
    self.threshold = float(threshold)
    self.batch_norm_momentum = batch_norm_momentum
    self._high_resolution = None  # Resolved from the manifest in `dataset`.

  # -- runs -----------------------------------------------------------------

  def rebuild_bindings(self):
    """A trained model's checkpoint holds every encoder weight: rebuilding it
    (evaluate, export, visualize, model_stats) must not need the ImageNet
    weights file its training started from (`Problem`)."""
    return ["ige_voxel_model.encoder_weights = None",
            "baseline_voxel_model.encoder_weights = None"]

  def evaluation_bindings(self):
    """Data location and evaluation-time settings (`Problem`)."""
    return ["VoxelProblem.records_dir", "VoxelProblem.shuffle_buffer",
            "VoxelProblem.eval_resolution"]

  # -- data -----------------------------------------------------------------

  def _manifest_parameters(self):
    manifest = pipeline.read_manifest(self.records_dir)
    params = manifest.get("parameters", {})
    stored = int(params.get("image_size", 0) or 0)
    if stored and stored != self.image_size:
      raise ValueError(
          f"{self.records_dir}: records hold {stored}x{stored} images but "
          f"VoxelProblem.image_size is {self.image_size}")
    return manifest, params

  def high_resolution(self):
    """Q of the upsampled IoU metric (int), or None when it is not computed.

    Raises:
      ValueError: an explicit `eval_resolution` the records do not store, or
        one that is not a multiple of R (naming the records directory).
    """
    if self.eval_resolution is None:
      return None
    _, params = self._manifest_parameters()
    key = "resolutions" if self.grid == "frustum" else "world_resolutions"
    stored = sorted(int(r) for r in params.get(key, []))
    if self.eval_resolution == HIGHEST:
      candidates = [r for r in stored
                    if r > self.resolution and r % self.resolution == 0]
      return candidates[-1] if candidates else None
    q = int(self.eval_resolution)
    if q % self.resolution:
      raise ValueError(f"VoxelProblem.eval_resolution {q} is not a multiple "
                       f"of the training resolution {self.resolution}")
    if q not in stored:
      raise ValueError(f"{self.records_dir}: no {self.grid} grids at R={q} "
                       f"for the upsampled IoU; stored resolutions: {stored}")
    # q == R (Table 5's models trained at 256^3): iou_<q> equals `iou`, but
    # is still written so that every Table 5 run has its iou_256.
    return q

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    """`(features, labels)` batches, see `pipeline.voxel_dataset`.

    `labels[grid]` is float32 `[B, R, R, R]`; evaluation splits (shuffle
    False) also carry `labels["<grid>_<Q>"]` bool `[B, Q, Q, Q]` when the
    upsampled IoU is computed. The cardinality is set from the manifest.
    """
    manifest, _ = self._manifest_parameters()
    splits = manifest.get("splits", {})
    if split not in splits:
      raise ValueError(f"{self.records_dir}: no split {split!r}; available: "
                       f"{sorted(splits)}")
    num_examples = int(splits[split]["num_examples"])
    common = dict(batch_size=batch_size, grids=(self.grid,),
                  deterministic=None if shuffle else True)
    data = pipeline.voxel_dataset(
        self.records_dir, split, self.resolution, shuffle=shuffle, seed=seed,
        shuffle_buffer=self.shuffle_buffer, **common)
    high = None if shuffle else self.high_resolution()
    if high == self.resolution:
      key, grid = _high_key(self.grid, high), self.grid

      def alias(features, labels):
        labels = dict(labels)
        labels[key] = labels[grid] > 0.5
        return features, labels

      data = data.map(alias)
    elif high is not None:
      # Same files, same order (no shuffle): zip the Q^3 labels alongside.
      high_data = pipeline.voxel_dataset(
          self.records_dir, split, high, voxel_dtype=tf.uint8, prefetch=None,
          **common)
      key = _high_key(self.grid, high)
      grid = self.grid

      def merge(low, high_batch):
        features, labels = low
        labels = dict(labels)
        labels[key] = high_batch[1][grid] > 0
        return features, labels

      data = tf.data.Dataset.zip((data, high_data)).map(merge)
    return data.apply(tf.data.experimental.assert_cardinality(
        math.ceil(num_examples / batch_size)))

  # -- model ----------------------------------------------------------------

  def build_model(self):
    """`model_fn(resolution=R, image_size=S, grid=grid)`, with
    `batch_norm_momentum` applied."""
    model = self.model_fn(resolution=self.resolution,
                          image_size=self.image_size, grid=self.grid)
    if self.batch_norm_momentum is not None:
      for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if isinstance(layer, keras.layers.BatchNormalization):
          layer.momentum = float(self.batch_norm_momentum)
    return model

  def loss(self, labels, outputs):
    return self._loss(labels[self.grid], outputs["steps"])

  def training_loss(self, model, features, labels):
    """The training forward pass and loss; folded into the unroll for IGE.

    For an IGE model whose inner optimizer recomputes its steps
    (`recompute_steps=True`): if the energy is a `FrustumEnergy`, the
    optimizer has no momentum and the loss has a sums form (what
    `ige_voxel_model` and `voxel_loss` build), the whole inner loop runs as
    the fused unroll (`ige_tf.voxel.unroll`: hand-written adjoint, only the
    initial estimate kept as a grid); otherwise the per-example loss of
    every step is taken inside the recomputed unroll
    (`UnrolledSGD(step_loss=...)`; the reason is logged once). Either way the
    `[T+1, B, R, R, R]` stack of iterates and its gradient are never
    materialized, and the value and gradients equal those of
    `loss(labels, model(features, training=True))` (tested). Other models
    take that default path.

    Returns:
      `(loss, outputs)`: float32 scalar and `{"step_loss": [T+1, B],
      "energy": [T, B], "grad_norm": [T, B]}` when folded, the model's
      outputs otherwise.
    """
    optimizer, inputs_fn = models.inner_optimizer_inputs(model)
    if optimizer is None or not optimizer.recompute_steps:
      return super().training_loss(model, features, labels)
    targets = labels[self.grid]
    initial, context = inputs_fn(features, training=True)
    reason = unroll.unsupported_reason(optimizer, self.loss_fn)
    if reason is None:
      outputs = unroll.fused_unroll(optimizer, initial, context, targets,
                                    self.loss_fn)
    else:
      logging.log_first_n(
          logging.INFO, "VoxelProblem.training_loss: not the fused unroll "
          "(%s); folding the loss into UnrolledSGD's recomputed steps", 1,
          reason)
      outputs = optimizer(initial, context, training=True,
                          return_diagnostics=True,
                          step_loss=lambda t, y: self.loss_fn(targets, y))
    per_step = tf.reduce_mean(tf.cast(outputs["step_loss"], tf.float32),
                              axis=1)
    weights = step_weights(optimizer.num_steps, self.step_decay)
    return tf.reduce_sum(weights * per_step), outputs

  def metrics(self, labels, outputs):
    steps = outputs["steps"]
    values = {"iou": voxel_metrics.voxel_iou(
        labels[self.grid], steps, threshold=self.threshold)}
    for key in labels:
      if key.startswith(self.grid + "_"):
        q = key.split("_")[-1]
        if labels[key].shape[-1] == steps.shape[-1]:  # Q = R: no upsampling.
          values[f"iou_{q}"] = values["iou"]
        else:
          values[f"iou_{q}"] = voxel_metrics.upsampled_iou(
              labels[key], steps, threshold=self.threshold)
    return values

  def groups(self, labels):
    return {"category": labels["synset"]}

  def finalize_metrics(self, metrics):
    metrics = dict(metrics)
    for name in list(metrics):
      if name.endswith("_per_category"):
        base = name[:-len("_per_category")]
        metrics[f"{base}_class_mean"] = voxel_metrics.class_mean(metrics[name])
    seen = metrics.get("iou_per_category", {})
    metrics["categories"] = {s: SYNSETS.get(s, s) for s in sorted(seen)}
    return metrics

  def serving_function(self, model):
    size = self.image_size

    def serve(image):
      steps = tf.sigmoid(model({"image": image}, training=False)["steps"])
      return {"final": steps[-1], "steps": steps}

    return serve, [tf.TensorSpec([None, size, size, 3], tf.float32,
                                 name="image")]

  def component_params(self, model):
    counts = models.component_params(model)
    counts.pop("total", None)
    return counts

  def multiply_adds(self, model):
    return models.multiply_adds(model)
