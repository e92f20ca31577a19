"""Lifting 2D keypoints from files to camera-frame 3D poses (`bin/lift.py`).

Keypoint files (JSON), detected automatically:
  * COCO results: a list of `{"image_id", "keypoints": [x1, y1, c1, ...
    x17, y17, c17], "score"?, "category_id"?}` (17 COCO keypoints, pixels,
    c a confidence);
  * a COCO annotation file: `{"annotations": [...]}` with the same
    `keypoints` (c is the visibility flag 0/1/2; 0 = not labelled);
  * plain: a list of poses, each `[16][2]` (or `[16][3]` with a confidence)
    in MPII16 order: r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle, pelvis,
    thorax, neck (upper neck), head_top, r_wrist, r_elbow, r_shoulder,
    l_shoulder, l_elbow, l_wrist (`skeleton.MPII16`).

COCO keypoints become MPII16 with `skeleton.coco17_to_mpii16`; the head
points it derives (neck, head_top) use the mean of the *valid* face keypoints
(nose, eyes, ears), so a missing ear is filled from the others. A keypoint is
invalid when it is not finite, its confidence is below `min_confidence`, or
it lies outside the image (when the image size is known). A detection is
liftable when all 12 COCO body keypoints (shoulders, elbows, wrists, hips,
knees, ankles) and at least one face keypoint are valid (plain input: all 16
joints). Otherwise, by `on_invalid`: "error" raises `LiftInputError` naming
the file, the detection, its image id and the offending joints; "skip" leaves
the detection out and lists it, with the reason, under "skipped".

Intrinsics (JSON): `{"f": [fx, fy], "c": [cx, cy], "k": [k1, k2, k3],
"p": [p1, p2], "width": W, "height": H}` (k, p, width, height optional; k, p
default to 0), or a dict mapping image ids (as strings) to such entries.
"""
import json
import math
import os

import numpy as np

from ige_tf.pose import skeleton

FACE = ("nose", "l_eye", "r_eye", "l_ear", "r_ear")
COCO_BODY = ("l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
             "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
             "r_ankle")
ON_INVALID = ("error", "skip")


class LiftInputError(ValueError):
  """Unusable keypoints or intrinsics; the message names file and problem."""


def _load_json(path, what):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise LiftInputError(f"{path}: no such {what} file") from None
  except json.JSONDecodeError as e:
    raise LiftInputError(f"{path}: not valid JSON ({e})") from None


def _vector(entry, key, size, path, default=None):
  value = entry.get(key, default)
  if value is None:
    raise LiftInputError(f"{path}: intrinsics need {key!r} ({size} numbers)")
  value = np.asarray(value, np.float64).reshape(-1)
  if value.size != size or not np.all(np.isfinite(value)):
    raise LiftInputError(f"{path}: intrinsics {key!r} must be {size} finite "
                         f"numbers, got {entry.get(key)!r}")
  return value


class Camera:
  """Intrinsics of one image: f, c `[2]`, k `[3]`, p `[2]`, size or None."""

  def __init__(self, f, c, k=(0, 0, 0), p=(0, 0), width=None, height=None):
    self.f = np.asarray(f, np.float64).reshape(2)
    self.c = np.asarray(c, np.float64).reshape(2)
    self.k = np.asarray(k, np.float64).reshape(3)
    self.p = np.asarray(p, np.float64).reshape(2)
    self.width = None if width is None else float(width)
    self.height = None if height is None else float(height)
    if np.any(self.f <= 0):
      raise LiftInputError(f"focal lengths must be positive, got {self.f}")

  @classmethod
  def from_entry(cls, entry, path):
    if not isinstance(entry, dict):
      raise LiftInputError(f"{path}: an intrinsics entry must be an object "
                           f"with f and c, got {entry!r}")
    return cls(_vector(entry, "f", 2, path), _vector(entry, "c", 2, path),
               _vector(entry, "k", 3, path, (0, 0, 0)),
               _vector(entry, "p", 2, path, (0, 0)),
               entry.get("width"), entry.get("height"))


