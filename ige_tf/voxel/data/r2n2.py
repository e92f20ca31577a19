"""3D-R2N2's own data (ShapeNetRendering + ShapeNetVox32) -> voxel records.

Input layout (as distributed with 3D-R2N2):

    <rendering_dir>/<synset>/<model_id>/rendering/00.png .. 23.png  (137x137 RGBA)
    <rendering_dir>/<synset>/<model_id>/rendering/rendering_metadata.txt
    <voxel_dir>/<synset>/<model_id>/model.binvox                     (32^3)

For every view: the RGBA image is composited over the white background and
resized to `image_size` (box filter; the mask is alpha > 0, box-resized,
>= 0.5 coverage); the camera is `ige_tf.voxel.camera.r2n2_camera` of the
metadata line, rescaled to `image_size`; frustum grids are the conservative
voxelization of the binvox cubes' surface in the view's frustum
(`ige_tf.voxel.frustum.frustum_grid_from_voxels`, at every requested R), so
the grid's silhouette is the cubes' silhouette. The world grid is the binvox
grid itself (`world/<X>`, `[x, y, z]`) and `world_bounds` are its bounds in
ShapeNetCore v1 model coordinates, the frame of the cameras. Stored
azimuth/elevation are in this project's convention (azimuth = 90 - R2N2's).

The records have the same schema as `ige_tf.voxel.data.prepare`'s, so
`voxel_dataset(..., resolution=32)` reads them.
"""
import os

import numpy as np
import PIL.Image

from ige_tf.voxel.data import prepare
from ige_tf.voxel.data import records

DEFAULT_R2N2_RESOLUTIONS = (32,)
R2N2_VIEWS = 24


class _Model:
  def __init__(self, synset, model_id):
    self.synset = synset
    self.model_id = model_id


def find_r2n2_models(rendering_dir, voxel_dir, synsets):
  """Models present in both trees, and the ones present in only one.

  Returns:
    (list of `prepare.Job`-ready (synset, model_id, paths) tuples,
     list of skip dicts for models missing renderings or voxels).
  """
  found, skipped = [], []
  for synset in sorted(set(synsets)):
    render_root = os.path.join(rendering_dir, synset)
    voxel_root = os.path.join(voxel_dir, synset)
    rendered = set(_subdirs(render_root))
    voxelized = set(_subdirs(voxel_root))
    for model_id in sorted(rendered | voxelized):
      paths = {
          "binvox": os.path.join(voxel_root, model_id, "model.binvox"),
          "rendering": os.path.join(render_root, model_id, "rendering"),
          "metadata": os.path.join(render_root, model_id, "rendering",
                                   "rendering_metadata.txt"),
      }
      if model_id not in voxelized:
        reason = f"{paths['binvox']}: no voxels for this rendered model"
      elif model_id not in rendered:
        reason = f"{paths['rendering']}: no renderings for this voxelized model"
      else:
        found.append((synset, model_id, paths))
        continue
      skipped.append({"synset": synset, "model_id": model_id, "split": None,
                      "path": paths["binvox"] if model_id not in voxelized else paths["rendering"],
                      "reason": reason})
  return found, skipped


def _subdirs(path):
  if not os.path.isdir(path):
    return []
  return [d for d in os.listdir(path)
          if not d.startswith(".") and os.path.isdir(os.path.join(path, d))]


def load_view_image(path, image_size):
  """An R2N2 RGBA view composited over white and resized.

  Returns:
    (uint8 [S, S, 3] image, bool [S, S] mask, int original size).

  Raises:
    ValueError: naming the file, when unreadable or not square.
  """
  try:
    with PIL.Image.open(path) as image:
      rgba = image.convert("RGBA")
  except (OSError, SyntaxError) as err:
    raise ValueError(f"{path}: cannot read image: {err}") from err
  if rgba.width != rgba.height:
    raise ValueError(f"{path}: image is {rgba.width}x{rgba.height}, expected a square")
  original = rgba.width
  array = np.asarray(rgba)
  rgb = array[..., :3].astype(np.float64)
  alpha = array[..., 3:4].astype(np.float64) / 255.0
  composite = np.clip(np.round(rgb * alpha + 255.0 * (1 - alpha)), 0, 255).astype(np.uint8)
  coverage = (array[..., 3] > 0).astype(np.float32)
  if original != image_size:
    composite = np.asarray(PIL.Image.fromarray(composite).resize(
        (image_size, image_size), PIL.Image.Resampling.BOX))
    coverage = np.asarray(PIL.Image.fromarray(coverage, mode="F").resize(
        (image_size, image_size), PIL.Image.Resampling.BOX))
  return composite, coverage >= 0.5, original


