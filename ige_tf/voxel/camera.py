"""Pinhole cameras, view sampling and the projective world -> frustum map.

Conventions (``docs/voxel_geometry.md``):

* World = the canonical object frame (ShapeNet axes, +y up, object in
  ``[-0.5, 0.5]^3``).
* OpenCV camera: ``X_cam = R @ X_world + t``; camera x right, y down, z
  forward (depth > 0 in front of the camera).
* Intrinsics ``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]`` in pixels of the
  ``S x S`` image, ``cx = cy = S / 2``; pixel (row i, column j) covers
  ``u in [j, j + 1)``, ``v in [i, i + 1)``, so its centre is ``(j + 0.5, i + 0.5)``.
* Azimuth ``a`` rotates about world +y, elevation ``e`` is the angle above the
  xz plane: the camera centre is ``d * (cos e sin a, sin e, cos e cos a)`` and
  it looks at the origin with world +y projecting to image "up".
* Frustum grid at resolution R (depth bins D, default R) for a view with depth
  range ``[near, far]``: continuous coordinates
  ``(v * R / S, u * R / S, D * (1/near - 1/z) / (1/near - 1/far))``; cell
  ``(i, j, k)`` is the unit box at ``(i, j, k)``. This map is projective (a 4x4
  matrix followed by division by z), so triangles map to triangles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

DEFAULT_IMAGE_SIZE = 128
DEFAULT_FOV_DEG = 40.0
DEFAULT_DISTANCE = 2.6
NUM_VIEWS = 24
ELEVATION_RANGE_DEG = (25.0, 30.0)
# Radius of the sphere around [-0.5, 0.5]^3.
CANONICAL_BOUNDING_RADIUS = math.sqrt(3.0) / 2.0

# 3D-R2N2 (ShapeNetRendering) cameras, see docs/voxel_geometry.md.
R2N2_IMAGE_SIZE = 137
R2N2_MAX_CAMERA_DISTANCE = 1.75
# Blender's default camera: 35 mm lens on a 32 mm sensor -> 49.13 degrees.
# (The fifth metadata column, 25, is not the field of view the images use.)
R2N2_FOV_DEG = math.degrees(2.0 * math.atan(16.0 / 35.0))

_WORLD_UP = np.array([0.0, 1.0, 0.0])


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera for a square image.

    Attributes:
      intrinsics: float64 [3, 3] K in pixels of the ``S x S`` image.
      extrinsics: float64 [3, 4] ``[R | t]``: ``X_cam = R @ X_world + t``.
      image_size: S, the image width and height in pixels.
    """

    intrinsics: np.ndarray
    extrinsics: np.ndarray
    image_size: int

    def __post_init__(self):
        intrinsics = np.array(self.intrinsics, dtype=np.float64)
        extrinsics = np.array(self.extrinsics, dtype=np.float64)
        if intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be [3, 3], got {intrinsics.shape}")
        if extrinsics.shape != (3, 4):
            raise ValueError(f"extrinsics must be [3, 4], got {extrinsics.shape}")
        if int(self.image_size) < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        intrinsics.setflags(write=False)
        extrinsics.setflags(write=False)
        object.__setattr__(self, "intrinsics", intrinsics)
        object.__setattr__(self, "extrinsics", extrinsics)
        object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def rotation(self) -> np.ndarray:
        """float64 [3, 3] world -> camera rotation R."""
        return self.extrinsics[:, :3]

    @property
    def translation(self) -> np.ndarray:
        """float64 [3] world -> camera translation t."""
        return self.extrinsics[:, 3]

    @property
    def position(self) -> np.ndarray:
        """float64 [3] camera centre in world coordinates, ``-R^T t``."""
        return -self.rotation.T @ self.translation

    @property
    def focal(self) -> float:
        """Focal length in pixels (K[0, 0])."""
        return float(self.intrinsics[0, 0])

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees (for a centred principal point)."""
        return math.degrees(2.0 * math.atan(0.5 * self.image_size / self.focal))

    def resized(self, image_size: int) -> "Camera":
        """The same view for an ``image_size`` square image (K scaled by new/old)."""
        scale = float(image_size) / self.image_size
        intrinsics = self.intrinsics.copy()
        intrinsics[:2] *= scale
        return Camera(intrinsics, self.extrinsics, int(image_size))

    def to_camera(self, points) -> np.ndarray:
        """Maps world points to camera coordinates.

        Args:
          points: float [N, 3] world points.

        Returns:
          float64 [N, 3] camera coordinates (z = depth).
        """
        points = np.asarray(points, dtype=np.float64)
        # np.dot with a contiguous matrix is several times faster than @ here.
        return np.dot(points, np.ascontiguousarray(self.rotation.T)) + self.translation

    def project(self, points) -> Tuple[np.ndarray, np.ndarray]:
        """Projects world points to pixel coordinates.

        Args:
          points: float [N, 3] world points in front of the camera.

        Returns:
          uv: float64 [N, 2], ``u`` = column coordinate, ``v`` = row coordinate,
            in pixels of the ``S x S`` image (pixel centre at ``+0.5``).
          depth: float64 [N] camera z.
        """
        cam = self.to_camera(points)
        hom = cam @ self.intrinsics.T
        return hom[:, :2] / hom[:, 2:3], cam[:, 2]

    def pixel_rays(self, resolution: int | None = None) -> Tuple[np.ndarray, np.ndarray]:
        """World-space rays through pixel centres.

        Args:
          resolution: R; the ``S x S`` pixel grid scaled to ``R x R`` (pixel
            (i, j) at R covers ``u in [j S/R, (j+1) S/R)``). Default S.

        Returns:
          origin: float64 [3] camera centre.
          directions: float64 [R, R, 3] unit directions; ``[i, j]`` is row i,
            column j.
        """
        resolution = self.image_size if resolution is None else int(resolution)
        step = self.image_size / resolution
        centres = (np.arange(resolution) + 0.5) * step
        v, u = np.meshgrid(centres, centres, indexing="ij")
        pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
        cam = pixels @ np.linalg.inv(self.intrinsics).T
        world = cam @ self.rotation  # R^T applied to row vectors
        world /= np.linalg.norm(world, axis=-1, keepdims=True)
        return self.position, world

    def lattice_rays(self, resolution: int, sub: int = 2) -> Tuple[np.ndarray, np.ndarray]:
        """World-space rays through a lattice that includes pixel corners.

        The lattice has ``n = resolution * sub + 1`` points per side at image
        coordinates ``m * S / (resolution * sub)``, m = 0..n-1, so each pixel
        (closed square) at ``resolution`` owns ``(sub + 1)^2`` lattice points,
        corners and edges included. Reduce with :func:`lattice_pool` to get a
        silhouette (any hit) and nearest depth (min) that agree with
        conservative frustum grids.

        Args:
          resolution: R.
          sub: lattice steps per pixel (>= 1).

        Returns:
          origin: float64 [3] camera centre.
          directions: float64 [n, n, 3] unit directions, ``[a, b]`` at row
            coordinate ``v = a * S / (R * sub)`` and column ``u = b * S / (R * sub)``.
        """
        n = int(resolution) * int(sub) + 1
        coords = np.arange(n) * (self.image_size / (int(resolution) * int(sub)))
        v, u = np.meshgrid(coords, coords, indexing="ij")
        pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
        world = pixels @ np.linalg.inv(self.intrinsics).T @ self.rotation
        world /= np.linalg.norm(world, axis=-1, keepdims=True)
        return self.position, world

    def to_dict(self) -> Dict[str, object]:
        """JSON-friendly dict (nested lists)."""
        return {
            "intrinsics": self.intrinsics.tolist(),
            "extrinsics": self.extrinsics.tolist(),
            "image_size": self.image_size,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "Camera":
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(data["intrinsics"]), np.asarray(data["extrinsics"]), int(data["image_size"]))


def lattice_pool(values, sub: int, reduce=np.minimum) -> np.ndarray:
    """Reduces lattice values (see :meth:`Camera.lattice_rays`) to pixels.

    Args:
      values: [n, n] per lattice point, ``n = R * sub + 1`` (e.g. hit depth
        with ``inf`` for misses).
      sub: lattice steps per pixel.
      reduce: binary ufunc, ``np.minimum`` (nearest depth) or
        ``np.logical_or`` (any hit).

    Returns:
      [R, R]: the reduction over each pixel's ``(sub + 1)^2`` lattice points.
    """
    values = np.asarray(values)
    n = values.shape[0]
    if values.ndim != 2 or values.shape[1] != n or (n - 1) % sub:
        raise ValueError(f"values must be [R*sub+1, R*sub+1], got {values.shape} for sub={sub}")
    out = None
    for a in range(sub + 1):
        for b in range(sub + 1):
            part = values[a : a + n - 1 : sub, b : b + n - 1 : sub]
            out = part if out is None else reduce(out, part)
    return out


def intrinsics_matrix(image_size: int, fov_deg: float) -> np.ndarray:
    """Pinhole K for a square image with the principal point at its centre.

    Args:
      image_size: S in pixels.
      fov_deg: full field of view in degrees (horizontal = vertical).

    Returns:
      float64 [3, 3] ``[[f, 0, S/2], [0, f, S/2], [0, 0, 1]]``,
      ``f = (S / 2) / tan(fov / 2)``.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    focal = 0.5 * image_size / math.tan(math.radians(fov_deg) / 2.0)
    centre = 0.5 * image_size
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


