"""`PoseProblem`: Human3.6M 2D-to-3D lifting for the generic training loop.

Data: records written by `bin/prepare_h36m.py` (`RECORDS_DIR`), read by
`ige_tf.pose.data.pipeline`. Model: `models.baseline_lifter` or
`models.ige_lifter` (gin `PoseProblem.model_fn`). Losses:

  * "standardized_mse" (Martinez et al., for baselines): mean squared error
    between the network's standardized root-relative output and the
    standardized root-relative target (training-set statistics).
  * "scaled_l2" (paper eq. 9, for IGE): per step t, `|k y_t - y|_2` over the
    16 camera-frame joints with the optimal scale k, weighted 0.9^(T-t)
    (`MultiStepLoss`).
  * "scaled_joint_distance" (the paper author's code, for the camera-frame
    baseline `baseline_paper.gin` and the IGE started from it): per step,
    the target divided by its pelvis' distance from the camera, the
    prediction scaled by the optimal k, the euclidean joint errors summed
    over the 16 joints; weighted 0.9^(T-t) as above (a baseline has T = 0).

Metrics (`metrics.json`, lists over steps 0..T; paper 5.3): `protocol1a_mm`,
`protocol2_mm`, `mpjpe_mm`, on 17 joints with the pelvis appended as the
midpoint of the hips (prediction and target alike), grouped per action.
"""

from absl import logging
import gin
import tensorflow as tf

from ige_tf.core import MultiStepLoss, find_inner_optimizer
from ige_tf.pose import camera
from ige_tf.pose import flops
from ige_tf.pose import geometry
from ige_tf.pose import metrics as pose_metrics
from ige_tf.pose import models
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline
from ige_tf.train.problem import Problem, count_trainable, serving_outputs

LOSS_TYPES = ("standardized_mse", "scaled_l2", "scaled_joint_distance")


def scaled_l2(target, prediction):
  """`|k prediction - target|_2` with the optimal scale k (paper eq. 9).

  Args:
    target: float32 `[B, J, 3]`.
    prediction: float32 `[B, J, 3]`.

  Returns:
    float32 `[B]`: the euclidean norm over all joints and coordinates.
  """
  prediction = tf.cast(prediction, tf.float32)
  aligned = geometry.scale_align(prediction, target)
  squared = tf.reduce_sum(tf.square(aligned - target), axis=[-2, -1])
  # The gradient of sqrt at 0 is infinite: smooth by (1e-6 m)^2.
  return tf.sqrt(squared + 1e-12)


def scaled_joint_distance(target, prediction):
  """Sum of joint errors after the optimal scale, target at unit distance.

  The original code's pose loss: `y = target / |pelvis(target)|` (pelvis =
  midpoint of the hips), `sum_j |k prediction_j - y_j|_2` with the optimal
  k of `|k prediction - y|^2`. Invariant to the scale of the prediction;
  every example counts alike whatever its distance from the camera.

  Args:
    target: float32 `[B, 16, 3]` H36M16, camera frame.
    prediction: float32 `[B, 16, 3]`.

  Returns:
    float32 `[B]`, in units of the target's pelvis distance.
  """
  prediction = tf.cast(prediction, tf.float32)
  target = tf.cast(target, tf.float32)
  pelvis = skeleton.add_pelvis(target)[:, 0]  # [B, 3]
  target = target / tf.norm(pelvis, axis=-1)[:, None, None]
  aligned = geometry.scale_align(prediction, target)
  squared = tf.reduce_sum(tf.square(aligned - target), axis=-1)  # [B, 16]
  # The gradient of sqrt at 0 is infinite: smooth by 1e-6 (squared 1e-12).
  return tf.reduce_sum(tf.sqrt(squared + 1e-12), axis=-1)


LOSS_FUNCTIONS = {"scaled_l2": scaled_l2,
                  "scaled_joint_distance": scaled_joint_distance}


