"""Inner-step divergence against person size: raw model vs the lifter.

Places test-record 3D poses so that they are 40-800 px tall anywhere in a
1920x1080 image (true focal length 1400 px), projects them, and lifts the
MPII16 keypoints with the camera `bin/lift.py` assumes for that image size
(60-degree field of view: 1662.8 px), twice:
  raw:    the model as it is, view normalization off (`Lifter(...,
          normalize_view=False)`), inner-step safeguard off
          (`ige_lifter.safeguard = False`): what issue 14 reported;
  safeguard: view normalization off, safeguard on;
  lifter: `Lifter.from_run(run)` (view normalization and safeguard on).
Per height: mean 3D extent (bounding-box diagonal, m) at step 0 and T, the
largest extent ratio T / 0, the mean reprojection error (px) at step 0 and
T, how many poses end with a larger reprojection error than they started,
and how many steps the safeguard refused. Deterministic (seed 0).

Run (after `python bin/demo.py --out_dir=runs/demo`):
  python bench/bench_lift_person_size.py --run_dir=runs/demo/ige4 \
      --records_dir=runs/demo/records_gt
"""
import argparse

import numpy as np

from ige_tf.pose import lift
from ige_tf.pose import lifter as lifter_lib
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline

IMAGE_SIZE = (1920, 1080)
TRUE_FOCAL = 1400.0
HEIGHTS_PX = (40, 60, 80, 100, 150, 200, 300, 400, 600, 800)


def placed_keypoints(poses, height_px, count, rng):
  """MPII16 pixels `[count, 16, 2]` of poses placed `height_px` tall."""
  chosen = poses[rng.choice(len(poses), count)]
  chosen = chosen - chosen.mean(1, keepdims=True)
  depth = TRUE_FOCAL * np.ptp(chosen[:, :, 1], axis=1) / height_px
  offset = rng.uniform(-0.35, 0.35, (count, 2)) * np.array(IMAGE_SIZE) / (
      TRUE_FOCAL)
  chosen = chosen + np.stack([offset[:, 0] * depth, offset[:, 1] * depth,
                              depth], 1)[:, None]
  with_pelvis = skeleton.add_pelvis(chosen)
  uv = (with_pelvis[..., :2] / with_pelvis[..., 2:] * TRUE_FOCAL +
        np.array(IMAGE_SIZE) / 2)
  return skeleton.convert(uv, skeleton.H36M17, skeleton.MPII16)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run_dir", required=True)
  parser.add_argument("--records_dir", required=True)
  parser.add_argument("--per_height", type=int, default=20)
  args = parser.parse_args()
  _, labels = next(iter(pipeline.pose_dataset(args.records_dir, "test", 256,
                                              shuffle=False)))
  poses = labels["pose_3d"].numpy().astype(np.float64)
  camera, _ = lift.assumed_camera(*IMAGE_SIZE)
  intrinsics = np.concatenate([camera.f, camera.c])
  lifters = {
      "raw": lifter_lib.Lifter.from_run(
          args.run_dir, gin_params=["ige_lifter.safeguard = False"],
          normalize_view=False),
      "safeguard": lifter_lib.Lifter.from_run(args.run_dir,
                                              normalize_view=False),
      "lifter": lifter_lib.Lifter.from_run(args.run_dir)}
  print("| height px | model | extent m step 0 -> T | max extent ratio | "
        "reprojection px step 0 -> T | poses ending worse | steps refused |")
  print("|---|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for height_px in HEIGHTS_PX:
    keypoints = placed_keypoints(poses, height_px, args.per_height, rng)
    for name, lifter in lifters.items():
      result = lifter.lift(keypoints, intrinsics)
      extent = np.linalg.norm(np.ptp(result["steps"], axis=2), axis=-1)
      error = result["reprojection_px"]
      print(f"| {height_px} | {name} | {extent[0].mean():.2f} -> "
            f"{extent[-1].mean():.2f} | {(extent[-1] / extent[0]).max():.2f} "
            f"| {error[0].mean():.1f} -> {error[-1].mean():.1f} | "
            f"{int((error[-1] > error[0]).sum())}/{args.per_height} | "
            f"{int(result['rejected'].sum())} |", flush=True)


if __name__ == "__main__":
  main()
