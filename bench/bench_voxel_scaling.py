"""Training-step time and peak memory of IGE-MN vs a 3D-deconvolution decoder.

The paper's scaling claim (6.1) made measurable: for R = 32, 64, 128 (256
where it fits) and a fixed batch, one training step (forward, backward
through the unrolled inner optimizer, Adam update) of

- IGE-MN (`ige_voxel_model("mn", R)`, T inner steps, continuous-IoU loss
  over all steps), as "ige" (every inner step's intermediates stored for the
  backward pass), "ige_recompute" (`recompute_steps=True`: each inner step
  recomputed in the backward pass; model, then the loss over its returned
  steps) and "ige_fold" (the same model trained through
  `VoxelProblem.training_loss`, the training loop's path: the loss folded
  into the recomputed unroll, so the stack of steps never exists), and
- the MN 3D-deconvolution baseline extended to R
  (`baseline_voxel_model("mn", R)`: Wu et al.-style deconvolutions with the
  features doubled, channels halving down to 4, continuous-IoU loss).

Every configuration runs in a fresh subprocess. Memory per example is the
slope between two batch sizes, `(peak(B2) - peak(B1)) / (B2 - B1)`, which
cancels the weights, optimizer slots, traced graph and runtime, for two
peaks: the TensorFlow CPU allocator's peak during the timed training steps
above what was allocated before them (`tf.config.experimental.
get_memory_info`; the precise figure) and the process's peak resident set
size (includes tracing and allocator slack). Time per step is the median of
the timed steps after one warm-up (tracing) step, as wall time and as the
process's CPU time (user + system, all threads; on a shared machine the
steadier measure of work). At each R the models alternate batch by batch;
`--repeats=N` runs N such interleaved rounds and reports medians. The
summary is also drawn as a log-log plot (voxel_scaling.png) of memory per
example and time per step against R. `--jit_compile` puts XLA on the whole
step of every model.

`--mode=params` instead builds every Table 2 model at 32^3 and writes the
measured trainable parameters per component and multiply-adds per example.

`--mode=macs` writes the multiply-adds per example of IGE-MN (per component
and per energy level) and of the MN baseline at every R.

`--mode=inner` (and `--mode=inner_worker`, one configuration; `--fold`
folds the loss into the unroll, `--fused` runs the fused unroll of
`ige_tf.voxel.unroll`, `--store_iterates` its stored-iterates variant) measures the inner loop alone (the frustum energy of IGE-MN,
`UnrolledSGD` with T steps and the continuous-IoU loss over all steps, no
encoder or decoders; random features and labels) at one R and B: the
allocator peak of a compiled forward + backward pass, storing vs
recomputing the inner steps, with and without XLA, each in a fresh process.

`--mode=profile` takes one IGE-MN training step at one R apart: each part
(encoder, initial estimate, image decoder, the occupancy pooling and its
gradients, the 2D energy CNNs, one recomputed inner step with its
second-order backward pass, the loss over all steps, the inner loop) runs
alone as a compiled forward + backward pass at the two batch sizes, in one
fresh process; per part it reports the allocator peak per example (slope)
and the median time at the larger batch.

`--parts=REGEX` runs only the matching parts (writes
voxel_profile_<R>_parts.{json,md}); some parts measure a tried variant beside
the library's (e.g. the initial estimate's upsampling as XLA kernels,
`upsample_trilinear_xla`).

`--mode=memory_trace` traces one training step of `--model` at
`--resolution`, `--batch_size` allocation by allocation (TensorFlow's
profiler): per phase (part of the model, forward / backward) the memory in
use at its highest and the largest live buffers, and every buffer live at
the allocator's peak (op or XLA function, shape, MB, the phase that
allocated it).

`--mode=kernels` times the fused unroll (`ige_tf.voxel.unroll`) kernel by
kernel at `--resolution`, `--batch_size`: one fused unroll of IGE-MN's
inner loop is run while every call of a `_Kernels` kernel and of the CNNs'
first and second order is recorded with its arguments; each call is then
replayed alone (median process CPU ms of `--kernel_calls` calls, allocator
peak above the inputs), with the primitives (pooling, unpooling,
per-example sum, sigmoid on one grid) beside them. The sum over the calls
is the inner loop's cost without overlap.

Usage (writes bench/results/voxel_scaling.{json,md,png}):
  python bench/bench_voxel_scaling.py
  python bench/bench_voxel_scaling.py --mode=params   # voxel_params.{json,md}
  python bench/bench_voxel_scaling.py --mode=macs     # voxel_macs.{json,md}
  python bench/bench_voxel_scaling.py --resolutions=128 --repeats=2
  python bench/bench_voxel_scaling.py --mode=merge --inputs=a.json,b.json \
      # one table and plot from several runs' voxel_scaling.json
  python bench/bench_voxel_scaling.py --mode=inner --resolution=128 \
      --batch_size=2   # voxel_inner_memory.{json,md}
  python bench/bench_voxel_scaling.py --mode=profile --resolution=128
      # voxel_profile_128.{json,md}
  python bench/bench_voxel_scaling.py --mode=profile --resolution=128 \
      --parts="upsampling|initial"   # voxel_profile_128_parts.{json,md}
  python bench/bench_voxel_scaling.py --mode=memory_trace --model=ige_fold \
      --resolution=128 --batch_size=4
      # voxel_memory_trace_ige_fold_128.{json,md}
  python bench/bench_voxel_scaling.py --mode=kernels --resolution=128 \
      --batch_size=4   # voxel_kernels_128.{json,md}
"""
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "scaling",
                  ["scaling", "merge", "params", "macs", "inner", "profile",
                   "memory_trace", "kernels", "worker", "inner_worker",
                   "profile_worker"],
                  "scaling: the time/memory sweep; params: Table 2 counts; "
                  "merge: one table and plot from --inputs; "
                  "macs: multiply-adds per R; "
                  "inner: the inner loop alone; profile: one step's parts; "
                  "memory_trace: one step's allocations by phase; "
                  "kernels: CPU ms of each kernel of the fused unroll; "
                  "worker, inner_worker: one configuration (internal).")
flags.DEFINE_list("inputs", [],
                  "--mode=merge: voxel_scaling.json files of earlier runs; "
                  "--mode=profile / memory_trace: rewrite the tables (and "
                  "plot) of these earlier results.")
flags.DEFINE_list("resolutions", ["32", "64", "128", "256"],
                  "Resolutions R to measure.")
flags.DEFINE_list("batch_sizes", ["2", "4"],
                  "Two batch sizes; time is reported for the larger one.")
flags.DEFINE_list("batch_sizes_256", ["1", "2"],
                  "Batch sizes used instead at R >= 256 (memory).")
MODELS = ("ige", "ige_recompute", "ige_fold", "base")
flags.DEFINE_list("models", list(MODELS), f"Models to measure, of {MODELS}.")
flags.DEFINE_integer("num_steps", 3, "IGE inner steps T.")
flags.DEFINE_integer("timed_steps", 3, "Timed training steps per run.")
flags.DEFINE_integer("repeats", 1,
                     "Interleaved rounds per (model, R, B); figures are the "
                     "median over rounds.")
flags.DEFINE_string("output_dir", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results"),
                    "Where the JSON and markdown results go.")
flags.DEFINE_integer("max_rss_gb", 14,
                     "Skip larger batches/resolutions after a run above this "
                     "peak (the machine is shared).")
# Worker flags.
flags.DEFINE_enum("model", "ige", MODELS,
                  "Worker and --mode=memory_trace: the model.")
flags.DEFINE_integer("resolution", 32, "Worker (and --mode=inner, memory_trace): R.")
flags.DEFINE_integer("batch_size", 2, "Worker (and --mode=inner, memory_trace): B.")
flags.DEFINE_bool("recompute", False, "Inner worker: recompute_steps.")
flags.DEFINE_bool("fold", False, "Inner worker: the loss folded into the "
                  "recomputed unroll (`UnrolledSGD(step_loss=...)`).")
flags.DEFINE_string("parts", "", "--mode=profile: only the parts whose "
                    "name matches this regular expression (all if empty).")
flags.DEFINE_bool("fused", False, "Inner worker: the fused unroll "
                  "(`ige_tf.voxel.unroll.fused_unroll`, loss folded in).")
flags.DEFINE_bool("store_iterates", False, "Inner worker with --fused: keep "
                  "the iterates instead of recomputing them from y_0.")
