"""The voxel quick-start job: IGE-MN vs the MN baseline on generated shapes.

  python bin/voxel_demo.py --out_dir=runs/voxel_demo

Generates 5 categories of procedural ShapeNet-layout models, prepares 32^3
frustum records, trains IGE-MN (voxel/demo.gin) and the MN
3D-deconvolution baseline (voxel/demo-base-mn.gin) on the same split and
budget, evaluates both (metrics.json per run), exports IGE-MN (a SavedModel)
and draws Figure 6. Writes <out_dir>/summary.json and prints the headline.
--seeds=N trains each model with train.seed = 0 .. N-1 on the same data and
reports mean ± standard deviation over seeds. Budget and measured figures:
docs/benchmarks.md ("Voxel demo").
"""
import json

from absl import flags

from ige_tf.bin import run_app
from ige_tf.voxel import demo

flags.DEFINE_string("out_dir", "runs/voxel_demo", "Where the demo writes its runs.")
flags.DEFINE_integer("epochs", demo.DEMO_BUDGET["epochs"], "Training epochs of each model.")
flags.DEFINE_integer("batch_size", demo.DEMO_BUDGET["batch_size"], "Batch size.")
flags.DEFINE_integer("models_per_synset", demo.DEMO_DATA["models_per_synset"],
                     "Generated models per category.")
flags.DEFINE_integer("views", demo.DEMO_DATA["views"], "Rendered views per model.")
flags.DEFINE_integer("seeds", 1, "Training seeds per model (train.seed = 0 .. "
                     "seeds-1, same data); IoU is reported as mean and "
                     "standard deviation over them.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  summary = demo.run_demo(
      FLAGS.out_dir, budget={"epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size},
      data_options={"models_per_synset": FLAGS.models_per_synset, "views": FLAGS.views},
      seeds=FLAGS.seeds)
  keys = ("examples", "ige_final_beats_baseline", "ige_final_beats_step0",
          "ige_class_mean_final_beats_baseline", "per_seed", "figure6",
          "seconds_total")
  headline = {k: summary[k] for k in keys}
  headline["iou"] = {name: {k: m["iou"][k] for k in ("mean", "std")}
                     for name, m in summary["models"].items()}
  print(json.dumps(headline, indent=1))
  for name, m in summary["models"].items():
    for what in ("iou", "iou_class_mean"):
      cells = ", ".join(f"{100 * a:.1f} ± {100 * s:.1f}" for a, s in
                        zip(m[what]["mean"], m[what]["std"]))
      print(f"{name} test {what} (%, steps 0..T, mean ± std over "
            f"{m[what]['seeds']} seeds): {cells}")


def run():
  """Console entry point `ige-voxel-demo` (also `python bin/voxel_demo.py`)."""
  run_app(main)


if __name__ == "__main__":
  run()
