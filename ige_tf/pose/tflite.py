"""The pose lifter as a TFLite model (`bin/export.py --format=tflite`).

`convert_lifter(export_dir, out_path)` converts the "serve" signature of a
SavedModel written by `bin/export.py` (raw pixels + intrinsics in, every
inner step out) to one `.tflite` file. The inner steps' gradients are
ordinary ops in that graph: `tf.GradientTape` inside the traced signature
has already written the energy's backward pass (MatMul, Mul, the softplus
and softabs derivatives, ...) as forward ops, so the converter sees a plain
feed-forward graph, T energy-and-gradient blocks long, with no control flow.

Builtin TFLite ops are used wherever they exist. The conversion is first
tried with builtins only; ops the builtin set lacks are then taken from
TensorFlow ("Select TF ops", `tf.lite.OpsSet.SELECT_TF_OPS`, which needs the
Flex delegate linked into the on-device runtime) and listed in the sidecar
`<out_path>.json` (`"select_tf_ops"`), with the view scale the `Lifter`
needs (`lifter.Lifter.from_tflite`).
"""
import json
import os
import re

import numpy as np
import tensorflow as tf

from ige_tf import atomic
from ige_tf.pose import lifter as lifter_lib

SIGNATURE = "serve"
SERVING_INPUTS = lifter_lib.SERVING_INPUTS


class TFLiteConversionError(RuntimeError):
  """The converter failed; the message names the SavedModel and the cause."""


def _static_signature(loaded, batch_size):
  """The "serve" signature traced at a static batch size."""
  signature = loaded.signatures[SIGNATURE]
  specs = [tf.TensorSpec([batch_size] + spec.shape.as_list()[1:],
                         spec.dtype, name=name)
           for name, spec in sorted(
               signature.structured_input_signature[1].items(),
               key=lambda item: SERVING_INPUTS.index(item[0]))]

  @tf.function(input_signature=specs)
  def serve(pose_2d, f, c, k, p):
    return signature(pose_2d=pose_2d, f=f, c=c, k=k, p=p)

  return serve.get_concrete_function()


def _converter(loaded, batch_size, select_tf_ops):
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [_static_signature(loaded, batch_size)], loaded)
  ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if select_tf_ops:
    ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
  converter.target_spec.supported_ops = ops
  return converter


def _unsupported_ops(message):
  """TF op names the converter reports as neither builtin nor custom."""
  return sorted(set(re.findall(r"'tf\.([A-Za-z0-9_]+)' op is neither",
                               message)))


def convert_lifter(export_dir, out_path, batch_size=1):
  """Converts a lifter SavedModel to TFLite (module docstring).

  Args:
    export_dir: SavedModel of `bin/export.py` (signature "serve").
    out_path: the `.tflite` file to write (atomically, with its `.json`
      sidecar).
    batch_size: the model's static batch size. With an unknown batch the
      gradients' shape arithmetic (BroadcastGradientArgs, ShapeN,
      ConcatOffset) stays in the graph as Select TF ops; a static batch
      folds it into constants. `load_runner` feeds any number of poses in
      chunks of this size.

  Returns:
    The sidecar dict: "view_scale", "select_tf_ops" (list of TF op names,
    empty when every op is a builtin), "batch_size", "size_bytes",
    "source".

  Raises:
    TFLiteConversionError: the SavedModel cannot be converted.
  """
  lifter = lifter_lib.Lifter.from_export(export_dir)
  loaded = lifter._loaded  # pylint: disable=protected-access
  batch_size = int(batch_size)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  select_ops = []
  try:
    flatbuffer = _converter(loaded, batch_size, select_tf_ops=False).convert()
  except Exception as builtin_error:  # pylint: disable=broad-except
    select_ops = _unsupported_ops(str(builtin_error))
    try:
      flatbuffer = _converter(loaded, batch_size, select_tf_ops=True).convert()
    except Exception as error:  # pylint: disable=broad-except
      first = str(error).strip().splitlines()
      raise TFLiteConversionError(
          f"{export_dir}: TFLite conversion failed: {type(error).__name__}: "
          f"{first[0] if first else ''}") from error
  metadata = {"view_scale": lifter.view_scale,
              "select_tf_ops": select_ops, "batch_size": batch_size,
              "size_bytes": len(flatbuffer),
              "source": os.path.abspath(export_dir)}
  folder = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(folder, exist_ok=True)
  atomic.write_bytes(out_path, flatbuffer)
  atomic.write_json(out_path + lifter_lib.TFLITE_METADATA_SUFFIX, metadata)
  return metadata


def load_runner(path, num_threads=None):
  """A callable over a converted lifter, and its sidecar metadata.

  Args:
    path: `.tflite` file written by `convert_lifter`.
    num_threads: interpreter threads (None: TFLite's default).

  Returns:
    `(run, metadata)`: `run(pose_2d=, f=, c=, k=, p=)` on float32 numpy
    arrays (`[B, 16, 2]`, `[B, 2]`, `[B, 2]`, `[B, 3]`, `[B, 2]`, any B)
    returns `{"final": [B, 16, 3], "steps": [T+1, B, 16, 3]}` numpy arrays.

  Raises:
    FileNotFoundError: no such file or no sidecar.
  """
  meta_path = path + lifter_lib.TFLITE_METADATA_SUFFIX
  for required in (path, meta_path):
    if not os.path.isfile(required):
      raise FileNotFoundError(f"{required}: no such file (write both with "
                              "bin/export.py --format=tflite)")
  with open(meta_path) as f:
    metadata = json.load(f)
  interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
  # One signature (the converter names it "serving_default").
  [key] = list(interpreter.get_signature_list())
  runner = interpreter.get_signature_runner(key)

  size = int(metadata["batch_size"])

  def run(**inputs):
    inputs = {name: np.ascontiguousarray(value, np.float32)
              for name, value in inputs.items()}
    total = len(inputs["pose_2d"])
    finals, steps = [], []
    for start in range(0, total, size):
      chunk = {name: value[start:start + size]
               for name, value in inputs.items()}
      pad = size - len(chunk["pose_2d"])
      if pad:  # repeat the last pose; its outputs are dropped
        chunk = {name: np.concatenate([value, np.repeat(value[-1:], pad, 0)])
                 for name, value in chunk.items()}
      outputs = runner(**chunk)
      finals.append(np.array(outputs["final"])[:size - pad])
      steps.append(np.array(outputs["steps"])[:, :size - pad])
    return {"final": np.concatenate(finals), "steps": np.concatenate(steps, 1)}

  run.interpreter = interpreter
  return run, metadata
