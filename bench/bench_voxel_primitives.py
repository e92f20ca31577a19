"""The full-grid primitives of the voxel energy on XLA: formulations compared.

IGE-MN's fused unroll (`ige_tf.voxel.unroll`) spends most of its CPU time in
XLA kernels over the `[B, R, R, R]` grid. This benchmark times, each alone
inside `tf.function(jit_compile=True)`, the primitives those kernels are made
of, in several formulations, at IGE-MN's level configuration
(`ige_voxel_model("mn", R)`: level sizes 4, 8, .., R, depth bins R f_i / f_0
with f_i = 128, 64, .. halving, so depth bins R, R/2, .., 4):

- `pool`: the average pooling to every level (`pool_frustum_levels`) of
  `sigmoid(y)` (how every kernel calls it: the pooled grid is an
  elementwise function of its input);
- `unpool`: its transpose, the broadcast sum `sum_i P_i^T a_i`
  (`unpool_frustum_levels`), times `sigmoid'(y)` (as in the kernels);
- `sums1`, `sums2`, `sums3`: per-example sums `[B]` of 1, 2 or 3
  elementwise terms (`p y`, `p`, `y^2` with `p = sigmoid(y)`; the IoU loss
  and the gradient norm).
- `total`: the sum over the whole batch of one term (`p y`), as
  `tf.reduce_sum` and as the sum of `sum_per_example`;
- `stream`: reference passes, `2 y + 1` (read one grid, write one) and
  `sum(y)` (read one), to tell the memory system's cost per voxel at
  each R from the primitives'.

For each (primitive, formulation, R): the process CPU ms per call (user +
system, all threads, `resource.getrusage`; median of `--repeats` calls after
a warm-up; the JSON also has user and system ms and minor page faults), the wall ms, the compile time (first call, wall), the XLA
temporaries (the TensorFlow CPU allocator's peak during one call above what
was allocated before it, minus the outputs), and from the optimized HLO the
number of fusions and of grid-sized (>= 1/4 grid) buffers the entry
computation materializes besides its parameters and outputs. Before
timing, every formulation is checked against the library's in float64 at
R = 32 (values, and the gradient with respect to `y` of a fixed random
projection of the outputs, each to 1e-12 relative): a formulation that
disagrees stops the run.

Usage (writes bench/results/voxel_primitives.{json,md}):
  python bench/bench_voxel_primitives.py
  python bench/bench_voxel_primitives.py --resolutions=128 --primitives=pool
"""
import functools
import json
import os
import re
import resource
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from ige_tf.voxel import energy as energy_lib  # pylint: disable=wrong-import-position
from ige_tf.voxel import losses  # pylint: disable=wrong-import-position
from ige_tf.voxel import models  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("resolutions", ["64", "128", "256"], "Resolutions R.")
flags.DEFINE_list("primitives", ["stream", "pool", "unpool", "sums1",
                                 "sums2", "sums3", "total"],
                  "Primitives to time.")
flags.DEFINE_list("formulations", [], "Only these formulations (all if "
                  "empty).")
flags.DEFINE_integer("repeats", 7, "Timed calls per cell (median).")
flags.DEFINE_string("output_dir", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results"),
                    "Where voxel_primitives.{json,md} go.")
flags.DEFINE_string("output_name", "voxel_primitives", "Output file stem.")

BATCH = {32: 2, 64: 4, 128: 4, 256: 2}


@functools.lru_cache(maxsize=None)
def level_configuration(resolution):
  """IGE-MN's `(level_sizes, depth_bins)` at R, read from the energy
  `ige_voxel_model("mn", R)` builds (`models.ige_energy`)."""
  energy = models.ige_energy("mn", resolution)
  return energy.level_sizes, energy.depth_bins


