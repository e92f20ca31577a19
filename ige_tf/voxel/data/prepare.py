"""ShapeNet meshes -> rendered views + frustum/world voxel grids -> TFRecord shards.

`prepare_shapenet` is the library behind `bin/prepare_shapenet.py`:

1. find the models (`ige_tf.voxel.mesh.find_models`, ShapeNetCore v1 or v2
   layout) of the requested synsets;
2. split them: a Pix2Vox-style split file (`ShapeNet.json`) if given, else a
   deterministic hash split by model id (`hash_split`, 80/20 train/test);
3. cut every split into shards of `models_per_shard` models (sorted by
   synset and model id), named `<split>/<split>-SSSSS-of-NNNNN.tfrecord`;
4. process the models of unfinished shards on `workers` processes: load and
   canonicalize the mesh, render `views` views (`ige_tf.voxel.render`),
   voxelize world grids once and frustum grids per view
   (`ige_tf.voxel.frustum`), encode (`ige_tf.voxel.data.records`);
5. write each shard and its sidecar `<shard>.json` (num_examples, shard
   check, and here: models, skipped models with reasons, warnings) through
   `ige_tf.data.record_writer.RecordWriter`, which also refuses other
   parameters on resume, keeps verified finished shards, rewrites damaged
   ones and removes the temporary files (`*.tmp-PID`) of killed runs;
6. write `manifest.json` (the writer's schema: parameters, splits with
   their shards, checks and `num_examples`, every skipped model and its
   reason; here also counts and warnings) atomically.

Models run on a process pool (`ige_tf.data.workers.map_in_order`) whose
workers end when the parent dies, however it dies.

A model that cannot be used (unreadable file, empty mesh, too many faces,
...) is skipped and recorded, never fatal. Shards are independent work units:
`num_tasks`/`task_index` let several machines share one output directory
(each processes the shards with `index % num_tasks == task_index`; the last
one to finish writes a complete manifest; any task can rewrite it).

The records of a shard depend only on the parameters and the models, not on
the number of workers.
"""
import dataclasses
import functools
import hashlib
import json
import os
import time
import traceback

import numpy as np

from ige_tf.data import record_writer
from ige_tf.data import records_check
from ige_tf.data import workers as workers_lib
from ige_tf.voxel.data import records

DEFAULT_RESOLUTIONS = (32, 64, 128)
DEFAULT_MODELS_PER_SHARD = 16
DEFAULT_TRAIN_FRACTION = 0.8
SPLITS = ("train", "val", "test")

# Parameters that may change between runs into the same directory.
_RUNTIME_KEYS = ("workers", "progress", "task_index", "num_tasks")


# ----------------------------------------------------------------------------
# Splits.


def hash_split(model_id, train_fraction=DEFAULT_TRAIN_FRACTION):
  """Deterministic train/test assignment of a model id.

  The first 8 bytes of `sha256(model_id)` as a fraction of 2^64 decide:
  below `train_fraction` is "train", else "test". Independent of the set
  of models, the machine and the Python hash seed.
  """
  digest = hashlib.sha256(model_id.encode("utf-8")).digest()
  value = int.from_bytes(digest[:8], "big") / 2.0**64
  return "train" if value < train_fraction else "test"


def read_split_file(path):
  """Reads a Pix2Vox-style `ShapeNet.json` split file.

  Format: a JSON list of `{"taxonomy_id": "03001627", "taxonomy_name":
  "chair", "train": [ids], "val": [ids], "test": [ids]}`.

  Returns:
    dict (synset, model_id) -> split name.

  Raises:
    ValueError: naming the file and the problem.
  """
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise ValueError(f"{path}: cannot read split file: {err}") from err
  if not isinstance(data, list):
    raise ValueError(f"{path}: split file must be a JSON list of taxonomies, "
                     f"got {type(data).__name__}")
  assignment = {}
  for number, entry in enumerate(data):
    if not isinstance(entry, dict) or "taxonomy_id" not in entry:
      raise ValueError(f"{path}: entry {number} has no taxonomy_id")
    synset = str(entry["taxonomy_id"])
    for split in SPLITS:
      for model_id in entry.get(split, []) or []:
        key = (synset, str(model_id))
        if key in assignment and assignment[key] != split:
          raise ValueError(f"{path}: model {synset}/{model_id} is in both "
                           f"{assignment[key]!r} and {split!r}")
        assignment[key] = split
  return assignment


