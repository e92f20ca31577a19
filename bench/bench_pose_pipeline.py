"""Input-pipeline throughput (examples/s) on generated Human3.6M records.

  python bench/bench_pose_pipeline.py [--work_dir=/tmp/bench_pose] [--epochs=3]

Generates the default synthetic Human3.6M (7 subjects x 6 actions x 2 takes x
100 frames), prepares `sh` records, then iterates `pose_dataset` over the
train split (24,000 examples) for batch sizes 64 and 1024, in training mode
(shuffle + flip augmentation, repeat) and evaluation mode (no shuffle), both
in memory (the default for splits up to 2M examples) and streaming from the
files. Every configuration is warmed up for one pass and then timed over
`--epochs` passes. Writes bench/results/pose_pipeline.{json,md}.
"""
import json
import os
import platform
import time

from absl import app
from absl import flags
import tensorflow as tf

from ige_tf.pose.data import pipeline
from ige_tf.pose.data import prepare
from ige_tf.pose.data import synthetic

flags.DEFINE_string("work_dir", "/tmp/bench_pose_pipeline",
                    "Where the synthetic data and records go (reused).")
flags.DEFINE_integer("epochs", 5, "Timed passes over the train split.")
flags.DEFINE_string("results_dir", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results"), "Output folder.")
FLAGS = flags.FLAGS


def _measure(records_dir, batch_size, train, in_memory, epochs):
  count = pipeline.num_examples(records_dir, "train")
  steps = max(1, count // batch_size)
  dataset = pipeline.pose_dataset(records_dir, "train", batch_size,
                                   shuffle=train, flip_augment=train,
                                   repeat=True, seed=0, drop_remainder=True,
                                   in_memory=in_memory)
  iterator = iter(dataset)
  for _ in range(steps):  # warm-up pass: fills the shuffle buffer, traces
    next(iterator)
  start = time.perf_counter()
  for _ in range(steps * epochs):
    features, _ = next(iterator)
  features["pose_2d"].numpy()
  elapsed = time.perf_counter() - start
  return steps * epochs * batch_size / elapsed


def run(work_dir, epochs, results_dir):
  h36m_dir = os.path.join(work_dir, "h36m")
  records_dir = os.path.join(work_dir, "records_sh")
  if not os.path.exists(os.path.join(h36m_dir, "synthetic.json")):
    synthetic.make_synthetic_h36m(h36m_dir)
  prepare.prepare_h36m(records_dir, "sh", h36m_dir=h36m_dir)
  rows = []
  load_before = os.getloadavg()[0]
  for in_memory in (True, False):
    for batch_size in (64, 1024):
      for train in (True, False):
        rate = _measure(records_dir, batch_size, train, in_memory, epochs)
        rows.append({"batch_size": batch_size,
                     "source": "in memory" if in_memory else "streaming",
                     "mode": "train (shuffle+flip)" if train else "eval",
                     "examples_per_s": round(rate)})
        print(rows[-1])
  result = {"benchmark": "pose input pipeline", "rows": rows,
            "train_examples": pipeline.num_examples(records_dir, "train"),
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
            "load_average_1min": [round(load_before, 2),
                                  round(os.getloadavg()[0], 2)],
            "machine": platform.machine(),
            "command": "python bench/bench_pose_pipeline.py"}
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, "pose_pipeline.json"), "w") as f:
    json.dump(result, f, indent=1)
  lines = ["| batch | data | mode | examples/s |", "|---:|---|---|---:|"]
  lines += [f"| {r['batch_size']} | {r['source']} | {r['mode']} | "
            f"{r['examples_per_s']:,} |" for r in rows]
  with open(os.path.join(results_dir, "pose_pipeline.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return result


def main(argv):
  del argv
  run(FLAGS.work_dir, FLAGS.epochs, FLAGS.results_dir)


if __name__ == "__main__":
  app.run(main)
