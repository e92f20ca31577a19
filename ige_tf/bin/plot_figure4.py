"""Figure 4: Protocol 2 against multiply-adds (dot size = parameters).

Example:
  python bin/plot_figure4.py --run_dir='runs/pose/figure4/*' \
      --out=figure4.png

Each --run_dir (repeatable; globs allowed) must have been evaluated
(bin/evaluate.py writes metrics.json). Writes the PNG and the points as JSON
beside it.
"""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose import figures

flags.DEFINE_multi_string("run_dir", None, "Evaluated run directory or glob.")
flags.DEFINE_string("metric", "protocol2_mm", "metrics.json entry to plot.")
flags.DEFINE_string("out", "figure4.png", "Output PNG path.")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  points = figures.plot_figure4(FLAGS.run_dir, FLAGS.out, metric=FLAGS.metric)
  print(json.dumps(points, indent=1))


def run():
  """Console entry point `ige-plot-figure4` (also `python bin/plot_figure4.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
