"""Frustum grids agree with independent rasterization and ray casting."""

import numpy as np
import pytest
import trimesh

from ige_tf.voxel import camera as C
from ige_tf.voxel import frustum as FR
from ige_tf.voxel.mesh import mesh_from_arrays


def _chair():
    """Overlapping boxes (self-intersecting, like many ShapeNet models)."""
    parts = [
        trimesh.creation.box((0.5, 0.06, 0.5), trimesh.transformations.translation_matrix([0, 0.0, 0])),
        trimesh.creation.box((0.5, 0.5, 0.06), trimesh.transformations.translation_matrix([0, 0.25, -0.22])),
    ]
    for x in (-0.22, 0.22):
        for z in (-0.22, 0.22):
            parts.append(trimesh.creation.box((0.05, 0.45, 0.05), trimesh.transformations.translation_matrix([x, -0.25, z])))
    return trimesh.util.concatenate(parts)


MESHES = {
    "torus": lambda: trimesh.creation.torus(0.35, 0.12, major_sections=48, minor_sections=24),
    "box": lambda: trimesh.creation.box(
        (0.5, 0.8, 0.3), transform=trimesh.transformations.rotation_matrix(0.7, [1, 2, 0.5])
    ),
    "sphere": lambda: trimesh.creation.icosphere(subdivisions=3),
    "chair": _chair,
}


def _canonical(name):
    raw = MESHES[name]()
    mesh = mesh_from_arrays(raw.vertices, raw.faces)
    return mesh.vertices, mesh.faces


def _cameras():
    cams = C.view_cameras("frustum-test", seed=7, num_views=24)
    return [cams[0], cams[13]]


def _conservative_raster(uv_triangles, resolution):
    """Pixels (row, col) whose closed square meets a projected triangle (2D SAT)."""
    mask = np.zeros((resolution, resolution), bool)
    for tri in uv_triangles:
        lo = np.maximum(np.ceil(tri.min(axis=0)).astype(int) - 1, 0)
        hi = np.minimum(np.floor(tri.max(axis=0)).astype(int), resolution - 1)
        if np.any(lo > hi):
            continue
        us, vs = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        cu, cv = us.ravel() + 0.5, vs.ravel() + 0.5
        hit = np.ones(len(cu), bool)
        for a in range(3):
            edge = tri[(a + 1) % 3] - tri[a]
            normal = np.array([-edge[1], edge[0]])
            proj = tri @ normal
            radius = 0.5 * (abs(normal[0]) + abs(normal[1]))
            centre = cu * normal[0] + cv * normal[1]
            hit &= (centre + radius >= proj.min()) & (centre - radius <= proj.max())
        mask[vs.ravel()[hit], us.ravel()[hit]] = True
    return mask


def _ray_cast(vertices, faces, cam, resolution, sub=8):
    """Any-hit mask and minimum hit depth over rays through a lattice of points.

    Each pixel (closed square) at resolution R gets (sub + 1)^2 rays on a
    regular lattice including its edges and corners (shared with neighbours),
    so a planar face's nearest point in the pixel (at a corner) is sampled.

    Returns:
      hit: bool [R, R]; depth: float64 [R, R] (inf where no hit).
    """
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    n = resolution * sub + 1
    coords = np.arange(n) * (cam.image_size / (resolution * sub))
    v, u = np.meshgrid(coords, coords, indexing="ij")
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    dirs = pixels @ np.linalg.inv(cam.intrinsics).T @ cam.rotation
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = cam.position
    locations, ray_index, _ = mesh.ray.intersects_location(
        np.broadcast_to(origin, dirs.shape), dirs, multiple_hits=False
    )
    lattice = np.full(len(dirs), np.inf)
    np.minimum.at(lattice, ray_index, (locations - origin) @ cam.rotation[2])
    lattice = lattice.reshape(n, n)
    depth = np.full((resolution, resolution), np.inf)
    for a in range(sub + 1):
        for b in range(sub + 1):
            depth = np.minimum(depth, lattice[a : a + n - 1 : sub, b : b + n - 1 : sub])
    return np.isfinite(depth), depth


@pytest.mark.parametrize("name", sorted(MESHES))
def test_silhouette_equals_conservative_raster(name):
    vertices, faces = _canonical(name)
    for cam in _cameras():
        grids, _ = FR.frustum_grids(vertices, faces, cam, (32, 64))
        for r, grid in grids.items():
            uv, _ = cam.resized(r).project(vertices)
            raster = _conservative_raster(uv[faces], r)
            silhouette = grid.any(axis=2)
            assert (silhouette == raster).mean() >= 0.999, (name, r)
            assert raster.sum() > 20


