"""Figure 3 of the paper: the inner optimizer's estimates, step by step.

One column per step t = 0..T. Top row, camera view: the observed 2D pose
(dotted) and the projection of the estimate after t steps (solid), in
pixels, with the camera's distortion. Bottom row, novel view: the estimate
(solid) against the ground truth (dotted), seen from `azimuth_deg` around
the vertical axis; the estimate is first scaled by the optimal k of paper
eq. 9 (as the loss and Protocol 1a see it). Without ground truth (e.g.
`bin/lift.py`) the novel view shows the estimate alone.

Colours: the subject's left side blue, right side red, centre green; a
legend at the top says which line is which. The 2D (MPII16) and 3D (H36M17)
skeletons share one connectivity (`skeleton.contracted_bones`): the same
joints are joined in both. Everything is drawn with matplotlib's Agg backend
(no display needed).
"""
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ige_tf import atomic  # noqa: E402
from ige_tf.pose import camera  # noqa: E402
from ige_tf.pose import skeleton  # noqa: E402

LEFT, RIGHT, CENTRE = "tab:blue", "tab:red", "tab:green"
TRUTH = "0.35"


def _bone_colour(skel, child, parent):
  names = (skel.joints[child], skel.joints[parent])
  if any(n.startswith("l_") for n in names):
    return LEFT
  if any(n.startswith("r_") for n in names):
    return RIGHT
  return CENTRE


def _draw(ax, points, skel, style="-", colour=None, width=2.0, marker=True):
  """Draws a skeleton's bones; points `[J, 2]` in the plotting plane."""
  for child, parent in skel.bones:
    c = colour or _bone_colour(skel, child, parent)
    ax.plot(points[[child, parent], 0], points[[child, parent], 1], style,
            color=c, linewidth=width, solid_capstyle="round")
  if marker:
    ax.plot(points[:, 0], points[:, 1], ".", color=colour or "k",
            markersize=3)


def _legend(fig, with_truth, top, rows):
  """One legend for every panel, in the band above the panels."""
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  handles = [Line2D([], [], color=LEFT, lw=2, label="estimate, left side"),
             Line2D([], [], color=RIGHT, lw=2, label="estimate, right side"),
             Line2D([], [], color=CENTRE, lw=2, label="estimate, centre"),
             Line2D([], [], color=TRUTH, lw=1.5, ls=":",
                    label="observed 2D (top row)")]
  if with_truth:
    handles.append(Line2D([], [], color=TRUTH, lw=1.5, ls=":",
                          label="ground truth (bottom row)"))
  fig.legend(handles=handles, loc="upper center",
             ncol=max(1, -(-len(handles) // rows)),
             fontsize=8, frameon=False, bbox_to_anchor=(0.5, top),
             handlelength=2.0, columnspacing=1.2)


def _project(points_3d, f, c, k, p):
  """`[J, 3]` camera frame -> `[J, 2]` pixels; depth kept >= 1 cm to draw."""
  points = np.array(points_3d, np.float64)
  points[:, 2] = np.maximum(points[:, 2], 0.01)
  return camera.project_points_np(points, f, c, k, p)


def optimal_scale_np(prediction, target):
  """k minimizing `|k prediction - target|^2` (numpy; 1 if degenerate)."""
  den = float(np.sum(prediction * prediction))
  return float(np.sum(prediction * target)) / den if den > 0 else 1.0


def _rotate_about_vertical(points, centre, azimuth_deg):
  """Rotates camera-frame points about the camera's y (down) axis."""
  a = np.deg2rad(azimuth_deg)
  rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0],
                  [-np.sin(a), 0, np.cos(a)]])
  return (points - centre) @ rot.T


def _limits(ax, points, margin=0.15, invert_y=True):
  lo, hi = points.min(axis=0), points.max(axis=0)
  centre = (lo + hi) / 2
  half = max(float((hi - lo).max()) / 2, 1e-6) * (1 + margin)
  ax.set_xlim(centre[0] - half, centre[0] + half)
  if invert_y:
    ax.set_ylim(centre[1] + half, centre[1] - half)
  else:
    ax.set_ylim(centre[1] - half, centre[1] + half)
  ax.set_aspect("equal")


