"""ShapeNet mesh loading, clean-up and the canonical frame.

:func:`load_mesh` reads a ShapeNetCore v1 (``<synset>/<model>/model.obj``) or
v2 (``<synset>/<model>/models/model_normalized.obj``) model with trimesh into
one :class:`Mesh`: all parts concatenated, with per-face colours, per-corner
texture coordinates and texture images when present. Missing material
libraries or textures fall back to a grey colour and are recorded in
``Mesh.warnings``; a mesh that cannot be used raises :class:`MeshError` whose
message names the file and the problem.

Clean-up (:func:`clean_mesh`): vertices with NaN/inf coordinates and the faces
using them are dropped, then faces with zero area (repeated vertices or
collinear corners) and duplicated faces (the same three vertex positions in
any order or orientation; the first is kept).

Canonical frame (:func:`canonicalize`): the axis-aligned bounding box centre
moves to the origin and the longest side is scaled to 1, so the object lies
in ``[-0.5, 0.5]^3`` with ShapeNet's axes (+y up).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import trimesh

SYNSETS: Dict[str, str] = {
    "02691156": "plane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "monitor",
    "03636649": "lamp",
    "03691459": "speaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}
SYNSET_IDS: Tuple[str, ...] = tuple(SYNSETS)
SYNSET_NAMES: Dict[str, str] = {name: synset for synset, name in SYNSETS.items()}

DEFAULT_MAX_FACES = 1_000_000
FALLBACK_COLOR = (178, 178, 178, 255)
# Faces whose doubled area is below this fraction of the squared bounding-box
# diagonal are treated as degenerate.
_AREA_EPS = 1e-12

V1_FILENAME = "model.obj"
V2_FILENAME = os.path.join("models", "model_normalized.obj")


class MeshError(ValueError):
    """A mesh that cannot be used. ``str(error)`` is ``"<path>: <problem>"``."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path) if path is not None else "<array>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclasses.dataclass(frozen=True)
class ShapeNetModel:
    """One model found by :func:`find_models`.

    Attributes:
      synset: WordNet synset id, e.g. ``"03001627"``.
      model_id: the model's directory name.
      path: the OBJ file (it may be missing; :func:`load_mesh` then raises).
      layout: ``"v1"`` or ``"v2"``.
    """

    synset: str
    model_id: str
    path: str
    layout: str


