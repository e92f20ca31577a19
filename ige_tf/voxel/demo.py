"""The voxel quick-start job (`bin/voxel_demo.py`): IGE-MN vs the MN baseline.

Under `out_dir`:
  shapes/         generated ShapeNet-layout models (`ige_tf.voxel.synthetic`)
  records/        their records at 32^3 (`prepare_shapenet`)
  ige-mn/         IGE-MN (voxel/demo.gin), trained, evaluated, exported
  base-mn/        the MN 3D-deconvolution baseline (voxel/demo-base-mn.gin)
                  on the same split and budget, trained and evaluated
  ige-mn-seed<s>/, base-mn-seed<s>/
                  with `seeds` > 1: the same models trained with
                  `train.seed = s` (weight initialization and shuffle order)
                  for s = 1 .. seeds-1 (seed 0 is ige-mn/ and base-mn/)
  figure6.png     Figure 6 for a few test examples (IGE-MN and the baseline,
                  seed 0, side by side)
  summary.json    per-step test IoU of both models per seed, their mean and
                  standard deviation over seeds, class means, parameters,
                  seconds per stage

Every stage resumes: rerunning skips finished data, training and evaluation
(training resumes from the latest checkpoint).

The caller's global gin config is left as it was: each model is configured,
trained, evaluated and exported inside `ige_tf.train.run.isolated_gin`.
"""
import os
import time

import numpy as np

from ige_tf import atomic
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as run_lib
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


def run_name(name, seed):
  """Run directory name of model `name` trained with `train.seed = seed`."""
  return name if seed == 0 else f"{name}-seed{int(seed)}"


def spread(values):
  """Mean and sample standard deviation over seeds, per step.

  Args:
    values: `[S][T+1]` floats, one list per seed (S >= 1).

  Returns:
    `{"mean": [T+1], "std": [T+1], "min": [T+1], "max": [T+1], "seeds": S}`;
    `std` is the sample standard deviation (ddof=1), 0.0 for one seed.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 2 or not values.size:
    raise ValueError(f"spread needs [seeds][steps] values, got {values.shape}")
  std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(
      values.shape[1])
  return {"mean": values.mean(axis=0).tolist(), "std": std.tolist(),
          "min": values.min(axis=0).tolist(),
          "max": values.max(axis=0).tolist(), "seeds": int(len(values))}


def run_demo(out_dir, progress=True, data_options=None, budget=None,
             figure_examples=3, gin_params=(), seeds=1):
  """Runs the demo (module docstring).

  Args:
    out_dir: output folder.
    progress: show progress bars.
    data_options: overrides of `DEMO_DATA` ("models_per_synset", "views",
      "seed", "synsets").
    budget: overrides of `DEMO_BUDGET` ("epochs", "batch_size").
    figure_examples: test examples in Figure 6.
    gin_params: extra gin bindings for both models (e.g. for tests).
    seeds: number of training seeds (0 .. seeds-1) per model; the data are
      the same for all.

  Returns:
    The summary dict also written to `out_dir/summary.json`: per model and
    seed (`"models"[name]["seeds"][str(s)]`) the per-step test `iou` (list
    over steps 0..T), its class mean, the per-category values at the final
    step, training steps; per model `iou` / `iou_class_mean` as `spread`
    over seeds, trainable parameters and multiply-adds; the answers to
    "IGE-MN's final step beats the baseline" and "... beats its step 0" for
    the means over seeds and for every seed; seconds per stage.
  """
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
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
  summary = {"records": records_dir,
             "examples": {k: v["num_examples"]
                          for k, v in manifest["splits"].items()},
             "budget": budget, "data": data, "models": {}}
  for seed in range(seeds):
    params = _params(records_dir, budget["epochs"], budget["batch_size"],
                     (f"train.seed = {seed}", *gin_params))
    for name, gin_file in MODELS:
      run = run_name(name, seed)
      model_dir = os.path.join(out_dir, run)
      entry = summary["models"].setdefault(name, {"gin_file": gin_file,
                                                  "seeds": {}})
      with run_lib.isolated_gin():
        cli.parse_gin([gin_file], params)
        problem = cli.make_problem()
        start = time.time()
        steps = loop.train(problem, model_dir, progress=progress)
        timings[f"train_{run}"] = time.time() - start
        start = time.time()
        metrics = loop.evaluate(problem, model_dir, progress=progress)
        timings[f"evaluate_{run}"] = time.time() - start
        if seed == 0:
          stats = loop.model_stats(problem)
          entry["trainable_params"] = stats["trainable_params"]["total"]
          entry["multiply_adds"] = stats["multiply_adds"]
          if name == "ige-mn":
            start = time.time()
            entry["export"] = loop.export(problem, model_dir)
            timings["export_ige-mn"] = time.time() - start
      entry["seeds"][str(seed)] = {
          "model_dir": model_dir, "train_steps": steps, "iou": metrics["iou"],
          "iou_class_mean": metrics["iou_class_mean"],
          "iou_per_category_final": {
              metrics["categories"][k]: v[-1]
              for k, v in metrics["iou_per_category"].items()}}
  for entry in summary["models"].values():
    per_seed = [entry["seeds"][str(s)] for s in range(seeds)]
    entry["iou"] = spread([r["iou"] for r in per_seed])
    entry["iou_class_mean"] = spread([r["iou_class_mean"] for r in per_seed])
  start = time.time()
  figure = visualize.figure6_from_records(
      [os.path.join(out_dir, "ige-mn", loop.EXPORT_DIR),
       os.path.join(out_dir, "base-mn")], records_dir,
      os.path.join(out_dir, "figure6.png"), split="test",
      indices=figure_indices(summary["examples"]["test"], figure_examples),
      labels=["IGE-MN", "MN baseline"])
  timings["figure6"] = time.time() - start
  summary["figure6"] = figure["png"]
  summary.update(_answers(summary["models"]["ige-mn"],
                          summary["models"]["base-mn"], seeds))
  summary["seconds"] = timings
  summary["seconds_total"] = sum(timings.values())
  atomic.write_json(os.path.join(out_dir, "summary.json"), summary, indent=2,
                    sort_keys=True)
  return summary


def _answers(ige, base, seeds):
  """The demo's acceptance answers, for the means over seeds and per seed."""
  answers = {
      "ige_final_beats_baseline": bool(
          ige["iou"]["mean"][-1] > base["iou"]["mean"][-1]),
      "ige_final_beats_step0": bool(
          ige["iou"]["mean"][-1] > ige["iou"]["mean"][0]),
      "ige_class_mean_final_beats_baseline": bool(
          ige["iou_class_mean"]["mean"][-1]
          > base["iou_class_mean"]["mean"][-1])}
  per_seed = {}
  for s in range(seeds):
    i, b = ige["seeds"][str(s)]["iou"], base["seeds"][str(s)]["iou"]
    per_seed[str(s)] = {"ige_final_beats_baseline": bool(i[-1] > b[-1]),
                        "ige_final_beats_step0": bool(i[-1] > i[0])}
  answers["per_seed"] = per_seed
  return answers
