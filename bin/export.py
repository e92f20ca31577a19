"""Exports the latest checkpoint in --model_dir as a SavedModel (model_dir/export).

With --format=tflite (pose lifters), the SavedModel's "serve" signature is
then converted to model_dir/lifter.tflite (+ lifter.tflite.json), inner
steps included (ige_tf/pose/tflite.py; docs/lifting.md).
"""
import json
import os

from absl import app
from absl import flags

from ige_tf.train import cli
from ige_tf.train import loop

cli.define_flags()
flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "tflite"],
                  "savedmodel: model_dir/export; tflite: also "
                  "model_dir/lifter.tflite (pose lifters only).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  export_dir = loop.export(cli.make_problem(), FLAGS.model_dir)
  print(export_dir)
  if FLAGS.format == "tflite":
    from ige_tf.pose import tflite  # pylint: disable=import-outside-toplevel
    out = os.path.join(FLAGS.model_dir, "lifter.tflite")
    print(json.dumps(dict(tflite.convert_lifter(export_dir, out), out=out)))


if __name__ == "__main__":
  app.run(main)
