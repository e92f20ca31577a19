"""Table 1 (Protocol 1a / Protocol 2, SH / FT / GT) from evaluated runs.

Example:
  python bin/table1.py --runs_root=runs/pose/table1 --out=table1.md \
      --csv=table1.csv
  python bin/table1.py --run_dir='runs/pose/table1/ige*' --run_dir=...

Runs are named <model>_<source> (e.g. b1024-2_sh, ige4_gt,
b1024-2_paper_ft; docs/reproducing_pose.md), each evaluated with
bin/evaluate.py; only their metrics.json is read. Scores are the mean of the
per-action means (Martinez et al.'s convention), with the per-action
breakdown; a run lacking an action or with extra ones is refused.
"""
from absl import app
from absl import flags

from ige_tf.bin import run_app

from ige_tf.pose import figures
from ige_tf.pose import tables
from ige_tf.pose.data import h36m

flags.DEFINE_multi_string("run_dir", [], "Evaluated run directories or glob "
                          "patterns (repeatable).")
flags.DEFINE_string("runs_root", None, "Also take every evaluated run "
                    "directly under this folder.")
flags.DEFINE_list("actions", list(h36m.ACTIONS), "The actions every run must "
                  "have (default: the 15 of Human3.6M).")
flags.DEFINE_enum("source", None, [s for s, _ in tables.SOURCES],
                  "2D source of runs whose name has no _sh/_ft/_gt suffix.")
flags.DEFINE_string("out", None, "Optional markdown output path.")
flags.DEFINE_string("csv", None, "Optional CSV output path.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  patterns = list(FLAGS.run_dir)
  if FLAGS.runs_root:
    patterns.append(f"{FLAGS.runs_root.rstrip('/')}/*")
  if not patterns:
    raise app.UsageError("give --run_dir or --runs_root")
  try:
    markdown, _ = tables.table1(figures.expand_run_dirs(patterns),
                                actions=FLAGS.actions,
                                default_source=FLAGS.source,
                                markdown_out=FLAGS.out, csv_out=FLAGS.csv)
  except (tables.Table1Error, FileNotFoundError) as e:
    raise SystemExit(f"table1: {e}") from None
  print(markdown, end="")


def run():
  """Console entry point `ige-table1` (also `python bin/table1.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
