"""Throughput of the pose models on CPU (issue 3 benchmark).

For b1024-2, b128-1, IGE-4 and IGE-8 (the shipped configs' architectures),
measures, at batch 64 and 1024:
  train:  examples/s of one outer training step (forward through every inner
          step, second-order backward, Adam update), `tf.function`;
  infer:  examples/s of inference (`training=False`), `tf.function`, and
          with XLA (`jit_compile=True`);
plus trainable parameters and dense multiply-adds per example
(`PoseProblem.component_params` / `multiply_adds`). Inputs are random
normalized 2D poses (values do not change the cost). Throughput from the
best of `--repeats` timed calls after two warm-up calls (on a shared
machine the fastest call is the least disturbed one; the median is stored
too, as `<key>_median`). Writes bench/results/pose_models.json and prints a
markdown table.

Aim (issue 3): IGE-8 needs at most half the multiply-adds of b1024-2 per
example and reaches at least its inference throughput.

Run: python bench/bench_pose_models.py [--repeats=20] [--batches=64,1024]
"""
import argparse
import json
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from ige_tf.pose import problem as problem_lib
from lifters import b1024_2, b128_1, ige  # bench/lifters.py

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "b1024-2": (b1024_2, "standardized_mse"),
    "b128-1": (b128_1, "standardized_mse"),
    "IGE-4": (ige(4), "scaled_l2"),
    "IGE-8": (ige(8), "scaled_l2"),
}


def fake_batch(batch, seed=0):
  rng = np.random.default_rng(seed)
  features = {
      "pose_2d": tf.constant(rng.normal(scale=0.1, size=(batch, 16, 2)),
                             tf.float32),
      "distortion": tf.constant(np.tile(
          [-0.207, 0.247, -0.003, -0.0011, -0.001], (batch, 1)), tf.float32)}
  pose = rng.normal(scale=0.3, size=(batch, 16, 3)) + [0.0, 0.0, 5.0]
  labels = {"pose_3d": tf.constant(pose, tf.float32),
            "root_3d": tf.constant(pose.mean(axis=1), tf.float32)}
  return features, labels


def call_seconds(fn, args, repeats):
  """(best, median) seconds of `fn(*args)` over `repeats` timed calls."""
  for _ in range(2):
    _block(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.min(times)), float(np.median(times))


def median_seconds(fn, args, repeats):
  return call_seconds(fn, args, repeats)[1]


def _block(value):
  for tensor in tf.nest.flatten(value):
    np.asarray(tensor)


def measure(name, batches, repeats):
  build, loss_type = MODELS[name]
  keras.utils.set_random_seed(0)
  statistics = {"pose_2d_mean": np.zeros((16, 2)),
                "pose_2d_std": np.full((16, 2), 0.1),
                "pose_3d_mean": np.zeros((16, 3)),
                "pose_3d_std": np.full((16, 3), 0.2)}
  problem = problem_lib.PoseProblem("unused", build, loss_type=loss_type,
                                    require_statistics=False)
  problem._statistics = statistics  # pylint: disable=protected-access
  model = build(statistics=statistics)
  stats = problem_lib.model_stats_of(problem, model)
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(model.trainable_variables)

  @tf.function
  def train_step(features, labels):
    with tf.GradientTape() as tape:
      outputs = model(features, training=True)
      loss = problem.loss(labels, outputs)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return loss

  @tf.function
  def infer(features):
    return model(features, training=False)["steps"][-1]

  @tf.function(jit_compile=True)
  def infer_xla(features):
    return model(features, training=False)["steps"][-1]

  row = {"model": name,
         "params": stats["trainable_params"]["total"],
         "multiply_adds": stats["multiply_adds"]}
  for batch in batches:
    features, labels = fake_batch(batch)
    for key, fn, args in (("train", train_step, (features, labels)),
                          ("infer", infer, (features,)),
                          ("infer_xla", infer_xla, (features,))):
      best, median = call_seconds(fn, args, repeats)
      row[f"{key}_{batch}"] = batch / best
      row[f"{key}_{batch}_median"] = batch / median
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--batches", default="64,1024")
  parser.add_argument("--models", default=",".join(MODELS))
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  rows = []
  for name in args.models.split(","):
    rows.append(measure(name, batches, args.repeats))
    print(json.dumps(rows[-1]), flush=True)
  by_name = {r["model"]: r for r in rows}
  aims = {}
  if {"IGE-8", "b1024-2"} <= set(by_name):
    ige8, base = by_name["IGE-8"], by_name["b1024-2"]
    aims["ige8_multiply_adds_at_most_half"] = (
        2 * ige8["multiply_adds"] <= base["multiply_adds"])
    for batch in batches:
      for mode in ("infer", "infer_xla"):
        key = f"{mode}_{batch}"
        aims[f"ige8_{key}_at_least_b1024_2"] = ige8[key] >= base[key]
  result = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__, "repeats": args.repeats,
            "rows": rows, "aims": aims}
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  with open(os.path.join(HERE, "results", "pose_models.json"), "w") as f:
    json.dump(result, f, indent=1)
  header = ["model", "params", "multiply-adds"]
  for batch in batches:
    header += [f"train {batch}", f"infer {batch}", f"infer XLA {batch}"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for r in rows:
    cells = [r["model"], f"{r['params']:,}", f"{r['multiply_adds']:,}"]
    for batch in batches:
      cells += [f"{r[f'train_{batch}']:,.0f}", f"{r[f'infer_{batch}']:,.0f}",
                f"{r[f'infer_xla_{batch}']:,.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
  print("\n".join(lines))
  print(json.dumps(aims, indent=1))


if __name__ == "__main__":
  main()
