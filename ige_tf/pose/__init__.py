"""Pose lifting (paper section 5). `ige_tf.pose.Lifter` is
`ige_tf.pose.lifter.Lifter` (imported on first use: importing a pose
submodule stays light)."""


def __getattr__(name):
  if name == "Lifter":
    from ige_tf.pose.lifter import Lifter  # pylint: disable=import-outside-toplevel
    return Lifter
  raise AttributeError(f"module 'ige_tf.pose' has no attribute {name!r}")