def figure3(path, pose_2d, f, c, k, p, steps, target=None, azimuth_deg=70.0,
            column_inches=2.6, dpi=100, title=None):
  """Writes Figure 3 as a PNG.

  Args:
    path: output `.png` path (folders are created).
    pose_2d: float `[16, 2]` observed MPII16 keypoints, pixels.
    f, c: float `[2]` focal lengths and principal point, pixels.
    k: float `[3]` radial, p: float `[2]` tangential distortion.
    steps: float `[T+1, 16, 3]` H36M16 estimates, camera frame, metres.
    target: optional float `[16, 3]` H36M16 ground truth, camera frame.
    azimuth_deg: rotation of the novel view about the vertical axis.
    column_inches: width and height of one panel in inches.
    dpi: resolution; the PNG is `round((T+1) * column_inches * dpi)` by
      `round(2 * column_inches * dpi)` pixels.
    title: optional figure title.

  Returns:
    `(width, height)` of the PNG in pixels.
  """
  steps = np.asarray(steps, np.float64)
  pose_2d = np.asarray(pose_2d, np.float64)
  if steps.ndim != 3 or steps.shape[1:] != (16, 3):
    raise ValueError(f"figure3: steps must be [T+1, 16, 3], got {steps.shape}")
  if pose_2d.shape != (16, 2):
    raise ValueError(f"figure3: pose_2d must be [16, 2], got {pose_2d.shape}")
  num = steps.shape[0]
  fig, axes = plt.subplots(2, num, figsize=(num * column_inches,
                                            2 * column_inches), dpi=dpi,
                           squeeze=False)
  truth17 = None
  if target is not None:
    truth17 = skeleton.add_pelvis(np.asarray(target, np.float64))
  view_centre = (truth17[0] if truth17 is not None else
                 skeleton.add_pelvis(steps[0])[0])
  projected_all = [pose_2d]
  novel_all = []
  for t in range(num):
    estimate17 = skeleton.add_pelvis(steps[t])
    projected = _project(estimate17, f, c, k, p)
    projected_all.append(projected)
    ax = axes[0, t]
    _draw(ax, pose_2d, skeleton.MPII16, style=":", colour=TRUTH, width=1.5,
          marker=False)
    _draw(ax, projected, skeleton.H36M17)
    ax.set_title(f"step {t}", fontsize=9)
    ax = axes[1, t]
    if truth17 is not None:
      scale = optimal_scale_np(steps[t], np.asarray(target, np.float64))
      estimate17 = estimate17 * scale
      truth_view = _rotate_about_vertical(truth17, view_centre, azimuth_deg)
      _draw(ax, truth_view[:, :2], skeleton.H36M17, style=":", colour=TRUTH,
            width=1.5, marker=False)
      novel_all.append(truth_view[:, :2])
    else:
      estimate17 = estimate17 - estimate17[:1] + view_centre
    view = _rotate_about_vertical(estimate17, view_centre, azimuth_deg)
    _draw(ax, view[:, :2], skeleton.H36M17)
    novel_all.append(view[:, :2])
  bounds_2d = np.concatenate(projected_all)
  bounds_3d = np.concatenate(novel_all)
  for t in range(num):
    _limits(axes[0, t], bounds_2d)
    _limits(axes[1, t], bounds_3d)
    for ax in axes[:, t]:
      ax.set_xticks([])
      ax.set_yticks([])
  axes[0, 0].set_ylabel("camera view", fontsize=9)
  axes[1, 0].set_ylabel(
      f"novel view ({azimuth_deg:g} deg)" +
      ("\nestimate × optimal k" if truth17 is not None else ""),
      fontsize=9)
  # Bands above the panels, in inches: the title, the legend.
  height = 2 * column_inches
  if title:  # wrapped to the figure's width (~11 characters per inch)
    title = textwrap.fill(title, width=max(20, int(num * column_inches * 11)))
  title_band = 0.22 * (title.count("\n") + 1) + 0.08 if title else 0.0
  # Legend rows: one on wide figures, wrapping on narrow ones.
  rows = 1 if num >= 5 else (2 if num >= 3 else 5)
  legend_band = 0.19 * rows
  if title:
    fig.suptitle(title, fontsize=10, y=1 - 0.05 / height)
  _legend(fig, truth17 is not None, 1 - (title_band + 0.02) / height, rows)
  fig.subplots_adjust(left=0.45 / (num * column_inches),
                      right=1 - 0.05 / (num * column_inches), bottom=0.02,
                      top=1 - (title_band + legend_band + 0.3) / height,
                      wspace=0.05, hspace=0.12)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with atomic.replacing(path, keep_suffix=True) as tmp:
    fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  return (int(round(num * column_inches * dpi)),
          int(round(2 * column_inches * dpi)))