@dataclasses.dataclass
class Mesh:
    """A cleaned triangle mesh with colours, usually in the canonical frame.

    Attributes:
      vertices: float64 [V, 3].
      faces: int64 [F, 3] (every vertex is used).
      face_colors: uint8 [F, 4] RGBA base colour: the material's diffuse
        colour, the file's face colours, or ``FALLBACK_COLOR``. It multiplies
        the texture of textured faces.
      corner_colors: uint8 [F, 3, 4] per-corner colours from OBJ vertex
        colours, or None.
      face_uv: float32 [F, 3, 2] per-corner texture coordinates (0 where the
        face has no texture); ``v = 1`` is the top row of the image.
      face_texture: int32 [F] index into ``textures``, -1 for untextured faces.
      textures: list of uint8 [H, W, C] images, C = 3 or 4, row 0 at the top.
      center: float64 [3] and scale: float, the canonical transform:
        ``canonical = (original - center) * scale``.
      path: source file (or ``"<array>"``).
      warnings: problems that were handled, each ``"<path>: <problem>"``.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_colors: np.ndarray
    corner_colors: Optional[np.ndarray]
    face_uv: np.ndarray
    face_texture: np.ndarray
    textures: List[np.ndarray]
    center: np.ndarray
    scale: float
    path: str
    warnings: List[str]

    @property
    def triangles(self) -> np.ndarray:
        """float64 [F, 3, 3] vertex positions of every face."""
        return self.vertices[self.faces]

    def to_trimesh(self):
        """A ``trimesh.Trimesh`` with the geometry and face colours (no processing)."""
        return trimesh.Trimesh(
            vertices=self.vertices, faces=self.faces, face_colors=self.face_colors, process=False, validate=False
        )

    def sample_color(self, face_index, barycentric) -> np.ndarray:
        """Surface colour at points given by face and barycentric coordinates.

        Textured faces: bilinear texture lookup (coordinates wrap) times the
        face colour. Otherwise the barycentric blend of corner colours, or the
        face colour.

        Args:
          face_index: int [N] faces.
          barycentric: float [N, 3] weights of the face's corners.

        Returns:
          uint8 [N, 4] RGBA.
        """
        face_index = np.asarray(face_index, dtype=np.int64)
        weights = np.asarray(barycentric, dtype=np.float64)
        base = self.face_colors[face_index].astype(np.float64)
        if self.corner_colors is not None:
            corners = self.corner_colors[face_index].astype(np.float64)
            color = np.einsum("nj,njc->nc", weights, corners)
        else:
            color = base.copy()
        textured = self.face_texture[face_index] >= 0
        for texture_id in np.unique(self.face_texture[face_index][textured]):
            rows = np.flatnonzero(self.face_texture[face_index] == texture_id)
            uv = np.einsum("nj,njc->nc", weights[rows], self.face_uv[face_index[rows]].astype(np.float64))
            texel = _bilinear(self.textures[int(texture_id)], uv)
            color[rows] = texel * base[rows] / 255.0
        return np.clip(np.rint(color), 0, 255).astype(np.uint8)


def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrapping. image uint8 [H, W, C]; uv float [N, 2] -> float64 [N, 4]."""
    height, width = image.shape[:2]
    img = image.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] == 3:
        img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255.0)], axis=2)
    x = np.mod(uv[:, 0], 1.0) * width - 0.5
    y = (1.0 - np.mod(uv[:, 1], 1.0)) * height - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    xs = (np.mod(x0, width), np.mod(x0 + 1, width))
    ys = (np.mod(y0, height), np.mod(y0 + 1, height))
    top = img[ys[0], xs[0]] * (1 - fx) + img[ys[0], xs[1]] * fx
    bottom = img[ys[1], xs[0]] * (1 - fx) + img[ys[1], xs[1]] * fx
    return top * (1 - fy) + bottom * fy


