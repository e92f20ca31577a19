"""Grid passes in cache-sized slabs: does tiling make XLA-CPU's grid kernels
cheaper per voxel?

The fused unroll's grid kernels (`ige_tf/voxel/unroll.py`) make several
passes over each `[B, R, R, R]` grid per call, and at 128^3 and above a grid
no longer fits in the caches. This times one kernel shaped like
`adjoint_levels` (a sigmoid and its derivative, the broadcast of a
`[B, R, R, 4]` level gradient, a clipped descent step written back as a
grid, the finest level's depth pooling, a 2x2 row/column pooling and a
per-example clipped sum; several readers of the same temporaries), in two
forms inside `tf.function(jit_compile=True)`:

- `full`: the whole grid at once (how the library's kernels run);
- `tiled`: an XLA while loop over slabs of `--tiles` rows
  (`[B, rows, R, R]`, dynamic slices in and dynamic-update-slices out), so
  every pass of one slab works on a cache-sized block.

Each form is checked against the other (largest absolute difference) and
timed: process CPU ms (user + system, all threads) and wall ms per call,
median of `--repeats` calls after one warm-up. The tiled loop is a CPU-only
device strategy (on a GPU its iterations would run one after the other), so
it is measured here to know what the CPU leaves on the table, not as a
candidate for the library. Writes <output_dir>/grid_tiling.{json,md}.

  python bench/bench_grid_tiling.py
  python bench/bench_grid_tiling.py --shapes=256x2 --tiles=2,8
"""
import json
import os
import resource
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position
# XLA's dynamic slices, for the slab loop (compiled code only).
from tensorflow.compiler.tf2xla.python import xla  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ige_tf import atomic  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def _define_flags():
  """The command line's flags (defined only when run as a program: the
  tests load this module beside other benches that have flags of the same
  names)."""
  flags.DEFINE_list("shapes", ["128x4", "256x2"], "Grids as RxB.")
  flags.DEFINE_list("tiles", ["2", "8", "32"],
                    "Rows per slab of the tiled form.")
  flags.DEFINE_integer("repeats", 9, "Timed calls per cell (median).")
  flags.DEFINE_string("output_dir", os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results"),
                      "Output folder.")


