"""`tf.distribute` strategy selection, by name (set from gin)."""
import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def get_strategy(name="default", devices=None):
  """Returns a `tf.distribute.Strategy`.

  Args:
    name: "default" (no distribution, current device), "mirrored"
      (`MirroredStrategy` over `devices`, default all GPUs or the CPU), or
      "multi_worker" (`MultiWorkerMirroredStrategy`, cluster from the
      `TF_CONFIG` environment variable).
    devices: optional device names for "mirrored".
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError(
          "strategy 'multi_worker' needs the TF_CONFIG environment variable "
          "describing the cluster")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
      raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def split_cpu(num_devices):
  """Splits the physical CPU into `num_devices` logical devices.

  Must run before TensorFlow initializes its devices. Lets a machine without
  accelerators exercise `MirroredStrategy` with several replicas.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
