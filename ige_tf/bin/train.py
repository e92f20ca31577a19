"""Trains the experiment a gin config describes; resumes from --model_dir."""
from absl import app
from absl import flags

from ige_tf.train import cli
from ige_tf.train import loop

cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  loop.train(cli.make_problem(), FLAGS.model_dir)


if __name__ == "__main__":
  app.run(main)
