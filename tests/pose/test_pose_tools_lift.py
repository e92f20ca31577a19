"""bin/lift.py and ige_tf.pose.lift: keypoint files -> 3D poses JSON."""
import json
import os

import numpy as np
import pytest

from ige_tf.pose import lift
from ige_tf.pose import lifter as lifter_lib
from ige_tf.pose import skeleton
from ige_tf.pose.data import pipeline
import programs  # pylint: disable=import-error

CAMERA = {"f": [1145.0, 1144.0], "c": [512.0, 515.0],
          "k": [-0.207, 0.247, -0.003], "p": [-0.0011, -0.001],
          "width": 1000, "height": 1002}


@pytest.fixture(scope="module")
def lifter(ige_run):
  return lifter_lib.Lifter.from_export(os.path.join(ige_run, "export"))


def intrinsics_of(cam, n):
  return (np.tile(np.concatenate([cam["f"], cam["c"]]), (n, 1)),
          np.tile(np.concatenate([cam.get("k", [0, 0, 0]),
                                  cam.get("p", [0, 0])]), (n, 1)))


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


@pytest.fixture(scope="module")
def lift_binary_runs(ige_run, mpii_poses, build_once):
  """`bin/lift.py` on COCO detections (with --png_dir and --steps), then on
  a detection with an undetected joint, in one process
  (`programs.run_programs`; built once per test run): `(directory of the
  inputs and outputs, [result of each run])`."""
  def build(root):
    detections = [detection(coco_from_mpii(p), image_id=i)
                  for i, p in enumerate(mpii_poses)]
    bad = detection(coco_from_mpii(mpii_poses[0]), image_id=5)
    bad["keypoints"] = [0.0] * 34 + [0.9] * 17
    program = os.path.join(programs.REPO_DIR, "bin", "lift.py")
    model = f"--model={os.path.join(ige_run, 'export')}"
    path = lambda name: os.path.join(root, name)  # noqa: E731
    return programs.run_programs([
        ("lift", [program, model,
                  f"--keypoints={write(path('detections.json'), detections)}",
                  f"--intrinsics={write(path('camera.json'), CAMERA)}",
                  f"--out={path('poses.json')}", f"--png_dir={path('png')}",
                  "--steps"]),
        ("lift", [program, model,
                  f"--keypoints={write(path('zero.json'), [bad])}",
                  f"--out={path('o.json')}", "--image_size=640,480"])],
                                 cwd=root)
  return build_once("lift_binary_runs", build)


def test_lift_binary_on_coco_detections(lift_binary_runs, mpii_poses, lifter):
  root, (proc, _) = lift_binary_runs
  assert proc["code"] == 0 and proc["raised"] is None, proc
  result = json.loads(open(os.path.join(root, "poses.json")).read())
  assert result["joints"] == list(skeleton.H36M16.joints)
  assert [p["image_id"] for p in result["poses"]] == [0, 1, 2]
  assert result["skipped"] == []
  # The same numbers as the model on the COCO -> MPII16 conversion.
  converted = np.stack([skeleton.coco17_to_mpii16(coco_from_mpii(p))
                        for p in mpii_poses])
  expected, _ = lifter(converted, *intrinsics_of(CAMERA, len(converted)))
  got = np.array([p["pose_3d"] for p in result["poses"]])
  np.testing.assert_allclose(got, expected, atol=2e-6)
  assert result["assumptions"] == []
  assert result["poses"][0]["camera"]["assumed"] is None
  assert all(p["reprojection_px"] >= 0 for p in result["poses"])
  summary = json.loads(proc["out"].strip().splitlines()[-1])
  assert summary["poses"] == 3 and summary["skipped"] == 0
  assert np.array(result["poses"][0]["steps"]).shape == (5, 16, 3)
  assert sorted(os.listdir(os.path.join(root, "png"))) == [
      "0_0.png", "1_1.png", "2_2.png"]


def test_plain_mpii16_list_equals_the_model(mpii_poses, lifter, tmp_path):
  keypoints = write(tmp_path / "plain.json", mpii_poses.tolist())
  cam = lift.Camera(CAMERA["f"], CAMERA["c"], CAMERA["k"], CAMERA["p"])
  result = lift.lift_file(lifter, keypoints, str(tmp_path / "out.json"),
                          camera=cam)
  assert result["keypoint_format"] == "mpii16"
  expected, _ = lifter(mpii_poses, *intrinsics_of(CAMERA, len(mpii_poses)))
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
  with pytest.raises(lift.LiftInputError,
                     match="no intrinsics and no image size for this image"):
    lift.lift_file(lifter, plain, str(tmp_path / "o.json"))