flags.DEFINE_integer("kernel_calls", 5, "--mode=kernels: calls per median.")
flags.DEFINE_bool("jit_compile", False,
                  "XLA (jit_compile) on the whole training step of every "
                  "model (scaling) or on the inner loop (inner worker).")


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed_peak(step, timed_steps):
  """Runs `step()` (already warmed up) `timed_steps` times.

  Returns:
    (list of wall seconds per call, list of process CPU seconds (user +
    system, all threads) per call, TF CPU allocator peak in MB above what was
    allocated before the calls). On a shared machine the CPU seconds are the
    steadier measure of work: waiting for a core counts in wall time only.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.experimental.reset_memory_stats("CPU:0")
  resident = tf.config.experimental.get_memory_info("CPU:0")["current"]
  times, cpu_times = [], []
  for _ in range(timed_steps):
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    step()
    times.append(time.perf_counter() - start)
    cpu_times.append(_cpu_seconds() - cpu_start)
  peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  return times, cpu_times, (peak - resident) / 2 ** 20


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _train_step(model_name, resolution, batch_size, num_steps,
                jit_compile=False):
  """One training step of a model of the sweep, and its random inputs.

  Returns:
    `(train_step, images, labels, model)`: `train_step(images, labels)`
    (a `tf.function`) runs forward, backward and the Adam update and returns
    the loss; images float32 `[B, 128, 128, 3]`, labels float32
    `[B, R, R, R]` in {0, 1}.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.core import MultiStepLoss  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import losses  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import models  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel.problem import VoxelProblem  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  if model_name.startswith("ige"):
    model = models.ige_voxel_model(
        "mn", resolution=resolution, num_steps=num_steps,
        recompute_steps=model_name in ("ige_recompute", "ige_fold"))
  else:
    model = models.baseline_voxel_model("mn", resolution=resolution)
  loss = MultiStepLoss(losses.ContinuousIoU())
  # "ige_fold": the training loop's path, `VoxelProblem.training_loss`
  # (loss folded into the recomputed unroll); the others: model, then loss.
  problem = VoxelProblem(records_dir=None, model_fn=models.ige_voxel_model,
                         resolution=resolution, loss_fn=losses.ContinuousIoU())
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(model.trainable_variables)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.random((batch_size, 128, 128, 3), np.float32))
  labels = tf.constant(
      (rng.random((batch_size,) + (resolution,) * 3) > 0.7).astype(
          np.float32))

  @tf.function(jit_compile=jit_compile)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      if model_name == "ige_fold":
        value, _ = problem.training_loss(model, {"image": images},
                                         {"frustum": labels})
      else:
        outputs = model({"image": images}, training=True)
        value = loss(labels, outputs["steps"])
    gradients = tape.gradient(value, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return value

  return train_step, images, labels, model


def run_worker(model_name, resolution, batch_size, num_steps, timed_steps,
               jit_compile=False):
  """One configuration in this process; returns a dict of measurements."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np  # pylint: disable=g-import-not-at-top

  from ige_tf.voxel import models  # pylint: disable=g-import-not-at-top

  train_step, images, labels, model = _train_step(
      model_name, resolution, batch_size, num_steps, jit_compile)
  rss_built = _peak_rss_mb()
  start = time.perf_counter()
  train_step(images, labels).numpy()
  first_step = time.perf_counter() - start
  times, cpu_times, step_peak_mb = _timed_peak(
      lambda: train_step(images, labels).numpy(), timed_steps)
  return {"model": model_name, "resolution": resolution,
          "batch_size": batch_size, "num_steps": num_steps,
          "jit_compile": jit_compile,
          "params": models.component_params(model)["total"],
          "step_seconds": float(np.median(times)),
          "min_step_seconds": float(np.min(times)),
          "step_cpu_seconds": float(np.median(cpu_times)),
          "tf_step_peak_mb": step_peak_mb,
          "first_step_seconds": first_step,
          "peak_rss_mb": _peak_rss_mb(), "rss_after_build_mb": rss_built}


def _spawn(model_name, resolution, batch_size):
  command = [sys.executable, os.path.abspath(__file__), "--mode=worker",
             f"--model={model_name}", f"--resolution={resolution}",
             f"--batch_size={batch_size}", f"--num_steps={FLAGS.num_steps}",
             f"--timed_steps={FLAGS.timed_steps}",
             f"--jit_compile={FLAGS.jit_compile}"]
  result = subprocess.run(command, capture_output=True, text=True,
                          check=False)
  for line in reversed(result.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  return {"model": model_name, "resolution": resolution,
          "batch_size": batch_size, "error": result.stderr[-2000:]}


def _write(name, payload, markdown):
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  for suffix, text in ((".json", json.dumps(payload, indent=2)),
                       (".md", markdown)):
    path = os.path.join(FLAGS.output_dir, name + suffix)
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)
    print("wrote", path)


def _batches(resolution):
  sizes = FLAGS.batch_sizes_256 if resolution >= 256 else FLAGS.batch_sizes
  return sorted(int(b) for b in sizes)


def _median_run(rounds):
  """One (model, R, B) over interleaved rounds: the median of each figure."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  good = [r for r in rounds if "error" not in r]
  if len(good) < len(rounds):
    return next(r for r in rounds if "error" in r)
  merged = dict(good[0])
  for key in ("step_seconds", "min_step_seconds", "step_cpu_seconds",
              "tf_step_peak_mb", "peak_rss_mb", "first_step_seconds"):
    merged[key] = float(np.median([r[key] for r in good]))
  merged["rounds"] = good
  return merged


def run_merge():
  """Merges the summaries of several scaling runs (`--inputs`) into one
  table and plot (e.g. a repeated 128^3 run beside a sweep of the others).
  A resolution present in several inputs is taken from the last."""
  by_resolution, runs_by_resolution = {}, {}
  for path in FLAGS.inputs:
    with open(path) as f:
      payload = json.load(f)
    for row in payload["summary"]:
      resolution = row["resolution"]
      by_resolution[resolution] = row
      # That input's runs only (their count is the table's "rounds").
      runs_by_resolution[resolution] = [
          r for r in payload["runs"] if r["resolution"] == resolution]
  summary = [by_resolution[r] for r in sorted(by_resolution)]
  runs = [run for r in sorted(runs_by_resolution)
          for run in runs_by_resolution[r]]
  _write_scaling(runs, summary, sources=FLAGS.inputs)


def run_scaling():
  """The sweep: every (model, R, B) in a subprocess; writes the results.

  At each R the models alternate batch by batch, `--repeats` times over, so
  the ratios compare runs made at nearly the same time on a shared machine.
  """
  runs = []
  for resolution in (int(r) for r in FLAGS.resolutions):
    stopped = set()
    rounds = {}
    for _ in range(FLAGS.repeats):
      for batch_size in _batches(resolution):
        for model_name in FLAGS.models:
          if model_name in stopped:
            continue
          run = _spawn(model_name, resolution, batch_size)
          print(json.dumps(run)[:400], flush=True)
          rounds.setdefault((model_name, batch_size), []).append(run)
          if "error" in run or run["peak_rss_mb"] > FLAGS.max_rss_gb * 1024:
            stopped.add(model_name)
    runs.extend(_median_run(r) for r in rounds.values())
  summary = []
  for resolution in sorted({r["resolution"] for r in runs}):
    batches = _batches(resolution)
    row = {"resolution": resolution, "batch_sizes": batches}
    for model_name in FLAGS.models:
      by_batch = {r["batch_size"]: r for r in runs
                  if r["model"] == model_name and r["resolution"] == resolution
                  and "error" not in r}
      if len(by_batch) == len(batches):
        low, high = by_batch[batches[0]], by_batch[batches[-1]]
        span = batches[-1] - batches[0]
        row[model_name] = {
            "step_seconds": high["step_seconds"],
            "step_cpu_seconds": high["step_cpu_seconds"],
            "peak_rss_mb": high["peak_rss_mb"],
            "tf_step_peak_mb": high["tf_step_peak_mb"],
            "mb_per_example": (high["tf_step_peak_mb"]
                               - low["tf_step_peak_mb"]) / span,
            "rss_mb_per_example": (high["peak_rss_mb"]
                                   - low["peak_rss_mb"]) / span}
    for model_name in FLAGS.models:
      if model_name != "base" and model_name in row and "base" in row:
        row[model_name]["memory_over_base"] = (
            row[model_name]["mb_per_example"] / row["base"]["mb_per_example"])
        row[model_name]["time_over_base"] = (
            row[model_name]["step_seconds"] / row["base"]["step_seconds"])
        row[model_name]["cpu_time_over_base"] = (
            row[model_name]["step_cpu_seconds"]
            / row["base"]["step_cpu_seconds"])
    summary.append(row)
  _write_scaling(runs, summary)


def _rounds(runs, resolution, model_name):
  """How many interleaved rounds the figures of (R, model) are medians of."""
  return max([len(r.get("rounds", [r])) for r in runs
              if r["resolution"] == resolution and r["model"] == model_name]
             or [0])


def _write_scaling(runs, summary, sources=None):
  """voxel_scaling.{json,md,png} from the runs and their summary rows."""
  lines = [
      f"IGE T = {FLAGS.num_steps}, 128^2 images, CPU, {os.cpu_count()} "
      f"cores{', XLA on the whole step' if FLAGS.jit_compile else ''}, "
      "median over the interleaved rounds of each R. Time and peak at "
      "the larger batch B; MB/example is the peak slope between the two "
      "batches; ratios are to the baseline at the same R; CPU s is the "
      "process CPU time (user + system) per step.", "",
      "| R | B | rounds | model | s/step | CPU s/step | MB/example "
      "| memory / base | time / base | CPU time / base | step peak MB "
      "| RSS MB/example |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in summary:
    for model_name in FLAGS.models:
      if model_name not in row:
        continue
      cells = row[model_name]
      ratio = lambda key: (f"{cells[key]:.2f}" if key in cells else "-")  # pylint: disable=cell-var-from-loop
      lines.append(
          f"| {row['resolution']} | "
          f"{'/'.join(str(b) for b in row['batch_sizes'])} | "
          f"{_rounds(runs, row['resolution'], model_name)} | {model_name} | "
          f"{cells['step_seconds']:.2f} | {cells['step_cpu_seconds']:.2f} | "
          f"{cells['mb_per_example']:.0f} | "
          f"{ratio('memory_over_base')} | {ratio('time_over_base')} | "
          f"{ratio('cpu_time_over_base')} | "
          f"{cells['tf_step_peak_mb']:.0f} | "
          f"{cells['rss_mb_per_example']:.0f} |")
  failed = [r for r in runs if "error" in r]
  for r in failed:
    lines.append(f"\nFailed: {r['model']} R={r['resolution']} "
                 f"B={r['batch_size']}: {r['error'].splitlines()[-1:]}")
  if sources:
    lines.append("\nMerged from: " + ", ".join(sources))
  _write("voxel_scaling", {"runs": runs, "summary": summary},
         "\n".join(lines))
  _plot_scaling(summary, os.path.join(FLAGS.output_dir, "voxel_scaling.png"))


_LABELS = {"ige": "IGE-MN (inner steps stored)",
           "ige_recompute": "IGE-MN (inner steps recomputed)",
           "ige_fold": "IGE-MN (fused unroll: hand-written adjoint, loss in)",
           "base": "3D-deconv baseline (MN)"}


def _plot_scaling(summary, path):
  """Log-log plot of memory per example and time per step against R."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for model_name in FLAGS.models:
    rows = [r for r in summary if model_name in r]
    if not rows:
      continue
    resolutions = [r["resolution"] for r in rows]
    style = "s--" if model_name == "base" else "o-"
    axes[0].plot(resolutions, [r[model_name]["mb_per_example"] for r in rows],
                 style, label=_LABELS[model_name])
    line, = axes[1].plot(resolutions,
                         [r[model_name]["step_seconds"] for r in rows],
                         style, label=_LABELS[model_name] + ", wall")
    if all("step_cpu_seconds" in r[model_name] for r in rows):
      axes[1].plot(resolutions,
                   [r[model_name]["step_cpu_seconds"] for r in rows],
                   style[0] + ":", color=line.get_color(),
                   markerfacecolor="none",
                   label=_LABELS[model_name] + ", CPU")
  batches = {tuple(r["batch_sizes"]) for r in summary}
  for ax, title, unit in (
      (axes[0], "Training-step memory per example", "MB per example "
       "(allocator peak slope)"),
      (axes[1], "Training-step time (larger batch, median)",
       "seconds per step (wall; CPU = process CPU time)")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("grid resolution R (R^3 voxels)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.set_xticks([r["resolution"] for r in summary])
    ax.set_xticklabels([str(r["resolution"]) for r in summary])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  figure.suptitle(
      f"IGE-MN (T = {FLAGS.num_steps}) vs 3D-deconv baseline, 128^2 images, "
      f"CPU; batches {', '.join('/'.join(map(str, b)) for b in sorted(batches))}",
      fontsize=10)
  figure.tight_layout()
  figure.savefig(path + ".tmp.png", dpi=110)
  plt.close(figure)
  os.replace(path + ".tmp.png", path)
  print("wrote", path)


def _inner_loop_inputs(resolution, batch_size, num_steps, recompute=True):
  """IGE-MN's inner optimizer at R and random inputs of its shapes.

  Returns:
    `(inner, initial, context, labels)`: a built `UnrolledSGD` over IGE-MN's
    `FrustumEnergy` (T steps, clip value 1.0, learned step size and clip);
    float32 initial estimate `[B, R, R, R]` (standard normal logits), the
    energy's feature maps (list of `[B, h_i, h_i, f_i]`) and float32 labels
    `[B, R, R, R]` in {0, 1}.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.core import UnrolledSGD  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import decoders  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel.energy import FrustumEnergy  # pylint: disable=g-import-not-at-top

  sizes = decoders.level_sizes(4, resolution)
  # IGE-MN's (`ige_voxel_model`: min_channels=1, so at 256^3 the finest
  # level has 4 depth bins, 64 cells each, as in training).
  channels = decoders.level_channels(128, len(sizes), 1)
  inner = UnrolledSGD(
      FrustumEnergy(resolution, sizes, channels), num_steps, clip_value=1.0,
      learn_learning_rate=True, learn_clip_value=True,
      recompute_steps=recompute)
  rng = np.random.default_rng(0)
  context = [tf.constant(rng.normal(size=(batch_size, s, s, c)), tf.float32)
             for s, c in zip(sizes, channels)]
  initial = tf.constant(rng.normal(size=(batch_size,) + (resolution,) * 3),
                        tf.float32)
  labels = tf.constant((rng.random(initial.shape) > 0.7).astype(np.float32))
  inner(initial, context)
  return inner, initial, context, labels


def run_inner_worker(resolution, batch_size, num_steps, recompute,
                     jit_compile, timed_steps, fold=False, fused=False,
                     store_iterates=False):
  """The inner loop alone in this process; returns a dict of measurements."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.core import MultiStepLoss, step_weights  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import losses, unroll  # pylint: disable=g-import-not-at-top

  inner, initial, context, labels = _inner_loop_inputs(
      resolution, batch_size, num_steps, recompute)
  loss = MultiStepLoss(losses.ContinuousIoU())

  weights = step_weights(num_steps)
  iou = losses.ContinuousIoU()

  @tf.function(jit_compile=jit_compile)
  def step(initial, context, labels):
    with tf.GradientTape() as tape:
      tape.watch([initial] + context)
      if fused:  # The hand-written adjoint of the whole loop.
        per_example = unroll.fused_unroll(inner, initial, context, labels,
                                          iou, store_iterates=store_iterates)
        value = tf.reduce_sum(weights * tf.reduce_mean(
            per_example["step_loss"], axis=1))
      elif fold:  # The loss folded into the recomputed unroll.
        per_example = inner(initial, context, training=True,
                            step_loss=lambda t, y: iou(labels, y))
        value = tf.reduce_sum(weights * tf.reduce_mean(
            per_example["step_loss"], axis=1))
      else:
        value = loss(labels, inner(initial, context))
    return value, tape.gradient(value,
                                [initial] + context + inner.trainable_variables)

  step(initial, context, labels)
  times, cpu_times, peak_mb = _timed_peak(
      lambda: float(step(initial, context, labels)[0]), timed_steps)
  return {"resolution": resolution, "batch_size": batch_size,
          "num_steps": num_steps, "recompute": recompute,
          "jit_compile": jit_compile, "fold": fold, "fused": fused,
          "store_iterates": store_iterates, "peak_mb": peak_mb,
          "step_seconds": float(np.median(times)),
          "step_cpu_seconds": float(np.median(cpu_times))}


def run_inner():
  """Inner loop alone: storing vs recomputing, plain vs XLA."""
  resolution = FLAGS.resolution
  runs = []
  for jit_compile in (False, True):
    for recompute in (False, True):
      command = [sys.executable, os.path.abspath(__file__),
                 "--mode=inner_worker", f"--resolution={resolution}",
                 f"--batch_size={FLAGS.batch_size}",
                 f"--num_steps={FLAGS.num_steps}",
                 f"--timed_steps={FLAGS.timed_steps}",
                 f"--recompute={recompute}", f"--jit_compile={jit_compile}"]
      result = subprocess.run(command, capture_output=True, text=True,
                              check=True)
      run = json.loads([l for l in result.stdout.splitlines()
                        if l.startswith("{")][-1])
      print(json.dumps(run), flush=True)
      runs.append(run)
  lines = [f"Inner loop alone (IGE-MN frustum energy, T = {FLAGS.num_steps}, "
           f"continuous IoU over all steps), R = {resolution}, "
           f"B = {FLAGS.batch_size}: allocator peak of one compiled forward "
           "+ backward pass.", "",
           "| XLA | inner steps | peak MB | s/step |", "|---|---|---|---|"]
  for run in runs:
    lines.append(f"| {'yes' if run['jit_compile'] else 'no'} | "
                 f"{'recomputed' if run['recompute'] else 'stored'} | "
                 f"{run['peak_mb']:.0f} | {run['step_seconds']:.2f} |")
  _write("voxel_inner_memory", {"runs": runs}, "\n".join(lines))


def run_kernels(resolution, batch_size, num_steps, calls):
  """Every call of one fused unroll (forward + backward), replayed alone.

  Runs `unroll.fused_unroll` once eagerly on `_inner_loop_inputs` (IGE-MN's
  energy, continuous IoU, clipped) while recording each call of a kernel of
  `unroll._Kernels` (`_Kernels.NAMES`) and of the CNNs' first and second
  order (`unroll.cnn_first_order`, `unroll.cnn_second_order`, replayed as a
  `tf.function`, as inside the training step) with its arguments; then
  calls each recorded call again `calls` times after one warm-up. Also times
  the primitives the kernels are made of (XLA kernels on one grid).

  Returns:
    dict with per call `name`, `pass` (forward/backward), `index` (the k-th
    call of that name), median process CPU ms and wall ms, and the
    allocator peak above what was in use before the calls (MB and float32
    `[B, R, R, R]` grids; outputs included); per name the sums over the
    step; and the total, which is what one inner loop costs if nothing
    overlaps.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.voxel import energy, losses, unroll  # pylint: disable=g-import-not-at-top

  inner, initial, context, labels = _inner_loop_inputs(
      resolution, batch_size, num_steps)
  iou = losses.ContinuousIoU()
  kernels = unroll._kernels(inner.energy, iou, initial.shape,  # pylint: disable=protected-access
                            inner.clip_value is not None)
  cnn_names = ("cnn_first_order", "cnn_second_order")
  recorded, current_pass, inside = [], ["forward"], [False]

  def recording(name, fn):
    def call(*args):
      if inside[0]:  # E.g. the first order inside the second: not again.
        return fn(*args)
      recorded.append({"name": name, "pass": current_pass[0], "fn": fn,
                       "args": args})
      inside[0] = True
      try:
        return fn(*args)
      finally:
        inside[0] = False
    return call

  saved = {name: getattr(kernels, name) for name in kernels.NAMES}
  saved_cnn = {name: getattr(unroll, name) for name in cnn_names}
  try:
    for name, fn in saved.items():
      setattr(kernels, name, recording(name, fn))
    for name, fn in saved_cnn.items():
      setattr(unroll, name, recording(name, fn))
    sources = [initial] + context
    with tf.GradientTape() as tape:
      tape.watch(sources)
      out = unroll.fused_unroll(inner, initial, context, labels, iou)
      total = tf.reduce_sum(out["step_loss"])
    current_pass[0] = "backward"
    tape.gradient(total, sources + inner.trainable_variables)
  finally:
    for name, fn in saved.items():
      setattr(kernels, name, fn)
    for name, fn in saved_cnn.items():
      setattr(unroll, name, fn)
  compiled_cnn = {name: tf.function(fn, autograph=False)
                  for name, fn in saved_cnn.items()}
  grid_mb = batch_size * resolution ** 3 * 4 / 2 ** 20

  def timed(fn, args):
    fn(*args)  # Warm-up (compiles / traces).
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    cpu_ms, wall_ms = [], []
    for _ in range(calls):
      start, cpu_start = time.perf_counter(), _cpu_seconds()
      result = fn(*args)
      tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy")
                            else t, result)
      wall_ms.append(1e3 * (time.perf_counter() - start))
      cpu_ms.append(1e3 * (_cpu_seconds() - cpu_start))
      del result
    peak_mb = (tf.config.experimental.get_memory_info("CPU:0")["peak"]
               - before) / 2 ** 20
    return {"cpu_ms": float(np.median(cpu_ms)),
            "wall_ms": float(np.median(wall_ms)), "peak_mb": peak_mb,
            "peak_grids": peak_mb / grid_mb}

  rows, counts = [], {}
  for call in recorded:
    name = call["name"]
    fn = compiled_cnn.get(name, call["fn"])
    counts[name] = counts.get(name, -1) + 1
    row = {"name": name, "pass": call["pass"], "index": counts[name]}
    row.update(timed(fn, call["args"]))
    print(json.dumps(row), flush=True)
    rows.append(row)
  recorded.clear()
  by_name = {}
  for row in rows:
    entry = by_name.setdefault(row["name"], {"calls": 0, "cpu_ms": 0.0,
                                             "wall_ms": 0.0, "max_grids": 0})
    entry["calls"] += 1
    entry["cpu_ms"] += row["cpu_ms"]
    entry["wall_ms"] += row["wall_ms"]
    entry["max_grids"] = max(entry["max_grids"], row["peak_grids"])
  total_cpu_ms = sum(row["cpu_ms"] for row in rows)
  kernel_cpu_ms = sum(row["cpu_ms"] for row in rows
                      if row["name"] not in cnn_names)

  # The primitives, each one XLA kernel on one grid (reference figures).
  jit = lambda fn: tf.function(fn, jit_compile=True, autograph=False)  # pylint: disable=unnecessary-lambda-assignment
  frustum = inner.energy
  occupancy = tf.sigmoid(initial)
  levels = energy.pool_frustum_levels(occupancy, frustum.level_sizes,
                                      frustum.depth_bins)
  primitives = {
      "pool_frustum_levels": (jit(lambda y: energy.pool_frustum_levels(
          y, frustum.level_sizes, frustum.depth_bins)), (occupancy,)),
      "unpool_frustum_levels": (jit(lambda g: energy.unpool_frustum_levels(
          g, frustum.level_sizes, frustum.depth_bins, resolution,
          resolution)), (levels,)),
      "sum_per_example": (jit(losses.sum_per_example), (occupancy,)),
      "sigmoid": (jit(tf.sigmoid), (initial,)),
  }
  primitive_rows = {}
  for name, (fn, args) in primitives.items():
    primitive_rows[name] = timed(fn, args)
    print(name, json.dumps(primitive_rows[name]), flush=True)
  return {"resolution": resolution, "batch_size": batch_size,
          "num_steps": num_steps, "calls_per_median": calls,
          "grid_mb": grid_mb, "calls": rows, "by_name": by_name,
          "total_cpu_ms": total_cpu_ms, "kernel_cpu_ms": kernel_cpu_ms,
          "primitives": primitive_rows}


def _kernels_markdown(result):
  """The markdown tables of `run_kernels`."""
  lines = [
      f"Every call of one fused unroll (`ige_tf.voxel.unroll`), replayed "
      f"alone: IGE-MN's energy at R = {result['resolution']}, B = "
      f"{result['batch_size']}, T = {result['num_steps']}, continuous IoU, "
      f"clipped; median of {result['calls_per_median']} calls after a "
      "warm-up. CPU ms: process CPU time (user + system, all threads); "
      "peak: allocator peak above the inputs during the calls, outputs "
      f"included, in float32 grids of {result['grid_mb']:.1f} MB.", "",
      "| call | pass | CPU ms | wall ms | peak grids |", "|---|---|---|---|---|"]
  for row in result["calls"]:
    lines.append(f"| {row['name']} #{row['index']} | {row['pass']} | "
                 f"{row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | "
                 f"{row['peak_grids']:.2f} |")
  lines += ["", "Per name, summed over the step:", "",
            "| name | calls | CPU ms | share | largest peak (grids) |",
            "|---|---|---|---|---|"]
  total = result["total_cpu_ms"]
  for name, entry in sorted(result["by_name"].items(),
                            key=lambda kv: -kv[1]["cpu_ms"]):
    lines.append(f"| {name} | {entry['calls']} | {entry['cpu_ms']:.1f} | "
                 f"{100 * entry['cpu_ms'] / total:.0f} % | "
                 f"{entry['max_grids']:.2f} |")
  lines += [f"| **total** | {len(result['calls'])} | **{total:.1f}** | "
            f"100 % | - |", "",
            f"Grid kernels (all but the CNNs): {result['kernel_cpu_ms']:.1f} "
            f"CPU ms ({100 * result['kernel_cpu_ms'] / total:.0f} %).", "",
            "Primitives, each alone as one XLA kernel on one grid:", "",
            "| primitive | CPU ms | wall ms | peak grids |", "|---|---|---|---|"]
  for name, row in result["primitives"].items():
    lines.append(f"| {name} | {row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | "
                 f"{row['peak_grids']:.2f} |")
  return "\n".join(lines)


def upsample_trilinear_xla(grid, factor):
  """A tried variant of `decoders.upsample_trilinear`, kept to measure it
  beside the library's: the same three per-axis matrix products, forward
  and backward (transposed products, depth first) each one XLA cluster
  behind a `tf.custom_gradient`. Same values; measured leaner in neither
  memory nor time (docs/benchmarks.md, issue 11), so not in the library.

  Args:
    grid: float `[B, R0, R1, R2]`.
    factor: int f >= 2.

  Returns:
    float `[B, f R0, f R1, f R2]`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import decoders  # pylint: disable=g-import-not-at-top

  def matrix(size, dtype):
    return tf.constant(decoders.linear_upsampling_matrix(size, factor), dtype)

  if factor not in _XLA_UPSAMPLING:

    @tf.function(jit_compile=True, autograph=False)
    def forward(grid):
      _, rows, cols, bins = grid.shape
      x = tf.matmul(matrix(rows, grid.dtype),
                    tf.reshape(grid, [-1, rows, cols * bins]))
      x = tf.matmul(matrix(cols, grid.dtype), tf.reshape(x, [-1, cols, bins]))
      x = tf.matmul(tf.reshape(x, [-1, bins]), matrix(bins, grid.dtype),
                    transpose_b=True)
      return tf.reshape(x, [-1, factor * rows, factor * cols, factor * bins])

    @tf.function(jit_compile=True, autograph=False)
    def backward(upstream):
      _, rows, cols, bins = (s // factor for s in upstream.shape)
      x = tf.matmul(tf.reshape(upstream, [-1, factor * bins]),
                    matrix(bins, upstream.dtype))
      x = tf.matmul(matrix(cols, upstream.dtype),
                    tf.reshape(x, [-1, factor * cols, bins]), transpose_a=True)
      x = tf.matmul(matrix(rows, upstream.dtype),
                    tf.reshape(x, [-1, factor * rows, cols * bins]),
                    transpose_a=True)
      return tf.reshape(x, [-1, rows, cols, bins])

    _XLA_UPSAMPLING[factor] = (forward, backward)
  forward, backward = _XLA_UPSAMPLING[factor]

  @tf.custom_gradient
  def upsample(grid):
    return forward(grid), backward

  return upsample(grid)


_XLA_UPSAMPLING = {}


@contextlib.contextmanager
def _upsampling_swapped(upsample):
  """Within the block, `decoders.upsample_trilinear` (what the layer
  `TrilinearUpsampling3D` calls) is `upsample` (None: unchanged)."""
  from ige_tf.voxel import decoders  # pylint: disable=g-import-not-at-top
  saved = decoders.upsample_trilinear
  decoders.upsample_trilinear = upsample or saved
  try:
    yield
  finally:
    decoders.upsample_trilinear = saved


def _profile_parts(resolution, batch_size, num_steps):
  """dict part name -> `step()` running that part's forward + backward."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.core import MultiStepLoss, step_weights  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import decoders, energy, losses, models, unroll  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel.problem import VoxelProblem  # pylint: disable=g-import-not-at-top

  model = models.ige_voxel_model("mn", resolution=resolution,
                                 num_steps=num_steps, recompute_steps=True)
  encoder = model.get_layer("image_encoder")
  generator = model.get_layer("3d_decoder")
  image_decoder = model.get_layer("image_decoder")
  inner = model.get_layer("inner_optimizer")
  frustum = inner.energy
  rng = np.random.default_rng(0)

  def constant(shape):
    return tf.constant(rng.normal(size=shape).astype(np.float32))

  image = tf.constant(rng.random((batch_size, 128, 128, 3), np.float32))
  grid_shape = (batch_size,) + (resolution,) * 3
  labels = tf.constant((rng.random(grid_shape) > 0.7).astype(np.float32))
  maps = encoder(image)
  by_size = {128 >> k: m for k, m in enumerate(maps, start=1)}
  by_size[128] = image
  sizes = decoders.level_sizes(4, resolution)
  skips = [by_size[s] for s in sizes[1:] if s in by_size]
  features = image_decoder([by_size[4]] + skips)
  initial = generator(by_size[4])
  coarse = constant((batch_size, 32, 32, 32))
  level_shapes = [(batch_size, h, h, d)
                  for h, d in zip(frustum.level_sizes, frustum.depth_bins)]
  level_weights = [constant(s) for s in level_shapes]
  pooled_inputs = [constant(s) for s in level_shapes]
  upstream = constant(grid_shape)
  iou = losses.ContinuousIoU()
  step_loss = MultiStepLoss(iou)
  steps = constant((num_steps + 1,) + grid_shape)

  def weighted(tensors, weights=None):
    return tf.add_n([tf.reduce_sum(t * (1.0 if weights is None else w))
                     for t, w in zip(tensors, weights or tensors)])

  def encoder_part():
    with tf.GradientTape() as tape:
      value = tf.add_n([tf.reduce_mean(tf.square(m)) for m in encoder(
          image, training=True)])
    return tape.gradient(value, encoder.trainable_variables)

  def initial(tried=False):
    def part():
      # Traced once: the swap (if any) holds while the graph is built.
      with _upsampling_swapped(upsample_trilinear_xla if tried else None):
        with tf.GradientTape() as tape:
          value = tf.reduce_mean(iou(labels, generator(by_size[4],
                                                       training=True)))
        return tape.gradient(value, generator.trainable_variables)
    return part

  def upsampling(upsample, with_loss):
    def part():
      with tf.GradientTape() as tape:
        tape.watch(coarse)
        fine = upsample(coarse, resolution // 32)
        if with_loss:  # What the step does with y_0 at T = 0.
          value = tf.reduce_mean(iou(labels, fine))
      if with_loss:
        return tape.gradient(value, coarse)
      # The op alone: its output (summed, so that it is computed) and its
      # gradient for a given upstream gradient (an input, as in the model).
      return tf.reduce_sum(fine), tape.gradient(fine, coarse,
                                                output_gradients=upstream)
    return part

  def image_decoder_part():
    with tf.GradientTape() as tape:
      value = tf.add_n([tf.reduce_mean(tf.square(f)) for f in image_decoder(
          [by_size[4]] + skips, training=True)])
    return tape.gradient(value, image_decoder.trainable_variables)

  def pooling(pool, second_order):
    def part():
      with tf.GradientTape() as outer:
        outer.watch([initial] + level_weights)
        with tf.GradientTape() as tape:
          tape.watch(initial)
          value = weighted(pool(initial), level_weights)
        grad = tape.gradient(value, initial)
        projected = tf.reduce_sum(grad * upstream)
      if not second_order:
        return grad
      return outer.gradient(projected, [initial] + level_weights)
    return part

  def new_pool(y):
    return energy.pooled_occupancy(y, frustum.level_sizes, frustum.depth_bins)

  def autodiff_pool(y):
    return energy.pool_frustum_levels(tf.sigmoid(y), frustum.level_sizes,
                                      frustum.depth_bins)

  def cnn_part():
    watched = pooled_inputs + list(features)
    with tf.GradientTape() as outer:
      outer.watch(watched)
      with tf.GradientTape() as tape:
        tape.watch(pooled_inputs)
        value = tf.add_n([tf.reduce_sum(cnn(tf.concat([f, p], -1)))
                          for cnn, f, p in zip(frustum.level_cnns, features,
                                               pooled_inputs)])
      grads = tape.gradient(value, pooled_inputs)
      projected = weighted(grads, level_weights)
    return outer.gradient(projected, watched + frustum.trainable_variables)

  def inner_step_first_order():
    return inner._step(initial, None, inner.learning_rate, None,  # pylint: disable=protected-access
                       inner.clip_value, features, False)[0]

  def inner_step_second_order():
    watched = [initial] + list(features)
    with tf.GradientTape() as tape:
      tape.watch(watched)
      y_next = inner._step(initial, None, inner.learning_rate, None,  # pylint: disable=protected-access
                           inner.clip_value, features, True)[0]
    return tape.gradient(y_next, watched + inner.trainable_variables,
                         output_gradients=upstream)

  def loss_part():
    with tf.GradientTape() as tape:
      tape.watch(steps)
      value = step_loss(labels, steps)
    return tape.gradient(value, steps)

  def inner_loop_part():
    watched = [initial] + list(features)
    with tf.GradientTape() as tape:
      tape.watch(watched)
      value = step_loss(labels, inner(initial, features, training=True))
    return tape.gradient(value, watched + inner.trainable_variables)

  def full_step():
    with tf.GradientTape() as tape:
      value = step_loss(labels, model({"image": image}, training=True)[
          "steps"])
    return tape.gradient(value, model.trainable_variables)

  weights = step_weights(num_steps)

  def folded_inner_loop_part():
    watched = [initial] + list(features)
    with tf.GradientTape() as tape:
      tape.watch(watched)
      out = inner(initial, features, training=True,
                  step_loss=lambda t, y: iou(labels, y))
      value = tf.reduce_sum(weights * tf.reduce_mean(out["step_loss"], 1))
    return tape.gradient(value, watched + inner.trainable_variables)

  def fused_inner_loop(store_iterates):
    def part():
      watched = [initial] + list(features)
      with tf.GradientTape() as tape:
        tape.watch(watched)
        out = unroll.fused_unroll(inner, initial, features, labels, iou,
                                  store_iterates=store_iterates)
        value = tf.reduce_sum(weights * tf.reduce_mean(out["step_loss"], 1))
      return tape.gradient(value, watched + inner.trainable_variables)
    return part

  problem = VoxelProblem(records_dir=None, model_fn=models.ige_voxel_model,
                         resolution=resolution, loss_fn=iou)

  def folded_full_step():
    with tf.GradientTape() as tape:
      value, _ = problem.training_loss(model, {"image": image},
                                       {"frustum": labels})
    return tape.gradient(value, model.trainable_variables)

  return {
      "image encoder (MN), fwd + bwd": encoder_part,
      "initial estimate (3D decoder to 32^3 + trilinear to R) + IoU loss, "
      "fwd + bwd": initial(),
      "initial estimate (3D decoder to 32^3 + trilinear to R) + IoU loss, "
      "fwd + bwd (tried: upsampling as XLA kernels + custom gradient)":
          initial(tried=True),
      "trilinear upsampling 32^3 -> R + IoU loss, fwd + bwd (tried: XLA kernels + custom gradient)":
          upsampling(upsample_trilinear_xla, True),
      "trilinear upsampling 32^3 -> R + IoU loss, fwd + bwd (the "
      "library's: plain matmuls, autodiff)":
          upsampling(decoders.upsample_trilinear, True),
      "trilinear upsampling 32^3 -> R alone, fwd + bwd (tried: XLA kernels + custom gradient)":
          upsampling(upsample_trilinear_xla, False),
      "trilinear upsampling 32^3 -> R alone, fwd + bwd (the library's: "
      "plain matmuls, autodiff)":
          upsampling(decoders.upsample_trilinear, False),
      "image decoder, fwd + bwd": image_decoder_part,
      "occupancy + pyramid pooling, 1st order (autodiff, before)":
          pooling(autodiff_pool, False),
      "occupancy + pyramid pooling, 1st order (hand-written)":
          pooling(new_pool, False),
      "occupancy + pyramid pooling, 1st + 2nd order (autodiff, before)":
          pooling(autodiff_pool, True),
      "occupancy + pyramid pooling, 1st + 2nd order (hand-written)":
          pooling(new_pool, True),
      "2D energy CNNs, 1st + 2nd order": cnn_part,
      "one inner step, 1st order (inference)": inner_step_first_order,
      "one inner step, 1st + 2nd order (recomputed step)":
          inner_step_second_order,
      f"loss over T+1 = {num_steps + 1} steps, fwd + bwd": loss_part,
      f"inner loop (T = {num_steps}, recomputed) + loss, fwd + bwd":
          inner_loop_part,
      "full training step (no optimizer update)": full_step,
      f"inner loop (T = {num_steps}, recomputed), loss folded in, fwd + bwd":
          folded_inner_loop_part,
      f"inner loop (T = {num_steps}), fused unroll (recomputed from y_0), "
      "fwd + bwd": fused_inner_loop(False),
      f"inner loop (T = {num_steps}), fused unroll (iterates stored), "
      "fwd + bwd": fused_inner_loop(True),
      "full training step, loss folded in (VoxelProblem.training_loss)":
          folded_full_step,
  }


def run_profile_worker(resolution, batch_size, num_steps, timed_steps,
                       parts=""):
  """Every part of `_profile_parts` in this process: peak MB and seconds."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  results = {}
  for name, part in _profile_parts(resolution, batch_size,
                                   num_steps).items():
    if parts and not re.search(parts, name):
      continue
    compiled = tf.function(part)
    tf.nest.map_structure(lambda t: t.numpy(), compiled())
    times, cpu_times, peak_mb = _timed_peak(
        lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled()),  # pylint: disable=cell-var-from-loop
        timed_steps)
    results[name] = {"peak_mb": peak_mb,
                     "step_seconds": float(np.median(times)),
                     "step_cpu_seconds": float(np.median(cpu_times))}
  return {"resolution": resolution, "batch_size": batch_size,
          "num_steps": num_steps, "parts_filter": parts, "parts": results}


def run_profile():
  """The parts of one IGE-MN step at R, at two batch sizes (two processes).

  With `--inputs=voxel_profile_<R>.json` the tables are rewritten from that
  earlier run instead."""
  if FLAGS.inputs:
    with open(FLAGS.inputs[0]) as f:
      _write_profile(json.load(f)["runs"])
    return
  resolution = FLAGS.resolution
  batches = _batches(resolution)
  runs = []
  for batch_size in batches:
    command = [sys.executable, os.path.abspath(__file__),
               "--mode=profile_worker", f"--resolution={resolution}",
               f"--batch_size={batch_size}", f"--num_steps={FLAGS.num_steps}",
               f"--timed_steps={FLAGS.timed_steps}", f"--parts={FLAGS.parts}"]
    result = subprocess.run(command, capture_output=True, text=True,
                            check=False)
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if not lines:
      raise RuntimeError(f"profile worker B={batch_size} failed:\n"
                         f"{result.stderr[-3000:]}")
    runs.append(json.loads(lines[-1]))
    print(json.dumps(runs[-1])[:300], flush=True)
  _write_profile(runs)


def _write_profile(runs):
  """voxel_profile_<R>.{json,md} from the two profile workers' results."""
  low, high = runs[0], runs[-1]
  resolution = high["resolution"]
  batches = [low["batch_size"], high["batch_size"]]
  span = batches[-1] - batches[0]
  grid_mb = resolution ** 3 * 4 / 2 ** 20
  lines = [
      f"Parts of one IGE-MN training step, R = {resolution}, T = "
      f"{high['num_steps']}, B = {batches[0]}/{batches[-1]}, CPU. "
      "MB/example: slope of the allocator peak above the inputs between the "
      "two batches; grids: MB/example over one float32 R^3 grid "
      f"({grid_mb:.1f} MB); times: medians at B = {batches[-1]}, wall and "
      "process CPU (user + system).", "",
      "| part | MB/example | grids/example | wall s | CPU s |",
      "|---|---|---|---|---|"]
  summary = {}
  for name in high["parts"]:
    part = high["parts"][name]
    per_example = (part["peak_mb"] - low["parts"][name]["peak_mb"]) / span
    summary[name] = {"mb_per_example": per_example,
                     "grids_per_example": per_example / grid_mb,
                     "step_seconds": part["step_seconds"],
                     "step_cpu_seconds": part.get("step_cpu_seconds")}
    cpu = part.get("step_cpu_seconds")
    lines.append(f"| {name} | {per_example:.1f} | "
                 f"{per_example / grid_mb:.1f} | {part['step_seconds']:.3f} | "
                 f"{'-' if cpu is None else f'{cpu:.3f}'} |")
  # A run of some parts (--parts) does not replace the whole profile.
  parts = high.get("parts_filter") or ""
  _write(f"voxel_profile_{resolution}" + ("_parts" if parts else ""),
         {"runs": runs, "summary": summary}, "\n".join(lines))


def trace_allocations(fn, logdir):
  """Runs `fn()` once under TensorFlow's profiler; its allocator events.

  Reads the trace's XPlane file (`tf.profiler.experimental`, default
  options), which records the allocations and deallocations of the TF
  allocators with the op that asked, its shape and dtype (and the
  allocator's bytes in use after each). Small allocations (below about
  1 MB in our runs) are not recorded; the bytes in use still count them. An allocation
  without an op name (an XLA cluster's buffers, or an op's scratch space) is
  named after the op event that encloses it on the same thread, with the
  names of the XLA fusions run inside it.

  Returns:
    list of dicts in time order: "time_ps" (int), "kind" ("alloc"/"free"),
    "allocator" (str), "addr" (int), "bytes" (the allocation's size, what
    counts in the bytes in use), "requested" (the bytes the op asked for;
    TensorFlow's BFC allocator may hand out a larger free chunk unsplit),
    "in_use" (the allocator's bytes in use after the event), "op", "shape",
    "dtype", "region" (str; deallocations carry their allocation's).
  """
  import glob  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  tf.profiler.experimental.start(logdir)
  try:
    fn()
  finally:
    tf.profiler.experimental.stop()
  paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                           recursive=True), key=os.path.getmtime)
  if not paths:
    raise RuntimeError(f"the profiler wrote no *.xplane.pb under {logdir}")
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as f:
    space.ParseFromString(f.read())
  events = []
  for plane in space.planes:
    names, stat_names = plane.event_metadata, plane.stat_metadata
    for line in plane.lines:
      base = line.timestamp_ns * 1000
      spans = []  # (start, end, label, fusions) of op events on this thread.
      memory = []
      for event in line.events:
        kind = names[event.metadata_id].name
        stats = {}
        for stat in event.stats:
          which = stat.WhichOneof("value")
          value = getattr(stat, which) if which else None
          if which == "ref_value":
            value = stat_names[value].name
          stats[stat_names[stat.metadata_id].name] = value
        start = base + event.offset_ps
        if kind in ("MemoryAllocation", "MemoryDeallocation"):
          memory.append((start, kind, stats))
        elif "name" in stats or (":" in kind and "::" not in kind
                                 and not kind.startswith("end:")):
          spans.append([start, start + event.duration_ps,
                        stats.get("name") or kind.split(":")[0], []])
        elif (kind.endswith("fusion") or kind.startswith("wrapped_")) and (
            not kind.startswith("end:")):
          for span in spans:
            if span[0] <= start <= span[1] and kind not in span[3]:
              span[3].append(kind)
      for start, kind, stats in memory:
        op = stats.get("tf_op") or ""
        if not op and kind == "MemoryAllocation":
          enclosing = [s for s in spans if s[0] <= start <= s[1]]
          if enclosing:
            span = max(enclosing, key=lambda s: s[0])  # the innermost
            op = span[2] + (f" (XLA: {', '.join(span[3][:3])})"
                            if span[3] else "")
        events.append({
            "time_ps": start,
            "kind": "alloc" if kind == "MemoryAllocation" else "free",
            "allocator": stats.get("allocator_name"),
            "addr": stats.get("addr"),
            "bytes": int(stats.get("allocation_bytes") or 0),
            "requested": int(stats.get("requested_bytes") or 0),
            "in_use": int(stats.get("bytes_allocated") or 0),
            "op": op, "shape": stats.get("shape") or "",
            "dtype": str(stats.get("data_type") or ""),
            "region": stats.get("region_type") or ""})
  events.sort(key=lambda e: e["time_ps"])
  live = {}
  for event in events:  # Deallocations take their allocation's details.
    if event["kind"] == "alloc":
      live[event["addr"]] = event
    elif event["addr"] in live:
      allocation = live.pop(event["addr"])
      for key in ("op", "shape", "dtype", "region"):
        event[key] = allocation[key]
  return events