def look_at_rotation(position, target=(0.0, 0.0, 0.0), in_plane_deg: float = 0.0) -> np.ndarray:
    """World -> camera rotation of an OpenCV camera looking at ``target``.

    Rows are the camera axes in world coordinates: x right
    (``forward x up``), y down (``forward x right``), z forward. World +y
    projects to image "up". Straight above or below the target (forward
    parallel to +y) the up vector falls back to world -z.

    Args:
      position: float [3] camera centre.
      target: float [3] point the optical axis passes through.
      in_plane_deg: roll about the optical axis: camera point ``(x, y)``
        becomes ``(x cos g - y sin g, x sin g + y cos g)`` (image content turns
        clockwise on screen for positive ``g``).

    Returns:
      float64 [3, 3].
    """
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    norm = np.linalg.norm(forward)
    if norm == 0.0:
        raise ValueError("camera position equals its target")
    forward /= norm
    right = np.cross(forward, _WORLD_UP)
    if np.linalg.norm(right) < 1e-12:
        right = np.cross(forward, np.array([0.0, 0.0, -1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    if in_plane_deg:
        g = math.radians(in_plane_deg)
        roll = np.array([[math.cos(g), -math.sin(g), 0.0], [math.sin(g), math.cos(g), 0.0], [0.0, 0.0, 1.0]])
        rotation = roll @ rotation
    return rotation


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera centre ``d * (cos e sin a, sin e, cos e cos a)`` (float64 [3])."""
    a = math.radians(azimuth_deg)
    e = math.radians(elevation_deg)
    return distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


def look_at_camera(
    azimuth_deg: float,
    elevation_deg: float,
    distance: float = DEFAULT_DISTANCE,
    fov_deg: float = DEFAULT_FOV_DEG,
    image_size: int = DEFAULT_IMAGE_SIZE,
    in_plane_deg: float = 0.0,
) -> Camera:
    """A camera on the viewing sphere looking at the origin.

    Args:
      azimuth_deg: rotation about world +y; 0 puts the camera on +z, 90 on +x.
      elevation_deg: angle above the xz plane.
      distance: distance from the origin.
      fov_deg: full field of view.
      image_size: S.
      in_plane_deg: roll about the optical axis (see :func:`look_at_rotation`).

    Returns:
      The :class:`Camera`.
    """
    if distance <= 0:
        raise ValueError(f"distance must be positive, got {distance}")
    position = camera_position(azimuth_deg, elevation_deg, distance)
    rotation = look_at_rotation(position, in_plane_deg=in_plane_deg)
    extrinsics = np.concatenate([rotation, (-rotation @ position)[:, None]], axis=1)
    return Camera(intrinsics_matrix(image_size, fov_deg), extrinsics, image_size)


def view_seed(seed: int, model_id: str) -> np.random.SeedSequence:
    """Seed sequence of a model's views: depends only on ``seed`` and ``model_id``."""
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    digest = hashlib.sha256(str(model_id).encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed)] + words)


def sample_views(
    model_id: str,
    seed: int = 0,
    num_views: int = NUM_VIEWS,
    elevation_range: Sequence[float] = ELEVATION_RANGE_DEG,
) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded view angles: azimuth uniform in [0, 360), elevation uniform in range.

    Args:
      model_id: the model's id (e.g. a ShapeNet hash).
      seed: global seed; the same (seed, model_id) always gives the same views.
      num_views: V.
      elevation_range: ``(low, high)`` in degrees.

    Returns:
      azimuth_deg: float64 [V] in [0, 360).
      elevation_deg: float64 [V] in ``elevation_range``.
    """
    rng = np.random.default_rng(view_seed(seed, model_id))
    azimuth = rng.uniform(0.0, 360.0, size=int(num_views))
    elevation = rng.uniform(float(elevation_range[0]), float(elevation_range[1]), size=int(num_views))
    return azimuth, elevation


def view_cameras(
    model_id: str,
    seed: int = 0,
    num_views: int = NUM_VIEWS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    distance: float = DEFAULT_DISTANCE,
    fov_deg: float = DEFAULT_FOV_DEG,
    elevation_range: Sequence[float] = ELEVATION_RANGE_DEG,
) -> List[Camera]:
    """The cameras of :func:`sample_views` (list of V :class:`Camera`)."""
    azimuth, elevation = sample_views(model_id, seed, num_views, elevation_range)
    return [
        look_at_camera(a, e, distance=distance, fov_deg=fov_deg, image_size=image_size)
        for a, e in zip(azimuth, elevation)
    ]


def near_far(vertices, camera: Camera) -> Tuple[float, float]:
    """Depth range of a mesh in a view: min and max vertex depth.

    When the range is empty (a planar object seen edge-on at constant depth)
    it is widened symmetrically to a relative width of 1e-6.

    Args:
      vertices: float [V, 3] world points.
      camera: the view.

    Returns:
      (near, far) with ``0 < near < far``.

    Raises:
      ValueError: no vertices, or a vertex at or behind the camera plane.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not len(vertices):
        raise ValueError(f"vertices must be a non-empty [V, 3] array, got shape {vertices.shape}")
    depth = camera.to_camera(vertices)[:, 2]
    near, far = float(depth.min()), float(depth.max())
    if not near > 0.0:
        raise ValueError(f"object reaches the camera plane (min depth {near:.6g})")
    if far - near < 1e-6 * far:
        pad = 0.5e-6 * far
        near, far = near - pad, far + pad
    return near, far


def world_to_frustum_matrix(camera: Camera, near: float, far: float, resolution: int, depth: int | None = None) -> np.ndarray:
    """The 4x4 projective map from world points to frustum-grid coordinates.

    With ``h = P @ [x, y, z, 1]``, the frustum coordinates are ``h[:3] / h[3]``
    (``h[3]`` is the camera depth z):

      row   = (R / S) * v,        v = (K[1] . X_cam) / z
      col   = (R / S) * u,        u = (K[0] . X_cam) / z
      depth = D * (1/near - 1/z) / (1/near - 1/far) = D * far (z - near) / (z (far - near))

    Args:
      camera: the view (image size S).
      near: depth of frustum coordinate 0 (> 0).
      far: depth of frustum coordinate D (> near).
      resolution: R (rows and columns of the grid).
      depth: D (depth bins), default R.

    Returns:
      float64 [4, 4].
    """
    depth = int(resolution) if depth is None else int(depth)
    if not 0.0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    scale = float(resolution) / camera.image_size
    extrinsics = camera.extrinsics
    matrix = np.zeros((4, 4))
    matrix[0] = scale * (camera.intrinsics[1] @ extrinsics)  # v * z
    matrix[1] = scale * (camera.intrinsics[0] @ extrinsics)  # u * z
    matrix[3] = extrinsics[2]  # z
    matrix[2] = depth * far / (far - near) * (matrix[3] - np.array([0.0, 0.0, 0.0, near]))
    return matrix


def _apply_projective(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape [N, 3], got {points.shape}")
    hom = np.dot(points, np.ascontiguousarray(matrix[:, :3].T)) + matrix[:, 3]
    return hom[:, :3] / hom[:, 3:4]


def world_to_frustum(points, camera: Camera, near: float, far: float, resolution: int, depth: int | None = None) -> np.ndarray:
    """Maps world points to continuous frustum-grid coordinates.

    Args:
      points: float [N, 3] world points with positive depth.
      camera, near, far, resolution, depth: see :func:`world_to_frustum_matrix`.

    Returns:
      float64 [N, 3] ``(row, col, depth bin)`` coordinates; cell ``(i, j, k)``
      is ``[i, i+1) x [j, j+1) x [k, k+1)``.
    """
    return _apply_projective(world_to_frustum_matrix(camera, near, far, resolution, depth), points)


def frustum_to_world(coords, camera: Camera, near: float, far: float, resolution: int, depth: int | None = None) -> np.ndarray:
    """Inverse of :func:`world_to_frustum`.

    Args:
      coords: float [N, 3] frustum-grid coordinates (e.g. cell centres
        ``(i + 0.5, j + 0.5, k + 0.5)``).
      camera, near, far, resolution, depth: see :func:`world_to_frustum_matrix`.

    Returns:
      float64 [N, 3] world points.
    """
    matrix = np.linalg.inv(world_to_frustum_matrix(camera, near, far, resolution, depth))
    return _apply_projective(matrix, coords)


def frustum_bin_depths(near: float, far: float, depth_bins: int) -> np.ndarray:
    """Camera depth of the frustum depth-bin boundaries.

    Args:
      near, far: the view's depth range.
      depth_bins: D.

    Returns:
      float64 [D + 1]: z of coordinate k = 0..D, ``1/z = 1/near - (k/D)(1/near - 1/far)``.
    """
    w = np.arange(depth_bins + 1) / depth_bins
    return 1.0 / (1.0 / near - w * (1.0 / near - 1.0 / far))


@dataclasses.dataclass(frozen=True)
class R2N2View:
    """One line of 3D-R2N2's ``rendering_metadata.txt`` (angles in degrees)."""

    azimuth_deg: float
    elevation_deg: float
    in_plane_deg: float
    distance_ratio: float
    fov_deg: float


def parse_r2n2_metadata(path) -> List[R2N2View]:
    """Reads 3D-R2N2's ``rendering_metadata.txt``.

    Each non-empty line holds five numbers: azimuth, elevation, in-plane
    rotation (degrees), distance ratio, field of view (as written by the
    renderer).

    Args:
      path: the file.

    Returns:
      One :class:`R2N2View` per line, in file order (view 00, 01, ...).

    Raises:
      ValueError: naming the file and line, for a malformed line or no lines.
      FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    views = []
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            if len(fields) != 5:
                raise ValueError(f"{path}: line {number}: expected 5 numbers, got {len(fields)}: {line.strip()!r}")
            try:
                values = [float(x) for x in fields]
            except ValueError:
                raise ValueError(f"{path}: line {number}: not numbers: {line.strip()!r}") from None
            if not all(math.isfinite(x) for x in values) or values[3] <= 0:
                raise ValueError(f"{path}: line {number}: non-finite value or non-positive distance ratio: {line.strip()!r}")
            views.append(R2N2View(*values))
    if not views:
        raise ValueError(f"{path}: no views")
    return views


def r2n2_camera(view: R2N2View, image_size: int = R2N2_IMAGE_SIZE, fov_deg: float | None = None) -> Camera:
    """The camera of a 3D-R2N2 rendering, in ShapeNetCore v1 model coordinates.

    3D-R2N2's Blender script (as reconstructed by Mesh R-CNN / PyTorch3D)
    places the camera at ``distance_ratio * 1.75`` from the origin of the
    ShapeNetCore v1 OBJ coordinates, at azimuth ``A`` about the vertical axis
    and elevation ``E``, looking at the origin with the vertical up. In our
    y-up convention its centre is ``d (cos E cos A, sin E, cos E sin A)``,
    i.e. our azimuth ``90 - A``. Blender's default 35 mm lens on a 32 mm
    sensor gives a 49.13 degree field of view (``R2N2_FOV_DEG``); the metadata's
    fifth column (25) does not match the images and is ignored unless passed
    as ``fov_deg``. The in-plane rotation column is 0 in the released data; it
    is applied as a roll (:func:`look_at_rotation`) with an unverified sign.

    Args:
      view: a parsed metadata line.
      image_size: S (137 for ShapeNetRendering).
      fov_deg: field of view override; default ``R2N2_FOV_DEG``.

    Returns:
      The :class:`Camera` (world = v1 OBJ coordinates).
    """
    return look_at_camera(
        90.0 - view.azimuth_deg,
        view.elevation_deg,
        distance=view.distance_ratio * R2N2_MAX_CAMERA_DISTANCE,
        fov_deg=R2N2_FOV_DEG if fov_deg is None else fov_deg,
        image_size=image_size,
        in_plane_deg=view.in_plane_deg,
    )