# ----------------------------------------------------------------------------
# Jobs and shards.


@dataclasses.dataclass
class Job:
  """One model to process.

  Attributes:
    synset: 8-digit synset id.
    model_id: model id.
    split: split name.
    paths: dict of input paths (e.g. {"mesh": ...} or {"binvox": ..., ...}).
  """
  synset: str
  model_id: str
  split: str
  paths: dict


@dataclasses.dataclass
class Shard:
  split: str
  index: int
  count: int
  jobs: list

  @property
  def name(self):
    return f"{self.split}/{self.split}-{self.index:05d}-of-{self.count:05d}.tfrecord"


def plan_shards(jobs, models_per_shard):
  """Cuts the jobs of every split into shards (jobs sorted by synset, model).

  Returns:
    list of `Shard`, splits in the order train, val, test (others after).
  """
  if models_per_shard < 1:
    raise ValueError(f"models_per_shard must be >= 1, got {models_per_shard}")
  by_split = {}
  for job in jobs:
    by_split.setdefault(job.split, []).append(job)
  order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
  shards = []
  for split in order:
    split_jobs = sorted(by_split[split], key=lambda j: (j.synset, j.model_id))
    count = (len(split_jobs) + models_per_shard - 1) // models_per_shard
    for index in range(count):
      chunk = split_jobs[index * models_per_shard:(index + 1) * models_per_shard]
      shards.append(Shard(split, index, count, chunk))
  return shards


# ----------------------------------------------------------------------------
# Running jobs.


def _run_job(process_fn, params, job):
  """Runs `process_fn` on one job in a worker; never raises.

  Returns:
    dict with "synset", "model_id", "split", "path", "status" ("ok" or
    "skipped"), "reason", "warnings", "examples" (list of feature dicts),
    "seconds".
  """
  start = time.perf_counter()
  result = {"synset": job.synset, "model_id": job.model_id, "split": job.split,
            "path": next(iter(job.paths.values()), ""), "status": "ok",
            "reason": "", "warnings": [], "examples": []}
  try:
    examples, warnings = process_fn(job, params)
    result["examples"] = examples
    result["warnings"] = [str(w) for w in warnings]
  except Exception as err:  # pylint: disable=broad-except
    result["status"] = "skipped"
    message = str(err) or type(err).__name__
    if not isinstance(err, (ValueError, OSError)):
      message = f"{type(err).__name__}: {message}"
      result["traceback"] = traceback.format_exc(limit=8)
    result["reason"] = message
    result["examples"] = []
  result["seconds"] = time.perf_counter() - start
  return result


def _write_shard(writer, shard, results):
  """Writes the shard's records and its sidecar (models, skips, warnings)."""
  serialized = (records.serialize(features) for result in results
                for features in result["examples"])
  return writer.write_shard(
      shard.name, serialized,
      models=[{"synset": r["synset"], "model_id": r["model_id"],
               "num_examples": len(r["examples"]), "seconds": round(r["seconds"], 3)}
              for r in results if r["status"] == "ok"],
      skipped=[{k: r[k] for k in ("synset", "model_id", "split", "path", "reason")}
               for r in results if r["status"] != "ok"],
      warnings=[{"synset": r["synset"], "model_id": r["model_id"], "warnings": r["warnings"]}
                for r in results if r["warnings"]])


def build_manifest(writer, shards, extra=None):
  """Aggregates the sidecars of finished shards into `manifest.json`.

  The schema is `ige_tf.data.record_writer`'s, plus per split "num_models",
  and "format_version" (of the records), "counts", "warnings" and `extra`.

  Returns:
    the manifest dict (also written atomically to `<out_dir>/manifest.json`).
  """
  extra = dict(extra or {})
  manifest, sidecars = writer.manifest(
      [s.name for s in shards], skipped=extra.pop("skipped_before_processing", []))
  by_synset = {}
  seconds, warnings = [], []
  for entry in manifest["splits"].values():
    entry["num_models"] = 0
  for sidecar in sidecars:
    manifest["splits"][sidecar["split"]]["num_models"] += len(sidecar["models"])
    for model in sidecar["models"]:
      by_synset.setdefault(model["synset"], {"written": 0, "skipped": 0})["written"] += 1
      seconds.append(model["seconds"])
    warnings.extend(sidecar["warnings"])
  for skip in manifest["skipped"]:
    by_synset.setdefault(skip["synset"], {"written": 0, "skipped": 0})["skipped"] += 1
  manifest["format_version"] = records.FORMAT_VERSION
  manifest["counts"] = {
      "models_planned": sum(len(s.jobs) for s in shards),
      "models_written": sum(len(s["models"]) for s in sidecars),
      "models_skipped": len(manifest["skipped"]),
      "examples": sum(s["num_examples"] for s in sidecars),
      "shards": len(shards),
      "shards_finished": len(sidecars),
      "by_synset": dict(sorted(by_synset.items())),
      "mean_seconds_per_model": float(np.mean(seconds)) if seconds else None,
  }
  manifest["warnings"] = warnings
  manifest.update(extra)
  writer.write_manifest(manifest)
  return manifest


