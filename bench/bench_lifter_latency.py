"""Batch-1 latency of the pose lifter: SavedModel vs TFLite (issue 14).

For b128-1, IGE-4 and IGE-8 (the shipped configs' architectures, weights
as initialized and fixed random statistics: the cost does not depend on
their values), builds the
model, exports its "serve" signature as a SavedModel (raw pixels and
intrinsics in, every inner step out; the same function `bin/export.py`
writes), converts that with `ige_tf.pose.tflite.convert_lifter` (builtin
ops only, batch 1) and times one pose at a time:
  savedmodel: `tf.saved_model.load(dir).signatures["serve"]` on tensors;
  tflite:     `tf.lite.Interpreter` signature runner on numpy arrays.
Both on one thread (TF intra/inter-op threads 1, interpreter num_threads
1: a device core, and comparable on a shared machine). The two runtimes are
timed in interleaved rounds (each round: `--calls` calls of each) after
warm-up calls, so machine noise hits both alike; each figure is the median
over rounds of the per-call mean, the spread the rounds' min-max. Also the
SavedModel directory size, the .tflite size and the maximum absolute
difference of their outputs (metres) on the timed input.

Writes bench/results/lifter_latency.json and prints a markdown table.

Run: python bench/bench_lifter_latency.py [--rounds=15] [--calls=20]
"""
import argparse
import json
import os
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from ige_tf import atomic
from ige_tf.pose import problem as problem_lib
from ige_tf.pose import tflite
from lifters import b128_1, ige  # bench/lifters.py

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {"b128-1": b128_1, "IGE-4": ige(4), "IGE-8": ige(8)}


def statistics():
  """Fixed random standardization statistics (a trained model has its
  data's; the values do not change the cost)."""
  rng = np.random.default_rng(0)
  return {"pose_2d_mean": rng.normal(size=(16, 2)) * 0.085,
          "pose_2d_std": np.full((16, 2), 0.1),
          "pose_3d_mean": rng.normal(size=(16, 3)) * 0.3,
          "pose_3d_std": np.full((16, 3), 0.2)}


def export(build, export_dir):
  """Writes the model's serving signature as a SavedModel (as loop.export)."""
  model = build(statistics=statistics())
  problem = problem_lib.PoseProblem(records_dir=None, model_fn=build)
  serve, signature = problem.serving_function(model)
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serve", serve, input_signature=signature)
  archive.write_out(export_dir, verbose=False)


def directory_bytes(path):
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def example():
  """One plausible pose in pixels with Human3.6M-like intrinsics."""
  rng = np.random.default_rng(0)
  pose = (rng.normal(size=(1, 16, 2)) * 60 + 500).astype(np.float32)
  return {"pose_2d": pose, "f": np.float32([[1145, 1144]]),
          "c": np.float32([[512, 515]]),
          "k": np.float32([[-0.2, 0.25, 0.0]]),
          "p": np.float32([[-0.001, -0.001]])}


def measure(name, build, work_dir, rounds, calls):
  export_dir = os.path.join(work_dir, name, "export")
  tflite_path = os.path.join(work_dir, name, "lifter.tflite")
  start = time.time()
  export(build, export_dir)
  export_seconds = time.time() - start
  start = time.time()
  metadata = tflite.convert_lifter(export_dir, tflite_path)
  convert_seconds = time.time() - start
  signature = tf.saved_model.load(export_dir).signatures["serve"]
  interpreter = tf.lite.Interpreter(model_path=tflite_path, num_threads=1)
  [key] = list(interpreter.get_signature_list())
  runner = interpreter.get_signature_runner(key)
  inputs = example()
  tensors = {k: tf.constant(v) for k, v in inputs.items()}

  def run_saved():
    return signature(**tensors)["steps"].numpy()

  def run_tflite():
    return runner(**inputs)["steps"]

  difference = float(np.max(np.abs(run_saved() - run_tflite())))
  for _ in range(5):
    run_saved()
    run_tflite()
  per_call = {"savedmodel": [], "tflite": []}
  for _ in range(rounds):
    for key_, fn in (("savedmodel", run_saved), ("tflite", run_tflite)):
      start = time.perf_counter()
      for _ in range(calls):
        fn()
      per_call[key_].append((time.perf_counter() - start) / calls * 1e3)
  result = {"select_tf_ops": metadata["select_tf_ops"],
            "savedmodel_bytes": directory_bytes(export_dir),
            "tflite_bytes": metadata["size_bytes"],
            "max_abs_difference_m": difference,
            "export_seconds": round(export_seconds, 1),
            "convert_seconds": round(convert_seconds, 1)}
  for key_, values in per_call.items():
    result[f"{key_}_ms"] = round(float(np.median(values)), 3)
    result[f"{key_}_ms_range"] = [round(float(min(values)), 3),
                                  round(float(max(values)), 3)]
  ratios = np.array(per_call["savedmodel"]) / np.array(per_call["tflite"])
  result["speedup_median"] = round(float(np.median(ratios)), 2)
  result["speedup_range"] = [round(float(ratios.min()), 2),
                             round(float(ratios.max()), 2)]
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=15)
  parser.add_argument("--calls", type=int, default=20)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--out", default=os.path.join(
      HERE, "results", "lifter_latency.json"))
  args = parser.parse_args()
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  results = {}
  with tempfile.TemporaryDirectory() as work_dir:
    for name in args.models.split(","):
      results[name] = measure(name, MODELS[name], work_dir, args.rounds,
                              args.calls)
      print(name, json.dumps(results[name]), flush=True)
  record = {"command": "python bench/bench_lifter_latency.py "
                       f"--rounds={args.rounds} --calls={args.calls}",
            "machine": {"processor": platform.processor(),
                        "cpus": os.cpu_count(), "tensorflow": tf.__version__},
            "models": results}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  atomic.write_json(args.out, record, indent=1)
  print("| model | SavedModel ms | TFLite ms | speed-up | SavedModel size | "
        "TFLite size | Select TF ops |")
  print("|---|---|---|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['savedmodel_ms']} ({r['savedmodel_ms_range'][0]}-"
          f"{r['savedmodel_ms_range'][1]}) | {r['tflite_ms']} "
          f"({r['tflite_ms_range'][0]}-{r['tflite_ms_range'][1]}) | "
          f"{r['speedup_median']}x ({r['speedup_range'][0]}-"
          f"{r['speedup_range'][1]}) | {r['savedmodel_bytes'] / 1e6:.2f} MB | "
          f"{r['tflite_bytes'] / 1e6:.2f} MB | "
          f"{', '.join(r['select_tf_ops']) or 'none'} |")


if __name__ == "__main__":
  main()
