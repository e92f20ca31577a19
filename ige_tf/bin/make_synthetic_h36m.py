"""Writes a small synthetic Human3.6M in the Martinez `h36m/` layout.

Example:
  python bin/make_synthetic_h36m.py --out_dir=/tmp/h36m_synthetic
  python bin/prepare_h36m.py --h36m_dir=/tmp/h36m_synthetic --source=sh \
      --out_dir=/tmp/h36m_records_sh
"""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose.data import h36m
from ige_tf.pose.data import synthetic

flags.DEFINE_string("out_dir", None, "The h36m/ folder to write.")
flags.DEFINE_integer("frames_per_sequence", 100, "Frames of every take.")
flags.DEFINE_integer("takes", 2, "Takes (sequences) per subject and action.")
flags.DEFINE_integer("seed", 0, "Random seed; the output is a function of it.")
flags.DEFINE_list("subjects", list(h36m.SUBJECTS), "Subjects to write.")
flags.DEFINE_list("actions", list(synthetic.DEFAULT_ACTIONS),
                  f"Actions, from {sorted(synthetic.ACTION_GENERATORS)}.")
flags.DEFINE_bool("fine_tuned", True,
                  "Also write StackedHourglassFineTuned240 detections.")
flags.DEFINE_bool("detections_under_mypose", False,
                  "Place detection folders under S*/MyPoses/3D_positions/.")
flags.mark_flag_as_required("out_dir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  summary = synthetic.make_synthetic_h36m(
      FLAGS.out_dir, frames_per_sequence=FLAGS.frames_per_sequence,
      takes=FLAGS.takes, seed=FLAGS.seed, subjects=tuple(FLAGS.subjects),
      actions=tuple(FLAGS.actions), fine_tuned=FLAGS.fine_tuned,
      detections_under_mypose=FLAGS.detections_under_mypose)
  print(f"wrote {summary['sequences']} sequences, {summary['frames']} frames, "
        f"{summary['detection_files']} detection files to {FLAGS.out_dir}")


def run():
  """Console entry point `ige-make-synthetic-h36m` (also `python bin/make_synthetic_h36m.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
