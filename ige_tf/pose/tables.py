"""Table 1 of the paper in the field's conventions, from evaluated runs.

Reads only each run's `metrics.json` (written by `bin/evaluate.py`): the
final step of `protocol1a_mm_per_action` and `protocol2_mm_per_action`
(`{action: [T+1 floats]}`, the mean over that action's test frames).

Conventions (Martinez et al.'s `cum_err / len(actions)`, VideoPose3D's
tables): a run's score is the **mean of its per-action means** over the
actions (15 for Human3.6M), not the mean over all test frames; the
per-action breakdown is a wide table, one column per action plus "Avg".

Runs are named `<model>_<source>` (docs/reproducing_pose.md), e.g.
`ige4_sh`, `b1024-2_paper_gt`; source is sh, ft or gt. A run directory whose
name has no source suffix takes `default_source` (or is an error).
"""
import csv
import io
import json
import math
import os

from ige_tf import atomic
from ige_tf.pose.data import h36m
from ige_tf.train import run_files

PROTOCOLS = (("Protocol 1a", "protocol1a_mm"), ("Protocol 2", "protocol2_mm"))
SOURCES = (("sh", "SH"), ("ft", "FT"), ("gt", "GT"))
# Row order and labels of the known models; others follow, by name.
MODEL_LABELS = (("b1024-2", "Base 1024/2"), ("b128-1", "Base 128/1"),
                ("ige4", "IGE_4"), ("ige8", "IGE_8"))
PAPER_SUFFIX = "_paper"
# VideoPose3D's column headers.
ACTION_ABBREVIATIONS = {
    "Directions": "Dir.", "Discussion": "Disc.", "Eating": "Eat",
    "Greeting": "Greet", "Phoning": "Phone", "Photo": "Photo",
    "Posing": "Pose", "Purchases": "Purch.", "Sitting": "Sit",
    "SittingDown": "SitD.", "Smoking": "Smoke", "Waiting": "Wait",
    "WalkDog": "WalkD.", "Walking": "Walk", "WalkTogether": "WalkT."}


class Table1Error(ValueError):
  """A run that cannot enter Table 1; the message names the run."""


def model_label(model):
  """`"ige4"` -> `"IGE_4"`, `"b1024-2_paper"` -> `"Base 1024/2 (paper
  formulation)"`; unknown names are returned as they are."""
  labels = dict(MODEL_LABELS)
  if model.endswith(PAPER_SUFFIX):
    base = model[:-len(PAPER_SUFFIX)]
    return labels.get(base, base) + " (paper formulation)"
  return labels.get(model, model)


def _model_order(model):
  names = [m for m, _ in MODEL_LABELS]
  paper = model.endswith(PAPER_SUFFIX)
  base = model[:-len(PAPER_SUFFIX)] if paper else model
  return (paper, names.index(base) if base in names else len(names), base)


def parse_run_name(run_dir, default_source=None):
  """`(model, source)` of a run directory named `<model>_<source>`.

  Raises:
    Table1Error: the name has no sh/ft/gt suffix and no default_source.
  """
  name = os.path.basename(os.path.normpath(run_dir))
  model, _, source = name.rpartition("_")
  if model and source in dict(SOURCES):
    return model, source
  if default_source is not None:
    if default_source not in dict(SOURCES):
      raise Table1Error(f"default source must be one of "
                        f"{[s for s, _ in SOURCES]}, got {default_source!r}")
    return name, default_source
  raise Table1Error(
      f"{run_dir}: run name {name!r} is not <model>_<source> with source in "
      f"{[s for s, _ in SOURCES]}; rename the run or give its 2D source "
      "(bin/table1.py --source)")


def run_scores(run_dir, actions=h36m.ACTIONS):
  """Final-step per-action scores of one run and their mean.

  Args:
    run_dir: an evaluated run directory.
    actions: the actions the run must have, exactly.

  Returns:
    `{metric: {"per_action": {action: float}, "mean": float}}` for
    protocol1a_mm and protocol2_mm; "mean" is the mean of the per-action
    means.

  Raises:
    Table1Error: no metrics.json, no per-action metrics, an action missing
      or extra, or a value that is not a finite number.
  """
  path = os.path.join(run_dir, run_files.METRICS_FILE)
  try:
    with open(path) as f:
      metrics = json.load(f)
  except FileNotFoundError:
    raise Table1Error(f"{path}: not found; evaluate the run first "
                      "(bin/evaluate.py)") from None
  except json.JSONDecodeError as e:
    raise Table1Error(f"{path}: not valid JSON ({e})") from None
  scores = {}
  for _, metric in PROTOCOLS:
    key = f"{metric}_per_action"
    per_action = metrics.get(key)
    if not isinstance(per_action, dict):
      raise Table1Error(f"{path}: no {key!r}; re-evaluate the run with "
                        "bin/evaluate.py")
    missing = sorted(set(actions) - set(per_action))
    extra = sorted(set(per_action) - set(actions))
    if missing or extra:
      problems = []
      if missing:
        problems.append(f"lacks actions {missing}")
      if extra:
        problems.append(f"has actions not in the table {extra}")
      raise Table1Error(f"{path}: {key} " + " and ".join(problems) +
                        f" (the table's actions: {list(actions)})")
    values = {}
    for action in actions:
      steps = per_action[action]
      value = steps[-1] if isinstance(steps, list) and steps else steps
      if (not isinstance(value, (int, float)) or isinstance(value, bool)
          or not math.isfinite(value)):
        raise Table1Error(f"{path}: {key}[{action!r}] final step is "
                          f"{value!r}, not a finite number")
      values[action] = float(value)
    scores[metric] = {"per_action": values,
                      "mean": sum(values.values()) / len(values)}
  return scores


