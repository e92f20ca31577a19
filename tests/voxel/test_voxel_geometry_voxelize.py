"""Conservative voxelization: exact triangle-box overlap, fill, pooling, volume."""

import numpy as np
import pytest
import trimesh

from ige_tf.voxel import voxelize as vx

# ---------------------------------------------------------------------------
# Independent reference: Sutherland-Hodgman clipping of the triangle against
# the six half-spaces of the box. The clipped polygon is non-empty iff the
# closed triangle meets the closed box.


def _clip_nonempty(triangle, box_min, box_max):
    polygon = [np.asarray(p, dtype=np.float64) for p in triangle]
    for axis in range(3):
        for sign, bound in ((1.0, box_min[axis]), (-1.0, box_max[axis])):
            # keep points with sign * (p[axis] - bound) >= 0
            out = []
            n = len(polygon)
            for i in range(n):
                p, q = polygon[i], polygon[(i + 1) % n]
                dp = sign * (p[axis] - bound)
                dq = sign * (q[axis] - bound)
                if dp >= 0:
                    out.append(p)
                if (dp >= 0) != (dq >= 0):
                    t = dp / (dp - dq)
                    out.append(p + t * (q - p))
            polygon = out
            if not polygon:
                return False
    return True


def _reference(triangle, box_min, box_max, margin=1e-9):
    """True / False when robustly decided, None when within `margin` of touching."""
    grown = _clip_nonempty(triangle, np.asarray(box_min) - margin, np.asarray(box_max) + margin)
    shrunk = _clip_nonempty(triangle, np.asarray(box_min) + margin, np.asarray(box_max) - margin)
    if shrunk:
        return True
    if not grown:
        return False
    return None


def _random_triangles(rng, count, low, high):
    tris = rng.uniform(low, high, size=(count, 3, 3))
    kind = rng.integers(0, 4, size=count)
    # small triangles near a random point
    centre = rng.uniform(low, high, size=(count, 1, 3))
    small = centre + rng.normal(scale=0.3, size=(count, 3, 3))
    tris[kind == 1] = small[kind == 1]
    # degenerate: third vertex on the line of the first two (a segment)
    t = rng.uniform(-0.5, 1.5, size=(count, 1))
    tris[kind == 2, 2] = (tris[:, 0] + t * (tris[:, 1] - tris[:, 0]))[kind == 2]
    # slivers: long and very thin, in any direction
    offset = rng.normal(size=(count, 3)) * 10.0 ** rng.uniform(-4, -1, size=(count, 1))
    tris[kind == 3, 2] = (tris[:, 0] + t * (tris[:, 1] - tris[:, 0]) + offset)[kind == 3]
    return tris


def test_triangle_box_overlap_matches_clipping_reference():
    rng = np.random.default_rng(0)
    n = 3000
    tris = _random_triangles(rng, n, -1.0, 2.0)
    box_min = rng.uniform(-0.5, 1.0, size=(n, 3))
    box_max = box_min + rng.uniform(0.05, 1.0, size=(n, 3))
    got = vx.triangle_box_overlap(tris, box_min, box_max)
    decided = 0
    for i in range(n):
        ref = _reference(tris[i], box_min[i], box_max[i])
        if ref is None:
            continue
        decided += 1
        assert got[i] == ref, (i, tris[i], box_min[i], box_max[i])
    assert decided > 0.99 * n
    # both outcomes are well represented
    assert 0.1 < got.mean() < 0.9


def test_triangle_box_overlap_touching_counts():
    tri = np.array([[[1.0, 0.2, 0.2], [1.0, 0.8, 0.3], [1.5, 0.5, 0.9]]])
    assert vx.triangle_box_overlap(tri, [[0, 0, 0]], [[1, 1, 1]])[0]
    assert not vx.triangle_box_overlap(tri + [1e-6, 0, 0], [[0, 0, 0]], [[1, 1, 1]])[0]


@pytest.mark.parametrize("backend", vx.BACKENDS)
def test_surface_voxelization_matches_clipping_reference(backend):
    rng = np.random.default_rng(1)
    n = 6
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for trial in range(12):
        count = int(rng.integers(1, 4))
        tris = _random_triangles(rng, count, -0.5, n + 0.5)
        tris *= rng.uniform(0.2, 1.0)
        got = vx.voxelize_surface_index(tris, (n, n, n), backend=backend).reshape(-1)
        for c, cell in enumerate(cells):
            refs = [_reference(t, cell, cell + 1) for t in tris]
            if any(r is True for r in refs):
                assert got[c], (trial, cell)
            elif all(r is False for r in refs):
                assert not got[c], (trial, cell)


