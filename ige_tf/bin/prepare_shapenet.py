"""Renders and voxelizes ShapeNet models into frustum-voxel TFRecord shards.

  python bin/prepare_shapenet.py --shapenet_dir=/data/ShapeNetCore.v1 \
      --out_dir=/data/ige_voxels [--synsets=03001627,04379243] \
      [--split_file=ShapeNet.json] [--resolutions=32,64,128] [--views=24] \
      [--image_size=128] [--workers=16]

Resumable: rerun the same command after an interruption; finished shards
are kept. See docs/data_voxel.md.
"""
from absl import flags

from ige_tf.bin import define_voxel_records_flags
from ige_tf.bin import run_app
from ige_tf.voxel.data import prepare

FLAGS = flags.FLAGS
flags.DEFINE_string("shapenet_dir", None, "ShapeNetCore v1 or v2 root (holds the synset dirs).")
define_voxel_records_flags(default_resolutions=["32", "64", "128"])
flags.DEFINE_list("world_resolutions", None,
                  "World grid resolutions (default: --resolutions; 'none' for no world grids).")
flags.DEFINE_integer("views", 24, "Views per model.")
flags.DEFINE_integer("image_size", 128, "Rendered image size S.")
flags.DEFINE_integer("seed", 0, "Seed of view sampling and anti-aliasing.")
flags.DEFINE_integer("max_faces", None, "Skip models with more faces (default 1,000,000).")
flags.DEFINE_integer("supersample", None, "Anti-aliasing rays per pixel per axis (default 2).")
flags.DEFINE_bool("store_depth", False, "Also store the rendered depth maps.")
flags.DEFINE_integer("task_index", 0, "This machine's index when several share --out_dir.")
flags.DEFINE_integer("num_tasks", 1, "Number of machines sharing --out_dir.")
flags.mark_flags_as_required(["shapenet_dir", "out_dir"])


def _ints(values):
  if values is None:
    return None
  if [v.lower() for v in values] == ["none"]:
    return []
  return [int(v) for v in values]


def main(argv):
  del argv
  manifest = prepare.prepare_shapenet(
      FLAGS.shapenet_dir, FLAGS.out_dir, synsets=FLAGS.synsets, split_file=FLAGS.split_file,
      resolutions=_ints(FLAGS.resolutions), world_resolutions=_ints(FLAGS.world_resolutions),
      views=FLAGS.views, image_size=FLAGS.image_size, workers=FLAGS.workers, seed=FLAGS.seed,
      models_per_shard=FLAGS.models_per_shard, max_faces=FLAGS.max_faces,
      supersample=FLAGS.supersample, store_depth=FLAGS.store_depth,
      train_fraction=FLAGS.train_fraction, task_index=FLAGS.task_index,
      num_tasks=FLAGS.num_tasks)
  counts = manifest["counts"]
  print(f"{counts['models_written']} models, {counts['examples']} examples, "
        f"{counts['models_skipped']} skipped; complete={manifest['complete']}; "
        f"manifest: {FLAGS.out_dir}/manifest.json")


def run():
  """Console entry point `ige-prepare-shapenet` (also `python bin/prepare_shapenet.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
