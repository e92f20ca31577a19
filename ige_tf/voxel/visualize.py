"""Figure 6 as a PNG: single-view reconstructions after 0..T inner steps.

One or several models (e.g. IGE-MN, IGE-I4 and a baseline) side by side, on
N examples of a records directory. Every example has two rows, and every
model T+1 columns (one per step; a baseline has one):

- the "projection" row: the estimate at each step t = 0..T projected into the input view over the ground-truth silhouette (the
  rendered mask of the record), colour-coded as in the legend (ground truth
  only / estimate only / both). A frustum grid's projection is the union of
  occupied cells along each pixel's ray (`grid.any(axis=2)`); a world grid's
  is its cubes rendered from the input camera.
- the "3D" row: the estimate's cubes in world space rendered
  from the record's camera turned by `azimuth_deg` about +y, titled with its
  IoU at R against the ground truth of the grid the model predicts.
  Frustum cells are mapped back to world space with the view's camera and
  depth range (`ige_tf.voxel.camera.frustum_to_world`); world-grid models
  (world-aligned baselines) are drawn over their own world bounds and scored
  against the record's world grid.

The first column holds the input image (titled with the category name and
view) and the ground-truth grid of the first model's kind; a model whose
grid kind differs from the one before it is preceded by a column with its
own ground truth (e.g. the world grid for a world-aligned baseline).
Estimates are occupancy probabilities thresholded at 0.5. A model is a
SavedModel written by `bin/export.py` (or a run directory holding `export/`),
a run directory without an export (rebuilt from its own record and latest
checkpoint, `ige_tf.train.run.open_run`), or any callable `image [B, S, S, 3] -> {"steps":
[T+1, B, R, R, R] probabilities}`.
"""
import os

import numpy as np

from ige_tf import atomic
from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import frustum as frustum_lib
from ige_tf.voxel import render as render_lib
from ige_tf.voxel.data import inspection
from ige_tf.voxel.mesh import SYNSETS

GT_COLOR = (150, 150, 150)
ESTIMATE_COLOR = (60, 110, 220)
# Projection panels: pixel classes and their colours (legend of Figure 6).
PROJECTION_COLORS = (("ground truth only", (200, 200, 200)),
                     ("estimate only", (235, 120, 40)),
                     ("both", ESTIMATE_COLOR))
TITLE_SIZE = 11


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
  """uint8 `[S, S, 3]`: ground truth and projected estimate, colour-coded.

  Args:
    mask: bool `[S, S]` ground-truth silhouette.
    estimate_silhouette: bool `[S, S]` projected estimate.

  Returns:
    White background; `PROJECTION_COLORS`: ground truth only, estimate only,
    both.
  """
  mask = np.asarray(mask, bool)
  estimate_silhouette = np.asarray(estimate_silhouette, bool)
  out = np.full(mask.shape + (3,), 255, np.uint8)
  (_, truth_only), (_, estimate_only), (_, both) = PROJECTION_COLORS
  out[mask & ~estimate_silhouette] = truth_only
  out[estimate_silhouette & ~mask] = estimate_only
  out[mask & estimate_silhouette] = both
  return out


def projected_silhouette(example, grid, kind):
  """bool `[S, S]`: a bool grid `[R, R, R]` projected into the input view."""
  if kind == "frustum":
    return inspection.grid_silhouette(grid, example.image.shape[0])
  image = render_grid(example, grid, kind, ESTIMATE_COLOR, azimuth_deg=0.0)
  return np.any(image != 255, axis=-1)


def category_name(synset):
  """ShapeNet category name of a synset id ("02691156" -> "plane")."""
  return SYNSETS.get(synset, synset)


def _iou(estimate, truth):
  union = np.logical_or(estimate, truth).sum()
  return float(np.logical_and(estimate, truth).sum() / union) if union else 1.0


