"""Does mixed precision train as well as float32? Whole runs, several seeds.

  python bench/bench_mixed_precision.py --family=pose --seeds=3
  python bench/bench_mixed_precision.py --family=voxel --seeds=2

Trains the same model with `train.mixed_precision = False` and `True` for
`train.seed` = 0 .. seeds-1 on the same generated data and reports the
final test metrics of each, mean ± sample standard deviation over seeds,
and the per-seed difference mixed - float32:

- pose: the quick-start IGE-4 lifter (`pose/demo_ige4.gin`: T = 4, 1 epoch)
  on the quick-start data (`bin/demo.py`'s synthetic Human3.6M, ground-truth
  2D), every run started from one float32 `pose/demo_b128-1.gin` initial
  estimate (seed 0, trained once); Protocol 1a, Protocol 2, MPJPE (mm) at
  the final inner step.
- voxel: IGE-MN (`voxel/demo.gin`: T = 3, random encoder, 32^3) on a
  smaller version of the voxel demo's data (`--synsets`, `--models`,
  `--views`, 128^2 images) for `--voxel_epochs` epochs at batch 8; test IoU
  (%) at step 0 and at the final step.

Everything goes to `--work_dir` (data, one run directory per model,
precision and seed, `results_<family>.json`); rerunning resumes: finished
runs are not retrained or re-evaluated.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import gin
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ige_tf import atomic  # noqa: E402  (after the path)

FLAGS = flags.FLAGS
flags.DEFINE_enum("family", "pose", ["pose", "voxel"], "Which model.")
flags.DEFINE_string("work_dir", "/tmp/bench_mixed_precision",
                    "Data, runs and results.")
flags.DEFINE_integer("seeds", 3, "Training seeds per precision.")
flags.DEFINE_integer("synsets", 2, "voxel: categories (of the demo's 5).")
flags.DEFINE_integer("models", 8, "voxel: generated models per category.")
flags.DEFINE_integer("views", 4, "voxel: views per model.")
flags.DEFINE_integer("voxel_epochs", 6, "voxel: training epochs.")

PRECISIONS = {"float32": "False", "mixed": "True"}


def _train_and_evaluate(gin_file, params, model_dir):
  """Trains (resuming) and evaluates `gin_file`; returns the metrics, cached
  in `model_dir/bench_metrics.json`."""
  # pylint: disable=import-outside-toplevel
  from ige_tf.train import cli
  from ige_tf.train import loop
  cached = os.path.join(model_dir, "bench_metrics.json")
  if os.path.isfile(cached):
    with open(cached) as f:
      return json.load(f)
  gin.clear_config()
  cli.parse_gin([gin_file], params)
  problem = cli.make_problem()
  start = time.time()
  steps = loop.train(problem, model_dir, progress=False)
  seconds = time.time() - start
  metrics = loop.evaluate(problem, model_dir, progress=False)
  metrics = {k: v for k, v in metrics.items()
             if isinstance(v, list) and v and isinstance(v[0], float)}
  metrics.update(train_steps=steps, train_seconds=seconds)
  atomic.write_json(cached, metrics, indent=None)
  return metrics


def _pose_runs(work_dir, seeds):
  # pylint: disable=import-outside-toplevel
  from ige_tf.pose import demo
  from ige_tf.pose.data import prepare
  from ige_tf.pose.data import synthetic
  h36m = os.path.join(work_dir, "h36m")
  records = os.path.join(work_dir, "records_gt")
  if not os.path.exists(os.path.join(h36m, "synthetic.json")):
    synthetic.make_synthetic_h36m(h36m, progress=False, **demo.DEMO_SYNTHETIC)
  prepare.prepare_h36m(records, "gt", h36m_dir=h36m, progress=False)
  base_dir = os.path.join(work_dir, "b128-1")
  _train_and_evaluate("pose/demo_b128-1.gin",
                      [f"RECORDS_DIR = {records!r}", "train.seed = 0"],
                      base_dir)
  for seed in range(seeds):
    for precision, flag in PRECISIONS.items():
      metrics = _train_and_evaluate(
          "pose/demo_ige4.gin",
          [f"RECORDS_DIR = {records!r}", f"INIT_MODEL_DIR = {base_dir!r}",
           f"train.seed = {seed}", f"train.mixed_precision = {flag}"],
          os.path.join(work_dir, f"ige4_{precision}_seed{seed}"))
      yield precision, seed, {
          "protocol1a_mm": metrics["protocol1a_mm"][-1],
          "protocol2_mm": metrics["protocol2_mm"][-1],
          "mpjpe_mm": metrics["mpjpe_mm"][-1],
          "train_seconds": metrics["train_seconds"]}


def _voxel_runs(work_dir, seeds):
  # pylint: disable=import-outside-toplevel
  from ige_tf.voxel import demo
  from ige_tf.voxel import synthetic
  records = synthetic.make_synthetic_records(
      work_dir, synsets=demo.DEMO_SYNSETS[:FLAGS.synsets],
      models_per_synset=FLAGS.models, num_train=None, resolutions=(32,),
      world_resolutions=(), views=FLAGS.views, workers=None)
  for seed in range(seeds):
    for precision, flag in PRECISIONS.items():
      metrics = _train_and_evaluate(
          "voxel/demo.gin",
          [f"RECORDS_DIR = {records!r}", f"EPOCHS = {FLAGS.voxel_epochs}",
           "BATCH_SIZE = 8", f"train.seed = {seed}",
           f"train.mixed_precision = {flag}"],
          os.path.join(work_dir, f"ige-mn_{precision}_seed{seed}"))
      yield precision, seed, {
          "iou_step0": 100 * metrics["iou"][0],
          "iou_final": 100 * metrics["iou"][-1],
          "train_seconds": metrics["train_seconds"]}


def main(argv):
  del argv
  work_dir = os.path.join(FLAGS.work_dir, FLAGS.family)
  os.makedirs(work_dir, exist_ok=True)
  runs = _pose_runs if FLAGS.family == "pose" else _voxel_runs
  per_seed = {p: {} for p in PRECISIONS}
  for precision, seed, values in runs(work_dir, FLAGS.seeds):
    per_seed[precision][seed] = values
    print(FLAGS.family, precision, f"seed {seed}:", json.dumps(values),
          flush=True)
  keys = list(per_seed["float32"][0])
  summary = {}
  for precision in PRECISIONS:
    summary[precision] = {
        k: [float(np.mean([v[k] for v in per_seed[precision].values()])),
            float(np.std([v[k] for v in per_seed[precision].values()],
                         ddof=1)) if FLAGS.seeds > 1 else None]
        for k in keys}
  summary["mixed_minus_float32_per_seed"] = {
      k: [per_seed["mixed"][s][k] - per_seed["float32"][s][k]
          for s in range(FLAGS.seeds)] for k in keys}
  results = {"command": f"python bench/bench_mixed_precision.py --family="
                        f"{FLAGS.family} --seeds={FLAGS.seeds}"
                        + (f" --synsets={FLAGS.synsets} --models="
                           f"{FLAGS.models} --views={FLAGS.views} "
                           f"--voxel_epochs={FLAGS.voxel_epochs}"
                           if FLAGS.family == "voxel" else ""),
             "per_seed": per_seed, "mean_std": summary}
  path = os.path.join(FLAGS.work_dir, f"results_{FLAGS.family}.json")
  atomic.write_json(path, results, indent=2)
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  app.run(main)
