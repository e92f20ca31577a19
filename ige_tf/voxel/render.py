"""Headless CPU ray-cast rendering of meshes: RGB, silhouette mask, depth.

One ray per pixel centre gives the silhouette `mask` and the `depth` map
(camera-frame z of the first hit, the OpenCV camera of
`docs/voxel_geometry.md`: X_cam = R @ X_world + t, pixel (row i, column j)
centre at u = j + 0.5, v = i + 0.5). The RGB image averages
`supersample**2` stratified, jittered rays per pixel (anti-aliasing); the
jitter comes from `seed`, so a view renders identically for the same seed.

Colour at a hit: the mesh's surface colour (`Mesh.sample_color`: texture
from the per-corner UVs at the barycentric hit point, bilinear with wrap,
times the material colour; or per-corner / per-face colours) times
Lambertian shading `ambient + diffuse * |n . l|` with the face normal `n`
(two-sided, because ShapeNet normals are often flipped) and a directional
light fixed in the camera frame (above, left of and behind the camera,
`DEFAULT_LIGHT_CAMERA`). Alpha of textures is ignored (surfaces are opaque).
Pixels no ray hits get `background` (white by default).

Ray casting uses Intel Embree through `embreex` (float32 geometry, first hit
only); where `embreex` is missing it falls back to brute-force float64
Moeller-Trumbore tests in numpy (same results, far slower: fine for tests
and small images, not for data preparation). Hit points are recomputed in float64 from
Embree's barycentric coordinates, so depths are exact to float64 on the
triangle.
"""
import dataclasses

import numpy as np

try:  # pylint: disable=g-import-not-at-top
  from embreex import rtcore_scene as _embree_scene
  from embreex.mesh_construction import TriangleMesh as _EmbreeTriangleMesh
  HAS_EMBREE = True
except ImportError:  # pragma: no cover - depends on the installation
  HAS_EMBREE = False

DEFAULT_LIGHT_CAMERA = (-0.35, -0.6, -1.0)   # towards the light, camera frame
DEFAULT_AMBIENT = 0.35
DEFAULT_DIFFUSE = 0.65
DEFAULT_BACKGROUND = (255, 255, 255)
DEFAULT_SUPERSAMPLE = 2


@dataclasses.dataclass
class Rendering:
  """One rendered view.

  Attributes:
    image: uint8 `[S, S, 3]` shaded RGB, `background` where nothing is hit.
    mask: bool `[S, S]` silhouette: the pixel-centre ray hits the mesh.
    depth: float32 `[S, S]` camera-frame z of the pixel-centre hit, 0 where
      `mask` is False.
    face_index: int32 `[S, S]` face hit by the pixel-centre ray, -1 if none.
  """
  image: np.ndarray
  mask: np.ndarray
  depth: np.ndarray
  face_index: np.ndarray


def _unit(vectors):
  norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
  return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


class _EmbreeBackend:
  """First-hit ray casting with Embree (float32)."""

  def __init__(self, vertices, faces):
    # Embree works in float32: shift to the bounding-box centre first.
    self._shift = vertices.mean(axis=0) if len(vertices) else np.zeros(3)
    self._scene = _embree_scene.EmbreeScene()
    _EmbreeTriangleMesh(self._scene, (vertices - self._shift).astype(np.float32),
                        faces.astype(np.int32))

  def first_hit(self, origins, directions):
    """Returns (face int64 [N] (-1 = miss), barycentric float64 [N, 3])."""
    result = self._scene.run((origins - self._shift).astype(np.float32),
                             directions.astype(np.float32), output=1)
    face = result["primID"].astype(np.int64)
    u = result["u"].astype(np.float64)
    v = result["v"].astype(np.float64)
    bary = np.stack([1.0 - u - v, u, v], axis=1)
    return face, bary


