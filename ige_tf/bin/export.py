"""Exports the latest checkpoint in --model_dir as a SavedModel (model_dir/export).

`--model_dir` alone is enough; `--gin_file` / `--gin_param` may only change
evaluation-time settings (see bin/evaluate.py).

With --format=tflite (pose lifters), the SavedModel's "serve" signature is
then converted to model_dir/lifter.tflite (+ lifter.tflite.json), inner
steps included (ige_tf/pose/tflite.py; docs/lifting.md).
"""
import json
import os

from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as run_lib

cli.define_flags()
flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "tflite"],
                  "savedmodel: model_dir/export; tflite: also "
                  "model_dir/lifter.tflite (pose lifters only).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  with run_lib.open_run(FLAGS.model_dir, FLAGS.gin_file, FLAGS.gin_param,
                        restore=False) as loaded:
    export_dir = loop.export(loaded.problem, FLAGS.model_dir)
  print(export_dir)
  if FLAGS.format == "tflite":
    from ige_tf.pose import tflite  # pylint: disable=import-outside-toplevel
    out = os.path.join(FLAGS.model_dir, "lifter.tflite")
    print(json.dumps(dict(tflite.convert_lifter(export_dir, out), out=out)))


def run():
  """Console entry point `ige-export` (also `python bin/export.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
