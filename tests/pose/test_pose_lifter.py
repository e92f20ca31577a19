"""ige_tf.pose.lifter (the one-call API), its view normalization and the
inner-step safeguard on generated COCO detections of persons 40-800 px tall;
ige_tf.pose.tflite (through bin/export.py) against the run and the SavedModel."""
import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest

import ige_tf.pose
from ige_tf.pose import lift
from ige_tf.pose import lifter as lifter_lib
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline
from ige_tf.train import cli
from ige_tf.train import loop
from conftest import gin_overrides  # pylint: disable=import-error

# A 1920x1440 camera whose focal length the lifter does not know: it assumes
# the 60-degree default (1662.8 px) instead of the true 1400 px.
IMAGE_SIZE = (1920, 1440)
TRUE_FOCAL = 1400.0
HEIGHTS_PX = (40, 60, 100, 200, 400, 800)


@pytest.fixture(scope="module")
def trained_ige_run(records_gt, build_once):
  """b128-1 (200 steps) then IGE-4 from it (100 steps) on `records_gt`: a
  lifter whose energy has learned to move poses (the conftest's 3-step
  IGE has not). About 11-14 CPU s, mostly tracing the second-order graph;
  built once per test run (`build_once`: the xdist workers share it; tests
  must not write into it)."""
  def build(root):
    base_dir = os.path.join(root, "b128-1")
    for gin_file, model_dir, extra in (
        ("pose/b128-1.gin", base_dir, ["train.max_steps = 200"]),
        ("pose/ige4.gin", os.path.join(root, "ige4"),
         [f"INIT_MODEL_DIR = {base_dir!r}", "train.max_steps = 100"])):
      gin.clear_config()
      cli.parse_gin([gin_file], gin_overrides(records_gt, epochs=1000,
                                              batch_size=32) +
                    extra)
      loop.train(cli.make_problem(), model_dir, progress=False)
    gin.clear_config()
  return os.path.join(build_once("trained_ige4", build)[0], "ige4")


def generated_detections(records_dir, heights_px, per_height=4, seed=0):
  """COCO-results detections of test-record 3D poses placed so that they
  are `heights_px` tall (and anywhere in the image) under the true camera.

  Returns:
    `(detections list, mpii16 pixels [N, 16, 2])`.
  """
  _, labels = next(iter(pipeline.pose_dataset(records_dir, "test", 64,
                                              shuffle=False)))
  poses = labels["pose_3d"].numpy().astype(np.float64)
  rng = np.random.default_rng(seed)
  width, height = IMAGE_SIZE
  detections, mpii = [], []
  for height_px in heights_px:
    for _ in range(per_height):
      pose = poses[rng.integers(len(poses))]
      pose = pose - pose.mean(0)
      depth = TRUE_FOCAL * np.ptp(pose[:, 1]) / height_px
      # Keep the whole person inside the image.
      margin = 0.65 * np.array([height_px, height_px]) + 10
      centre = rng.uniform(margin, np.array(IMAGE_SIZE) - margin)
      offset = (centre - np.array(IMAGE_SIZE) / 2) / TRUE_FOCAL * depth
      placed = pose + np.array([offset[0], offset[1], depth])
      with_pelvis = skeleton.add_pelvis(placed)
      uv = (with_pelvis[:, :2] / with_pelvis[:, 2:] * TRUE_FOCAL +
            np.array(IMAGE_SIZE) / 2)
      pose_2d = skeleton.convert(uv, skeleton.H36M17, skeleton.MPII16)
      coco = coco17_from_mpii16(pose_2d)
      keypoints = np.concatenate([coco, np.full((17, 1), 0.9)], axis=1)
      detections.append({"image_id": len(detections), "category_id": 1,
                         "score": 0.9,
                         "keypoints": keypoints.reshape(-1).tolist()})
      mpii.append(skeleton.coco17_to_mpii16(coco))
  del width, height
  return detections, np.stack(mpii)


def coco17_from_mpii16(pose):
  """COCO-17 keypoints consistent with an MPII16 pose: the face around the
  head centre (mid-way between neck and head top), ears either side."""
  m = {name: pose[i] for i, name in enumerate(skeleton.MPII16.joints)}
  head = m["neck"] + 0.5 * (m["head_top"] - m["neck"])
  side = np.array([0.15 * np.linalg.norm(m["head_top"] - m["neck"]), 0.0])
  coco = {"nose": head, "l_eye": head + side / 2, "r_eye": head - side / 2,
          "l_ear": head + side, "r_ear": head - side}
  coco.update({n: m[n] for n in skeleton.COCO17.joints if n in m})
  return np.stack([coco[n] for n in skeleton.COCO17.joints])


def extents(steps):
  """Diagonal of each step's 3D bounding box, `[T+1, N]` metres."""
  return np.linalg.norm(np.ptp(steps, axis=2), axis=-1)


