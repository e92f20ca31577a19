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
"""
import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "scaling",
                  ["scaling", "merge", "params", "macs", "inner", "profile",
                   "worker", "inner_worker", "profile_worker"],
                  "scaling: the time/memory sweep; params: Table 2 counts; "
                  "merge: one table and plot from --inputs; "
                  "macs: multiply-adds per R; "
                  "inner: the inner loop alone; profile: one step's parts; "
                  "worker, inner_worker: one configuration (internal).")
flags.DEFINE_list("inputs", [],
                  "--mode=merge: voxel_scaling.json files of earlier runs.")
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
flags.DEFINE_enum("model", "ige", MODELS, "Worker: the model.")
flags.DEFINE_integer("resolution", 32, "Worker (and --mode=inner): R.")
flags.DEFINE_integer("batch_size", 2, "Worker (and --mode=inner): B.")
flags.DEFINE_bool("recompute", False, "Inner worker: recompute_steps.")
flags.DEFINE_bool("fold", False, "Inner worker: the loss folded into the "
                  "recomputed unroll (`UnrolledSGD(step_loss=...)`).")
flags.DEFINE_bool("fused", False, "Inner worker: the fused unroll "
                  "(`ige_tf.voxel.unroll.fused_unroll`, loss folded in).")
flags.DEFINE_bool("store_iterates", False, "Inner worker with --fused: keep "
                  "the iterates instead of recomputing them from y_0.")
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


def run_worker(model_name, resolution, batch_size, num_steps, timed_steps,
               jit_compile=False):
  """One configuration in this process; returns a dict of measurements."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
  by_resolution, runs = {}, []
  for path in FLAGS.inputs:
    with open(path) as f:
      payload = json.load(f)
    runs.extend(payload["runs"])
    for row in payload["summary"]:
      by_resolution[row["resolution"]] = row
  summary = [by_resolution[r] for r in sorted(by_resolution)]
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
           "ige_fold": "IGE-MN (recomputed, loss folded in)",
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


def run_inner_worker(resolution, batch_size, num_steps, recompute,
                     jit_compile, timed_steps, fold=False, fused=False,
                     store_iterates=False):
  """The inner loop alone in this process; returns a dict of measurements."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from ige_tf.core import MultiStepLoss, UnrolledSGD, step_weights  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel import decoders, losses, unroll  # pylint: disable=g-import-not-at-top
  from ige_tf.voxel.energy import FrustumEnergy  # pylint: disable=g-import-not-at-top

  sizes = decoders.level_sizes(4, resolution)
  channels = decoders.level_channels(128, len(sizes), 4)  # IGE-MN's
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
  loss = MultiStepLoss(losses.ContinuousIoU())
  inner(initial, context)

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

  def initial_part():
    with tf.GradientTape() as tape:
      value = tf.reduce_mean(iou(labels, generator(by_size[4],
                                                   training=True)))
    return tape.gradient(value, generator.trainable_variables)

  def upsampling_part():
    with tf.GradientTape() as tape:
      tape.watch(coarse)
      value = tf.reduce_mean(iou(labels, decoders.upsample_trilinear(
          coarse, resolution // 32)))
    return tape.gradient(value, coarse)

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
      "initial estimate (3D decoder to 32^3 + trilinear to R), fwd + bwd":
          initial_part,
      "trilinear upsampling 32^3 -> R alone, fwd + bwd": upsampling_part,
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


def run_profile_worker(resolution, batch_size, num_steps, timed_steps):
  """Every part of `_profile_parts` in this process: peak MB and seconds."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  results = {}
  for name, part in _profile_parts(resolution, batch_size,
                                   num_steps).items():
    compiled = tf.function(part)
    tf.nest.map_structure(lambda t: t.numpy(), compiled())
    times, cpu_times, peak_mb = _timed_peak(
        lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled()),  # pylint: disable=cell-var-from-loop
        timed_steps)
    results[name] = {"peak_mb": peak_mb,
                     "step_seconds": float(np.median(times)),
                     "step_cpu_seconds": float(np.median(cpu_times))}
  return {"resolution": resolution, "batch_size": batch_size,
          "num_steps": num_steps, "parts": results}


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
               f"--timed_steps={FLAGS.timed_steps}"]
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
  _write(f"voxel_profile_{resolution}", {"runs": runs, "summary": summary},
         "\n".join(lines))


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
        FLAGS.timed_steps)))
  elif FLAGS.mode == "profile":
    run_profile()
  elif FLAGS.mode == "inner":
    run_inner()
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
