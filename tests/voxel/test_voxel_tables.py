"""bin/table_voxel.py: Tables 3, 4 and 5 from hand-written metrics.json files."""
import json
import os
import subprocess
import sys

import pytest

from ige_tf.voxel import tables

PLANE, CHAIR, CAR, TABLE = "02691156", "03001627", "02958343", "04379243"


def _run(root, name, metrics):
  path = root / name
  path.mkdir(parents=True)
  (path / "metrics.json").write_text(json.dumps(metrics))
  return str(path)


def _voxel_metrics(per_category, prefix="iou"):
  """metrics.json as VoxelProblem writes it: lists over steps 0..T."""
  mean = [sum(v[t] for v in per_category.values()) / len(per_category)
          for t in range(len(next(iter(per_category.values()))))]
  return {f"{prefix}_per_category": per_category,
          f"{prefix}_class_mean": mean, "iou": [0.0] * len(mean),
          "categories": {s: tables.category_name(s) for s in per_category}}


def test_table3_rows_are_category_names_and_the_class_mean(tmp_path):
  _run(tmp_path, "ige-mn", _voxel_metrics(
      {PLANE: [0.40, 0.50], CHAIR: [0.20, 0.30]}))
  _run(tmp_path, "base-mn-world", _voxel_metrics(
      {PLANE: [0.45], CHAIR: [0.15]}))
  (tmp_path / "not-a-run").mkdir()  # no metrics.json: ignored
  header, rows = tables.table3(tables.find_runs([str(tmp_path)]))
  assert header == ["category", "Frustum IGE MN", "World Base MN"]
  assert rows == [["chair", pytest.approx(30.0), pytest.approx(15.0)],
                  ["plane", pytest.approx(50.0), pytest.approx(45.0)],
                  ["mean", pytest.approx(40.0), pytest.approx(30.0)]]
  text = tables.make_table("3", [str(tmp_path)])
  assert text.splitlines() == [
      "| category | Frustum IGE MN | World Base MN |", "|---|---|---|",
      "| chair | 30.0 | 15.0 |", "| plane | 50.0 | 45.0 |",
      "| mean | 40.0 | 30.0 |"]
  assert tables.make_table("3", [str(tmp_path)], fmt="csv").splitlines()[-1] \
      == "mean,40.0,30.0"


def test_table4_rows_network_and_loss_columns_resolution(tmp_path):
  _run(tmp_path, "ige-mn_ciou_32", _voxel_metrics({PLANE: [0.1, 0.612]}))
  _run(tmp_path, "ige-mn_ciou_64", _voxel_metrics({PLANE: [0.1, 0.633]}))
  _run(tmp_path, "ige-i4_g2_32", _voxel_metrics({PLANE: [0.55]}))
  text = tables.make_table("4", [str(tmp_path)], fmt="csv")
  assert text.splitlines() == ["network,loss,32³,64³",
                               "IGE-MN,continuous IoU (eq. 12),61.2,63.3",
                               "IGE-I4,γ = 2,55.0,"]


def test_table5_reads_iou_256_of_13_category_and_single_category_runs(tmp_path):
  _run(tmp_path, "ige-mn_13_32", _voxel_metrics(
      {CAR: [0.7, 0.8], PLANE: [0.5, 0.6], TABLE: [0.3, 0.4]},
      prefix="iou_256"))
  single = _voxel_metrics({CAR: [0.81]}, prefix="iou_256")
  single["iou_256"] = [0.805]
  _run(tmp_path, "ige-mn_car_256", single)
  header, rows = tables.table5(tables.find_runs([str(tmp_path)]))
  assert header == ["model", "car 32³", "car 256³", "plane 32³", "table 32³"]
  assert rows == [["IGE-MN_13", pytest.approx(80.0), None, pytest.approx(60.0),
                   pytest.approx(40.0)],
                  ["IGE-MN_1", None, pytest.approx(80.5), None, None]]


def test_errors_name_the_file_and_the_problem(tmp_path):
  run = _run(tmp_path, "ige-mn_car_128", {"iou": [0.5]})
  with pytest.raises(tables.TableError,
                     match=f"{run}/metrics.json: no 'iou_256'"):
    tables.make_table("5", run_dirs=[run])
  broken = tmp_path / "broken" / "ige-mn"
  broken.mkdir(parents=True)
  (broken / "metrics.json").write_text("{not json")
  with pytest.raises(tables.TableError, match="broken/ige-mn/metrics.json: "
                     "not readable JSON"):
    tables.make_table("3", [str(tmp_path / "broken")])
  with pytest.raises(tables.TableError, match="runs not named after a Table 4 "
                     "config: .*'ige-mn_car_128'"):
    tables.make_table("4", run_dirs=[run])
  with pytest.raises(tables.TableError, match="nope/ige-mn/metrics.json: no "
                     "such file"):
    tables.make_table("3", run_dirs=[str(tmp_path / "nope" / "ige-mn")])


def test_binary_prints_and_writes_the_table(tmp_path, repo_dir):
  _run(tmp_path / "runs", "base-mn", _voxel_metrics({CAR: [0.6]}))
  out = tmp_path / "t3.md"
  proc = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "table_voxel.py"),
       "--table=3", f"--runs_dir={tmp_path / 'runs'}", f"--out={out}"],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout == out.read_text()
  assert "| car | 60.0 |" in proc.stdout
  proc = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "table_voxel.py"),
       "--table=5", f"--runs_dir={tmp_path / 'runs'}"],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "'base-mn'" in proc.stderr