@pytest.mark.parametrize("change, reason", [
    ("zero", r"invalid joints: .*\(at \(0, 0\), COCO's mark of an "
     "undetected keypoint\)"),
    ("one_pixel", r"degenerate 2D extent: the keypoints span 0.0 x 0.0 px"),
    ("huge", r"invalid joints: l_knee \(at \(1e\+30, .*beyond 100000 px\)"),
    ("nan", r"invalid joints: l_knee \(not finite\)"),
])
def test_non_detections_are_refused_or_recorded(mpii_poses, lifter, tmp_path,
                                                change, reason):
  """An all-zero person at confidence 0.9, all joints on one pixel, huge
  and NaN keypoints: an error naming the detection, or a recorded skip
  with --on_invalid=skip; never a pose, never NaN in the file."""
  good = detection(coco_from_mpii(mpii_poses[0]), image_id=1)
  bad = detection(coco_from_mpii(mpii_poses[1]), image_id=2)
  values = np.asarray(bad["keypoints"]).reshape(17, 3)
  knee = skeleton.COCO17.index("l_knee")
  if change == "zero":
    values[:, :2] = 0.0
  elif change == "one_pixel":
    values[:, :2] = [400.0, 300.0]
  elif change == "huge":
    values[knee, 0] = 1e30
  else:
    values[knee, 0] = np.nan
  bad["keypoints"] = values.reshape(-1).tolist()
  path = tmp_path / "dets.json"
  path.write_text(json.dumps([good, bad]))  # NaN is written as NaN
  cam = lift.Camera(CAMERA["f"], CAMERA["c"])
  with pytest.raises(lift.LiftInputError,
                     match=r"dets.json: detection 1 \(image_id 2\): " + reason):
    lift.lift_file(lifter, str(path), str(tmp_path / "o.json"), camera=cam)
  out = tmp_path / "o.json"
  result = lift.lift_file(lifter, str(path), str(out), camera=cam,
                          on_invalid="skip")
  assert [p["image_id"] for p in result["poses"]] == [1]
  assert [s["image_id"] for s in result["skipped"]] == [2]
  text = out.read_text()
  assert "NaN" not in text and "Infinity" not in text
  json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))


def test_unknown_camera_is_assumed_from_the_image_size(mpii_poses, lifter,
                                                       tmp_path):
  """COCO results have no intrinsics: sizes from the annotation file's
  "images", the focal length from the default field of view (or --fov /
  --focal), recorded as an assumption."""
  dets = [detection(coco_from_mpii(p), image_id=i + 100)
          for i, p in enumerate(mpii_poses[:2])]
  results = write(tmp_path / "results.json", dets)
  images = write(tmp_path / "instances.json", {"images": [
      {"id": 100, "width": 1000, "height": 1002},
      {"id": 101, "width": 1200, "height": 800}]})
  out = str(tmp_path / "o.json")
  result = lift.lift_file(lifter, results, out, images_path=images)
  f100 = 1002 / 2 / np.tan(np.radians(30))
  cams = [p["camera"] for p in result["poses"]]
  np.testing.assert_allclose(cams[0]["f"], [f100, f100])
  np.testing.assert_allclose(cams[0]["c"], [500, 501])
  np.testing.assert_allclose(cams[1]["c"], [600, 400])
  assert cams[0]["assumed"] == (
      f"focal {f100:.1f} px from a 60 degree field of view over the 1002 px "
      "side; principal point at the centre of the 1000x1002 image; no "
      "distortion")
  assert result["assumptions"] == [c["assumed"] for c in cams]
  # The pose is the lifter's with that camera.
  expected, _ = lifter(skeleton.coco17_to_mpii16(coco_from_mpii(
      mpii_poses[0]))[None], [f100, f100, 500, 501])
  np.testing.assert_allclose(result["poses"][0]["pose_3d"], expected[0],
                             atol=2e-6)
  narrow = lift.lift_file(lifter, results, out, images_path=images,
                          fov_deg=40)
  f40 = 1002 / 2 / np.tan(np.radians(20))
  np.testing.assert_allclose(narrow["poses"][0]["camera"]["f"], [f40, f40])
  given = lift.lift_file(lifter, results, out, image_size=(1000, 1002),
                         focal=[900.0])
  assert given["poses"][1]["camera"]["f"] == [900.0, 900.0]
  assert given["assumptions"][0].startswith("focal 900, 900 px as given")


def test_binary_errors_are_one_line(lift_binary_runs):
  root, (_, proc) = lift_binary_runs
  keypoints = os.path.join(root, "zero.json")
  assert proc["code"] == 1 and proc["raised"] is None, proc
  last = proc["err"].strip().splitlines()[-1]
  assert last.startswith(f"lift.py: error: {keypoints}: detection 0 "
                         "(image_id 5): invalid joints: l_shoulder (at (0, "
                         "0), COCO's mark of an undetected keypoint)")
  assert last.endswith("Use --on_invalid=skip to leave such detections out.")
  assert "Traceback" not in proc["err"]
  assert not os.path.exists(os.path.join(root, "o.json"))
