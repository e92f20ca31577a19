"""Exports the latest checkpoint in --model_dir as a SavedModel (model_dir/export).

`--model_dir` alone is enough; `--gin_file` / `--gin_param` may only change
evaluation-time settings (see bin/evaluate.py).
"""
from absl import flags

from ige_tf.bin import run_app
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as run_lib

cli.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  with run_lib.open_run(FLAGS.model_dir, FLAGS.gin_file, FLAGS.gin_param,
                    restore=False) as loaded:
    print(loop.export(loaded.problem, FLAGS.model_dir))


def run():
  """Console entry point `ige-export` (also `python bin/export.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
