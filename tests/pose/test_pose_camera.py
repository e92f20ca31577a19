"""Camera model: projection vs the DATA.md formula, safe mode, extrinsics."""
import h5py
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.pose import camera
from ige_tf.pose import geometry
from ige_tf.pose.data import h36m

# DATA.md, subject9/camera1 (checked values).
F = (1145.05, 1143.78)
C = (512.54, 515.45)
K = (-0.2071, 0.2478, -0.0031)
P = (-0.00142, -0.00098)


def reference_projection(point, f, c, k, p):
  """DATA.md, written out for one point with plain floats."""
  x, y = point[0] / point[2], point[1] / point[2]
  r2 = x * x + y * y
  radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
  tan = p[0] * y + p[1] * x
  xd = x * (radial + tan) + p[1] * r2
  yd = y * (radial + tan) + p[0] * r2
  return f[0] * xd + c[0], f[1] * yd + c[1]


def random_batch(seed, batch=2, joints=16):
  rng = np.random.default_rng(seed)
  points = np.stack([rng.uniform(-1.2, 1.2, (batch, joints)),
                     rng.uniform(-1.0, 1.0, (batch, joints)),
                     rng.uniform(3.0, 7.0, (batch, joints))], -1)
  f = np.array(F) + rng.uniform(-20, 20, (batch, 2))
  c = np.array(C) + rng.uniform(-10, 10, (batch, 2))
  k = np.array(K) * rng.uniform(0.5, 1.5, (batch, 3))
  p = np.array(P) * rng.uniform(-3, 3, (batch, 2))
  return points, f, c, k, p


def reference_batch(points, f, c, k, p):
  out = np.zeros(points.shape[:-1] + (2,))
  for b in range(points.shape[0]):
    for j in range(points.shape[1]):
      out[b, j] = reference_projection(points[b, j], f[b], c[b], k[b], p[b])
  return out


def test_project_points_equals_data_md_formula():
  points, f, c, k, p = random_batch(0)
  expected = reference_batch(points, f, c, k, p)
  got_tf = camera.project_points(tf.constant(points), f, c, k, p).numpy()
  got_np = camera.project_points_np(points, f, c, k, p)
  np.testing.assert_allclose(got_tf, expected, rtol=0, atol=1e-9)
  np.testing.assert_allclose(got_np, expected, rtol=0, atol=1e-9)
  assert got_tf.shape == (2, 16, 2)


def test_project_points_float32_shape_and_accuracy():
  points, f, c, k, p = random_batch(1)
  got = camera.project_points(tf.constant(points, tf.float32),
                              tf.constant(f, tf.float32),
                              tf.constant(c, tf.float32),
                              tf.constant(k, tf.float32),
                              tf.constant(p, tf.float32))
  assert got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), reference_batch(points, f, c, k, p),
                             atol=2e-3)


def test_project_normalized_is_uv_minus_c_over_f():
  points, f, c, k, p = random_batch(2)
  uv = reference_batch(points, f, c, k, p)
  normalized = camera.project_normalized(tf.constant(points), k, p).numpy()
  np.testing.assert_allclose(normalized, (uv - c[:, None]) / f[:, None],
                             atol=1e-12)


def test_normalize_pixels_round_trip():
  points, f, c, k, p = random_batch(10)
  uv = reference_batch(points, f, c, k, p)
  x = camera.normalize_pixels(uv, f, c)
  np.testing.assert_allclose(x, camera.project_normalized(points, k, p),
                             atol=1e-12)
  np.testing.assert_allclose(camera.pixels_from_normalized(x, f, c), uv,
                             atol=1e-9)


def test_safe_projection_matches_exact_in_field_of_view():
  points, f, c, k, p = random_batch(3)
  exact = reference_batch(points, f, c, k, p)
  safe = camera.project_points(tf.constant(points), f, c, k, p,
                               **camera.SAFE_PROJECTION).numpy()
  np.testing.assert_allclose(safe, exact, atol=1e-3)  # pixels


