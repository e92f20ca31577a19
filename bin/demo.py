"""The quick-start job: train, evaluate and export an IGE model on generated data.

Until the pose demo lands this runs the core's denoising example: it trains
the learned energy, evaluates every inner step (metrics.json) and exports a
SavedModel, all under --out_dir.
"""
import json
import os

from absl import app
from absl import flags

from ige_tf.train import cli
from ige_tf.train import loop

flags.DEFINE_string("out_dir", "runs/demo", "Where the demo writes its runs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  model_dir = os.path.join(FLAGS.out_dir, "denoise")
  cli.parse_gin(["core/denoise.gin"])
  problem = cli.make_problem()
  loop.train(problem, model_dir)
  metrics = loop.evaluate(problem, model_dir)
  export_dir = loop.export(problem, model_dir)
  print(json.dumps({"model_dir": model_dir, "export": export_dir,
                    "mse_per_step": metrics["mse"]}, indent=1))


if __name__ == "__main__":
  app.run(main)