_COMPONENTS = (("image_encoder", "image encoder"),
               ("3d_decoder", "initial estimate / 3D decoder"),
               ("image_decoder", "image decoder"),
               ("inner_optimizer", "inner loop"), ("inner_cnn", "inner loop"),
               ("adam", "Adam update"))


# The kernels of `ige_tf.voxel.unroll._Kernels` (named by `_called_functions`;
# they carry no model scope), by the pass they run in.
# The fused unroll's kernels (`unroll._Kernels.NAMES`, traced as their
# methods' names) by the pass that calls them.
_FUSED_FORWARD = ("_pool", "_squared_norm", "_descent", "_sums")
_FUSED_BACKWARD = ("_loss_gradient", "_adjoint_levels", "_adjoint_grid")


def _phase_of(op):
  """The phase of the step an op's allocation belongs to, or None (an op
  without a model scope: a custom gradient's body, the loss's plain ops).

  The continuous-IoU loss's kernels (named by `_called_functions`) are the
  phase "loss" (forward; backward for their gradients), wherever they run.

  Forward: the model's parts called by the model, and within the inner
  loop's forward also the energy gradient of each inner step
  (`gradient_tape/inner_optimizer.../`). Backward: the outer gradient
  (`gradient_tape/...` otherwise) and the inner steps recomputed by the
  unroll's custom gradient (`inner_cnn_<k>/...` at the top level)."""
  if "= _sigmoid_sums_" in op:  # The IoU loss's kernels (`losses.py`).
    return "loss, " + ("backward" if "_grad" in op else "forward")
  for kernels, direction in ((_FUSED_FORWARD, "forward"),
                             (_FUSED_BACKWARD, "backward")):
    if any(f"= {name} " in op + " " for name in kernels):
      return f"inner loop (fused unroll), {direction}"
  for key, component in _COMPONENTS:
    if key in op:
      break
  else:
    return None
  if component == "Adam update":
    return component
  inner_forward = op.startswith(("inner_optimizer", "gradient_tape/"
                                 "inner_optimizer"))
  backward = not inner_forward and op.startswith(("gradient_tape/",
                                                  "inner_cnn"))
  return f"{component}, {'backward' if backward else 'forward'}"