def canonicalize(vertices) -> Tuple[np.ndarray, np.ndarray, float]:
    """Moves the bounding-box centre to the origin and scales the longest side to 1.

    Args:
      vertices: float [V, 3], finite, V > 0.

    Returns:
      vertices: float64 [V, 3] in ``[-0.5, 0.5]^3``.
      center: float64 [3] the original bounding-box centre.
      scale: 1 / longest side: ``canonical = (original - center) * scale``.

    Raises:
      ValueError: the bounding box has zero size.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    lower = vertices.min(axis=0)
    upper = vertices.max(axis=0)
    center = 0.5 * (lower + upper)
    longest = float(np.max(upper - lower))
    if not longest > 0.0:
        raise ValueError("bounding box has zero size")
    scale = 1.0 / longest
    canonical = (vertices - center) * scale
    # Make the extreme coordinates exact despite rounding.
    np.clip(canonical, -0.5, 0.5, out=canonical)
    return canonical, center, scale


def clean_mesh(vertices, faces, path="<array>") -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """Drops non-finite vertices, degenerate and duplicated faces, unused vertices.

    Args:
      vertices: float [V, 3].
      faces: int [F, 3].
      path: file named in warnings.

    Returns:
      vertices: float64 [V', 3] (only used vertices).
      faces: int64 [F', 3] into the new vertices.
      kept: int64 [F'] index of each kept face in the input faces.
      warnings: list of ``"<path>: <problem>"`` strings.

    Raises:
      MeshError: no faces, indices out of range, or no face survives.
    """
    path = os.fspath(path)
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    warnings: List[str] = []
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshError(path, f"vertices must have shape [V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError(path, "empty mesh (no faces)" if faces.size == 0 else f"faces must have shape [F, 3], got {faces.shape}")
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(path, f"face indices out of range [0, {len(vertices)})")
    total = len(faces)
    kept = np.arange(total)

    finite_vertex = np.all(np.isfinite(vertices), axis=1)
    if not finite_vertex.all():
        good = np.all(finite_vertex[faces], axis=1)
        warnings.append(
            f"{path}: dropped {int((~finite_vertex).sum())} vertices with NaN/inf coordinates "
            f"and the {int((~good).sum())} faces using them"
        )
        faces, kept = faces[good], kept[good]
    if not len(faces):
        raise MeshError(path, f"no valid faces: all {total} faces use NaN/inf vertices")

    used = np.unique(faces)
    used_vertices = vertices[used]
    diagonal2 = float(np.sum((used_vertices.max(axis=0) - used_vertices.min(axis=0)) ** 2))
    # Merge vertices at identical positions to find repeated corners and duplicates.
    _, position_id = np.unique(vertices[used], axis=0, return_inverse=True)
    merged = np.full(len(vertices), -1, dtype=np.int64)
    merged[used] = position_id.reshape(-1)
    ids = merged[faces]
    tri = vertices[faces]
    doubled_area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    degenerate = (
        (ids[:, 0] == ids[:, 1])
        | (ids[:, 1] == ids[:, 2])
        | (ids[:, 0] == ids[:, 2])
        | (doubled_area <= _AREA_EPS * diagonal2)
    )
    if degenerate.any():
        warnings.append(f"{path}: dropped {int(degenerate.sum())} zero-area faces")
        faces, kept, ids = faces[~degenerate], kept[~degenerate], ids[~degenerate]
    if not len(faces):
        raise MeshError(path, f"no valid faces: all {total} faces are degenerate (zero area)")

    _, first = np.unique(np.sort(ids, axis=1), axis=0, return_index=True)
    if len(first) < len(faces):
        first = np.sort(first)
        warnings.append(f"{path}: dropped {len(faces) - len(first)} duplicated faces")
        faces, kept = faces[first], kept[first]

    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3).astype(np.int64), kept, warnings


def mesh_from_arrays(
    vertices,
    faces,
    path="<array>",
    canonical: bool = True,
    face_colors=None,
    max_faces: int = DEFAULT_MAX_FACES,
) -> Mesh:
    """Builds a cleaned :class:`Mesh` from arrays (no file involved).

    Args:
      vertices: float [V, 3].
      faces: int [F, 3].
      path: name used in warnings and errors.
      canonical: move to the canonical frame.
      face_colors: optional uint8 [F, 3 or 4]; default ``FALLBACK_COLOR``.
      max_faces: larger meshes raise :class:`MeshError`.

    Returns:
      The :class:`Mesh`.
    """
    faces = np.asarray(faces)
    num_faces = len(faces) if faces.ndim == 2 else 0
    colors = np.tile(np.array(FALLBACK_COLOR, np.uint8), (num_faces, 1))
    if face_colors is not None:
        face_colors = np.asarray(face_colors, dtype=np.uint8)
        colors[:, : face_colors.shape[1]] = face_colors
    raw = Mesh(
        vertices=np.asarray(vertices, dtype=np.float64),
        faces=faces,
        face_colors=colors,
        corner_colors=None,
        face_uv=np.zeros((num_faces, 3, 2), np.float32),
        face_texture=np.full(num_faces, -1, np.int32),
        textures=[],
        center=np.zeros(3),
        scale=1.0,
        path=os.fspath(path),
        warnings=[],
    )
    return _finish(raw, canonical, max_faces)


def _finish(raw: Mesh, canonical: bool, max_faces: int) -> Mesh:
    """Cleans (:func:`clean_mesh`) and optionally canonicalizes a mesh as read.

    ``raw`` holds the arrays as read (``center`` zero, ``scale`` 1). The
    result keeps its textures, path and warnings (plus the clean-up's) and the
    per-face data of the faces that survive.
    """
    path = raw.path
    if raw.faces.ndim != 2 or len(raw.faces) == 0:
        raise MeshError(path, "empty mesh (no faces)")
    if len(raw.faces) > max_faces:
        raise MeshError(path, f"too many faces: {len(raw.faces)} > max_faces={max_faces}")
    vertices, faces, kept, clean_warnings = clean_mesh(raw.vertices, raw.faces, path)
    center = np.zeros(3)
    scale = 1.0
    if canonical:
        try:
            vertices, center, scale = canonicalize(vertices)
        except ValueError as error:
            raise MeshError(path, str(error)) from None
    return dataclasses.replace(
        raw,
        vertices=vertices,
        faces=faces,
        face_colors=np.ascontiguousarray(raw.face_colors[kept]),
        corner_colors=raw.corner_colors[kept] if raw.corner_colors is not None else None,
        face_uv=np.ascontiguousarray(raw.face_uv[kept]),
        face_texture=np.ascontiguousarray(raw.face_texture[kept]),
        center=center,
        scale=scale,
        warnings=list(raw.warnings) + clean_warnings,
    )


class _AssetResolver:
    """Finds MTL files and textures the way ShapeNet lays them out.

    Tries the name relative to the OBJ directory, then its basename in the OBJ
    directory, ``images/``, ``../images/`` and ``..``, case-insensitively.
    Records the names it could not find.
    """

    def __init__(self, obj_path: str):
        self.directory = os.path.dirname(os.path.abspath(obj_path))
        self.file_name = os.path.basename(obj_path)
        self.missing: List[str] = []
        self.found: List[str] = []

    def _candidates(self, name: str) -> Iterable[str]:
        name = name.strip().strip('"')
        tokens = name.split()
        names = [name] + ([tokens[-1]] if len(tokens) > 1 else [])
        roots = [
            self.directory,
            os.path.join(self.directory, "images"),
            os.path.join(self.directory, os.pardir, "images"),
            os.path.join(self.directory, os.pardir),
        ]
        for item in names:
            item = item.replace("\\", "/")
            yield os.path.join(self.directory, item)
            base = os.path.basename(item)
            for root in roots:
                yield os.path.join(root, base)
        for item in names:
            base = os.path.basename(item.replace("\\", "/")).lower()
            for root in roots:
                if os.path.isdir(root):
                    for entry in os.listdir(root):
                        if entry.lower() == base:
                            yield os.path.join(root, entry)

    def get(self, name: str) -> bytes:
        for candidate in self._candidates(name):
            if os.path.isfile(candidate):
                with open(candidate, "rb") as handle:
                    data = handle.read()
                self.found.append(name.strip())
                return data
        self.missing.append(name.strip())
        raise OSError(f"asset not found: {name}")

    def __getitem__(self, name: str) -> bytes:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return any(os.path.isfile(c) for c in self._candidates(name))

    def keys(self):
        return iter(os.listdir(self.directory))

    def namespaced(self, namespace: str) -> "_AssetResolver":
        return _AssetResolver(os.path.join(self.directory, namespace, self.file_name))

    def write(self, name, data):  # pragma: no cover - never called when loading
        raise NotImplementedError


def _scan_obj(path: str) -> Tuple[int, List[str]]:
    """One pass over an OBJ: number of ``f`` lines (a lower bound of the
    triangle count) and the ``mtllib`` names."""
    count = 0
    libraries: List[str] = []
    previous = b"\n"
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 24)
            if not block:
                break
            text = previous[-1:] + block
            count += text.count(b"\nf ")
            position = text.find(b"\nmtllib")
            while position >= 0:
                end = text.find(b"\n", position + 1)
                line = text[position + 1 : end if end >= 0 else len(text)]
                parts = line.split(None, 1)
                if len(parts) == 2:
                    libraries.append(parts[1].decode("utf-8", "replace").strip())
                position = text.find(b"\nmtllib", position + 1)
            previous = block
    return count, libraries


def _material_color(material) -> np.ndarray:
    color = getattr(material, "main_color", None)
    if color is None:
        return np.array(FALLBACK_COLOR, np.uint8)
    color = np.asarray(color).reshape(-1)
    out = np.array(FALLBACK_COLOR, np.uint8)
    if color.dtype.kind == "f" and color.max() <= 1.0:
        color = np.rint(color * 255)
    out[: min(4, len(color))] = np.clip(color[:4], 0, 255).astype(np.uint8)
    return out


def _image_array(image) -> Optional[np.ndarray]:
    if image is None:
        return None
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def load_mesh(path, max_faces: int = DEFAULT_MAX_FACES, canonical: bool = True) -> Mesh:
    """Loads, cleans and (by default) canonicalizes an OBJ (or any trimesh format).

    Args:
      path: mesh file.
      max_faces: meshes with more triangles raise :class:`MeshError`.
      canonical: move to the canonical frame (bounding-box centre at the
        origin, longest side 1).

    Returns:
      The :class:`Mesh`; handled problems are listed in ``mesh.warnings``.

    Raises:
      MeshError: file missing or unreadable, empty mesh, no valid faces,
        too many faces, zero-size mesh. The message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MeshError(path, "file not found")
    warnings: List[str] = []
    is_obj = path.lower().endswith(".obj")
    try:
        libraries: List[str] = []
        if is_obj:
            lower_bound, libraries = _scan_obj(path)
            if lower_bound > max_faces:
                raise MeshError(path, f"too many faces: at least {lower_bound} > max_faces={max_faces}")
        resolver = _AssetResolver(path)
        scene = trimesh.load_scene(path, resolver=resolver, process=False)
    except MeshError:
        raise
    except Exception as error:  # trimesh raises many types on bad files
        raise MeshError(path, f"unreadable mesh file ({type(error).__name__}: {error})") from None

    mtl_missing = False
    if is_obj:
        for library in libraries[:1]:
            if library in resolver.missing:
                mtl_missing = True
                warnings.append(f"{path}: material library '{library}' not found; using fallback colour")
        if len(libraries) > 1:
            warnings.append(f"{path}: only the first of {len(libraries)} material libraries is used")
    for name in resolver.missing:
        if not (mtl_missing and name in libraries):
            warnings.append(f"{path}: texture '{name}' not found; using the material colour")

    return _finish(_scene_mesh(scene, path, mtl_missing, resolver, warnings), canonical, max_faces)


def _scene_mesh(scene, path: str, mtl_missing: bool, resolver: _AssetResolver, warnings: List[str]) -> Mesh:
    """All parts of a trimesh scene as one raw (uncleaned) :class:`Mesh` for :func:`_finish`."""
    vertices, faces, colors, corners, uvs, tex_ids = [], [], [], [], [], []
    textures: List[np.ndarray] = []
    texture_index: Dict[int, int] = {}
    offset = 0
    any_corner = False
    decoded = set()
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        if not hasattr(geometry, "faces") or geometry.faces is None or len(geometry.faces) == 0:
            continue
        v = np.asarray(geometry.vertices, dtype=np.float64)
        if transform is not None and not np.allclose(transform, np.eye(4)):
            v = v @ np.asarray(transform)[:3, :3].T + np.asarray(transform)[:3, 3]
        f = np.asarray(geometry.faces, dtype=np.int64)
        n = len(f)
        visual = geometry.visual
        kind = getattr(visual, "kind", None)
        color = np.tile(np.array(FALLBACK_COLOR, np.uint8), (n, 1))
        corner = None
        uv = np.zeros((n, 3, 2), np.float32)
        tex = np.full(n, -1, np.int32)
        material = getattr(visual, "material", None)
        if isinstance(visual, trimesh.visual.texture.TextureVisuals):
            if material is not None and not mtl_missing:
                color[:] = _material_color(material)
                image = getattr(material, "image", None)
                vertex_uv = getattr(visual, "uv", None)
                if image is not None:
                    file_path = getattr(image, "info", {}).get("file_path")
                    if file_path:
                        decoded.add(file_path.strip())
                    if vertex_uv is None or len(vertex_uv) != len(v):
                        warnings.append(f"{path}: textured part '{geometry_name}' has no texture coordinates; using the material colour")
                if image is not None and vertex_uv is not None and len(vertex_uv) == len(v):
                    key = id(image)
                    if key not in texture_index:
                        array = _image_array(image)
                        texture_index[key] = len(textures)
                        textures.append(array)
                    tex[:] = texture_index[key]
                    uv = np.asarray(vertex_uv, dtype=np.float32)[f]
        elif kind == "face":
            color = np.asarray(visual.face_colors, dtype=np.uint8)[:, :4].copy()
        elif kind == "vertex":
            corner = np.asarray(visual.vertex_colors, dtype=np.uint8)[:, :4][f]
            color = corner.astype(np.float64).mean(axis=1).round().astype(np.uint8)
            any_corner = True
        vertices.append(v)
        faces.append(f + offset)
        colors.append(color)
        corners.append(corner)
        uvs.append(uv)
        tex_ids.append(tex)
        offset += len(v)
    for name in resolver.found:
        if name not in decoded and not name.lower().endswith(".mtl") and name not in _mtl_names(resolver):
            warnings.append(f"{path}: texture '{name}' could not be decoded; using the material colour")
    if not faces:
        raise MeshError(path, "empty mesh (no faces)")
    corner_colors = None
    if any_corner:
        corner_colors = np.concatenate(
            [c if c is not None else np.repeat(col[:, None, :], 3, axis=1) for c, col in zip(corners, colors)]
        )
    return Mesh(
        vertices=np.concatenate(vertices),
        faces=np.concatenate(faces),
        face_colors=np.concatenate(colors),
        corner_colors=corner_colors,
        face_uv=np.concatenate(uvs),
        face_texture=np.concatenate(tex_ids),
        textures=textures,
        center=np.zeros(3),
        scale=1.0,
        path=path,
        warnings=warnings,
    )


def _mtl_names(resolver: _AssetResolver) -> List[str]:
    return [name for name in resolver.found if name.lower().endswith(".mtl")]


def model_path(model_dir, layout: str) -> str:
    """The OBJ path of a model directory for ``layout`` ``"v1"`` or ``"v2"``."""
    if layout == "v1":
        return os.path.join(os.fspath(model_dir), V1_FILENAME)
    if layout == "v2":
        return os.path.join(os.fspath(model_dir), V2_FILENAME)
    raise ValueError(f"layout must be 'v1' or 'v2', got {layout!r}")


def find_models(shapenet_dir, synsets: Optional[Sequence[str]] = SYNSET_IDS) -> List[ShapeNetModel]:
    """Lists the models of a ShapeNetCore v1 or v2 directory.

    Each model directory ``<shapenet_dir>/<synset>/<model_id>/`` is reported
    once: with the v2 file if ``models/model_normalized.obj`` exists, else the
    v1 ``model.obj``. A model directory with neither is still reported (with
    the expected path) so that loading fails with a clear error and the model
    is recorded as skipped. Missing synset directories are skipped.

    Args:
      shapenet_dir: ShapeNetCore root (the directory holding the synset dirs).
      synsets: synset ids to include; None = every 8-digit directory.

    Returns:
      Models sorted by (synset, model_id).

    Raises:
      FileNotFoundError: ``shapenet_dir`` is not a directory.
    """
    root = os.fspath(shapenet_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: ShapeNet directory not found")
    if synsets is None:
        synsets = sorted(d for d in os.listdir(root) if len(d) == 8 and d.isdigit() and os.path.isdir(os.path.join(root, d)))
    models = []
    for synset in sorted(set(synsets)):
        synset_dir = os.path.join(root, synset)
        if not os.path.isdir(synset_dir):
            continue
        for model_id in sorted(os.listdir(synset_dir)):
            model_dir = os.path.join(synset_dir, model_id)
            if not os.path.isdir(model_dir):
                continue
            v2 = model_path(model_dir, "v2")
            v1 = model_path(model_dir, "v1")
            if os.path.isfile(v2) or (not os.path.isfile(v1) and os.path.isdir(os.path.dirname(v2))):
                models.append(ShapeNetModel(synset, model_id, v2, "v2"))
            else:
                models.append(ShapeNetModel(synset, model_id, v1, "v1"))
    return models
