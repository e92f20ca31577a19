"""Table 1 (`ige_tf.pose.tables`, bin/table1.py) from hand-written metrics.json.

The expected numbers are computed here from the values written, not by the
code under test: the score is the mean of the per-action means (Martinez's
`cum_err / len(actions)`), never the frame-weighted top-level value.
"""
import csv
import io
import json
import os

import pytest

from ige_tf.pose import tables
from ige_tf.pose.data import h36m

ACTIONS = h36m.ACTIONS


def write_run(root, name, p1a, p2, actions=ACTIONS):
  """A run whose final step has per-action P1a `p1a[i]` and P2 `p2[i]`.

  Step 0 holds other values (1000 + ...), and the frame-weighted top-level
  metrics hold 999, so a table that read either would be wrong.
  """
  run = os.path.join(root, name)
  os.makedirs(run)
  metrics = {"protocol1a_mm": [999.0, 999.0], "protocol2_mm": [999.0, 999.0]}
  for key, values in (("protocol1a_mm", p1a), ("protocol2_mm", p2)):
    metrics[f"{key}_per_action"] = {
        a: [1000.0 + v, v] for a, v in zip(actions, values)}
  with open(os.path.join(run, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  return run


def test_table1_mean_of_per_action_means_and_breakdown(tmp_path):
  # P1a of ige4_gt: 10, 20, ..., 150 -> mean 80; P2: 1..15 + 0.25 -> 8.25.
  ige = write_run(tmp_path, "ige4_gt", [10.0 * (i + 1) for i in range(15)],
                  [i + 1.25 for i in range(15)])
  # b1024-2_sh: every P1a 50 except Sitting 200 -> (14*50 + 200)/15 = 60;
  # P2 constant 40.
  base = write_run(tmp_path, "b1024-2_sh",
                   [200.0 if a == "Sitting" else 50.0 for a in ACTIONS],
                   [40.0] * 15)
  md_path, csv_path = str(tmp_path / "t.md"), str(tmp_path / "t.csv")
  markdown, table_csv = tables.table1([ige, base], markdown_out=md_path,
                                      csv_out=csv_path)
  assert open(md_path).read() == markdown
  assert open(csv_path).read() == table_csv
  lines = markdown.splitlines()
  assert lines[2] == ("| Model | P1a SH | P1a FT | P1a GT | P2 SH | P2 FT | "
                      "P2 GT |")
  # Rows in the paper's order (Base before IGE), whatever the argument order.
  assert lines[4] == "| Base 1024/2 | 60.0 | - | - | 40.0 | - | - |"
  assert lines[5] == "| IGE_4 | - | - | 80.0 | - | - | 8.2 |"
  p1a_header = next(l for l in lines if l.startswith("| Protocol 1a |"))
  assert p1a_header.split(" | ")[2:5] == ["Dir.", "Disc.", "Eat"]
  assert p1a_header.endswith("| WalkT. | Avg |")
  ige_p1a = next(l for l in lines if l.startswith("| IGE_4 | GT | 10.0 |"))
  assert ige_p1a.endswith("| 150.0 | 80.0 |")
  rows = list(csv.DictReader(io.StringIO(table_csv)))
  assert [(r["model"], r["source"], r["protocol"]) for r in rows] == [
      ("b1024-2", "sh", "protocol1a_mm"), ("b1024-2", "sh", "protocol2_mm"),
      ("ige4", "gt", "protocol1a_mm"), ("ige4", "gt", "protocol2_mm")]
  assert float(rows[0]["Sitting"]) == 200.0
  assert float(rows[0]["average"]) == pytest.approx(60.0)
  assert float(rows[3]["average"]) == pytest.approx(8.25)


def test_paper_formulation_rows_follow_the_default_ones(tmp_path):
  runs = [write_run(tmp_path, name, [1.0] * 15, [2.0] * 15)
          for name in ("ige4_paper_ft", "ige4_ft", "b1024-2_paper_ft")]
  markdown, _ = tables.table1(runs)
  labels = [l.split(" | ")[0][2:] for l in markdown.splitlines()[4:7]]
  assert labels == ["IGE_4", "Base 1024/2 (paper formulation)",
                    "IGE_4 (paper formulation)"]


@pytest.mark.parametrize("actions, message", [
    (ACTIONS[:-1], r"lacks actions \['WalkTogether'\]"),
    (ACTIONS + ("Dancing",), r"has actions not in the table \['Dancing'\]"),
])
def test_refuses_a_run_with_missing_or_extra_actions(tmp_path, actions,
                                                     message):
  good = write_run(tmp_path, "ige8_sh", [1.0] * 15, [1.0] * 15)
  bad = write_run(tmp_path, "ige4_sh", [1.0] * len(actions),
                  [1.0] * len(actions), actions=actions)
  out = tmp_path / "t.md"
  with pytest.raises(tables.Table1Error, match=message) as error:
    tables.table1([good, bad], markdown_out=str(out))
  assert os.path.join("ige4_sh", "metrics.json") in str(error.value)
  assert not out.exists()  # nothing half-written


def test_other_action_sets_on_request(tmp_path):
  actions = ("Walking", "Eating")
  run = write_run(tmp_path, "ige4_gt", [3.0, 6.0], [1.0, 2.0],
                  actions=actions)
  markdown, _ = tables.table1([run], actions=actions)
  assert "| IGE_4 | - | - | 4.5 | - | - | 1.5 |" in markdown
  with pytest.raises(tables.Table1Error, match="lacks actions"):
    tables.table1([run])  # the default is Human3.6M's 15


def test_refuses_unnamed_duplicate_and_broken_runs(tmp_path):
  unnamed = write_run(tmp_path, "ige4", [1.0] * 15, [1.0] * 15)
  with pytest.raises(tables.Table1Error, match=r"ige4: run name 'ige4' is "
                     r"not <model>_<source>"):
    tables.table1([unnamed])
  markdown, _ = tables.table1([unnamed], default_source="gt")
  assert "| IGE_4 | - | - | 1.0 |" in markdown
  os.makedirs(tmp_path / "copy")
  twin = write_run(tmp_path / "copy", "ige4_gt", [1.0] * 15, [1.0] * 15)
  with pytest.raises(tables.Table1Error, match="are both model 'ige4'"):
    tables.table1([unnamed, twin], default_source="gt")
  broken = write_run(tmp_path, "ige8_gt", [float("nan")] + [1.0] * 14,
                     [1.0] * 15)
  with pytest.raises(tables.Table1Error,
                     match=r"ige8_gt.*\['Directions'\] final step is nan"):
    tables.table1([broken])
  old = tmp_path / "b128-1_gt"
  os.makedirs(old)
  (old / "metrics.json").write_text(json.dumps({"protocol2_mm": [1.0]}))
  with pytest.raises(tables.Table1Error, match="no 'protocol1a_mm_per_action"):
    tables.table1([str(old)])