def _short_op(op):
  """An op name without its model scope; "d/" per gradient_tape level."""
  depth = 0
  while op.startswith("gradient_tape/"):
    op, depth = op[len("gradient_tape/"):], depth + 1
  head, _, tail = op.partition("/")
  if tail and head.startswith(("ige_", "base_")):
    op = tail
  return "d/" * depth + op


def memory_breakdown(events):
  """Per-phase memory of one traced step (`trace_allocations`' events).

  The allocator is the one with the highest peak. A phase is a part of the
  model (by the op's name scope: image encoder, initial estimate / 3D
  decoder, image decoder, inner loop, loss, Adam update) and a direction
  (`_phase_of`). An op without a model scope (a custom gradient's body, the
  loss) is counted in the phase of the last scoped allocation before it.

  Returns:
    dict: "allocator", "before_mb" (in use when the step started: weights,
    optimizer slots, inputs), "peak_mb" (highest in use, absolute),
    "peak_ms" (time of the peak from the first event), "duration_ms",
    "traced_live_mb" (the recorded buffers live at the peak),
    "peak_live" (list of the buffers allocated in the step and live at the
    peak, largest first: "op", "shape", "mb", "requested_mb", "phase",
    "allocated_ms"),
    "peak_by_phase" (phase -> MB of those buffers), and "phases" (list in
    order of first allocation: "phase", "first_ms", "last_ms", "peak_mb"
    (highest in use while the phase allocates, absolute), "live" (largest
    buffers live then, as in "peak_live")), and "timeline" (list of
    `[ms, MB in use]` after each event).
  """
  by_allocator = {}
  for event in events:
    by_allocator.setdefault(event["allocator"], []).append(event)
  name, events = max(by_allocator.items(),
                     key=lambda kv: max(e["in_use"] for e in kv[1]))
  first = events[0]
  before = first["in_use"] + (first["bytes"] if first["kind"] == "free"
                              else -first["bytes"])
  start_ps = first["time_ps"]
  mb = lambda n: n / 2 ** 20  # pylint: disable=unnecessary-lambda-assignment
  ms = lambda t: (t - start_ps) / 1e9  # pylint: disable=unnecessary-lambda-assignment
  phase = "(before any scoped op)"
  live, phases, peak = {}, {}, None

  def snapshot(k=12):
    return [{"op": _short_op(e["op"]), "shape": e["shape"],
             "mb": mb(e["bytes"]), "requested_mb": mb(e["requested"]),
             "phase": e["phase"],
             "allocated_ms": ms(e["time_ps"])}
            for e in sorted(live.values(), key=lambda e: -e["bytes"])[:k]]

  for event in events:
    if event["kind"] == "alloc":
      phase = _phase_of(event["op"]) or phase
      event["phase"] = phase
      live[event["addr"]] = event
      entry = phases.setdefault(phase, {
          "phase": phase, "first_ms": ms(event["time_ps"]), "peak_mb": -1})
      entry["last_ms"] = ms(event["time_ps"])
      if event["in_use"] > entry["peak_mb"] * 2 ** 20:
        entry["peak_mb"] = mb(event["in_use"])
        entry["live"] = snapshot(5)
    else:
      live.pop(event["addr"], None)
    if peak is None or event["in_use"] > peak["in_use"]:
      peak = {"in_use": event["in_use"], "time_ps": event["time_ps"],
              "live": snapshot(len(live))}
  by_phase = {}
  for buffer in peak["live"]:
    by_phase[buffer["phase"]] = by_phase.get(buffer["phase"], 0.0) + buffer[
        "mb"]
  return {"allocator": name, "before_mb": mb(before),
          "peak_mb": mb(peak["in_use"]), "peak_ms": ms(peak["time_ps"]),
          "duration_ms": ms(events[-1]["time_ps"]),
          "peak_live": peak["live"],
          "traced_live_mb": sum(b["mb"] for b in peak["live"]),
          "peak_by_phase": dict(sorted(by_phase.items(),
                                       key=lambda kv: -kv[1])),
          "phases": list(phases.values()),
          "timeline": [[ms(e["time_ps"]), mb(e["in_use"])] for e in events]}