def load_intrinsics(path):
  """Reads an intrinsics file.

  Returns:
    `(default, per_image)`: a `Camera` for every image (or None) and a dict
    image id (str) -> `Camera`.
  """
  data = _load_json(path, "intrinsics")
  if not isinstance(data, dict):
    raise LiftInputError(f"{path}: intrinsics must be a JSON object")
  if "f" in data:
    return Camera.from_entry(data, path), {}
  return None, {str(key): Camera.from_entry(value, f"{path}[{key!r}]")
                for key, value in data.items()}


def read_keypoints(path):
  """Reads a keypoint file into detections.

  Returns:
    `(format, detections)`: format "coco" or "mpii16"; detections a list of
    dicts with "image_id" (or None), "score" (or None) and "keypoints"
    float64 `[17, 3]` (COCO) or `[16, 3]` (MPII16) as (x, y, confidence),
    confidence 1 where the file gives none.
  """
  data = _load_json(path, "keypoints")
  if isinstance(data, dict):
    if "annotations" not in data:
      raise LiftInputError(f"{path}: a JSON object must be a COCO annotation "
                           "file with 'annotations'")
    data = data["annotations"]
    if not isinstance(data, list):
      raise LiftInputError(f"{path}: 'annotations' must be a list")
  if not isinstance(data, list):
    raise LiftInputError(f"{path}: expected a list of detections or poses")
  if not data:
    return "coco", []
  if isinstance(data[0], dict):
    detections = []
    for i, item in enumerate(data):
      if not isinstance(item, dict) or "keypoints" not in item:
        raise LiftInputError(f"{path}: detection {i} has no 'keypoints'")
      values = np.asarray(item["keypoints"], np.float64).reshape(-1)
      if values.size != 51:
        raise LiftInputError(
            f"{path}: detection {i} (image_id {item.get('image_id')}) has "
            f"{values.size} keypoint values, expected 51 (17 COCO keypoints "
            "x, y, confidence)")
      detections.append({"image_id": item.get("image_id"),
                         "score": item.get("score"),
                         "keypoints": values.reshape(17, 3)})
    return "coco", detections
  detections = []
  for i, pose in enumerate(data):
    values = np.asarray(pose, np.float64)
    if values.ndim != 2 or values.shape[0] != 16 or values.shape[1] not in (
        2, 3):
      raise LiftInputError(
          f"{path}: pose {i} has shape {values.shape}, expected [16, 2] or "
          "[16, 3] in MPII16 order (docs/pose_model.md)")
    if values.shape[1] == 2:
      values = np.concatenate([values, np.ones((16, 1))], axis=1)
    detections.append({"image_id": None, "score": None, "keypoints": values})
  return "mpii16", detections


def _invalid_joints(keypoints, names, camera, min_confidence):
  """Names of invalid keypoints with their reason."""
  problems = []
  for (x, y, conf), name in zip(keypoints, names):
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(conf)):
      problems.append(f"{name} (not finite)")
    elif conf < min_confidence:
      problems.append(f"{name} (confidence {conf:.3g} < {min_confidence:g})")
    elif camera.width is not None and camera.height is not None and not (
        0 <= x <= camera.width and 0 <= y <= camera.height):
      problems.append(f"{name} (at ({x:.1f}, {y:.1f}) outside the "
                      f"{camera.width:g}x{camera.height:g} image)")
  return problems


def to_mpii16(fmt, keypoints, camera, min_confidence):
  """One detection's keypoints -> MPII16 pixels `[16, 2]`.

  Returns:
    `(pose_2d or None, reason or None)`.
  """
  if fmt == "mpii16":
    problems = _invalid_joints(keypoints, skeleton.MPII16.joints, camera,
                               min_confidence)
    if problems:
      return None, "invalid joints: " + ", ".join(problems)
    return keypoints[:, :2].copy(), None
  names = skeleton.COCO17.joints
  problems = _invalid_joints(keypoints, names, camera, min_confidence)
  bad = {p.split(" ")[0] for p in problems}
  body = [p for p in problems if p.split(" ")[0] in COCO_BODY]
  face_valid = [n for n in FACE if n not in bad]
  if body or not face_valid:
    reasons = body + ([] if face_valid else
                      ["no valid face keypoint (" + ", ".join(
                          p for p in problems if p.split(" ")[0] in FACE) +
                       ")"])
    return None, "invalid joints: " + ", ".join(reasons)
  points = keypoints[:, :2].copy()
  face_mean = np.mean([points[names.index(n)] for n in face_valid], axis=0)
  for n in FACE:
    if n in bad:
      points[names.index(n)] = face_mean
  return skeleton.coco17_to_mpii16(points), None