@pytest.mark.parametrize("name", sorted(MESHES))
def test_silhouette_and_first_depth_match_ray_casting(name):
    # Issue 4's criteria: silhouettes agree on >= 99% of pixels, the first
    # occupied bin is within one bin of the ray-cast depth on >= 95% of
    # silhouette pixels. Measured here with margin (>= 99.8% / >= 99%).
    vertices, faces = _canonical(name)
    for cam in _cameras():
        grids, (near, far) = FR.frustum_grids(vertices, faces, cam, (32, 64))
        for r, grid in grids.items():
            hit, depth = _ray_cast(vertices, faces, cam, r, sub=4)
            silhouette = grid.any(axis=2)
            assert (silhouette == hit).mean() >= 0.998, (name, r)
            assert not (hit & ~silhouette).any()  # conservative: never misses a hit pixel
            both = hit & silhouette
            first_bin = np.argmax(grid, axis=2)[both]
            w = r * (1.0 / near - 1.0 / depth[both]) / (1.0 / near - 1.0 / far)
            ray_bin = np.clip(np.floor(w), 0, r - 1)
            assert (np.abs(first_bin - ray_bin) <= 1).mean() >= 0.99, (name, r)
            assert np.all(first_bin <= ray_bin)  # the grid is never behind the surface


@pytest.mark.parametrize("name", ["torus", "sphere", "box"])
def test_frustum_interior_is_the_mesh_interior(name):
    # Fill happens in frustum space; map cell centres back to the world and
    # classify them by ray parity.
    vertices, faces = _canonical(name)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    cam = _cameras()[1]
    r = 24
    filled = FR.frustum_grid(vertices, faces, cam, r)
    surface = FR.frustum_grid(vertices, faces, cam, r, fill=False)
    near, far = C.near_far(vertices, cam)
    cells = np.argwhere(~surface)
    world = C.frustum_to_world(cells + 0.5, cam, near, far, r)
    inside = mesh.contains(world)
    np.testing.assert_array_equal(filled[~surface], inside)
    assert inside.sum() > 10


def test_multi_resolution_grids_equal_direct_grids():
    vertices, faces = _canonical("chair")
    cam = _cameras()[0]
    grids, near_far = FR.frustum_grids(vertices, faces, cam, (16, 32, 64))
    for r in (16, 32):
        np.testing.assert_array_equal(grids[r], FR.frustum_grid(vertices, faces, cam, r))
    deep = FR.frustum_grid(vertices, faces, cam, 16, near_far=near_far, depth=48)
    assert deep.shape == (16, 16, 48)
    np.testing.assert_array_equal(deep.any(axis=2), grids[16].any(axis=2))
    world = FR.world_grids(vertices, faces, (16, 32))
    assert world[16].shape == (16, 16, 16) and world[32].sum() > world[16].sum()


def _blob(rng, n=10):
    grid = np.zeros((n, n, n), bool)
    centre = np.array([n / 2, n / 2, n / 2])
    idx = np.argwhere(np.ones_like(grid))
    radius = n * 0.35 * (1 + 0.3 * np.sin(idx[:, 0]) * np.cos(idx[:, 2]))
    grid[tuple(idx.T)] = np.linalg.norm(idx + 0.5 - centre, axis=1) < radius
    grid[1:3, 1:3, :] = True  # a thin bar touching the sphere
    return grid


def test_voxel_boundary_mesh_is_closed_with_the_right_volume():
    grid = _blob(np.random.default_rng(0))
    lower, upper = np.array([-0.5, -0.4, -0.3]), np.array([0.5, 0.6, 0.7])
    vertices, faces = FR.voxel_boundary_mesh(grid, lower, upper)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    cell_volume = np.prod((upper - lower) / 10)
    assert mesh.volume == pytest.approx(grid.sum() * cell_volume)  # outward orientation
    assert np.all(vertices >= lower - 1e-12) and np.all(vertices <= upper + 1e-12)


def test_r2n2_import_silhouette_matches_cubes():
    grid = _blob(np.random.default_rng(1))
    lower, upper = np.full(3, -0.45), np.full(3, 0.45)
    cam = C.r2n2_camera(C.R2N2View(47.0, 27.0, 0.0, 0.8, 25.0))
    frustum, (near, far) = FR.frustum_grid_from_voxels(grid, lower, upper, cam, resolution=32)
    assert frustum.shape == (32, 32, 32)
    # Independent: the 12 triangles of every occupied cube, projected.
    size = (upper - lower) / grid.shape[0]
    triangles = []
    for cell in np.argwhere(grid):
        box = trimesh.creation.box(size, trimesh.transformations.translation_matrix(lower + (cell + 0.5) * size))
        triangles.append(box.vertices[box.faces])
    triangles = np.concatenate(triangles)
    uv, depth = cam.resized(32).project(triangles.reshape(-1, 3))
    raster = _conservative_raster(uv.reshape(-1, 3, 2), 32)
    assert (frustum.any(axis=2) == raster).mean() >= 0.999
    assert near == pytest.approx(depth.min()) and far == pytest.approx(depth.max())
    # The solid was filled: more cells than the surface alone.
    surface, _ = FR.frustum_grid_from_voxels(grid, lower, upper, cam, resolution=32, fill=False)
    assert frustum.sum() > surface.sum()


def test_voxel_bounds_from_mesh():
    grid = np.zeros((8, 8, 8), bool)
    grid[2:6, 1:7, 3:5] = True
    vertices = np.array([[0.0, 0.0, 0.0], [0.4, 1.2, 0.4]])
    lower, upper = FR.voxel_bounds_from_mesh(grid, vertices)
    cell = (upper - lower) / 8
    np.testing.assert_allclose(lower + 2 * cell * [1, 0.5, 1.5], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cell, [0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="empty"):
        FR.voxel_bounds_from_mesh(np.zeros((2, 2, 2), bool), vertices)
