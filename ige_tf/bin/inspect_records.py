"""Writes PREFIX.npz and PREFIX.png for one example of voxel records, or
verifies a records directory (pose or voxel) against its manifest.

  python bin/inspect_records.py --records=/data/ige_voxels/train --index=0 \
      --out=/tmp/example0
  python bin/inspect_records.py --records=/data/records/gt --verify

`--verify` checks every shard's size and sha256 against manifest.json, lists
damaged, missing and unlisted shards, and exits with status 1 if there are
any (rerun the prepare command to rewrite them).
"""
import sys

from absl import app
from absl import flags

from ige_tf.bin import run_app

from ige_tf.data import records_check
from ige_tf.voxel.data import inspection

FLAGS = flags.FLAGS
flags.DEFINE_string("records", None, "A .tfrecord file, a directory (recursive) or a glob; "
                    "with --verify, a records directory (holding manifest.json).")
flags.DEFINE_integer("index", 0, "0-based example index over the sorted files.")
flags.DEFINE_string("out", None, "Output prefix (writes PREFIX.npz and PREFIX.png).")
flags.DEFINE_bool("verify", False, "Verify every shard of --records against its manifest.")
flags.mark_flags_as_required(["records"])


def main(argv):
  del argv
  if FLAGS.verify:
    checked, damaged = records_check.verify_records_dir(FLAGS.records)
    for path, reason in damaged:
      print(f"{path}: {reason}")
    print(f"{checked} shards listed in {FLAGS.records}/manifest.json, "
          f"{len(damaged)} damaged, missing or unlisted")
    sys.exit(1 if damaged else 0)
  if not FLAGS.out:
    raise app.UsageError("--out is required (or pass --verify)")
  result = inspection.inspect_record(FLAGS.records, FLAGS.index, FLAGS.out)
  example = result["example"]
  print(f"{example.synset}/{example.model_id} view {example.view} from {result['source']}: "
        f"{result['npz']}, {result['png']}")


def run():
  """Console entry point `ige-inspect-records` (also `python bin/inspect_records.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
