"""A small synthetic Human3.6M in the Martinez `h36m/` layout.

`make_synthetic_h36m(out_dir)` writes, exactly as 3d-pose-baseline's
`h36m.zip` is laid out (DATA.md):

  cameras.h5                                   subject<n>/camera<k>/{R (stored
                                               transposed), T, f, c, k, p, Name}
  S*/MyPoses/3D_positions/<Sequence>.h5        `3D_positions` (96, N) float64
                                               mm, world frame (z up)
  S*/StackedHourglass/<Seq_uence>.<cam>.h5     `poses` (N, 16, 2) float64 px
  S*/StackedHourglassFineTuned240/...          (optional) less noisy ones

The people are a kinematic model with the H36M 32-joint hierarchy
(`skeleton.H36M32`), per-subject bone lengths (height and per-bone scale),
and joint angles clipped to anatomical limits (`JOINT_LIMITS`). Each action
drives the angles and the root differently: walking (gait cycle along an
arc), sitting (hips and knees near 90 degrees, gestures), directions
(standing, pointing, turning, stepping), eating (seated, hand to mouth),
phoning (hand at the ear, drifting), posing (held key poses with smooth
transitions). The feet are kept on the floor (z = 0).

Four cameras stand around the capture area (4.3-5.2 m from its centre,
1.3-1.8 m high) looking at the subject, with Human3.6M-like intrinsics,
radial and tangential distortion, and a small per-subject extrinsic jitter.
Detections are the distorted projections of the MPII16 joints plus
structured noise: a fixed per-joint detector bias, a per-sequence bias,
temporally correlated jitter and occasional gross errors (left/right limb
swaps and far outliers). As in the real data, S11 "Directions" has no
detections for camera 54138969.
"""
import json
import os

import h5py
import numpy as np
import tqdm

from ige_tf import atomic
from ige_tf.pose import camera as camera_lib
from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m

DEFAULT_ACTIONS = ("Directions", "Eating", "Phoning", "Posing", "Sitting",
                   "Walking")
# The sequence of the real data without detections for one camera.
MISSING_DETECTION = ("S11", "Directions", "54138969")
IMAGE_SIZE = (1000, 1002)  # width, height in pixels

# Joint limits in degrees: (min, max) of every degree of freedom.
JOINT_LIMITS = {
    "pelvis_lean": (-15, 30), "pelvis_roll": (-15, 15),
    "spine_flex": (-20, 45), "spine_side": (-20, 20), "spine_twist": (-30, 30),
    "thorax_flex": (-15, 30), "thorax_side": (-15, 15),
    "thorax_twist": (-25, 25),
    "neck_flex": (-40, 60), "neck_side": (-30, 30), "neck_twist": (-70, 70),
    "hip_flex": (-30, 120), "hip_abduct": (-20, 45), "hip_twist": (-30, 30),
    "knee_flex": (0, 150), "ankle_flex": (-30, 40),
    "shoulder_flex": (-50, 170), "shoulder_abduct": (-10, 150),
    "shoulder_twist": (-60, 60), "elbow_flex": (0, 150),
    "wrist_flex": (-60, 60),
}

# Rest-pose bone offsets from the parent joint (mm) for a 1.0-scale person;
# body frame x right, y forward, z up. Index = H36M32 joint.
_REST_OFFSETS = np.array([
    [0, 0, 0],         # 0 pelvis
    [130, 0, 0],       # 1 r_hip
    [0, 0, -445],      # 2 r_knee
    [0, 0, -440],      # 3 r_ankle
    [0, 130, -60],     # 4 r_toe_base
    [0, 60, 0],        # 5 r_toe_end
    [-130, 0, 0],      # 6 l_hip
    [0, 0, -445],      # 7 l_knee
    [0, 0, -440],      # 8 l_ankle
    [0, 130, -60],     # 9 l_toe_base
    [0, 60, 0],        # 10 l_toe_end
    [0, 0, 110],       # 11 spine
    [0, 0, 125],       # 12 thorax
    [0, 0, 255],       # 13 neck
    [0, 35, 110],      # 14 head_center
    [0, -15, 115],     # 15 head_top
    [0, 0, 255],       # 16 l_clavicle (at the neck, as in H36M)
    [-150, 0, -25],    # 17 l_shoulder
    [0, 0, -280],      # 18 l_elbow
    [0, 0, -250],      # 19 l_wrist
    [0, 25, -30],      # 20 l_thumb
    [0, 20, -25],      # 21 l_thumb_end
    [0, 0, -70],       # 22 l_hand
    [0, 0, -45],       # 23 l_hand_end
    [0, 0, 255],       # 24 r_clavicle
    [150, 0, -25],     # 25 r_shoulder
    [0, 0, -280],      # 26 r_elbow
    [0, 0, -250],      # 27 r_wrist
    [0, 25, -30],      # 28 r_thumb
    [0, 20, -25],      # 29 r_thumb_end
    [0, 0, -70],       # 30 r_hand
    [0, 0, -45],       # 31 r_hand_end
], np.float64)

