"""`bench/bench_voxel_scaling.py`'s scaling summary, the `F + G R^3` fit and
the grid-traffic counts: the numbers they print, on inputs whose answer is
known (the measuring runs themselves take minutes and are not run here)."""
import json

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver


@pytest.fixture(scope="module")
def bench(bench_voxel_scaling):
  """The bench module (tests/voxel/conftest.py loads it once)."""
  if not bench_voxel_scaling.FLAGS.is_parsed():
    bench_voxel_scaling.FLAGS.mark_as_parsed()
  return bench_voxel_scaling


def _runs(bench, peaks, seconds):
  """`_median_run` outputs: `peaks[(model, R)]` a function B -> list of the
  rounds' step peaks (MB); `seconds[(model, R)]` CPU s per step at any B."""
  runs = []
  for (model, resolution), peak_of in peaks.items():
    for batch_size in (1, 2, 3, 4):
      rounds = [{"model": model, "resolution": resolution,
                 "batch_size": batch_size,
                 "step_seconds": seconds[(model, resolution)] * batch_size,
                 "min_step_seconds": 0.0,
                 "step_cpu_seconds": seconds[(model, resolution)] * batch_size,
                 "tf_step_peak_mb": peak, "peak_rss_mb": 1000.0 + peak,
                 "first_step_seconds": 1.0}
                for peak in peak_of(batch_size)]
      runs.append(bench._median_run(rounds))  # pylint: disable=protected-access
  return runs


def test_fit_line_gives_the_least_squares_slope_and_its_spread(bench):
  fit = bench.fit_line([1, 2, 3, 4], [12.0, 22.0, 32.0, 42.0])
  assert fit["slope"] == pytest.approx(10.0)
  assert fit["intercept"] == pytest.approx(2.0)
  assert fit["slope_range"] == pytest.approx([10.0, 10.0])
  np.testing.assert_allclose(fit["residuals"], 0.0, atol=1e-9)
  # One odd peak (B = 1 high by 6 MB): the two-batch slope of B = 1, 2
  # would move by 60 %; the least-squares slope by 18 %, and the
  # leave-one-out range shows how far that one point moves it.
  odd = bench.fit_line([1, 2, 3, 4], [18.0, 22.0, 32.0, 42.0])
  assert odd["slope"] == pytest.approx(np.polyfit([1, 2, 3, 4],
                                                  [18, 22, 32, 42], 1)[0])
  assert odd["slope"] == pytest.approx(8.2)
  assert odd["slope_range"] == pytest.approx([7.0, 10.0])
  assert odd["left_out_slopes"][0] == pytest.approx(10.0)  # without B = 1
  assert sum(odd["residuals"]) == pytest.approx(0.0, abs=1e-9)
  assert bench.fit_line([1, 2], [1.0, 3.0])["slope_range"] is None
  with pytest.raises(ValueError, match="distinct x"):
    bench.fit_line([2, 2], [1.0, 3.0])


