"""The shipped pose lifters' architectures as Python builders, for the
benchmarks that time them (bench_pose_models.py, bench_lifter_latency.py).

Each builder is a `model_fn` as `PoseProblem` takes it:
`build(statistics=None) -> keras.Model` (statistics: the standardization
dict of `PoseProblem.statistics`, or None for unit statistics).
"""
from ige_tf.pose import models


def b1024_2(statistics=None):
  """Martinez et al.'s baseline: 2 residual blocks of 1024 units."""
  return models.baseline_lifter(units=1024, num_blocks=2, max_norm=1.0,
                                statistics=statistics)


def b128_1(statistics=None):
  """The small baseline: 1 residual block of 128 units (IGE's initial
  estimate)."""
  return models.baseline_lifter(units=128, num_blocks=1, statistics=statistics)


def ige(num_steps):
  """The builder of IGE-`num_steps`: `num_steps` inner steps from a b128-1
  initial estimate."""
  def build(statistics=None):
    return models.ige_lifter(num_steps=num_steps, initial_estimate_fn=b128_1,
                             statistics=statistics)
  return build
