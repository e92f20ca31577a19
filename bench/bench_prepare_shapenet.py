"""Benchmark: ShapeNet data preparation and the voxel record reader.

On generated models (`ige_tf.voxel.synthetic`, `--models_per_synset` per
category, all 13 categories) this measures, in one process and one thread:

* seconds per model for the full per-model work of `bin/prepare_shapenet.py`
  (load + canonicalize, 24 renders at 128x128 with 2x2 anti-aliasing, world
  grids, 24 frustum grids at each R, PNG/bit-pack/zlib encoding), as process
  CPU seconds (the per-core figure) split by stage, and wall seconds;
* bytes per serialized example, in total and per feature;
* reader decode throughput at R = 128 (`voxel_dataset`, one tf.data thread
  and one TF op thread): examples/s per core, frustum only and frustum +
  world.

Results: `bench/results/prepare_shapenet[_<N>faces].json` and `.md`.

Usage:
  python bench/bench_prepare_shapenet.py [--models_per_synset 2] \
      [--resolutions 32,64,128] [--views 24] [--decode_examples 300] \
      [--target_faces 20000]   # subdivide models to ShapeNet-like sizes
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from ige_tf.data import record_writer  # noqa: E402
from ige_tf.voxel import mesh as mesh_lib  # noqa: E402
from ige_tf.voxel import synthetic  # noqa: E402
from ige_tf.voxel.data import prepare  # noqa: E402
from ige_tf.voxel.data import records  # noqa: E402

STAGES = ("load", "render", "world", "frustum", "encode")


def _densify(shapenet_dir, target_faces):
  """Subdivides every model (4x faces per step) until it has >= target_faces.

  Real ShapeNet meshes have thousands to hundreds of thousands of faces; the
  generated ones a few hundred. Materials, UVs and textures are kept.
  """
  import trimesh  # pylint: disable=g-import-not-at-top
  for model in mesh_lib.find_models(shapenet_dir):
    scene = trimesh.load(model.path)
    while sum(len(g.faces) for g in scene.geometry.values()) < target_faces:
      for name, geometry in list(scene.geometry.items()):
        finer = geometry.subdivide()
        if getattr(geometry.visual, "uv", None) is None:
          finer.visual = trimesh.visual.TextureVisuals(material=geometry.visual.material)
        scene.geometry[name] = finer
    model_dir = os.path.dirname(model.path)
    for name in os.listdir(model_dir):
      if name.startswith("model."):
        os.remove(os.path.join(model_dir, name))
    synthetic.write_obj(scene, model_dir)


def _prepare_models(shapenet_dir, resolutions, views):
  params = prepare.shapenet_parameters(resolutions=resolutions, views=views)
  rows, examples = [], []
  for model in mesh_lib.find_models(shapenet_dir):
    job = prepare.Job(model.synset, model.model_id, "train", {"mesh": model.path})
    timings = {}
    wall = time.perf_counter()
    cpu = time.process_time()
    features, _ = prepare.process_shapenet_model(job, params, timings)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    serialized = [records.serialize(f) for f in features]
    faces = len(mesh_lib.load_mesh(model.path).faces)
    rows.append({"synset": model.synset, "model_id": model.model_id, "faces": faces,
                 "cpu_seconds": cpu, "wall_seconds": wall, **timings})
    examples.append((features, serialized))
    print(f"{model.synset}/{model.model_id[:8]} {faces:6d} faces: {cpu:6.2f} s CPU "
          f"({', '.join(f'{k} {timings.get(k, 0):.2f}' for k in STAGES)})", flush=True)
  return rows, examples


def _bytes_per_example(examples):
  totals, count = {}, 0
  serialized_total = 0
  for features, serialized in examples:
    for feats, data in zip(features, serialized):
      count += 1
      serialized_total += len(data)
      for key, (kind, values) in feats.items():
        if kind == "bytes":
          totals[key] = totals.get(key, 0) + sum(len(v) for v in values)
  return {"serialized": serialized_total / count,
          **{k: v / count for k, v in sorted(totals.items())}}


def _decode_rate(records_dir, resolution, grids, num_examples):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel.data import pipeline  # pylint: disable=g-import-not-at-top
  dataset = pipeline.voxel_dataset(records_dir, "train", resolution, batch_size=1,
                                   repeat=True, grids=grids, num_parallel_calls=1,
                                   prefetch=None)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  dataset = dataset.with_options(options).take(num_examples)
  for _ in dataset.take(10):  # warm up
    pass
  cpu = time.process_time()
  wall = time.perf_counter()
  count = 0
  for _ in dataset:
    count += 1
  cpu = time.process_time() - cpu
  wall = time.perf_counter() - wall
  return {"examples": count, "examples_per_cpu_second": count / cpu,
          "examples_per_wall_second": count / wall}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models_per_synset", type=int, default=2)
  parser.add_argument("--resolutions", default="32,64,128")
  parser.add_argument("--views", type=int, default=24)
  parser.add_argument("--decode_examples", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--target_faces", type=int, default=0,
                      help="subdivide each model to at least this many faces")
  parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args()
  resolutions = [int(r) for r in args.resolutions.split(",")]

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)

  with tempfile.TemporaryDirectory() as tmp:
    shapenet = os.path.join(tmp, "shapenet")
    synthetic.make_synthetic_shapenet(shapenet, args.models_per_synset, seed=args.seed)
    if args.target_faces:
      _densify(shapenet, args.target_faces)
    rows, examples = _prepare_models(shapenet, resolutions, args.views)
    sizes = _bytes_per_example(examples)
    # One shard of all examples for the reader.
    writer = record_writer.RecordWriter(
        os.path.join(tmp, "records"), {"resolutions": resolutions,
                                       "world_resolutions": resolutions, "image_size": 128})
    records_dir = writer.out_dir
    shard = "train/train-00000-of-00001.tfrecord"
    writer.write_shard(shard, [s for _, serialized in examples for s in serialized])
    writer.write_manifest(writer.manifest([shard])[0])
    top = max(resolutions)
    decode = {
        "frustum": _decode_rate(records_dir, top, ("frustum",), args.decode_examples),
        "frustum+world": _decode_rate(records_dir, top, ("frustum", "world"),
                                      args.decode_examples),
    }

  cpu = [r["cpu_seconds"] for r in rows]
  summary = {
      "command": "python bench/bench_prepare_shapenet.py " + " ".join(sys.argv[1:]),
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpu_count": os.cpu_count(), "python": platform.python_version()},
      "models": len(rows),
      "views": args.views,
      "resolutions": resolutions,
      "seconds_per_model_cpu": {"mean": statistics.mean(cpu), "median": statistics.median(cpu),
                                "max": max(cpu)},
      "seconds_per_model_wall_mean": statistics.mean(r["wall_seconds"] for r in rows),
      "stage_cpu_seconds_mean": {k: statistics.mean(r.get(k, 0.0) for r in rows)
                                 for k in STAGES},
      "faces": {"mean": statistics.mean(r["faces"] for r in rows),
                "max": max(r["faces"] for r in rows)},
      "bytes_per_example": sizes,
      "decode_at_R": top,
      "decode": decode,
      "per_model": rows,
  }
  os.makedirs(args.out_dir, exist_ok=True)
  stem = "prepare_shapenet" + (f"_{args.target_faces}faces" if args.target_faces else "")
  with open(os.path.join(args.out_dir, f"{stem}.json"), "w") as f:
    json.dump(summary, f, indent=1)
  lines = [
      "# ShapeNet preparation benchmark",
      "",
      f"Command: `{summary['command']}`",
      "",
      f"{len(rows)} generated models (mean {summary['faces']['mean']:.0f} faces, max "
      f"{summary['faces']['max']}), {args.views} views at 128x128, R = {resolutions}.",
      "",
      "| figure | value |",
      "|---|---|",
      f"| CPU s / model, mean (median, max) | {summary['seconds_per_model_cpu']['mean']:.2f} "
      f"({summary['seconds_per_model_cpu']['median']:.2f}, "
      f"{summary['seconds_per_model_cpu']['max']:.2f}) |",
      f"| wall s / model, mean | {summary['seconds_per_model_wall_mean']:.2f} |",
  ]
  for stage in STAGES:
    lines.append(f"| CPU s / model: {stage} | {summary['stage_cpu_seconds_mean'][stage]:.2f} |")
  lines.append(f"| bytes / example (serialized) | {sizes['serialized']:.0f} |")
  for key, value in sizes.items():
    if key != "serialized":
      lines.append(f"| bytes / example: {key} | {value:.0f} |")
  for grids, rate in decode.items():
    lines.append(f"| reader examples / CPU s at R={top} ({grids}) | "
                 f"{rate['examples_per_cpu_second']:.0f} |")
  with open(os.path.join(args.out_dir, f"{stem}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