@pytest.mark.parametrize("depth", [0.0, -1.0, -1e3, 1e-9, -1e-9])
def test_safe_projection_finite_values_and_gradients(depth):
  points, f, c, k, p = random_batch(4)
  points[:, :5, 2] = depth        # joints at or behind the camera
  points[:, 5, :] = points[:, 6, :]  # coincident joints
  points[:, 7, :2] = 1e6            # absurdly far off-axis
  x = tf.constant(points, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    uv = camera.project_points(x, f.astype(np.float32), c.astype(np.float32),
                               k.astype(np.float32), p.astype(np.float32),
                               **camera.SAFE_PROJECTION)
    # The energy of the paper consumes pairwise squared distances.
    energy = tf.reduce_sum(geometry.pairwise_squared_distances(uv / 1000.0))
  grad = tape.gradient(energy, x)
  assert np.all(np.isfinite(uv.numpy()))
  assert np.all(np.isfinite(grad.numpy()))
  # Bounded by construction: |x| < 1 per coordinate, so r2 < 2 and the
  # distortion factor is at most 1 + 2|k1| + 4|k2| + 8|k3| + small (< 3.5).
  normalized = (uv.numpy() - c[:, None]) / f[:, None]
  assert np.abs(normalized).max() < 3.5


def test_exact_projection_is_not_finite_at_zero_depth():
  # The reason for the safe mode: the DATA.md formula divides by z.
  points, f, c, k, p = random_batch(5)
  points[0, 0, 2] = 0.0
  uv = camera.project_points(tf.constant(points), f, c, k, p).numpy()
  assert not np.all(np.isfinite(uv))


@pytest.mark.parametrize("safe", [False, True])
def test_projection_gradient_matches_numerical(safe):
  points, f, c, k, p = random_batch(6, batch=1, joints=3)
  if safe:
    # In the soft depth clamp's transition and behind the camera.
    points[0, 0] = (0.02, -0.03, 0.08)
    points[0, 1] = (0.01, 0.01, -0.05)
  kwargs = camera.SAFE_PROJECTION if safe else {}
  fn = lambda x: camera.project_points(x, f, c, k, p, **kwargs)  # noqa: E731
  analytic, numeric = tf.test.compute_gradient(fn, [tf.constant(points)],
                                               delta=1e-6)
  np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-5, atol=1e-4)


