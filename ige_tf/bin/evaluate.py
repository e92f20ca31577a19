"""Evaluates the latest checkpoint in --model_dir; writes metrics.json.

The run directory describes itself: `--model_dir` alone is enough.
`--gin_file` / `--gin_param` may change evaluation-time settings only (e.g.
`--gin_param="PoseProblem.records_dir='records/other'"`,
`--gin_param="evaluate.split='validation'"`); anything that changes the model
or the problem is refused, naming the bindings (ige_tf/train/run.py).
"""
import json

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
    metrics = loop.evaluate(loaded.problem, FLAGS.model_dir)
  print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, list)}))


def run():
  """Console entry point `ige-evaluate` (also `python bin/evaluate.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