def test_no_divergence_on_persons_40_to_800_px(trained_ige_run, records_gt,
                                               tmp_path):
  detections, _ = generated_detections(records_gt, HEIGHTS_PX)
  path = tmp_path / "results.json"
  path.write_text(json.dumps(detections))
  out = lift.lift_file(trained_ige_run, str(path), str(tmp_path / "o.json"),
                       image_size=IMAGE_SIZE, include_steps=True)
  assert out["skipped"] == []
  assert len(out["assumptions"]) == 1
  assert out["assumptions"][0].startswith(
      "focal 1662.8 px from a 60 degree field of view over the 1920 px side")
  steps = np.array([p["steps"] for p in out["poses"]]).transpose(1, 0, 2, 3)
  reprojection = np.array([p["steps_reprojection_px"]
                           for p in out["poses"]]).T
  ratio = extents(steps)[-1] / extents(steps)[0]
  assert np.all(ratio < 1.5) and np.all(ratio > 1 / 1.5), ratio
  assert np.all(reprojection[-1] <= reprojection[0] + 1e-3), reprojection
  # The steps do something: on average they reduce the reprojection error.
  assert reprojection[-1].mean() < 0.9 * reprojection[0].mean()


def test_without_normalization_and_safeguard_small_persons_diverge(
    trained_ige_run, records_gt):
  """The failure the view normalization and the safeguard remove: the raw
  model on small, far persons moves them away from their observation."""
  detections, mpii = generated_detections(records_gt, (40, 60), per_height=6)
  del detections
  f = (max(IMAGE_SIZE) / 2) / np.tan(np.radians(lift.DEFAULT_FOV_DEG / 2))
  intrinsics = [f, f, IMAGE_SIZE[0] / 2, IMAGE_SIZE[1] / 2]
  raw = lifter_lib.Lifter.from_run(
      trained_ige_run, gin_params=["ige_lifter.safeguard = False"],
      normalize_view=False).lift(mpii, intrinsics)
  fixed = lifter_lib.Lifter.from_run(trained_ige_run).lift(mpii, intrinsics)
  worse = raw["reprojection_px"][-1] > raw["reprojection_px"][0]
  assert worse.any(), raw["reprojection_px"]
  assert np.all(fixed["reprojection_px"][-1] <= fixed["reprojection_px"][0] +
                1e-3)


def test_safeguard_flags_rejected_steps(trained_ige_run, records_gt):
  """Without view normalization the safeguard acts on small persons: the
  rejected steps equal the previous ones and their energy did not rise."""
  _, mpii = generated_detections(records_gt, (40,), per_height=6)
  f = 1662.8
  lifter = lifter_lib.Lifter.from_run(trained_ige_run, normalize_view=False)
  result = lifter.lift(mpii, [f, f, 960, 720])
  assert result["rejected"].any()
  t, n = np.argwhere(result["rejected"])[0]
  np.testing.assert_array_equal(result["steps"][t + 1, n],
                                result["steps"][t, n])


def test_export_binary_writes_a_tflite_lifter_equal_to_the_run_and_export(
    ige_run, records_gt, tmp_path, repo_dir):
  """`bin/export.py --format=tflite` on a run directory: SavedModel, then
  lifter.tflite and its sidecar, all builtin ops; the one-call API lifts
  alike from the run, its SavedModel and the TFLite file, every step (one
  conversion, the binary's, serves both checks)."""
  run = tmp_path / "run"
  shutil.copytree(ige_run, run, ignore=shutil.ignore_patterns("export"))
  cmd = [sys.executable, os.path.join(repo_dir, "bin", "export.py"),
         f"--model_dir={run}",
         f"--gin_file={run / loop.OPERATIVE_CONFIG}", "--format=tflite"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  tflite_path = str(run / "lifter.tflite")
  assert summary["out"] == tflite_path
  assert summary["select_tf_ops"] == [] and summary["batch_size"] == 1
  assert summary["size_bytes"] == os.path.getsize(tflite_path)
  with open(tflite_path + lifter_lib.TFLITE_METADATA_SUFFIX) as f:
    sidecar = json.load(f)
  assert {k: sidecar[k] for k in ("select_tf_ops", "batch_size",
                                  "size_bytes")} == {
                                      k: summary[k] for k in (
                                          "select_tf_ops", "batch_size",
                                          "size_bytes")}

  _, mpii = generated_detections(records_gt, (80, 300), per_height=2)
  intrinsics = [1500.0, 1500.0, 960.0, 720.0]
  distortion = [-0.2, 0.2, 0.0, -0.001, 0.001]
  assert ige_tf.pose.Lifter is lifter_lib.Lifter
  from_run = ige_tf.pose.Lifter.from_run(str(run))
  poses, steps = from_run(mpii, intrinsics, distortion)
  assert poses.shape == (4, 16, 3) and steps.shape == (5, 4, 16, 3)
  np.testing.assert_array_equal(poses, steps[-1])
  # The SavedModel and TFLite against the run on the same inputs (the view-
  # normalized keypoints), every step.
  for other in (lifter_lib.Lifter.load(str(run / "export")),
                lifter_lib.Lifter.load(tflite_path)):
    assert other.view_scale == pytest.approx(from_run.view_scale)
    _, other_steps = other(mpii, intrinsics, distortion)
    np.testing.assert_allclose(other_steps, steps, atol=1e-4)


def test_lifter_input_errors(trained_ige_run):
  lifter = lifter_lib.Lifter.from_run(trained_ige_run)
  with pytest.raises(ValueError, match=r"must be \[N, 16, 2\]"):
    lifter(np.zeros((2, 17, 2)), [1, 1, 0, 0])
  with pytest.raises(ValueError, match="keypoints_2d must be finite"):
    lifter(np.full((1, 16, 2), np.nan), [1, 1, 0, 0])
  with pytest.raises(ValueError, match="focal lengths"):
    lifter(np.ones((1, 16, 2)), [0, 1, 0, 0])
