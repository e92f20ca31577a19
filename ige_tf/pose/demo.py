"""The quick-start job (`bin/demo.py`): pose lifting end to end, generated data.

Under `out_dir`:
  h36m/           a small synthetic Human3.6M in the Martinez layout
                  (`ige_tf.pose.data.synthetic`)
  records_gt/     its records with ground-truth 2D (`prepare_h36m`)
  b128-1/         the reduced baseline (pose/demo_b128-1.gin), evaluated
  ige4/           IGE-4 initialized from b128-1 (pose/demo_ige4.gin),
                  evaluated and exported (ige4/export, a SavedModel)
  figure3.png     Figure 3 for one test example
  summary.json    per-step metrics of both models and the time of each stage

Every stage resumes: rerunning skips finished data and training.
"""
import json
import os
import time

import gin

from ige_tf.pose import visualize
from ige_tf.pose.data import pipeline
from ige_tf.pose.data import prepare
from ige_tf.pose.data import synthetic
from ige_tf.train import cli
from ige_tf.train import loop

DEMO_SYNTHETIC = {"frames_per_sequence": 400, "takes": 2, "seed": 0}
FIGURE_INDEX = 200


def _train_and_evaluate(gin_file, params, model_dir, progress):
  gin.clear_config()
  cli.parse_gin([gin_file], params)
  problem = cli.make_problem()
  loop.train(problem, model_dir, progress=progress)
  metrics = loop.evaluate(problem, model_dir, progress=progress)
  return problem, metrics


def run_demo(out_dir, progress=True, synthetic_options=None):
  """Runs the demo (module docstring).

  Args:
    out_dir: output folder.
    progress: show progress bars.
    synthetic_options: overrides of `DEMO_SYNTHETIC` (for tests).

  Returns:
    The summary dict also written to `out_dir/summary.json`: per model the
    final-step and per-step `protocol1a_mm`, `protocol2_mm`, `mpjpe_mm`,
    trainable parameters and multiply-adds; paths; seconds per stage.
  """
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
  base_dir = os.path.join(out_dir, "b128-1")
  ige_dir = os.path.join(out_dir, "ige4")
  mark = time.time()
  _, base_metrics = _train_and_evaluate("pose/demo_b128-1.gin", [records],
                                        base_dir, progress)
  timings["b128-1"] = time.time() - mark
  mark = time.time()
  problem, ige_metrics = _train_and_evaluate(
      "pose/demo_ige4.gin", [records, f"INIT_MODEL_DIR = {base_dir!r}"],
      ige_dir, progress)
  timings["ige4"] = time.time() - mark
  mark = time.time()
  export_dir = loop.export(problem, ige_dir)
  timings["export"] = time.time() - mark
  mark = time.time()
  figure = os.path.join(out_dir, "figure3.png")
  index = min(FIGURE_INDEX, pipeline.num_examples(records_dir, "test") - 1)
  visualize.figure3_from_records(export_dir, records_dir, figure, index=index)
  timings["figure3"] = time.time() - mark
  timings["total"] = time.time() - start

  def digest(metrics):
    keys = ("protocol1a_mm", "protocol2_mm", "mpjpe_mm")
    return {"final": {k: round(metrics[k][-1], 2) for k in keys},
            "per_step": {k: [round(v, 2) for v in metrics[k]] for k in keys},
            "model_stats": metrics.get("model_stats")}

  summary = {"b128-1": digest(base_metrics), "ige4": digest(ige_metrics),
             "paths": {"records": records_dir, "b128-1": base_dir,
                       "ige4": ige_dir, "export": export_dir,
                       "figure3": figure},
             "seconds": {k: round(v, 1) for k, v in timings.items()}}
  path = os.path.join(out_dir, "summary.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(path + ".tmp", path)
  return summary
