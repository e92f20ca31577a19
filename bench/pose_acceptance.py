"""Issue 3 acceptance on generated data: IGE-8 against its own step 0.

On one synthetic Human3.6M (Martinez layout, the demo's size: 7 subjects, 6
actions, 2 takes of 400 frames, 4 cameras; train S1 S5 S6 S7 S8 = 96000
examples, test S9 S11 = 38400) prepared with each requested 2D source, trains
with the shipped configs and only EPOCHS overridden:
  b128-1   (pose/b128-1.gin)   BASE_EPOCHS epochs
  b128-1+  (same config)             BASE_EPOCHS + IGE_EPOCHS epochs, i.e. the
                                     baseline given the IGE's extra budget
  IGE-8    (pose/ige8.gin)     IGE_EPOCHS epochs from b128-1
  b1024-2  (pose/b1024-2.gin)  BASE_EPOCHS epochs
evaluates all of them on the test split, and writes
bench/results/pose_acceptance.json and a markdown table.

Checks (issue 3): IGE-8's final-step Protocol 2 is at least 10% below its
own step 0, and IGE-8 has at least 20x fewer trainable parameters than
b1024-2.

With --seeds=N every model is trained N times (`train.seed` = 0..N-1, the
data fixed) and the table reports the mean ± sample standard deviation over
seeds (n - 1); the checks are made on the means and on every seed. Runs go to
<out_dir>/<source>/seed<s>/<model>. --models picks a subset (IGE-8 needs
b128-1, its INIT_MODEL_DIR).

Run: python bench/pose_acceptance.py --out_dir=/tmp/pose_acceptance \
       [--sources=gt,sh] [--base_epochs=10] [--ige_epochs=2] [--seeds=3] \
       [--models=b128-1,b128-1+,ige8,b1024-2]
"""
import argparse
import json
import os
import time

import gin
import numpy as np

from ige_tf import atomic
from ige_tf.pose.data import prepare
from ige_tf.pose.data import synthetic
from ige_tf.train import cli
from ige_tf.train import loop

HERE = os.path.dirname(os.path.abspath(__file__))


def run(config, model_dir, params):
  gin.clear_config()
  cli.parse_gin([config], params)
  problem = cli.make_problem()
  start = time.time()
  loop.train(problem, model_dir, progress=False)
  seconds = time.time() - start
  metrics = loop.evaluate(problem, model_dir, progress=False)
  return {"train_seconds": round(seconds, 1),
          "protocol1a_mm": [round(v, 2) for v in metrics["protocol1a_mm"]],
          "protocol2_mm": [round(v, 2) for v in metrics["protocol2_mm"]],
          "mpjpe_mm": [round(v, 2) for v in metrics["mpjpe_mm"]],
          "model_stats": metrics["model_stats"]}


MODELS = ("b128-1", "b128-1+", "ige8", "b1024-2")
CONFIGS = {"b128-1": "pose/b128-1.gin", "b128-1+": "pose/b128-1.gin",
           "ige8": "pose/ige8.gin", "b1024-2": "pose/b1024-2.gin"}


def mean_std(values):
  """(mean, sample std or None for one value) of a list of floats."""
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if values.size > 1 else None
  return float(values.mean()), std


