"""Keras' global dtype policy, set for a block and put back after it."""
import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name):
  """Sets Keras' global dtype policy to `name` (e.g. "mixed_float16",
  "float32"; None leaves it) for the block, and puts the previous policy
  back on exit, also when the block raises. Layers built inside the block
  take the policy (Keras layers read it when they are created)."""
  previous = keras.mixed_precision.global_policy()
  if name is not None:
    keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)