def test_summary_table_and_plot_report_the_slopes_and_ratios(bench, tmp_path):
  peaks = {("ige_fold", 128): lambda b: [100 + 60 * b, 102 + 60 * b],
           ("base", 128): lambda b: [50 + 50 * b, 52 + 50 * b],
           # The baseline has no B = 4 at 256: IGE's row has no ratios.
           ("ige_fold", 256): lambda b: [300 + 200 * b] * 2}
  runs = _runs(bench, peaks, {("ige_fold", 128): 0.2, ("base", 128): 0.1,
                              ("ige_fold", 256): 0.5})
  runs += _runs(bench, {("base", 256): lambda b: [10 + 150 * b] * 2},
                {("base", 256): 0.25})[:3]
  summary = bench.summarize_scaling(runs, ["ige_fold", "base"])
  assert [row["resolution"] for row in summary] == [128, 256]
  ige, base = summary[0]["ige_fold"], summary[0]["base"]
  assert summary[0]["batch_sizes"] == [1, 2, 3, 4]
  assert ige["mb_per_example"] == pytest.approx(60.0)
  assert ige["mb_intercept"] == pytest.approx(101.0)
  assert ige["mb_per_example_by_round"] == pytest.approx([60.0, 60.0])
  assert ige["peaks_mb_by_batch"]["2"] == [220, 222]
  assert base["mb_per_example"] == pytest.approx(50.0)
  assert ige["memory_over_base"] == pytest.approx(1.2)
  assert ige["memory_over_base_range"] == pytest.approx([1.2, 1.2])
  assert ige["memory_over_base_by_round"] == pytest.approx([1.2, 1.2])
  # Time at the largest batch (4), the summary's CPU times by batch.
  assert ige["cpu_time_over_base"] == pytest.approx(2.0)
  assert ige["cpu_seconds_by_batch"]["2"] == pytest.approx(0.4)
  assert "base" not in summary[1] and "memory_over_base" not in summary[1][
      "ige_fold"]
  with flagsaver.flagsaver(output_dir=str(tmp_path),
                           models=["ige_fold", "base"], num_steps=3):
    bench._write_scaling(runs, summary)  # pylint: disable=protected-access
  written = json.loads((tmp_path / "voxel_scaling.json").read_text())
  for key in ("mb_per_example", "memory_over_base", "time_over_base"):
    assert key in written["summary"][0]["ige_fold"]
  markdown = (tmp_path / "voxel_scaling.md").read_text()
  assert "| 128 | 1/2/3/4 | 2 | ige_fold |" in markdown
  assert "| 60 | 60-60 | 60, 60 | 101 | 0.0 | 1.20 | 1.20-1.20 | 1.20, 1.20 |" in markdown
  assert "| 128 | ige_fold | 1: 160, 162; 2: 220, 222;" in markdown
  assert (tmp_path / "voxel_scaling.png").stat().st_size > 10_000
  # --mode=merge recomputes the summary from the runs of the input.
  with flagsaver.flagsaver(output_dir=str(tmp_path / "merged"),
                           inputs=[str(tmp_path / "voxel_scaling.json")],
                           models=["ige_fold", "base"], num_steps=3):
    bench.run_merge()
  merged = json.loads((tmp_path / "merged" / "voxel_scaling.json")
                      .read_text())
  assert merged["summary"] == json.loads(json.dumps(summary))


def test_fit_recovers_fixed_and_per_voxel_costs(bench):
  # CPU s per step at B = 2: F + G * B * R^3 with G in s per voxel per
  # example; memory per example F_m + G_m R^3 (MB).
  truth = {"ige_fold": (0.5, 3e-9, 20.0, 12.0), "base": (0.2, 1e-9, 15.0,
                                                        8.0)}
  summary = []
  for r in (64, 128, 256):
    row = {"resolution": r}
    for name, (f, g, f_mb, g_bytes) in truth.items():
      row[name] = {"cpu_seconds_by_batch": {"2": f + g * 2 * r ** 3},
                   "mb_per_example": f_mb + g_bytes * r ** 3 / 2 ** 20}
    summary.append(row)
  result = bench.fit_scaling(summary, 2, ["ige_fold", "base"])
  ige = result["models"]["ige_fold"]
  assert ige["time"]["F_seconds"] == pytest.approx(0.5)
  assert ige["time"]["G_ns_per_voxel_per_example"] == pytest.approx(3.0)
  assert ige["time"]["G_range"] == pytest.approx([3.0, 3.0])
  assert ige["memory"]["F_mb_per_example"] == pytest.approx(20.0)
  assert ige["memory"]["G_bytes_per_voxel"] == pytest.approx(12.0)
  ratios = ige["ratios"]
  assert ratios["time_G_over_base"] == pytest.approx(3.0)
  assert ratios["time_F_over_base"] == pytest.approx(2.5)
  assert ratios["time_G_over_base_range"] == pytest.approx([3.0, 3.0])
  assert ratios["memory_G_over_base"] == pytest.approx(1.5)
  # G's ratio above F's: the time ratio grows with R towards 3.
  fitted = [ratios["time_ratio_by_resolution"][str(r)]["fitted"]
            for r in (64, 128, 256)]
  assert fitted == sorted(fitted) and fitted[-1] < 3.0
  measured = ratios["time_ratio_by_resolution"]["256"]["measured"]
  assert measured == pytest.approx(fitted[-1])
  markdown = bench._fit_markdown(result, ["a.json"])  # pylint: disable=protected-access
  assert "| ige_fold | 0.500 | 3.00 | 3.00 to 3.00 | 20.0 | 12.0 |" in markdown
  assert "falls with R only if G's ratio is below F's: no." in markdown
  with pytest.raises(ValueError, match="at least two"):
    bench.fit_scaling(summary[:1], 2, ["base"])


