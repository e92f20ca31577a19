"""`bench/bench_voxel_scaling.py --mode=kernels`: the per-kernel timing of
the fused unroll records every call one unroll makes, in order, and its
tables add up."""
import pytest


@pytest.fixture(scope="module")
def bench(bench_voxel_scaling):
  """The bench module (tests/voxel/conftest.py loads it once)."""
  return bench_voxel_scaling


def test_kernel_timing_replays_every_call_of_one_unroll(bench):
  num_steps = 3
  result = bench.run_kernels(resolution=8, batch_size=1, num_steps=num_steps,
                             calls=1)
  calls = [(row["name"], row["pass"]) for row in result["calls"]]
  # y_1 .. y_{T-1} pooled for the next step's CNNs; y_T only summed.
  # The parts of U G_t (`unpool_parts`) once per step for the forward
  # kernels, and those of U d p_t for `adjoint_grid`.
  step = [("cnn_first_order", "forward"), ("unpool_parts", "forward"),
          ("squared_norm", "forward"), ("descent", "forward")]
  forward = ([("pool", "forward")] + (step + [("pool", "forward")])
             * (num_steps - 1) + step + [("sums", "forward")])
  backward = [("loss_gradient", "backward")] + [
      ("adjoint_levels", "backward"), ("cnn_second_order", "backward"),
      ("unpool_parts", "backward"), ("adjoint_grid", "backward")] * num_steps
  # The second order's own first-order call is not counted again.
  assert calls == forward + backward
  assert [row["index"] for row in result["calls"]
          if row["name"] == "descent"] == list(range(num_steps))
  assert all(row["cpu_ms"] >= 0 and row["peak_grids"] >= 0
             for row in result["calls"])
  assert result["total_cpu_ms"] == pytest.approx(
      sum(entry["cpu_ms"] for entry in result["by_name"].values()))
  assert result["by_name"]["adjoint_grid"]["calls"] == num_steps
  assert set(result["primitives"]) == {
      "pool_frustum_levels", "unpool_frustum_levels", "expand_frustum_parts",
      "sum_per_example", "sigmoid"}
  markdown = bench._kernels_markdown(result)  # pylint: disable=protected-access
  assert "| adjoint_grid #2 | backward |" in markdown
  assert f"| **total** | {len(calls)} |" in markdown
