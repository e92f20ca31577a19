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
least-squares slope (`numpy.polyfit`) of the step peak against the batch
size over `--batch_sizes` (1, 2, 3, 4; 1, 2, 3 at R >= 256), which cancels
the weights, optimizer slots, traced graph and runtime, for two peaks: the
TensorFlow CPU allocator's peak during the timed training steps above what
was allocated before them (`tf.config.experimental.get_memory_info`; the
precise figure) and the process's peak resident set size (includes tracing
and allocator slack). Its spread: the range of the slopes of the fits that
leave one batch size out, and each round's own slope; the intercept and the
residuals are reported too. Time per step is the median of the timed steps
after one warm-up (tracing) step, as wall time and as the process's CPU
time (user + system, all threads; on a shared machine the steadier measure
of work), at the largest batch. At each R the models alternate batch by
batch; `--repeats=N` (default 2) runs N such interleaved rounds and every
figure of one (model, R, B) is the median over them. The summary is also
drawn as a log-log plot (voxel_scaling.png) of memory per example (error
bars: the leave-one-batch-out range) and time per step against R.
`--jit_compile` puts XLA on the whole step of every model.

`--mode=fit --inputs=voxel_scaling.json` fits each model's CPU time per
step at `--fit_batch_size` and its memory per example against the voxel
count, `F + G * R^3` (least squares, residuals, leave-one-R-out ranges of
G), and reports `G_ige / G_base` (the time ratio's limit as R grows) beside
`F_ige / F_base` (voxel_scaling_fit.{json,md}).

`--mode=traffic` counts the grid-sized reads and writes per voxel of one
training step at `--resolution`, `--batch_size`: each fused-unroll kernel
call of IGE-MN from its optimized HLO, the rest of IGE's step and the
baseline's step from their traced graphs (the image encoder left out), and
times a streaming XLA kernel (one read, one write per voxel) to price a
grid access (voxel_traffic_<R>.{json,md}).

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
  python bench/bench_voxel_scaling.py --mode=fit --models=ige_fold,base \
      --inputs=bench/results/voxel_scaling.json   # voxel_scaling_fit.{json,md}
  python bench/bench_voxel_scaling.py --mode=traffic --resolution=128 \
      --batch_size=1   # voxel_traffic_128.{json,md}
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
                   "memory_trace", "kernels", "fit", "traffic", "worker",
                   "inner_worker", "profile_worker"],
                  "scaling: the time/memory sweep; params: Table 2 counts; "
                  "merge: one table and plot from --inputs; "
                  "macs: multiply-adds per R; "
                  "inner: the inner loop alone; profile: one step's parts; "
                  "memory_trace: one step's allocations by phase; "
                  "kernels: CPU ms of each kernel of the fused unroll; "
                  "fit: F + G R^3 of time and memory from --inputs; "
                  "traffic: grid reads/writes per voxel of each part; "
                  "worker, inner_worker: one configuration (internal).")
flags.DEFINE_list("inputs", [],
                  "--mode=merge: voxel_scaling.json files of earlier runs; "
                  "--mode=profile / memory_trace: rewrite the tables (and "
                  "plot) of these earlier results.")
flags.DEFINE_list("resolutions", ["32", "64", "128", "256"],
                  "Resolutions R to measure.")
flags.DEFINE_list("batch_sizes", ["1", "2", "3", "4"],
                  "Batch sizes (at least two; three or more give the "
                  "memory slope's spread); time is reported for the "
                  "largest.")
flags.DEFINE_list("batch_sizes_256", ["1", "2", "3"],
                  "Batch sizes used instead at R >= 256 (memory).")
flags.DEFINE_list("profile_batch_sizes", ["2", "4"],
                  "--mode=profile: the two batch sizes of the slope.")
