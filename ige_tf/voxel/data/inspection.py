"""Looking at one record: arrays to `.npz`, a picture to `.png`.

`inspect_record` (behind `bin/inspect_records.py`) decodes example N of a
records file, directory or glob and writes

- `PREFIX.npz`: `image` uint8 [S, S, 3], `mask` bool [S, S] (the rendered
  silhouette), `frustum_<R>` / `world_<R>` bool [R, R, R], `intrinsics`
  [3, 3], `extrinsics` [3, 4], `near_far` [2], `world_bounds` [2, 3],
  `synset`, `model_id`, `view`;
- `PREFIX.png`: the image; the image with the rendered silhouette (outline)
  and the frustum grid's silhouette at the largest R (red) over it; the
  frustum voxels (mapped back to world space) and the world voxels rendered
  as cubes from the record's camera turned by 60 degrees about +y.
"""
import glob
import os

import numpy as np

from ige_tf import atomic
from ige_tf.voxel.data import records


def record_files(records):
  """Sorted TFRecord files of a file, a glob, or a directory (recursive).

  Raises:
    FileNotFoundError: nothing matches (naming `records`).
  """
  if os.path.isdir(records):
    files = sorted(glob.glob(os.path.join(records, "**", "*.tfrecord"), recursive=True))
  elif os.path.isfile(records):
    files = [records]
  else:
    files = sorted(glob.glob(records))
  if not files:
    raise FileNotFoundError(f"{records}: no .tfrecord files")
  return files


def read_example(records_path, index):
  """The `index`-th example (0-based) over the sorted record files.

  Returns:
    (`records.ViewExample`, file it came from).

  Raises:
    IndexError: fewer than index + 1 examples (with the count).
  """
  if index < 0:
    raise IndexError(f"index must be >= 0, got {index}")
  count = 0
  for path in record_files(records_path):
    for serialized in records.read_tfrecord(path):
      if count == index:
        return records.parse(serialized), path
      count += 1
  raise IndexError(f"{records_path}: index {index} out of range ({count} examples)")


def example_arrays(example):
  """The `.npz` arrays of an example (dict name -> array)."""
  arrays = {
      "image": example.image,
      "mask": example.mask,
      "intrinsics": example.intrinsics,
      "extrinsics": example.extrinsics,
      "near_far": example.near_far,
      "world_bounds": example.world_bounds,
      "synset": np.array(example.synset),
      "model_id": np.array(example.model_id),
      "view": np.array(example.view),
  }
  for res, grid in example.frustum.items():
    arrays[f"frustum_{res}"] = grid
  for res, grid in example.world.items():
    arrays[f"world_{res}"] = grid
  if example.depth is not None:
    arrays["depth"] = example.depth
  return arrays


def grid_silhouette(frustum, image_size):
  """bool [S, S]: the frustum grid projected along depth, upsampled to S.

  Args:
    frustum: bool [R, R, D].
    image_size: S, a multiple of R (else nearest-neighbour sampling).
  """
  silhouette = np.asarray(frustum).any(axis=2)
  res = silhouette.shape[0]
  index = (np.arange(image_size) * res) // image_size
  return silhouette[index][:, index]


def side_camera(camera, azimuth_offset_deg=60.0):
  """The camera moved by `azimuth_offset_deg` about world +y (same distance,
  elevation, focal length and image size), looking at the origin."""
  from ige_tf.voxel import camera as camera_lib  # pylint: disable=g-import-not-at-top
  position = camera.position
  distance = float(np.linalg.norm(position))
  azimuth = np.degrees(np.arctan2(position[0], position[2]))
  elevation = np.degrees(np.arcsin(position[1] / distance))
  return camera_lib.look_at_camera(azimuth + azimuth_offset_deg, elevation, distance=distance,
                                   fov_deg=camera.fov_deg, image_size=camera.image_size)


