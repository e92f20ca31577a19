"""Writes procedural ShapeNet-like OBJ models in the ShapeNetCore v1 layout.

  python bin/make_synthetic_shapenet.py --out_dir=/tmp/shapenet_synth \
      --models_per_synset=4 --seed=0
"""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.voxel import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Output root: <out_dir>/<synset>/<model_id>/model.obj.")
flags.DEFINE_integer("models_per_synset", 4, "Models per category.")
flags.DEFINE_integer("seed", 0, "Seed; the same seed writes identical files.")
flags.DEFINE_list("synsets", None, "Synset ids (default: all 13 3D-R2N2 categories).")
flags.mark_flag_as_required("out_dir")


def main(argv):
  del argv
  models = synthetic.make_synthetic_shapenet(FLAGS.out_dir, FLAGS.models_per_synset,
                                             FLAGS.seed, FLAGS.synsets, progress=True)
  print(f"{len(models)} models in {FLAGS.out_dir}")


def run():
  """Console entry point `ige-make-synthetic-shapenet` (also `python bin/make_synthetic_shapenet.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
