"""Figure 6 as a PNG: single-view reconstructions after 0..T inner steps.

For each of N examples of a records directory the figure has two rows of
T+2 panels:

- top: the input image, then for every step t = 0..T the estimate's
  silhouette (blue) projected over the ground-truth silhouette (gray; the
  rendered mask of the record). A frustum grid's silhouette is the union of
  occupied cells along each pixel's ray (`grid.any(axis=2)`), so this is
  exactly the projection of the estimate into the input view.
- bottom: the ground-truth grid and the estimate at every step, as cubes in
  world space rendered from the record's camera turned by `azimuth_deg`
  about +y (frustum cells mapped back to world space with the view's
  camera and depth range, `ige_tf.voxel.camera.frustum_to_world`).

Estimates are occupancy probabilities thresholded at 0.5. The model is a
SavedModel written by `bin/export.py` (or a run directory holding `export/`),
a run directory without an export (rebuilt from its own record and latest
checkpoint, `ige_tf.train.run.open_run`), or any callable `image [B, S, S, 3] -> {"steps":
[T+1, B, R, R, R] probabilities}`.
"""
import os

import numpy as np

from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import frustum as frustum_lib
from ige_tf.voxel import render as render_lib
from ige_tf.voxel.data import inspection

GT_COLOR = (150, 150, 150)
ESTIMATE_COLOR = (60, 110, 220)


def load_predictor(model):
  """A callable `image float32 [B, S, S, 3] -> steps float32 [T+1, B, R, R, R]`
  (occupancy probabilities).

  Args:
    model: a SavedModel directory, a run directory (uses `export/` if
      present, else `ige_tf.train.run.open_run`), or a
      callable returning a dict with "steps" probabilities.

  Raises:
    FileNotFoundError: `model` is neither (naming the path).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if callable(model):
    return lambda image: np.asarray(model(image)["steps"])
  path = os.fspath(model)
  export = os.path.join(path, "export")
  for candidate in (path, export):
    if os.path.exists(os.path.join(candidate, "saved_model.pb")):
      serve = tf.saved_model.load(candidate).signatures["serve"]
      return lambda image: serve(image=tf.constant(image, tf.float32))["steps"].numpy()
  if not os.path.exists(os.path.join(path, "operative_config.gin")):
    raise FileNotFoundError(
        f"{path}: not a SavedModel (no saved_model.pb) nor a run directory "
        "(no export/ and no operative_config.gin)")
  from ige_tf.train import run  # pylint: disable=import-outside-toplevel
  with run.open_run(path) as loaded:
    fn, _ = loaded.problem.serving_function(loaded.model)
  return lambda image: np.asarray(fn(tf.constant(image, tf.float32))["steps"])


def _camera(example):
  return camera_lib.Camera(example.intrinsics, example.extrinsics,
                           example.image.shape[0])


def render_grid(example, grid, kind="frustum", color=ESTIMATE_COLOR,
                azimuth_deg=60.0):
  """uint8 `[S, S, 3]`: a bool grid's cubes rendered in world space.

  Args:
    example: the record (`records.ViewExample`) giving camera and depth range.
    grid: bool `[R, R, R]`, a frustum grid of this view (kind "frustum") or a
      world grid over `example.world_bounds` (kind "world").
    kind: "frustum" or "world".
    color: RGB uint8.
    azimuth_deg: view turned about world +y from the record's camera.
  """
  grid = np.asarray(grid, bool)
  size = example.image.shape[0]
  camera = _camera(example)
  if kind == "frustum":
    vertices, faces = frustum_lib.voxel_boundary_mesh(
        grid, np.zeros(3), np.array(grid.shape, float))
    if len(faces):
      near, far = example.near_far
      vertices = camera_lib.frustum_to_world(
          vertices, camera, near, far, grid.shape[0], grid.shape[2])
  elif kind == "world":
    lower, upper = example.world_bounds
    vertices, faces = frustum_lib.voxel_boundary_mesh(grid, lower, upper)
  else:
    raise ValueError(f"unknown grid kind {kind!r}; expected 'frustum' or 'world'")
  if not len(faces):
    return np.full((size, size, 3), 255, np.uint8)
  view = (inspection.side_camera(camera, azimuth_deg) if azimuth_deg
          else camera)
  mesh = render_lib.SolidMesh(vertices, faces, color)
  return render_lib.Renderer(mesh, supersample=1).render(view).image


def silhouette_overlay(mask, estimate_silhouette):
  """uint8 `[S, S, 3]`: ground-truth silhouette gray, estimate blue on top.

  Args:
    mask: bool `[S, S]` ground-truth silhouette.
    estimate_silhouette: bool `[S, S]` projected estimate.
  """
  out = np.full(mask.shape + (3,), 255.0)
  out[mask] = (190, 190, 190)
  out[estimate_silhouette] = 0.45 * out[estimate_silhouette] + 0.55 * np.array(
      ESTIMATE_COLOR, float)
  return out.astype(np.uint8)


def figure6(path, examples, steps, kind="frustum", azimuth_deg=60.0, dpi=100,
            threshold=0.5):
  """Writes Figure 6 for a few examples (PNG, atomically).

  Args:
    path: output PNG path.
    examples: list of N `records.ViewExample`.
    steps: float `[T+1, N, R, R, R]` occupancy probabilities per step.
    kind: grid the model predicts ("frustum" or "world").
    azimuth_deg: rotation of the 3D renderings.
    dpi: PNG resolution.
    threshold: occupancy threshold.

  Returns:
    dict: png path, size (w, h) in pixels, per example and step the IoU at
    R against the record's grid (list `[N][T+1]`).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  steps = np.asarray(steps) > threshold
  num_steps, num = steps.shape[:2]
  if num != len(examples):
    raise ValueError(f"{num} predictions for {len(examples)} examples")
  resolution = steps.shape[-1]
  cols = num_steps + 1
  fig, axes = plt.subplots(2 * num, cols, figsize=(1.9 * cols, 3.9 * num),
                           squeeze=False)
  ious = []
  for n, example in enumerate(examples):
    truth_grids = example.frustum if kind == "frustum" else example.world
    if resolution not in truth_grids:
      raise ValueError(
          f"example {example.synset}/{example.model_id} view {example.view} "
          f"has no {kind} grid at R={resolution}; stored: {sorted(truth_grids)}")
    truth = truth_grids[resolution]
    size = example.image.shape[0]
    top, bottom = axes[2 * n], axes[2 * n + 1]
    top[0].imshow(example.image)
    top[0].set_title(f"{example.synset}\nview {example.view}", fontsize=7)
    bottom[0].imshow(render_grid(example, truth, kind, GT_COLOR, azimuth_deg))
    bottom[0].set_title("ground truth", fontsize=7)
    row = []
    for t in range(num_steps):
      estimate = steps[t, n]
      union = np.logical_or(estimate, truth).sum()
      iou = float(np.logical_and(estimate, truth).sum() / union) if union else 1.0
      row.append(iou)
      if kind == "frustum":
        silhouette = inspection.grid_silhouette(estimate, size)
        top[t + 1].imshow(silhouette_overlay(example.mask, silhouette))
        top[t + 1].set_title(f"step {t}: projection", fontsize=7)
      else:
        top[t + 1].set_visible(False)
      bottom[t + 1].imshow(render_grid(example, estimate, kind, ESTIMATE_COLOR,
                                       azimuth_deg))
      bottom[t + 1].set_title(f"step {t}: IoU {100 * iou:.1f}", fontsize=7)
    ious.append(row)
  for ax in axes.reshape(-1):
    ax.axis("off")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=dpi)
  width, height = (int(round(v)) for v in fig.get_size_inches() * dpi)
  plt.close(fig)
  os.replace(tmp, path)
  return {"png": path, "size": [width, height], "iou": ious}


