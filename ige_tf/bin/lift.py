"""Lifts 2D keypoints (COCO detections or MPII16 lists) to 3D poses.

Examples:
  python bin/lift.py --model=runs/pose/ige4/export \
      --keypoints=detections.json --intrinsics=camera.json --out=poses.json
  python bin/lift.py --model=runs/pose/ige4 --keypoints=poses_mpii16.json \
      --focal=1145,1144 --center=512,515 --image_size=1000,1002 \
      --on_invalid=skip --png_dir=pngs --out=poses.json

Input formats, joint order and the handling of low-confidence, missing and
out-of-image keypoints: ige_tf/pose/lift.py and docs/pose_model.md.
"""
import json

from absl import app
from absl import flags

from ige_tf.bin import run_app
from ige_tf.pose import lift

flags.DEFINE_string("model", None, "SavedModel (bin/export.py) or run "
                    "directory (bin/train.py --model_dir).")
flags.DEFINE_string("keypoints", None, "Keypoint JSON: COCO results, COCO "
                    "annotations or a list of [16][2] MPII16 poses.")
flags.DEFINE_string("intrinsics", None, "Intrinsics JSON ({f, c, k?, p?, "
                    "width?, height?} or a dict by image id).")
flags.DEFINE_list("focal", None, "fx,fy in pixels (instead of --intrinsics).")
flags.DEFINE_list("center", None, "cx,cy in pixels.")
flags.DEFINE_list("distortion", None, "k1,k2,k3,p1,p2 (default zeros).")
flags.DEFINE_list("image_size", None, "width,height in pixels: keypoints "
                  "outside are invalid.")
flags.DEFINE_float("min_confidence", 0.2, "Keypoints below are invalid.")
flags.DEFINE_enum("on_invalid", "error", list(lift.ON_INVALID),
                  "Invalid detection: raise an error or skip it (listed in "
                  "the output's 'skipped').")
flags.DEFINE_bool("steps", False, "Also write every inner step's pose.")
flags.DEFINE_string("png_dir", None, "Write one PNG per pose here.")
flags.DEFINE_string("out", None, "Output JSON path.")
flags.mark_flags_as_required(["model", "keypoints", "out"])
FLAGS = flags.FLAGS


def _camera():
  if not FLAGS.focal and not FLAGS.center:
    return None
  if not (FLAGS.focal and FLAGS.center):
    raise app.UsageError("give both --focal and --center")
  distortion = [float(v) for v in FLAGS.distortion or [0] * 5]
  if len(distortion) != 5:
    raise app.UsageError("--distortion needs 5 numbers: k1,k2,k3,p1,p2")
  size = [float(v) for v in FLAGS.image_size] if FLAGS.image_size else [None,
                                                                        None]
  return lift.Camera([float(v) for v in FLAGS.focal],
                     [float(v) for v in FLAGS.center], distortion[:3],
                     distortion[3:], *size)


def main(argv):
  del argv
  result = lift.lift_file(
      FLAGS.model, FLAGS.keypoints, FLAGS.out,
      intrinsics_path=FLAGS.intrinsics, camera=_camera(),
      min_confidence=FLAGS.min_confidence, on_invalid=FLAGS.on_invalid,
      png_dir=FLAGS.png_dir, include_steps=FLAGS.steps)
  print(json.dumps({"out": FLAGS.out, "poses": len(result["poses"]),
                    "skipped": len(result["skipped"])}))


def run():
  """Console entry point `ige-lift` (also `python bin/lift.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
