"""Imports 3D-R2N2's ShapeNetRendering + ShapeNetVox32 into voxel records (32^3).

  python bin/import_r2n2.py --rendering_dir=/data/ShapeNetRendering \
      --voxel_dir=/data/ShapeNetVox32 --out_dir=/data/ige_r2n2 [--workers=16]

See docs/data_voxel.md.
"""
from absl import flags

from ige_tf.bin import define_voxel_records_flags
from ige_tf.bin import run_app
from ige_tf.voxel.data import r2n2

FLAGS = flags.FLAGS
flags.DEFINE_string("rendering_dir", None, "ShapeNetRendering root.")
flags.DEFINE_string("voxel_dir", None, "ShapeNetVox32 root.")
define_voxel_records_flags(default_resolutions=["32"])
flags.DEFINE_integer("image_size", 128, "Stored image size S (R2N2 renders 137).")
flags.DEFINE_integer("views", r2n2.R2N2_VIEWS, "At most this many views per model.")
flags.mark_flags_as_required(["rendering_dir", "voxel_dir", "out_dir"])


def main(argv):
  del argv
  manifest = r2n2.import_r2n2(
      FLAGS.rendering_dir, FLAGS.voxel_dir, FLAGS.out_dir, synsets=FLAGS.synsets,
      split_file=FLAGS.split_file, resolutions=[int(r) for r in FLAGS.resolutions],
      image_size=FLAGS.image_size, views=FLAGS.views, workers=FLAGS.workers,
      models_per_shard=FLAGS.models_per_shard, train_fraction=FLAGS.train_fraction)
  counts = manifest["counts"]
  print(f"{counts['models_written']} models, {counts['examples']} examples, "
        f"{counts['models_skipped']} skipped; manifest: {FLAGS.out_dir}/manifest.json")


def run():
  """Console entry point `ige-import-r2n2` (also `python bin/import_r2n2.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