def kernel_body(y, a, g4):
  """The timed kernel on a slab.

  Args:
    y, a: float32 `[B, h, R, R]` (iterate, adjoint), h even.
    g4: float32 `[B, h, R, 4]`, a level gradient over 4 depth bins.

  Returns:
    (y_new `[B, h, R, R]`, finest pooling `[B, h, R, 4]`, 2x2 pooling
    `[B, h/2, R/2, R]`, clipped sum `[B]`).
  """
  b, h, r = y.shape[0], y.shape[1], y.shape[2]
  s = tf.sigmoid(y)
  ds = s * (1.0 - s)
  up = tf.reshape(tf.broadcast_to(g4[..., None], [b, h, r, 4, r // 4]),
                  [b, h, r, r])
  y_new = y - 0.1 * tf.clip_by_value(ds * up, -1.0, 1.0)
  fine = tf.reduce_sum(tf.reshape(s * a, [b, h, r, 4, r // 4]), -1)
  coarse = tf.reduce_sum(tf.reshape(ds * a, [b, h // 2, 2, r // 2, 2, r]),
                         [2, 4])
  clipped = tf.reduce_sum(
      a * tf.sign(up) * tf.cast(tf.abs(ds * up) > 1.0, y.dtype), [1, 2, 3])
  return y_new, fine, coarse, clipped


def tiled_kernel(rows):
  """`kernel_body` over slabs of `rows` rows in an XLA while loop."""
  def fn(y, a, g4):
    b, r = y.shape[0], y.shape[1]
    zero = tf.zeros([], tf.int32)

    def step(i, y_new, fine, coarse, clipped):
      r0 = i * rows
      outs = kernel_body(
          xla.dynamic_slice(y, [zero, r0, zero, zero], [b, rows, r, r]),
          xla.dynamic_slice(a, [zero, r0, zero, zero], [b, rows, r, r]),
          xla.dynamic_slice(g4, [zero, r0, zero, zero], [b, rows, r, 4]))
      return (i + 1,
              xla.dynamic_update_slice(y_new, outs[0], [zero, r0, zero, zero]),
              xla.dynamic_update_slice(fine, outs[1], [zero, r0, zero, zero]),
              xla.dynamic_update_slice(coarse, outs[2],
                                       [zero, r0 // 2, zero, zero]),
              clipped + outs[3])

    init = (tf.constant(0), tf.zeros_like(y), tf.zeros([b, r, r, 4]),
            tf.zeros([b, r // 2, r // 2, r]), tf.zeros([b]))
    return tf.while_loop(lambda i, *_: i < r // rows, step, init)[1:]
  return fn


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_calls(fn, args, repeats):
  """(median CPU ms, median wall ms, outputs as numpy)."""
  outs = [t.numpy() for t in fn(*args)]
  cpu, wall = [], []
  for _ in range(repeats):
    c0, w0 = _cpu_seconds(), time.perf_counter()
    for t in fn(*args):
      t.numpy()
    cpu.append(_cpu_seconds() - c0)
    wall.append(time.perf_counter() - w0)
  return float(np.median(cpu)) * 1e3, float(np.median(wall)) * 1e3, outs


def run(shapes, tiles, repeats):
  """Times `full` and `tiled` for every `(R, B)` in `shapes` and rows per
  slab in `tiles`; one dict per (shape, tile), as in the JSON."""
  rows_out = []
  for r, b in shapes:
    for tile in tiles:
      if r % tile or tile % 2:
        raise ValueError(f"--tiles: {tile} rows must be even and divide R={r}")
    rng = np.random.default_rng(0)
    args = [tf.constant(rng.normal(size=(b, r, r, r)), tf.float32),
            tf.constant(rng.normal(size=(b, r, r, r)), tf.float32),
            tf.constant(rng.normal(size=(b, r, r, 4)), tf.float32)]
    full_cpu, full_wall, reference = time_calls(
        tf.function(kernel_body, jit_compile=True), args, repeats)
    for tile in tiles:
      cpu, wall, outs = time_calls(
          tf.function(tiled_kernel(tile), jit_compile=True), args, repeats)
      diff = max(float(np.max(np.abs(o - e))) for o, e in zip(outs, reference))
      rows_out.append({
          "R": r, "B": b, "rows_per_slab": tile,
          "slab_mb_per_grid": b * tile * r * r * 4 / 2**20,
          "full_cpu_ms": full_cpu, "full_wall_ms": full_wall,
          "tiled_cpu_ms": cpu, "tiled_wall_ms": wall,
          "cpu_tiled_over_full": cpu / full_cpu,
          "wall_tiled_over_full": wall / full_wall,
          "max_abs_difference": diff})
      print(json.dumps(rows_out[-1]))
  return rows_out


def markdown(rows):
  """The results as a markdown table (str)."""
  lines = ["| R | B | rows per slab | slab MB per grid | full CPU ms | tiled "
           "CPU ms | CPU tiled / full | full wall ms | tiled wall ms | wall "
           "tiled / full | max abs difference |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    lines.append(
        "| {R} | {B} | {rows_per_slab} | {slab_mb_per_grid:.2f} | "
        "{full_cpu_ms:.1f} | {tiled_cpu_ms:.1f} | {cpu_tiled_over_full:.2f} "
        "| {full_wall_ms:.1f} | {tiled_wall_ms:.1f} | "
        "{wall_tiled_over_full:.2f} | {max_abs_difference:.1e} |".format(**row))
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  shapes = [tuple(int(v) for v in shape.split("x")) for shape in FLAGS.shapes]
  rows = run(shapes, [int(t) for t in FLAGS.tiles], FLAGS.repeats)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  atomic.write_json(os.path.join(FLAGS.output_dir, "grid_tiling.json"), rows,
                    indent=2)
  atomic.write_text(os.path.join(FLAGS.output_dir, "grid_tiling.md"),
                    markdown(rows))
  print(markdown(rows))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