@pytest.mark.parametrize("backend", vx.BACKENDS)
def test_large_triangles_are_exact_via_splitting(backend):
    # Big, oblique triangles (bbox >> split size) against the pairwise SAT.
    rng = np.random.default_rng(2)
    n = 30
    tris = rng.uniform(-2, n + 2, size=(4, 3, 3))
    got = vx.voxelize_surface_index(tris, (n, n, n), backend=backend)
    cells = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ref = np.zeros(len(cells), bool)
    for t in tris:
        ref |= vx.triangle_box_overlap(np.broadcast_to(t, (len(cells), 3, 3)), cells, cells + 1)
    mismatch = got.reshape(-1) != ref
    # Splitting moves vertices by rounding only: at most a few exactly-touching cells.
    assert mismatch.sum() <= 2
    assert ref.sum() > 500


def test_backends_agree_on_a_mesh():
    if len(vx.BACKENDS) < 2:
        pytest.skip("numba not installed")
    mesh = trimesh.creation.torus(0.3, 0.1, major_sections=40, minor_sections=20)
    tris = vx.world_to_index(mesh.vertices, 48)[mesh.faces]
    a = vx.voxelize_surface_index(tris, (48, 48, 48), backend="numba")
    b = vx.voxelize_surface_index(tris, (48, 48, 48), backend="numpy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(vx.fill_interior(a, backend="numba"), vx.fill_interior(a, backend="numpy"))


def _bfs_fill(surface):
    """Plain-Python flood fill from outside (6-connectivity), the reference."""
    padded = np.pad(surface, 1)
    outside = np.zeros_like(padded)
    stack = [(0, 0, 0)]
    outside[0, 0, 0] = True
    while stack:
        i, j, k = stack.pop()
        for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            a, b, c = i + d[0], j + d[1], k + d[2]
            if 0 <= a < padded.shape[0] and 0 <= b < padded.shape[1] and 0 <= c < padded.shape[2]:
                if not padded[a, b, c] and not outside[a, b, c]:
                    outside[a, b, c] = True
                    stack.append((a, b, c))
    return ~outside[1:-1, 1:-1, 1:-1]


@pytest.mark.parametrize("backend", vx.BACKENDS)
def test_fill_interior_matches_bfs_on_random_grids(backend):
    rng = np.random.default_rng(3)
    for density in (0.2, 0.35, 0.5):
        grid = rng.random((9, 7, 8)) < density
        np.testing.assert_array_equal(vx.fill_interior(grid, backend=backend), _bfs_fill(grid))
    hollow = np.zeros((6, 6, 6), bool)
    hollow[1:5, 1:5, 1:5] = True
    hollow[2:4, 2:4, 2:4] = False
    filled = vx.fill_interior(hollow, backend=backend)
    assert filled[2:4, 2:4, 2:4].all() and filled.sum() == 64
    assert not vx.fill_interior(np.zeros((3, 3, 3), bool), backend=backend).any()


@pytest.mark.parametrize(
    "mesh",
    [
        trimesh.creation.icosphere(subdivisions=2, radius=0.4),
        trimesh.creation.box((0.5, 0.7, 0.3), transform=trimesh.transformations.rotation_matrix(0.5, [1, 2, 3])),
        trimesh.creation.torus(0.3, 0.12, major_sections=32, minor_sections=16),
    ],
    ids=["sphere", "box", "torus"],
)
def test_fill_matches_ray_parity(mesh):
    # Cells the surface misses are entirely inside or outside: classify their
    # centres by ray parity (trimesh.contains) and compare with the flood fill.
    r = 20
    grid = vx.voxelize(mesh.vertices, mesh.faces, r)
    surface = vx.voxelize(mesh.vertices, mesh.faces, r, fill=False)
    centres = (np.argwhere(~surface) + 0.5) / r - 0.5
    inside = mesh.contains(centres)
    np.testing.assert_array_equal(grid[~surface], inside)
    assert inside.sum() > 0


@pytest.mark.parametrize(
    "mesh",
    [
        trimesh.creation.icosphere(subdivisions=4, radius=0.45),
        trimesh.creation.box((0.6, 0.8, 0.5), transform=trimesh.transformations.rotation_matrix(0.4, [1, 1, 0])),
        trimesh.creation.torus(0.3, 0.12, major_sections=64, minor_sections=32),
    ],
    ids=["sphere", "box", "torus"],
)
def test_volume_converges(mesh):
    true_volume = mesh.volume
    grids = vx.voxelize_multi(mesh.vertices, mesh.faces, (32, 64, 128))
    errors = [abs(grids[r].sum() / r**3 - true_volume) / true_volume for r in (32, 64, 128)]
    # First-order convergence: the error about halves with each doubling of R.
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.6 * errors[0] and errors[2] < 0.6 * errors[1]
    # Conservative cells lie within one cell diagonal of the surface, so the
    # excess is at most area * sqrt(3) / R.
    for r, error in zip((32, 64, 128), errors):
        assert error <= np.sqrt(3) * mesh.area / (mesh.volume * r)
    if mesh.area / mesh.volume < 10:  # not the thin torus
        assert errors[2] < 0.06
    # Conservative: never smaller than the true volume.
    assert all(grids[r].sum() / r**3 >= true_volume for r in (32, 64, 128))


@pytest.mark.parametrize("backend", vx.BACKENDS)
def test_or_pooling_equals_direct_voxelization(backend):
    # A coarse closed cell is the union of its fine cells, so pooled surface
    # voxelization at 2R / 4R equals direct voxelization at R.
    mesh = trimesh.creation.torus(0.31, 0.11, major_sections=37, minor_sections=19)
    vertices = mesh.vertices + [0.0123, -0.0071, 0.0037]
    for r in (8, 16):
        direct = vx.voxelize_surface_index(vx.world_to_index(vertices, r)[mesh.faces], (r, r, r), backend=backend)
        for factor in (2, 4):
            fine = vx.voxelize_surface_index(
                vx.world_to_index(vertices, r * factor)[mesh.faces], (r * factor,) * 3, backend=backend
            )
            np.testing.assert_array_equal(vx.or_pool(fine, factor), direct)
    multi = vx.voxelize_multi(vertices, mesh.faces, (8, 16, 32))
    for r in (8, 16):
        np.testing.assert_array_equal(multi[r], vx.voxelize(vertices, mesh.faces, r))


def test_world_grid_axis_order():
    # A box in the x > 0, y < 0 corner: occupancy only at i >= R/2, j < R/2.
    mesh = trimesh.creation.box((0.2, 0.2, 0.2))
    vertices = mesh.vertices + [0.25, -0.25, 0.0]
    grid = vx.voxelize(vertices, mesh.faces, 16)
    idx = np.argwhere(grid)
    assert idx[:, 0].min() >= 8 and idx[:, 1].max() < 8
    assert idx[:, 2].min() < 8 <= idx[:, 2].max()


def test_invalid_inputs():
    with pytest.raises(ValueError, match="shape"):
        vx.voxelize_surface_index(np.zeros((2, 3)), (4, 4, 4))
    with pytest.raises(ValueError, match="divide"):
        vx.voxelize_multi(np.zeros((3, 3)), np.array([[0, 1, 2]]), (24, 32))
    with pytest.raises(ValueError, match="divisible"):
        vx.or_pool(np.zeros((6, 6, 6), bool), 4)
    with pytest.raises(ValueError, match="backend"):
        vx.voxelize_surface_index(np.zeros((1, 3, 3)), (4, 4, 4), backend="cuda")
    # Non-finite and out-of-grid triangles are ignored.
    tris = np.array([[[np.nan, 0, 0], [1, 1, 1], [2, 2, 2]], [[10, 10, 10], [11, 10, 10], [10, 11, 10]]])
    assert not vx.voxelize_surface_index(tris, (4, 4, 4)).any()


def test_or_pool_matches_reshape_reference():
    grid = np.random.default_rng(4).random((24, 48, 12)) < 0.1
    for factor in (1, 2, 3, 4, 6, 12):
        reference = grid.reshape(24 // factor, factor, 48 // factor, factor, 12 // factor, factor).any(axis=(1, 3, 5))
        np.testing.assert_array_equal(vx.or_pool(grid, factor), reference)


@pytest.mark.parametrize("backend", vx.BACKENDS)
def test_indexed_mesh_path_equals_triangle_path(backend):
    rng = np.random.default_rng(5)
    vertices = rng.uniform(-5, 45, size=(30, 3))  # large triangles, some outside the grid
    vertices[3] = np.nan
    faces = rng.integers(0, 30, size=(25, 3))
    expected = vx.voxelize_surface_index(vertices[faces], (40, 40, 40), backend="numpy")
    got = vx.voxelize_surface_mesh_index(vertices, faces, (40, 40, 40), backend=backend)
    assert np.sum(got != expected) <= 2  # rounding of split points on exactly-touching cells
    assert expected.sum() > 1000
    # a huge triangle (deep split stack) still matches the pairwise test
    big = np.array([[[0.3, 0.2, 0.1], [255.7, 3.1, 250.2], [7.3, 254.9, 128.4]]])
    grid = vx.voxelize_surface_index(big, (256, 256, 256), backend=backend)
    cells = np.argwhere(grid)
    assert vx.triangle_box_overlap(np.broadcast_to(big[0], (len(cells), 3, 3)), cells, cells + 1).all()
    assert len(cells) > 256 * 128
    # complete: every cell containing a point of the triangle is filled
    w = rng.dirichlet(np.ones(3), size=20000)
    points = np.clip(np.floor(w @ big[0]).astype(int), 0, 255)
    assert grid[tuple(points.T)].all()
