"""The IGE pose energy: feature sizes and finiteness where a naive one fails."""
import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import UnrolledSGD
from ige_tf.pose import energy as energy_lib
from ige_tf.pose import skeleton

# Human3.6M-like distortion (subject 9, camera 1).
K = np.array([-0.2071, 0.2478, -0.0031], np.float32)
P = np.array([-0.00142, -0.00098], np.float32)


def test_pose_feature_sizes_are_the_papers_pairwise_counts():
  # E_x sees all pairs of 16 projected + 16 observed joints, E_y all pairs of
  # the 16 estimated joints (paper eqs. 6-8).
  layer = energy_lib.PoseEnergy()
  layer.build((None, 16, 3), {"pose_2d": (None, 16, 2),
                              "distortion": (None, 5)})
  assert layer.reprojection.hidden_layers[0].kernel.shape == (32 * 31 // 2, 64)
  assert layer.feasibility.hidden_layers[0].kernel.shape == (16 * 15 // 2, 64)


def adversarial_estimates():
  """Camera-frame estimates that break a naive energy: `[6, 16, 3]`."""
  rng = np.random.default_rng(0)
  base = rng.normal(scale=0.3, size=(16, 3)) + [0, 0, 4.0]
  cases = [base.copy() for _ in range(6)]
  cases[0][:, 2] = 0.0                               # every joint at depth 0
  cases[1][:, 2] = -2.0                              # behind the camera
  cases[2][:, 2] = np.linspace(-1, 1, 16)            # crossing z = 0
  hips = skeleton.H36M16_HIPS
  cases[3][hips[1]] = cases[3][hips[0]]              # coincident hips
  cases[4][:] = [0.0, 0.0, 0.0]                      # all joints at the origin
  cases[5][hips[1]] = cases[5][hips[0]]
  cases[5][:, 2] = 1e-7                              # both at once
  return np.stack(cases).astype(np.float32)


def _context(batch):
  rng = np.random.default_rng(3)
  return {"pose_2d": tf.constant(rng.normal(scale=0.1, size=(batch, 16, 2)),
                                 tf.float32),
          "distortion": tf.constant(np.tile(np.concatenate([K, P]),
                                            (batch, 1)), tf.float32)}


def test_energy_and_its_gradients_are_finite_for_adversarial_estimates():
  keras.utils.set_random_seed(0)
  # A steep energy (output kernel not scaled down) to stress the guards.
  energy = energy_lib.PoseEnergy(kernel_scale=1.0)
  y = tf.constant(adversarial_estimates())
  context = _context(len(y))
  with tf.GradientTape() as outer:
    outer.watch(y)
    with tf.GradientTape() as inner:
      inner.watch(y)
      values = energy(y, context)
      total = tf.reduce_sum(values)
    grad = inner.gradient(total, y)
    second = tf.reduce_sum(tf.square(grad))
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
  hessian_terms = outer.gradient(second, [y] + energy.trainable_variables)
  for g in hessian_terms:
    assert np.all(np.isfinite(g))


def test_unrolled_steps_and_outer_gradients_stay_finite():
  # lr * clip = 1 m per coordinate per step: steps cross z = 0 and can bring
  # the hips together; values and all outer gradients must stay finite.
  keras.utils.set_random_seed(1)
  energy = energy_lib.PoseEnergy(kernel_scale=1.0)
  inner = UnrolledSGD(
      energy, 6, learning_rate=1.0, momentum=0.1, clip_value=1.0,
      learn_learning_rate=True, learn_momentum=True, learn_clip_value=True)
  initial = tf.constant(adversarial_estimates())
  context = _context(len(initial))
  with tf.GradientTape() as tape:
    tape.watch(initial)
    out = inner(initial, context, return_diagnostics=True)
    loss = tf.reduce_sum(tf.square(out["steps"]))
  assert all(np.all(np.isfinite(out[k])) for k in out)
  moved = np.abs(out["steps"][-1] - out["steps"][0]).max()
  assert moved > 0.5  # the steep energy really moves the estimate
  grads = tape.gradient(loss, [initial] + inner.trainable_variables)
  assert len(grads) == 1 + 3 + 8  # initial, lr/mu/clip, two 2-layer MLPs
  for g in grads:
    assert g is not None and np.all(np.isfinite(g))
