"""Figure 4 of the paper: Protocol 2 against multiply-adds, from evaluated runs.

Every run directory must hold `metrics.json` (written by `bin/evaluate.py`).
Its `model_stats` entry (added by `PoseProblem.finalize_metrics`: trainable
parameters, multiply-adds, architecture) is used when present; otherwise the
model is rebuilt from the run's `operative_config.gin` to count them.

Points: baselines with 1 residual block red, 2 blocks blue, IGE black; x is
the dense-layer multiply-adds per example at inference (log scale), y the
final-step metric, the dot area grows linearly with the trainable parameters
(30 + 900 params / largest, in points^2). Two legends: the model kinds, and
reference dot sizes with their parameter counts.
"""
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ige_tf import atomic  # noqa: E402
from ige_tf.train import run_files  # noqa: E402

COLOURS = {("baseline", 1): "tab:red", ("baseline", 2): "tab:blue",
           "ige": "black"}


def expand_run_dirs(patterns):
  """Run directories from paths or glob patterns (sorted, de-duplicated).

  Only directories holding `metrics.json` are kept when a pattern is a glob;
  an explicit path without it is an error.

  Raises:
    FileNotFoundError: an explicit directory without `metrics.json`, or no
      run at all.
  """
  dirs = []
  for pattern in patterns:
    if any(ch in pattern for ch in "*?["):
      matches = sorted(d for d in glob.glob(pattern)
                       if os.path.isfile(os.path.join(d, run_files.METRICS_FILE)))
    else:
      if not os.path.isfile(os.path.join(pattern, run_files.METRICS_FILE)):
        raise FileNotFoundError(
            f"{pattern}: no {run_files.METRICS_FILE}; evaluate the run first "
            "(bin/evaluate.py)")
      matches = [pattern]
    dirs.extend(d for d in matches if d not in dirs)
  if not dirs:
    raise FileNotFoundError(f"no evaluated runs match {list(patterns)}")
  return dirs


def run_stats(run_dir):
  """`model_stats` of a run: from metrics.json, else rebuilt from its config."""
  with open(os.path.join(run_dir, run_files.METRICS_FILE)) as f:
    metrics = json.load(f)
  stats = metrics.get("model_stats")
  if stats is None:
    from ige_tf.pose import problem as problem_lib  # pylint: disable=import-outside-toplevel
    from ige_tf.train import run  # pylint: disable=import-outside-toplevel
    with run.open_run(run_dir, restore=False) as loaded:
      stats = problem_lib.model_stats_of(loaded.problem,
                                         loaded.problem.build_model())
  return metrics, stats


def collect(run_dirs, metric="protocol2_mm"):
  """One point per run.

  Returns:
    list of dicts: run, kind, units, blocks, num_steps, `metric` (final
    step), step0 (the same metric at step 0), params (total trainable),
    multiply_adds.
  """
  points = []
  for run_dir in run_dirs:
    metrics, stats = run_stats(run_dir)
    if metric not in metrics:
      raise KeyError(f"{run_dir}/{run_files.METRICS_FILE} has no {metric!r}")
    arch = stats["architecture"]
    points.append({
        "run": run_dir, "kind": arch["kind"], "units": arch["units"],
        "blocks": arch["blocks"], "num_steps": arch["num_steps"],
        metric: metrics[metric][-1], "step0": metrics[metric][0],
        "params": stats["trainable_params"]["total"],
        "multiply_adds": stats["multiply_adds"]})
  return points


METRIC_LABELS = {"protocol2_mm": "Protocol 2 error (mm)",
                 "protocol1a_mm": "Protocol 1a error (mm)",
                 "mpjpe_mm": "MPJPE (mm)"}


def _dot_area(params, largest):
  """Marker area (points^2) of a model with `params` trainable parameters."""
  return 30 + 900 * params / largest


def plot_figure4(run_dirs, out, metric="protocol2_mm", dpi=120):
  """Writes the Figure 4 PNG and a JSON of its points beside it.

  Args:
    run_dirs: evaluated run directories or glob patterns.
    out: PNG path; the points go to the same path with `.json`.
    metric: y axis (final step of that metrics.json entry).
    dpi: resolution.

  Returns:
    The list of points (`collect`).
  """
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel
  points = collect(expand_run_dirs(run_dirs), metric)
  largest = max(p["params"] for p in points)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=dpi)
  kinds = {}
  for p in points:
    if p["kind"] == "ige":
      colour, label = COLOURS["ige"], "IGE\n(label: inner steps T)"
      text = f"T={p['num_steps']}"
    else:
      colour = COLOURS.get(("baseline", p["blocks"]), "tab:gray")
      label = (f"baseline, {p['blocks']} residual block"
               f"{'s' if p['blocks'] != 1 else ''}\n(label: hidden units)")
      text = f"{p['units']}"
    kinds[label] = colour
    ax.scatter(p["multiply_adds"], p[metric],
               s=_dot_area(p["params"], largest), color=colour, alpha=0.6,
               edgecolors="k", linewidths=0.6, zorder=3)
    ax.annotate(text, (p["multiply_adds"], p[metric]), fontsize=9,
                xytext=(6, 5), textcoords="offset points", zorder=4)
  ax.set_xscale("log")
  ax.set_xlabel("multiply-adds per example\n(dense layers, inference, log "
                "scale)", fontsize=10)
  ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)}, final step",
                fontsize=10)
  ax.tick_params(labelsize=9)
  ax.set_title("Figure 4: error against computation", fontsize=11)
  ax.margins(x=0.12, y=0.15)
  ax.grid(True, which="both", alpha=0.3)
  # Colour legend (fixed-size markers) and a size legend (reference counts).
  colour_handles = [Line2D([], [], marker="o", ls="", markersize=8,
                           markerfacecolor=c, markeredgecolor="k", alpha=0.6,
                           label=label) for label, c in sorted(kinds.items())]
  first = ax.legend(handles=colour_handles, fontsize=9, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), title="model",
                    title_fontsize=9, labelspacing=0.8)
  ax.add_artist(first)
  magnitude = 10 ** int(np.floor(np.log10(largest)))
  references = sorted({largest, magnitude, magnitude // 10} - {0})
  size_handles = [ax.scatter([], [], s=_dot_area(n, largest), color="0.8",
                             edgecolors="k", linewidths=0.6,
                             label=f"{n:,}") for n in references]
  ax.legend(handles=size_handles, fontsize=9, loc="lower left",
            bbox_to_anchor=(1.02, 0.0), title="dot area: trainable\nparameters",
            title_fontsize=9, labelspacing=1.6, borderpad=1.0,
            handletextpad=1.6)
  # Legends outside the axes, on the right (fixed PNG size).
  fig.subplots_adjust(left=0.1, right=0.66, bottom=0.16, top=0.92)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with atomic.replacing(out, keep_suffix=True) as tmp:
    fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  atomic.write_json(os.path.splitext(out)[0] + ".json", points)
  return points