# Bone groups that share a per-subject length factor (left/right alike, so
# the hips stay symmetric about the pelvis).
_BONE_GROUPS = {"hip_width": (1, 6), "thigh": (2, 7), "shin": (3, 8),
                "foot": (4, 5, 9, 10), "spine": (11, 12), "neck": (13, 16, 24),
                "head": (14, 15), "shoulder_width": (17, 25),
                "upper_arm": (18, 26), "forearm": (19, 27),
                "hand": (20, 21, 22, 23, 28, 29, 30, 31)}

# Human3.6M-like camera intrinsics (mean values; each camera jitters them).
_F_MEAN = (1145.0, 1144.0)
_C_MEAN = (512.0, 515.0)
_K_MEAN = (-0.207, 0.247, -0.003)
_P_MEAN = (-0.0011, -0.0010)


def _rx(a):
  c, s = np.cos(a), np.sin(a)
  o, z = np.ones_like(a), np.zeros_like(a)
  return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1),
                   np.stack([z, s, c], -1)], -2)


def _ry(a):
  c, s = np.cos(a), np.sin(a)
  o, z = np.ones_like(a), np.zeros_like(a)
  return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1),
                   np.stack([-s, z, c], -1)], -2)


def _rz(a):
  c, s = np.cos(a), np.sin(a)
  o, z = np.ones_like(a), np.zeros_like(a)
  return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1),
                   np.stack([z, z, o], -1)], -2)


def subject_offsets(rng):
  """Per-subject rest offsets: a height factor and per-bone-group factors.

  Returns:
    float64 `[32, 3]` bone offsets in mm.
  """
  height = rng.uniform(0.9, 1.08)
  offsets = _REST_OFFSETS * height
  for joints in _BONE_GROUPS.values():
    offsets[list(joints)] *= rng.uniform(0.94, 1.06)
  return offsets


def _limit(angles):
  """Clips every degree of freedom to `JOINT_LIMITS` (names may be r_/l_)."""
  out = {}
  for name, value in angles.items():
    base = name[2:] if name[:2] in ("r_", "l_") else name
    lo, hi = JOINT_LIMITS.get(base, (-360, 360))
    out[name] = np.clip(value, lo, hi)
  return out


def forward_kinematics(offsets, angles_deg, root_xy):
  """World joint positions of the 32-joint model.

  Args:
    offsets: float64 `[32, 3]` rest bone offsets (mm).
    angles_deg: dict degree-of-freedom name -> float `[N]` degrees (missing
      ones are 0); clipped to `JOINT_LIMITS`. `pelvis_yaw` is the heading.
    root_xy: float `[N, 2]` pelvis position on the floor plane (mm).

  Returns:
    float64 `[N, 32, 3]` world positions in mm, feet on the floor (z = 0).
  """
  n = len(root_xy)
  a = {k: np.radians(np.broadcast_to(v, (n,)).astype(np.float64))
       for k, v in _limit(angles_deg).items()}
  zero = np.zeros(n)
  g = lambda name: a.get(name, zero)  # noqa: E731
  local = np.broadcast_to(np.eye(3), (n, 32, 3, 3)).copy()
  local[:, 0] = (_rz(g("pelvis_yaw")) @ _rx(-g("pelvis_lean")) @
                 _ry(g("pelvis_roll")))
  for joint, part in ((11, "spine"), (12, "thorax"), (13, "neck")):
    local[:, joint] = (_rz(g(part + "_twist")) @ _rx(-g(part + "_flex")) @
                       _ry(g(part + "_side")))
  for side, sign, hip, knee, ankle, shoulder, elbow, wrist in (
      ("r_", -1.0, 1, 2, 3, 25, 26, 27), ("l_", 1.0, 6, 7, 8, 17, 18, 19)):
    local[:, hip] = (_rz(-sign * g(side + "hip_twist")) @
                     _ry(sign * g(side + "hip_abduct")) @
                     _rx(g(side + "hip_flex")))
    local[:, knee] = _rx(-g(side + "knee_flex"))
    local[:, ankle] = _rx(g(side + "ankle_flex"))
    local[:, shoulder] = (_rz(-sign * g(side + "shoulder_twist")) @
                          _ry(sign * g(side + "shoulder_abduct")) @
                          _rx(g(side + "shoulder_flex")))
    local[:, elbow] = _rx(g(side + "elbow_flex"))
    local[:, wrist] = _rx(g(side + "wrist_flex"))
  parents = skeleton.H36M32.parents
  glob = np.zeros((n, 32, 3, 3))
  pos = np.zeros((n, 32, 3))
  for j in range(32):
    p = parents[j]
    if p < 0:
      glob[:, j] = local[:, j]
      continue
    pos[:, j] = pos[:, p] + np.einsum("nij,j->ni", glob[:, p], offsets[j])
    glob[:, j] = glob[:, p] @ local[:, j]
  ground = np.minimum(pos[:, [4, 5, 9, 10], 2].min(1),
                      pos[:, [3, 8], 2].min(1) - 0.55 * abs(offsets[4, 2]))
  pos[:, :, 2] -= ground[:, None]
  pos[:, :, :2] += np.asarray(root_xy, np.float64)[:, None, :]
  return pos