def process_r2n2_model(job, params):
  """Imports one R2N2 model (runs in a worker).

  Returns:
    (list of feature dicts, list of warnings).

  Raises:
    ValueError naming the file: the model is skipped.
  """
  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import binvox as binvox_lib
  from ige_tf.voxel import camera as camera_lib
  from ige_tf.voxel import frustum as frustum_lib
  views = camera_lib.parse_r2n2_metadata(job.paths["metadata"])
  voxels = binvox_lib.read_binvox(job.paths["binvox"])
  occupancy = np.asarray(voxels.occupancy, dtype=bool)
  if not occupancy.any():
    raise ValueError(f"{job.paths['binvox']}: empty voxel grid")
  lower, upper = voxels.bounds
  vertices, faces = frustum_lib.voxel_boundary_mesh(occupancy, lower, upper)
  world_packed = {}
  res = occupancy.shape[0]
  if occupancy.shape == (res,) * 3 and res in params["world_resolutions"]:
    world_packed[records.world_key(res)] = ("bytes", [records.pack_voxels(occupancy)])
  warnings = []
  examples = []
  size = params["image_size"]
  for view, meta in enumerate(views[:params["views"]]):
    path = os.path.join(job.paths["rendering"], f"{view:02d}.png")
    if not os.path.exists(path):
      warnings.append(f"{path}: missing view image, view skipped")
      continue
    image, mask, original = load_view_image(path, size)
    camera = camera_lib.r2n2_camera(meta, image_size=original).resized(size)
    grids, (near, far) = frustum_lib.frustum_grids(vertices, faces, camera,
                                                   params["resolutions"])
    position = camera.position
    distance = float(np.linalg.norm(position))
    example = records.ViewExample(
        synset=job.synset, model_id=job.model_id, view=view, image=image, mask=mask,
        intrinsics=camera.intrinsics, extrinsics=camera.extrinsics,
        near_far=np.array([near, far]), frustum=grids,
        azimuth=float(np.degrees(np.arctan2(position[0], position[2])) % 360.0),
        elevation=float(np.degrees(np.arcsin(position[1] / distance))),
        world_bounds=np.stack([lower, upper]))
    features = records.to_features(example)
    features.update(world_packed)
    examples.append(features)
  if not examples:
    raise ValueError(f"{job.paths['rendering']}: no usable views")
  if len(views) < params["views"]:
    warnings.append(f"{job.paths['metadata']}: {len(views)} views, fewer than {params['views']}")
  return examples, warnings


def import_r2n2(rendering_dir, voxel_dir, out_dir, synsets=None, split_file=None,
                resolutions=DEFAULT_R2N2_RESOLUTIONS, image_size=128, views=R2N2_VIEWS,
                workers=None, models_per_shard=prepare.DEFAULT_MODELS_PER_SHARD,
                train_fraction=prepare.DEFAULT_TRAIN_FRACTION, progress=True,
                task_index=0, num_tasks=1):
  """Imports ShapeNetRendering + ShapeNetVox32 into voxel records.

  Args:
    rendering_dir: the `ShapeNetRendering` root.
    voxel_dir: the `ShapeNetVox32` root.
    out_dir: output directory (resumable, as `prepare_shapenet`).
    synsets: synset ids (default: the 13 categories).
    split_file: optional Pix2Vox-style `ShapeNet.json` (else hash split).
    resolutions: frustum grid resolutions (default 32; larger ones are
      voxelizations of the 32^3 cubes).
    image_size: S of the stored images (R2N2's are 137; default 128).
    views: at most this many views per model.
    workers, models_per_shard, train_fraction, progress, task_index,
      num_tasks: as for `prepare.prepare_shapenet`.

  Returns:
    the manifest dict.
  """
  from ige_tf.voxel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  for path in (rendering_dir, voxel_dir):
    if not os.path.isdir(path):
      raise FileNotFoundError(f"{path}: not a directory")
  synsets = tuple(synsets) if synsets else tuple(mesh_lib.SYNSET_IDS)
  found, skipped = find_r2n2_models(rendering_dir, voxel_dir, synsets)
  paths = {(s, m): p for s, m, p in found}
  models = [_Model(s, m) for s, m, _ in found]
  jobs, split, extra = prepare.split_jobs(
      models, split_file, train_fraction,
      paths_of=lambda model: paths[(model.synset, model.model_id)], synsets=synsets)
  extra["skipped_before_processing"] = skipped
  extra["source"] = {"rendering_dir": os.path.abspath(rendering_dir),
                     "voxel_dir": os.path.abspath(voxel_dir),
                     "models_found": len(found)}
  resolutions = sorted({int(r) for r in resolutions})
  parameters = {
      "kind": "r2n2",
      "format_version": records.FORMAT_VERSION,
      "resolutions": resolutions,
      "world_resolutions": [32],
      "views": int(views),
      "image_size": int(image_size),
      "models_per_shard": int(models_per_shard),
      "zlib_level": records.ZLIB_LEVEL,
      "synsets": sorted(synsets),
      "split": split,
  }
  return prepare.write_records(jobs, process_r2n2_model, parameters, out_dir,
                               workers=workers, progress=progress, task_index=task_index,
                               num_tasks=num_tasks, extra_manifest=extra)