class _NumpyBackend:
  """First-hit ray casting by brute-force Moeller-Trumbore tests in numpy.

  O(rays x faces) in chunks: an exact float64 reference for tests and a
  fallback without `embreex` for small meshes and images.
  """

  def __init__(self, vertices, faces, chunk_elements=1 << 22):
    self._v0 = vertices[faces[:, 0]] if len(faces) else np.zeros((0, 3))
    self._e1 = vertices[faces[:, 1]] - self._v0 if len(faces) else np.zeros((0, 3))
    self._e2 = vertices[faces[:, 2]] - self._v0 if len(faces) else np.zeros((0, 3))
    self._chunk = max(1, chunk_elements // max(1, len(faces)))

  def first_hit(self, origins, directions):
    n = len(origins)
    face = np.full(n, -1, np.int64)
    bary = np.zeros((n, 3))
    if not len(self._v0):
      return face, bary
    for start in range(0, n, self._chunk):
      o = origins[start:start + self._chunk, None, :]
      d = directions[start:start + self._chunk, None, :]
      p = np.cross(d, self._e2[None])
      det = np.einsum("rfk,fk->rf", p, self._e1)
      ok = np.abs(det) > 1e-15
      inv = np.divide(1.0, det, out=np.zeros_like(det), where=ok)
      s = o - self._v0[None]
      u = np.einsum("rfk,rfk->rf", s, p) * inv
      q = np.cross(s, self._e1[None])
      v = np.einsum("rfk,rfk->rf", d, q) * inv
      t = np.einsum("fk,rfk->rf", self._e2, q) * inv
      valid = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
      t = np.where(valid, t, np.inf)
      best = np.argmin(t, axis=1)
      rows = np.arange(len(best))
      hit = np.isfinite(t[rows, best])
      index = start + rows[hit]
      face[index] = best[hit]
      bu, bv = u[rows, best][hit], v[rows, best][hit]
      bary[index] = np.stack([1 - bu - bv, bu, bv], axis=1)
    return face, bary


def _camera_arrays(camera=None, intrinsics=None, extrinsics=None, image_size=None):
  """(K [3, 3], R [3, 3], t [3], S) from a Camera or explicit arrays."""
  if camera is not None:
    intrinsics = camera.intrinsics
    extrinsics = camera.extrinsics
    image_size = camera.image_size
  if intrinsics is None or extrinsics is None or image_size is None:
    raise ValueError("render: give a camera or intrinsics, extrinsics and image_size")
  intrinsics = np.asarray(intrinsics, np.float64).reshape(3, 3)
  extrinsics = np.asarray(extrinsics, np.float64).reshape(3, 4)
  return intrinsics, extrinsics[:, :3], extrinsics[:, 3], int(image_size)


def camera_rays(intrinsics, rotation, translation, pixels):
  """World-space rays through image points.

  Args:
    intrinsics: float64 `[3, 3]` K.
    rotation: float64 `[3, 3]` R (world to camera).
    translation: float64 `[3]` t.
    pixels: float64 `[N, 2]` image points (u = column, v = row), pixels.

  Returns:
    (origins float64 `[N, 3]` (the camera centre), directions float64
    `[N, 3]` unit).
  """
  homogeneous = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
  # Contiguous right-hand matrices keep numpy's matmul on its fast path.
  cam_dirs = homogeneous @ np.ascontiguousarray(np.linalg.inv(intrinsics).T)
  directions = _unit(cam_dirs @ np.ascontiguousarray(rotation))  # R^T d per row
  centre = -rotation.T @ translation
  return np.broadcast_to(centre, directions.shape).copy(), directions


class Renderer:
  """Renders one mesh from many views (the ray-casting scene is built once).

  Args:
    mesh: an `ige_tf.voxel.mesh.Mesh` (or any object with `vertices` float
      `[V, 3]`, `faces` int `[F, 3]` and `sample_color(face_index [N],
      barycentric [N, 3]) -> uint8 [N, 4]`).
    light_camera: (3,) direction towards the light in the camera frame.
    ambient, diffuse: shading weights; colour = albedo * (ambient + diffuse |n.l|).
    background: RGB uint8 triple for pixels without a hit.
    supersample: s, the image averages s*s jittered rays per pixel (1: the
      pixel-centre ray only, no randomness).
    backend: "auto" (Embree if installed), "embree" or "numpy" (brute force,
      exact float64, slow: for tests and small meshes).
  """

  def __init__(self, mesh, light_camera=DEFAULT_LIGHT_CAMERA, ambient=DEFAULT_AMBIENT,
               diffuse=DEFAULT_DIFFUSE, background=DEFAULT_BACKGROUND,
               supersample=DEFAULT_SUPERSAMPLE, backend="auto"):
    self.mesh = mesh
    self.vertices = np.asarray(mesh.vertices, np.float64)
    self.faces = np.asarray(mesh.faces, np.int64)
    self.light_camera = _unit(np.asarray(light_camera, np.float64))
    self.ambient = float(ambient)
    self.diffuse = float(diffuse)
    self.background = np.asarray(background, np.float64)
    self.supersample = int(supersample)
    if self.supersample < 1:
      raise ValueError(f"supersample must be >= 1, got {supersample}")
    triangles = self.vertices[self.faces] if len(self.faces) else np.zeros((0, 3, 3))
    self.face_normals = _unit(np.cross(triangles[:, 1] - triangles[:, 0],
                                       triangles[:, 2] - triangles[:, 0]))
    if backend == "auto":
      backend = "embree" if HAS_EMBREE and len(self.faces) else "numpy"
    if backend == "embree":
      if not HAS_EMBREE:
        raise ImportError("render backend 'embree' needs the embreex package")
      self._backend = _EmbreeBackend(self.vertices, self.faces)
    elif backend == "numpy":
      self._backend = _NumpyBackend(self.vertices, self.faces)
    else:
      raise ValueError(f"unknown render backend {backend!r}")
    self.backend = backend

  def _shade(self, face, bary, light_world):
    """Shaded RGB float64 [N, 3] of hits (face >= 0)."""
    albedo = np.asarray(self.mesh.sample_color(face, bary), np.float64)[:, :3]
    lambert = np.abs(self.face_normals[face] @ light_world)
    return albedo * (self.ambient + self.diffuse * lambert)[:, None]

  def render(self, camera=None, seed=0, intrinsics=None, extrinsics=None,
             image_size=None):
    """Renders one view.

    Args:
      camera: an `ige_tf.voxel.camera.Camera` (intrinsics `[3, 3]`,
        extrinsics `[3, 4]`, image_size S), or None and the next three.
      seed: int or sequence of ints (a `np.random.default_rng` seed), seeds
        the anti-aliasing jitter.
      intrinsics: float `[3, 3]` K in pixels of the S x S image.
      extrinsics: float `[3, 4]` [R | t], X_cam = R X_world + t.
      image_size: S.

    Returns:
      `Rendering` with image uint8 `[S, S, 3]`, mask bool `[S, S]`, depth
      float32 `[S, S]`, face_index int32 `[S, S]`.
    """
    k, rot, trans, size = _camera_arrays(camera, intrinsics, extrinsics, image_size)
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1).astype(np.float64)
    origins, directions = camera_rays(k, rot, trans, centres)
    face, bary = self._backend.first_hit(origins, directions)
    hit = face >= 0
    depth = np.zeros(size * size, np.float64)
    if hit.any():
      points = np.einsum("nk,nkd->nd", bary[hit], self.vertices[self.faces[face[hit]]])
      depth[hit] = points @ rot[2] + trans[2]
    light_world = rot.T @ self.light_camera
    s = self.supersample
    if s == 1:
      color = np.broadcast_to(self.background, (size * size, 3)).copy()
      if hit.any():
        color[hit] = self._shade(face[hit], bary[hit], light_world)
    else:
      rng = np.random.default_rng(seed)
      sub = (np.arange(s) + 0.0)[None, :]
      jitter = rng.uniform(0.0, 1.0, size=(size * size, s * s, 2))
      grid_u = np.tile(sub, (s, 1)).ravel()       # column offsets, s*s
      grid_v = np.repeat(sub, s, axis=1).ravel()  # row offsets
      offset_u = (grid_u[None] + jitter[..., 0]) / s
      offset_v = (grid_v[None] + jitter[..., 1]) / s
      pixels = np.stack([cols.ravel()[:, None] + offset_u,
                         rows.ravel()[:, None] + offset_v], axis=-1).reshape(-1, 2)
      sub_origins, sub_dirs = camera_rays(k, rot, trans, pixels)
      sub_face, sub_bary = self._backend.first_hit(sub_origins, sub_dirs)
      sub_color = np.broadcast_to(self.background, (len(pixels), 3)).copy()
      sub_hit = sub_face >= 0
      if sub_hit.any():
        sub_color[sub_hit] = self._shade(sub_face[sub_hit], sub_bary[sub_hit], light_world)
      color = sub_color.reshape(size * size, s * s, 3).mean(axis=1)
    image = np.clip(np.round(color), 0, 255).astype(np.uint8).reshape(size, size, 3)
    return Rendering(image=image, mask=hit.reshape(size, size),
                     depth=depth.astype(np.float32).reshape(size, size),
                     face_index=face.astype(np.int32).reshape(size, size))