def lift_file(model, keypoints_path, out_path, intrinsics_path=None,
              camera=None, min_confidence=0.2, on_invalid="error",
              png_dir=None, include_steps=False, batch_size=1024):
  """Lifts every detection of a keypoint file and writes a JSON of 3D poses.

  Args:
    model: a SavedModel or run directory, or an `inference.Lifter`.
    keypoints_path: keypoint JSON (module docstring).
    out_path: output JSON path (written atomically).
    intrinsics_path: intrinsics JSON; or give `camera`.
    camera: a `Camera` used for every image (overrides the file's default).
    min_confidence: keypoints below are invalid.
    on_invalid: "error" or "skip" (module docstring).
    png_dir: optional folder for one Figure-3-style PNG per pose
      (`<image_id>_<detection>.png`).
    include_steps: also write every inner step's pose.
    batch_size: poses per model call.

  Returns:
    The written dict: "joints" (H36M16 names), "units", "poses" (a list of
    {"detection", "image_id", "score", "pose_3d" [16][3], "steps"?}) and
    "skipped" (a list of {"detection", "image_id", "reason"}).

  Raises:
    LiftInputError: unreadable files, missing intrinsics, or (with
      `on_invalid="error"`) an invalid detection.
  """
  from ige_tf.pose import inference  # pylint: disable=import-outside-toplevel
  from ige_tf.pose import visualize  # pylint: disable=import-outside-toplevel
  if on_invalid not in ON_INVALID:
    raise ValueError(f"on_invalid must be one of {ON_INVALID}, got "
                     f"{on_invalid!r}")
  default, per_image = None, {}
  if intrinsics_path:
    default, per_image = load_intrinsics(intrinsics_path)
  if camera is not None:
    default = camera
  fmt, detections = read_keypoints(keypoints_path)
  valid, skipped = [], []
  for i, det in enumerate(detections):
    cam = per_image.get(str(det["image_id"]), default)
    if cam is None:
      raise LiftInputError(
          f"{keypoints_path}: detection {i} (image_id {det['image_id']}): no "
          "intrinsics for this image (give --intrinsics or --focal/--center)")
    pose_2d, reason = to_mpii16(fmt, det["keypoints"], cam, min_confidence)
    if reason is not None:
      if on_invalid == "error":
        raise LiftInputError(
            f"{keypoints_path}: detection {i} (image_id {det['image_id']}): "
            f"{reason}. Use --on_invalid=skip to leave such detections out.")
      skipped.append({"detection": i, "image_id": det["image_id"],
                      "reason": reason})
      continue
    valid.append((i, det, cam, pose_2d))
  lifter = model if callable(model) else inference.load_lifter(model)
  poses = []
  for start in range(0, len(valid), batch_size):
    chunk = valid[start:start + batch_size]
    out = lifter(np.stack([v[3] for v in chunk]),
                 np.stack([v[2].f for v in chunk]),
                 np.stack([v[2].c for v in chunk]),
                 np.stack([v[2].k for v in chunk]),
                 np.stack([v[2].p for v in chunk]))
    for j, (i, det, cam, pose_2d) in enumerate(chunk):
      entry = {"detection": i, "image_id": det["image_id"],
               "score": det["score"],
               "pose_3d": np.round(out["final"][j], 6).tolist()}
      if include_steps:
        entry["steps"] = np.round(out["steps"][:, j], 6).tolist()
      poses.append(entry)
      if png_dir:
        image = "pose" if det["image_id"] is None else det["image_id"]
        name = f"{image}_{i}.png"
        visualize.figure3(os.path.join(png_dir, name), pose_2d, cam.f, cam.c,
                          cam.k, cam.p, out["steps"][:, j],
                          title=f"detection {i} image {det['image_id']}")
  result = {"joints": list(skeleton.H36M16.joints),
            "units": "metres, camera frame (x right, y down, z forward)",
            "keypoint_format": fmt, "poses": poses, "skipped": skipped}
  folder = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(folder, exist_ok=True)
  tmp = out_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, out_path)
  return result