def _smooth(rng, t, amplitude, max_hz=0.4):
  """Smooth random signal: 3 sinusoids of random frequency and phase."""
  out = np.zeros_like(t)
  for _ in range(3):
    hz = rng.uniform(0.05, max_hz)
    out += np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
  return amplitude * out / np.sqrt(1.5)


def _bumps(rng, t, count, width):
  """Sum of `count` smooth bumps in [0, 1] at random times."""
  out = np.zeros_like(t)
  for centre in rng.uniform(t[0], t[-1] + 1e-9, size=count):
    out = np.maximum(out, np.exp(-0.5 * ((t - centre) / width)**4))
  return out


def _base(rng, t):
  """Relaxed standing pose with small idle motion (degrees)."""
  s = lambda amp: _smooth(rng, t, amp)  # noqa: E731
  angles = {"pelvis_lean": 3 + s(2), "pelvis_roll": s(2),
            "spine_flex": 4 + s(3), "spine_side": s(2), "spine_twist": s(4),
            "thorax_flex": 2 + s(2), "thorax_side": s(2), "thorax_twist": s(3),
            "neck_flex": 5 + s(6), "neck_side": s(4), "neck_twist": s(12)}
  for side in ("r_", "l_"):
    angles.update({
        side + "hip_flex": 3 + s(3), side + "hip_abduct": 4 + s(2),
        side + "hip_twist": s(4), side + "knee_flex": 5 + abs(s(4)),
        side + "ankle_flex": s(3), side + "shoulder_flex": 5 + s(6),
        side + "shoulder_abduct": 9 + s(4), side + "shoulder_twist": s(8),
        side + "elbow_flex": 15 + abs(s(10)), side + "wrist_flex": s(10)})
  return angles


def _heading_xy(rng, t, drift_mm):
  """Standing position with a slow drift, and a slowly turning heading."""
  centre = rng.uniform(-500, 500, size=2)
  xy = centre + np.stack([_smooth(rng, t, drift_mm, 0.1),
                          _smooth(rng, t, drift_mm, 0.1)], -1)
  yaw = rng.uniform(-180, 180) + _smooth(rng, t, 20, 0.1)
  return xy, yaw


