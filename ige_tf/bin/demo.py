"""The quick-start job: 2D-to-3D pose lifting on generated Human3.6M.

  python bin/demo.py --out_dir=runs/demo

Generates a small Human3.6M in the Martinez layout, prepares its records
(ground-truth 2D), trains the b128-1 baseline and IGE-4 from it, evaluates
both (metrics.json per run), exports IGE-4 (a SavedModel) and draws Figure 3.
Writes <out_dir>/summary.json and prints it. About 5 minutes on 2 CPU cores.
"""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose import demo

flags.DEFINE_string("out_dir", "runs/demo", "Where the demo writes its runs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  summary = demo.run_demo(FLAGS.out_dir)
  print(json.dumps({k: summary[k] for k in ("b128-1", "ige4", "paths",
                                            "seconds")}, indent=1))


def run():
  """Console entry point `ige-demo` (also `python bin/demo.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
