"""Conservative voxelization of triangle meshes (exact triangle-box overlap).

A cell is filled when the closed triangle and the closed cell intersect
(touching counts), decided by the separating-axis test of Akenine-Moeller
("Fast 3D triangle-box overlap testing", 2001): the 3 box normals, the
triangle normal and the 9 cross products of triangle edges with box axes.
The interior is then filled: every empty cell that is not 6-connected to the
outside of the grid through empty cells.

Everything works in *grid-index space*: cell ``(i, j, k)`` is the closed box
``[i, i + 1] x [j, j + 1] x [k, k + 1]``. World grids map ``[lo, hi]^3`` to
``[0, R]^3``; frustum grids use the projective map of
:mod:`ige_tf.voxel.camera` (see ``docs/voxel_geometry.md``).

Two interchangeable backends of :func:`voxelize_surface_index` give the same
cells:

* ``"numba"`` (default when numba is installed): a compiled loop over the
  indexed mesh. Long triangles are split along their longest edge (explicit
  stack). With d the dominant axis of the normal and a, b the other two, each
  strip ``a in [i, i+1]`` visits only the b-range and d-range of the triangle
  within that strip (scanline), and each column only the cells whose d-range
  meets the triangle's plane (at most 3); the separating-axis test decides
  each visited cell. Boxes one cell thick in two axes are filled directly.
* ``"numpy"``: triangles larger than a few cells are split along their longest
  edge (the union of the pieces is the triangle, so this is exact); each
  triangle enumerates the cells of its bounding box; triangles are grouped by
  bounding-box extent so that a group is one dense ``[G, M]`` batch. Boxes one
  cell thick in one axis need only the 2D test of the other two axes; boxes
  one cell thick in two axes are filled without a test (a connected set whose
  box is one cell thick in two axes meets every cell of its box).

Several resolutions that divide each other come from one voxelization at the
finest one: OR-pooling a conservative surface grid is exact because a coarse
closed cell is the union of its fine closed cells.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import scipy.ndimage

try:  # Optional accelerator; the numpy path gives identical results.
    import numba
except ImportError:  # pragma: no cover - exercised only without numba
    numba = None

RESOLUTIONS = (32, 64, 128, 256)
BACKENDS = ("numba", "numpy") if numba is not None else ("numpy",)
DEFAULT_BACKEND = BACKENDS[0]

# Triangles whose bounding box spans more than this many cells along an axis
# are split along their longest edge before enumeration.
_MAX_EXTENT = 4
_MAX_EXTENT_NUMBA = 16
# Upper bound on G * Q * M floats in one vectorized block.
_BLOCK_ELEMENTS = 1 << 21

# Separating axes per triangle, in this order: plane normal, then e_i x u_x,
# e_i x u_y, e_i x u_z for the three edges e_0, e_1, e_2.
_AXES_2D = {0: slice(1, 4), 1: slice(4, 7), 2: slice(7, 10)}


def _as_triangles(triangles) -> np.ndarray:
    triangles = np.asarray(triangles, dtype=np.float64)
    if triangles.ndim != 3 or triangles.shape[1:] != (3, 3):
        raise ValueError(f"triangles must have shape [F, 3, 3], got {triangles.shape}")
    return triangles


def _tri_min(triangles: np.ndarray) -> np.ndarray:
    """float [F, 3] per-axis minimum over the 3 vertices (faster than .min(axis=1))."""
    return np.minimum(np.minimum(triangles[:, 0], triangles[:, 1]), triangles[:, 2])


def _tri_max(triangles: np.ndarray) -> np.ndarray:
    """float [F, 3] per-axis maximum over the 3 vertices."""
    return np.maximum(np.maximum(triangles[:, 0], triangles[:, 1]), triangles[:, 2])


def _separating_axes(triangles: np.ndarray) -> np.ndarray:
    """The 10 non-box separating axes of each triangle.

    Args:
      triangles: float64 [F, 3, 3].

    Returns:
      float64 [F, 10, 3]: triangle normal, then ``e_i x u_k`` for box axis k
      (outer) and edge i (inner) -- see ``_AXES_2D``.
    """
    v0, v1, v2 = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    edges = np.stack([v1 - v0, v2 - v1, v0 - v2], axis=1)  # [F, 3, 3]
    normal = np.cross(edges[:, 0], edges[:, 1])
    ex, ey, ez = edges[..., 0], edges[..., 1], edges[..., 2]
    zero = np.zeros_like(ex)
    cross_x = np.stack([zero, ez, -ey], axis=-1)  # e x (1, 0, 0)
    cross_y = np.stack([-ez, zero, ex], axis=-1)  # e x (0, 1, 0)
    cross_z = np.stack([ey, -ex, zero], axis=-1)  # e x (0, 0, 1)
    return np.concatenate([normal[:, None], cross_x, cross_y, cross_z], axis=1)


def triangle_box_overlap(triangles, box_min, box_max) -> np.ndarray:
    """Exact overlap test of closed triangles and closed axis-aligned boxes.

    Pairwise (row ``n`` of each input is one pair); all 13 separating axes.
    Degenerate triangles (segments, points) are handled: their zero axes never
    separate, and the remaining axes are exactly the separating axes of a
    segment (or point) and a box.

    Args:
      triangles: float [N, 3, 3], vertex ``j`` of triangle ``n`` is ``[n, j]``.
      box_min: float [N, 3] lower box corners.
      box_max: float [N, 3] upper box corners (``>= box_min``).

    Returns:
      bool [N]: True where triangle and box intersect (touching counts).
    """
    triangles = _as_triangles(triangles)
    box_min = np.broadcast_to(np.asarray(box_min, np.float64), (len(triangles), 3))
    box_max = np.broadcast_to(np.asarray(box_max, np.float64), (len(triangles), 3))
    center = 0.5 * (box_min + box_max)
    half = 0.5 * (box_max - box_min)
    local = triangles - center[:, None, :]
    # Box normals: bounding-box overlap.
    overlap = np.all(local.min(axis=1) <= half, axis=1) & np.all(local.max(axis=1) >= -half, axis=1)
    axes = _separating_axes(local)  # [N, 10, 3]
    proj = np.einsum("nqd,njd->nqj", axes, local)
    radius = np.einsum("nqd,nd->nq", np.abs(axes), half)
    overlap &= np.all((proj.min(axis=2) <= radius) & (proj.max(axis=2) >= -radius), axis=1)
    return overlap


def _split_large(triangles: np.ndarray, max_extent: int) -> np.ndarray:
    """Splits triangles along their longest edge until the bbox extent is small.

    Args:
      triangles: float64 [F, 3, 3] in grid-index space.
      max_extent: largest allowed bbox extent, in cells, along any axis.

    Returns:
      float64 [F', 3, 3] whose union equals the union of the inputs.
    """
    done = []
    todo = triangles
    while len(todo):
        extent = _tri_max(todo) - _tri_min(todo)
        large = np.any(extent > max_extent - 1, axis=1)
        done.append(todo[~large])
        todo = todo[large]
        if not len(todo):
            break
        v = todo
        lengths = np.stack(
            [
                np.sum((v[:, 1] - v[:, 0]) ** 2, axis=1),
                np.sum((v[:, 2] - v[:, 1]) ** 2, axis=1),
                np.sum((v[:, 0] - v[:, 2]) ** 2, axis=1),
            ],
            axis=1,
        )
        longest = np.argmax(lengths, axis=1)
        # Rotate vertices so that the longest edge is (a, b); c is opposite.
        order = (longest[:, None] + np.arange(3)[None, :]) % 3
        rot = np.take_along_axis(v, order[:, :, None], axis=1)
        a, b, c = rot[:, 0], rot[:, 1], rot[:, 2]
        mid = 0.5 * (a + b)
        todo = np.concatenate(
            [np.stack([a, mid, c], axis=1), np.stack([mid, b, c], axis=1)], axis=0
        )
    return np.concatenate(done, axis=0) if done else triangles[:0]


def _cell_offsets(extent: Tuple[int, int, int]) -> np.ndarray:
    """int64 [M, 3] offsets of all cells of a box of the given extent."""
    grids = np.meshgrid(*(np.arange(n) for n in extent), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


def voxelize_surface_index(triangles, shape: Sequence[int], backend: str | None = None) -> np.ndarray:
    """Conservative surface voxelization in grid-index space.

    Args:
      triangles: float [F, 3, 3] triangle vertices in grid-index coordinates:
        cell ``(i, j, k)`` is the closed box ``[i, i+1] x [j, j+1] x [k, k+1]``.
        Parts outside ``[0, X] x [0, Y] x [0, Z]`` are ignored; triangles with
        non-finite coordinates are ignored.
      shape: ``(X, Y, Z)`` grid shape.
      backend: ``"numba"`` (compiled loop, default when numba is installed)
        or ``"numpy"`` (vectorized); both give the same cells.

    Returns:
      bool [X, Y, Z]: True for every cell a triangle intersects (touching
      counts).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints, got {shape}")
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triangles = _as_triangles(triangles)
    grid = np.zeros(shape, dtype=bool)
    if not len(triangles):
        return grid
    if backend == "numba":
        faces = np.arange(3 * len(triangles), dtype=np.int64).reshape(-1, 3)
        _surface_kernel(np.ascontiguousarray(triangles.reshape(-1, 3)), faces, grid, float(_MAX_EXTENT_NUMBA))
        return grid
    dims = np.array(shape, dtype=np.float64)
    lo = _tri_min(triangles)
    hi = _tri_max(triangles)
    # NaN compares False, so non-finite triangles are dropped here too.
    keep = np.all((hi >= 0.0) & (lo <= dims) & np.isfinite(lo) & np.isfinite(hi), axis=1)
    if not keep.all():
        triangles = triangles[keep]
    if not len(triangles):
        return grid
    _surface_numpy(_split_large(triangles, _MAX_EXTENT), grid)
    return grid


def _surface_numpy(triangles: np.ndarray, grid: np.ndarray) -> None:
    """Vectorized numpy path of :func:`voxelize_surface_index` (fills ``grid``)."""
    shape = grid.shape
    lo = _tri_min(triangles)
    hi = _tri_max(triangles)
    # Closed cells: cell i touches [lo, hi] iff i <= hi and i + 1 >= lo.
    first = (np.ceil(lo) - 1.0).astype(np.int64)
    last = np.floor(hi).astype(np.int64)
    extent = last - first + 1  # in [1, _MAX_EXTENT + 2]
    flat = grid.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    upper = np.array(shape, dtype=np.int64)

    key = (extent[:, 0] * 64 + extent[:, 1]) * 64 + extent[:, 2]
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        members = order[start:end]
        ext = tuple(int(e) for e in extent[members[0]])
        offsets = _cell_offsets(ext)  # [M, 3]
        base = first[members]  # [G, 3]
        thick = [axis for axis in range(3) if ext[axis] > 1]
        if len(thick) <= 1:
            _scatter(flat, base[:, None, :] + offsets[None], None, upper, strides)
            continue
        if len(thick) == 2:
            flat_axis = ({0, 1, 2} - set(thick)).pop()
            axis_slice = _AXES_2D[flat_axis]
        else:
            axis_slice = slice(0, 10)
        tri = triangles[members]
        num_axes = axis_slice.stop - axis_slice.start
        chunk = max(1, _BLOCK_ELEMENTS // (num_axes * len(offsets)))
        offsets_f = offsets.astype(np.float64)
        for c0 in range(0, len(members), chunk):
            t = tri[c0 : c0 + chunk]
            b = base[c0 : c0 + chunk]
            # Work relative to the centre of the first candidate cell.
            local = t - (b.astype(np.float64) + 0.5)[:, None, :]
            axes = _separating_axes(local)[:, axis_slice]  # [G, Q, 3]
            proj = np.einsum("gqd,gjd->gqj", axes, local)
            radius = 0.5 * np.abs(axes).sum(axis=2)
            pmin = proj.min(axis=2) - radius
            pmax = proj.max(axis=2) + radius
            mid = 0.5 * (pmin + pmax)
            half_width = 0.5 * (pmax - pmin)
            g, q = axes.shape[:2]
            values = (axes.reshape(g * q, 3) @ offsets_f.T).reshape(g, q, -1)
            values -= mid[:, :, None]
            np.abs(values, out=values)
            hit = np.all(values <= half_width[:, :, None], axis=1)  # [G, M]
            _scatter(flat, b[:, None, :] + offsets[None], hit, upper, strides)


def _triangle_cells_py(t, grid, axes, slab_lo, slab_hi, first, last, cell) -> None:
    """Sets the cells of ``grid`` that triangle ``t`` (float64 [3, 3]) meets.

    The 10 non-box separating axes and their slabs ``[min projection - radius,
    max projection + radius]`` are computed once. With d the dominant axis of
    the normal and a, b the others, each strip ``a in [i, i + 1]`` visits the
    columns in the triangle's b-range within the strip, and each column the
    cells in both the triangle's d-range within the strip and the d-range of
    its plane over the column (at most 3 cells, since |n_d| is the largest
    component). All ranges are widened by a relative 1e-9; the
    separating-axis test decides each visited cell. Degenerate triangles (zero
    normal) visit their bounding box strip by strip. Bounding boxes one cell
    thick in two axes are filled without a test. ``axes``, ``slab_*``,
    ``first``, ``last``, ``cell`` are scratch arrays.
    """
    dims = grid.shape
    thick = 0
    for d in range(3):
        lo = min(t[0, d], t[1, d], t[2, d])
        hi = max(t[0, d], t[1, d], t[2, d])
        a = int(np.ceil(lo)) - 1
        b = int(np.floor(hi))
        if b > a:
            thick += 1
        first[d] = max(a, 0)
        last[d] = min(b, dims[d] - 1)
        if first[d] > last[d]:
            return
    if thick <= 1:
        # A connected set whose box is one cell thick in two axes meets every
        # cell of its box.
        for i in range(first[0], last[0] + 1):
            for j in range(first[1], last[1] + 1):
                for k in range(first[2], last[2] + 1):
                    grid[i, j, k] = True
        return
    v0x = t[0, 0]
    v0y = t[0, 1]
    v0z = t[0, 2]
    # Local vertices relative to v0: p0 = 0, p1 = e0, p2 = -e2.
    e0x = t[1, 0] - v0x
    e0y = t[1, 1] - v0y
    e0z = t[1, 2] - v0z
    p2x = t[2, 0] - v0x
    p2y = t[2, 1] - v0y
    p2z = t[2, 2] - v0z
    e1x = p2x - e0x
    e1y = p2y - e0y
    e1z = p2z - e0z
    e2x = -p2x
    e2y = -p2y
    e2z = -p2z
    nx = e0y * e1z - e0z * e1y
    ny = e0z * e1x - e0x * e1z
    nz = e0x * e1y - e0y * e1x
    axes[0, 0] = nx
    axes[0, 1] = ny
    axes[0, 2] = nz
    q = 1
    for k in range(3):
        for ex, ey, ez in ((e0x, e0y, e0z), (e1x, e1y, e1z), (e2x, e2y, e2z)):
            if k == 0:
                axes[q, 0] = 0.0
                axes[q, 1] = ez
                axes[q, 2] = -ey
            elif k == 1:
                axes[q, 0] = -ez
                axes[q, 1] = 0.0
                axes[q, 2] = ex
            else:
                axes[q, 0] = ey
                axes[q, 1] = -ex
                axes[q, 2] = 0.0
            q += 1
    for q in range(10):
        a0 = axes[q, 0]
        a1 = axes[q, 1]
        a2 = axes[q, 2]
        s1 = a0 * e0x + a1 * e0y + a2 * e0z
        s2 = a0 * p2x + a1 * p2y + a2 * p2z
        radius = 0.5 * (abs(a0) + abs(a1) + abs(a2))
        slab_lo[q] = min(0.0, s1, s2) - radius
        slab_hi[q] = max(0.0, s1, s2) + radius
    anx = abs(nx)
    any_ = abs(ny)
    anz = abs(nz)
    if anx >= any_ and anx >= anz:
        d, a, b, nd, na, nb = 0, 1, 2, nx, ny, nz
    elif any_ >= anz:
        d, a, b, nd, na, nb = 1, 0, 2, ny, nx, nz
    else:
        d, a, b, nd, na, nb = 2, 0, 1, nz, nx, ny
    degenerate = nd == 0.0
    spread = 0.0
    shift_lo = 0.0
    shift_hi = 0.0
    inv_nd = 0.0
    if not degenerate:
        inv_nd = 1.0 / nd
        spread = 0.5 * (abs(na) + abs(nb)) * abs(inv_nd)
        # The triangle lies in the slab n . (p - v0) in [slab_lo, slab_hi] of
        # axis 0 (minus its radius): exact even when rounding makes n not
        # quite perpendicular to the triangle.
        radius0 = 0.5 * (anx + any_ + anz)
        shift_a = (slab_lo[0] + radius0) * inv_nd
        shift_b = (slab_hi[0] - radius0) * inv_nd
        shift_lo = min(shift_a, shift_b)
        shift_hi = max(shift_a, shift_b)
    vd = t[0, d]
    va = t[0, a]
    vb = t[0, b]
    for ia in range(first[a], last[a] + 1):
        # Range of b over the triangle within the strip a in [ia, ia + 1]:
        # vertices inside the strip and edge crossings of its two boundaries
        # (scanline conservative rasterization of the projection; widened,
        # the separating-axis test below decides exactly).
        strip_lo = float(ia)
        strip_hi = float(ia + 1)
        b_min = np.inf
        b_max = -np.inf
        d_min = np.inf
        d_max = -np.inf
        for j in range(3):
            pa = t[j, a]
            pb = t[j, b]
            pd = t[j, d]
            if strip_lo <= pa <= strip_hi:
                b_min = min(b_min, pb)
                b_max = max(b_max, pb)
                d_min = min(d_min, pd)
                d_max = max(d_max, pd)
            k = (j + 1) % 3
            qa = t[k, a]
            if pa != qa:
                for x in (strip_lo, strip_hi):
                    if min(pa, qa) <= x <= max(pa, qa):
                        w = (x - pa) / (qa - pa)
                        y = pb + w * (t[k, b] - pb)
                        z = pd + w * (t[k, d] - pd)
                        b_min = min(b_min, y)
                        b_max = max(b_max, y)
                        d_min = min(d_min, z)
                        d_max = max(d_max, z)
        if b_min > b_max:
            continue
        tol_b = 1e-9 * (1.0 + abs(b_min) + abs(b_max))
        ib0 = max(first[b], int(np.ceil(b_min - tol_b)) - 1)
        ib1 = min(last[b], int(np.floor(b_max + tol_b)))
        tol_d = 1e-9 * (1.0 + abs(d_min) + abs(d_max))
        row_k0 = max(first[d], int(np.ceil(d_min - tol_d)) - 1)
        row_k1 = min(last[d], int(np.floor(d_max + tol_d)))
        for ib in range(ib0, ib1 + 1):
            k0 = row_k0
            k1 = row_k1
            if not degenerate:
                centre = vd - (na * (ia + 0.5 - va) + nb * (ib + 0.5 - vb)) * inv_nd
                # Widen by a relative epsilon: the SAT below decides exactly.
                tol = 1e-9 * (1.0 + abs(centre))
                k0 = max(k0, int(np.ceil(centre + shift_lo - spread - tol)) - 1)
                k1 = min(k1, int(np.floor(centre + shift_hi + spread + tol)))
            cell[a] = ia
            cell[b] = ib
            for kd in range(k0, k1 + 1):
                cell[d] = kd
                if grid[cell[0], cell[1], cell[2]]:
                    continue
                cx = cell[0] + 0.5 - v0x
                cy = cell[1] + 0.5 - v0y
                cz = cell[2] + 0.5 - v0z
                hit = True
                for q in range(10):
                    value = axes[q, 0] * cx + axes[q, 1] * cy + axes[q, 2] * cz
                    if value < slab_lo[q] or value > slab_hi[q]:
                        hit = False
                        break
                if hit:
                    grid[cell[0], cell[1], cell[2]] = True


def _surface_kernel_py(vertices: np.ndarray, faces: np.ndarray, grid: np.ndarray, max_extent: float) -> None:
    """Conservative surface voxelization of an indexed mesh (numba backend).

    Triangles with non-finite vertices are skipped. Triangles whose bounding
    box is longer than ``max_extent`` cells along some axis are split along
    their longest edge (an explicit stack; the pieces' union is the triangle)
    so that no bounding-box column is visited in vain for long diagonal
    triangles.

    Args:
      vertices: float64 [V, 3] in grid-index space.
      faces: int64 [F, 3].
      grid: bool [X, Y, Z], set in place.
      max_extent: split threshold in cells.
    """
    axes = np.empty((10, 3))
    slab_lo = np.empty(10)
    slab_hi = np.empty(10)
    first = np.empty(3, np.int64)
    last = np.empty(3, np.int64)
    cell = np.empty(3, np.int64)
    capacity = 64
    stack = np.empty((capacity, 3, 3))
    dims = grid.shape
    for f in range(faces.shape[0]):
        finite = True
        for j in range(3):
            for d in range(3):
                value = vertices[faces[f, j], d]
                if not np.isfinite(value):
                    finite = False
                stack[0, j, d] = value
        if not finite:
            continue
        top = 1
        while top > 0:
            top -= 1
            t = stack[top]
            extent = 0.0
            outside = False
            for d in range(3):
                lo = min(t[0, d], t[1, d], t[2, d])
                hi = max(t[0, d], t[1, d], t[2, d])
                if hi < 0.0 or lo > dims[d]:
                    outside = True
                extent = max(extent, hi - lo)
            if outside:
                continue
            if extent > max_extent and top + 2 <= capacity:
                # Split the longest edge (a, b) at its midpoint; c is opposite.
                best = -1.0
                ia = 0
                for j in range(3):
                    k = (j + 1) % 3
                    length = 0.0
                    for d in range(3):
                        length += (t[k, d] - t[j, d]) ** 2
                    if length > best:
                        best = length
                        ia = j
                ib = (ia + 1) % 3
                ic = (ia + 2) % 3
                for d in range(3):
                    va = t[ia, d]
                    vb = t[ib, d]
                    vc = t[ic, d]
                    mid = 0.5 * (va + vb)
                    stack[top, 0, d] = va
                    stack[top, 1, d] = mid
                    stack[top, 2, d] = vc
                    stack[top + 1, 0, d] = mid
                    stack[top + 1, 1, d] = vb
                    stack[top + 1, 2, d] = vc
                top += 2
                continue
            _triangle_cells(t, grid, axes, slab_lo, slab_hi, first, last, cell)


if numba is not None:
    _triangle_cells = numba.njit(cache=True, nogil=True)(_triangle_cells_py)
    _surface_kernel = numba.njit(cache=True, nogil=True)(_surface_kernel_py)
else:  # pragma: no cover
    _triangle_cells = None
    _surface_kernel = None


def voxelize_surface_mesh_index(vertices, faces, shape: Sequence[int], backend: str | None = None) -> np.ndarray:
    """Conservative surface voxelization of an indexed mesh in grid-index space.

    Same result as ``voxelize_surface_index(vertices[faces], shape)`` without
    gathering the triangles (the numba backend reads the indexed mesh).

    Args:
      vertices: float [V, 3] in grid-index coordinates.
      faces: int [F, 3].
      shape: ``(X, Y, Z)``.
      backend: ``"numba"`` or ``"numpy"``.

    Returns:
      bool [X, Y, Z].
    """
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend != "numba":
        return voxelize_surface_index(np.asarray(vertices, np.float64)[np.asarray(faces)], shape, backend=backend)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints, got {shape}")
    grid = np.zeros(shape, dtype=bool)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if len(faces):
        _surface_kernel(np.ascontiguousarray(vertices, dtype=np.float64), faces, grid, float(_MAX_EXTENT_NUMBA))
    return grid


def _scatter(flat, cells, mask, upper, strides) -> None:
    """Sets ``flat`` at the in-grid cells of ``cells`` (int [G, M, 3]) where mask."""
    if mask is not None:
        cells = cells[mask]
    else:
        cells = cells.reshape(-1, 3)
    valid = np.all((cells >= 0) & (cells < upper), axis=1)
    flat[cells[valid] @ strides] = True


def fill_interior(surface, backend: str | None = None) -> np.ndarray:
    """Fills the interior of a voxelized surface.

    An empty cell is interior when it is not 6-connected (face neighbours)
    through empty cells to the outside of the grid; the grid is treated as
    surrounded by empty space. Work is restricted to the bounding box of the
    occupied cells plus one empty layer, which gives the same result.

    Args:
      surface: bool [X, Y, Z] surface occupancy.
      backend: ``"numba"`` (compiled flood fill) or ``"numpy"``
        (``scipy.ndimage.label``); same result.

    Returns:
      bool [X, Y, Z]: ``surface`` or interior.
    """
    surface = np.asarray(surface, dtype=bool)
    if surface.ndim != 3:
        raise ValueError(f"surface must be 3D, got shape {surface.shape}")
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not surface.any():
        return surface.copy()
    slab = surface.any(axis=0)  # [Y, Z]
    profiles = (surface.reshape(surface.shape[0], -1).any(axis=1), slab.any(axis=1), slab.any(axis=0))
    lo, hi = [], []
    for profile in profiles:
        present = np.flatnonzero(profile)
        lo.append(int(present[0]))
        hi.append(int(present[-1]) + 1)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    padded = np.pad(surface[box], 1, mode="constant", constant_values=False)
    if backend == "numba":
        blocked = np.pad(padded.astype(np.uint8), 1, mode="constant", constant_values=1)
        _outside_kernel(blocked, (1 * blocked.shape[1] + 1) * blocked.shape[2] + 1)
        outside = blocked[1:-1, 1:-1, 1:-1] == 2
    else:
        labels, _ = scipy.ndimage.label(~padded)
        outside = labels == labels[0, 0, 0]
    filled = surface.copy()
    filled[box] = ~outside[1:-1, 1:-1, 1:-1]
    return filled


def _outside_kernel_py(blocked: np.ndarray, start: int) -> None:
    """Flood fill (6-connected, explicit stack) over a flat grid.

    Args:
      blocked: uint8 [X, Y, Z] (C order); 0 = free, 1 = occupied; the outermost
        layer must be 1 (a sentinel, so no bounds checks are needed). Free
        cells reached from ``start`` are set to 2 in place.
      start: flat index of a free cell.
    """
    flat = blocked.reshape(-1)
    ny = blocked.shape[1]
    nz = blocked.shape[2]
    steps = (1, -1, nz, -nz, ny * nz, -ny * nz)
    stack = np.empty(flat.shape[0], np.int64)
    top = 0
    stack[0] = start
    top = 1
    flat[start] = 2
    while top > 0:
        top -= 1
        index = stack[top]
        for step in steps:
            other = index + step
            if flat[other] == 0:
                flat[other] = 2
                stack[top] = other
                top += 1


if numba is not None:
    _outside_kernel = numba.njit(cache=True, nogil=True)(_outside_kernel_py)
else:  # pragma: no cover
    _outside_kernel = None


def or_pool(grid, factor: int) -> np.ndarray:
    """OR-pools a boolean grid by an integer factor along every axis.

    For conservative surface voxelization with closed cells this is exact:
    a coarse cell is the union of its ``factor^3`` fine cells, so a triangle
    meets the coarse cell iff it meets one of the fine cells.

    Args:
      grid: bool [X, Y, Z], every dimension divisible by ``factor``.
      factor: positive int.

    Returns:
      bool [X / factor, Y / factor, Z / factor].
    """
    grid = np.asarray(grid, dtype=bool)
    factor = int(factor)
    if factor == 1:
        return grid.copy()
    x, y, z = grid.shape
    if factor < 1 or x % factor or y % factor or z % factor:
        raise ValueError(f"grid shape {grid.shape} is not divisible by factor {factor}")
    # OR of strided slices, one axis at a time (much faster than reshape + any).
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, None, factor)
        pooled = grid[tuple(index)].copy()
        for offset in range(1, factor):
            index[axis] = slice(offset, None, factor)
            pooled |= grid[tuple(index)]
        grid = pooled
    return grid


def _check_resolutions(resolutions: Iterable[int]) -> Tuple[int, ...]:
    resolutions = tuple(sorted({int(r) for r in resolutions}))
    if not resolutions or resolutions[0] < 1:
        raise ValueError(f"resolutions must be positive ints, got {resolutions}")
    top = resolutions[-1]
    for r in resolutions:
        if top % r:
            raise ValueError(f"resolution {r} does not divide the largest resolution {top}")
    return resolutions


def voxelize_index_multi(
    triangles, shapes: Dict[int, Tuple[int, int, int]], fill: bool = True, backend: str | None = None
) -> Dict[int, np.ndarray]:
    """Voxelizes once at the finest grid and OR-pools to the coarser ones.

    Args:
      triangles: float [F, 3, 3] in the index space of the finest grid.
      shapes: resolution -> grid shape; every shape must be the finest shape
        divided by (finest resolution / resolution) along all axes.
      fill: fill the interior of every grid (after pooling the surface).
      backend: see :func:`voxelize_surface_index`.

    Returns:
      resolution -> bool grid of ``shapes[resolution]``.
    """
    top = _check_resolutions(shapes)[-1]
    surface = voxelize_surface_index(triangles, shapes[top], backend=backend)
    return _pool_and_fill(surface, shapes, fill, backend)


def voxelize_mesh_index_multi(
    vertices, faces, shapes: Dict[int, Tuple[int, int, int]], fill: bool = True, backend: str | None = None
) -> Dict[int, np.ndarray]:
    """:func:`voxelize_index_multi` for an indexed mesh (float [V, 3], int [F, 3])."""
    top = _check_resolutions(shapes)[-1]
    surface = voxelize_surface_mesh_index(vertices, faces, shapes[top], backend=backend)
    return _pool_and_fill(surface, shapes, fill, backend)


def _pool_and_fill(surface, shapes, fill, backend) -> Dict[int, np.ndarray]:
    resolutions = _check_resolutions(shapes)
    top = resolutions[-1]
    out = {}
    for r in resolutions:
        factor = top // r
        if tuple(s // factor for s in shapes[top]) != tuple(shapes[r]) or any(s % factor for s in shapes[top]):
            raise ValueError(f"grid shape {shapes[r]} does not nest in {shapes[top]}")
        pooled = or_pool(surface, factor)
        out[r] = fill_interior(pooled, backend=backend) if fill else pooled
    return out


def world_to_index(vertices, resolution: int, bounds=(-0.5, 0.5)) -> np.ndarray:
    """Maps world points of the cube ``[lo, hi]^3`` to grid-index space.

    Args:
      vertices: float [V, 3] world points.
      resolution: R.
      bounds: ``(lo, hi)`` of the world-aligned cube.

    Returns:
      float64 [V, 3]: ``(vertices - lo) * R / (hi - lo)``.
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    return (np.asarray(vertices, np.float64) - lo) * (resolution / (hi - lo))


def _mesh_triangles(vertices, faces) -> Tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("faces index vertices out of range")
    return vertices, faces


def voxelize(
    vertices, faces, resolution: int, fill: bool = True, bounds=(-0.5, 0.5), backend: str | None = None
) -> np.ndarray:
    """World-aligned conservative voxelization of a triangle mesh.

    Args:
      vertices: float [V, 3] in the canonical frame.
      faces: int [F, 3].
      resolution: R.
      fill: fill the interior (flood fill from outside).
      bounds: ``(lo, hi)``: the grid covers ``[lo, hi]^3``.
      backend: see :func:`voxelize_surface_index`.

    Returns:
      bool [R, R, R] indexed ``[x, y, z]``.
    """
    return voxelize_multi(vertices, faces, (resolution,), fill=fill, bounds=bounds, backend=backend)[int(resolution)]


def voxelize_multi(
    vertices,
    faces,
    resolutions=(32, 64, 128),
    fill: bool = True,
    bounds=(-0.5, 0.5),
    backend: str | None = None,
) -> Dict[int, np.ndarray]:
    """World-aligned grids at several nested resolutions from one voxelization.

    Args:
      vertices: float [V, 3] in the canonical frame.
      faces: int [F, 3].
      resolutions: resolutions that all divide the largest one.
      fill: fill the interior of each grid.
      bounds: ``(lo, hi)`` of the world cube.
      backend: see :func:`voxelize_surface_index`.

    Returns:
      dict R -> bool [R, R, R] indexed ``[x, y, z]``.
    """
    vertices, faces = _mesh_triangles(vertices, faces)
    resolutions = _check_resolutions(resolutions)
    top = resolutions[-1]
    shapes = {r: (r, r, r) for r in resolutions}
    return voxelize_mesh_index_multi(world_to_index(vertices, top, bounds), faces, shapes, fill=fill, backend=backend)
