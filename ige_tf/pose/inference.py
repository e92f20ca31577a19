"""Running a trained pose lifter outside the training loop.

`load_lifter(path)` accepts either
  * a SavedModel written by `bin/export.py` (`<model_dir>/export`), or
  * a run directory (`--model_dir` of `bin/train.py`): the model is rebuilt
    from the run's own record (`ige_tf.train.run.open_run`) and its latest
    checkpoint restored exactly (no records and no INIT_MODEL_DIR needed),
and returns a `Lifter`: raw pixel keypoints and camera intrinsics in,
camera-frame 3D poses out, exactly the exported "serve" signature.
"""
import os

import numpy as np
import tensorflow as tf

from ige_tf.pose import models  # noqa: F401  (registers gin configurables)
from ige_tf.pose import problem as problem_lib
from ige_tf.train import run as run_lib

SERVING_INPUTS = ("pose_2d", "f", "c", "k", "p")


def is_saved_model(path):
  """Whether `path` is a SavedModel directory."""
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def restore_run(model_dir, gin_params=()):
  """`(problem, model)` of a pose run, latest checkpoint restored exactly.

  Rebuilt by `ige_tf.train.run.open_run` from the run's own record (no
  records and no INIT_MODEL_DIR needed); the caller's gin config is left as
  it was. `gin_params` may change evaluation-time settings only.

  Raises:
    ige_tf.train.run.RunError: not a run directory.
    TypeError: the run is not a pose run.
  """
  with run_lib.open_run(model_dir, gin_params=gin_params) as loaded:
    if not isinstance(loaded.problem, problem_lib.PoseProblem):
      raise TypeError(f"{model_dir}: not a pose run (problem "
                      f"{type(loaded.problem).__name__})")
    return loaded.problem, loaded.model


class Lifter:
  """Callable: raw 2D keypoints + intrinsics -> camera-frame 3D poses.

  Call with numpy arrays (float32 or float64)
    pose_2d `[B, 16, 2]` MPII16 pixels, f `[B, 2]`, c `[B, 2]` pixels,
    k `[B, 3]`, p `[B, 2]`
  and get a dict of numpy float32 arrays
    "final" `[B, 16, 3]`, "steps" `[T+1, B, 16, 3]`
  (H36M16 joints, camera frame, metres).
  """

  def __init__(self, serve_fn, source):
    self._serve = serve_fn
    self.source = source

  def __call__(self, pose_2d, f, c, k, p):
    values = {name: tf.constant(np.asarray(v, np.float32))
              for name, v in zip(SERVING_INPUTS, (pose_2d, f, c, k, p))}
    outputs = self._serve(**values)
    return {"final": np.asarray(outputs["final"]),
            "steps": np.asarray(outputs["steps"])}


def load_lifter(path):
  """A `Lifter` from a SavedModel or a run directory (module docstring).

  Raises:
    FileNotFoundError: `path` is neither.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such model directory")
  if is_saved_model(path):
    loaded = tf.saved_model.load(path)
    if "serve" not in loaded.signatures:
      raise ValueError(f"{path}: SavedModel has no 'serve' signature")
    signature = loaded.signatures["serve"]
    lifter = Lifter(signature, path)
    # The loaded object owns the variables: keep it alive with the lifter.
    lifter._loaded = loaded  # pylint: disable=protected-access
    return lifter
  problem, model = restore_run(path)
  # Run eagerly: for the few calls of a tool, tracing the unrolled
  # second-order graph costs more than it saves.
  serve, _ = problem.serving_function(model)

  def call(**kwargs):
    return serve(*[kwargs[name] for name in SERVING_INPUTS])

  lifter = Lifter(call, path)
  lifter._model = model  # pylint: disable=protected-access
  return lifter