def write_records(jobs, process_fn, parameters, out_dir, workers=None, progress=True,
                  task_index=0, num_tasks=1, extra_manifest=None):
  """Processes jobs into resumable TFRecord shards and writes the manifest.

  Shards, sidecars, settings check, resume and manifest are
  `ige_tf.data.record_writer.RecordWriter`'s; this function plans the
  shards and runs the models on a process pool (`ige_tf.data.workers`).

  Args:
    jobs: list of `Job`.
    process_fn: module-level function `(job, parameters) -> (list of feature
      dicts from records.to_features, list of warning strings)`; raises to
      skip the model (the message is the recorded reason).
    parameters: JSON-serializable dict; stored, and checked on resume.
    out_dir: output directory.
    workers: processes (None: all cores; 1: in this process).
    progress: tqdm progress bar over models.
    task_index, num_tasks: process only shards with index % num_tasks == task_index.
    extra_manifest: extra top-level manifest entries; the key
      "skipped_before_processing" (list of skip dicts) is merged into "skipped".

  Returns:
    the manifest dict.

  Raises:
    record_writer.SettingsError: `out_dir` was prepared with other parameters.
  """
  if not 0 <= task_index < num_tasks:
    raise ValueError(f"task_index must be in [0, {num_tasks}), got {task_index}")
  parameters = {k: v for k, v in parameters.items() if k not in _RUNTIME_KEYS}
  writer = record_writer.RecordWriter(out_dir, parameters)
  workers = os.cpu_count() if workers is None else max(1, int(workers))
  shards = plan_shards(jobs, parameters.get("models_per_shard", DEFAULT_MODELS_PER_SHARD))
  mine = [s for n, s in enumerate(shards) if n % num_tasks == task_index]
  writer.remove_stale_temporaries([s.name for s in mine], shared=num_tasks > 1)
  todo = [s for s in mine if writer.finished(s.name) is None]
  todo_jobs = [job for shard in todo for job in shard.jobs]
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(todo_jobs), desc=f"models -> {out_dir}", unit="model",
                    dynamic_ncols=True)
  results = workers_lib.map_in_order(
      functools.partial(_run_job, process_fn, parameters), todo_jobs, workers)
  try:
    for shard in todo:
      shard_results = []
      for _ in shard.jobs:
        shard_results.append(next(results))
        if bar is not None:
          bar.update(1)
          if shard_results[-1]["status"] != "ok":
            bar.write(f"skipped {shard_results[-1]['path']}: {shard_results[-1]['reason']}")
      _write_shard(writer, shard, shard_results)
  finally:
    results.close()
    if bar is not None:
      bar.close()
  return build_manifest(writer, shards, extra_manifest)

# ----------------------------------------------------------------------------
# ShapeNet.


def model_seed(seed, model_id, view):
  """Seed of the anti-aliasing jitter of one rendered view."""
  digest = hashlib.sha256(model_id.encode("utf-8")).digest()
  return [int(seed), int.from_bytes(digest[:4], "little"), int(view)]


