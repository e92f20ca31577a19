"""Tables 3, 4 and 5 of the paper from evaluated runs (`metrics.json` only).

Runs are directories named after their config (docs/reproducing_voxel.md):

- Table 3 (IoU % at R = 32 per category, and the class mean): runs
  `ige-mn`, `ige-i4`, `base-mn`, `base-i4`, `base-mn-world`,
  `base-i4-world`; one column per run, one row per category (by name), a
  final "mean" row (`iou_class_mean`, the unweighted mean over categories).
- Table 4 (class-mean IoU % of IGE per loss and resolution): runs
  `ige-{mn,i4}_{ciou,ce,a07,g2}_{32,64,128}`; one row per network and loss,
  one column per training resolution R.
- Table 5 (IoU % upsampled to 256^3, `iou_256`): runs
  `ige-{mn,i4}_13_{R}` (one model for 13 categories: the category's entry
  of `iou_256_per_category`) and `ige-{mn,i4}_{car,plane,table}_{R}` (one
  model per category: `iou_256`); rows IGE-MN_13, IGE-I4_13, IGE-MN_1,
  IGE-I4_1, columns category x R.

Every cell is the final inner step of the metric (the last list entry),
in percent with one decimal. `metric` selects another metric family
(e.g. `iou_256` for Table 3 at 256^3, or `iou` for Table 5 at R).
"""
import csv
import io
import json
import os
import re

from ige_tf.train.run_files import METRICS_FILE
from ige_tf.voxel.mesh import SYNSETS

TABLE3_RUNS = (("ige-mn", "Frustum IGE MN"), ("ige-i4", "Frustum IGE I4"),
               ("base-mn", "Frustum Base MN"), ("base-i4", "Frustum Base I4"),
               ("base-mn-world", "World Base MN"),
               ("base-i4-world", "World Base I4"))
TABLE4_LOSSES = (("ciou", "continuous IoU (eq. 12)"),
                 ("ce", "cross-entropy (α = 0, γ = 0)"),
                 ("a07", "α = 0.7"), ("g2", "γ = 2"))
TABLE5_CATEGORIES = ("car", "plane", "table")
NETWORKS = (("mn", "IGE-MN"), ("i4", "IGE-I4"))
_TABLE4_NAME = re.compile(r"^ige-(mn|i4)_(ciou|ce|a07|g2)_(\d+)$")
_TABLE5_NAME = re.compile(r"^ige-(mn|i4)_(13|car|plane|table)_(\d+)$")


class TableError(ValueError):
  """A run directory or its metrics cannot make the table (names the file)."""


def read_metrics(run_dir):
  """The `metrics.json` dict of a run directory.

  Raises:
    TableError: the file is missing or is not a JSON object.
  """
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.exists(path):
    raise TableError(f"{path}: no such file (evaluate the run with "
                     "bin/evaluate.py first)")
  try:
    with open(path) as f:
      metrics = json.load(f)
  except (OSError, ValueError) as e:
    raise TableError(f"{path}: not readable JSON: {e}") from e
  if not isinstance(metrics, dict):
    raise TableError(f"{path}: expected a JSON object, got "
                     f"{type(metrics).__name__}")
  return metrics


def _final(run_dir, metrics, key, sub=None):
  """Last step of `metrics[key]` (or `metrics[key][sub]`), in percent."""
  path = os.path.join(run_dir, METRICS_FILE)
  if key not in metrics:
    have = sorted(k for k in metrics if k.startswith("iou"))
    raise TableError(f"{path}: no {key!r} (has {have})")
  value = metrics[key]
  if sub is not None:
    if not isinstance(value, dict) or sub not in value:
      raise TableError(f"{path}: {key!r} has no entry {sub!r} "
                       f"({category_name(sub)})")
    value = value[sub]
  if isinstance(value, list):
    if not value:
      raise TableError(f"{path}: {key!r} is an empty list")
    value = value[-1]
  if not isinstance(value, (int, float)):
    raise TableError(f"{path}: {key!r} is not a number or a list of numbers")
  return 100.0 * float(value)


def category_name(synset):
  return SYNSETS.get(synset, synset)


def find_runs(runs_dirs=(), run_dirs=()):
  """dict run name -> directory: subdirectories of `runs_dirs` holding a
  `metrics.json`, plus `run_dirs` (named by their base names).

  Raises:
    TableError: a name given twice, or a `runs_dirs` entry that is not a
      directory.
  """
  found = {}

  def add(name, path):
    if name in found and os.path.abspath(found[name]) != os.path.abspath(path):
      raise TableError(f"run {name!r} given twice: {found[name]} and {path}")
    found[name] = path

  for root in runs_dirs:
    if not os.path.isdir(root):
      raise TableError(f"{root}: not a directory of runs")
    for name in sorted(os.listdir(root)):
      path = os.path.join(root, name)
      if os.path.exists(os.path.join(path, METRICS_FILE)):
        add(name, path)
  for path in run_dirs:
    add(os.path.basename(os.path.normpath(path)), path)
  return found


