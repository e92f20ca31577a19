"""Throughput of 1 vs 2 multi-worker processes on loopback (CPU).

Trains the pose IGE (pose/ige4.gin, random initial estimate) and the
voxel IGE-MN (voxel/ige-mn.gin) steps with `bin/train.py` and
`train.strategy = 'multi_worker'`: a one-worker cluster, then two workers
on 127.0.0.1 (each its own TF_CONFIG, the same global batch). Both run on
this machine's CPU cores, so the figures show the cost of the collective
machinery, not GPU speed. Throughput is read from the chief's TensorBoard
events: global examples per second between the first and the last "loss"
summary (tracing and start-up excluded), over `--rounds` alternating rounds
(median, min, max). Data: tiny generated records in the real layouts,
written to a temporary directory.

  python bench/bench_distributed.py --out=bench/results/distributed.json
"""
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ige_tf import atomic  # noqa: E402  (after the path)

flags.DEFINE_string("out", os.path.join(REPO, "bench", "results",
                                        "distributed.json"), "JSON output.")
flags.DEFINE_integer("pose_steps", 40, "Training steps of the pose run.")
flags.DEFINE_integer("voxel_steps", 12, "Training steps of the voxel run.")
flags.DEFINE_integer("timeout", 1200, "Seconds allowed per run.")
flags.DEFINE_integer("rounds", 3, "Rounds of (1 worker, 2 workers), "
                     "alternating, per model: the spread shows the noise of "
                     "a shared machine.")
FLAGS = flags.FLAGS


def make_records(root):
  """Writes pose and voxel records; returns their directories."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.pose.data import prepare
  from ige_tf.pose.data import synthetic
  from ige_tf.voxel.synthetic import make_synthetic_records
  subjects = ("S1", "S9")
  synthetic.make_synthetic_h36m(os.path.join(root, "h36m"),
                                frames_per_sequence=20, takes=1,
                                subjects=subjects, seed=0, progress=False)
  pose = os.path.join(root, "pose_records")
  prepare.prepare_h36m(pose, "gt", h36m_dir=os.path.join(root, "h36m"),
                       subjects=subjects, progress=False)
  voxel = make_synthetic_records(os.path.join(root, "voxel"),
                                 models_per_synset=4, num_train=None,
                                 resolutions=(32,), views=4)
  return pose, voxel


def experiments(pose_records, voxel_records):
  """name -> (gin args, global batch, steps, summary period)."""
  return {
      "pose_ige4": (["--gin_file=pose/ige4.gin",
                     f"--gin_param=RECORDS_DIR = {pose_records!r}",
                     "--gin_param=INIT_MODEL_DIR = None",
                     "--gin_param=EPOCHS = 100", "--gin_param=BATCH_SIZE = 64",
                     "--gin_param=PoseProblem.shuffle_buffer = 64"],
                    64, FLAGS.pose_steps, 5),
      "voxel_ige_mn": (["--gin_file=voxel/ige-mn.gin",
                        f"--gin_param=RECORDS_DIR = {voxel_records!r}",
                        "--gin_param=EPOCHS = 100",
                        "--gin_param=BATCH_SIZE = 8",
                        "--gin_param=ENCODER_WEIGHTS = None"],
                       8, FLAGS.voxel_steps, 2),
  }


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def run(args, steps, summary_every, workers, model_dir):
  """Trains with `workers` processes; returns the chief's loss event times
  `[(step, wall_time)]`."""
  ports = _free_ports(workers)
  cluster = [f"127.0.0.1:{p}" for p in ports]
  args = [*args, f"--model_dir={model_dir}",
          "--gin_param=train.strategy = 'multi_worker'",
          f"--gin_param=train.max_steps = {steps}",
          f"--gin_param=train.summary_every_steps = {summary_every}",
          "--gin_param=train.checkpoint_every_steps = 100000",
          "--gin_param=train.progress = False"]
  procs = []
  for i in range(workers):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TF_CONFIG=json.dumps({"cluster": {"worker": cluster},
                                     "task": {"type": "worker", "index": i}}))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(REPO, "bin", "train.py"), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  try:
    outs = [p.communicate(timeout=FLAGS.timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    if p.returncode != 0:
      raise RuntimeError(f"a worker failed (exit {p.returncode}):\n{out[-3000:]}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  times = []
  for path in glob.glob(os.path.join(model_dir, "logs", "train", "events*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(v.tag == "loss" for v in event.summary.value):
        times.append((event.step, event.wall_time))
  return sorted(times)


def throughput(times, batch):
  """Global examples per second between the first and the last summary."""
  (s0, t0), (s1, t1) = times[0], times[-1]
  if s1 <= s0:
    raise ValueError(f"need two loss summaries, got {times}")
  return (s1 - s0) * batch / (t1 - t0)


def main(argv):
  del argv
  results = {"command": "python bench/bench_distributed.py --rounds="
             f"{FLAGS.rounds}", "runs": {}}
  with tempfile.TemporaryDirectory() as root:
    pose, voxel = make_records(root)
    for name, (args, batch, steps, every) in experiments(pose, voxel).items():
      entry = {"global_batch": batch, "steps": steps}
      rates = {1: [], 2: []}
      for r in range(FLAGS.rounds):
        for workers in (1, 2):
          times = run(args, steps, every, workers,
                      os.path.join(root, f"{name}_{workers}_{r}"))
          rates[workers].append(round(throughput(times, batch), 2))
          print(name, f"round {r}", workers, "workers:", rates[workers][-1],
                "examples/s", flush=True)
      for workers, values in rates.items():
        entry[f"{workers}_workers_examples_per_s"] = {
            "median": float(np.median(values)), "min": min(values),
            "max": max(values), "all": values}
      entry["ratio_2_over_1_per_round"] = [
          round(b / a, 3) for a, b in zip(rates[1], rates[2])]
      entry["ratio_2_over_1_median"] = float(
          np.median(entry["ratio_2_over_1_per_round"]))
      results["runs"][name] = entry
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  atomic.write_json(FLAGS.out, results, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
