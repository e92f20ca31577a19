"""bin/lift.py and ige_tf.pose.lift: keypoint files -> 3D poses JSON."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ige_tf.pose import inference
from ige_tf.pose import lift
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline

CAMERA = {"f": [1145.0, 1144.0], "c": [512.0, 515.0],
          "k": [-0.207, 0.247, -0.003], "p": [-0.0011, -0.001],
          "width": 1000, "height": 1002}


@pytest.fixture(scope="module")
def lifter(ige_run):
  return inference.load_lifter(os.path.join(ige_run, "export"))


@pytest.fixture(scope="module")
def mpii_poses(records_gt):
  """Three real MPII16 poses in pixels (from the test records)."""
  features, _ = next(iter(pipeline.pose_dataset(records_gt, "test", 3,
                                                shuffle=False)))
  f = features["intrinsics"][:, :2].numpy()
  c = features["intrinsics"][:, 2:].numpy()
  return features["pose_2d"].numpy() * f[:, None] + c[:, None]


def coco_from_mpii(pose):
  """A COCO-17 detection consistent with an MPII16 pose (face around the
  head, ears either side)."""
  m = {name: pose[i] for i, name in enumerate(skeleton.MPII16.joints)}
  head = m["neck"] + 0.5 * (m["head_top"] - m["neck"])
  side = np.array([8.0, 0.0])
  coco = {"nose": head, "l_eye": head + side / 2, "r_eye": head - side / 2,
          "l_ear": head + side, "r_ear": head - side}
  coco.update({n: m[n] for n in skeleton.COCO17.joints if n in m})
  return np.stack([coco[n] for n in skeleton.COCO17.joints])


def detection(pose17, image_id=7, confidence=0.9, score=0.95):
  values = np.concatenate([pose17, np.full((17, 1), confidence)], axis=1)
  return {"image_id": image_id, "category_id": 1, "score": score,
          "keypoints": values.reshape(-1).tolist()}


def write(path, value):
  with open(path, "w") as f:
    json.dump(value, f)
  return str(path)


def test_lift_binary_on_coco_detections(ige_run, mpii_poses, lifter,
                                        tmp_path, repo_dir):
  detections = [detection(coco_from_mpii(p), image_id=i)
                for i, p in enumerate(mpii_poses)]
  keypoints = write(tmp_path / "detections.json", detections)
  intrinsics = write(tmp_path / "camera.json", CAMERA)
  out = tmp_path / "poses.json"
  cmd = [sys.executable, os.path.join(repo_dir, "bin", "lift.py"),
         f"--model={os.path.join(ige_run, 'export')}",
         f"--keypoints={keypoints}", f"--intrinsics={intrinsics}",
         f"--out={out}", f"--png_dir={tmp_path / 'png'}", "--steps"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["joints"] == list(skeleton.H36M16.joints)
  assert [p["image_id"] for p in result["poses"]] == [0, 1, 2]
  assert result["skipped"] == []
  # The same numbers as the model on the COCO -> MPII16 conversion.
  converted = np.stack([skeleton.coco17_to_mpii16(coco_from_mpii(p))
                        for p in mpii_poses])
  n = len(converted)
  expected = lifter(converted, np.tile(CAMERA["f"], (n, 1)),
                    np.tile(CAMERA["c"], (n, 1)), np.tile(CAMERA["k"], (n, 1)),
                    np.tile(CAMERA["p"], (n, 1)))
  got = np.array([p["pose_3d"] for p in result["poses"]])
  np.testing.assert_allclose(got, expected["final"], atol=2e-6)
  assert np.array(result["poses"][0]["steps"]).shape == (5, 16, 3)
  assert sorted(os.listdir(tmp_path / "png")) == ["0_0.png", "1_1.png",
                                                  "2_2.png"]


def test_plain_mpii16_list_equals_the_model(mpii_poses, lifter, tmp_path):
  keypoints = write(tmp_path / "plain.json", mpii_poses.tolist())
  cam = lift.Camera(CAMERA["f"], CAMERA["c"], CAMERA["k"], CAMERA["p"])
  result = lift.lift_file(lifter, keypoints, str(tmp_path / "out.json"),
                          camera=cam)
  assert result["keypoint_format"] == "mpii16"
  n = len(mpii_poses)
  expected = lifter(mpii_poses, np.tile(cam.f, (n, 1)), np.tile(cam.c, (n, 1)),
                    np.tile(cam.k, (n, 1)), np.tile(cam.p, (n, 1)))["final"]
  np.testing.assert_allclose([p["pose_3d"] for p in result["poses"]],
                             expected, atol=2e-6)


def test_invalid_keypoints_error_names_detection_and_joint(mpii_poses,
                                                           lifter, tmp_path):
  good = detection(coco_from_mpii(mpii_poses[0]), image_id=11)
  weak = detection(coco_from_mpii(mpii_poses[1]), image_id=12)
  weak["keypoints"][3 * skeleton.COCO17.index("l_wrist") + 2] = 0.05
  outside = detection(coco_from_mpii(mpii_poses[2]), image_id=13)
  outside["keypoints"][3 * skeleton.COCO17.index("r_ankle") + 1] = 1500.0
  keypoints = write(tmp_path / "d.json", [good, weak, outside])
  intrinsics = write(tmp_path / "camera.json", CAMERA)
  with pytest.raises(lift.LiftInputError,
                     match=r"d.json: detection 1 \(image_id 12\): invalid "
                     r"joints: l_wrist \(confidence 0.05 < 0.2\)"):
    lift.lift_file(lifter, keypoints, str(tmp_path / "o.json"),
                   intrinsics_path=intrinsics)
  result = lift.lift_file(lifter, keypoints, str(tmp_path / "o.json"),
                          intrinsics_path=intrinsics, on_invalid="skip")
  assert [p["image_id"] for p in result["poses"]] == [11]
  assert [(s["detection"], s["image_id"]) for s in result["skipped"]] == [
      (1, 12), (2, 13)]
  assert "r_ankle (at (" in result["skipped"][1]["reason"]
  assert "outside the 1000x1002 image" in result["skipped"][1]["reason"]


def test_missing_face_keypoints_are_filled_from_the_others(mpii_poses, lifter,
                                                           tmp_path):
  full = coco_from_mpii(mpii_poses[0])
  det = detection(full)
  for ear in ("l_ear", "r_ear"):
    det["keypoints"][3 * skeleton.COCO17.index(ear) + 2] = 0.0  # not labelled
  keypoints = write(tmp_path / "ears.json", {"annotations": [det]})
  cam = lift.Camera(CAMERA["f"], CAMERA["c"])
  fmt, [parsed] = lift.read_keypoints(keypoints)
  pose_2d, reason = lift.to_mpii16(fmt, parsed["keypoints"], cam, 0.2)
  assert reason is None
  # Ears replaced by the mean of nose and eyes: the head is that mean.
  face = full[[skeleton.COCO17.index(n) for n in ("nose", "l_eye", "r_eye")]]
  filled = full.copy()
  for ear in ("l_ear", "r_ear"):
    filled[skeleton.COCO17.index(ear)] = face.mean(0)
  np.testing.assert_allclose(pose_2d, skeleton.coco17_to_mpii16(filled))
  no_face = detection(full)
  for name in ("nose", "l_eye", "r_eye", "l_ear", "r_ear"):
    no_face["keypoints"][3 * skeleton.COCO17.index(name) + 2] = 0.0
  _, reason = lift.to_mpii16("coco", np.asarray(no_face["keypoints"]).reshape(
      17, 3), cam, 0.2)
  assert reason.startswith("invalid joints: no valid face keypoint (nose")


def test_bad_files_are_clear_errors(tmp_path, lifter):
  with pytest.raises(lift.LiftInputError, match="nope.json: no such keypoints"):
    lift.read_keypoints(str(tmp_path / "nope.json"))
  bad = write(tmp_path / "short.json", [{"image_id": 3, "keypoints": [1, 2]}])
  with pytest.raises(lift.LiftInputError,
                     match=r"detection 0 \(image_id 3\) has 2 keypoint values, "
                     "expected 51"):
    lift.read_keypoints(bad)
  wrong = write(tmp_path / "wrong.json", [[[0, 0]] * 15])
  with pytest.raises(lift.LiftInputError,
                     match=r"pose 0 has shape \(15, 2\), expected \[16, 2\]"):
    lift.read_keypoints(wrong)
  cam = write(tmp_path / "cam.json", {"f": [1000.0], "c": [1, 2]})
  with pytest.raises(lift.LiftInputError, match="'f' must be 2 finite numbers"):
    lift.load_intrinsics(cam)
  plain = write(tmp_path / "plain.json", [[[500, 500]] * 16])
  with pytest.raises(lift.LiftInputError, match="no intrinsics for this image"):
    lift.lift_file(lifter, plain, str(tmp_path / "o.json"))
