"""The voxel quick-start job (`bin/voxel_demo.py`): IGE-MN vs the MN baseline.

Under `out_dir`:
  shapes/         generated ShapeNet-layout models (`ige_tf.voxel.synthetic`)
  records/        their records at 32^3 (`prepare_shapenet`)
  ige-mn/         IGE-MN (voxel/demo.gin), trained, evaluated, exported
  base-mn/        the MN 3D-deconvolution baseline (voxel/demo-base-mn.gin)
                  on the same split and budget, trained and evaluated
  figure6.png     Figure 6 for a few test examples (IGE-MN)
  summary.json    per-step test IoU of both models, class means, parameters,
                  seconds per stage

Every stage resumes: rerunning skips finished data, training and evaluation
(training resumes from the latest checkpoint).
"""
import json
import os
import time

import gin

from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.voxel import visualize
from ige_tf.voxel.data import prepare
from ige_tf.voxel import synthetic

# plane, chair, table, car, sofa.
DEMO_SYNSETS = ("02691156", "03001627", "04379243", "02958343", "04256520")
DEMO_DATA = {"models_per_synset": 10, "views": 6, "seed": 0}
DEMO_BUDGET = {"epochs": 8, "batch_size": 8}
MODELS = (("ige-mn", "voxel/demo.gin"), ("base-mn", "voxel/demo-base-mn.gin"))


def figure_indices(num_examples, count):
  """`count` test indices spread evenly over the split (different models and,
  as shards are sorted by synset, different categories)."""
  count = max(1, min(count, num_examples))
  return [int(i * num_examples // count) for i in range(count)]


def _params(records_dir, epochs, batch_size, extra=()):
  return [f"RECORDS_DIR = '{records_dir}'", f"EPOCHS = {int(epochs)}",
          f"BATCH_SIZE = {int(batch_size)}", *extra]


def run_demo(out_dir, progress=True, data_options=None, budget=None,
             figure_examples=3, gin_params=()):
  """Runs the demo (module docstring).

  Args:
    out_dir: output folder.
    progress: show progress bars.
    data_options: overrides of `DEMO_DATA` ("models_per_synset", "views",
      "seed", "synsets").
    budget: overrides of `DEMO_BUDGET` ("epochs", "batch_size").
    figure_examples: test examples in Figure 6.
    gin_params: extra gin bindings for both models (e.g. for tests).

  Returns:
    The summary dict also written to `out_dir/summary.json`: per model the
    per-step test `iou` (list over steps 0..T), its class mean, the
    per-category values at the final step, trainable parameters, training
    steps and seconds; the answers to "IGE-MN final step beats the baseline"
    and "IGE-MN final step beats its step 0"; seconds per stage.
  """
  data = dict(DEMO_DATA, **(data_options or {}))
  budget = dict(DEMO_BUDGET, **(budget or {}))
  synsets = tuple(data.get("synsets", DEMO_SYNSETS))
  os.makedirs(out_dir, exist_ok=True)
  timings = {}
  start = time.time()
  shapes_dir = os.path.join(out_dir, "shapes")
  records_dir = os.path.join(out_dir, "records")
  synthetic.make_synthetic_shapenet(
      shapes_dir, models_per_synset=data["models_per_synset"],
      seed=data["seed"], synsets=synsets, progress=progress)
  timings["shapes"] = time.time() - start
  start = time.time()
  manifest = prepare.prepare_shapenet(
      shapes_dir, records_dir, synsets=synsets, resolutions=(32,),
      world_resolutions=(), views=data["views"], seed=data["seed"],
      progress=progress)
  timings["records"] = time.time() - start
  params = _params(records_dir, budget["epochs"], budget["batch_size"],
                   gin_params)
  summary = {"records": records_dir,
             "examples": {k: v["num_examples"]
                          for k, v in manifest["splits"].items()},
             "budget": budget, "data": data, "models": {}}
  for name, gin_file in MODELS:
    model_dir = os.path.join(out_dir, name)
    gin.clear_config()
    cli.parse_gin([gin_file], params)
    problem = cli.make_problem()
    start = time.time()
    steps = loop.train(problem, model_dir, progress=progress)
    timings[f"train_{name}"] = time.time() - start
    start = time.time()
    metrics = loop.evaluate(problem, model_dir, progress=progress)
    timings[f"evaluate_{name}"] = time.time() - start
    stats = loop.model_stats(problem)
    summary["models"][name] = {
        "gin_file": gin_file, "model_dir": model_dir, "train_steps": steps,
        "iou": metrics["iou"], "iou_class_mean": metrics["iou_class_mean"],
        "iou_per_category_final": {
            metrics["categories"][k]: v[-1]
            for k, v in metrics["iou_per_category"].items()},
        "trainable_params": stats["trainable_params"]["total"],
        "multiply_adds": stats["multiply_adds"]}
    if name == "ige-mn":
      start = time.time()
      summary["models"][name]["export"] = loop.export(problem, model_dir)
      timings["export_ige-mn"] = time.time() - start
  start = time.time()
  figure = visualize.figure6_from_records(
      os.path.join(out_dir, "ige-mn", loop.EXPORT_DIR), records_dir,
      os.path.join(out_dir, "figure6.png"), split="test",
      indices=figure_indices(summary["examples"]["test"], figure_examples))
  timings["figure6"] = time.time() - start
  ige, base = summary["models"]["ige-mn"], summary["models"]["base-mn"]
  summary["figure6"] = figure["png"]
  summary["ige_final_beats_baseline"] = bool(ige["iou"][-1] > base["iou"][-1])
  summary["ige_final_beats_step0"] = bool(ige["iou"][-1] > ige["iou"][0])
  summary["ige_class_mean_final_beats_baseline"] = bool(
      ige["iou_class_mean"][-1] > base["iou_class_mean"][-1])
  summary["seconds"] = timings
  summary["seconds_total"] = sum(timings.values())
  tmp = os.path.join(out_dir, "summary.json.tmp")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(out_dir, "summary.json"))
  return summary