def _called_functions(graph):
  """dict function-call node name -> the `tf.function` it calls, over a
  traced graph and its function library, e.g. "PartitionedCall_6" ->
  "_clipped_descent_backward" (the names XLA clusters have in a trace).
  A name that calls different functions in different places is left out."""
  graph_def = graph.as_graph_def()
  found = {}

  def visit(nodes):
    for node in nodes:
      if node.op in ("PartitionedCall", "StatefulPartitionedCall"):
        function = re.sub(r"^__inference_|_\d+$", "",
                          node.attr["f"].func.name)
        found.setdefault(node.name, set()).add(function)

  visit(graph_def.node)
  for function in graph_def.library.function:
    visit(function.node_def)
  return {name: functions.pop() for name, functions in found.items()
          if len(functions) == 1}


def run_memory_trace():
  """One training step of `--model` at `--resolution`, `--batch_size`,
  traced allocation by allocation: voxel_memory_trace_<model>_<R>.{json,md,
  png}. With `--inputs=<those .json files>`, rewrites their tables and
  plots instead."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if FLAGS.inputs:  # Rewrite the tables and plot of an earlier trace.
    for path in FLAGS.inputs:
      with open(path) as f:
        result = json.load(f)
      name = os.path.splitext(os.path.basename(path))[0]
      _write(name, result, _memory_trace_markdown(result))
      _plot_memory_trace(result, os.path.join(FLAGS.output_dir,
                                              name + ".png"))
    return
  model_name, resolution = FLAGS.model, FLAGS.resolution
  batch_size = FLAGS.batch_size
  train_step, images, labels, _ = _train_step(
      model_name, resolution, batch_size, FLAGS.num_steps, FLAGS.jit_compile)
  train_step(images, labels).numpy()  # Traces and builds everything.
  train_step(images, labels).numpy()
  tf.config.experimental.reset_memory_stats("CPU:0")
  logdir = tempfile.mkdtemp(prefix="voxel_memory_trace_")
  try:
    events = trace_allocations(lambda: train_step(images, labels).numpy(),
                               logdir)
  finally:
    shutil.rmtree(logdir, ignore_errors=True)
  allocator_peak_mb = tf.config.experimental.get_memory_info(
      "CPU:0")["peak"] / 2 ** 20
  called = _called_functions(
      train_step.get_concrete_function(images, labels).graph)
  for event in events:  # "PartitionedCall_6 (XLA: ...)" -> its function.
    name, _, rest = event["op"].partition(" (")
    if name in called:
      event["op"] = f"{name} = {called[name]}" + (f" ({rest}" if rest
                                                   else "")
  result = memory_breakdown(events)
  result.update(model=model_name, resolution=resolution,
                batch_size=batch_size, num_steps=FLAGS.num_steps,
                allocator_peak_mb=allocator_peak_mb,
                grid_mb=batch_size * resolution ** 3 * 4 / 2 ** 20)
  name = f"voxel_memory_trace_{model_name}_{resolution}"
  _write(name, result, _memory_trace_markdown(result))
  _plot_memory_trace(result, os.path.join(FLAGS.output_dir, name + ".png"))


def _plot_memory_trace(result, path):
  """Memory in use over the traced step, the phases below it, the peak's
  largest buffers named."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  before, grid = result["before_mb"], result["grid_mb"]
  phases = result["phases"]
  figure, (top, bottom) = plt.subplots(
      2, 1, figsize=(11, 6.5), sharex=True,
      gridspec_kw={"height_ratios": [3, 0.35 * len(phases) + 0.6]})
  times = [t for t, _ in result["timeline"]]
  in_use = [(m - before) / grid for _, m in result["timeline"]]
  top.step(times, in_use, where="post", color="black", linewidth=1)
  peak = (result["peak_mb"] - before) / grid
  top.plot([result["peak_ms"]], [peak], "o", color="crimson")
  def label(buffer):
    op = buffer["op"].split(" (XLA")[0]
    if " = " not in op:  # The last scopes of a plain op's name.
      op = "/".join(op.split("/")[-2:]) + (" " + buffer["shape"]
                                           if buffer["shape"] else "")
    return f"{op}: {buffer['mb'] / grid:.2f} ({buffer['phase']})"

  names = "\n".join(label(b) for b in result["peak_live"][:6])
  top.text(0.02, 0.97, f"peak (red dot) {peak:.1f} grids; its largest "
           f"live buffers (grids, allocated in):\n{names}",
           transform=top.transAxes, va="top", fontsize=7.5)
  top.set_ylim(0, peak * 1.9)
  top.set_ylabel(f"in use above the step's start\n(float32 [B, R, R, R] "
                 f"grids of {grid:.3g} MB)")
  top.grid(True, alpha=0.3)
  top.set_title(
      f"One training step of {result['model']} (R = {result['resolution']}, "
      f"B = {result['batch_size']}, T = {result['num_steps']}), CPU "
      "allocator, traced allocation by allocation", fontsize=10)
  for row, phase in enumerate(phases):
    bottom.barh(row, max(phase["last_ms"] - phase["first_ms"],
                         result["duration_ms"] / 200),
                left=phase["first_ms"], height=0.6, color=f"C{row % 10}")
  bottom.set_yticks(range(len(phases)))
  bottom.set_yticklabels([p["phase"] for p in phases], fontsize=8)
  bottom.invert_yaxis()
  bottom.set_xlabel("time in the step (ms); bars: first to last "
                    "allocation of each phase")
  bottom.grid(True, axis="x", alpha=0.3)
  figure.tight_layout()
  figure.savefig(path + ".tmp.png", dpi=110)
  plt.close(figure)
  os.replace(path + ".tmp.png", path)
  print("wrote", path)