def figure6(path, examples, steps, kind="frustum", azimuth_deg=60.0, dpi=100,
            threshold=0.5, labels=None):
  """Writes Figure 6 for a few examples and one or more models (PNG, atomically).

  Args:
    path: output PNG path.
    examples: list of N `records.ViewExample`.
    steps: float `[T+1, N, R, R, R]` occupancy probabilities per step, or a
      list of M such arrays (one per model; T and R may differ).
    kind: grid each model predicts: "frustum" or "world", or a list of M.
    azimuth_deg: rotation of the 3D renderings.
    dpi: PNG resolution.
    threshold: occupancy threshold.
    labels: M model names for the panel titles (default "model 1", ...).

  Returns:
    dict: png path, size (w, h) in pixels, "runs": per model `{"label",
    "kind", "iou"}` with the IoU at R against the record's grid of that kind
    (list `[N][T+1]`), and "iou", the first model's.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
  runs = [steps] if not isinstance(steps, (list, tuple)) else list(steps)
  runs = [np.asarray(r) > threshold for r in runs]
  kinds = [kind] * len(runs) if isinstance(kind, str) else list(kind)
  labels = list(labels) if labels is not None else [
      f"model {m + 1}" for m in range(len(runs))]
  if not len(kinds) == len(labels) == len(runs):
    raise ValueError(f"{len(runs)} models but {len(kinds)} kinds and "
                     f"{len(labels)} labels")
  for m, grids in enumerate(runs):
    if grids.shape[1] != len(examples):
      raise ValueError(f"{labels[m]}: {grids.shape[1]} predictions for "
                       f"{len(examples)} examples")
    if kinds[m] not in ("frustum", "world"):
      raise ValueError(f"unknown grid kind {kinds[m]!r}; expected 'frustum' "
                       "or 'world'")
  # Columns: input / ground truth, then every model's steps side by side; a
  # model whose grid kind differs from the one before gets its own
  # ground-truth column first (world-grid baselines: the world grid).
  starts, truth_columns, column, previous = [], [], 1, kinds[0]
  for m, grids in enumerate(runs):
    if kinds[m] != previous:
      truth_columns.append((column, m))
      column += 1
      previous = kinds[m]
    starts.append(column)
    column += grids.shape[0]
  cols = column
  fig, axes = plt.subplots(2 * len(examples), cols,
                           figsize=(2.3 * cols, 5.7 * len(examples) + 0.6),
                           squeeze=False)
  results = [{"label": l, "kind": k, "iou": []} for l, k in zip(labels, kinds)]
  for n, example in enumerate(examples):
    projection_row, cubes_row = axes[2 * n], axes[2 * n + 1]
    truths = {}
    for m, grids in enumerate(runs):
      truth_grids = example.frustum if kinds[m] == "frustum" else example.world
      resolution = grids.shape[-1]
      if resolution not in truth_grids:
        raise ValueError(
            f"example {example.synset}/{example.model_id} view {example.view} "
            f"has no {kinds[m]} grid at R={resolution}; stored: "
            f"{sorted(truth_grids)}")
      truths[m] = truth_grids[resolution]
    projection_row[0].imshow(example.image)
    projection_row[0].set_title(
        f"{category_name(example.synset)}, view {example.view}\ninput image",
        fontsize=TITLE_SIZE)
    for c, m in [(0, 0)] + truth_columns:
      cubes_row[c].imshow(render_grid(example, truths[m], kinds[m], GT_COLOR,
                                      azimuth_deg))
      cubes_row[c].set_title(f"ground truth\n({kinds[m]} grid, "
                             f"{runs[m].shape[-1]}³)", fontsize=TITLE_SIZE)
      if c:
        projection_row[c].imshow(silhouette_overlay(
            example.mask, projected_silhouette(example, truths[m], kinds[m])))
        projection_row[c].set_title(f"ground truth\n({kinds[m]} grid): "
                                    "projection", fontsize=TITLE_SIZE)
    for m, grids in enumerate(runs):
      ious = []
      for t in range(grids.shape[0]):
        estimate = grids[t, n]
        iou = _iou(estimate, truths[m])
        ious.append(iou)
        step = f"step {t}" if grids.shape[0] > 1 else "estimate"
        c = starts[m] + t
        projection_row[c].imshow(silhouette_overlay(
            example.mask, projected_silhouette(example, estimate, kinds[m])))
        projection_row[c].set_title(f"{labels[m]}\n{step}: projection",
                                    fontsize=TITLE_SIZE)
        cubes_row[c].imshow(render_grid(example, estimate, kinds[m],
                                        ESTIMATE_COLOR, azimuth_deg))
        cubes_row[c].set_title(f"{labels[m]}\n{step}: IoU {100 * iou:.1f}%",
                               fontsize=TITLE_SIZE)
      results[m]["iou"].append(ious)
  for ax in axes.reshape(-1):
    ax.axis("off")
  handles = [Patch(facecolor=np.array(c) / 255.0, edgecolor="black", label=l)
             for l, c in PROJECTION_COLORS]
  handles += [Patch(facecolor=np.array(GT_COLOR) / 255.0, edgecolor="black",
                    label="3D: ground truth"),
              Patch(facecolor=np.array(ESTIMATE_COLOR) / 255.0,
                    edgecolor="black", label="3D: estimate")]
  fig.legend(handles=handles, loc="upper center", ncol=len(handles),
             fontsize=TITLE_SIZE, frameon=False,
             title=f"projection into the input view | cubes seen "
                   f"{azimuth_deg:g}° around (IoU at R, occupancy > "
                   f"{threshold:g})", title_fontsize=TITLE_SIZE)
  top = 1.0 - 0.75 / fig.get_size_inches()[1]
  fig.tight_layout(rect=(0, 0, 1, top))
  with atomic.replacing(path, keep_suffix=True) as tmp:
    fig.savefig(tmp, dpi=dpi)
  width, height = (int(round(v)) for v in fig.get_size_inches() * dpi)
  plt.close(fig)
  return {"png": path, "size": [width, height], "runs": results,
          "iou": results[0]["iou"]}


def model_grid(model):
  """"world" or "frustum": `VoxelProblem.grid` of a run directory (or of the
  run holding an `export/`), read from its operative config; "frustum" when
  there is none (SavedModels and callables)."""
  if callable(model):
    return "frustum"
  path = os.fspath(model).rstrip("/")
  for folder in (path, os.path.dirname(path)):
    config = os.path.join(folder, "operative_config.gin")
    if os.path.exists(config):
      with open(config) as f:
        for line in f:
          if line.replace(" ", "").startswith("VoxelProblem.grid="):
            return "world" if "world" in line else "frustum"
      return "frustum"
  return "frustum"


def figure6_from_records(model, records_dir, out, split="test", indices=(0,),
                         kind=None, azimuth_deg=60.0, dpi=100, labels=None):
  """Figure 6 for examples `indices` of a records split and trained models.

  Args:
    model: see `load_predictor`, or a list of them (drawn side by side).
    records_dir: prepared records (`bin/prepare_shapenet.py --out_dir`).
    out: PNG path.
    split: split folder of the records ("test", "train", ...).
    indices: example indices over the split's sorted shard files.
    kind: grid of each model, "frustum" or "world" (a str or a list); None
      reads it from each run's operative config (`model_grid`).
    azimuth_deg, dpi: see `figure6`.
    labels: model names (default: the run directories' names).

  Returns:
    dict of `figure6` plus "examples": `[{"synset", "category", "model_id",
    "view"}]`.

  Raises:
    FileNotFoundError: no records for `split` (naming the folder).
    IndexError: an index beyond the split.
  """
  models = list(model) if isinstance(model, (list, tuple)) else [model]
  if kind is None:
    kinds = [model_grid(m) for m in models]
  else:
    kinds = [kind] * len(models) if isinstance(kind, str) else list(kind)
  if labels is None:
    labels = [_run_label(m, i) for i, m in enumerate(models)]
  folder = os.path.join(records_dir, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such split folder in {records_dir}")
  examples = [inspection.read_example(folder, int(i))[0] for i in indices]
  images = np.stack([e.image for e in examples]).astype(np.float32) / 255.0
  steps = [np.asarray(load_predictor(m)(images)) for m in models]
  result = figure6(out, examples, steps, kind=kinds, azimuth_deg=azimuth_deg,
                   dpi=dpi, labels=labels)
  result["examples"] = [{"synset": e.synset, "category": category_name(e.synset),
                         "model_id": e.model_id, "view": int(e.view)}
                        for e in examples]
  return result


def _run_label(model, index):
  """A model's name for titles: its run directory's name."""
  if callable(model):
    return f"model {index + 1}"
  path = os.fspath(model).rstrip("/")
  if os.path.basename(path) == "export":
    path = os.path.dirname(path)
  return os.path.basename(path) or f"model {index + 1}"
