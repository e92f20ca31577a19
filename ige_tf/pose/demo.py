"""The quick-start job (`bin/demo.py`): pose lifting end to end, generated data.

Under `out_dir`:
  h36m/           a small synthetic Human3.6M in the Martinez layout
                  (`ige_tf.pose.data.synthetic`, always generated with seed 0)
  records_gt/     its records with ground-truth 2D (`prepare_h36m`)
  b128-1/         the reduced baseline (pose/demo_b128-1.gin), evaluated
  ige4/           IGE-4 initialized from b128-1 (pose/demo_ige4.gin),
                  evaluated and exported (ige4/export, a SavedModel)
  b128-1_seed<s>/, ige4_seed<s>/   the same with `train.seed = s`, s >= 1
                  (`seeds` > 1; seed 0 is the runs above)
  figure3.png     Figure 3 for one test example (seed 0's IGE-4)
  summary.json    per-step metrics of both models per seed, their mean and
                  sample standard deviation over seeds, and stage times

`formulation="paper"` trains the paper author's camera-frame baseline and
the IGE from it instead (pose/demo_b128-1_paper.gin,
demo_ige4_paper.gin; runs `b128-1_paper`, `ige4_paper`, figure
`figure3_paper.png`, summary `summary_paper.json`).

Every stage resumes: rerunning skips finished data and training.

The caller's global gin config is left as it was: each model is configured
and trained inside `ige_tf.train.run.isolated_gin`, and the export is
rebuilt from the run's own record (`run.open_run`).
"""
import os
import time

import numpy as np

from ige_tf import atomic
from ige_tf.pose import visualize
from ige_tf.pose.data import pipeline
from ige_tf.pose.data import prepare
from ige_tf.pose.data import synthetic
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run

DEMO_SYNTHETIC = {"frames_per_sequence": 400, "takes": 2, "seed": 0}
FIGURE_INDEX = 200
METRIC_KEYS = ("protocol1a_mm", "protocol2_mm", "mpjpe_mm")
# formulation -> (baseline config, IGE config, run-name suffix).
FORMULATIONS = {"default": ("pose/demo_b128-1.gin", "pose/demo_ige4.gin", ""),
                "paper": ("pose/demo_b128-1_paper.gin",
                          "pose/demo_ige4_paper.gin", "_paper")}


def _train_and_evaluate(gin_file, params, model_dir, progress):
  """Trains and evaluates `gin_file` + `params` in `model_dir`; returns the
  metrics. The caller's gin config is untouched (`run.isolated_gin`)."""
  with run.isolated_gin():
    cli.parse_gin([gin_file], params)
    problem = cli.make_problem()
    loop.train(problem, model_dir, progress=progress)
    return loop.evaluate(problem, model_dir, progress=progress)


def digest(metrics):
  """Final-step and per-step metrics (rounded to 0.01 mm) and model_stats."""
  return {"final": {k: round(metrics[k][-1], 2) for k in METRIC_KEYS},
          "per_step": {k: [round(v, 2) for v in metrics[k]]
                       for k in METRIC_KEYS},
          "model_stats": metrics.get("model_stats")}


def spread(per_seed):
  """Mean and sample standard deviation over seeds of every per-step metric.

  Args:
    per_seed: list of `digest` dicts, one per seed (same models).

  Returns:
    `{"seeds": n, "mean": {metric: [T+1]}, "std": {metric: [T+1] or None}}`;
    std uses n - 1 (None for a single seed: there is no spread to report).
  """
  n = len(per_seed)
  mean, std = {}, {}
  for key in METRIC_KEYS:
    values = np.array([d["per_step"][key] for d in per_seed], np.float64)
    mean[key] = [round(float(v), 2) for v in values.mean(axis=0)]
    std[key] = ([round(float(v), 2) for v in values.std(axis=0, ddof=1)]
                if n > 1 else None)
  return {"seeds": n, "mean": mean, "std": std}