def read_example(records_dir, split="test", index=0):
  """One prepared example, as raw pixels and intrinsics (numpy).

  Args:
    records_dir: `bin/prepare_h36m.py` output.
    split: "train" or "test".
    index: example index in file order.

  Returns:
    dict: pose_2d `[16, 2]` pixels, f `[2]`, c `[2]`, k `[3]`, p `[2]`,
    pose_3d `[16, 3]` (H36M16, camera frame, metres), subject, action,
    camera, frame.

  Raises:
    IndexError: `index` beyond the split (names its size).
  """
  from ige_tf.pose.data import pipeline  # pylint: disable=import-outside-toplevel
  size = pipeline.num_examples(records_dir, split)
  if not 0 <= index < size:
    raise IndexError(f"{records_dir}: split {split!r} has {size} examples, "
                     f"no index {index}")
  data = pipeline.pose_dataset(records_dir, split, 1, shuffle=False)
  features, labels = next(iter(data.skip(index)))
  intrinsics = features["intrinsics"].numpy()[0]
  distortion = features["distortion"].numpy()[0]
  f, c = intrinsics[:2], intrinsics[2:]
  return {"pose_2d": features["pose_2d"].numpy()[0] * f + c,
          "f": f, "c": c, "k": distortion[:3], "p": distortion[3:],
          "pose_3d": labels["pose_3d"].numpy()[0],
          "subject": labels["subject"].numpy()[0].decode(),
          "action": labels["action"].numpy()[0].decode(),
          "camera": labels["camera"].numpy()[0].decode(),
          "frame": int(labels["frame"].numpy()[0])}


def figure3_from_records(model, records_dir, out, split="test", index=0,
                         azimuth_deg=70.0, dpi=100):
  """Figure 3 for one prepared example and a trained model.

  Args:
    model: a SavedModel or run directory (`inference.load_lifter`), or a
      `Lifter`.
    records_dir: prepared records holding the example.
    out: PNG path.
    split, index: which example.
    azimuth_deg, dpi: see `figure3`.

  Returns:
    dict: png path, size, the example's ids and the per-step camera-frame
    estimates (lists).
  """
  from ige_tf.pose import inference  # pylint: disable=import-outside-toplevel
  lifter = model if callable(model) else inference.load_lifter(model)
  example = read_example(records_dir, split, index)
  outputs = lifter(example["pose_2d"][None], example["f"][None],
                   example["c"][None], example["k"][None], example["p"][None])
  steps = outputs["steps"][:, 0]
  title = (f"{example['subject']} {example['action']} camera "
           f"{example['camera']} frame {example['frame']}")
  size = figure3(out, example["pose_2d"], example["f"], example["c"],
                 example["k"], example["p"], steps, target=example["pose_3d"],
                 azimuth_deg=azimuth_deg, dpi=dpi, title=title)
  return {"png": out, "size": list(size),
          "example": {k: example[k] for k in ("subject", "action", "camera",
                                              "frame")},
          "steps": steps.tolist()}
