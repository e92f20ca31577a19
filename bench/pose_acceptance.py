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

Run: python bench/pose_acceptance.py --out_dir=/tmp/pose_acceptance \
       [--sources=gt,sh] [--base_epochs=10] [--ige_epochs=2]
"""
import argparse
import json
import os
import time

import gin

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--sources", default="gt,sh")
  parser.add_argument("--base_epochs", type=int, default=10)
  parser.add_argument("--ige_epochs", type=int, default=2)
  args = parser.parse_args()
  h36m_dir = os.path.join(args.out_dir, "h36m")
  if not os.path.exists(os.path.join(h36m_dir, "synthetic.json")):
    synthetic.make_synthetic_h36m(h36m_dir, frames_per_sequence=400, takes=2,
                                  seed=0, progress=False)
  results = {"settings": vars(args), "sources": {}}
  for source in args.sources.split(","):
    records = os.path.join(args.out_dir, f"records_{source}")
    prepare.prepare_h36m(records, source, h36m_dir=h36m_dir, progress=False)
    runs = os.path.join(args.out_dir, source)
    common = [f"RECORDS_DIR = {records!r}"]
    base_dir = os.path.join(runs, "b128-1")
    out = {}
    out["b128-1"] = run("pose/b128-1.gin", base_dir,
                        common + [f"EPOCHS = {args.base_epochs}"])
    plus = args.base_epochs + args.ige_epochs
    out["b128-1+"] = run("pose/b128-1.gin", os.path.join(runs, "b128-1_plus"),
                         common + [f"EPOCHS = {plus}"])
    out["ige8"] = run("pose/ige8.gin", os.path.join(runs, "ige8"),
                      common + [f"EPOCHS = {args.ige_epochs}",
                                f"INIT_MODEL_DIR = {base_dir!r}"])
    out["b1024-2"] = run("pose/b1024-2.gin", os.path.join(runs, "b1024-2"),
                         common + [f"EPOCHS = {args.base_epochs}"])
    ige = out["ige8"]["protocol2_mm"]
    params = {k: v["model_stats"]["trainable_params"]["total"]
              for k, v in out.items()}
    out["checks"] = {
        "ige8_final_vs_step0": round(ige[-1] / ige[0], 4),
        "ige8_final_at_least_10pct_below_step0": ige[-1] <= 0.9 * ige[0],
        "b1024_2_params_over_ige8": round(params["b1024-2"] / params["ige8"],
                                          2),
        "ige8_at_least_20x_fewer_params": params["b1024-2"] >= 20 *
                                          params["ige8"]}
    results["sources"][source] = out
    print(json.dumps({source: out["checks"]}), flush=True)
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", "pose_acceptance.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  lines = ["| source | model | epochs | P1a final | P2 step 0 | P2 final | "
           "MPJPE final | params | multiply-adds | train s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  epochs = {"b128-1": args.base_epochs,
            "b128-1+": args.base_epochs + args.ige_epochs,
            "ige8": args.ige_epochs, "b1024-2": args.base_epochs}
  for source, out in results["sources"].items():
    for name in ("b128-1", "b128-1+", "ige8", "b1024-2"):
      r = out[name]
      lines.append(
          f"| {source} | {name} | {epochs[name]} | {r['protocol1a_mm'][-1]} | "
          f"{r['protocol2_mm'][0]} | {r['protocol2_mm'][-1]} | "
          f"{r['mpjpe_mm'][-1]} | "
          f"{r['model_stats']['trainable_params']['total']} | "
          f"{r['model_stats']['multiply_adds']} | {r['train_seconds']} |")
  table = "\n".join(lines)
  with open(os.path.join(HERE, "results", "pose_acceptance.md"), "w") as f:
    f.write(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