def _memory_trace_markdown(result):
  """The markdown tables of `run_memory_trace`."""
  grid = result["grid_mb"]
  before = result["before_mb"]

  def buffers(rows, k):
    return "; ".join(
        " ".join(x for x in (b["op"], b["shape"], f"{b['mb']:.1f}") if x)
        for b in rows[:k])

  lines = [
      f"One training step of `{result['model']}` (R = "
      f"{result['resolution']}, B = {result['batch_size']}, T = "
      f"{result['num_steps']}), CPU allocator `{result['allocator']}`, "
      f"traced allocation by allocation (TensorFlow profiler). MB above what "
      f"was in use when the step started ({before:.1f} MB: weights, "
      f"optimizer slots, inputs); one float32 `[B, R, R, R]` grid = "
      f"{grid:.1f} MB. Peak {result['peak_mb'] - before:.1f} MB = "
      f"{(result['peak_mb'] - before) / grid:.1f} grids at "
      f"{result['peak_ms']:.0f} ms of {result['duration_ms']:.0f} ms "
      f"(allocator's own peak over the traced step: "
      f"{result['allocator_peak_mb'] - before:.1f} MB above the start; "
      f"the recorded buffers live at the peak: "
      f"{result['traced_live_mb']:.1f} MB"
      + ("" if abs(result["traced_live_mb"] + before - result["peak_mb"])
         < 0.05 else ", the rest are allocations too small for the profiler "
         "to record") + ").", "",
      "Phases (part of the model by op scope, forward / backward; the "
      "loss: the continuous-IoU kernels wherever they run, e.g. inside the "
      "unroll when folded; an op without a model scope counts in the phase "
      "of the last scoped allocation before it; `d/` marks a gradient op, "
      "`d/d/` a second-order one):", "",
      "| phase | ms (first - last allocation) | MB live at its highest | "
      "grids | largest live buffers then (op, shape, MB) |",
      "|---|---|---|---|---|"]
  for phase in result["phases"]:
    lines.append(
        f"| {phase['phase']} | {phase['first_ms']:.0f} - "
        f"{phase['last_ms']:.0f} | {phase['peak_mb'] - before:.1f} | "
        f"{(phase['peak_mb'] - before) / grid:.1f} | "
        f"{buffers(phase['live'], 4)} |")
  lines += ["", "Buffers live at the peak, by the phase that allocated "
            "them:", "", "| allocated in | MB | grids |", "|---|---|---|"]
  for phase, size in result["peak_by_phase"].items():
    lines.append(f"| {phase} | {size:.1f} | {size / grid:.2f} |")
  lines += ["", "The largest buffers live at the peak (MB: as the "
            "allocator counts them; requested: what the op asked for, less "
            "when the allocator handed out a larger free chunk unsplit):", "",
            "| op | shape | MB | requested MB | allocated in | at ms |",
            "|---|---|---|---|---|---|"]
  for b in result["peak_live"][:15]:
    lines.append(f"| {b['op']} | {b['shape'] or '-'} | {b['mb']:.1f} | "
                 f"{b['requested_mb']:.1f} | {b['phase']} | "
                 f"{b['allocated_ms']:.0f} |")
  return "\n".join(lines)


