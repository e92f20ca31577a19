"""Figure 3 (visualize), Figure 4 (figures) and the quick-start demo."""
import json
import os
import shutil
import struct

import gin
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.pose import demo
from ige_tf.pose import figures
from ige_tf.pose import inference
from ige_tf.pose import tables
from ige_tf.pose import visualize
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run as train_run


def png_size(path):
  """(width, height) from a PNG's IHDR chunk."""
  with open(path, "rb") as f:
    header = f.read(24)
  assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", header[16:24])


def test_figure3_png_has_one_column_per_step(ige_run, records_gt, tmp_path):
  out = str(tmp_path / "fig" / "figure3.png")
  result = visualize.figure3_from_records(
      os.path.join(ige_run, "export"), records_gt, out, index=5, dpi=50)
  # 5 steps (0..4) of 2.6-inch panels at 50 dpi, two rows.
  assert png_size(out) == (650, 260) == tuple(result["size"])
  assert np.array(result["steps"]).shape == (5, 16, 3)
  assert result["example"]["subject"] in ("S9", "S11")
  # Without ground truth (lift.py) and for a single step.
  steps = np.array(result["steps"])[:1]
  example = visualize.read_example(records_gt, "test", 5)
  size = visualize.figure3(str(tmp_path / "one.png"), example["pose_2d"],
                           example["f"], example["c"], example["k"],
                           example["p"], steps, dpi=40)
  assert png_size(str(tmp_path / "one.png")) == size == (104, 208)
  with pytest.raises(IndexError, match="has 576 examples, no index 576"):
    visualize.read_example(records_gt, "test", 576)


@pytest.fixture(scope="module")
def evaluated_baseline(baseline_run, records_gt, tmp_path_factory):
  run = str(tmp_path_factory.mktemp("figure4") / "b128-1")
  shutil.copytree(baseline_run, run)
  with train_run.open_run(run, gin_params=[
      f"PoseProblem.records_dir = {records_gt!r}"], restore=False) as loaded:
    loop.evaluate(loaded.problem, run, progress=False)
  return run


def test_figure4_points_come_from_the_runs(evaluated_baseline, ige_run,
                                           tmp_path):
  out = str(tmp_path / "figure4.png")
  points = figures.plot_figure4([evaluated_baseline, ige_run], out)
  width, height = png_size(out)
  assert (width, height) == (840, 540)  # 7 x 4.5 inches at 120 dpi
  with open(str(tmp_path / "figure4.json")) as f:
    assert json.load(f) == points
  base, ige = points
  assert (base["kind"], base["units"], base["blocks"]) == ("baseline", 128, 1)
  assert (ige["kind"], ige["num_steps"]) == ("ige", 4)
  for point, run in ((base, evaluated_baseline), (ige, ige_run)):
    with open(os.path.join(run, "metrics.json")) as f:
      metrics = json.load(f)
    assert point["protocol2_mm"] == metrics["protocol2_mm"][-1]
    assert point["params"] == metrics["model_stats"]["trainable_params"][
        "total"]
    assert point["multiply_adds"] == metrics["model_stats"]["multiply_adds"]
  assert ige["multiply_adds"] > base["multiply_adds"]


def test_figure4_stats_without_model_stats_are_recomputed(ige_run, tmp_path):
  run = str(tmp_path / "old_run")
  shutil.copytree(ige_run, run)
  path = os.path.join(run, "metrics.json")
  with open(path) as f:
    metrics = json.load(f)
  expected = metrics.pop("model_stats")
  with open(path, "w") as f:
    json.dump(metrics, f)
  assert figures.run_stats(run)[1] == expected
  with pytest.raises(FileNotFoundError, match="no metrics.json; evaluate"):
    figures.expand_run_dirs([str(tmp_path)])


def test_demo_runs_end_to_end(tmp_path):
  # The caller's gin config (another experiment) is left as it was.
  cli.parse_gin(["core/denoise.gin"], ["train.epochs = 3"])
  before = gin.config_str()
  # Eager training and evaluation: a few steps do not repay tracing.
  tf.config.run_functions_eagerly(True)
  try:
    summary = demo.run_demo(str(tmp_path), progress=False, synthetic_options={
        "frames_per_sequence": 6, "takes": 1, "subjects": ("S1", "S9"),
        "actions": ("Walking",)})
  finally:
    tf.config.run_functions_eagerly(False)
  assert gin.config_str() == before
  for name, steps in (("b128-1", 1), ("ige4", 5)):
    per_step = summary[name]["per_step"]
    assert all(len(per_step[k]) == steps for k in per_step)
    assert all(np.isfinite(v) for k in per_step for v in per_step[k])
  assert png_size(summary["paths"]["figure3"]) == (1300, 520)
  assert os.path.isfile(os.path.join(summary["paths"]["export"],
                                     "saved_model.pb"))
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["seconds"]["total"] > 0


def test_table1_reads_real_per_action_metrics(ige_run, tmp_path):
  # The keys bin/evaluate.py writes are the ones Table 1 reads.
  with open(os.path.join(ige_run, "metrics.json")) as f:
    metrics = json.load(f)
  run = tmp_path / "ige4_gt"
  os.makedirs(run)
  shutil.copy(os.path.join(ige_run, "metrics.json"), run)
  actions = sorted(metrics["protocol2_mm_per_action"])
  assert len(actions) >= 2
  markdown, _ = tables.table1([str(run)], actions=actions)
  p2 = np.mean([metrics["protocol2_mm_per_action"][a][-1] for a in actions])
  summary = markdown.splitlines()[4]
  assert summary.startswith("| IGE_4 | - | - |")
  assert summary.endswith(f" | {p2:.1f} |")


def test_demo_reports_mean_and_sample_std_over_seeds():
  per_seed = [{"per_step": {"protocol1a_mm": [a, a - 10],
                            "protocol2_mm": [b, b - 10],
                            "mpjpe_mm": [c, c]}}
              for a, b, c in ((50.0, 40.0, 60.0), (52.0, 44.0, 60.0),
                              (54.0, 42.0, 60.0))]
  over = demo.spread(per_seed)
  assert over["seeds"] == 3
  assert over["mean"]["protocol1a_mm"] == [52.0, 42.0]
  assert over["std"]["protocol1a_mm"] == [2.0, 2.0]  # n - 1: sqrt(8 / 2)
  assert over["std"]["protocol2_mm"] == [2.0, 2.0]
  assert over["std"]["mpjpe_mm"] == [0.0, 0.0]
  summary = {"formulation": "default",
             "b128-1": {"over_seeds": demo.spread(per_seed[:1])},
             "ige4": {"over_seeds": over}}
  table = demo.format_over_seeds(summary).splitlines()
  assert table[3] == "| b128-1 | 0 | 50.0 | 40.0 | 60.0 |"  # one seed: no ±
  assert table[6] == "| ige4 | 1 | 42.0 ± 2.0 | 32.0 ± 2.0 | 60.0 ± 0.0 |"
  with pytest.raises(ValueError, match="formulation must be one of"):
    demo.run_demo("unused", formulation="exact")
