"""Trains the experiment a gin config describes; resumes from --model_dir.

A run directory records its own config (config.gin): to resume or extend a
run, `--model_dir` alone (plus e.g. `--gin_param=train.epochs=20`) is enough.
"""
import os

from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import distributed
from ige_tf.train import loop

cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  gin_files = FLAGS.gin_file
  recorded = os.path.join(FLAGS.model_dir, loop.RUN_CONFIG)
  if not gin_files and os.path.isfile(recorded):
    gin_files = [recorded]
  cli.parse_gin(gin_files, FLAGS.gin_param)
  with distributed.peer_failure_explained(FLAGS.model_dir):
    loop.train(cli.make_problem(), FLAGS.model_dir)


def run():
  """Console entry point `ige-train` (also `python bin/train.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