def run_macs():
  """Multiply-adds per example of IGE-MN and the MN baseline at each R."""
  from ige_tf.voxel import models  # pylint: disable=g-import-not-at-top
  rows = []
  for resolution in (int(r) for r in FLAGS.resolutions):
    ige = models.ige_voxel_model("mn", resolution,
                                 num_steps=FLAGS.num_steps)
    base = models.baseline_voxel_model("mn", resolution)
    energy = ige.get_layer("inner_optimizer").energy
    row = {"resolution": resolution,
           "ige": models.multiply_adds_by_component(ige),
           "base": models.multiply_adds_by_component(base),
           "energy_levels": dict(zip(
               (f"{s}x{s}x{d}" for s, d in zip(energy.level_sizes,
                                               energy.depth_bins)),
               energy.multiply_adds()))}
    print(json.dumps(row), flush=True)
    rows.append(row)
    del ige, base
  lines = [
      f"Multiply-adds per example at inference (`ige_tf.voxel.models."
      f"multiply_adds_by_component`), MN encoder, 128^2 images, IGE T = "
      f"{FLAGS.num_steps}; millions (M).", "",
      "| R | IGE encoder | IGE 3D decoder | IGE image decoder | IGE inner "
      "CNN (2T evaluations) | IGE total | base 3D decoder | base total | "
      "IGE / base |", "|---|---|---|---|---|---|---|---|---|"]
  mega = lambda n: f"{n / 1e6:,.1f}"  # pylint: disable=unnecessary-lambda-assignment
  for row in rows:
    ige, base = row["ige"], row["base"]
    lines.append(
        f"| {row['resolution']} | {mega(ige['image_encoder'])} | "
        f"{mega(ige['3d_decoder'])} | {mega(ige['image_decoder'])} | "
        f"{mega(ige['inner_cnn'])} | {mega(ige['total'])} | "
        f"{mega(base['3d_decoder'])} | {mega(base['total'])} | "
        f"{ige['total'] / base['total']:.2f} |")
  lines += ["", "Energy multiply-adds per level, one evaluation (M; level "
            "h x h x d_i):", ""]
  for row in rows:
    lines.append(f"- R = {row['resolution']}: " + ", ".join(
        f"{k}: {mega(v)}" for k, v in row["energy_levels"].items()))
  _write("voxel_macs", rows, "\n".join(lines))


