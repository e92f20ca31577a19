"""Evaluation with and without precise BN on the same trained weights.

  python bench/bench_precise_bn.py --gin_file=voxel/base-mn.gin \
      --records_dir=/tmp/ige_voxel_demo/records --epochs=4 --batch_size=8 \
      --seeds=2 --out_dir=/tmp/bench_precise_bn

For every seed: trains the config with precise BN off
(`precise_batch_norm.num_batches = 0`), then evaluates the final weights on
the test split three ways and prints per-step IoU (%, mean over test views):

  moving    inference mode with the moving BN statistics of training (what
            evaluation gave before precise BN);
  precise   inference mode after precise BN (`precise_bn.precise_batch_norm`
            with the config's `num_batches`, as `train` now does);
  batch     training mode (statistics of each test batch; the weights'
            "true" quality, not an evaluation protocol).

--ema_orders=K adds "moving, other orders": the moving averages continued
(layer momentum, training mode, no weight update) over K other shuffled
orders of one training epoch, each evaluated; the spread shows how much the
moving-statistics figure depends on which batches came last.

Rerunning with the same --out_dir reuses the trained runs (training
resumes at its last step). Prints mean ± std over seeds of the final step and writes
<out_dir>/results.json. Any --gin_param is applied to every run (e.g.
`VoxelProblem.batch_norm_momentum = 0.9`).
"""
import os

from absl import app
from absl import flags
import gin
import numpy as np
import tensorflow as tf

from ige_tf import atomic
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import precise_bn

flags.DEFINE_multi_string("gin_file", None, "Config(s), relative to gin/.")
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.")
flags.DEFINE_string("records_dir", None, "Prepared voxel records.")
flags.DEFINE_integer("epochs", 4, "Training epochs.")
flags.DEFINE_integer("batch_size", 8, "Training batch size.")
flags.DEFINE_integer("seeds", 1, "Training seeds 0 .. seeds-1.", lower_bound=1)
flags.DEFINE_integer("ema_orders", 0, "Also re-run the moving averages (at the "
                     "layers' own momentum, no weight update) over this many "
                     "other shuffled orders of one training epoch from the "
                     "trained statistics and evaluate each: how much the "
                     "'moving' figure depends on the last batches seen.")
flags.DEFINE_string("out_dir", "/tmp/bench_precise_bn", "Run directories.")
flags.mark_flags_as_required(["gin_file", "records_dir"])
FLAGS = flags.FLAGS


def _batch_mode_iou(problem, model, batch_size):
  """Per-step IoU [T+1] of `model` in training mode over the test split.

  BN statistics are restored after every batch (`precise_bn.inference_gap`
  would compare only one batch)."""
  layers = precise_bn.batch_norm_layers(model)
  saved = [(l.moving_mean.numpy(), l.moving_variance.numpy()) for l in layers]
  sums, count = 0.0, 0
  for features, labels in problem.dataset("test", batch_size):
    iou = np.asarray(problem.metrics(labels, model(features, training=True))
                     ["iou"], np.float64)
    sums = sums + iou.sum(axis=1)
    count += iou.shape[1]
  for layer, (mean, variance) in zip(layers, saved):
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(variance)
  return (sums / count).tolist()


def _other_order_iou(problem, model, seed, order):
  """Final-step test IoU after continuing the moving averages over another
  shuffled epoch (statistics restored afterwards)."""
  layers = precise_bn.batch_norm_layers(model)
  saved = [(l.moving_mean.numpy(), l.moving_variance.numpy()) for l in layers]

  @tf.function(reduce_retracing=True)
  def forward(features):
    model(features, training=True)

  for features, _ in problem.dataset("train", FLAGS.batch_size, shuffle=True,
                                     seed=10_000 * (seed + 1) + order):
    forward(features)
  iou = loop.compute_metrics(problem, model, "test", 8,
                             progress=False)["iou"][-1]
  for layer, (mean, variance) in zip(layers, saved):
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(variance)
  return iou


def run_seed(seed):
  gin.clear_config()
  cli.parse_gin(FLAGS.gin_file, [
      f"RECORDS_DIR = '{FLAGS.records_dir}'", f"EPOCHS = {FLAGS.epochs}",
      f"BATCH_SIZE = {FLAGS.batch_size}", f"train.seed = {seed}",
      "train.progress = False", "evaluate.progress = False",
      *FLAGS.gin_param])
  num_batches = gin.query_parameter("precise_batch_norm.num_batches")
  gin.bind_parameter("precise_batch_norm.num_batches", 0)
  problem = cli.make_problem()
  model_dir = os.path.join(FLAGS.out_dir, f"seed{seed}")
  steps = loop.train(problem, model_dir)
  model = loop.restore_model(problem, model_dir)
  moving = loop.compute_metrics(problem, model, "test", 8, progress=False)
  batch = _batch_mode_iou(problem, model, 8)
  orders = [_other_order_iou(problem, model, seed, k)
            for k in range(FLAGS.ema_orders)]
  used = precise_bn.precise_batch_norm(problem, model, FLAGS.batch_size, seed,
                                       num_batches=num_batches)
  precise = loop.compute_metrics(problem, model, "test", 8, progress=False)
  return {"train_steps": steps, "precise_bn_batches": used,
          "moving": moving["iou"], "moving_class_mean": moving["iou_class_mean"],
          "precise": precise["iou"],
          "precise_class_mean": precise["iou_class_mean"], "batch": batch,
          "moving_other_orders_final": orders}


def main(argv):
  del argv
  tf.get_logger().setLevel("ERROR")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  results = {"command": {"gin_file": FLAGS.gin_file,
                         "gin_param": FLAGS.gin_param,
                         "records_dir": FLAGS.records_dir,
                         "epochs": FLAGS.epochs,
                         "batch_size": FLAGS.batch_size},
             "seeds": {}}
  for seed in range(FLAGS.seeds):
    r = results["seeds"][str(seed)] = run_seed(seed)
    print(f"seed {seed} ({r['train_steps']} steps, precise BN over "
          f"{r['precise_bn_batches']} batches), test IoU % per step:")
    for how in ("moving", "precise", "batch"):
      print(f"  {how:8s}" + " ".join(f"{100 * v:5.1f}" for v in r[how]))
    if r["moving_other_orders_final"]:
      print("  moving, other orders (final step): " + ", ".join(
          f"{100 * v:.1f}" for v in r["moving_other_orders_final"]))
  print("final step, mean ± std over seeds (ddof=1 when > 1 seed):")
  for how in ("moving", "precise", "batch"):
    final = np.array([r[how][-1] for r in results["seeds"].values()]) * 100
    std = final.std(ddof=1) if len(final) > 1 else 0.0
    results[f"{how}_final_mean"], results[f"{how}_final_std"] = (
        float(final.mean()), float(std))
    print(f"  {how:8s}{final.mean():5.1f} ± {std:.1f}  (seeds: "
          + ", ".join(f"{v:.1f}" for v in final) + ")")
  atomic.write_json(os.path.join(FLAGS.out_dir, "results.json"), results,
                    indent=2)


if __name__ == "__main__":
  app.run(main)
