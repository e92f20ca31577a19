"""Writes PREFIX.npz and PREFIX.png for one example of voxel records.

  python bin/inspect_records.py --records=/data/ige_voxels/train --index=0 \
      --out=/tmp/example0
"""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.voxel.data import inspection

FLAGS = flags.FLAGS
flags.DEFINE_string("records", None, "A .tfrecord file, a directory (recursive) or a glob.")
flags.DEFINE_integer("index", 0, "0-based example index over the sorted files.")
flags.DEFINE_string("out", None, "Output prefix (writes PREFIX.npz and PREFIX.png).")
flags.mark_flags_as_required(["records", "out"])


def main(argv):
  del argv
  result = inspection.inspect_record(FLAGS.records, FLAGS.index, FLAGS.out)
  example = result["example"]
  print(f"{example.synset}/{example.model_id} view {example.view} from {result['source']}: "
        f"{result['npz']}, {result['png']}")


def run():
  """Console entry point `ige-inspect-records` (also `python bin/inspect_records.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