def _walking(rng, t):
  angles = _base(rng, t)
  speed = rng.uniform(900, 1400)  # mm/s
  stride_hz = speed / 1450.0
  phase = 2 * np.pi * stride_hz * t + rng.uniform(0, 2 * np.pi)
  radius = rng.uniform(1300, 2000)
  start = rng.uniform(0, 2 * np.pi)
  direction = rng.choice([-1.0, 1.0])
  theta = start + direction * speed * t / radius
  centre = rng.uniform(-300, 300, size=2)
  xy = centre + radius * 0.75 * np.stack([np.cos(theta), np.sin(theta)], -1)
  dxy = np.gradient(xy, axis=0)
  yaw = np.degrees(np.arctan2(-dxy[:, 0], dxy[:, 1]))
  swing = rng.uniform(20, 28)
  for side, offset in (("r_", 0.0), ("l_", np.pi)):
    ph = phase + offset
    angles[side + "hip_flex"] = 8 + swing * np.sin(ph)
    angles[side + "knee_flex"] = 8 + 55 * np.maximum(0, np.sin(ph + 1.3))**2
    angles[side + "ankle_flex"] = 8 * np.sin(ph + 0.6)
    angles[side + "shoulder_flex"] = 4 + rng.uniform(12, 22) * np.sin(
        ph + np.pi)
    angles[side + "elbow_flex"] = 18 + 12 * (0.5 + 0.5 * np.sin(ph + np.pi))
  angles["spine_twist"] = 5 * np.sin(phase) + _smooth(rng, t, 2)
  angles["pelvis_roll"] = 3 * np.sin(2 * phase)
  angles["pelvis_yaw"] = yaw
  return angles, xy


def _seated(rng, t):
  angles = _base(rng, t)
  s = lambda amp: _smooth(rng, t, amp)  # noqa: E731
  for side in ("r_", "l_"):
    angles[side + "hip_flex"] = rng.uniform(78, 95) + s(5)
    angles[side + "hip_abduct"] = rng.uniform(4, 18) + s(4)
    angles[side + "knee_flex"] = rng.uniform(75, 105) + s(8)
    angles[side + "ankle_flex"] = rng.uniform(-5, 15) + s(4)
    angles[side + "shoulder_flex"] = rng.uniform(20, 40) + s(8)
    angles[side + "elbow_flex"] = rng.uniform(55, 85) + s(10)
  angles["spine_flex"] = rng.uniform(0, 20) + s(6)
  xy, yaw = _heading_xy(rng, t, 20)
  angles["pelvis_yaw"] = yaw
  return angles, xy


def _sitting(rng, t):
  angles, xy = _seated(rng, t)
  gesture = _bumps(rng, t, 2, rng.uniform(0.5, 1.0))
  side = rng.choice(["r_", "l_"])
  angles[side + "shoulder_flex"] += 40 * gesture
  angles[side + "elbow_flex"] -= 30 * gesture
  if rng.uniform() < 0.5:  # lean back or forward for a while
    angles["spine_flex"] += rng.uniform(-15, 20) * _bumps(rng, t, 1, 1.5)
  return angles, xy


def _eating(rng, t):
  angles, xy = _seated(rng, t)
  side = rng.choice(["r_", "l_"])
  period = rng.uniform(2.5, 4.5)
  lift = (0.5 - 0.5 * np.cos(2 * np.pi * t / period +
                             rng.uniform(0, 2 * np.pi)))**1.5
  angles[side + "shoulder_flex"] = 25 + 35 * lift
  angles[side + "shoulder_abduct"] = 10 + 15 * lift
  angles[side + "elbow_flex"] = 55 + 85 * lift
  other = "l_" if side == "r_" else "r_"
  angles[other + "shoulder_flex"] = 35 + _smooth(rng, t, 5)
  angles[other + "elbow_flex"] = 80 + _smooth(rng, t, 8)
  angles["spine_flex"] = 12 + 8 * lift
  angles["neck_flex"] = 12 + 8 * lift
  return angles, xy


def _standing(rng, t, drift_mm):
  angles = _base(rng, t)
  xy, yaw = _heading_xy(rng, t, drift_mm)
  angles["pelvis_yaw"] = yaw
  step = np.abs(np.gradient(xy[:, 0])) + np.abs(np.gradient(xy[:, 1]))
  step = step / (step.max() + 1e-9)
  for side, offset in (("r_", 0.0), ("l_", np.pi)):
    ph = 2 * np.pi * 0.8 * t + offset
    angles[side + "hip_flex"] += 12 * step * np.sin(ph)
    angles[side + "knee_flex"] += 20 * step * np.maximum(0, np.sin(ph + 1.3))
  return angles, xy


def _phoning(rng, t):
  angles, xy = _standing(rng, t, 250)
  side = rng.choice(["r_", "l_"])
  angles[side + "shoulder_flex"] = rng.uniform(15, 35) + _smooth(rng, t, 4)
  angles[side + "shoulder_abduct"] = rng.uniform(30, 50) + _smooth(rng, t, 4)
  angles[side + "elbow_flex"] = rng.uniform(130, 145) + _smooth(rng, t, 4)
  other = "l_" if side == "r_" else "r_"
  gesture = _bumps(rng, t, 2, 0.8)
  angles[other + "shoulder_flex"] += 45 * gesture
  angles[other + "elbow_flex"] += 40 * gesture
  angles["neck_side"] = (8 if side == "r_" else -8) + _smooth(rng, t, 4)
  return angles, xy