def test_hlo_traffic_counts_each_materialized_grid(bench):
  grid = tf.random.normal([2, 16, 16, 16])
  grid_bytes = 4 * 2 * 16 ** 3

  @tf.function(jit_compile=True, autograph=False)
  def kernel(y):
    # XLA on CPU materializes s = sigmoid(y) once (an operand of two
    # reductions and of the product): y read once, s written once and read
    # three times, 2 s written once.
    s = tf.sigmoid(y)
    return (2.0 * s, tf.reduce_sum(s, axis=[1, 2, 3]),
            tf.reduce_sum(s, axis=[2, 3]))

  hlo = kernel.experimental_get_compiler_ir(grid)(stage="optimized_hlo")
  traffic = bench.hlo_grid_traffic(hlo, grid_bytes)
  assert traffic["parameters"] == pytest.approx(1.0)
  assert traffic["outputs"] == pytest.approx(1.0)  # the [B] sums are small
  assert traffic["temporaries"] == pytest.approx(1.0)
  assert traffic["reads"] == pytest.approx(4.0)
  assert traffic["writes"] == pytest.approx(2.0)
  assert traffic["accesses"] == pytest.approx(6.0)


def test_graph_traffic_counts_grid_ops_and_skips_views(bench):
  grid = tf.zeros([2, 16, 16, 16])
  grid_bytes = 4 * 2 * 16 ** 3

  weight = tf.Variable(tf.zeros([128, 128]))  # 2 grids, but a weight.

  @tf.function(autograph=False)
  def step(y):
    with tf.name_scope("image_encoder"):
      small = tf.reduce_sum(tf.sin(y))  # Left out by `exclude`.
    z = tf.reshape(tf.exp(y), [2, -1])  # exp: 1 read, 1 write; reshape: view
    labels = tf.cast(y > 0, tf.uint8)  # Greater 1 + 1/4, Cast 1/4 + 1/4
    mixed = tf.matmul(tf.reshape(y, [64, 128]), weight)  # 1 (+ weight), 1
    return tf.reduce_sum(z) + tf.reduce_sum(mixed) + small, labels

  graph = step.get_concrete_function(grid).graph
  traffic = bench.graph_grid_traffic(graph, grid_bytes,
                                     exclude="image_encoder",
                                     weight_shapes={(128, 128)})
  types = [op["type"] for op in traffic["ops"]]
  assert "Reshape" not in types and "Sin" not in types
  assert types.count("Exp") == 1
  # exp 1 + 1, Greater 1 + 0.25 (bool), Cast 0.25 + 0.25, MatMul 1 + 1,
  # the two Sums 1 read each.
  assert traffic["reads"] == pytest.approx(1 + 1 + 0.25 + 1 + 1 + 1)
  assert traffic["writes"] == pytest.approx(1 + 0.25 + 0.25 + 1)
  # Without `weight_shapes` the weight read counts (2 grids).
  assert bench.graph_grid_traffic(graph, grid_bytes, exclude="image_encoder")[
      "reads"] == pytest.approx(traffic["reads"] + 2)