def test_soft_min_depth_properties():
  z = tf.constant([-10.0, -0.1, 0.0, 0.05, 0.1, 0.5, 2.0, 7.0], tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(z)
    safe = camera.soft_min_depth(z, 0.1)
  grad = tape.gradient(safe, z).numpy()
  assert np.all(safe.numpy() >= 0.1)
  np.testing.assert_allclose(safe.numpy()[-2:], [2.0, 7.0], rtol=1e-12)
  assert np.all((grad >= 0) & (grad <= 1))


def _soft_limit_with_pow(x, a, n):
  """The former `soft_limit` (two `pow`s): the reference of the cheaper form."""
  x = tf.clip_by_value(x, -50.0 * a, 50.0 * a)
  return x * tf.pow(1.0 + tf.pow(tf.square(x / a), n // 2), -1.0 / n)


def _value_and_two_derivatives(fn, x):
  with tf.GradientTape() as outer:
    outer.watch(x)
    with tf.GradientTape() as inner:
      inner.watch(x)
      y = fn(x)
    slope = inner.gradient(y, x)
  return y.numpy(), slope.numpy(), outer.gradient(slope, x).numpy()


@pytest.mark.parametrize("power", [2, 4, 6, 8, 16])
def test_soft_limit_is_the_pow_formula_with_its_derivatives(power):
  a = 1.5
  big = np.finfo(np.float64).max
  x = np.concatenate([
      [0.0, -0.0, 1e-300, -1e-300, 1e-8, a, -a, 49.9 * a, -50.0 * a,
       51.0 * a, 1e6, -1e30, 1e300, big, -big],
      np.linspace(-3.0 * a, 3.0 * a, 241)])
  got = _value_and_two_derivatives(
      lambda t: camera.soft_limit(t, a, power), tf.constant(x, tf.float64))
  want = _value_and_two_derivatives(
      lambda t: _soft_limit_with_pow(t, a, power), tf.constant(x, tf.float64))
  # Closed forms, v = (x/a)^n, t = 1 + v: value x t^(-1/n), slope
  # t^(-1 - 1/n) in (0, 1], curvature -(n + 1) (v/x) t^(-2 - 1/n); all three
  # are exactly 0 beyond the +-50 a hard clip (value: +-50 a t^(-1/n)).
  c = np.clip(x, -50.0 * a, 50.0 * a)
  v = (c / a)**power
  clipped = np.abs(x) > 50.0 * a
  closed = [c * (1 + v)**(-1 / power),
            np.where(clipped, 0.0, (1 + v)**(-1 - 1 / power)),
            np.where(clipped, 0.0, -(power + 1) * c**(power - 1) / a**power *
                     (1 + v)**(-2 - 1 / power))]
  for g, w, exact in zip(got, want, closed):
    assert np.all(np.isfinite(g))
    # Values agree to rounding; derivatives up to the cancellation of
    # autodiff's product-rule terms (~eps |value / x|, eps |value / x^2|),
    # in both forms.
    tol = dict(rtol=1e-14, atol=0) if g is got[0] else dict(rtol=1e-12,
                                                              atol=1e-14)
    np.testing.assert_allclose(g, exact, **tol)
    finite = np.isfinite(w)  # pow's curvature is NaN at x = 0 for n = 2
    np.testing.assert_allclose(g[finite], w[finite], **tol)
    assert np.all(finite | ((c / a)**2 == 0))
  assert got[1][0] == 1.0 and np.all(np.abs(got[0]) <= a)


def test_soft_limit_float32_and_bad_power():
  x = np.linspace(-80.0, 80.0, 1601, dtype=np.float32)
  np.testing.assert_allclose(camera.soft_limit(x, 1.0),
                             _soft_limit_with_pow(x, 1.0, 16), rtol=3e-7,
                             atol=0)
  for power in (0, 3, 2.5, -2):
    with pytest.raises(ValueError, match="even integer >= 2, got"):
      camera.soft_limit(x, 1.0, power)


def test_mirrored_distortion_mirrors_the_projection():
  points, f, c, k, p = random_batch(7)
  distortion = np.concatenate([k, p], -1)
  mirrored = points * [-1, 1, 1]
  kk, pp = camera.split_distortion(camera.mirror_distortion(distortion))
  x_d = camera.project_normalized(tf.constant(points), k, p).numpy()
  x_d_mirror = camera.project_normalized(tf.constant(mirrored), kk, pp).numpy()
  np.testing.assert_allclose(x_d_mirror, x_d * [-1, 1], atol=1e-12)


def test_world_to_camera_and_back():
  rng = np.random.default_rng(8)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  rot = q * np.sign(np.linalg.det(q))
  centre = rng.normal(size=3) * 1000
  world = rng.normal(size=(5, 3)) * 1000
  cam = camera.world_to_camera(world, rot, centre)
  np.testing.assert_allclose(cam, (rot @ (world - centre).T).T, atol=1e-9)
  np.testing.assert_allclose(camera.camera_to_world(cam, rot, centre), world,
                             atol=1e-9)


def test_load_cameras_untransposes_r(tmp_path):
  rng = np.random.default_rng(9)
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  rot = q * np.sign(np.linalg.det(q))
  path = tmp_path / "cameras.h5"
  with h5py.File(path, "w") as h5:
    g = h5.create_group("subject9/camera1")
    g["R"] = rot.T  # stored transposed, as in the real file
    g["T"] = np.array([[1841.1], [4955.3], [1563.4]])
    g["f"] = np.array(F).reshape(2, 1)
    g["c"] = np.array(C).reshape(2, 1)
    g["k"] = np.array(K).reshape(3, 1)
    g["p"] = np.array(P).reshape(2, 1)
    g["Name"] = np.array([ord(ch) for ch in "54138969"]).reshape(8, 1)
  cameras = h36m.load_cameras(str(path))
  cam = cameras[("S9", "54138969")]
  np.testing.assert_allclose(cam.R, rot)
  np.testing.assert_allclose(cam.T, [1841.1, 4955.3, 1563.4])
  np.testing.assert_allclose(cam.distortion, K + P)
  world = np.array([[0.0, 0.0, 1000.0]])
  expected = reference_projection(rot @ (world[0] - cam.T), F, C, K, P)
  np.testing.assert_allclose(cam.project(world)[0], expected, atol=1e-9)
