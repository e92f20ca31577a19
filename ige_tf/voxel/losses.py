"""Per-example outer losses for voxel occupancy (paper 6.2, eqs. 11 and 12).

Both map labels `[B, R, R, R]` (occupancy in {0, 1}, soft labels allowed) and
predictions `[B, R, R, R]` to a per-example loss `[B]`, so they plug into
`ige_tf.core.MultiStepLoss`. Predictions are logits by default
(`from_logits=True`; the IGE and baseline models output logits) or
occupancy probabilities in [0, 1].

Sums form: both losses are a small function of a few per-example sums of
elementwise terms, `loss = loss_from_statistics([sum_v term_k(y_v, p_v)]_k,
label_statistics(y))`, the second argument holding sums of the labels alone.
The loss classes expose that form (`elementwise_statistics`,
`label_statistics`, `loss_from_statistics`), so that a fused kernel over the grid
(`ige_tf.voxel.unroll`) can take the sums and the loss gradient with
respect to the predictions without building any grid-sized intermediate.
"""
import gin
import keras
import tensorflow as tf

_PROBABILITY_EPSILON = 1e-7


def sum_per_example(values):
  """`values [B, ...]` summed over all but the batch axis: `[B]`.

  For float32/float64 values of rank >= 2 with a static minor axis m the
  sum is a matrix product, `reshape(values, [-1, m]) @ ones [m, 1]`, then a
  sum of the `[B, N / m]` partial sums. Same values as `tf.reduce_sum` over
  the axes to rounding (tested equal in float64, with the gradient) and
  device-agnostic, but under XLA on CPU it reads the elementwise producer
  of `values` inside the product, where a `reduce_sum` over a whole grid
  materializes its operand first (one grid-sized temporary per sum) and
  costs 1.7-2.6x the CPU time (bench/bench_voxel_primitives.py,
  docs/benchmarks.md "Primitives on XLA"); its float32 rounding is also
  smaller. Other dtypes (integers, and float16/bfloat16, whose reductions
  accumulate in float32), empty examples and shapes not static beyond the
  batch axis take `tf.reduce_sum`.

  Args:
    values: `[B, ...]` tensor.

  Returns:
    `[B]` tensor of the same dtype.
  """
  values = tf.convert_to_tensor(values)
  inner = values.shape[1:]
  if (len(inner) < 1 or not inner.is_fully_defined()
      or inner.num_elements() == 0
      or values.dtype not in (tf.float32, tf.float64)):
    return tf.reduce_sum(values, axis=tf.range(1, tf.rank(values)))
  minor = inner[-1]
  partial = tf.reshape(values, [-1, minor]) @ tf.ones([minor, 1],
                                                       values.dtype)
  return tf.reduce_sum(
      tf.reshape(partial, [-1, inner.num_elements() // minor]), axis=1)


def focal_cross_entropy(labels, predictions, alpha=0.0, gamma=0.0,
                        from_logits=True):
  """α-balanced focal cross-entropy, paper eq. 11, summed over voxels.

      loss = -sum_v [y_v (1 - p_v)^γ (1 + α) log p_v
                     + (1 - y_v) p_v^γ (1 - α) log(1 - p_v)]

  `α = γ = 0` is plain cross-entropy (summed over voxels). From logits z the
  terms are evaluated stably as `log p = -softplus(-z)`,
  `log(1 - p) = -softplus(z)`, `p^γ = exp(-γ softplus(-z))`,
  `(1 - p)^γ = exp(-γ softplus(z))`; from probabilities p is clipped to
  `[1e-7, 1 - 1e-7]`.

  Args:
    labels: float `[B, R, R, R]` occupancy in [0, 1].
    predictions: float `[B, R, R, R]` logits (or probabilities).
    alpha: float α in (-1, 1); α > 0 weights occupied voxels more.
    gamma: float γ >= 0; γ > 0 down-weights easy voxels.
    from_logits: whether `predictions` are logits.

  Returns:
    float `[B]` loss per example.
  """
  predictions = tf.convert_to_tensor(predictions)
  labels = tf.cast(labels, predictions.dtype)
  return sum_per_example(_focal_terms(labels, predictions, alpha, gamma,
                                       from_logits))


def _focal_terms(labels, predictions, alpha, gamma, from_logits):
  """The elementwise terms of `focal_cross_entropy` (float, shape of
  `predictions`); `labels` of the same dtype."""
  if from_logits:
    neg_log_p = tf.math.softplus(-predictions)
    neg_log_not_p = tf.math.softplus(predictions)
  else:
    p = tf.clip_by_value(predictions, _PROBABILITY_EPSILON,
                         1.0 - _PROBABILITY_EPSILON)
    neg_log_p = -tf.math.log(p)
    neg_log_not_p = -tf.math.log1p(-p)
  positive = labels * (1.0 + alpha) * neg_log_p
  negative = (1.0 - labels) * (1.0 - alpha) * neg_log_not_p
  if gamma:
    positive *= tf.exp(-gamma * neg_log_not_p)   # (1 - p)^γ
    negative *= tf.exp(-gamma * neg_log_p)       # p^γ
  return positive + negative


def _sigmoid_sums(labels, logits):
  """Per-example `(sum_v p_v y_v, sum_v p_v)` with `p = sigmoid(logits)`.

  A `tf.custom_gradient` that keeps only its inputs for the backward pass
  (where `p` is recomputed) instead of `p` and the products (forward and
  gradients are XLA kernels, below): at high
  resolution, with one loss per inner step, those would hold several
  `[B, R, R, R]` grids per step. The gradient with respect to the logits is
  `(dI y + dS) p (1 - p)` for upstream gradients dI, dS of the two sums.

  Args:
    labels: float `[B, ...]`, same dtype as `logits`.
    logits: float `[B, ...]`.

  Returns:
    Two float `[B]` tensors.
  """

  @tf.custom_gradient
  def sums(labels, logits):
    result = _sigmoid_sums_forward(labels, logits)

    def grad_fn(d_intersection, d_total):
      # Two kernels, so that the labels' gradient (rarely wanted) is pruned
      # from the graph when unused.
      return (_sigmoid_sums_labels_grad(logits, d_intersection),
              _sigmoid_sums_logits_grad(labels, logits, d_intersection,
                                        d_total))

    return result, grad_fn

  return sums(labels, logits)


def per_example_shape(values, like):
  """`values [B]` reshaped to `[B, 1, ..., 1]`, broadcast against `like`."""
  return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


# Each of the following is one XLA cluster (CPU and GPU): the sigmoid, the
# products and the per-example sums fuse into loops over the grid, so the
# forward pass creates no grid-sized tensor and each gradient exactly one.
@tf.function(jit_compile=True, autograph=False)
def _sigmoid_sums_forward(labels, logits):
  p = tf.sigmoid(logits)
  return sum_per_example(p * labels), sum_per_example(p)


@tf.function(jit_compile=True, autograph=False)
def _sigmoid_sums_logits_grad(labels, logits, d_intersection, d_total):
  # d_p p (1 - p), with d_p = dI y + dS.
  return tf.raw_ops.SigmoidGrad(
      y=tf.sigmoid(logits),
      dy=per_example_shape(d_intersection, logits) * labels
      + per_example_shape(d_total, logits))


@tf.function(jit_compile=True, autograph=False)
def _sigmoid_sums_labels_grad(logits, d_intersection):
  return per_example_shape(d_intersection, logits) * tf.sigmoid(logits)


def continuous_iou_loss(labels, predictions, from_logits=True, epsilon=1e-6):
  """Continuous intersection-over-union loss, paper eq. 12.

      loss = 1 - (p · y + ε) / (||p + y||_1 - p · y + ε)

  with p = sigmoid(logits) (or the given probabilities) and sums over voxels.
  ε only matters when both grids are empty (then the loss is 0).

  Args:
    labels: float `[B, R, R, R]` occupancy in [0, 1].
    predictions: float `[B, R, R, R]` logits (or probabilities).
    from_logits: whether `predictions` are logits.
    epsilon: float ε.

  Returns:
    float `[B]` loss per example, in [0, 1].
  """
  predictions = tf.convert_to_tensor(predictions)
  labels = tf.cast(labels, predictions.dtype)
  if from_logits:
    intersection, total = _sigmoid_sums(labels, predictions)
  else:
    intersection = sum_per_example(predictions * labels)
    total = sum_per_example(predictions)
  return _iou_from_sums(intersection, total, sum_per_example(labels),
                        epsilon)


def _iou_from_sums(intersection, total, label_total, epsilon):
  """Eq. 12 from the per-example sums `p · y`, `sum p`, `sum y` (`[B]`)."""
  union = total + label_total - intersection
  return 1.0 - (intersection + epsilon) / (union + epsilon)


@keras.saving.register_keras_serializable(package="ige_tf")
class FocalCrossEntropy:
  """Callable form of `focal_cross_entropy` with a Keras config.

  Args:
    alpha: float α (0.7 in the paper's reweighted variant).
    gamma: float γ (2 in the paper's focal variant).
    from_logits: whether predictions are logits.

  Call: `(labels [B, R, R, R], predictions [B, R, R, R]) -> [B]`.
  """

  def __init__(self, alpha=0.0, gamma=0.0, from_logits=True):
    self.alpha = float(alpha)
    self.gamma = float(gamma)
    self.from_logits = bool(from_logits)
    if not -1.0 < self.alpha < 1.0:
      raise ValueError(f"alpha must lie in (-1, 1), got {alpha}")
    if self.gamma < 0:
      raise ValueError(f"gamma must be >= 0, got {gamma}")

  def __call__(self, labels, predictions):
    return focal_cross_entropy(labels, predictions, self.alpha, self.gamma,
                               self.from_logits)

  def elementwise_statistics(self, labels, predictions):
    """Sums form (module docstring): one term, the focal loss per voxel.

    Args:
      labels, predictions: float `[B, ...]`, same dtype.

    Returns:
      Tuple of one float `[B, ...]` tensor.
    """
    return (_focal_terms(labels, predictions, self.alpha, self.gamma,
                         self.from_logits),)

  def label_statistics(self, labels):
    """Sums form: per-example sums of the labels alone (none)."""
    del labels
    return ()

  def loss_from_statistics(self, sums, label_sums):
    """`[B]` loss from the per-example sums of `elementwise_statistics` and
    `label_statistics`."""
    del label_sums
    return sums[0]

  def get_config(self):
    return dict(alpha=self.alpha, gamma=self.gamma,
                from_logits=self.from_logits)

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@keras.saving.register_keras_serializable(package="ige_tf")
class ContinuousIoU:
  """Callable form of `continuous_iou_loss` with a Keras config.

  Args:
    from_logits: whether predictions are logits.
    epsilon: float ε of eq. 12's guard.

  Call: `(labels [B, R, R, R], predictions [B, R, R, R]) -> [B]`.
  """

  def __init__(self, from_logits=True, epsilon=1e-6):
    self.from_logits = bool(from_logits)
    self.epsilon = float(epsilon)

  def __call__(self, labels, predictions):
    return continuous_iou_loss(labels, predictions, self.from_logits,
                               self.epsilon)

  def elementwise_statistics(self, labels, predictions):
    """Sums form (module docstring): `(p y, p)` per voxel.

    Args:
      labels, predictions: float `[B, ...]`, same dtype.

    Returns:
      Tuple of two float `[B, ...]` tensors.
    """
    p = tf.sigmoid(predictions) if self.from_logits else predictions
    return p * labels, p

  def label_statistics(self, labels):
    """Sums form: `(sum y,)`, float `[B]` (labels' dtype if floating,
    else float32: exact for 0/1 counts up to 2^24 voxels)."""
    labels = tf.convert_to_tensor(labels)
    dtype = labels.dtype if labels.dtype.is_floating else tf.float32
    return (sum_per_example(tf.cast(labels, dtype)),)

  def loss_from_statistics(self, sums, label_sums):
    """`[B]` loss from the per-example sums of `elementwise_statistics` and
    `label_statistics`."""
    intersection, total = sums
    label_total = tf.cast(label_sums[0], intersection.dtype)
    return _iou_from_sums(intersection, total, label_total, self.epsilon)

  def get_config(self):
    return dict(from_logits=self.from_logits, epsilon=self.epsilon)

  @classmethod
  def from_config(cls, config):
    return cls(**config)


VOXEL_LOSSES = ("continuous_iou", "focal_cross_entropy")


@gin.configurable
def voxel_loss(name="continuous_iou", alpha=0.0, gamma=0.0, from_logits=True):
  """Builds a per-example voxel loss for `MultiStepLoss` (gin-configurable).

  Args:
    name: "continuous_iou" (eq. 12) or "focal_cross_entropy" (eq. 11).
    alpha: α of eq. 11 (ignored for IoU).
    gamma: γ of eq. 11 (ignored for IoU).
    from_logits: whether model predictions are logits (True for the models
      of `ige_tf.voxel.models`).

  Returns:
    `ContinuousIoU` or `FocalCrossEntropy` instance.
  """
  if name == "continuous_iou":
    return ContinuousIoU(from_logits=from_logits)
  if name == "focal_cross_entropy":
    return FocalCrossEntropy(alpha=alpha, gamma=gamma, from_logits=from_logits)
  raise ValueError(f"Unknown voxel loss {name!r}; expected one of "
                   f"{VOXEL_LOSSES}")