def render_view(mesh, camera=None, seed=0, **kwargs):
  """Renders one view of `mesh`; see `Renderer` and `Renderer.render`.

  `kwargs` go to `Renderer` except intrinsics/extrinsics/image_size, which
  go to `render`.
  """
  view_args = {key: kwargs.pop(key) for key in ("intrinsics", "extrinsics", "image_size")
               if key in kwargs}
  return Renderer(mesh, **kwargs).render(camera, seed=seed, **view_args)


def render_views(mesh, cameras, seed=0, **kwargs):
  """Renders `mesh` from every camera; view v uses seed `(seed, v)`.

  Returns:
    list of `Rendering`, one per camera.
  """
  renderer = Renderer(mesh, **kwargs)
  return [renderer.render(camera, seed=[int(seed), view])
          for view, camera in enumerate(cameras)]


class SolidMesh:
  """A mesh of one colour, for rendering geometry without materials.

  Args:
    vertices: float `[V, 3]`.
    faces: int `[F, 3]`.
    color: RGB(A) uint8 colour.
  """

  def __init__(self, vertices, faces, color=(178, 178, 178)):
    self.vertices = np.asarray(vertices, np.float64)
    self.faces = np.asarray(faces, np.int64).reshape(-1, 3)
    rgba = list(color) + [255] * (4 - len(color))
    self.color = np.asarray(rgba, np.uint8)

  def sample_color(self, face_index, barycentric):
    """uint8 `[N, 4]`: the colour everywhere."""
    del barycentric
    return np.broadcast_to(self.color, (len(face_index), 4))


def composite_rgba(rgba, background=DEFAULT_BACKGROUND):
  """Composites an RGBA image over a background colour.

  Args:
    rgba: uint8 `[H, W, 4]`.
    background: RGB triple.

  Returns:
    (uint8 `[H, W, 3]` RGB, bool `[H, W]` alpha > 0).
  """
  rgba = np.asarray(rgba)
  alpha = rgba[..., 3:4].astype(np.float64) / 255.0
  rgb = rgba[..., :3] * alpha + np.asarray(background, np.float64) * (1 - alpha)
  return np.clip(np.round(rgb), 0, 255).astype(np.uint8), rgba[..., 3] > 0
