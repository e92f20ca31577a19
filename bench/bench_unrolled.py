"""Cost of the unrolled inner loop (issue 2 benchmark).

Times one outer training step (forward through T inner steps, second-order
backward, Adam update) of a fixed small energy for T = 0, 1, 2, 4, 8, in three
execution modes (eager, tf.function, tf.function + XLA), for
  layer:   `UnrolledSGD` (learned lr, momentum, clip value), and
  by hand: the same update written inline with nested tapes, no layer.
Writes bench/results/unrolled.json and prints a markdown table.

With `--interleave_rounds=N`, every compiled cell whose layer/hand ratio
exceeds the 1.2 aim is timed again N times, layer and hand alternately (both
steps built once), to tell a real cost from machine noise.

Run: python bench/bench_unrolled.py [--batch=256] [--repeats=30]
       [--interleave_rounds=3]
"""
import argparse
import json
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import EnergyMLP, UnrolledSGD

FEATURES = 48


class Energy(keras.layers.Layer):
  """E(y; x) = MLP([y - x, y]) with one softplus hidden layer."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.mlp = EnergyMLP((128,), 64, kernel_scale=0.1)

  def call(self, y, context, training=None):
    return self.mlp(tf.concat([y - context, y], axis=-1))


def make_step(num_steps, mode, by_hand):
  keras.utils.set_random_seed(0)
  energy = Energy()
  layer = UnrolledSGD(energy, num_steps, learning_rate=0.5, momentum=0.1,
                      clip_value=1.0, learn_learning_rate=True,
                      learn_momentum=True, learn_clip_value=True)
  x = tf.random.normal((8, FEATURES))
  layer(x, x)
  optimizer = keras.optimizers.Adam(1e-3)
  variables = layer.trainable_variables
  optimizer.build(variables)

  def unroll_by_hand(y, context):
    lr = layer._learning_rate_weight  # pylint: disable=protected-access
    mu = tf.abs(layer._momentum_weight)  # pylint: disable=protected-access
    clip = tf.abs(layer._clip_value_weight)  # pylint: disable=protected-access
    steps, velocity = [y], None
    for _ in range(num_steps):
      with tf.GradientTape() as tape:
        tape.watch(y)
        total = tf.reduce_sum(energy(y, context))
      g = tf.clip_by_value(tape.gradient(total, y), -clip, clip)
      velocity = g if velocity is None else mu * velocity + g
      y = y - lr * velocity
      steps.append(y)
    return tf.stack(steps)

  def step(y0, target):
    with tf.GradientTape() as tape:
      steps = unroll_by_hand(y0, y0) if by_hand else layer(y0, y0)
      loss = tf.reduce_mean(tf.square(steps - target))
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    optimizer.apply(grads, variables)
    return loss

  if mode == "eager":
    return step
  return tf.function(step, jit_compile=(mode == "xla"))


def time_step(fn, batch, repeats):
  rng = np.random.default_rng(0)
  y0 = tf.constant(rng.normal(size=(batch, FEATURES)), tf.float32)
  target = tf.constant(rng.normal(size=(batch, FEATURES)), tf.float32)
  for _ in range(3):
    fn(y0, target).numpy()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn(y0, target).numpy()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--interleave_rounds", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(__file__), "results", "unrolled.json"))
  args = parser.parse_args()
  results = []
  for num_steps in (0, 1, 2, 4, 8):
    row = {"T": num_steps}
    for mode in ("eager", "function", "xla"):
      for by_hand in (False, True):
        key = f"{mode}_{'hand' if by_hand else 'layer'}_ms"
        row[key] = 1e3 * time_step(make_step(num_steps, mode, by_hand),
                                   args.batch, args.repeats)
    for mode in ("function", "xla"):
      row[f"{mode}_layer_over_hand"] = row[f"{mode}_layer_ms"] / row[f"{mode}_hand_ms"]
    results.append(row)
    print(json.dumps(row), flush=True)
  interleaved = []
  for row in results if args.interleave_rounds > 0 else []:
    for mode in ("function", "xla"):
      if row[f"{mode}_layer_over_hand"] <= 1.2:
        continue
      steps = {"layer": make_step(row["T"], mode, False),
               "hand": make_step(row["T"], mode, True)}
      times = {"layer": [], "hand": []}
      for _ in range(args.interleave_rounds):
        for name, fn in steps.items():
          times[name].append(1e3 * time_step(fn, args.batch, args.repeats))
      check = {"T": row["T"], "mode": mode, "layer_ms": times["layer"],
               "hand_ms": times["hand"]}
      interleaved.append(check)
      print(json.dumps(check), flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"batch": args.batch, "features": FEATURES,
               "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "tensorflow": tf.__version__,
               "results": results, "interleaved": interleaved}, f, indent=1)
  print("\n| T | eager layer | eager hand | tf.function layer | tf.function hand | XLA layer | XLA hand | layer/hand (function) | layer/hand (XLA) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in results:
    print(f"| {r['T']} | {r['eager_layer_ms']:.2f} | {r['eager_hand_ms']:.2f} | "
          f"{r['function_layer_ms']:.2f} | {r['function_hand_ms']:.2f} | "
          f"{r['xla_layer_ms']:.2f} | {r['xla_hand_ms']:.2f} | "
          f"{r['function_layer_over_hand']:.2f} | {r['xla_layer_over_hand']:.2f} |")
  for check in interleaved:
    print(f"\nInterleaved, T = {check['T']}, {check['mode']}: layer "
          + ", ".join(f"{t:.2f}" for t in check["layer_ms"]) + " ms; hand "
          + ", ".join(f"{t:.2f}" for t in check["hand_ms"]) + " ms")


if __name__ == "__main__":
  main()