def figure6_from_records(model, records_dir, out, split="test", indices=(0,),
                         kind="frustum", azimuth_deg=60.0, dpi=100):
  """Figure 6 for examples `indices` of a records split and a trained model.

  Args:
    model: see `load_predictor`.
    records_dir: prepared records (`bin/prepare_shapenet.py --out_dir`).
    out: PNG path.
    split: split folder of the records ("test", "train", ...).
    indices: example indices over the split's sorted shard files.
    kind: "frustum" (IGE and frustum baselines) or "world" (world-aligned
      baselines).
    azimuth_deg, dpi: see `figure6`.

  Returns:
    dict of `figure6` plus "examples": `[{"synset", "model_id", "view"}]`.

  Raises:
    FileNotFoundError: no records for `split` (naming the folder).
    IndexError: an index beyond the split.
  """
  predict = load_predictor(model)
  folder = os.path.join(records_dir, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such split folder in {records_dir}")
  examples = [inspection.read_example(folder, int(i))[0] for i in indices]
  images = np.stack([e.image for e in examples]).astype(np.float32) / 255.0
  steps = np.asarray(predict(images))
  result = figure6(out, examples, steps, kind=kind, azimuth_deg=azimuth_deg,
                   dpi=dpi)
  result["examples"] = [{"synset": e.synset, "model_id": e.model_id,
                         "view": int(e.view)} for e in examples]
  return result