def cell(values):
  """`"mean ± std"` (2 decimals), or the value alone for one seed."""
  mean, std = mean_std(values)
  return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def over_seeds(per_seed):
  """Per-step mean and sample std over seeds of every metric of one model."""
  out = {}
  for key in ("protocol1a_mm", "protocol2_mm", "mpjpe_mm"):
    steps = np.array([r[key] for r in per_seed], np.float64)
    out[key] = {"mean": [round(float(v), 2) for v in steps.mean(axis=0)],
                "std": ([round(float(v), 2) for v in steps.std(axis=0, ddof=1)]
                        if len(per_seed) > 1 else None)}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--sources", default="gt,sh")
  parser.add_argument("--base_epochs", type=int, default=10)
  parser.add_argument("--ige_epochs", type=int, default=2)
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--models", default=",".join(MODELS))
  args = parser.parse_args()
  models = args.models.split(",")
  unknown = sorted(set(models) - set(MODELS))
  if unknown:
    parser.error(f"unknown --models {unknown}; choose from {list(MODELS)}")
  if "ige8" in models and "b128-1" not in models:
    parser.error("--models: ige8 starts from b128-1; include it")
  if args.seeds < 1:
    parser.error("--seeds must be at least 1")
  epochs = {"b128-1": args.base_epochs,
            "b128-1+": args.base_epochs + args.ige_epochs,
            "ige8": args.ige_epochs, "b1024-2": args.base_epochs}
  h36m_dir = os.path.join(args.out_dir, "h36m")
  if not os.path.exists(os.path.join(h36m_dir, "synthetic.json")):
    synthetic.make_synthetic_h36m(h36m_dir, frames_per_sequence=400, takes=2,
                                  seed=0, progress=False)
  results = {"settings": vars(args), "sources": {}}
  for source in args.sources.split(","):
    records = os.path.join(args.out_dir, f"records_{source}")
    prepare.prepare_h36m(records, source, h36m_dir=h36m_dir, progress=False)
    per_seed = {name: [] for name in models}
    for seed in range(args.seeds):
      runs = os.path.join(args.out_dir, source, f"seed{seed}")
      common = [f"RECORDS_DIR = {records!r}", f"train.seed = {seed}"]
      base_dir = os.path.join(runs, "b128-1")
      for name in models:
        params = common + [f"EPOCHS = {epochs[name]}"]
        if name == "ige8":
          params.append(f"INIT_MODEL_DIR = {base_dir!r}")
        per_seed[name].append(run(CONFIGS[name], os.path.join(runs, name),
                                  params))
    out = {name: {"per_seed": per_seed[name],
                  "over_seeds": over_seeds(per_seed[name])}
           for name in models}
    if "ige8" in models:
      ratios = [r["protocol2_mm"][-1] / r["protocol2_mm"][0]
                for r in per_seed["ige8"]]
      mean = out["ige8"]["over_seeds"]["protocol2_mm"]["mean"]
      out["checks"] = {
          "ige8_final_over_step0_per_seed": [round(r, 4) for r in ratios],
          "ige8_final_over_step0_of_means": round(mean[-1] / mean[0], 4),
          "ige8_final_at_least_10pct_below_step0_every_seed":
              all(r <= 0.9 for r in ratios)}
      if "b1024-2" in models:
        params = {k: per_seed[k][0]["model_stats"]["trainable_params"]["total"]
                  for k in ("b1024-2", "ige8")}
        out["checks"]["b1024_2_params_over_ige8"] = round(
            params["b1024-2"] / params["ige8"], 2)
        out["checks"]["ige8_at_least_20x_fewer_params"] = (
            params["b1024-2"] >= 20 * params["ige8"])
      print(json.dumps({source: out["checks"]}), flush=True)
    results["sources"][source] = out
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "pose_acceptance.json")
  atomic.write_json(path, results, indent=1)
  spread = (f"mean ± sample std over {args.seeds} seeds"
            if args.seeds > 1 else "one seed")
  lines = [f"Metrics in mm, {spread}.", "",
           "| source | model | epochs | P1a final | P2 step 0 | P2 final | "
           "MPJPE final | params | multiply-adds | train s (seed 0) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for source, out in results["sources"].items():
    for name in models:
      rs = out[name]["per_seed"]
      stats = rs[0]["model_stats"]
      lines.append(
          f"| {source} | {name} | {epochs[name]} | "
          f"{cell([r['protocol1a_mm'][-1] for r in rs])} | "
          f"{cell([r['protocol2_mm'][0] for r in rs])} | "
          f"{cell([r['protocol2_mm'][-1] for r in rs])} | "
          f"{cell([r['mpjpe_mm'][-1] for r in rs])} | "
          f"{stats['trainable_params']['total']} | "
          f"{stats['multiply_adds']} | {rs[0]['train_seconds']} |")
  table = "\n".join(lines)
  with open(os.path.join(HERE, "results", "pose_acceptance.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