def table3(runs, metric="iou"):
  """Table 3: `(header, rows)`; rows are categories by name, then "mean".

  Args:
    runs: dict run name -> directory (`find_runs`); names of `TABLE3_RUNS`.
    metric: metric family: cells are `<metric>_per_category[synset][-1]` and
      `<metric>_class_mean[-1]`.
  """
  columns = [(name, title) for name, title in TABLE3_RUNS if name in runs]
  _reject_unknown(runs, {name for name, _ in TABLE3_RUNS}, "Table 3",
                  ", ".join(name for name, _ in TABLE3_RUNS))
  metrics = {name: read_metrics(runs[name]) for name, _ in columns}
  synsets = sorted({s for name, _ in columns
                    for s in metrics[name].get(f"{metric}_per_category", {})},
                   key=category_name)
  header = ["category"] + [title for _, title in columns]
  rows = []
  for synset in synsets:
    rows.append([category_name(synset)] + [
        _final(runs[name], metrics[name], f"{metric}_per_category", synset)
        for name, _ in columns])
  rows.append(["mean"] + [_final(runs[name], metrics[name],
                                 f"{metric}_class_mean")
                          for name, _ in columns])
  return header, rows


def table4(runs, metric="iou"):
  """Table 4: `(header, rows)`; rows network x loss, columns R; cells
  `<metric>_class_mean[-1]` (empty where a run is missing)."""
  _reject_unknown(runs, None, "Table 4", "ige-{mn,i4}_{ciou,ce,a07,g2}_{R}",
                  _TABLE4_NAME)
  cells = {}
  for name, path in runs.items():
    network, loss, resolution = _TABLE4_NAME.match(name).groups()
    cells[(network, loss, int(resolution))] = _final(
        path, read_metrics(path), f"{metric}_class_mean")
  resolutions = sorted({r for _, _, r in cells})
  header = ["network", "loss"] + [f"{r}³" for r in resolutions]
  rows = []
  for network, network_title in NETWORKS:
    for loss, loss_title in TABLE4_LOSSES:
      if any((network, loss, r) in cells for r in resolutions):
        rows.append([network_title, loss_title] + [
            cells.get((network, loss, r)) for r in resolutions])
  return header, rows


def table5(runs, metric="iou_256"):
  """Table 5: `(header, rows)`; rows IGE-MN_13, IGE-I4_13, IGE-MN_1,
  IGE-I4_1; columns "<category> <R>³"; cells the final step of `metric`
  (13-category runs: `<metric>_per_category[synset]`)."""
  _reject_unknown(runs, None, "Table 5",
                  "ige-{mn,i4}_{13,car,plane,table}_{R}", _TABLE5_NAME)
  synsets = {name: synset for synset, name in SYNSETS.items()}
  cells = {}
  for name, path in runs.items():
    network, scope, resolution = _TABLE5_NAME.match(name).groups()
    metrics = read_metrics(path)
    resolution = int(resolution)
    if scope == "13":
      for category in TABLE5_CATEGORIES:
        cells[(network, "13", category, resolution)] = _final(
            path, metrics, f"{metric}_per_category", synsets[category])
    else:
      cells[(network, "1", scope, resolution)] = _final(path, metrics, metric)
  resolutions = sorted({key[3] for key in cells})
  columns = [(c, r) for c in TABLE5_CATEGORIES for r in resolutions
             if any(k[2:] == (c, r) for k in cells)]
  header = ["model"] + [f"{c} {r}³" for c, r in columns]
  rows = []
  for scope in ("13", "1"):
    for network, title in NETWORKS:
      if any(k[:2] == (network, scope) for k in cells):
        rows.append([f"{title}_{scope}"] + [
            cells.get((network, scope, c, r)) for c, r in columns])
  return header, rows


def _reject_unknown(runs, known, table, expected, pattern=None):
  unknown = sorted(name for name in runs
                   if (name not in known if known is not None
                       else not pattern.match(name)))
  if unknown:
    raise TableError(
        f"{table}: runs not named after a {table} config: "
        + ", ".join(f"{runs[n]} ({n!r})" for n in unknown)
        + f"; expected names: {expected}")
  if not runs:
    raise TableError(f"{table}: no runs (expected names: {expected})")


def _cell(value):
  return "" if value is None else (f"{value:.1f}" if isinstance(value, float)
                                   else str(value))


def to_markdown(header, rows):
  """A Markdown table (str, ending in a newline)."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def to_csv(header, rows):
  """CSV text (str) with the header row."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header)
  writer.writerows([[_cell(v) for v in row] for row in rows])
  return out.getvalue()


TABLES = {"3": (table3, "iou"), "4": (table4, "iou"), "5": (table5, "iou_256")}


def make_table(table, runs_dirs=(), run_dirs=(), metric=None, fmt="markdown"):
  """Table `table` ("3", "4" or "5") as Markdown or CSV text.

  Args:
    table: which table.
    runs_dirs: folders whose subdirectories are runs.
    run_dirs: single run directories.
    metric: metric family (default: "iou" for Tables 3 and 4, "iou_256" for
      Table 5).
    fmt: "markdown" or "csv".
  """
  if table not in TABLES:
    raise TableError(f"no Table {table!r}; choose one of {sorted(TABLES)}")
  build, default_metric = TABLES[table]
  header, rows = build(find_runs(runs_dirs, run_dirs), metric or default_metric)
  if fmt == "markdown":
    return to_markdown(header, rows)
  if fmt == "csv":
    return to_csv(header, rows)
  raise TableError(f"unknown format {fmt!r}; choose 'markdown' or 'csv'")
