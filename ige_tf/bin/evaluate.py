"""Evaluates the latest checkpoint in --model_dir; writes metrics.json."""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop

cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
  metrics = loop.evaluate(cli.make_problem(), FLAGS.model_dir)
  print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, list)}))


def run():
  """Console entry point `ige-evaluate` (also `python bin/evaluate.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
