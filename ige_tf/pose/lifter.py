"""One-call pose lifting from Python: `Lifter`.

  lifter = Lifter.from_run("runs/pose/ige4")        # or .from_export(dir),
                                                    # .from_tflite(file)
  poses_3d, steps = lifter(keypoints_2d, intrinsics)
  # keypoints_2d float [N, 16, 2] MPII16 pixels; intrinsics [N, 4] or [4]
  # (fx, fy, cx, cy); optional distortion [N, 5] or [5] (k1, k2, k3, p1, p2)
  # poses_3d float32 [N, 16, 3], steps [T+1, N, 16, 3]: H36M16, camera
  # frame (x right, y down, z forward), metres.
  result = lifter.lift(keypoints_2d, intrinsics)    # and the diagnostics

View normalization (docs/lifting.md). The models were trained on Human3.6M,
where a person spans about the same part of the view: near the optical axis,
RMS spread of the normalized 2D joints about 0.085. A small person far from
the camera (or any person far off the axis, or a camera with another focal
length) is far outside that: the baseline's initial estimate is then a
shrunken, distorted pose, on which the learned energy is steep and the
learned step size overshoots: the energy rises and the pose moves away
from its observation (docs/lifting.md has the measurement). The lifter
therefore lifts every detection in
a virtual camera that looks at it the way the training cameras looked:
  1. undistort the keypoints to normalized coordinates x `[16, 2]`;
  2. rotate the camera (R, no translation) so that the ray through the
     keypoints' centroid becomes the optical axis (x' = rays rotated);
  3. zoom (alpha = view_scale / spread(x')) so the spread equals the
     training one; x_v = alpha x' is the model's input (no distortion);
  4. take the model's steps in the virtual camera, re-place each step's
     root-relative shape at the root translation that best explains x'
     (`geometry.solve_root_translation`, undoing the zoom), rotate back by
     R^T.
Steps 2 and 4 are exact; the zoom (3) trades the person's perspective for
the training-typical one (the re-placement keeps the shape, not the depth
stretch). `view_scale` is the spread of the training-set mean 2D pose,
read from the model's baseline statistics (`input_mean`).
"""
import os

import numpy as np
import tensorflow as tf

from ige_tf.pose import camera
from ige_tf.pose import geometry
from ige_tf.pose import models
from ige_tf.pose import skeleton

SERVING_INPUTS = ("pose_2d", "f", "c", "k", "p")
# Sidecar of a TFLite lifter (`tflite.convert_lifter`): {"view_scale", ...}.
TFLITE_METADATA_SUFFIX = ".json"
_PELVIS = skeleton.H36M16_HIPS


def view_scale_from_mean_pose(input_mean):
  """RMS spread of a mean normalized 2D pose `[16, 2]` about its centroid."""
  mean = np.asarray(input_mean, np.float64).reshape(-1, 2)
  return float(np.sqrt(np.mean(np.sum((mean - mean.mean(0))**2, -1))))


def _spread(points):
  """RMS distance of `[..., J, 2]` points from their centroid, `[...]`."""
  centred = points - points.mean(-2, keepdims=True)
  return np.sqrt(np.mean(np.sum(centred**2, -1), -1))


def rotation_to_axis(direction):
  """Minimal rotations taking unit vectors to the optical axis (0, 0, 1).

  Args:
    direction: float64 `[N, 3]` unit vectors with positive z.

  Returns:
    float64 `[N, 3, 3]` R with `R @ direction = (0, 0, 1)` (Rodrigues).
  """
  d = np.asarray(direction, np.float64)
  z = np.array([0.0, 0.0, 1.0])
  axis = np.cross(d, z)  # [N, 3], |axis| = sin(angle)
  sin = np.linalg.norm(axis, axis=-1)
  cos = d[:, 2]
  unit = axis / np.maximum(sin, 1e-12)[:, None]
  kx = np.zeros((len(d), 3, 3))
  kx[:, 0, 1], kx[:, 0, 2] = -unit[:, 2], unit[:, 1]
  kx[:, 1, 0], kx[:, 1, 2] = unit[:, 2], -unit[:, 0]
  kx[:, 2, 0], kx[:, 2, 1] = -unit[:, 1], unit[:, 0]
  eye = np.broadcast_to(np.eye(3), kx.shape)
  return (eye + sin[:, None, None] * kx +
          (1 - cos)[:, None, None] * (kx @ kx))