@gin.configurable
class PoseProblem(Problem):
  """2D-to-3D human pose lifting on prepared Human3.6M records.

  Args:
    records_dir: output of `bin/prepare_h36m.py` (`RECORDS_DIR`).
    model_fn: `models.baseline_lifter` or `models.ige_lifter` (configured by
      gin); called as `model_fn(statistics=...)`.
    loss_type: one of `LOSS_TYPES` (module docstring).
    step_decay: weight ratio of consecutive steps in the multi-step loss.
    flip_augment: mirror training examples with probability 1/2.
    shuffle_buffer: examples in the training shuffle buffer.
    require_statistics: fail when `records_dir/statistics.json` is missing
      (set False to rebuild a trained model for restoring without data).
    in_memory: `pipeline.pose_dataset`'s: "auto" (in memory up to 2M
      examples, all of Human3.6M), True, or False (stream the shards; a
      multi-worker run then shards them by file where they allow).
  """

  def __init__(self, records_dir=gin.REQUIRED, model_fn=gin.REQUIRED,
               loss_type="scaled_l2", step_decay=0.9, flip_augment=False,
               shuffle_buffer=16384, require_statistics=True,
               in_memory="auto"):
    if loss_type not in LOSS_TYPES:
      raise ValueError(f"PoseProblem.loss_type must be one of {LOSS_TYPES}, "
                       f"got {loss_type!r}")
    self.records_dir = records_dir
    self.model_fn = model_fn
    self.loss_type = loss_type
    self.step_decay = float(step_decay)
    self.flip_augment = bool(flip_augment)
    self.shuffle_buffer = int(shuffle_buffer)
    self.require_statistics = bool(require_statistics)
    self.in_memory = in_memory
    self._multi_step = (None if loss_type == "standardized_mse" else
                        MultiStepLoss(LOSS_FUNCTIONS[loss_type],
                                      decay=self.step_decay))
    self._statistics = None
    self.last_model_stats = None

  # -- runs ------------------------------------------------------------------
  def rebuild_bindings(self):
    """A trained model's checkpoint holds its statistics and its initial
    estimate: rebuilding it needs neither the records' statistics.json nor
    INIT_MODEL_DIR."""
    return ["PoseProblem.require_statistics = False",
            "ige_lifter.init_model_dir = None"]

  def evaluation_bindings(self):
    """Data location, training-only and inference-only settings (`Problem`).

    `ige_lifter.safeguard` acts only at inference (the energy-monotone step
    check of `UnrolledSGD.monotone_inference`), so a trained run may be
    evaluated or lifted with it on or off.
    """
    return ["PoseProblem.records_dir", "PoseProblem.shuffle_buffer",
            "PoseProblem.require_statistics", "ige_lifter.init_model_dir",
            "ige_lifter.safeguard"]

  # -- data ------------------------------------------------------------------
  def statistics(self):
    """Training-set statistics (`pipeline.load_statistics`), or None.

    None only when `require_statistics` is False and there is no file.
    """
    if self._statistics is None:
      try:
        self._statistics = pipeline.load_statistics(self.records_dir, "train")
      except (FileNotFoundError, KeyError):
        if self.require_statistics:
          raise
        logging.info("No statistics in %s: the model keeps its restored "
                     "statistics.", self.records_dir)
        return None
    return self._statistics

  def dataset(self, split, batch_size, shuffle=False, seed=None):
    """Batches of `({"pose_2d", "distortion"}, {"pose_3d", "root_3d",
    "action"})`; shapes as in `ige_tf.pose.data.pipeline`."""
    if split == "validation":
      split = "test"  # Human3.6M protocol: no separate validation subjects
    data = pipeline.pose_dataset(
        self.records_dir, split, batch_size, shuffle=shuffle,
        flip_augment=self.flip_augment and split == "train",
        seed=seed if seed is not None else 0,
        shuffle_buffer=self.shuffle_buffer, in_memory=self.in_memory)

    def select(features, labels):
      return ({"pose_2d": features["pose_2d"],
               "distortion": features["distortion"]},
              {"pose_3d": labels["pose_3d"], "root_3d": labels["root_3d"],
               "action": labels["action"]})

    return data.map(select)

  # -- model -----------------------------------------------------------------
  def build_model(self):
    """Builds the model; records its statistics for `finalize_metrics`."""
    model = self.model_fn(statistics=self.statistics())
    self.last_model_stats = model_stats_of(self, model)
    return model

  # -- loss and metrics --------------------------------------------------------
  def loss(self, labels, outputs):
    if self.loss_type == "standardized_mse":
      if "standardized" not in outputs:
        raise ValueError("loss_type 'standardized_mse' needs a baseline model "
                         "(output 'standardized'); use 'scaled_l2' for IGE")
      stats = self.statistics()
      target = labels["pose_3d"] - labels["root_3d"][:, None, :]
      target = pipeline.standardize(target, stats["pose_3d_mean"],
                                    stats["pose_3d_std"])
      return tf.reduce_mean(tf.square(
          tf.cast(outputs["standardized"], tf.float32) - target))
    return self._multi_step(labels["pose_3d"], outputs["steps"])

  def metrics(self, labels, outputs):
    steps = outputs["steps"]
    target = labels["pose_3d"]
    return {name: tf.stack([fn(steps[t], target)
                            for t in range(steps.shape[0])])
            for name, fn in pose_metrics.METRICS.items()}

  def groups(self, labels):
    return {"action": labels["action"]}

  def finalize_metrics(self, metrics):
    if self.last_model_stats is not None:
      metrics = dict(metrics, model_stats=self.last_model_stats)
    return metrics

  # -- export ----------------------------------------------------------------
  def serving_function(self, model):
    """Raw inputs -> camera-frame 3D poses.

    Inputs (all float32): `pose_2d` `[B, 16, 2]` MPII16 pixels, `f` `[B, 2]`,
    `c` `[B, 2]` pixels, `k` `[B, 3]`, `p` `[B, 2]`. Outputs: `final`
    `[B, 16, 3]` and `steps` `[T+1, B, 16, 3]`, H36M16 joints, camera frame,
    metres.
    """
    signature = [
        tf.TensorSpec([None, 16, 2], tf.float32, name="pose_2d"),
        tf.TensorSpec([None, 2], tf.float32, name="f"),
        tf.TensorSpec([None, 2], tf.float32, name="c"),
        tf.TensorSpec([None, 3], tf.float32, name="k"),
        tf.TensorSpec([None, 2], tf.float32, name="p"),
    ]

    def serve(pose_2d, f, c, k, p):
      features = {"pose_2d": camera.normalize_pixels(pose_2d, f, c),
                  "distortion": tf.concat([k, p], axis=-1)}
      return serving_outputs(model(features, training=False))

    return serve, signature

  # -- model statistics --------------------------------------------------------
  def component_params(self, model):
    """`initial_estimate`, `energy`, `inner_optimizer` trainable counts."""
    inner = find_inner_optimizer(model)
    total = count_trainable(model)
    if inner is None:
      return {"initial_estimate": total, "energy": 0, "inner_optimizer": 0}
    energy = count_trainable(inner.energy)
    return {"initial_estimate": total - count_trainable(inner),
            "energy": energy,
            "inner_optimizer": count_trainable(inner) - energy}

  def multiply_adds(self, model):
    """Dense-layer multiply-adds per example at inference.

    Baseline: the sum of its dense kernels (batch norm folds into them at
    inference; biases, activations, the root-translation solve and the
    projection are not counted, as in the paper's Figure 4). IGE: the
    baseline plus, per inner step, twice the energy's dense kernels (one
    forward pass and one backward pass for the gradient with respect to the
    estimate, which costs the same multiply-adds).
    """
    baseline = flops.dense_multiply_adds(
        models.find_baseline(model).dense_layers())
    inner = find_inner_optimizer(model)
    if inner is None:
      return baseline
    energy = flops.dense_multiply_adds(inner.energy.dense_layers())
    return baseline + 2 * energy * inner.num_steps


def architecture(model):
  """What a pose model is: dict kind ("baseline" | "ige"), units, blocks,
  max_norm (of its baseline) and num_steps (0 for a baseline)."""
  baseline = models.find_baseline(model)
  inner = find_inner_optimizer(model)
  return {"kind": "baseline" if inner is None else "ige",
          "units": baseline.units, "blocks": baseline.num_blocks,
          "max_norm": baseline.max_norm,
          "num_steps": 0 if inner is None else inner.num_steps}


def model_stats_of(problem, model):
  """Statistics of a built model, as `evaluate` adds them to metrics.json.

  Returns:
    `{"trainable_params": {"initial_estimate", "energy", "inner_optimizer",
    "total"}, "multiply_adds": int, "architecture": architecture(model)}`.
  """
  params = problem.component_params(model)
  return {"trainable_params": dict(params, total=count_trainable(model)),
          "multiply_adds": int(problem.multiply_adds(model)),
          "architecture": architecture(model)}