def _directions(rng, t):
  angles, xy = _standing(rng, t, 350)
  for side in ("r_", "l_"):
    point = _bumps(rng, t, 2, rng.uniform(0.5, 0.9))
    angles[side + "shoulder_flex"] += rng.uniform(50, 100) * point
    angles[side + "shoulder_abduct"] += rng.uniform(0, 40) * point
    angles[side + "elbow_flex"] *= 1 - 0.8 * point
    twist = (-1 if side == "r_" else 1) * rng.uniform(5, 20) * point
    angles["thorax_twist"] = angles["thorax_twist"] + twist
    angles["neck_twist"] = angles["neck_twist"] + 2 * twist
  return angles, xy


def _posing(rng, t):
  angles, xy = _standing(rng, t, 60)
  ranges = {"shoulder_flex": (-20, 150), "shoulder_abduct": (0, 120),
            "shoulder_twist": (-40, 40), "elbow_flex": (0, 130),
            "hip_flex": (-10, 40), "hip_abduct": (0, 30),
            "knee_flex": (0, 45)}
  keys = 3
  knots = np.linspace(t[0], t[-1], keys + 1)
  for name, (lo, hi) in ranges.items():
    for side in ("r_", "l_"):
      values = rng.uniform(lo, hi, size=keys + 1)
      held = np.interp(t, knots, values)
      # Ease in and out: hold each key pose, move between them smoothly.
      idx = np.clip(np.searchsorted(knots, t, side="right") - 1, 0, keys - 1)
      frac = (t - knots[idx]) / (knots[idx + 1] - knots[idx])
      ease = 0.5 - 0.5 * np.cos(np.pi * np.clip(frac * 1.6 - 0.3, 0, 1))
      held = values[idx] + (values[idx + 1] - values[idx]) * ease
      angles[side + name] = held + _smooth(rng, t, 2)
  for name, amp in (("spine_flex", 12), ("spine_side", 10),
                    ("spine_twist", 20), ("neck_twist", 30)):
    angles[name] = rng.uniform(-amp, amp) + _smooth(rng, t, amp / 4)
  return angles, xy


ACTION_GENERATORS = {"Walking": _walking, "Sitting": _sitting,
                     "Eating": _eating, "Phoning": _phoning,
                     "Directions": _directions, "Posing": _posing}


def look_at(eye, target, roll_deg=0.0):
  """World-to-camera rotation of a camera at `eye` looking at `target`.

  Camera axes: x right, y down, z forward; world z is up.

  Returns:
    float64 `(3, 3)` R with `X_cam = R (X_world - eye)`.
  """
  forward = np.asarray(target, np.float64) - eye
  forward /= np.linalg.norm(forward)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rot = np.stack([right, down, forward])
  return _rz(np.radians(roll_deg)) @ rot


def make_cameras(rng, subjects=h36m.SUBJECTS):
  """Four cameras around the room; per-subject small extrinsic jitter.

  Returns:
    dict `(subject, camera id) -> camera.Camera` (mm, pixels).
  """
  base = []
  for i, azimuth in enumerate((45.0, 135.0, -135.0, -45.0)):
    az = np.radians(azimuth + rng.uniform(-8, 8))
    dist = rng.uniform(4300, 5200)
    eye = np.array([dist * np.cos(az), dist * np.sin(az),
                    rng.uniform(1300, 1800)])
    target = np.array([rng.uniform(-150, 150), rng.uniform(-150, 150),
                       rng.uniform(850, 1050)])
    base.append(dict(
        eye=eye, R=look_at(eye, target, rng.uniform(-1.5, 1.5)),
        f=np.array(_F_MEAN) + rng.uniform(-6, 6, 2),
        c=np.array(_C_MEAN) + rng.uniform(-5, 5, 2),
        k=np.array(_K_MEAN) + rng.uniform(-1, 1, 3) * [0.004, 0.006, 0.002],
        p=np.array(_P_MEAN) + rng.uniform(-1, 1, 2) * 0.0008,
        name=h36m.CAMERAS[i]))
  cameras = {}
  for subject in subjects:
    for cam in base:
      jitter = (_rz(np.radians(rng.normal(0, 0.2))) @
                _rx(np.radians(rng.normal(0, 0.2))))
      cameras[(subject, cam["name"])] = camera_lib.Camera(
          R=jitter @ cam["R"], T=cam["eye"] + rng.normal(0, 8, 3), f=cam["f"],
          c=cam["c"], k=cam["k"], p=cam["p"], name=cam["name"])
  return cameras


