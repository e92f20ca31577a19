"""Tables 3, 4 and 5 of the paper from evaluated voxel runs (metrics.json).

Examples:
  python bin/table_voxel.py --table=3 --runs_dir=runs/voxel/table3
  python bin/table_voxel.py --table=4 --runs_dir=runs/voxel/table4 --format=csv
  python bin/table_voxel.py --table=5 --runs_dir=runs/voxel/table5 --out=table5.md

Runs are named after their configs (docs/reproducing_voxel.md); what each
table holds is in ige_tf/voxel/tables.py. Cells are the final inner step, in
percent. Reads only each run's metrics.json.
"""
from absl import app
from absl import flags

from ige_tf import atomic
from ige_tf.bin import run_app

from ige_tf.voxel import tables

flags.DEFINE_enum("table", None, sorted(tables.TABLES), "Which table.")
flags.DEFINE_multi_string("runs_dir", [], "Folder whose subdirectories are "
                          "runs (those with a metrics.json are used).")
flags.DEFINE_multi_string("run_dir", [], "One run directory (named by its "
                          "base name); repeatable.")
flags.DEFINE_string("metric", None, "Metric family: 'iou' (at R; default of "
                    "Tables 3, 4) or 'iou_256' (upsampled; default of Table 5).")
flags.DEFINE_enum("format", "markdown", ["markdown", "csv"], "Output format.")
flags.DEFINE_string("out", None, "Also write the table to this file.")
flags.mark_flag_as_required("table")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  try:
    text = tables.make_table(FLAGS.table, FLAGS.runs_dir, FLAGS.run_dir,
                             FLAGS.metric, FLAGS.format)
  except tables.TableError as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.out:
    atomic.write_text(FLAGS.out, text)
  print(text, end="")


def run():
  """Console entry point `ige-table-voxel` (also `python bin/table_voxel.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