def collect(run_dirs, actions=h36m.ACTIONS, default_source=None):
  """Scores of every run, keyed by (model, source), in table order.

  Raises:
    Table1Error: any run that `parse_run_name` or `run_scores` refuses, or
      two runs with the same model and source.
  """
  cells, origin = {}, {}
  for run_dir in run_dirs:
    key = parse_run_name(run_dir, default_source)
    if key in cells:
      raise Table1Error(f"{run_dir} and {origin[key]} are both model "
                        f"{key[0]!r}, source {key[1]!r}")
    cells[key] = run_scores(run_dir, actions)
    origin[key] = run_dir
  order = [s for s, _ in SOURCES]
  return dict(sorted(cells.items(), key=lambda kv: (_model_order(kv[0][0]),
                                                    order.index(kv[0][1]))))


def _markdown(header, rows):
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def format_markdown(cells, actions=h36m.ACTIONS):
  """Table 1 (summary) and the per-action breakdown as markdown.

  Args:
    cells: `collect` output.
    actions: column order of the breakdown.

  Returns:
    str: the summary (rows: models; columns: Protocol 1a and 2 per 2D
    source, mean of per-action means, mm), then one wide table per
    protocol (rows: model and source; columns: actions and Avg).
  """
  models = list(dict.fromkeys(model for model, _ in cells))
  header = ["Model"] + [f"{short} {label}" for short, _ in
                        (("P1a", None), ("P2", None))
                        for _, label in SOURCES]
  rows = []
  for model in models:
    row = [model_label(model)]
    for _, metric in PROTOCOLS:
      for source, _ in SOURCES:
        cell = cells.get((model, source))
        row.append("-" if cell is None else f"{cell[metric]['mean']:.1f}")
    rows.append(row)
  parts = [f"Table 1: mean of the {len(actions)} per-action means (mm), "
           "final step; P1a = Protocol 1a (optimal scale), P2 = Protocol 2 "
           "(Procrustes).", "", _markdown(header, rows)]
  for title, metric in PROTOCOLS:
    header = [title, "2D"] + [ACTION_ABBREVIATIONS.get(a, a)
                              for a in actions] + ["Avg"]
    rows = [[model_label(model), dict(SOURCES)[source]] +
            [f"{cell[metric]['per_action'][a]:.1f}" for a in actions] +
            [f"{cell[metric]['mean']:.1f}"]
            for (model, source), cell in cells.items()]
    parts += ["", f"{title} per action (mm):", "", _markdown(header, rows)]
  return "\n".join(parts) + "\n"


def format_csv(cells, actions=h36m.ACTIONS):
  """CSV: one row per (model, source, protocol), a column per action, then
  `average` (mean of per-action means); values in mm, unrounded."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["model", "source", "protocol", *actions, "average"])
  for (model, source), cell in cells.items():
    for _, metric in PROTOCOLS:
      writer.writerow([model, source, metric] +
                      [repr(cell[metric]["per_action"][a]) for a in actions] +
                      [repr(cell[metric]["mean"])])
  return buffer.getvalue()


def _atomic_write(path, text):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic.write_text(path, text)


def table1(run_dirs, actions=h36m.ACTIONS, default_source=None,
           markdown_out=None, csv_out=None):
  """Builds Table 1 from run directories; optionally writes md and csv.

  Args:
    run_dirs: evaluated run directories (named `<model>_<source>`).
    actions: the actions every run must have, exactly (default the 15 of
      Human3.6M).
    default_source: source of runs whose name has no source suffix.
    markdown_out, csv_out: optional output paths (written atomically, only
      after every run was read).

  Returns:
    (markdown str, csv str).

  Raises:
    Table1Error: a run that cannot enter the table (message names it).
  """
  actions = tuple(actions)
  if not actions or len(set(actions)) != len(actions):
    raise Table1Error(f"the actions must be distinct and at least one, got "
                      f"{list(actions)}")
  cells = collect(run_dirs, actions, default_source)
  if not cells:
    raise Table1Error("no runs given")
  markdown, table_csv = (format_markdown(cells, actions),
                         format_csv(cells, actions))
  if markdown_out:
    _atomic_write(markdown_out, markdown)
  if csv_out:
    _atomic_write(csv_out, table_csv)
  return markdown, table_csv