def process_shapenet_model(job, params, timings=None):
  """Renders and voxelizes one ShapeNet model (runs in a worker).

  Args:
    job: `Job` with `paths["mesh"]`.
    params: the parameter dict of `shapenet_parameters`.
    timings: optional dict; CPU seconds of the stages "load", "render",
      "world", "frustum", "encode" are added to it (for benchmarks).

  Returns:
    (list of `params["views"]` feature dicts, list of warnings).

  Raises:
    ValueError (e.g. `MeshError`) naming the file: the model is skipped.
  """
  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import camera as camera_lib
  from ige_tf.voxel import frustum as frustum_lib
  from ige_tf.voxel import mesh as mesh_lib
  from ige_tf.voxel import render as render_lib
  clock = _StageClock(timings)
  path = job.paths["mesh"]
  mesh = mesh_lib.load_mesh(path, max_faces=params["max_faces"])
  if not len(mesh.faces):
    raise ValueError(f"{path}: no faces left after cleaning")
  azimuth, elevation = camera_lib.sample_views(
      job.model_id, params["seed"], params["views"], params["elevation_range"])
  cameras = [camera_lib.look_at_camera(a, e, distance=params["distance"],
                                       fov_deg=params["fov_deg"],
                                       image_size=params["image_size"])
             for a, e in zip(azimuth, elevation)]
  renderer = render_lib.Renderer(mesh, supersample=params["supersample"],
                                 background=params["background"])
  clock.lap("load")
  world_packed = {}
  if params["world_resolutions"]:
    world = frustum_lib.world_grids(mesh.vertices, mesh.faces, params["world_resolutions"])
    clock.lap("world")
    world_packed = {records.world_key(r): ("bytes", [records.pack_voxels(g)])
                    for r, g in sorted(world.items())}
    clock.lap("encode")
  examples = []
  for view, camera in enumerate(cameras):
    rendering = renderer.render(camera, seed=model_seed(params["seed"], job.model_id, view))
    clock.lap("render")
    grids, (near, far) = frustum_lib.frustum_grids(mesh.vertices, mesh.faces, camera,
                                                   params["resolutions"])
    clock.lap("frustum")
    example = records.ViewExample(
        synset=job.synset, model_id=job.model_id, view=view,
        image=rendering.image, mask=rendering.mask,
        intrinsics=camera.intrinsics, extrinsics=camera.extrinsics,
        near_far=np.array([near, far]), frustum=grids,
        azimuth=float(azimuth[view]), elevation=float(elevation[view]),
        depth=rendering.depth if params["store_depth"] else None)
    features = records.to_features(example)
    features.update(world_packed)
    examples.append(features)
    clock.lap("encode")
  return examples, list(mesh.warnings)


class _StageClock:
  """Adds process CPU seconds since the previous lap to `timings[stage]`."""

  def __init__(self, timings):
    self.timings = timings
    self.last = time.process_time()

  def lap(self, stage):
    if self.timings is None:
      return
    now = time.process_time()
    self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
    self.last = now


def shapenet_parameters(resolutions=DEFAULT_RESOLUTIONS, world_resolutions=None, views=24,
                        image_size=128, seed=0, models_per_shard=DEFAULT_MODELS_PER_SHARD,
                        max_faces=None, supersample=None, store_depth=False, synsets=None,
                        split=None):
  """The parameter dict of a ShapeNet preparation (stored in the manifest)."""
  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import camera as camera_lib
  from ige_tf.voxel import mesh as mesh_lib
  from ige_tf.voxel import render as render_lib
  resolutions = sorted({int(r) for r in resolutions})
  world_resolutions = (resolutions if world_resolutions is None
                       else sorted({int(r) for r in world_resolutions}))
  return {
      "kind": "shapenet",
      "format_version": records.FORMAT_VERSION,
      "resolutions": resolutions,
      "world_resolutions": world_resolutions,
      "views": int(views),
      "image_size": int(image_size),
      "fov_deg": float(camera_lib.DEFAULT_FOV_DEG),
      "distance": float(camera_lib.DEFAULT_DISTANCE),
      "elevation_range": [float(x) for x in camera_lib.ELEVATION_RANGE_DEG],
      "seed": int(seed),
      "models_per_shard": int(models_per_shard),
      "max_faces": int(mesh_lib.DEFAULT_MAX_FACES if max_faces is None else max_faces),
      "supersample": int(render_lib.DEFAULT_SUPERSAMPLE if supersample is None else supersample),
      "background": [int(c) for c in render_lib.DEFAULT_BACKGROUND],
      "light_camera": [float(c) for c in render_lib.DEFAULT_LIGHT_CAMERA],
      "ambient": float(render_lib.DEFAULT_AMBIENT),
      "diffuse": float(render_lib.DEFAULT_DIFFUSE),
      "store_depth": bool(store_depth),
      "zlib_level": records.ZLIB_LEVEL,
      "synsets": sorted(synsets) if synsets is not None else None,
      "split": split,
  }