def make_synthetic_r2n2(shapenet_dir, out_dir, synsets=None, views=R2N2_VIEWS, seed=0,
                        image_size=137):
  """Writes an R2N2-layout tree (renderings + 32^3 binvox) from OBJ models.

  For demos and tests of `import_r2n2` without the real data: every model of
  `shapenet_dir` is loaded in the canonical frame (taken as its "v1 model
  coordinates"), voxelized at 32^3 over [-0.5, 0.5]^3
  (`<out_dir>/ShapeNetVox32/<synset>/<model>/model.binvox`) and rendered
  as RGBA (alpha = silhouette) from `views` seeded R2N2-style viewpoints
  (azimuth in [0, 360), elevation in [25, 30], distance ratio in [0.75, 0.95],
  in-plane 0, fifth column 25 as in the released files) through
  `ige_tf.voxel.camera.r2n2_camera`
  (`<out_dir>/ShapeNetRendering/<synset>/<model>/rendering/NN.png` and
  `rendering_metadata.txt`).

  Returns:
    (rendering_dir, voxel_dir).
  """
  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import binvox as binvox_lib
  from ige_tf.voxel import camera as camera_lib
  from ige_tf.voxel import frustum as frustum_lib
  from ige_tf.voxel import mesh as mesh_lib
  from ige_tf.voxel import render as render_lib
  rendering_dir = os.path.join(out_dir, "ShapeNetRendering")
  voxel_dir = os.path.join(out_dir, "ShapeNetVox32")
  synsets = tuple(synsets) if synsets else None
  for model in mesh_lib.find_models(shapenet_dir, synsets):
    mesh = mesh_lib.load_mesh(model.path)
    grid = frustum_lib.world_grids(mesh.vertices, mesh.faces, (32,))[32]
    vox_path = os.path.join(voxel_dir, model.synset, model.model_id, "model.binvox")
    os.makedirs(os.path.dirname(vox_path), exist_ok=True)
    binvox_lib.write_binvox(vox_path, grid, translate=(-0.5, -0.5, -0.5), scale=1.0)
    rng = np.random.default_rng(prepare.model_seed(seed, model.model_id, 0))
    render_root = os.path.join(rendering_dir, model.synset, model.model_id, "rendering")
    os.makedirs(render_root, exist_ok=True)
    renderer = render_lib.Renderer(mesh, supersample=1)
    lines = []
    for view in range(views):
      meta = camera_lib.R2N2View(azimuth_deg=float(rng.uniform(0, 360)),
                                 elevation_deg=float(rng.uniform(25, 30)), in_plane_deg=0.0,
                                 distance_ratio=float(rng.uniform(0.75, 0.95)), fov_deg=25.0)
      lines.append(f"{meta.azimuth_deg:.6f} {meta.elevation_deg:.6f} 0 "
                   f"{meta.distance_ratio:.6f} 25\n")
      rendering = renderer.render(camera_lib.r2n2_camera(meta, image_size=image_size))
      rgba = np.concatenate([rendering.image, rendering.mask[..., None].astype(np.uint8) * 255],
                            axis=-1)
      PIL.Image.fromarray(rgba, mode="RGBA").save(os.path.join(render_root, f"{view:02d}.png"))
    # Reread precision: keep exactly what is written.
    with open(os.path.join(render_root, "rendering_metadata.txt"), "w") as f:
      f.writelines(lines)
  return rendering_dir, voxel_dir
