"""Exports the latest checkpoint in --model_dir as a SavedModel (model_dir/export)."""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop

cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  print(loop.export(cli.make_problem(), FLAGS.model_dir))


def run():
  """Console entry point `ige-export` (also `python bin/export.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