MODELS = ("ige", "ige_recompute", "ige_fold", "base")
flags.DEFINE_list("models", list(MODELS), f"Models to measure, of {MODELS}.")
flags.DEFINE_integer("num_steps", 3, "IGE inner steps T.")
flags.DEFINE_integer("timed_steps", 3, "Timed training steps per run.")
flags.DEFINE_integer("repeats", 2,
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
flags.DEFINE_integer("kernel_calls", 5, "--mode=kernels (and traffic's "
                     "streaming kernel): calls per median.")
flags.DEFINE_integer("fit_batch_size", 2, "--mode=fit: the batch size whose "
                     "CPU time per step is fitted against R^3.")
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


def _input_runs(paths):
  """The runs of several voxel_scaling.json files, by resolution: a
  resolution present in several files is taken from the last (that file's
  runs only: their count is the table's "rounds")."""
  runs_by_resolution = {}
  for path in paths:
    with open(path) as f:
      payload = json.load(f)
    for resolution in {r["resolution"] for r in payload["runs"]}:
      runs_by_resolution[resolution] = [
          r for r in payload["runs"] if r["resolution"] == resolution]
  return [run for r in sorted(runs_by_resolution)
          for run in runs_by_resolution[r]]


def run_merge():
  """Merges several scaling runs (`--inputs`) into one table and plot (e.g.
  a repeated 128^3 run beside a sweep of the others; `_input_runs`). The
  summary is recomputed from the runs (`summarize_scaling`), so an older
  input gets today's fits."""
  runs = _input_runs(FLAGS.inputs)
  _write_scaling(runs, summarize_scaling(runs, FLAGS.models),
                 sources=FLAGS.inputs)


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
          print(json.dumps(run), flush=True)
          rounds.setdefault((model_name, batch_size), []).append(run)
          if "error" in run or run["peak_rss_mb"] > FLAGS.max_rss_gb * 1024:
            stopped.add(model_name)
    runs.extend(_median_run(r) for r in rounds.values())
  _write_scaling(runs, summarize_scaling(runs, FLAGS.models))


def fit_line(x, y):
  """Least-squares line `y = intercept + slope * x` (`numpy.polyfit`).

  Args:
    x, y: sequences of floats of one length n >= 2 (distinct x).

  Returns:
    dict: `slope`, `intercept`, `residuals` (list of y - fit, per point)
    and, for n >= 3, `left_out_slopes` (the slope of the fit without point
    i, per i) and `slope_range` `[min, max]` of them (both None for n = 2):
    how far one point moves the slope.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.size < 2 or np.unique(x).size < 2:
    raise ValueError(f"fit_line needs >= 2 points at distinct x, got x={x} "
                     f"y={y}")
  slope, intercept = np.polyfit(x, y, 1)
  result = {"slope": float(slope), "intercept": float(intercept),
            "residuals": [float(r) for r in y - (intercept + slope * x)],
            "left_out_slopes": None, "slope_range": None}
  if x.size >= 3:
    slopes = [float(np.polyfit(np.delete(x, i), np.delete(y, i), 1)[0])
              for i in range(x.size)]
    result["left_out_slopes"] = slopes
    result["slope_range"] = [min(slopes), max(slopes)]
  return result


def _paired_ratio_range(slopes, base_slopes):
  """`[min, max]` over i of `slopes[i] / base_slopes[i]` (the ratio of two
  leave-one-out fits that leave the same point out), or None."""
  if not slopes or not base_slopes or len(slopes) != len(base_slopes):
    return None
  ratios = [a / b for a, b in zip(slopes, base_slopes)]
  return [min(ratios), max(ratios)]


def _memory_fit(by_batch):
  """The memory-per-example figures of one (model, R) from its runs by B.

  Args:
    by_batch: dict B -> run (`_median_run` output: `tf_step_peak_mb` the
      median over rounds, `rounds` the rounds' runs).

  Returns:
    dict of the summary keys below (`mb_per_example` the least-squares
    slope of the per-B median peaks, ...).
  """
  batches = sorted(by_batch)
  peaks = [by_batch[b]["tf_step_peak_mb"] for b in batches]
  fit = fit_line(batches, peaks)
  round_peaks = [[r["tf_step_peak_mb"] for r in by_batch[b].get(
      "rounds", [by_batch[b]])] for b in batches]
  # The slope of each round alone (its own peak at every B).
  by_round = [fit_line(batches, [p[i] for p in round_peaks])["slope"]
              for i in range(min(len(p) for p in round_peaks))]
  return {
      "mb_per_example": fit["slope"],
      "mb_intercept": fit["intercept"],
      "mb_residuals": fit["residuals"],
      "mb_per_example_range": fit["slope_range"],
      "mb_left_out_slopes": fit["left_out_slopes"],
      "mb_per_example_by_round": by_round if len(by_round) > 1 else None,
      "peaks_mb_by_batch": {str(b): p for b, p in zip(batches, round_peaks)},
      "rss_mb_per_example": fit_line(
          batches, [by_batch[b]["peak_rss_mb"] for b in batches])["slope"],
      "cpu_seconds_by_batch": {str(b): by_batch[b]["step_cpu_seconds"]
                               for b in batches},
  }


def summarize_scaling(runs, model_names):
  """Per resolution, per model: the table's figures, ratios to "base".

  Args:
    runs: `_median_run` outputs (one per model, R, B; possibly errors).
    model_names: the models, in table order.

  Returns:
    list of rows `{"resolution", "batch_sizes", <model>: {...}}`: time and
    peak at the largest B (`step_seconds`, `step_cpu_seconds`,
    `tf_step_peak_mb`, `peak_rss_mb`, `batch_size`), the memory fit
    (`_memory_fit`), and for models other than "base" `memory_over_base`
    (ratio of the least-squares slopes), `memory_over_base_range` (lowest
    and highest ratio of the two models' fits that leave the same batch
    size out), `memory_over_base_by_round` (round i's slope over the
    baseline's round i: the two were measured interleaved), `time_over_base`
    (wall) and `cpu_time_over_base`. A model
    with a failed or missing batch (of those any model ran at R) is left
    out of its row.
  """
  summary = []
  for resolution in sorted({r["resolution"] for r in runs}):
    batches = sorted({r["batch_size"] for r in runs
                      if r["resolution"] == resolution})
    row = {"resolution": resolution, "batch_sizes": batches}
    for model_name in model_names:
      by_batch = {r["batch_size"]: r for r in runs
                  if r["model"] == model_name and r["resolution"] == resolution
                  and "error" not in r}
      if len(by_batch) != len(batches):
        continue
      high = by_batch[batches[-1]]
      row[model_name] = {
          "batch_size": batches[-1],
          "step_seconds": high["step_seconds"],
          "step_cpu_seconds": high["step_cpu_seconds"],
          "peak_rss_mb": high["peak_rss_mb"],
          "tf_step_peak_mb": high["tf_step_peak_mb"]}
      row[model_name].update(_memory_fit(by_batch))
    base = row.get("base")
    for model_name in model_names:
      if model_name == "base" or model_name not in row or base is None:
        continue
      cells = row[model_name]
      cells["memory_over_base"] = (cells["mb_per_example"]
                                   / base["mb_per_example"])
      cells["memory_over_base_range"] = _paired_ratio_range(
          cells["mb_left_out_slopes"], base["mb_left_out_slopes"])
      by_round, base_by_round = (cells["mb_per_example_by_round"],
                                 base["mb_per_example_by_round"])
      cells["memory_over_base_by_round"] = (
          [a / b for a, b in zip(by_round, base_by_round)]
          if by_round and base_by_round else None)
      cells["time_over_base"] = cells["step_seconds"] / base["step_seconds"]
      cells["cpu_time_over_base"] = (cells["step_cpu_seconds"]
                                     / base["step_cpu_seconds"])
    summary.append(row)
  return summary


def fit_scaling(summary, batch_size, model_names):
  """Each model's CPU time per step at one batch size, and memory per
  example, against the voxel count: least-squares `F + G * R^3`.

  If every step costs a fixed part F and a part G per voxel, IGE's time
  ratio to the baseline tends to `G_ige / G_base` as R grows, and falls
  with R only where `G_ige / G_base < F_ige / F_base`.

  Args:
    summary: `summarize_scaling` rows (at least two resolutions with
      `cpu_seconds_by_batch[batch_size]` for the model).
    batch_size: B of the time points.
    model_names: models to fit; ratios to "base" where it is among them.

  Returns:
    dict: per model `time` (`F_seconds`, `G_ns_per_voxel_per_example`
    (= G / B), their leave-one-R-out ranges, residuals per R in seconds,
    the points) and `memory` (`F_mb_per_example`, `G_bytes_per_voxel`, the
    same ranges and residuals); per other model `ratios`: `G_over_base`,
    `F_over_base` (time and memory), the G ratios' ranges over the fits
    that leave the same resolution out of both models, and the fitted and
    measured time ratio at each R.
  """
  result = {"batch_size": batch_size, "models": {}}
  for model_name in model_names:
    rows = [r for r in summary if model_name in r and str(batch_size) in
            r[model_name].get("cpu_seconds_by_batch", {})]
    if len(rows) < 2:
      raise ValueError(f"fit_scaling: {model_name!r} has CPU times at B = "
                       f"{batch_size} for {len(rows)} resolution(s); needs "
                       "at least two (rerun with more --resolutions)")
    resolutions = [r["resolution"] for r in rows]
    voxels = [float(r) ** 3 for r in resolutions]
    seconds = [r[model_name]["cpu_seconds_by_batch"][str(batch_size)]
               for r in rows]
    memory = [r[model_name]["mb_per_example"] for r in rows]
    time_fit, memory_fit = fit_line(voxels, seconds), fit_line(voxels, memory)
    ns = 1e9 / batch_size  # s per voxel per step -> ns per voxel per example

    def scaled(values, factor):
      return None if values is None else [v * factor for v in values]

    result["models"][model_name] = {
        "resolutions": resolutions, "cpu_seconds": seconds,
        "mb_per_example": memory,
        "time": {"F_seconds": time_fit["intercept"],
                 "G_ns_per_voxel_per_example": time_fit["slope"] * ns,
                 "G_range": scaled(time_fit["slope_range"], ns),
                 "G_left_out": scaled(time_fit["left_out_slopes"], ns),
                 "residual_seconds": time_fit["residuals"]},
        "memory": {"F_mb_per_example": memory_fit["intercept"],
                   "G_bytes_per_voxel": memory_fit["slope"] * 2 ** 20,
                   "G_range": scaled(memory_fit["slope_range"], 2 ** 20),
                   "G_left_out": scaled(memory_fit["left_out_slopes"],
                                        2 ** 20),
                   "residual_mb": memory_fit["residuals"]}}
  base = result["models"].get("base")
  for model_name, fit in result["models"].items():
    if model_name == "base" or base is None:
      continue
    time, base_time = fit["time"], base["time"]
    ratios = {
        "time_G_over_base": time["G_ns_per_voxel_per_example"]
                            / base_time["G_ns_per_voxel_per_example"],
        "time_F_over_base": time["F_seconds"] / base_time["F_seconds"],
        "memory_G_over_base": fit["memory"]["G_bytes_per_voxel"]
                              / base["memory"]["G_bytes_per_voxel"],
        "memory_F_over_base": fit["memory"]["F_mb_per_example"]
                              / base["memory"]["F_mb_per_example"]}
    if fit["resolutions"] == base["resolutions"]:
      ratios["time_G_over_base_range"] = _paired_ratio_range(
          time["G_left_out"], base_time["G_left_out"])
      ratios["memory_G_over_base_range"] = _paired_ratio_range(
          fit["memory"]["G_left_out"], base["memory"]["G_left_out"])
    by_r = {}
    g = lambda t: t["G_ns_per_voxel_per_example"] * batch_size / 1e9  # pylint: disable=unnecessary-lambda-assignment
    for r, s in zip(fit["resolutions"], fit["cpu_seconds"]):
      if r in base["resolutions"]:
        v = float(r) ** 3
        by_r[str(r)] = {
            "measured": s / base["cpu_seconds"][base["resolutions"].index(r)],
            "fitted": (time["F_seconds"] + g(time) * v)
                      / (base_time["F_seconds"] + g(base_time) * v)}
    ratios["time_ratio_by_resolution"] = by_r
    fit["ratios"] = ratios
  return result


def _fit_markdown(result, sources):
  """The markdown tables of `fit_scaling`."""
  b = result["batch_size"]

  def span(values, digits):
    return "-" if not values else (f"{values[0]:.{digits}f} to "
                                   f"{values[1]:.{digits}f}")

  lines = [
      f"Least-squares fits `F + G * R^3` (numpy.polyfit over the "
      f"resolutions) of each model's process CPU seconds per training step "
      f"at B = {b} and of its memory per example (the least-squares slope "
      "over batch sizes of `summarize_scaling`). G range: lowest and "
      "highest slope of the fits that leave one resolution out; a ratio's "
      "range: over the pairs of fits that leave the same resolution out. "
      "From: "
      + ", ".join(sources) + ".", "",
      "| model | R | CPU s/step | fit residual s | MB/example | fit residual MB |",
      "|---|---|---|---|---|---|"]
  for name, fit in result["models"].items():
    for i, r in enumerate(fit["resolutions"]):
      lines.append(
          f"| {name} | {r} | {fit['cpu_seconds'][i]:.3f} | "
          f"{fit['time']['residual_seconds'][i]:+.3f} | "
          f"{fit['mb_per_example'][i]:.1f} | "
          f"{fit['memory']['residual_mb'][i]:+.1f} |")
  lines += ["", "| model | F (CPU s/step) | G (CPU ns per voxel per example) "
            "| G range | F memory (MB/example) | G memory (bytes per voxel) "
            "| G memory range |", "|---|---|---|---|---|---|---|"]
  for name, fit in result["models"].items():
    t, m = fit["time"], fit["memory"]
    lines.append(
        f"| {name} | {t['F_seconds']:.3f} | "
        f"{t['G_ns_per_voxel_per_example']:.2f} | {span(t['G_range'], 2)} | "
        f"{m['F_mb_per_example']:.1f} | {m['G_bytes_per_voxel']:.1f} | "
        f"{span(m['G_range'], 1)} |")
  for name, fit in result["models"].items():
    ratios = fit.get("ratios")
    if not ratios:
      continue
    lines += [
        "", f"{name} over base: time G {ratios['time_G_over_base']:.2f} "
        f"(range {span(ratios.get('time_G_over_base_range'), 2)}; the CPU "
        f"time ratio's limit as R grows), time F "
        f"{ratios['time_F_over_base']:.2f}; memory G "
        f"{ratios['memory_G_over_base']:.2f} (range "
        f"{span(ratios.get('memory_G_over_base_range'), 2)}), memory F "
        f"{ratios['memory_F_over_base']:.2f}. The time ratio falls with R "
        f"only if G's ratio is below F's: "
        f"{'yes' if ratios['time_G_over_base'] < ratios['time_F_over_base'] else 'no'}.",
        "", "| R | CPU time ratio measured | fitted |", "|---|---|---|"]
    for r, entry in ratios["time_ratio_by_resolution"].items():
      lines.append(f"| {r} | {entry['measured']:.2f} | "
                   f"{entry['fitted']:.2f} |")
  return "\n".join(lines)


def run_fit():
  """`--mode=fit`: `fit_scaling` of the runs in `--inputs`, merged and
  summarized as `--mode=merge` does (`_input_runs`, `summarize_scaling`)."""
  summary = summarize_scaling(_input_runs(FLAGS.inputs), FLAGS.models)
  result = fit_scaling(summary, FLAGS.fit_batch_size, FLAGS.models)
  result["sources"] = FLAGS.inputs
  _write("voxel_scaling_fit", result, _fit_markdown(result, FLAGS.inputs))


def _rounds(runs, resolution, model_name):
  """How many interleaved rounds the figures of (R, model) are medians of."""
  return max([len(r.get("rounds", [r])) for r in runs
              if r["resolution"] == resolution and r["model"] == model_name]
             or [0])


def _write_scaling(runs, summary, sources=None):
  """voxel_scaling.{json,md,png} from the runs and their summary rows."""
  def number(value, digits=0):
    return "-" if value is None else f"{value:.{digits}f}"

  def span(values, digits=0):
    return ("-" if not values else
            f"{values[0]:.{digits}f}-{values[1]:.{digits}f}")

  lines = [
      f"IGE T = {FLAGS.num_steps}, 128^2 images, CPU, {os.cpu_count()} "
      f"cores{', XLA on the whole step' if FLAGS.jit_compile else ''}. "
      "Each (model, R, B) runs in a fresh process, models interleaved batch "
      "by batch, once per round; every figure of one B is the median over "
      "the rounds. Time and step peak at the largest batch B. MB/example: "
      "least-squares slope (numpy.polyfit) of the allocator's step peak "
      "against B; its range is the lowest and highest slope of the fits "
      "that leave one batch size out, 'by round' the slope of each round's "
      "own peaks; intercept and the largest |residual| of the fit in MB. "
      "memory / base: ratio of the slopes (range: lowest and highest ratio "
      "of the two models' fits that leave the same batch size out; by "
      "round: each round's slope over the baseline's in the same round). "
      "Ratios are to the baseline at the same R; CPU s is the process CPU time (user + system) per step.", "",
      "| R | B | rounds | model | s/step | CPU s/step | MB/example "
      "| slope range | by round | intercept MB | max abs residual MB "
      "| memory / base | memory / base range | memory / base by round "
      "| time / base "
      "| CPU time / base | step peak MB | RSS MB/example |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
      "---|"]
  for row in summary:
    for model_name in FLAGS.models:
      if model_name not in row:
        continue
      cells = row[model_name]
      by_round = cells.get("mb_per_example_by_round")
      residuals = cells.get("mb_residuals")
      ratio_by_round = cells.get("memory_over_base_by_round")
      lines.append(
          f"| {row['resolution']} | "
          f"{'/'.join(str(b) for b in row['batch_sizes'])} | "
          f"{_rounds(runs, row['resolution'], model_name)} | {model_name} | "
          f"{cells['step_seconds']:.2f} | {cells['step_cpu_seconds']:.2f} | "
          f"{cells['mb_per_example']:.0f} | "
          f"{span(cells.get('mb_per_example_range'))} | "
          f"{', '.join(f'{s:.0f}' for s in by_round) if by_round else '-'} | "
          f"{number(cells.get('mb_intercept'))} | "
          f"{number(max(map(abs, residuals)) if residuals else None, 1)} | "
          f"{number(cells.get('memory_over_base'), 2)} | "
          f"{span(cells.get('memory_over_base_range'), 2)} | "
          f"{', '.join(f'{r:.2f}' for r in ratio_by_round) if ratio_by_round else '-'} | "
          f"{number(cells.get('time_over_base'), 2)} | "
          f"{number(cells.get('cpu_time_over_base'), 2)} | "
          f"{cells['tf_step_peak_mb']:.0f} | "
          f"{cells['rss_mb_per_example']:.0f} |")
  peak_rows = [(row, m) for row in summary for m in FLAGS.models
               if m in row and "peaks_mb_by_batch" in row[m]]
  if peak_rows:
    lines += ["", "Step peaks (allocator, MB above the step's start) per "
              "batch size, every round:", "",
              "| R | model | B: peak MB per round |", "|---|---|---|"]
    for row, model_name in peak_rows:
      peaks = row[model_name]["peaks_mb_by_batch"]
      lines.append(f"| {row['resolution']} | {model_name} | " + "; ".join(
          f"{b}: {', '.join(f'{p:.0f}' for p in values)}"
          for b, values in peaks.items()) + " |")
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
  """Log-log plot of memory per example and time per step against R; the
  memory error bars span the leave-one-batch-out slopes."""
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
    slopes = [r[model_name]["mb_per_example"] for r in rows]
    ranges = [r[model_name].get("mb_per_example_range") or [s, s]
              for r, s in zip(rows, slopes)]
    axes[0].errorbar(
        resolutions, slopes, fmt=style, capsize=4,
        yerr=[[s - lo for s, (lo, _) in zip(slopes, ranges)],
              [hi - s for s, (_, hi) in zip(slopes, ranges)]],
        label=_LABELS[model_name])
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
      (axes[0], "Training-step memory per example",
       "MB per example (least-squares slope of the\nallocator peak over B; "
       "bars: leave-one-B-out range)"),
      (axes[1], "Training-step time (largest batch, median)",
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
      f"CPU; batches B = "
      f"{', '.join('/'.join(map(str, b)) for b in sorted(batches))}",
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
  from ige_tf.voxel import models  # pylint: disable=g-import-not-at-top

  # IGE-MN's energy as `ige_voxel_model("mn", R)` builds it (at 256^3 the
  # finest level has 4 depth bins, 64 cells each, as in training).
  energy = models.ige_energy("mn", resolution)
  sizes, channels = energy.level_sizes, energy.feature_channels
  inner = UnrolledSGD(
      energy, num_steps, clip_value=1.0, learn_learning_rate=True,
      learn_clip_value=True, recompute_steps=recompute)
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


def _record_unroll_calls(resolution, batch_size, num_steps):
  """Runs one fused unroll (forward + backward) of IGE-MN's inner loop
  eagerly on `_inner_loop_inputs` (continuous IoU, clipped) and records
  every call of a kernel of `unroll._Kernels` (`_Kernels.NAMES`) and of the
  CNNs' first and second order (`unroll.cnn_first_order`,
  `unroll.cnn_second_order`), with its arguments, in call order.

  Returns:
    `(recorded, cnn_functions, inner, initial)`: list of `{"name", "pass"
    (forward/backward), "fn", "args"}`; dict name -> the CNN function
    (Python, not compiled); the `UnrolledSGD`; the initial estimate float32
    `[B, R, R, R]`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.voxel import losses, unroll  # pylint: disable=g-import-not-at-top

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
  return recorded, saved_cnn, inner, initial


def run_kernels(resolution, batch_size, num_steps, calls):
  """Every call of one fused unroll (forward + backward), replayed alone.

  Records every call of one fused unroll (`_record_unroll_calls`; the CNNs'
  calls are replayed as a `tf.function`, as inside the training step), then
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

  recorded, saved_cnn, inner, initial = _record_unroll_calls(
      resolution, batch_size, num_steps)
  cnn_names = tuple(saved_cnn)
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
      # The same sum from the parts the kernels take (`unroll.UNPOOL_PARTS`).
      "expand_frustum_parts": (jit(lambda parts: energy.expand_frustum_parts(
          parts, resolution, resolution)), (energy.unpool_frustum_parts(
              levels, frustum.level_sizes, frustum.depth_bins, resolution,
              resolution, unroll.UNPOOL_PARTS),)),
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


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
                "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                "f64": 8}
# HLO instructions that move no data (views, bookkeeping).
_HLO_NO_DATA = ("parameter", "constant", "tuple", "get-tuple-element",
                "bitcast", "after-all", "partition-id", "replica-id")
# The smallest array counted as grid-sized, in float32 grids.
GRID_FRACTION = 1.0 / 16


def _array_bytes(shape):
  """Bytes of every array in an HLO shape string (`f32[2,8]{1,0}` or a tuple
  of them)."""
  import math  # pylint: disable=g-import-not-at-top
  return [_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
          for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape)
          if dtype in _DTYPE_BYTES]


def _split_hlo_instruction(line):
  """`(name, shape, opcode, operand names)` of an HLO instruction line, or
  None. Shapes may be tuples (parenthesized, with spaces)."""
  match = re.match(r"\s*(?:ROOT\s+)?%([\w.\-]+) = (.*)$", line)
  if not match:
    return None
  name, rest = match.groups()
  if rest.startswith("("):  # Tuple shape: up to its closing parenthesis.
    depth = 0
    for end, char in enumerate(rest):
      depth += {"(": 1, ")": -1}.get(char, 0)
      if depth == 0:
        break
    shape, rest = rest[:end + 1], rest[end + 1:].lstrip()
  else:
    shape, _, rest = rest.partition(" ")
  opcode, _, rest = rest.partition("(")
  depth, end = 1, 0
  for end, char in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0:
      break
  operands = re.findall(r"%([\w.\-]+)", rest[:end])
  return name, shape, opcode, operands


def hlo_grid_traffic(hlo_text, grid_bytes):
  """Grid-sized reads and writes of one XLA kernel, from its optimized HLO.

  Every instruction of the entry computation that moves data (a fusion, a
  reduce, a copy, ...; not a parameter, tuple, get-tuple-element or bitcast)
  is taken to read each of its operands once and write its output once, as
  XLA's CPU backend materializes every entry-level instruction's output.
  Only arrays of at least `GRID_FRACTION` grids count. A lower bound on the
  memory traffic: a fusion that reads an operand more than once (e.g. a
  reduction over non-minor axes) is counted once.

  Args:
    hlo_text: `experimental_get_compiler_ir(...)(stage="optimized_hlo")`.
    grid_bytes: bytes of one float32 `[B, R, R, R]` grid.

  Returns:
    dict, in float32 grids (bytes / grid_bytes): `parameters`, `outputs`
    (the entry's result), `temporaries` (grid-sized entry outputs that are
    not results), `reads`, `writes`, `accesses` (reads + writes), and
    `instructions` (per counted instruction: name, opcode, reads, writes).
  """
  lines = hlo_text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("ENTRY"))
  shapes, parsed = {}, []
  for line in lines[start + 1:]:
    if line.startswith("}"):
      break
    instruction = _split_hlo_instruction(line)
    if instruction:
      shapes[instruction[0]] = instruction[1]
      parsed.append((line.lstrip().startswith("ROOT"),) + instruction)

  def grids(shape):
    return sum(b for b in _array_bytes(shape)
               if b >= GRID_FRACTION * grid_bytes) / grid_bytes

  result = {"parameters": 0.0, "outputs": 0.0, "reads": 0.0, "writes": 0.0,
            "instructions": []}
  for is_root, name, shape, opcode, operands in parsed:
    if is_root:
      result["outputs"] = grids(shape)
    if opcode == "parameter":
      result["parameters"] += grids(shape)
    if opcode in _HLO_NO_DATA:
      continue
    reads = sum(grids(shapes[o]) for o in dict.fromkeys(operands)
                if o in shapes)
    writes = grids(shape)
    if reads or writes:
      result["instructions"].append({"name": name, "opcode": opcode,
                                     "reads": reads, "writes": writes})
    result["reads"] += reads
    result["writes"] += writes
  result["temporaries"] = max(result["writes"] - result["outputs"], 0.0)
  result["accesses"] = result["reads"] + result["writes"]
  return result


# Graph ops that move no data (views, bookkeeping, variables).
_GRAPH_NO_DATA = ("Const", "Identity", "IdentityN", "Reshape", "Squeeze",
                  "ExpandDims", "Shape", "ShapeN", "Size", "Rank", "NoOp",
                  "Placeholder", "ReadVariableOp", "StopGradient",
                  "VarHandleOp", "AssignVariableOp", "ZerosLike",
                  "BroadcastGradientArgs", "PreventGradient")


def graph_grid_traffic(graph, grid_bytes, exclude=None, weight_shapes=()):
  """Grid-sized reads and writes of the ops of a TensorFlow graph (a traced
  `tf.function`, before Grappler's rewrites): every op but views and
  bookkeeping (`_GRAPH_NO_DATA`) reads each input and writes each output
  once. Only tensors of static shape and at least `GRID_FRACTION` grids
  count.

  Args:
    graph: a `tf.Graph` (`concrete_function.graph`).
    grid_bytes: bytes of one float32 `[B, R, R, R]` grid.
    exclude: optional regular expression; ops whose name matches it are
      left out (e.g. "image_encoder": its 2D tensors do not grow with R but
      are as large as a grid at small R).
    weight_shapes: shapes (tuples) of the trainable variables: tensors of
      these shapes (weights, their gradients, optimizer slots) are not
      counted; they grow with the channels, not with the voxels (the
      energy's coarse levels have R depth bins as channels).

  Returns:
    dict, in float32 grids: `reads`, `writes`, `accesses`, and `ops` (per
    counting op: name, type, reads, writes), `calls` (the subset of `ops`
    that call functions, e.g. XLA kernels: their own temporaries are not in
    these figures).
  """
  def grids(tensor):
    dims = tensor.shape.as_list() if tensor.shape.rank is not None else None
    if dims is None or any(d is None for d in dims) or tuple(
        dims) in weight_shapes:
      return 0.0
    count = 1
    for d in dims:
      count *= d
    value = count * tensor.dtype.size / grid_bytes
    return value if value >= GRID_FRACTION else 0.0

  result = {"reads": 0.0, "writes": 0.0, "ops": [], "calls": []}
  for op in graph.get_operations():
    if op.type in _GRAPH_NO_DATA or (exclude and re.search(exclude, op.name)):
      continue
    reads = sum(grids(ref.deref()) for ref in dict.fromkeys(
        t.ref() for t in op.inputs))
    writes = sum(grids(t) for t in op.outputs)
    if not (reads or writes):
      continue
    row = {"name": op.name, "type": op.type, "reads": reads, "writes": writes}
    result["ops"].append(row)
    if "PartitionedCall" in op.type:
      result["calls"].append(row)
    result["reads"] += reads
    result["writes"] += writes
  result["accesses"] = result["reads"] + result["writes"]
  return result


def run_traffic(resolution, batch_size, num_steps, calls):
  """Grid-sized reads and writes per voxel of one training step, per part.

  IGE-MN: every call of one fused unroll (`_record_unroll_calls`), counted
  on its kernel's optimized HLO (`hlo_grid_traffic`; the CNNs' calls on
  their graphs, `graph_grid_traffic`), and the rest of IGE's training step
  (decoders, loss, Adam: `graph_grid_traffic` of the traced step without
  its function calls and without the image encoder, whose cost does not
  grow with R; tensors of a weight's shape not counted). The baseline: the
  ops of its traced training step but the encoder (what is grid-sized
  there: the last transposed convolutions, their batch norms, the loss,
  and their gradients). Meant for R >= 128, where the energy's level
  tensors are below `GRID_FRACTION` grids. Also times a streaming XLA
  kernel (`0.5 y + 1` on one grid: one read, one write) at R, B, which
  converts grid accesses into CPU time.

  Returns:
    dict: `ige_kernels` (per call: name, pass, traffic), `ige_kernels_total`
    (reads, writes, accesses summed over the XLA kernels' calls; the CNNs'
    ops are counted in `ige_rest`), `ige_rest`,
    `base_step` (graph traffic; `ops` listed), `stream_ns_per_access` (CPU
    ns per grid access per voxel of the streaming kernel, median of `calls`
    calls), `grid_mb`.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  grid_elements = batch_size * resolution ** 3
  grid_bytes = 4 * grid_elements
  recorded, _, inner, initial = _record_unroll_calls(resolution, batch_size,
                                                     num_steps)
  energy_weights = {tuple(v.shape) for v in inner.trainable_variables}
  kernel_rows = []
  for call in recorded:
    fn = call["fn"]
    if hasattr(fn, "experimental_get_compiler_ir") and getattr(
        fn, "_jit_compile", False):
      hlo = fn.experimental_get_compiler_ir(*call["args"])(
          stage="optimized_hlo")
      traffic = hlo_grid_traffic(hlo, grid_bytes)
      source = "optimized HLO"
    else:
      graph = tf.function(fn, autograph=False).get_concrete_function(
          *call["args"]).graph
      traffic = graph_grid_traffic(graph, grid_bytes,
                                   weight_shapes=energy_weights)
      source = "graph"
    kernel_rows.append({"name": call["name"], "pass": call["pass"],
                        "source": source, "traffic": traffic})
  recorded.clear()
  # The CNNs' ops are also ops of the traced step (`ige_rest`): only the
  # XLA kernels are summed here.
  total = {key: sum(r["traffic"][key] for r in kernel_rows
                    if r["source"] == "optimized HLO")
           for key in ("reads", "writes", "accesses")}

  steps = {}
  for model_name in ("ige_fold", "base"):
    train_step, images, labels, model = _train_step(model_name, resolution,
                                                    batch_size, num_steps)
    graph = train_step.get_concrete_function(images, labels).graph
    steps[model_name] = graph_grid_traffic(
        graph, grid_bytes, exclude="image_encoder",
        weight_shapes={tuple(v.shape) for v in model.trainable_variables})
  rest = steps["ige_fold"]
  call_totals = {key: sum(r[key] for r in rest["calls"])
                 for key in ("reads", "writes")}
  ige_rest = {"reads": rest["reads"] - call_totals["reads"],
              "writes": rest["writes"] - call_totals["writes"],
              "ops": [r for r in rest["ops"] if r not in rest["calls"]],
              "calls": rest["calls"]}
  ige_rest["accesses"] = ige_rest["reads"] + ige_rest["writes"]

  stream = tf.function(lambda y: 0.5 * y + 1.0, jit_compile=True,
                       autograph=False)
  stream(initial).numpy()
  cpu_ms = []
  for _ in range(calls):
    cpu_start = _cpu_seconds()
    stream(initial).numpy()
    cpu_ms.append(1e3 * (_cpu_seconds() - cpu_start))
  stream_ns = float(np.median(cpu_ms)) * 1e6 / (2 * grid_elements)
  return {"resolution": resolution, "batch_size": batch_size,
          "num_steps": num_steps, "grid_mb": grid_bytes / 2 ** 20,
          "grid_fraction": GRID_FRACTION, "ige_kernels": kernel_rows,
          "ige_kernels_total": total, "ige_rest": ige_rest,
          "base_step": steps["base"], "stream_cpu_ms": float(np.median(cpu_ms)),
          "stream_ns_per_access": stream_ns}


def _traffic_markdown(result):
  """The markdown tables of `run_traffic`."""
  ns = result["stream_ns_per_access"]
  lines = [
      f"Grid-sized reads and writes of one training step at R = "
      f"{result['resolution']}, B = {result['batch_size']}, T = "
      f"{result['num_steps']}, in float32 grids of {result['grid_mb']:.1f} "
      f"MB (arrays of at least {result['grid_fraction']:.4g} grid count; "
      "one read per operand and one write per output of every "
      "materialized instruction: a lower bound on the memory traffic). "
      "IGE-MN's fused-unroll kernels from their optimized HLO; the CNNs, "
      "the rest of IGE's step and the baseline's step from their traced "
      "TensorFlow graphs (before Grappler), without the image encoder and "
      "without tensors of a trainable variable's shape (weights, their "
      "gradients). One grid access is one float32 per voxel per example.",
      "",
      "| IGE-MN call | pass | from | parameters | outputs | temporaries "
      "| reads | writes | accesses |", "|---|---|---|---|---|---|---|---|---|"]
  for row in result["ige_kernels"]:
    t = row["traffic"]
    lines.append(
        f"| {row['name']} | {row['pass']} | {row['source']} | "
        f"{t.get('parameters', 0):.2f} | {t.get('outputs', 0):.2f} | "
        f"{t.get('temporaries', 0):.2f} | {t['reads']:.2f} | "
        f"{t['writes']:.2f} | {t['accesses']:.2f} |")
  total = result["ige_kernels_total"]
  rest, base = result["ige_rest"], result["base_step"]
  ige_all = total["accesses"] + rest["accesses"]
  lines += [
      f"| **fused unroll, XLA kernels (CNN rows: in the step's rest)** "
      f"| | | | | | **{total['reads']:.2f}** "
      f"| **{total['writes']:.2f}** | **{total['accesses']:.2f}** |", "",
      "Whole training step (grid accesses per voxel per example):", "",
      "| part | reads | writes | accesses | at the streaming kernel's "
      "CPU ns per access |", "|---|---|---|---|---|",
      f"| IGE-MN fused unroll's XLA kernels (above) | {total['reads']:.2f} | "
      f"{total['writes']:.2f} | {total['accesses']:.2f} | "
      f"{total['accesses'] * ns:.2f} |",
      f"| IGE-MN rest of the step (graph ops outside the XLA kernels: "
      f"3D decoder's upsampling, energy CNNs, ...) "
      f"| {rest['reads']:.2f} | {rest['writes']:.2f} | "
      f"{rest['accesses']:.2f} | {rest['accesses'] * ns:.2f} |",
      f"| **IGE-MN step** | | | **{ige_all:.2f}** | **{ige_all * ns:.2f}** |",
      f"| **baseline step** (graph ops) | {base['reads']:.2f} | "
      f"{base['writes']:.2f} | **{base['accesses']:.2f}** | "
      f"**{base['accesses'] * ns:.2f}** |", "",
      f"Streaming kernel (`0.5 y + 1`, XLA, one read and one write per "
      f"voxel): {result['stream_cpu_ms']:.1f} CPU ms, i.e. {ns:.3f} CPU ns "
      "per grid access per voxel (median).", "",
      "IGE-MN's step outside the unroll's kernels, grid-sized ops:", "",
      "| op | type | reads | writes |", "|---|---|---|---|"]
  for row in rest["ops"]:
    lines.append(f"| {row['name']} | {row['type']} | {row['reads']:.2f} | "
                 f"{row['writes']:.2f} |")
  lines += ["", "Baseline step, grid-sized ops:", "",
            "| op | type | reads | writes |", "|---|---|---|---|"]
  for row in base["ops"]:
    lines.append(f"| {row['name']} | {row['type']} | {row['reads']:.2f} | "
                 f"{row['writes']:.2f} |")
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
  batches = sorted(int(b) for b in FLAGS.profile_batch_sizes)
  if len(batches) != 2:
    raise ValueError("--profile_batch_sizes takes two batch sizes, got "
                     f"{FLAGS.profile_batch_sizes}")
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
# Called in both passes (the parts of U G_t in the forward pass, kept for
# the backward's recomputation; those of U d p_t in the backward pass).
_FUSED_PARTS = ("_unpool_parts",)


def _phase_of(op):
  """The phase of the step an op's allocation belongs to, or None (an op
  without a model scope: a custom gradient's body, the loss's plain ops).

  The continuous-IoU loss's kernels (named by `_called_functions`) are the
  phase "loss" (forward; backward for their gradients), wherever they run;
  the fused unroll's kernels are its forward or backward by name, and
  `unpool_parts` (called in both passes) "inner loop (fused unroll), parts
  of U G".

  Forward: the model's parts called by the model, and within the inner
  loop's forward also the energy gradient of each inner step
  (`gradient_tape/inner_optimizer.../`). Backward: the outer gradient
  (`gradient_tape/...` otherwise) and the inner steps recomputed by the
  unroll's custom gradient (`inner_cnn_<k>/...` at the top level)."""
  if "= _sigmoid_sums_" in op:  # The IoU loss's kernels (`losses.py`).
    return "loss, " + ("backward" if "_grad" in op else "forward")
  for kernels, direction in ((_FUSED_FORWARD, "forward"),
                             (_FUSED_BACKWARD, "backward"),
                             (_FUSED_PARTS, "parts of U G")):
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
  elif FLAGS.mode == "traffic":
    result = run_traffic(FLAGS.resolution, FLAGS.batch_size, FLAGS.num_steps,
                         FLAGS.kernel_calls)
    _write(f"voxel_traffic_{FLAGS.resolution}", result,
           _traffic_markdown(result))
  elif FLAGS.mode == "fit":
    run_fit()
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
