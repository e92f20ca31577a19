"""Per-view frustum voxel grids and world-aligned grids.

A frustum grid of a view is the conservative voxelization of the mesh after
the projective world -> frustum map of :mod:`ige_tf.voxel.camera`: the map
sends triangles to triangles (it is projective and the object is in front of
the camera), so voxelizing the transformed triangles with the exact
triangle-box test gives exactly the frustum cells the surface meets. The
interior is then filled by flood fill from outside *in frustum space*: the map
is a homeomorphism of the half-space ``z > 0`` onto its image, so a closed
surface stays closed and its inside maps to the inside.

Grids at several resolutions nest exactly (frustum coordinates at R are those
at 2R halved, for the same near/far), so each view is voxelized once at the
largest resolution and OR-pooled (see :func:`ige_tf.voxel.voxelize.or_pool`).

3D-R2N2 import (:func:`frustum_grid_from_voxels`): the occupied cubes of a
world grid (e.g. ShapeNetVox32) are turned into their closed boundary surface
(the exposed cube faces), which is voxelized in the view's frustum like any
mesh, then filled.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import voxelize as voxelize_lib


def _used_vertices(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    if not len(faces):
        raise ValueError("mesh has no faces")
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    return vertices if used.all() else vertices[used]


def frustum_grids(
    vertices,
    faces,
    camera: camera_lib.Camera,
    resolutions: Sequence[int] = (32, 64, 128),
    near_far: Optional[Tuple[float, float]] = None,
    fill: bool = True,
    backend: Optional[str] = None,
) -> Tuple[Dict[int, np.ndarray], Tuple[float, float]]:
    """Frustum grids of one view at several nested resolutions.

    Args:
      vertices: float [V, 3] world (canonical-frame) vertices.
      faces: int [F, 3].
      camera: the view.
      resolutions: R values that all divide the largest one; D = R.
      near_far: depth range; default the mesh's min/max vertex depth
        (:func:`ige_tf.voxel.camera.near_far`).
      fill: fill the interior.
      backend: voxelizer backend (see :func:`voxelize_surface_index`).

    Returns:
      grids: dict R -> bool [R, R, R], ``[i, j, k]`` = image row i, column j
        (at resolution R), depth bin k (0 = nearest).
      near_far: the ``(near, far)`` used.
    """
    vertices, faces = voxelize_lib._mesh_triangles(vertices, faces)
    if near_far is None:
        near_far = camera_lib.near_far(_used_vertices(vertices, faces), camera)
    near, far = float(near_far[0]), float(near_far[1])
    resolutions = voxelize_lib._check_resolutions(resolutions)
    top = resolutions[-1]
    coords = camera_lib.world_to_frustum(vertices, camera, near, far, top)
    shapes = {r: (r, r, r) for r in resolutions}
    grids = voxelize_lib.voxelize_mesh_index_multi(coords, faces, shapes, fill=fill, backend=backend)
    return grids, (near, far)


def frustum_grid(
    vertices,
    faces,
    camera: camera_lib.Camera,
    resolution: int,
    near_far: Optional[Tuple[float, float]] = None,
    depth: Optional[int] = None,
    fill: bool = True,
    backend: Optional[str] = None,
) -> np.ndarray:
    """One frustum grid, optionally with a different number of depth bins.

    Args:
      vertices: float [V, 3]; faces: int [F, 3].
      camera: the view.
      resolution: R (rows and columns).
      near_far: depth range; default the mesh's vertex depth range.
      depth: D depth bins, default R.
      fill: fill the interior.
      backend: voxelizer backend.

    Returns:
      bool [R, R, D].
    """
    vertices, faces = voxelize_lib._mesh_triangles(vertices, faces)
    if near_far is None:
        near_far = camera_lib.near_far(_used_vertices(vertices, faces), camera)
    depth = int(resolution) if depth is None else int(depth)
    coords = camera_lib.world_to_frustum(vertices, camera, near_far[0], near_far[1], resolution, depth)
    surface = voxelize_lib.voxelize_surface_mesh_index(coords, faces, (resolution, resolution, depth), backend=backend)
    return voxelize_lib.fill_interior(surface, backend=backend) if fill else surface


def world_grids(
    vertices,
    faces,
    resolutions: Sequence[int] = (32, 64, 128),
    fill: bool = True,
    bounds=(-0.5, 0.5),
    backend: Optional[str] = None,
) -> Dict[int, np.ndarray]:
    """World-aligned grids (see :func:`ige_tf.voxel.voxelize.voxelize_multi`).

    Returns:
      dict R -> bool [R, R, R] indexed ``[x, y, z]`` over ``[lo, hi]^3``.
    """
    return voxelize_lib.voxelize_multi(vertices, faces, resolutions, fill=fill, bounds=bounds, backend=backend)


def voxel_boundary_mesh(occupancy, lower, upper) -> Tuple[np.ndarray, np.ndarray]:
    """Closed surface of the occupied cells of a grid (exposed cube faces).

    Args:
      occupancy: bool [X, Y, Z].
      lower: float [3] world position of the grid's lower corner.
      upper: float [3] world position of the grid's upper corner; cell
        ``(i, j, k)`` covers ``lower + [i, i+1] * (upper - lower) / X`` etc.

    Returns:
      vertices: float64 [V, 3] world lattice points.
      faces: int64 [F, 3] two outward-facing triangles per exposed face.
    """
    occupancy = np.asarray(occupancy, dtype=bool)
    if occupancy.ndim != 3:
        raise ValueError(f"occupancy must be 3D, got shape {occupancy.shape}")
    shape = np.array(occupancy.shape)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    padded = np.pad(occupancy, 1)
    lattice = shape + 1
    quads = []
    for axis in range(3):
        hi_side = np.moveaxis(padded, axis, 0)[1:]
        lo_side = np.moveaxis(padded, axis, 0)[:-1]
        # Planes 0..n along `axis`; drop the padding rows of the other axes.
        exposed = np.moveaxis(lo_side != hi_side, 0, axis)
        sl = [slice(1, -1)] * 3
        sl[axis] = slice(None)
        exposed = exposed[tuple(sl)]
        outward_positive = np.moveaxis(lo_side, 0, axis)[tuple(sl)]  # occupied below the plane
        idx = np.argwhere(exposed)
        if not len(idx):
            continue
        u, w = [a for a in range(3) if a != axis]
        du = np.zeros(3, np.int64)
        dw = np.zeros(3, np.int64)
        du[u] = 1
        dw[w] = 1
        corners = np.stack([idx, idx + du, idx + du + dw, idx + dw], axis=1)  # [Q, 4, 3]
        # (u, w, axis) is right-handed for axis 0 (y, z), 1 (x, z -> left), 2 (x, y).
        positive = outward_positive[tuple(idx.T)]
        right_handed = axis != 1
        flip = positive != right_handed
        corners[flip] = corners[flip][:, ::-1]
        quads.append(corners)
    if not quads:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    quads = np.concatenate(quads)
    flat = (quads[..., 0] * lattice[1] + quads[..., 1]) * lattice[2] + quads[..., 2]
    used, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.reshape(-1, 4)
    faces = np.concatenate([inverse[:, [0, 1, 2]], inverse[:, [0, 2, 3]]])
    points = np.stack(
        [used // (lattice[1] * lattice[2]), (used // lattice[2]) % lattice[1], used % lattice[2]], axis=1
    )
    vertices = lower + points * ((upper - lower) / shape)
    return vertices, faces.astype(np.int64)


def voxel_bounds_from_mesh(occupancy, vertices) -> Tuple[np.ndarray, np.ndarray]:
    """Grid corners that align the occupied cells' box with a mesh's box.

    Per axis, the outer faces of the first and last occupied cells are mapped
    to the mesh's bounding box (for ShapeNetVox32 grids whose header does not
    locate them in the model frame).

    Args:
      occupancy: bool [X, Y, Z] with at least one occupied cell.
      vertices: float [V, 3] mesh vertices in the target frame.

    Returns:
      (lower, upper): float64 [3] each, for :func:`frustum_grid_from_voxels`.
    """
    occupancy = np.asarray(occupancy, dtype=bool)
    if not occupancy.any():
        raise ValueError("occupancy grid is empty")
    idx = np.argwhere(occupancy)
    first = idx.min(axis=0).astype(np.float64)
    last = idx.max(axis=0).astype(np.float64) + 1.0
    vertices = np.asarray(vertices, dtype=np.float64)
    mesh_lo = vertices.min(axis=0)
    mesh_hi = vertices.max(axis=0)
    cell = (mesh_hi - mesh_lo) / (last - first)
    lower = mesh_lo - first * cell
    upper = lower + cell * np.array(occupancy.shape)
    return lower, upper


def frustum_grid_from_voxels(
    occupancy,
    lower,
    upper,
    camera: camera_lib.Camera,
    resolution: int = 32,
    near_far: Optional[Tuple[float, float]] = None,
    fill: bool = True,
    backend: Optional[str] = None,
) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Frustum grid of a view from a world-aligned occupancy grid (3D-R2N2 import).

    The closed surface of the occupied cubes (:func:`voxel_boundary_mesh`) is
    voxelized in the view's frustum and filled, so the grid's silhouette is
    exactly the (conservative) silhouette of the cubes.

    Args:
      occupancy: bool [X, Y, Z] indexed ``[x, y, z]``.
      lower, upper: float [3] world corners of the grid (in the camera's
        world frame), e.g. :attr:`ige_tf.voxel.binvox.Binvox.bounds`.
      camera: the view.
      resolution: R of the frustum grid.
      near_far: depth range; default the cubes' vertex depth range.
      fill: fill the interior.
      backend: voxelizer backend.

    Returns:
      grid: bool [R, R, R].
      near_far: the ``(near, far)`` used.
    """
    vertices, faces = voxel_boundary_mesh(occupancy, lower, upper)
    if not len(faces):
        raise ValueError("occupancy grid is empty")
    grids, near_far = frustum_grids(
        vertices, faces, camera, (resolution,), near_far=near_far, fill=fill, backend=backend
    )
    return grids[int(resolution)], near_far
