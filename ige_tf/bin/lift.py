r"""Lifts 2D keypoints (COCO detections or MPII16 lists) to 3D poses.

Examples:
  python bin/lift.py --model=runs/pose/ige4/export \
      --keypoints=detections.json --intrinsics=camera.json --out=poses.json
  # COCO results (no intrinsics): image sizes from the annotation file, the
  # camera assumed from a 60-degree field of view (recorded in the output)
  python bin/lift.py --model=runs/pose/ige4 --keypoints=results.json \
      --images=person_keypoints_val2017.json --on_invalid=skip --out=poses.json
  python bin/lift.py --model=runs/pose/ige4/lifter.tflite \
      --keypoints=poses_mpii16.json --focal=1145,1144 --center=512,515 \
      --image_size=1000,1002 --png_dir=pngs --out=poses.json

Input formats, joint order, invalid detections, the assumed camera and the
inner-step safeguard: docs/lifting.md. Errors are one line naming the file,
the detection and the problem (exit status 1).
"""
import json
import sys

from absl import app
from absl import flags

from ige_tf.bin import run_app

from ige_tf.pose import lift

flags.DEFINE_string("model", None, "SavedModel (bin/export.py), run "
                    "directory (bin/train.py --model_dir) or .tflite file "
                    "(bin/export.py --format=tflite).")
flags.DEFINE_string("keypoints", None, "Keypoint JSON: COCO results, COCO "
                    "annotations or a list of [16][2] MPII16 poses.")
flags.DEFINE_string("intrinsics", None, "Intrinsics JSON ({f, c, k?, p?, "
                    "width?, height?} or a dict by image id).")
flags.DEFINE_list("focal", None, "Focal length in pixels: fx,fy (or one "
                  "value). With --center: the camera of every image; "
                  "without: the assumed camera's focal length.")
flags.DEFINE_list("center", None, "cx,cy in pixels (with --focal).")
flags.DEFINE_list("distortion", None, "k1,k2,k3,p1,p2 (default zeros).")
flags.DEFINE_list("image_size", None, "width,height in pixels of every "
                  "image: keypoints outside are invalid; without intrinsics "
                  "the camera is assumed from it.")
flags.DEFINE_string("images", None, "COCO annotation / image-info JSON whose "
                    "'images' give each image's size (for COCO results "
                    "files, which have none).")
flags.DEFINE_float("fov", None, "Assumed field of view in degrees over the "
                   f"longer image side (default {lift.DEFAULT_FOV_DEG:g}) "
                   "for images without intrinsics.")
flags.DEFINE_float("min_confidence", 0.2, "Keypoints below are invalid.")
flags.DEFINE_float("min_extent", lift.MIN_EXTENT_PX, "Detections spanning "
                   "fewer pixels (both directions) are not persons.")
flags.DEFINE_enum("on_invalid", "error", list(lift.ON_INVALID),
                  "Invalid detection: raise an error or skip it (listed in "
                  "the output's 'skipped').")
flags.DEFINE_bool("steps", False, "Also write every inner step's pose.")
flags.DEFINE_string("png_dir", None, "Write one PNG per pose here.")
flags.DEFINE_string("out", None, "Output JSON path.")
flags.mark_flags_as_required(["model", "keypoints", "out"])
FLAGS = flags.FLAGS


def _numbers(name, values, count):
  try:
    numbers = [float(v) for v in values]
  except ValueError:
    raise app.UsageError(f"--{name} needs numbers, got {values}") from None
  if len(numbers) not in count:
    raise app.UsageError(f"--{name} needs {' or '.join(map(str, count))} "
                         f"numbers, got {len(numbers)}")
  return numbers


def _camera():
  """The camera of every image from --focal and --center, or None."""
  if not FLAGS.center:
    return None
  if not FLAGS.focal:
    raise app.UsageError("--center needs --focal")
  focal = _numbers("focal", FLAGS.focal, (1, 2))
  distortion = _numbers("distortion", FLAGS.distortion or [0] * 5, (5,))
  size = (_numbers("image_size", FLAGS.image_size, (2,)) if FLAGS.image_size
          else [None, None])
  return lift.Camera(focal * (3 - len(focal)),
                     _numbers("center", FLAGS.center, (2,)), distortion[:3],
                     distortion[3:], *size)


def main(argv):
  del argv
  camera = _camera()
  try:
    result = lift.lift_file(
        FLAGS.model, FLAGS.keypoints, FLAGS.out,
        intrinsics_path=FLAGS.intrinsics, camera=camera,
        image_size=(_numbers("image_size", FLAGS.image_size, (2,))
                    if FLAGS.image_size else None),
        images_path=FLAGS.images,
        focal=(None if camera is not None or not FLAGS.focal else
               _numbers("focal", FLAGS.focal, (1, 2))),
        fov_deg=FLAGS.fov, min_confidence=FLAGS.min_confidence,
        min_extent_px=FLAGS.min_extent, on_invalid=FLAGS.on_invalid,
        png_dir=FLAGS.png_dir, include_steps=FLAGS.steps)
  except (lift.LiftInputError, FileNotFoundError, ValueError) as error:
    sys.exit(f"lift.py: error: {error}")
  print(json.dumps({"out": FLAGS.out, "poses": len(result["poses"]),
                    "skipped": len(result["skipped"]),
                    "assumptions": result["assumptions"],
                    "safeguard_acted": sum(
                        bool(p["safeguard_rejected_steps"])
                        for p in result["poses"])}))


def run():
  """Console entry point `ige-lift` (also `python bin/lift.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
