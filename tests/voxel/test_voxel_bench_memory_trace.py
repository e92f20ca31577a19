"""`bench/bench_voxel_scaling.py --mode=memory_trace`: the allocation trace
and its per-phase breakdown, on a small step whose buffers are known."""
import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(scope="module")
def bench(bench_voxel_scaling):
  """The bench module (tests/voxel/conftest.py loads it once)."""
  return bench_voxel_scaling


def test_memory_trace_names_the_buffers_live_at_the_peak(bench, tmp_path):
  # 1 MB per float32 buffer of this shape (the profiler does not record
  # much smaller allocations).
  x = tf.constant(np.random.default_rng(0).normal(size=(1024, 256)),
                  tf.float32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      tape.watch(x)
      with tf.name_scope("image_encoder"):
        a = tf.sin(x)
        b = tf.cos(a) * a
      value = tf.reduce_sum(b)
    with tf.name_scope("adam"):
      return tf.reduce_sum(tape.gradient(value, x))

  step().numpy()
  tf.config.experimental.reset_memory_stats("CPU:0")
  events = bench.trace_allocations(lambda: step().numpy(), str(tmp_path))
  allocator_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  result = bench.memory_breakdown(events)

  mb = 1.0
  sines = [e for e in events if e["kind"] == "alloc"
           and e["op"] == "image_encoder/Sin"]
  assert len(sines) == 1
  assert sines[0]["shape"] == "[1024,256]"
  assert sines[0]["requested"] == 2 ** 20
  # What the allocator counts: the request, or a larger free chunk unsplit.
  assert sines[0]["bytes"] >= 2 ** 20
  # Every allocation of the step is traced, so what is live at the peak
  # accounts for the whole peak above the start, and it is the allocator's.
  live = sum(b["mb"] for b in result["peak_live"])
  # (to 10 KB: allocations much smaller than 1 MB are not recorded.)
  np.testing.assert_allclose(result["peak_mb"] - result["before_mb"], live,
                             atol=0.01)
  np.testing.assert_allclose(result["peak_mb"], allocator_peak / 2 ** 20,
                             atol=0.01)
  # sin(x) and cos(sin(x)) are kept for the backward pass: at least the
  # forward's buffers are live at the peak, in the forward's phase.
  assert result["peak_by_phase"]["image encoder, forward"] >= 2 * mb - 1e-9
  phases = [p["phase"] for p in result["phases"]]
  assert phases[0] == "image encoder, forward"
  assert "image encoder, backward" in phases
  assert all(p["first_ms"] <= p["last_ms"] for p in result["phases"])
  result.update(model="toy", resolution=8, batch_size=1, num_steps=0,
                allocator_peak_mb=allocator_peak / 2 ** 20, grid_mb=mb)
  markdown = bench._memory_trace_markdown(result)  # pylint: disable=protected-access
  assert "| image encoder, forward |" in markdown
  assert "image_encoder/Sin [1024,256] " in markdown
  assert result["timeline"][-1][1] == pytest.approx(
      events[-1]["in_use"] / 2 ** 20)
  plot = tmp_path / "trace.png"
  bench._plot_memory_trace(result, str(plot))  # pylint: disable=protected-access
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
