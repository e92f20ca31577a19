"""Human3.6M (Martinez h36m/ folder or VideoPose3D npz) -> TFRecord shards.

Examples:
  python bin/prepare_h36m.py --h36m_dir=/data/h36m --source=sh \
      --out_dir=/data/records/sh
  python bin/prepare_h36m.py --npz_3d=/data/vp3d/data_3d_h36m.npz \
      --cameras=/data/h36m/cameras.h5 --source=cpn_ft_h36m_dbb \
      --out_dir=/data/records/cpn

Writes train/ (S1 S5 S6 S7 S8) and test/ (S9 S11) shards, manifest.json and
statistics.json; reruns resume (finished shards are verified, damaged ones
rewritten). 3D poses must be human-sized in metres: an npz in millimetres is
refused; --positions_unit=mm converts it. See docs/data_pose.md.
"""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose.data import h36m
from ige_tf.pose.data import prepare

flags.DEFINE_string("h36m_dir", None, "Martinez h36m/ folder (3D files, "
                    "cameras.h5, detections).")
flags.DEFINE_string("npz_3d", None, "VideoPose3D data_3d_h36m.npz (metres); "
                    "replaces the 3D files of --h36m_dir.")
flags.DEFINE_string("npz_2d", None, "VideoPose3D data_2d_h36m_<source>.npz; "
                    "default: beside --npz_3d for a non-built-in --source.")
flags.DEFINE_string("cameras", None, "cameras.h5; default "
                    "<h36m_dir>/cameras.h5.")
flags.DEFINE_string("detections_dir", None, "Root of S*/StackedHourglass*/ "
                    "folders (e.g. the extracted fine-tuned archive); default "
                    "--h36m_dir.")
flags.DEFINE_string("source", None, "2D source: gt (projected ground truth), "
                    "sh, sh_ft, or the name of an npz 2D source.")
flags.DEFINE_string("out_dir", None, "Output folder for records.")
flags.DEFINE_integer("subsample", 1, "Keep every N-th frame.")
flags.DEFINE_list("subjects", list(h36m.SUBJECTS), "Subjects to prepare.")
flags.DEFINE_enum("positions_unit", "m", ["m", "mm"], "Unit of the "
                  "positions_3d in --npz_3d (VideoPose3D's files: m); mm "
                  "converts a millimetre file.")
flags.mark_flags_as_required(["source", "out_dir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  manifest = prepare.prepare_h36m(
      FLAGS.out_dir, FLAGS.source, h36m_dir=FLAGS.h36m_dir,
      npz_3d=FLAGS.npz_3d, npz_2d=FLAGS.npz_2d, cameras=FLAGS.cameras,
      detections_dir=FLAGS.detections_dir, subsample=FLAGS.subsample,
      subjects=tuple(FLAGS.subjects), positions_unit=FLAGS.positions_unit)
  counts = {s: v["num_examples"] for s, v in manifest["splits"].items()}
  print(json.dumps({"examples": counts,
                    "skipped": len(manifest["skipped"])}))


def run():
  """Console entry point `ige-prepare-h36m` (also `python bin/prepare_h36m.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