class DetectorNoise:
  """Structured 2D detection noise (pixels) of one simulated detector.

  Args:
    rng: numpy Generator (its draws fix the detector's per-joint bias).
    jitter_px: stationary std of the per-frame jitter.
    bias_px: std of the fixed per-joint bias.
    swap_rate: per-frame probability of a left/right limb swap.
    outlier_rate: per joint and frame probability of a far outlier.
  """

  _LIMBS = (("r_ankle", "l_ankle", "r_knee", "l_knee"),
            ("r_wrist", "l_wrist", "r_elbow", "l_elbow"))

  def __init__(self, rng, jitter_px=4.0, bias_px=3.0, swap_rate=0.02,
               outlier_rate=0.004):
    self.jitter_px = jitter_px
    self.swap_rate = swap_rate
    self.outlier_rate = outlier_rate
    self.bias = rng.normal(0, bias_px, size=(16, 2))

  def __call__(self, rng, points):
    """`[N, 16, 2]` exact projections -> noisy detections `[N, 16, 2]`."""
    n = len(points)
    rho = 0.6
    noise = np.zeros((n, 16, 2))
    innovation = rng.normal(0, self.jitter_px * np.sqrt(1 - rho**2),
                            size=(n, 16, 2))
    noise[0] = rng.normal(0, self.jitter_px, size=(16, 2))
    for i in range(1, n):
      noise[i] = rho * noise[i - 1] + innovation[i]
    out = points + self.bias + rng.normal(0, 1.5, size=(1, 16, 2)) + noise
    mpii = skeleton.MPII16
    for frame in np.nonzero(rng.uniform(size=n) < self.swap_rate)[0]:
      limb = self._LIMBS[rng.integers(len(self._LIMBS))]
      for a, b in (limb[:2], limb[2:]):
        ia, ib = mpii.index(a), mpii.index(b)
        out[frame, [ia, ib]] = out[frame, [ib, ia]]
    outliers = rng.uniform(size=(n, 16)) < self.outlier_rate
    count = int(outliers.sum())
    if count:
      angle = rng.uniform(0, 2 * np.pi, count)
      radius = rng.uniform(40, 120, count)
      out[outliers] += np.stack([np.cos(angle), np.sin(angle)], -1) * radius[
          :, None]
    return out


def _write_h5(path, datasets):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic.replacing(path) as tmp:
    with h5py.File(tmp, "w") as h5:
      for key, value in datasets.items():
        h5.create_dataset(key, data=value)