def split_jobs(models, split_file=None, train_fraction=DEFAULT_TRAIN_FRACTION,
               paths_of=None, synsets=None):
  """Assigns found models to splits.

  Args:
    models: list of objects with `.synset`, `.model_id`.
    split_file: optional Pix2Vox-style JSON path.
    train_fraction: hash split fraction when no split file is given.
    paths_of: model -> dict of paths for the `Job`.
    synsets: the requested synsets (split-file models of other synsets are
      not reported as missing); None: all.

  Returns:
    (jobs, split description dict, extra manifest entries).
  """
  jobs = []
  extra = {}
  if split_file:
    assignment = read_split_file(split_file)
    found = set()
    for model in models:
      key = (model.synset, model.model_id)
      if key in assignment:
        jobs.append(Job(model.synset, model.model_id, assignment[key], paths_of(model)))
        found.add(key)
    extra["models_not_in_split_file"] = len(models) - len(found)
    missing = sorted(f"{s}/{m}" for (s, m) in assignment
                     if (s, m) not in found and (synsets is None or s in synsets))
    extra["split_file_models_missing"] = missing
    extra["split_file"] = os.path.abspath(split_file)
    split = {"source": "file", "sha256": records_check.file_sha256(split_file)}
  else:
    for model in models:
      jobs.append(Job(model.synset, model.model_id, hash_split(model.model_id, train_fraction),
                      paths_of(model)))
    split = {"source": "hash", "train_fraction": float(train_fraction),
             "hash": "sha256(model_id)[:8] / 2^64 < train_fraction -> train, else test"}
  return jobs, split, extra


def prepare_shapenet(shapenet_dir, out_dir, synsets=None, split_file=None,
                     resolutions=DEFAULT_RESOLUTIONS, world_resolutions=None, views=24,
                     image_size=128, workers=None, seed=0,
                     models_per_shard=DEFAULT_MODELS_PER_SHARD, max_faces=None,
                     supersample=None, store_depth=False,
                     train_fraction=DEFAULT_TRAIN_FRACTION, progress=True,
                     task_index=0, num_tasks=1):
  """Prepares voxel records from a ShapeNetCore (v1 or v2) copy.

  Args:
    shapenet_dir: root with `<synset>/<model_id>/model.obj` (v1) or
      `<synset>/<model_id>/models/model_normalized.obj` (v2).
    out_dir: output directory (created; resumed if it holds a run with the
      same parameters).
    synsets: synset ids (default: the 13 3D-R2N2 categories).
    split_file: optional Pix2Vox-style `ShapeNet.json`; default hash split.
    resolutions: frustum grid resolutions R (grids are R x R x R).
    world_resolutions: world grid resolutions (default: `resolutions`;
      empty: no world grids).
    views: views per model.
    image_size: S.
    workers: processes (default all cores).
    seed: seeds view sampling and anti-aliasing.
    models_per_shard: models per shard (the unit of resumption).
    max_faces: models with more faces are skipped (default
      `ige_tf.voxel.mesh.DEFAULT_MAX_FACES`).
    supersample: anti-aliasing rays per pixel per axis.
    store_depth: also store the rendered depth map.
    train_fraction: train share of the hash split.
    progress: show a progress bar.
    task_index, num_tasks: share the shards between several machines.

  Returns:
    the manifest dict (also in `<out_dir>/manifest.json`).
  """
  from ige_tf.voxel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(shapenet_dir):
    raise FileNotFoundError(f"{shapenet_dir}: not a directory")
  synsets = tuple(synsets) if synsets else tuple(mesh_lib.SYNSET_IDS)
  models = mesh_lib.find_models(shapenet_dir, synsets)
  jobs, split, extra = split_jobs(models, split_file, train_fraction,
                                  paths_of=lambda m: {"mesh": m.path}, synsets=synsets)
  extra["source"] = {"shapenet_dir": os.path.abspath(shapenet_dir),
                     "models_found": len(models),
                     "layouts": sorted({m.layout for m in models})}
  parameters = shapenet_parameters(resolutions, world_resolutions, views, image_size, seed,
                                   models_per_shard, max_faces, supersample, store_depth,
                                   synsets, split)
  return write_records(jobs, process_shapenet_model, parameters, out_dir, workers=workers,
                       progress=progress, task_index=task_index, num_tasks=num_tasks,
                       extra_manifest=extra)