def render_voxels(example, kind, resolution, color, azimuth_offset_deg=60.0):
  """uint8 [S, S, 3]: a grid's cubes in world space, rendered from the
  example's camera turned by `azimuth_offset_deg` about +y (0: the record's
  own view, where a frustum grid shows only its silhouette)."""
  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import camera as camera_lib
  from ige_tf.voxel import frustum as frustum_lib
  from ige_tf.voxel import render as render_lib
  size = example.image.shape[0]
  camera = camera_lib.Camera(example.intrinsics, example.extrinsics, size)
  if kind == "frustum":
    grid = example.frustum[resolution]
    vertices, faces = frustum_lib.voxel_boundary_mesh(grid, np.zeros(3), np.array(grid.shape, float))
    if len(faces):
      near, far = example.near_far
      vertices = camera_lib.frustum_to_world(vertices, camera, near, far, resolution, grid.shape[2])
  else:
    grid = example.world[resolution]
    lower, upper = example.world_bounds
    vertices, faces = frustum_lib.voxel_boundary_mesh(grid, lower, upper)
  if not len(faces):
    return np.full((size, size, 3), 255, np.uint8)
  mesh = render_lib.SolidMesh(vertices, faces, color)
  view = side_camera(camera, azimuth_offset_deg) if azimuth_offset_deg else camera
  return render_lib.Renderer(mesh, supersample=1).render(view).image


def save_figure(example, path):
  """Writes the inspection picture (matplotlib, Agg backend) to `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  size = example.image.shape[0]
  panels = [("image", example.image)]
  res = max(example.frustum) if example.frustum else None
  overlay = example.image.astype(np.float64).copy()
  title = "image + silhouettes"
  if res is not None:
    grid_sil = grid_silhouette(example.frustum[res], size)
    overlay[grid_sil] = 0.5 * overlay[grid_sil] + 0.5 * np.array([230.0, 30.0, 30.0])
    mask_small = example.mask.reshape(res, size // res, res, size // res).any(axis=(1, 3)) \
        if size % res == 0 else None
    if mask_small is not None:
      agree = np.mean(mask_small == example.frustum[res].any(axis=2))
      title = f"red: frustum_{res} silhouette\nagrees with mask on {100 * agree:.1f}% px"
  panels.append((title, np.clip(overlay, 0, 255).astype(np.uint8)))
  if res is not None:
    panels.append((f"frustum_{res} voxels\n(view turned 60 deg)",
                   render_voxels(example, "frustum", res, (90, 140, 220))))
  if example.world:
    world_res = max(example.world)
    panels.append((f"world_{world_res} voxels\n(view turned 60 deg)",
                   render_voxels(example, "world", world_res, (120, 190, 120))))
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
  axes = np.atleast_1d(axes)
  for ax, (name, image) in zip(axes, panels):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(name, fontsize=8)
    ax.axis("off")
  axes[1].contour(example.mask.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
  fig.suptitle(f"{example.synset}/{example.model_id} view {example.view}", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.93))
  fig.savefig(path, dpi=100)
  plt.close(fig)


def inspect_record(records_path, index, out_prefix):
  """Writes `out_prefix.npz` and `out_prefix.png` for example `index`.

  Args:
    records_path: a .tfrecord file, a directory (searched recursively) or a glob.
    index: 0-based example index over the sorted files.
    out_prefix: output path without extension.

  Returns:
    dict with "npz", "png" (paths), "source" (the record file) and
    "example" (the decoded `records.ViewExample`).
  """
  example, source = read_example(records_path, index)
  out_dir = os.path.dirname(os.path.abspath(out_prefix))
  os.makedirs(out_dir, exist_ok=True)
  npz_path = f"{out_prefix}.npz"
  with atomic.replacing(npz_path, keep_suffix=True) as tmp:
    np.savez_compressed(tmp, **example_arrays(example))
  png_path = f"{out_prefix}.png"
  with atomic.replacing(png_path, keep_suffix=True) as tmp:
    save_figure(example, tmp)
  return {"npz": npz_path, "png": png_path, "source": source, "example": example}
