"""The quick-start job: 2D-to-3D pose lifting on generated Human3.6M.

  python bin/demo.py --out_dir=runs/demo [--seeds=3] [--formulation=paper]

Generates a small Human3.6M in the Martinez layout, prepares its records
(ground-truth 2D), trains the b128-1 baseline and IGE-4 from it (once per
seed with `--seeds`), evaluates both (metrics.json per run), exports seed
0's IGE-4 (a SavedModel) and draws Figure 3. Writes <out_dir>/summary.json
and prints seed 0's figures and the mean ± sample standard deviation over
seeds. About 5 minutes per seed on 2 CPU cores.
"""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose import demo

flags.DEFINE_string("out_dir", "runs/demo", "Where the demo writes its runs.")
flags.DEFINE_integer("seeds", 1, "Train with train.seed = 0 .. seeds - 1 and "
                     "report mean ± standard deviation over seeds.",
                     lower_bound=1)
flags.DEFINE_enum("formulation", "default", sorted(demo.FORMULATIONS),
                  "Baseline formulation: 'default' (root-relative, "
                  "standardized) or 'paper' (camera frame, optimal-scale "
                  "loss; docs/pose_model.md).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  summary = demo.run_demo(FLAGS.out_dir, seeds=FLAGS.seeds,
                          formulation=FLAGS.formulation)
  print(json.dumps({k: {"final": summary[k]["final"],
                        "per_step": summary[k]["per_step"]}
                    for k in ("b128-1", "ige4")}, indent=1))
  print(json.dumps({k: summary[k] for k in ("paths", "seconds")}, indent=1))
  print(demo.format_over_seeds(summary), end="")


def run():
  """Console entry point `ige-demo` (also `python bin/demo.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