def write_cameras_h5(path, cameras):
  """Writes `cameras.h5` in the real layout (R stored transposed, (n,1) shapes).

  Args:
    path: output file.
    cameras: dict `(subject, camera id) -> camera.Camera`.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.replacing(path) as tmp, h5py.File(tmp, "w") as h5:
    for (subject, camera_id), cam in sorted(cameras.items()):
      group = h5.create_group(
          f"subject{subject[1:]}/camera{h36m.CAMERAS.index(camera_id) + 1}")
      group.create_dataset("R", data=cam.R.T)
      group.create_dataset("T", data=cam.T.reshape(3, 1))
      group.create_dataset("f", data=cam.f.reshape(2, 1))
      group.create_dataset("c", data=cam.c.reshape(2, 1))
      group.create_dataset("k", data=cam.k.reshape(3, 1))
      group.create_dataset("p", data=cam.p.reshape(2, 1))
      group.create_dataset("Name", data=np.array(
          [ord(ch) for ch in camera_id], np.uint8).reshape(8, 1))


def _take_names(rng, action, takes):
  """Sequence names of the takes: e.g. "Walking", "Walking 1" (varies)."""
  suffixes = [("", " 1"), (" 1", " 2"), ("", " 2")][rng.integers(3)]
  names = [action + suffixes[min(i, 1)] if i < 2 else f"{action} {i + 1}"
           for i in range(takes)]
  return names


def make_synthetic_h36m(out_dir, frames_per_sequence=100, takes=2, seed=0,
                        subjects=h36m.SUBJECTS, actions=DEFAULT_ACTIONS,
                        fps=25.0, fine_tuned=True,
                        detections_under_mypose=False, progress=True):
  """Writes a synthetic Human3.6M in the Martinez layout (module docstring).

  Args:
    out_dir: the `h36m/` folder to write (created).
    frames_per_sequence: frames of every take.
    takes: takes (sequences) per action and subject.
    seed: everything is a deterministic function of the seed.
    subjects: subject ids, e.g. ("S1", "S9").
    actions: names in `ACTION_GENERATORS`.
    fps: frame rate of the simulated motion.
    fine_tuned: also write `StackedHourglassFineTuned240` detections.
    detections_under_mypose: put the detection folders under
      `S*/MyPoses/3D_positions/` (the other accepted placement).
    progress: show a tqdm progress bar.

  Returns:
    dict summary: sequences, frames, detection_files, skipped (the missing
    detection file), also written to `out_dir/synthetic.json`.
  """
  unknown = [a for a in actions if a not in ACTION_GENERATORS]
  if unknown:
    raise ValueError(f"unknown synthetic actions {unknown}; known "
                     f"{sorted(ACTION_GENERATORS)}")
  if frames_per_sequence < 2 or takes < 1:
    raise ValueError("frames_per_sequence must be >= 2 and takes >= 1")
  rng = np.random.default_rng(seed)
  cameras = make_cameras(rng, subjects)
  write_cameras_h5(os.path.join(out_dir, "cameras.h5"), cameras)
  detectors = {"StackedHourglass": DetectorNoise(rng)}
  if fine_tuned:
    detectors["StackedHourglassFineTuned240"] = DetectorNoise(
        rng, jitter_px=2.5, bias_px=1.5, swap_rate=0.006, outlier_rate=0.001)
  mpii = skeleton.conversion_indices(skeleton.H36M32, skeleton.MPII16)
  t = np.arange(frames_per_sequence) / fps
  jobs = [(s, a) for s in subjects for a in actions]
  summary = {"seed": seed, "frames_per_sequence": frames_per_sequence,
             "takes": takes, "subjects": list(subjects),
             "actions": list(actions), "sequences": 0, "frames": 0,
             "detection_files": 0, "missing_detections": []}
  subject_offsets_cache = {}
  for subject, action in tqdm.tqdm(jobs, desc="synthetic h36m",
                                   disable=not progress):
    subject_rng = np.random.default_rng([seed, h36m.SUBJECTS.index(subject)])
    if subject not in subject_offsets_cache:
      subject_offsets_cache[subject] = subject_offsets(subject_rng)
    offsets = subject_offsets_cache[subject]
    seq_rng = np.random.default_rng(
        [seed, h36m.SUBJECTS.index(subject), ACTION_GENERATORS_INDEX[action]])
    names = _take_names(seq_rng, action, takes)
    if subject == MISSING_DETECTION[0] and action == MISSING_DETECTION[1]:
      names[0] = action  # the real S11 "Directions" (no take number)
    for name in names:
      angles, xy = ACTION_GENERATORS[action](seq_rng, t)
      world = forward_kinematics(offsets, angles, xy)
      _write_h5(os.path.join(out_dir, subject, h36m.POSITIONS_3D_DIR,
                             name + ".h5"),
                {"3D_positions": world.reshape(len(world), 96).T})
      summary["sequences"] += 1
      summary["frames"] += len(world)
      for camera_id in h36m.CAMERAS:
        cam = cameras[(subject, camera_id)]
        exact = cam.project(world[:, mpii])
        for folder, noise in detectors.items():
          if (subject, name, camera_id) == MISSING_DETECTION:
            summary["missing_detections"].append(
                f"{subject}/{folder}/{name}.{camera_id}.h5")
            continue
          root = os.path.join(out_dir, subject)
          if detections_under_mypose:
            root = os.path.join(root, h36m.POSITIONS_3D_DIR)
          path = os.path.join(root, folder,
                              f"{name.replace(' ', '_')}.{camera_id}.h5")
          _write_h5(path, {"poses": noise(seq_rng, exact)})
          summary["detection_files"] += 1
  with open(os.path.join(out_dir, "synthetic.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


ACTION_GENERATORS_INDEX = {name: i for i, name in
                           enumerate(sorted(ACTION_GENERATORS))}