# -- formulations of the row/column and depth poolings ----------------------
def _pool_rows_cols_reshape(x, factor):
  """The pre-session-6 form: one reshape + mean per axis (rank <= 5)."""
  _, size, _, depth = x.shape
  return energy_lib.pool_frustum(x, size // factor, size // factor, depth)


def _pool_rows_cols_reshape6(x, factor):
  """Both axes in one mean over a rank-6 view."""
  _, size, _, depth = x.shape
  h = size // factor
  return tf.reduce_mean(tf.reshape(x, [-1, h, factor, h, factor, depth]),
                        axis=(2, 4))


def _pool_rows_cols_slices(x, factor):
  """The mean of the factor^2 strided slices (an elementwise loop)."""
  parts = [x[:, i::factor, j::factor, :] for i in range(factor)
           for j in range(factor)]
  return tf.add_n(parts) / float(factor * factor)


def _pool_rows_cols_avg_pool(x, factor):
  """`tf.nn.avg_pool2d` with the depth bins as channels."""
  return tf.nn.avg_pool2d(x, factor, factor, "VALID")


def _averaging_matrix(full, pooled, dtype):
  """float `[full, pooled]`: column j averages block j of `full / pooled`."""
  factor = full // pooled
  return tf.constant(np.kron(np.eye(pooled), np.ones((factor, 1))) / factor,
                     dtype)


def _pool_rows_cols_matmul(x, factor):
  """Rows then columns, each a product with an averaging matrix."""
  _, size, _, depth = x.shape
  h = size // factor
  matrix = _averaging_matrix(size, h, x.dtype)
  rows = tf.einsum("rh,brx->bhx", matrix, tf.reshape(x, [-1, size,
                                                           size * depth]))
  cols = tf.einsum("ch,ncd->nhd", matrix, tf.reshape(rows, [-1, size, depth]))
  return tf.reshape(cols, [-1, h, h, depth])


def _pool_depth_reshape(x, bins):
  _, h, w, depth = x.shape
  if bins == depth:
    return x
  return tf.reduce_mean(tf.reshape(x, [-1, h, w, bins, depth // bins]),
                        axis=4)


def _pool_depth_matmul(x, bins):
  _, h, w, depth = x.shape
  if bins == depth:
    return x
  return tf.reshape(tf.reshape(x, [-1, depth])
                    @ _averaging_matrix(depth, bins, x.dtype),
                    [-1, h, w, bins])


def _pyramid(grid, level_sizes, depth_bins, rows_cols, depth_pool):
  """`pool_frustum_levels` with the given row/column and depth poolings."""
  resolution = grid.shape[1]
  pooled = [None] * len(level_sizes)
  for chain in energy_lib._pyramid_chains(level_sizes, resolution):  # pylint: disable=protected-access
    current, size = grid, resolution
    for index in chain:
      h = level_sizes[index]
      if h != size:
        current, size = rows_cols(current, size // h), h
      pooled[index] = depth_pool(current, depth_bins[index])
  return pooled


ROWS_COLS = {"reshape": _pool_rows_cols_reshape,
             "reshape6": _pool_rows_cols_reshape6,
             "slices": _pool_rows_cols_slices,
             "avg_pool": _pool_rows_cols_avg_pool,
             "matmul": _pool_rows_cols_matmul}
DEPTH = {"reshape": _pool_depth_reshape, "matmul": _pool_depth_matmul}


def pool_formulations():
  """name -> `fn(grid, level_sizes, depth_bins) -> levels`."""
  forms = {"library": energy_lib.pool_frustum_levels}
  for rc_name, rc in ROWS_COLS.items():
    for d_name, dp in DEPTH.items():
      forms[f"rc={rc_name},d={d_name}"] = (
          lambda g, s, b, rc=rc, dp=dp: _pyramid(g, s, b, rc, dp))
  return forms


# -- formulations of the unpooling (transposes) -----------------------------
def _unpool_depth_broadcast(a, depth):
  _, h, _, bins = a.shape
  if bins == depth:
    return a
  factor = depth // bins
  a = tf.reshape(a / float(factor), [-1, h, h, bins, 1])
  return tf.reshape(tf.broadcast_to(a, tf.stack(
      [tf.shape(a)[0], h, h, bins, factor])), [-1, h, h, depth])


def _unpool_depth_matmul(a, depth):
  _, h, _, bins = a.shape
  if bins == depth:
    return a
  matrix = _averaging_matrix(depth, bins, a.dtype)
  return tf.reshape(tf.reshape(a, [-1, bins]) @ tf.transpose(matrix),
                    [-1, h, h, depth])


def _unpool_rows_cols_broadcast(coarse, factor, finer):
  return energy_lib._upsample_rows_cols(coarse, factor, finer)  # pylint: disable=protected-access


def _unpool_rows_cols_matmul(coarse, factor, finer):
  _, h, _, depth = coarse.shape
  size = h * factor
  matrix = _averaging_matrix(size, h, coarse.dtype)
  cols = tf.einsum("ch,nhd->ncd", matrix,
                   tf.reshape(coarse, [-1, h, depth]))
  rows = tf.einsum("rh,bhx->brx", matrix,
                   tf.reshape(cols, [-1, h, size * depth]))
  fine = tf.reshape(rows, [-1, size, size, depth])
  return fine if finer is None else finer + fine


def _unpyramid(level_grads, level_sizes, depth_bins, size, depth, rows_cols,
               depth_unpool):
  total = None
  for chain in energy_lib._pyramid_chains(level_sizes, size):  # pylint: disable=protected-access
    accumulated, accumulated_size = None, None
    for index in reversed(chain):
      h = level_sizes[index]
      term = depth_unpool(level_grads[index], depth)
      if accumulated is not None:
        term = rows_cols(accumulated, h // accumulated_size, term)
      accumulated, accumulated_size = term, h
    if accumulated_size != size:
      accumulated = rows_cols(accumulated, size // accumulated_size, None)
    total = accumulated if total is None else total + accumulated
  return total


def unpool_formulations():
  """name -> `fn(level_grads, level_sizes, depth_bins, R, D) -> grid`."""
  forms = {"library": energy_lib.unpool_frustum_levels}
  for rc_name, rc in (("broadcast", _unpool_rows_cols_broadcast),
                      ("matmul", _unpool_rows_cols_matmul)):
    for d_name, du in (("broadcast", _unpool_depth_broadcast),
                       ("matmul", _unpool_depth_matmul)):
      forms[f"rc={rc_name},d={d_name}"] = (
          lambda a, s, b, r, d, rc=rc, du=du: _unpyramid(a, s, b, r, d, rc,
                                                          du))
  return forms


# -- formulations of the per-example sums -----------------------------------
def _terms(y, labels, count):
  p = tf.sigmoid(y)
  return [p * labels, p, y * y][:count]


def _sum_axes(t):
  return tf.reduce_sum(t, axis=list(range(1, len(t.shape))))


def _sum_flat(t):
  return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


def _sum_two_stage(t):
  rows = tf.reduce_sum(tf.reshape(t, [-1, t.shape[-1]]), axis=1)
  return tf.reduce_sum(tf.reshape(rows, [tf.shape(t)[0], -1]), axis=1)


def _sum_matvec(t):
  minor = t.shape[-1]
  rows = tf.reshape(t, [-1, minor]) @ tf.ones([minor, 1], t.dtype)
  return tf.reduce_sum(tf.reshape(rows, [tf.shape(t)[0], -1]), axis=1)


def _sums_matvec_stacked(terms):
  """All terms in one product: `[N', K m] @ blockdiag(ones [m, 1])`."""
  minor, count = terms[0].shape[-1], len(terms)
  rows = tf.concat([tf.reshape(t, [-1, minor]) for t in terms], axis=1)
  ones = tf.constant(np.kron(np.eye(count), np.ones((minor, 1))),
                     terms[0].dtype)
  sums = tf.reduce_sum(tf.reshape(rows @ ones,
                                  [tf.shape(terms[0])[0], -1, count]), axis=1)
  return tf.unstack(sums, num=count, axis=1)


def sums_formulations():
  """name -> `fn(terms) -> list of [B]`."""
  forms = {"library": lambda terms: [losses.sum_per_example(t)
                                     for t in terms]}
  for name, fn in (("axes", _sum_axes), ("flat", _sum_flat),
                   ("two_stage", _sum_two_stage), ("matvec", _sum_matvec)):
    forms[name] = lambda terms, fn=fn: [fn(t) for t in terms]
  forms["matvec_stacked"] = _sums_matvec_stacked
  forms["stacked"] = lambda terms: tf.unstack(tf.reduce_sum(tf.reshape(
      tf.stack(terms, axis=1), [tf.shape(terms[0])[0], len(terms), -1]),
                                                            axis=2), axis=1)
  forms["stacked_two_stage"] = lambda terms: tf.unstack(
      tf.reduce_sum(tf.reshape(tf.reduce_sum(tf.stack(terms, axis=-1),
                                             axis=-2),
                               [tf.shape(terms[0])[0], -1, len(terms)]),
                    axis=1), axis=1)
  return forms


# -- the kernels timed ------------------------------------------------------
def make_kernel(primitive, form, level_sizes, depth_bins):
  """`(fn(y, labels, level_grads), is_grid_output)` for one cell."""
  if primitive == "pool":
    def fn(y, labels, level_grads):
      del labels, level_grads
      return form(tf.sigmoid(y), level_sizes, depth_bins)
  elif primitive == "unpool":
    def fn(y, labels, level_grads):
      del labels
      s = tf.sigmoid(y)
      return s * (1.0 - s) * form(list(level_grads), level_sizes,
                                  depth_bins, y.shape[1], y.shape[3])
  elif primitive == "total":
    def fn(y, labels, level_grads):
      del level_grads
      return form(_terms(y, labels, 1)[0])
  elif primitive.startswith("sums"):
    count = int(primitive[4:])

    def fn(y, labels, level_grads):
      del level_grads
      return form(_terms(y, labels, count))
  else:
    raise ValueError(f"unknown primitive {primitive!r}")
  return fn


STREAM = {"2y+1 (read, write)": lambda y: 2.0 * y + 1.0,
          "sum(y) (read)": tf.reduce_sum}


def formulations(primitive):
  if primitive == "pool":
    return pool_formulations()
  if primitive == "unpool":
    return unpool_formulations()
  if primitive.startswith("sums"):
    return sums_formulations()
  if primitive == "stream":
    return dict(STREAM)
  if primitive == "total":
    return {"library": lambda t: tf.reduce_sum(losses.sum_per_example(t)),
            "reduce_sum": tf.reduce_sum}
  raise ValueError(f"unknown primitive {primitive!r}")


def _inputs(resolution, batch, dtype, seed=0):
  rng = np.random.default_rng(seed)
  sizes, bins = level_configuration(resolution)
  y = tf.constant(rng.normal(size=(batch,) + (resolution,) * 3), dtype)
  labels = tf.constant((rng.random(y.shape) > 0.7), dtype)
  grads = [tf.constant(rng.normal(size=(batch, h, h, d)), dtype)
           for h, d in zip(sizes, bins)]
  # Copies in TensorFlow's allocator (aligned, as the kernels' inputs are),
  # not views of the numpy buffers.
  return tf.identity(y + 0), tf.identity(labels + 0), grads


def check_formulations(primitive, resolution=32):
  """Every formulation == the library's in float64 (values, and the
  gradient wrt `y` of a fixed projection of the outputs), or ValueError."""
  if primitive == "stream":
    return
  sizes, bins = level_configuration(resolution)
  y, labels, grads = _inputs(resolution, 2, tf.float64, seed=1)
  forms = formulations(primitive)

  def evaluate(form):
    fn = tf.function(make_kernel(primitive, form, sizes, bins),
                     jit_compile=True, autograph=False)
    with tf.GradientTape() as tape:
      tape.watch(y)
      out = fn(y, labels, grads)
      flat = tf.concat([tf.reshape(o, [-1]) for o in tf.nest.flatten(out)],
                       0)
      weights = tf.sin(tf.range(tf.size(flat), dtype=tf.float64))
      value = tf.reduce_sum(weights * flat)
    return flat.numpy(), tape.gradient(value, y).numpy()

  want, want_grad = evaluate(forms["library"])
  for name, form in forms.items():
    got, got_grad = evaluate(form)
    for what, a, b in (("values", got, want), ("gradient", got_grad,
                                                 want_grad)):
      error = np.max(np.abs(a - b) / (1.0 + np.abs(b)))
      if not error <= 1e-12:
        raise ValueError(f"{primitive} formulation {name!r}: {what} differ "
                         f"from the library's by {error:.3g} (float64)")


def _usage():
  """(user s, system s, minor page faults) of this process so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return np.array([usage.ru_utime, usage.ru_stime, usage.ru_minflt])


_SHAPE = re.compile(r"= (?:f32|f64|pred|s32)\[([0-9,]*)\]")


def hlo_summary(hlo, grid_elements):
  """From optimized HLO text: fusions in the entry computation, and the
  grid-sized (>= grid / 4 elements) buffers it materializes besides its
  parameters, outputs, bitcasts and tuples."""
  entry = hlo[hlo.index("ENTRY"):]
  entry = entry[:entry.index("\n}")]
  fusions, big = 0, 0
  for line in entry.splitlines()[1:]:
    if " fusion(" in line:
      fusions += 1
    if any(op in line for op in ("parameter(", "bitcast(", "tuple(",
                                 "get-tuple-element(")) or "ROOT" in line:
      continue
    match = _SHAPE.search(line)
    if match and match.group(1):
      elements = int(np.prod([int(v) for v in match.group(1).split(",")]))
      if elements * 4 >= grid_elements:
        big += 1
  return fusions, big


def time_cell(primitive, name, form, resolution, repeats):
  """One (primitive, formulation, R) cell: dict of measurements."""
  batch = BATCH[resolution]
  sizes, bins = level_configuration(resolution)
  y, labels, grads = _inputs(resolution, batch, tf.float32)
  if primitive == "stream":
    fn = tf.function(lambda y, labels, grads: form(y), jit_compile=True,
                     autograph=False)
  else:
    fn = tf.function(make_kernel(primitive, form, sizes, bins),
                     jit_compile=True, autograph=False)
  start = time.perf_counter()
  out = fn(y, labels, grads)
  tf.nest.map_structure(lambda t: t.numpy(), out)
  compile_seconds = time.perf_counter() - start
  hlo = fn.experimental_get_compiler_ir(y, labels, grads)(
      stage="optimized_hlo")
  fusions, big = hlo_summary(hlo, int(np.prod(y.shape)))
  output_bytes = sum(int(np.prod(t.shape)) * 4 for t in tf.nest.flatten(out))
  del out
  tf.config.experimental.reset_memory_stats("CPU:0")
  before = tf.config.experimental.get_memory_info("CPU:0")["current"]
  cpu, wall, usages = [], [], []
  for _ in range(repeats):
    start, usage_start = time.perf_counter(), _usage()
    out = fn(y, labels, grads)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    wall.append(time.perf_counter() - start)
    usages.append(_usage() - usage_start)
    cpu.append(usages[-1][0] + usages[-1][1])
    del out
  user, system, faults = np.median(np.array(usages), axis=0)
  peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  grid_mb = int(np.prod(y.shape)) * 4 / 2 ** 20
  return {"primitive": primitive, "formulation": name,
          "resolution": resolution, "batch_size": batch,
          "grid_mb": grid_mb,
          "cpu_ms": 1e3 * float(np.median(cpu)),
          "cpu_ms_range": [1e3 * min(cpu), 1e3 * max(cpu)],
          "wall_ms": 1e3 * float(np.median(wall)),
          "user_ms": 1e3 * float(user), "system_ms": 1e3 * float(system),
          "minor_page_faults": float(faults),
          "compile_s": compile_seconds,
          "temporaries_mb": max(0.0, (peak - before - output_bytes) / 2 ** 20),
          "hlo_fusions": fusions, "hlo_grid_buffers": big,
          "cpu_ns_per_voxel": 1e9 * float(np.median(cpu)) / (grid_mb * 2 ** 18)}


def _table(cells):
  resolutions = sorted({c["resolution"] for c in cells})
  lines = ["| primitive | formulation | " + " | ".join(
      f"R = {r} (B = {BATCH[r]}) CPU ms" for r in resolutions)
           + " | ns/voxel at each R | compile s | temporaries MB | "
           "fusions / grid buffers |",
           "|---|---|" + "---|" * len(resolutions) + "---|---|---|---|"]
  keys = []
  for c in cells:
    if (c["primitive"], c["formulation"]) not in keys:
      keys.append((c["primitive"], c["formulation"]))
  for primitive, name in keys:
    row = {c["resolution"]: c for c in cells
           if (c["primitive"], c["formulation"]) == (primitive, name)}
    times = " | ".join(f"{row[r]['cpu_ms']:.1f}" if r in row else "-"
                       for r in resolutions)
    per_voxel = " / ".join(f"{row[r]['cpu_ns_per_voxel']:.2f}"
                           for r in resolutions if r in row)
    compile_s = " / ".join(f"{row[r]['compile_s']:.2f}"
                           for r in resolutions if r in row)
    temps = " / ".join(f"{row[r]['temporaries_mb']:.0f}"
                       for r in resolutions if r in row)
    hlo = " / ".join(f"{row[r]['hlo_fusions']}/{row[r]['hlo_grid_buffers']}"
                     for r in resolutions if r in row)
    lines.append(f"| {primitive} | {name} | {times} | {per_voxel} | "
                 f"{compile_s} | {temps} | {hlo} |")
  return "\n".join(lines)


def main(argv):
  del argv
  tf.get_logger().setLevel("ERROR")  # One tf.function per cell, by design.
  resolutions = [int(r) for r in FLAGS.resolutions]
  for r in resolutions:
    if r not in BATCH:
      raise ValueError(f"--resolutions: {r} is not one of {sorted(BATCH)}")
  cells = []
  for primitive in FLAGS.primitives:
    check_formulations(primitive)
    forms = formulations(primitive)
    names = [n for n in forms if not FLAGS.formulations
             or n in FLAGS.formulations or n == "library"]
    for resolution in resolutions:
      for name in names:
        cell = time_cell(primitive, name, forms[name], resolution,
                         FLAGS.repeats)
        print(json.dumps(cell), flush=True)
        cells.append(cell)
  markdown = (
      "Full-grid primitives of the voxel energy, each alone in "
      "`tf.function(jit_compile=True)`, IGE-MN's levels; process CPU ms "
      f"per call, median of {FLAGS.repeats}; ns/voxel = CPU ns per voxel of "
      "the `[B, R, R, R]` grid; compile = first call, wall; temporaries = "
      "allocator peak of one call minus outputs; fusions / grid buffers = "
      "fusions in the optimized HLO's entry computation / grid-sized "
      "buffers it materializes.\n\n" + _table(cells))
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  for suffix, text in ((".json", json.dumps(
      {"command": " ".join(sys.argv), "cells": cells}, indent=2)),
                       (".md", markdown)):
    path = os.path.join(FLAGS.output_dir, FLAGS.output_name + suffix)
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)
    print("wrote", path)
  print(markdown)


if __name__ == "__main__":
  app.run(main)