def run_params():
  """Table 2: trainable parameters per component and MACs at 32^3."""
  from ige_tf.voxel import models  # pylint: disable=g-import-not-at-top
  rows = {}
  for label, build in (
      ("IGE-MN", lambda: models.ige_voxel_model("mn", 32)),
      ("IGE-I4", lambda: models.ige_voxel_model("i4", 32)),
      ("IGE-Inception-v4", lambda: models.ige_voxel_model("inception_v4", 32)),
      ("Base-MN", lambda: models.baseline_voxel_model("mn", 32)),
      ("Base-I4", lambda: models.baseline_voxel_model("i4", 32)),
      ("Base-Inception-v4",
       lambda: models.baseline_voxel_model("inception_v4", 32))):
    model = build()
    rows[label] = {"params": models.component_params(model),
                   "multiply_adds": models.multiply_adds_by_component(model)}
    print(label, json.dumps(rows[label]), flush=True)
    del model
  keys = ("image_encoder", "3d_decoder", "image_decoder", "inner_cnn",
          "inner_optimizer", "total")
  lines = ["| component | " + " | ".join(rows) + " |",
           "|---" * (len(rows) + 1) + "|"]
  for key in keys:
    lines.append(f"| {key} | " + " | ".join(
        f"{rows[m]['params'][key]:,}" for m in rows) + " |")
  lines.append("| multiply-adds | " + " | ".join(
      f"{rows[m]['multiply_adds']['total']:,}" for m in rows) + " |")
  _write("voxel_params", rows, "\n".join(lines))


def main(argv):
  del argv
  if FLAGS.mode == "worker":
    print(json.dumps(run_worker(FLAGS.model, FLAGS.resolution,
                                FLAGS.batch_size, FLAGS.num_steps,
                                FLAGS.timed_steps, FLAGS.jit_compile)))
  elif FLAGS.mode == "inner_worker":
    print(json.dumps(run_inner_worker(
        FLAGS.resolution, FLAGS.batch_size, FLAGS.num_steps, FLAGS.recompute,
        FLAGS.jit_compile, FLAGS.timed_steps, FLAGS.fold, FLAGS.fused,
        FLAGS.store_iterates)))
  elif FLAGS.mode == "profile_worker":
    print(json.dumps(run_profile_worker(
        FLAGS.resolution, FLAGS.batch_size, FLAGS.num_steps,
        FLAGS.timed_steps, FLAGS.parts)))
  elif FLAGS.mode == "profile":
    run_profile()
  elif FLAGS.mode == "memory_trace":
    run_memory_trace()
  elif FLAGS.mode == "inner":
    run_inner()
  elif FLAGS.mode == "kernels":
    result = run_kernels(FLAGS.resolution, FLAGS.batch_size, FLAGS.num_steps,
                         FLAGS.kernel_calls)
    _write(f"voxel_kernels_{FLAGS.resolution}", result,
           _kernels_markdown(result))
  elif FLAGS.mode == "params":
    run_params()
  elif FLAGS.mode == "macs":
    run_macs()
  elif FLAGS.mode == "merge":
    run_merge()
  else:
    run_scaling()


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  app.run(main)