def reprojection_error_px(steps, keypoints_2d, f, c, k, p):
  """Mean pixel distance of projected poses from the observed keypoints.

  Args:
    steps: float `[T+1, N, 16, 3]` H36M16 camera-frame poses.
    keypoints_2d: float `[N, 16, 2]` observed MPII16 pixels.
    f, c: float `[N, 2]`; k `[N, 3]`; p `[N, 2]`.

  Returns:
    float64 `[T+1, N]` (inf where a joint is at or behind the camera).
  """
  with_pelvis = skeleton.add_pelvis(np.asarray(steps, np.float64))
  points = skeleton.convert(with_pelvis, skeleton.H36M17, skeleton.MPII16)
  with np.errstate(divide="ignore", invalid="ignore"):
    projected = camera.project_points_np(points, f, c, k, p)
    error = np.linalg.norm(projected - keypoints_2d, axis=-1).mean(-1)
  behind = np.any(points[..., 2] <= 0, axis=-1)
  return np.where(behind | ~np.isfinite(error), np.inf, error)


class Lifter:
  """Raw pixel keypoints + intrinsics -> camera-frame 3D poses (module doc).

  Args:
    serve: callable `serve(pose_2d, f, c, k, p)` on float32 numpy arrays
      (`[B, 16, 2]` pixels, `[B, 2]`, `[B, 2]`, `[B, 3]`, `[B, 2]`) returning
      steps float32 `[T+1, B, 16, 3]` (the exported "serve" signature).
    view_scale: training spread of the normalized 2D pose (module doc).
    source: where the model came from (for messages).
    normalize_view: lift in the virtual camera (module doc); False feeds the
      keypoints and intrinsics to the model as they are.
    batch_size: poses per model call.
  """

  def __init__(self, serve, view_scale, source="", normalize_view=True,
               batch_size=1024):
    if not view_scale > 0:
      raise ValueError(f"{source}: view_scale must be positive, got "
                       f"{view_scale!r}")
    self._serve = serve
    self.view_scale = float(view_scale)
    self.source = source
    self.normalize_view = bool(normalize_view)
    self.batch_size = int(batch_size)

  # -- loading (one place; the lead may redirect it to the run loader) -----
  @classmethod
  def from_run(cls, model_dir, gin_params=(), **kwargs):
    """From a `bin/train.py --model_dir` (operative config + checkpoint).

    `gin_params` are extra bindings for rebuilding the model, e.g.
    `["ige_lifter.safeguard = False"]`.
    """
    from ige_tf.pose import inference  # pylint: disable=import-outside-toplevel
    problem, model = inference.restore_run(model_dir, gin_params)
    serve_fn, _ = problem.serving_function(model)

    def serve(pose_2d, f, c, k, p):
      return np.asarray(serve_fn(*[tf.constant(v) for v in (
          pose_2d, f, c, k, p)])["steps"])

    scale = view_scale_from_mean_pose(
        models.find_baseline(model).input_mean.numpy())
    lifter = cls(serve, scale, source=model_dir, **kwargs)
    lifter._model = model  # pylint: disable=protected-access
    return lifter

  @classmethod
  def from_export(cls, export_dir, **kwargs):
    """From a SavedModel written by `bin/export.py`."""
    loaded = tf.saved_model.load(export_dir)
    if "serve" not in loaded.signatures:
      raise ValueError(f"{export_dir}: SavedModel has no 'serve' signature")
    signature = loaded.signatures["serve"]

    def serve(pose_2d, f, c, k, p):
      values = dict(zip(SERVING_INPUTS, (pose_2d, f, c, k, p)))
      return signature(**{n: tf.constant(v) for n, v in values.items()}
                       )["steps"].numpy()

    means = [v for v in loaded.variables
             if v.name.endswith("initial_estimate/input_mean:0")]
    if len(means) != 1:
      raise ValueError(f"{export_dir}: no baseline statistics "
                       "(initial_estimate/input_mean) in the SavedModel")
    lifter = cls(serve, view_scale_from_mean_pose(means[0].numpy()),
                 source=export_dir, **kwargs)
    lifter._loaded = loaded  # pylint: disable=protected-access
    return lifter

  @classmethod
  def from_tflite(cls, path, num_threads=None, **kwargs):
    """From a `.tflite` file of `bin/export.py --format=tflite`."""
    from ige_tf.pose import tflite  # pylint: disable=import-outside-toplevel
    runner, metadata = tflite.load_runner(path, num_threads=num_threads)

    def serve(pose_2d, f, c, k, p):
      return runner(pose_2d=pose_2d, f=f, c=c, k=k, p=p)["steps"]

    return cls(serve, metadata["view_scale"], source=path, **kwargs)

  @classmethod
  def load(cls, path, **kwargs):
    """`from_tflite`, `from_export` or `from_run`, by what `path` holds."""
    if os.path.isfile(path) and path.endswith(".tflite"):
      return cls.from_tflite(path, **kwargs)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"{path}: no such model directory or .tflite "
                              "file")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
      return cls.from_export(path, **kwargs)
    return cls.from_run(path, **kwargs)

  # -- lifting -------------------------------------------------------------
  def __call__(self, keypoints_2d, intrinsics, distortion=None):
    """`(poses_3d [N, 16, 3], steps [T+1, N, 16, 3])`, float32; see `lift`."""
    result = self.lift(keypoints_2d, intrinsics, distortion)
    return result["poses_3d"], result["steps"]

  def lift(self, keypoints_2d, intrinsics, distortion=None):
    """Lifts N detections.

    Args:
      keypoints_2d: float `[N, 16, 2]` MPII16 pixels, finite.
      intrinsics: float `[N, 4]` or `[4]`: fx, fy, cx, cy in pixels.
      distortion: None (no distortion), or float `[N, 5]` or `[5]`: k1, k2,
        k3, p1, p2.

    Returns:
      dict of numpy arrays: "poses_3d" float32 `[N, 16, 3]` (the last step),
      "steps" float32 `[T+1, N, 16, 3]` (H36M16, camera frame, metres),
      "rejected" bool `[T, N]` (the inner optimizer's safeguard refused step
      t + 1 of pose n: it would have raised the energy), "reprojection_px"
      float64 `[T+1, N]` (mean distance of each step's projection from the
      keypoints).

    Raises:
      ValueError: wrong shapes, no pose, or non-finite input.
    """
    keypoints = np.asarray(keypoints_2d, np.float64)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (16, 2):
      raise ValueError(f"keypoints_2d must be [N, 16, 2] MPII16 pixels, got "
                       f"shape {keypoints.shape}")
    n = len(keypoints)
    if n == 0:
      raise ValueError("keypoints_2d holds no pose (N = 0)")
    intrinsics = np.broadcast_to(np.asarray(intrinsics, np.float64), (n, 4))
    distortion = np.zeros((n, 5)) if distortion is None else (
        np.broadcast_to(np.asarray(distortion, np.float64), (n, 5)))
    for name, value in (("keypoints_2d", keypoints),
                        ("intrinsics", intrinsics),
                        ("distortion", distortion)):
      if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} must be finite")
    if np.any(intrinsics[:, :2] <= 0):
      raise ValueError("focal lengths (intrinsics[:, :2]) must be positive")
    f, c = intrinsics[:, :2], intrinsics[:, 2:]
    k, p = distortion[:, :3], distortion[:, 3:]
    parts = [self._lift_batch(keypoints[s:s + self.batch_size],
                              f[s:s + self.batch_size],
                              c[s:s + self.batch_size],
                              k[s:s + self.batch_size],
                              p[s:s + self.batch_size])
             for s in range(0, n, self.batch_size)]
    steps = np.concatenate([s for s, _ in parts], axis=1)
    model_steps = np.concatenate([m for _, m in parts], axis=1)
    rejected = np.all(model_steps[1:] == model_steps[:-1], axis=(2, 3))
    return {"poses_3d": steps[-1], "steps": steps, "rejected": rejected,
            "reprojection_px": reprojection_error_px(steps, keypoints, f, c,
                                                     k, p)}

  def _run(self, pose_2d, f, c, k, p):
    arrays = [np.ascontiguousarray(v, np.float32) for v in (pose_2d, f, c, k,
                                                            p)]
    return np.asarray(self._serve(*arrays))

  def _lift_batch(self, keypoints, f, c, k, p):
    """`(steps [T+1, B, 16, 3] camera frame, model steps as returned)`."""
    if not self.normalize_view:
      steps = self._run(keypoints, f, c, k, p)
      return steps, steps
    b = len(keypoints)
    x_d = camera.normalize_pixels(keypoints, f, c)
    x = geometry.undistort(tf.constant(x_d), tf.constant(k),
                           tf.constant(p)).numpy()
    rays = np.concatenate([x, np.ones_like(x[..., :1])], -1)  # [B, 16, 3]
    centre = rays.mean(1)
    centre /= np.linalg.norm(centre, axis=-1, keepdims=True)
    rotation = rotation_to_axis(centre)  # [B, 3, 3]
    rotated = np.einsum("bij,bnj->bni", rotation, rays)
    x_rot = rotated[..., :2] / rotated[..., 2:]
    zoom = self.view_scale / np.maximum(_spread(x_rot), 1e-9)
    x_view = zoom[:, None, None] * x_rot
    ones, zeros = np.ones((b, 2)), np.zeros((b, 2))
    model_steps = self._run(x_view, ones, zeros, np.zeros((b, 3)), zeros)
    steps = model_steps.astype(np.float64)
    num = steps.shape[0]
    shape = steps.reshape(num * b, 16, 3)
    pelvis = 0.5 * (shape[:, _PELVIS[0]] + shape[:, _PELVIS[1]])
    root_relative = shape - pelvis[:, None]
    root = geometry.solve_root_translation(
        tf.constant(root_relative), tf.constant(np.tile(x_rot, (num, 1, 1))),
        tf.zeros((num * b, 5), tf.float64)).numpy()
    placed = (root_relative + root[:, None]).reshape(num, b, 16, 3)
    # Back to the real camera: X = R^T X_rotated (row vectors: X_r @ R).
    steps = np.einsum("tbnj,bjk->tbnk", placed, rotation)
    return steps.astype(np.float32), model_steps
