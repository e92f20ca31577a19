"""Prints trainable parameters per component and multiply-adds as JSON.

Either from gin files (`--gin_file=pose/ige8.gin`; no records, statistics or
trained initial estimate needed: the model is built untrained) or from a run
(`--model_dir=D`, its recorded config).
"""
import json

from absl import app
from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as run_lib

cli.define_flags(model_dir_required=False)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.model_dir:
    with run_lib.open_run(FLAGS.model_dir, FLAGS.gin_file, FLAGS.gin_param,
                          restore=False) as loaded:
      stats = loop.model_stats(loaded.problem)
  else:
    if not FLAGS.gin_file:
      raise app.UsageError("give --gin_file (an experiment) or --model_dir "
                           "(a trained run)")
    cli.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    stats = loop.model_stats(run_lib.rebuildable_problem())
  print(json.dumps(stats))


def run():
  """Console entry point `ige-model-stats` (also `python bin/model_stats.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
