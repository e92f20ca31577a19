"""`bench/bench_grid_tiling.py`: the slab loop computes what the whole-grid
kernel does, and its table has one row per cell."""
import importlib.util
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


@pytest.fixture(scope="module")
def bench():
  path = os.path.join(REPO, "bench", "bench_grid_tiling.py")
  spec = importlib.util.spec_from_file_location("bench_grid_tiling", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tiled_kernel_equals_the_whole_grid_kernel(bench):
  rows = bench.run([(16, 2)], [2, 8], repeats=1)
  assert [(r["R"], r["B"], r["rows_per_slab"]) for r in rows] == [
      (16, 2, 2), (16, 2, 8)]
  for row in rows:
    assert row["max_abs_difference"] < 1e-5
    assert row["cpu_tiled_over_full"] == pytest.approx(
        row["tiled_cpu_ms"] / row["full_cpu_ms"])
    assert row["slab_mb_per_grid"] == 2 * row["rows_per_slab"] * 16 * 16 * 4 / 2**20
  table = bench.markdown(rows).splitlines()
  assert len(table) == 2 + len(rows) and table[2].startswith("| 16 | 2 | 2 |")
  with pytest.raises(ValueError, match="3 rows must be even and divide R=16"):
    bench.run([(16, 1)], [3], repeats=1)


def test_kernel_body_pools_and_clips_as_documented(bench):
  rng = np.random.default_rng(1)
  y = rng.normal(size=(1, 2, 8, 8)).astype(np.float32)  # [B, h, R, R]
  a = rng.normal(size=(1, 2, 8, 8)).astype(np.float32)
  g4 = 10 * rng.normal(size=(1, 2, 8, 4)).astype(np.float32)  # some clipped
  y_new, fine, coarse, clipped = (t.numpy() for t in bench.kernel_body(
      y, a, g4))
  s = 1 / (1 + np.exp(-y.astype(np.float64)))
  ds = s * (1 - s)
  up = np.repeat(g4, 2, axis=-1)
  np.testing.assert_allclose(y_new, y - 0.1 * np.clip(ds * up, -1, 1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fine, (s * a).reshape(1, 2, 8, 4, 2).sum(-1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      coarse, (ds * a).reshape(1, 1, 2, 4, 2, 8).sum(axis=(2, 4)), rtol=1e-5,
      atol=1e-6)
  outside = np.abs(ds * up) > 1
  assert 0 < outside.sum() < outside.size
  np.testing.assert_allclose(
      clipped, (a * np.sign(up) * outside).sum(axis=(1, 2, 3)), rtol=1e-5,
      atol=1e-6)