def run_demo(out_dir, progress=True, synthetic_options=None, seeds=1,
             formulation="default"):
  """Runs the demo (module docstring).

  Args:
    out_dir: output folder.
    progress: show progress bars.
    synthetic_options: overrides of `DEMO_SYNTHETIC` (for tests).
    seeds: train both models with `train.seed` = 0 .. seeds - 1 (the data
      are the same for every seed).
    formulation: "default" (Martinez's root-relative baseline) or "paper"
      (the paper author's camera-frame baseline); see `FORMULATIONS`.

  Returns:
    The summary dict also written to `out_dir/summary.json`
    (`summary_paper.json`): per model ("b128-1", "ige4") the `digest` of
    seed 0 plus "per_seed" (a `digest` per seed) and "over_seeds"
    (`spread`); paths; seconds per stage.

  Raises:
    ValueError: an unknown formulation or seeds < 1.
  """
  if formulation not in FORMULATIONS:
    raise ValueError(f"formulation must be one of {sorted(FORMULATIONS)}, "
                     f"got {formulation!r}")
  if int(seeds) < 1:
    raise ValueError(f"seeds must be at least 1, got {seeds}")
  base_config, ige_config, suffix = FORMULATIONS[formulation]
  os.makedirs(out_dir, exist_ok=True)
  timings = {}
  start = time.time()
  h36m_dir = os.path.join(out_dir, "h36m")
  records_dir = os.path.join(out_dir, "records_gt")
  if not os.path.exists(os.path.join(h36m_dir, "synthetic.json")):
    synthetic.make_synthetic_h36m(
        h36m_dir, progress=progress,
        **dict(DEMO_SYNTHETIC, **(synthetic_options or {})))
  timings["synthetic_data"] = time.time() - start
  mark = time.time()
  prepare.prepare_h36m(records_dir, "gt", h36m_dir=h36m_dir, progress=progress)
  timings["prepare_records"] = time.time() - mark

  records = f"RECORDS_DIR = {records_dir!r}"
  per_seed = {"b128-1": [], "ige4": []}
  run_dirs = {}
  for seed in range(int(seeds)):
    tail = suffix + (f"_seed{seed}" if seed else "")
    base_dir = os.path.join(out_dir, "b128-1" + tail)
    ige_dir = os.path.join(out_dir, "ige4" + tail)
    run_dirs[seed] = (base_dir, ige_dir)
    seeded = [records, f"train.seed = {seed}"]
    mark = time.time()
    base_metrics = _train_and_evaluate(base_config, seeded, base_dir,
                                       progress)
    timings[f"b128-1 seed {seed}"] = time.time() - mark
    mark = time.time()
    ige_metrics = _train_and_evaluate(
        ige_config, seeded + [f"INIT_MODEL_DIR = {base_dir!r}"], ige_dir,
        progress)
    timings[f"ige4 seed {seed}"] = time.time() - mark
    per_seed["b128-1"].append(digest(base_metrics))
    per_seed["ige4"].append(digest(ige_metrics))
  base_dir, ige_dir = run_dirs[0]
  mark = time.time()
  with run.open_run(ige_dir, restore=False) as loaded:
    export_dir = loop.export(loaded.problem, ige_dir)
  timings["export"] = time.time() - mark
  mark = time.time()
  figure = os.path.join(out_dir, f"figure3{suffix}.png")
  index = min(FIGURE_INDEX, pipeline.num_examples(records_dir, "test") - 1)
  visualize.figure3_from_records(export_dir, records_dir, figure, index=index)
  timings["figure3"] = time.time() - mark
  timings["total"] = time.time() - start

  summary = {"formulation": formulation}
  for name, digests in per_seed.items():
    summary[name] = dict(digests[0], per_seed=digests,
                         over_seeds=spread(digests))
  summary["paths"] = {"records": records_dir, "b128-1": base_dir,
                      "ige4": ige_dir, "export": export_dir, "figure3": figure}
  summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
  path = os.path.join(out_dir, f"summary{suffix}.json")
  atomic.write_json(path, summary)
  return summary


def format_over_seeds(summary):
  """Markdown table of mean ± sample std over seeds, per model and step.

  Args:
    summary: a `run_demo` summary.

  Returns:
    str, one row per (model, step): Protocol 1a, Protocol 2, MPJPE in mm.
  """
  lines = []
  for name in ("b128-1", "ige4"):
    over = summary[name]["over_seeds"]
    if not lines:
      lines = [f"{summary['formulation']} formulation, {over['seeds']} "
               "seed(s): mean ± sample std over seeds, mm",
               "| model | step | Protocol 1a | Protocol 2 | MPJPE |",
               "|---|---|---|---|---|"]
    for t in range(len(over["mean"]["protocol2_mm"])):
      cells = []
      for key in METRIC_KEYS:
        mean = over["mean"][key][t]
        std = over["std"][key]
        cells.append(f"{mean:.1f}" if std is None else
                     f"{mean:.1f} ± {std[t]:.1f}")
      lines.append(f"| {name} | {t} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
