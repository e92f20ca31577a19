"""Figure 3 (pose) or Figure 6 (voxel) as a PNG: estimates after 0..T steps.

Examples:
  python bin/visualize.py --task=pose --model=runs/pose/ige4 \
      --records_dir=records/h36m_gt --index=100 --out=fig3.png
  python bin/visualize.py --task=voxel --model_dir=runs/voxel/table3/ige-mn \
      --model_dir=runs/voxel/table3/ige-i4 --model_dir=runs/voxel/table3/base-mn \
      --label=IGE-MN --label=IGE-I4 --label="MN baseline" \
      --records_dir=records/shapenet --index=0 --num_examples=3 --out=fig6.png

--model (alias --model_dir) is a run directory (bin/train.py --model_dir) or
a SavedModel (bin/export.py); voxel: repeat it to draw several models side by
side (world-grid baselines are recognized from their operative config). For
a run directory --records_dir defaults to the records the (first) run was
trained on (its record, ige_tf/train/run.py). See ige_tf/pose/visualize.py
and ige_tf/voxel/visualize.py for what the figures show.
"""
import json

from absl import app
from absl import flags

from ige_tf.bin import run_app

flags.DEFINE_enum("task", "pose", ["pose", "voxel"], "Which task's figure to "
                  "draw: pose (Figure 3) or voxel (Figure 6, N examples from "
                  "--index on; ige_tf/voxel/visualize.py).")
flags.DEFINE_multi_string("model", None, "Run directory or SavedModel; voxel: "
                          "repeat for several models side by side.")
flags.DEFINE_alias("model_dir", "model")
flags.DEFINE_multi_string("label", None, "voxel: one name per --model for the "
                          "panel titles (default: the run directories' names).")
flags.DEFINE_string("records_dir", None, "Prepared records holding the "
                    "example (bin/prepare_h36m.py --out_dir); default for a "
                    "run directory: the run's records.")
flags.DEFINE_string("split", "test", "Split of the example.")
flags.DEFINE_integer("index", 0, "Example index in the split (file order).")
flags.DEFINE_integer("num_examples", 3, "voxel: examples in Figure 6.")
flags.DEFINE_float("azimuth", 70.0, "Novel-view rotation, degrees.")
flags.DEFINE_integer("dpi", 100, "PNG resolution.")
flags.DEFINE_string("out", None, "Output PNG path.")
flags.mark_flags_as_required(["model", "out"])
FLAGS = flags.FLAGS


def _records_dir():
  """--records_dir, else the records directory of the first run --model."""
  if FLAGS.records_dir:
    return FLAGS.records_dir
  from ige_tf.train import run as run_lib  # pylint: disable=import-outside-toplevel
  try:
    with run_lib.open_run(FLAGS.model[0], restore=False) as loaded:
      return loaded.problem.records_dir
  except run_lib.RunError as e:
    raise app.UsageError(f"--records_dir is needed: {e}") from e


def main(argv):
  del argv
  records_dir = _records_dir()
  if FLAGS.task == "pose":
    if len(FLAGS.model) != 1:
      raise app.UsageError("--task=pose draws one --model, got "
                           f"{len(FLAGS.model)}")
    from ige_tf.pose import visualize  # pylint: disable=import-outside-toplevel
    result = visualize.figure3_from_records(
        FLAGS.model[0], records_dir, FLAGS.out, split=FLAGS.split,
        index=FLAGS.index, azimuth_deg=FLAGS.azimuth, dpi=FLAGS.dpi)
  else:
    from ige_tf.voxel import visualize  # pylint: disable=import-outside-toplevel
    result = visualize.figure6_from_records(
        FLAGS.model, records_dir, FLAGS.out, split=FLAGS.split,
        indices=range(FLAGS.index, FLAGS.index + FLAGS.num_examples),
        azimuth_deg=FLAGS.azimuth, dpi=FLAGS.dpi, labels=FLAGS.label)
    result["example"] = result.pop("examples")
  print(json.dumps({k: result[k] for k in ("png", "size", "example")}))


def run():
  """Console entry point `ige-visualize` (also `python bin/visualize.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
