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

Beyond single joints, a detection is refused when it is no detection: a
keypoint exactly at (0, 0) (COCO's mark of an undetected keypoint, whatever
its confidence), a coordinate beyond `MAX_PIXELS`, or a degenerate 2D extent
(the 16 joints span less than `min_extent_px` in both directions, e.g. all
on one pixel).

Intrinsics (JSON): `{"f": [fx, fy], "c": [cx, cy], "k": [k1, k2, k3],
"p": [p1, p2], "width": W, "height": H}` (k, p, width, height optional; k, p
default to 0), or a dict mapping image ids (as strings) to such entries.

Unknown camera (`assumed_camera`): without intrinsics for an image, its
size (from `image_size`, or the "images" list of a COCO annotation / image
file: `{"images": [{"id", "width", "height"}, ...]}`) gives the principal
point at the image centre, no distortion, and the focal length `focal`, or
by default the one of a `DEFAULT_FOV_DEG` field of view over the image's
longer side. The assumption is recorded with every pose it affects.

Lifting goes through `lifter.Lifter` (view normalization; the model's
inner-step safeguard, whose rejected steps are listed per pose). The output
is strict JSON (`allow_nan=False`); a non-finite model output is an invalid
detection, never a NaN in the file.
"""
import json
import math
import os

import numpy as np

from ige_tf import atomic
from ige_tf.pose import skeleton

FACE = ("nose", "l_eye", "r_eye", "l_ear", "r_ear")
COCO_BODY = ("l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
             "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
             "r_ankle")
ON_INVALID = ("error", "skip")
# A typical camera's field of view over the image's longer side, degrees
# (Human3.6M's: 47; phone main cameras: about 65): the focal length assumed
# when a detection's image has no intrinsics.
DEFAULT_FOV_DEG = 60.0
# No camera has images this large: a keypoint beyond is a broken value.
MAX_PIXELS = 1e5
# A person spanning less than this (pixels, both directions) is no detection.
MIN_EXTENT_PX = 10.0


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


def read_image_sizes(path):
  """`{image id (str): (width, height)}` from a COCO file's "images" list.

  Args:
    path: a COCO annotation or image-info JSON (`{"images": [{"id",
      "width", "height"}, ...]}`).

  Raises:
    LiftInputError: unreadable, no "images", or a bad entry.
  """
  data = _load_json(path, "COCO images")
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise LiftInputError(f"{path}: expected a COCO file with an 'images' "
                         "list of {id, width, height}")
  sizes = {}
  for i, image in enumerate(data["images"]):
    try:
      size = (float(image["width"]), float(image["height"]))
      key = str(image["id"])
    except (KeyError, TypeError, ValueError):
      raise LiftInputError(f"{path}: images[{i}] needs id, width and height, "
                           f"got {image!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in size):
      raise LiftInputError(f"{path}: images[{i}] (id {key}) has size "
                           f"{size}; width and height must be positive")
    sizes[key] = size
  return sizes


def assumed_camera(width, height, focal=None, fov_deg=None):
  """The camera assumed for an image of known size and unknown intrinsics.

  Args:
    width, height: image size, pixels.
    focal: None, or the focal length in pixels (one number, or fx, fy).
    fov_deg: field of view over the longer image side, degrees (default
      `DEFAULT_FOV_DEG`); ignored when `focal` is given.

  Returns:
    `(Camera, assumption)`: principal point at the image centre, no
    distortion; `assumption` says so in words (recorded in the output).
  """
  if focal is not None:
    f = np.broadcast_to(np.asarray(focal, np.float64).reshape(-1), 2)
    how = f"focal {f[0]:g}, {f[1]:g} px as given"
  else:
    fov = DEFAULT_FOV_DEG if fov_deg is None else float(fov_deg)
    if not 0 < fov < 180:
      raise LiftInputError(f"field of view must be in (0, 180) degrees, got "
                           f"{fov:g}")
    f = np.full(2, max(width, height) / 2 / math.tan(math.radians(fov) / 2))
    how = (f"focal {f[0]:.1f} px from a {fov:g} degree field of view over "
           f"the {max(width, height):g} px side")
  return (Camera(f, (width / 2, height / 2), width=width, height=height),
          f"{how}; principal point at the centre of the {width:g}x{height:g}"
          " image; no distortion")


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
    elif abs(x) > MAX_PIXELS or abs(y) > MAX_PIXELS:
      problems.append(f"{name} (at ({x:.3g}, {y:.3g}), beyond "
                      f"{MAX_PIXELS:g} px)")
    elif x == 0 and y == 0:
      problems.append(f"{name} (at (0, 0), COCO's mark of an undetected "
                      "keypoint)")
    elif conf < min_confidence:
      problems.append(f"{name} (confidence {conf:.3g} < {min_confidence:g})")
    elif camera.width is not None and camera.height is not None and not (
        0 <= x <= camera.width and 0 <= y <= camera.height):
      problems.append(f"{name} (at ({x:.1f}, {y:.1f}) outside the "
                      f"{camera.width:g}x{camera.height:g} image)")
  return problems


def to_mpii16(fmt, keypoints, camera, min_confidence,
              min_extent_px=MIN_EXTENT_PX):
  """One detection's keypoints -> MPII16 pixels `[16, 2]`, if it is one.

  Returns:
    `(pose_2d or None, reason or None)`.
  """
  pose_2d, reason = _joints_to_mpii16(fmt, keypoints, camera, min_confidence)
  if reason is None:
    extent = np.ptp(pose_2d, axis=0)
    if np.all(extent < min_extent_px):
      return None, (f"degenerate 2D extent: the keypoints span "
                    f"{extent[0]:.1f} x {extent[1]:.1f} px (at least "
                    f"{min_extent_px:g} px needed in one direction)")
  return pose_2d, reason


def _joints_to_mpii16(fmt, keypoints, camera, min_confidence):
  """`to_mpii16` without the extent check."""
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


def _finite_or_none(value):
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return value if math.isfinite(value) else None
  return value


def _rounded(array):
  return np.round(np.asarray(array, np.float64), 6).tolist()


def lift_file(model, keypoints_path, out_path, intrinsics_path=None,
              camera=None, image_size=None, images_path=None, focal=None,
              fov_deg=None, min_confidence=0.2, min_extent_px=MIN_EXTENT_PX,
              on_invalid="error", png_dir=None, include_steps=False):
  """Lifts every detection of a keypoint file and writes a JSON of 3D poses.

  Args:
    model: a `.tflite` file, SavedModel or run directory, or a
      `lifter.Lifter`.
    keypoints_path: keypoint JSON (module docstring).
    out_path: output JSON path (written atomically).
    intrinsics_path: intrinsics JSON.
    camera: a `Camera` used for every image without per-image intrinsics
      (overrides the file's default).
    image_size: `(width, height)` of every image whose size is not listed
      otherwise (out-of-image check; assumed camera).
    images_path: a COCO annotation / image-info file with "images" (sizes
      by image id); a COCO annotation keypoint file is read for them too.
    focal, fov_deg: the assumed camera's focal length (px) or field of view
      (degrees, longer side; default `DEFAULT_FOV_DEG`), for images with a
      size but no intrinsics.
    min_confidence: keypoints below are invalid.
    min_extent_px: smaller 2D extents are not a person (module docstring).
    on_invalid: "error" or "skip" (module docstring).
    png_dir: optional folder for one Figure-3-style PNG per pose
      (`<image_id>_<detection>.png`).
    include_steps: also write every inner step's pose and reprojection.

  Returns:
    The written dict: "joints" (H36M16 names), "units", "keypoint_format",
    "assumptions" (distinct camera assumptions made), "poses" (a list of
    {"detection", "image_id", "score", "pose_3d" [16][3],
    "reprojection_px" (final step), "camera" {"f", "c", "k", "p",
    "assumed" (text or null)}, "safeguard_rejected_steps" (inner steps
    1..T the safeguard refused), "steps"? [T+1][16][3],
    "steps_reprojection_px"? [T+1]}) and "skipped" (a list of {"detection",
    "image_id", "reason"}).

  Raises:
    LiftInputError: unreadable files, no camera for an image, or (with
      `on_invalid="error"`) an invalid detection; the message names the
      file, the detection index and its image id.
  """
  from ige_tf.pose import lifter as lifter_lib  # pylint: disable=import-outside-toplevel
  from ige_tf.pose import visualize  # pylint: disable=import-outside-toplevel
  if on_invalid not in ON_INVALID:
    raise ValueError(f"on_invalid must be one of {ON_INVALID}, got "
                     f"{on_invalid!r}")
  default, per_image = None, {}
  if intrinsics_path:
    default, per_image = load_intrinsics(intrinsics_path)
  if camera is not None:
    default = camera
  sizes = {}
  keypoint_data = _load_json(keypoints_path, "keypoints")
  if isinstance(keypoint_data, dict) and "images" in keypoint_data:
    sizes.update(read_image_sizes(keypoints_path))
  if images_path:
    sizes.update(read_image_sizes(images_path))
  fmt, detections = read_keypoints(keypoints_path)
  valid, skipped = [], []

  def refuse(i, det, reason):
    if on_invalid == "error":
      raise LiftInputError(
          f"{keypoints_path}: detection {i} (image_id {det['image_id']}): "
          f"{reason}. Use --on_invalid=skip to leave such detections out.")
    skipped.append({"detection": i, "image_id": det["image_id"],
                    "reason": reason})

  for i, det in enumerate(detections):
    key = str(det["image_id"])
    cam, assumption = per_image.get(key, default), None
    size = sizes.get(key, image_size)
    if cam is None and size is not None:
      cam, assumption = assumed_camera(*size, focal=focal, fov_deg=fov_deg)
    if cam is None:
      raise LiftInputError(
          f"{keypoints_path}: detection {i} (image_id {det['image_id']}): no "
          "intrinsics and no image size for this image: give --intrinsics "
          "or --focal/--center, or the image size (--image_size, or "
          "--images=a COCO annotation file) to assume a camera "
          f"(docs/lifting.md)")
    if cam.width is None and size is not None:
      cam = Camera(cam.f, cam.c, cam.k, cam.p, *size)
    pose_2d, reason = to_mpii16(fmt, det["keypoints"], cam, min_confidence,
                                min_extent_px)
    if reason is not None:
      refuse(i, det, reason)
      continue
    valid.append((i, det, cam, assumption, pose_2d))
  if valid:
    lifter = model if isinstance(model, lifter_lib.Lifter) else (
        lifter_lib.Lifter.load(model))
    result = lifter.lift(
        np.stack([v[4] for v in valid]),
        np.stack([np.concatenate([v[2].f, v[2].c]) for v in valid]),
        np.stack([np.concatenate([v[2].k, v[2].p]) for v in valid]))
  poses, assumptions = [], []
  for j, (i, det, cam, assumption, pose_2d) in enumerate(valid):
    steps = result["steps"][:, j]
    reprojection = result["reprojection_px"][:, j]
    if not (np.all(np.isfinite(steps)) and np.all(np.isfinite(
        reprojection))):
      refuse(i, det, "the model's 3D pose is not finite (or behind the "
             "camera)")
      continue
    if assumption is not None and assumption not in assumptions:
      assumptions.append(assumption)
    entry = {"detection": i, "image_id": det["image_id"],
             "score": _finite_or_none(det["score"]),
             "pose_3d": _rounded(steps[-1]),
             "reprojection_px": round(float(reprojection[-1]), 3),
             "camera": {"f": cam.f.tolist(), "c": cam.c.tolist(),
                        "k": cam.k.tolist(), "p": cam.p.tolist(),
                        "assumed": assumption},
             "safeguard_rejected_steps": [
                 int(t) + 1 for t in np.flatnonzero(result["rejected"][:, j])]}
    if include_steps:
      entry["steps"] = _rounded(steps)
      entry["steps_reprojection_px"] = np.round(reprojection, 3).tolist()
    poses.append(entry)
    if png_dir:
      image = "pose" if det["image_id"] is None else det["image_id"]
      visualize.figure3(os.path.join(png_dir, f"{image}_{i}.png"), pose_2d,
                        cam.f, cam.c, cam.k, cam.p, steps,
                        title=f"detection {i} image {det['image_id']}")
  output = {"joints": list(skeleton.H36M16.joints),
            "units": "metres, camera frame (x right, y down, z forward)",
            "keypoint_format": fmt, "assumptions": assumptions,
            "poses": poses, "skipped": skipped}
  text = json.dumps(output, indent=1, allow_nan=False)
  folder = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(folder, exist_ok=True)
  atomic.write_text(out_path, text)
  return output
