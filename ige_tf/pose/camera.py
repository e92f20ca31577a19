"""Human3.6M camera model: extrinsics, projection with distortion.

Conventions (DATA.md, as in 3d-pose-baseline):
  * World frame: millimetres, z up. `R` (3, 3) rotates world to camera, `T`
    (3,) is the camera centre in the world: `X_cam = R @ (X_world - T)`.
    `cameras.h5` stores `R` transposed; `ige_tf.pose.data.h36m.load_cameras`
    undoes that.
  * Camera frame: x right, y down, z forward (along the optical axis).
  * Projection of a camera-frame point X (any length unit):
        x      = X[:2] / X[2];           r2 = |x|^2
        radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
        tan    = p1 x_y + p2 x_x
        x_d    = x * (radial + tan) + (p2, p1) * r2
        uv     = f * x_d + c
    `x_d` is the "normalized" 2D pose the models consume: `(uv - c) / f`.

Safe projection. The exact formula divides by the depth, so an inner
optimizer that moves a joint through `z = 0` produces inf/NaN values and
gradients. With `min_depth` set, the depth is replaced by the soft clamp
    z_safe = m + s * softplus((z - m) / s),     m = min_depth, s = softness,
which is >= m > 0 for every z, equals z to float precision once z - m >> s,
and has derivative sigmoid((z - m) / s) in (0, 1). With `max_normalized` set,
each normalized coordinate is then softly limited,
    x_safe = x / (1 + (x / a)^16)^(1/16),        a = max_normalized,
which is monotone with slope in (0, 1], changes |x| <= 0.5 a by less than
1e-6 relative and keeps |x_safe| < a, so the distortion polynomial (only
calibrated inside the field of view) and every downstream value stay
bounded. Together they make
`project_points(..., min_depth=..., max_normalized=...)` finite with finite
gradients for every finite input, including z <= 0 and coincident joints.
`SAFE_PROJECTION` holds defaults for poses in metres.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from ige_tf.core import activations

# Defaults for the safe projection of poses in metres: depth >= 10 cm,
# normalized coordinates within +-1 (45 degrees off the optical axis; the
# Human3.6M images span about +-0.45, where the limit changes them by less
# than 1e-6 relative, i.e. < 0.001 px).
SAFE_PROJECTION = {"min_depth": 0.1, "max_normalized": 1.0}


@dataclasses.dataclass(frozen=True)
class Camera:
  """One calibrated camera (numpy, float64).

  Attributes:
    R: `(3, 3)` world-to-camera rotation (already un-transposed).
    T: `(3,)` camera centre in world coordinates, millimetres.
    f: `(2,)` focal lengths (fx, fy) in pixels.
    c: `(2,)` principal point (cx, cy) in pixels.
    k: `(3,)` radial distortion (k1, k2, k3).
    p: `(2,)` tangential distortion (p1, p2).
    name: camera id, e.g. "54138969".
  """
  R: np.ndarray
  T: np.ndarray
  f: np.ndarray
  c: np.ndarray
  k: np.ndarray
  p: np.ndarray
  name: str = ""

  def __post_init__(self):
    shapes = {"R": (3, 3), "T": (3,), "f": (2,), "c": (2,), "k": (3,),
              "p": (2,)}
    for field, shape in shapes.items():
      value = np.asarray(getattr(self, field), np.float64)
      if value.size != int(np.prod(shape)):
        raise ValueError(f"Camera {self.name}: {field} has shape "
                         f"{value.shape}, expected {shape}")
      object.__setattr__(self, field, value.reshape(shape))

  @property
  def intrinsics(self):
    """float64 `(4,)`: (fx, fy, cx, cy)."""
    return np.concatenate([self.f, self.c])

  @property
  def distortion(self):
    """float64 `(5,)`: (k1, k2, k3, p1, p2)."""
    return np.concatenate([self.k, self.p])

  def world_to_camera(self, points_world):
    """`[..., 3]` world points (mm) -> `[..., 3]` camera frame (mm)."""
    return world_to_camera(points_world, self.R, self.T)

  def camera_to_world(self, points_camera):
    """`[..., 3]` camera-frame points (mm) -> `[..., 3]` world (mm)."""
    return camera_to_world(points_camera, self.R, self.T)

  def project(self, points_world):
    """`[..., 3]` world points (mm) -> `[..., 2]` pixels, with distortion."""
    return project_points_np(self.world_to_camera(points_world), self.f,
                             self.c, self.k, self.p)


def world_to_camera(points_world, R, T):
  """`X_cam = R (X_world - T)` for numpy arrays.

  Args:
    points_world: float `[..., 3]`.
    R: `(3, 3)` world-to-camera rotation.
    T: `(3,)` (or `(3, 1)`) camera centre.

  Returns:
    float64 `[..., 3]`.
  """
  points_world = np.asarray(points_world, np.float64)
  return (points_world - np.reshape(T, 3)) @ np.asarray(R, np.float64).T


def camera_to_world(points_camera, R, T):
  """Inverse of `world_to_camera`: `X_world = R^T X_cam + T` (numpy)."""
  points_camera = np.asarray(points_camera, np.float64)
  return points_camera @ np.asarray(R, np.float64) + np.reshape(T, 3)


def distort_np(x, k, p):
  """Distortion of normalized coordinates (numpy, float64).

  Args:
    x: float `[..., J, 2]` undistorted normalized coordinates `X[:2] / X[2]`.
    k: float `[..., 3]` or `(3,)`, broadcast against `x` without its joint
      axis.
    p: float `[..., 2]` or `(2,)`.

  Returns:
    float64 `[..., J, 2]` distorted normalized coordinates `x_d`.
  """
  x = np.asarray(x, np.float64)
  k = np.asarray(k, np.float64)[..., None, :]
  p = np.asarray(p, np.float64)[..., None, :]
  r2 = np.sum(x**2, axis=-1, keepdims=True)
  radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
  tan = p[..., 0:1] * x[..., 1:2] + p[..., 1:2] * x[..., 0:1]
  return x * (radial + tan) + p[..., ::-1] * r2


def project_points_np(points, f, c, k=None, p=None):
  """Exact projection of camera-frame points to pixels (numpy, float64).

  Args:
    points: float `[..., J, 3]` camera frame (z > 0 in front of the camera).
    f, c: float `[..., 2]` or `(2,)`: focal lengths and principal point.
    k: float `[..., 3]` radial distortion, None for none.
    p: float `[..., 2]` tangential distortion, None for none.

  Returns:
    float64 `[..., J, 2]` pixel coordinates.
  """
  points = np.asarray(points, np.float64)
  x = points[..., :2] / points[..., 2:3]
  if k is None:
    k = np.zeros(3)
  if p is None:
    p = np.zeros(2)
  x_d = distort_np(x, k, p)
  return (np.asarray(f, np.float64)[..., None, :] * x_d +
          np.asarray(c, np.float64)[..., None, :])


def soft_min_depth(z, min_depth, softness=None):
  """Soft clamp `m + s * softplus((z - m) / s)`: >= m, ~z for z >> m.

  Args:
    z: float tensor of depths, any shape.
    min_depth: m > 0 (same unit as z).
    softness: s > 0; default `min_depth / 4`.

  Returns:
    float tensor like `z`, strictly positive, with finite gradient.
  """
  z = tf.convert_to_tensor(z)
  softness = min_depth / 4.0 if softness is None else softness
  m = tf.cast(min_depth, z.dtype)
  s = tf.cast(softness, z.dtype)
  # The core softplus: stable on every runtime (TFLite included).
  return m + s * activations.softplus((z - m) / s)


def soft_limit(x, limit, power=16):
  """Elementwise soft clip `x / (1 + (x/a)^n)^(1/n)` with even `n = power`.

  |result| < a; monotone with slope `(1 + (x/a)^n)^(-1 - 1/n)` in (0, 1];
  the relative change for |x| <= r a is below r^n / n. Inputs are first
  hard-clipped to +-50 a, so the power cannot overflow in float32 (beyond
  that the gradient is exactly zero: still finite).

  No `pow`: `(x/a)^n` is a product of squares and, for n a power of two
  (the default 16), the root is square roots and one `rsqrt`:
  `(1 + v)^(-1/16) = rsqrt(sqrt(sqrt(sqrt(1 + v))))`.

  Args:
    x: float tensor, any shape.
    limit: a > 0.
    power: even integer n >= 2.

  Returns:
    Tensor like `x`.

  Raises:
    ValueError: `power` is not an even integer >= 2.
  """
  n = int(power)
  if n != power or n < 2 or n % 2:
    raise ValueError(f"soft_limit power must be an even integer >= 2, got "
                     f"{power!r}")
  x = tf.convert_to_tensor(x)
  a = tf.cast(limit, x.dtype)
  x = tf.clip_by_value(x, -50.0 * a, 50.0 * a)
  t = 1.0 + _integer_power(tf.square(x / a), n // 2)
  if n & (n - 1):  # not a power of two
    return x * tf.pow(t, -1.0 / n)
  for _ in range(n.bit_length() - 2):  # t^(1/2^(k-1)) for n = 2^k
    t = tf.sqrt(t)
  return x * tf.math.rsqrt(t)


def _integer_power(u, m):
  """`u^m` for a Python int m >= 1 by repeated squaring (no `pow`)."""
  result = None
  while True:
    if m & 1:
      result = u if result is None else result * u
    m >>= 1
    if not m:
      return result
    u = tf.square(u)


def distort(x, k=None, p=None):
  """Distortion of normalized coordinates (TF, differentiable).

  Args:
    x: float `[B, J, 2]` (or `[..., J, 2]`) undistorted normalized coordinates.
    k: float `[B, 3]` radial coefficients (broadcast over J), or None.
    p: float `[B, 2]` tangential coefficients (p1, p2), or None.

  Returns:
    float `[B, J, 2]` distorted normalized coordinates `x_d = (uv - c) / f`.
  """
  x = tf.convert_to_tensor(x)
  if k is None and p is None:
    return x
  r2 = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
  scale = tf.ones_like(r2)
  if k is not None:
    k = tf.cast(k, x.dtype)[..., None, :]
    scale = scale + r2 * (k[..., 0:1] + r2 * (k[..., 1:2] + r2 * k[..., 2:3]))
  if p is None:
    return x * scale
  p = tf.cast(p, x.dtype)[..., None, :]
  x_x, x_y = tf.split(x, 2, axis=-1)  # (see project_normalized)
  tan = p[..., 0:1] * x_y + p[..., 1:2] * x_x
  return x * (scale + tan) + tf.reverse(p, axis=[-1]) * r2


def project_normalized(points, k=None, p=None, min_depth=None,
                       max_normalized=None, depth_softness=None):
  """Camera-frame 3D points -> distorted normalized 2D `(uv - c) / f` (TF).

  Args:
    points: float `[B, J, 3]` (or `[..., J, 3]`) camera frame.
    k: float `[B, 3]` radial distortion, or None.
    p: float `[B, 2]` tangential distortion, or None.
    min_depth: None for the exact division by z; else the soft depth clamp of
      the module docstring (same unit as `points`; 0.1 for metres).
    max_normalized: None, or the soft limit on each normalized coordinate
      before distortion (1.0 for Human3.6M-like fields of view).
    depth_softness: softness s of the depth clamp; default `min_depth / 4`.

  Returns:
    float `[B, J, 2]`, same dtype as `points`.
  """
  points = tf.convert_to_tensor(points)
  # tf.split, not slicing: its gradient is a concatenation (a TFLite
  # builtin; slicing's, StridedSliceGrad, is not).
  xy, z = tf.split(points, [2, 1], axis=-1)
  if min_depth is not None:
    z = soft_min_depth(z, min_depth, depth_softness)
  x = xy / z
  if max_normalized is not None:
    x = soft_limit(x, max_normalized)
  return distort(x, k, p)


def project_points(points, f, c, k=None, p=None, min_depth=None,
                   max_normalized=None, depth_softness=None):
  """Camera-frame 3D points -> pixels, with distortion (TF, batched).

  Equals the DATA.md formula when `min_depth` and `max_normalized` are None.
  Pass `**SAFE_PROJECTION` (poses in metres) inside an inner optimizer: the
  result and its gradients are then finite for any finite input.

  Args:
    points: float `[B, J, 3]` camera frame.
    f: float `[B, 2]` focal lengths (fx, fy), pixels.
    c: float `[B, 2]` principal point (cx, cy), pixels.
    k: float `[B, 3]` radial distortion, or None.
    p: float `[B, 2]` tangential distortion (p1, p2), or None.
    min_depth, max_normalized, depth_softness: see `project_normalized`.

  Returns:
    float `[B, J, 2]` pixel coordinates.
  """
  points = tf.convert_to_tensor(points)
  x_d = project_normalized(points, k, p, min_depth, max_normalized,
                           depth_softness)
  f = tf.cast(f, points.dtype)[..., None, :]
  c = tf.cast(c, points.dtype)[..., None, :]
  return f * x_d + c


def normalize_pixels(uv, f, c):
  """Pixels -> normalized image coordinates `(uv - c) / f` (the model input).

  Args:
    uv: float `[B, J, 2]` pixels (array or tensor).
    f, c: float `[B, 2]` focal lengths and principal point.

  Returns:
    float `[B, J, 2]`.
  """
  return (uv - c[..., None, :]) / f[..., None, :]


def pixels_from_normalized(x, f, c):
  """Inverse of `normalize_pixels`: `f * x + c`, `[B, J, 2]` -> `[B, J, 2]`."""
  return x * f[..., None, :] + c[..., None, :]


def split_intrinsics(intrinsics):
  """`[..., 4]` (fx, fy, cx, cy) -> (f `[..., 2]`, c `[..., 2]`)."""
  return intrinsics[..., :2], intrinsics[..., 2:4]


def split_distortion(distortion):
  """`[..., 5]` (k1, k2, k3, p1, p2) -> (k `[..., 3]`, p `[..., 2]`)."""
  return distortion[..., :3], distortion[..., 3:5]


def mirror_distortion(distortion):
  """Distortion of the horizontally mirrored camera: p2 -> -p2.

  If `x_d = distort(x; k, p)`, then mirroring x (x_x -> -x_x) with
  (p1, -p2) gives the mirrored `x_d` exactly; radial terms are symmetric.

  Args:
    distortion: float `[..., 5]` (k1, k2, k3, p1, p2) (array or tensor).
  """
  if isinstance(distortion, np.ndarray):
    return distortion * np.array([1, 1, 1, 1, -1], distortion.dtype)
  distortion = tf.convert_to_tensor(distortion)
  return distortion * tf.constant([1, 1, 1, 1, -1], distortion.dtype)
