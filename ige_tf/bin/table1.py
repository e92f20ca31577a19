"""Table 1 (Protocol 1a / Protocol 2, SH / FT / GT) from evaluated runs.

Example:
  python bin/table1.py --runs_root=runs/pose/table1 --out=table1.md

Expects runs named <model>_<source> (model b1024-2, ige4, ige8; source sh,
ft, gt), each evaluated with bin/evaluate.py (docs/reproducing_pose.md).
"""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose import figures

flags.DEFINE_string("runs_root", "runs/pose/table1", "Folder of the runs.")
flags.DEFINE_string("out", None, "Optional markdown output path.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  print(figures.table1(FLAGS.runs_root, FLAGS.out), end="")


def run():
  """Console entry point `ige-table1` (also `python bin/table1.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
