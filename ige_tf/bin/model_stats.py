"""Prints trainable parameters per component and multiply-adds as JSON."""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop

cli.define_flags(model_dir_required=False)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  print(json.dumps(loop.model_stats(cli.make_problem())))


def run():
  """Console entry point `ige-model-stats` (also `python bin/model_stats.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
