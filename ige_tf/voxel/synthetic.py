"""Procedural ShapeNet-like models for demos and tests.

`make_synthetic_shapenet` writes OBJ + MTL models (some with small PNG
textures and UVs) in the ShapeNetCore v1 layout

    <out_dir>/<synset>/<model_id>/model.obj (+ model.mtl, textures)

under the real synset ids of the 13 3D-R2N2 categories, so that the data
preparation takes exactly the path it takes on real ShapeNet.
`make_synthetic_records` adds a split file and prepares them
(`prepare_shapenet`): the tiny records directory the benchmarks and tests
train on.

Every model is a union of closed, overlapping primitives (boxes, cylinders,
truncated cones, ellipsoids, convex hulls) with category-specific random
proportions and part layouts: like real ShapeNet meshes the union is not
watertight as a whole and parts interpenetrate. Axes follow ShapeNetCore v1:
+y up, the object's front towards +z. Each model is scaled by a random factor
in [0.5, 2] and offset from the origin so that loaders must canonicalize it.

Output is a deterministic function of (seed, synset, model index): the same
seed writes byte-identical files.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import PIL.Image
import trimesh
from trimesh.visual.material import SimpleMaterial

from ige_tf import atomic
from ige_tf.voxel.mesh import SYNSETS

# Synset id -> category name: the 13 categories of 3D-R2N2, defined once in mesh.py.
CATEGORY_NAMES = SYNSETS

TEXTURE_SIZE = 32


# ----------------------------------------------------------------------------
# Primitives (all closed triangle meshes).


def _rotation(axis, angle_deg):
  """3x3 rotation about a coordinate axis ("x", "y" or "z")."""
  vec = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}[axis]
  return trimesh.transformations.rotation_matrix(np.radians(angle_deg), vec)[:3, :3]


def _place(mesh, center, rotation=None):
  """Rotates `mesh` about the origin, then translates it to `center`."""
  matrix = np.eye(4)
  if rotation is not None:
    matrix[:3, :3] = rotation
  matrix[:3, 3] = center
  mesh.apply_transform(matrix)
  return mesh


def box(size, center, rotation=None):
  """Axis-aligned box of extents `size` (3,) centred at `center`, then rotated."""
  return _place(trimesh.creation.box(extents=size), center, rotation)


def _axis_rotation(axis):
  """Rotation taking +z (trimesh's cylinder axis) to the named axis."""
  if axis == "z":
    return np.eye(3)
  if axis == "y":
    return _rotation("x", -90.0)
  return _rotation("y", 90.0)


def cylinder(radius, length, center, axis="y", sections=16, rotation=None):
  """Closed cylinder along `axis` ("x", "y", "z") centred at `center`."""
  rot = _axis_rotation(axis)
  if rotation is not None:
    rot = rotation @ rot
  mesh = trimesh.creation.cylinder(radius=radius, height=length, sections=sections)
  return _place(mesh, center, rot)


def truncated_cone(radius_bottom, radius_top, length, center, axis="y",
                   sections=16, rotation=None):
  """Closed truncated cone along `axis`; `radius_bottom` at the lower end."""
  angles = np.linspace(0.0, 2 * np.pi, sections, endpoint=False)
  ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  bottom = np.concatenate([ring * radius_bottom,
                           np.full((sections, 1), -length / 2)], axis=1)
  top = np.concatenate([ring * radius_top,
                        np.full((sections, 1), length / 2)], axis=1)
  mesh = trimesh.convex.convex_hull(np.concatenate([bottom, top]))
  rot = _axis_rotation(axis)
  if rotation is not None:
    rot = rotation @ rot
  return _place(mesh, center, rot)


def ellipsoid(radii, center, subdivisions=2, rotation=None):
  """Closed ellipsoid with semi-axes `radii` (3,) centred at `center`."""
  mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
  mesh.vertices = mesh.vertices * np.asarray(radii, dtype=np.float64)
  return _place(mesh, center, rotation)


def hull(points):
  """Closed convex hull of `points` (N, 3)."""
  return trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))


# ----------------------------------------------------------------------------
# Materials and textures.


@dataclasses.dataclass
class _Material:
  name: str
  color: tuple            # RGB uint8
  texture: np.ndarray = None   # uint8 [T, T, 3] or None


def _random_color(rng, palette):
  base = np.asarray(palette[rng.integers(len(palette))], dtype=np.float64)
  jitter = rng.uniform(-25, 25, size=3)
  return tuple(int(c) for c in np.clip(base + jitter, 0, 255))


def _texture(rng, kind, color_a, color_b, size=TEXTURE_SIZE):
  """A small procedural texture, uint8 [size, size, 3]."""
  y, x = np.mgrid[0:size, 0:size] / size
  a = np.asarray(color_a, np.float64)
  b = np.asarray(color_b, np.float64)
  if kind == "checker":
    n = int(rng.integers(2, 6))
    t = ((np.floor(x * n) + np.floor(y * n)) % 2)
  elif kind == "stripes":
    n = int(rng.integers(2, 8))
    t = (np.floor(y * n * 2) % 2)
  elif kind == "wood":
    freq = rng.uniform(6, 14)
    noise = rng.uniform(0, 1, size=(size, 1))
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * y + 0.3 * noise))
  else:  # "noise"
    t = rng.uniform(0, 1, size=(size, size))
  image = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _box_uv(mesh):
  """Per-corner UVs by box projection over the mesh bounds; unmerges vertices.

  Every face is projected along the axis its normal is closest to, and the
  two remaining coordinates are normalized by the bounds to [0, 1].
  """
  mesh.unmerge_vertices()
  lower, upper = mesh.bounds
  extent = np.maximum(upper - lower, 1e-9)
  unit = (mesh.vertices - lower) / extent
  dominant = np.argmax(np.abs(mesh.face_normals), axis=1)
  uv = np.zeros((len(mesh.vertices), 2))
  drop_to_uv = {0: (2, 1), 1: (0, 2), 2: (0, 1)}
  for axis, (ua, va) in drop_to_uv.items():
    corners = mesh.faces[dominant == axis].ravel()
    uv[corners, 0] = unit[corners, ua]
    uv[corners, 1] = unit[corners, va]
  return uv


class _ModelBuilder:
  """Collects parts per material and exports them as one OBJ scene."""

  def __init__(self, rng):
    self.rng = rng
    self.materials = {}
    self.parts = {}

  def material(self, name, palette, texture=None, texture_palette=None):
    """Declares a material; `texture` in (None, "checker", "stripes", ...)."""
    color = _random_color(self.rng, palette)
    image = None
    if texture is not None:
      other = _random_color(self.rng, texture_palette or palette)
      image = _texture(self.rng, texture, color, other)
      color = (255, 255, 255)
    self.materials[name] = _Material(name, color, image)
    self.parts.setdefault(name, [])
    return name

  def add(self, material, *meshes):
    self.parts[material].extend(meshes)

  def scene(self, scale, offset):
    """trimesh.Scene with one geometry per material, scaled and offset."""
    scene = trimesh.Scene()
    for name, meshes in self.parts.items():
      if not meshes:
        continue
      mesh = trimesh.util.concatenate(meshes)
      mesh.apply_scale(scale)
      mesh.apply_translation(offset)
      mat = self.materials[name]
      if mat.texture is not None:
        uv = _box_uv(mesh)
        material = SimpleMaterial(
            image=PIL.Image.fromarray(mat.texture), diffuse=(*mat.color, 255),
            name=name)
        mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
      else:
        material = SimpleMaterial(diffuse=(*mat.color, 255), name=name)
        mesh.visual = trimesh.visual.TextureVisuals(material=material)
      scene.add_geometry(mesh, geom_name=name)
    return scene


# ----------------------------------------------------------------------------
# Categories. Units are roughly metres; +y up, front +z.

_WOOD = [(150, 100, 60), (120, 80, 45), (190, 150, 100), (90, 60, 35)]
_METAL = [(160, 160, 170), (60, 60, 65), (200, 200, 205), (110, 110, 120)]
_FABRIC = [(170, 40, 40), (40, 70, 150), (60, 120, 70), (200, 180, 140),
           (90, 90, 90), (230, 120, 40)]
_PAINT = [(200, 30, 30), (30, 60, 170), (240, 240, 240), (20, 20, 20),
          (230, 200, 40), (40, 140, 70), (150, 150, 160)]
_DARK = [(25, 25, 28), (45, 45, 50), (70, 70, 75)]


def _maybe_texture(rng, probability, kinds):
  return kinds[rng.integers(len(kinds))] if rng.uniform() < probability else None


def _legs(builder, mat, rng, width, depth, height, inset, thickness, round_legs):
  """Four legs from y=0 to `height` at the corners of a width x depth rectangle."""
  for sx in (-1, 1):
    for sz in (-1, 1):
      center = (sx * (width / 2 - inset), height / 2, sz * (depth / 2 - inset))
      if round_legs:
        builder.add(mat, cylinder(thickness / 2, height, center, "y", 12))
      else:
        builder.add(mat, box((thickness, height, thickness), center))


def _chair(b, rng):
  frame = b.material("frame", _WOOD + _METAL)
  seat_mat = b.material("seat", _FABRIC + _WOOD,
                        texture=_maybe_texture(rng, 0.4, ["checker", "noise", "wood"]))
  w, d = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
  t, h = rng.uniform(0.03, 0.08), rng.uniform(0.38, 0.5)
  b.add(seat_mat, box((w, t, d), (0, h - t / 2, 0)))
  legs = rng.choice(["box", "round", "pedestal"])
  if legs == "pedestal":
    b.add(frame, cylinder(0.03, h - t, (0, (h - t) / 2 + 0.02, 0), "y"))
    for k in range(5):
      arm = box((0.28, 0.03, 0.04), (0.14, 0.03, 0), _rotation("y", 72 * k))
      b.add(frame, arm)
  else:
    _legs(b, frame, rng, w, d, h - t, 0.04, rng.uniform(0.03, 0.05), legs == "round")
  back_h, back_t = rng.uniform(0.3, 0.6), rng.uniform(0.03, 0.06)
  tilt = _rotation("x", -rng.uniform(0, 15))
  pivot = np.array([0, h, -d / 2 + back_t / 2])
  style = rng.choice(["solid", "slats", "frame"])
  if style == "solid":
    b.add(seat_mat, box((w, back_h, back_t), pivot + tilt @ [0, back_h / 2, 0], tilt))
  else:
    for sx in (-1, 1):
      b.add(frame, box((0.04, back_h, back_t),
                       pivot + tilt @ [sx * (w / 2 - 0.02), back_h / 2, 0], tilt))
    b.add(frame, box((w, 0.06, back_t), pivot + tilt @ [0, back_h - 0.03, 0], tilt))
    if style == "slats":
      n = int(rng.integers(2, 6))
      for x in np.linspace(-w / 2, w / 2, n + 2)[1:-1]:
        b.add(frame, box((0.03, back_h, back_t * 0.7),
                         pivot + tilt @ [x, back_h / 2, 0], tilt))
  if rng.uniform() < 0.35:
    arm_h = rng.uniform(0.18, 0.28)
    for sx in (-1, 1):
      b.add(frame, box((0.05, 0.04, d * 0.9), (sx * w / 2, h + arm_h, 0)))
      b.add(frame, box((0.04, arm_h, 0.04), (sx * w / 2, h + arm_h / 2, d * 0.35)))


def _table(b, rng):
  top_mat = b.material("top", _WOOD + _PAINT,
                       texture=_maybe_texture(rng, 0.5, ["wood", "checker"]))
  leg_mat = b.material("legs", _WOOD + _METAL)
  h, t = rng.uniform(0.6, 0.8), rng.uniform(0.03, 0.07)
  if rng.uniform() < 0.3:
    r = rng.uniform(0.35, 0.7)
    b.add(top_mat, cylinder(r, t, (0, h - t / 2, 0), "y", 32))
    b.add(leg_mat, cylinder(rng.uniform(0.03, 0.07), h - t, (0, (h - t) / 2, 0), "y"))
    b.add(leg_mat, cylinder(r * rng.uniform(0.3, 0.6), 0.03, (0, 0.015, 0), "y", 24))
    return
  w, d = rng.uniform(0.8, 1.8), rng.uniform(0.5, 1.0)
  b.add(top_mat, box((w, t, d), (0, h - t / 2, 0)))
  thickness = rng.uniform(0.04, 0.08)
  inset = rng.uniform(0.05, 0.15)
  _legs(b, leg_mat, rng, w, d, h - t, inset, thickness, rng.uniform() < 0.4)
  if rng.uniform() < 0.4:
    y = rng.uniform(0.1, 0.3)
    b.add(top_mat, box((w - 2 * inset, 0.03, d - 2 * inset), (0, y, 0)))
  if rng.uniform() < 0.5:
    b.add(leg_mat, box((w - 2 * inset, 0.08, 0.02), (0, h - t - 0.04, d / 2 - inset)))
    b.add(leg_mat, box((w - 2 * inset, 0.08, 0.02), (0, h - t - 0.04, -d / 2 + inset)))


def _lamp(b, rng):
  metal = b.material("metal", _METAL + _DARK)
  shade_mat = b.material("shade", _FABRIC + [(240, 230, 200)],
                         texture=_maybe_texture(rng, 0.3, ["stripes", "noise"]))
  height = rng.uniform(0.4, 1.6)
  base_r = rng.uniform(0.08, 0.2)
  if rng.uniform() < 0.5:
    b.add(metal, cylinder(base_r, 0.03, (0, 0.015, 0), "y", 24))
  else:
    b.add(metal, box((base_r * 2, 0.04, base_r * 2), (0, 0.02, 0)))
  stem_r = rng.uniform(0.01, 0.025)
  if rng.uniform() < 0.6:
    top = np.array([0.0, height, 0.0])
    b.add(metal, cylinder(stem_r, height, (0, height / 2, 0), "y", 12))
  else:  # two-segment arm
    lower = height * rng.uniform(0.4, 0.6)
    angle = rng.uniform(20, 60)
    b.add(metal, cylinder(stem_r, lower, (0, lower / 2, 0), "y", 12))
    arm_len = height - lower
    rot = _rotation("x", angle)
    mid = np.array([0.0, lower, 0.0])
    b.add(metal, cylinder(stem_r, arm_len, mid + rot @ [0, arm_len / 2, 0], "y", 12, rot))
    b.add(metal, ellipsoid((stem_r * 2,) * 3, mid, 1))
    top = mid + rot @ [0, arm_len, 0]
  shade_h = rng.uniform(0.12, 0.3)
  if rng.uniform() < 0.7:
    r_bottom = rng.uniform(0.1, 0.25)
    r_top = r_bottom * rng.uniform(0.3, 0.9)
    b.add(shade_mat, truncated_cone(r_bottom, r_top, shade_h,
                                    top + [0, -shade_h * 0.3, 0], "y", 24))
  else:
    r = rng.uniform(0.08, 0.18)
    b.add(shade_mat, ellipsoid((r, r * rng.uniform(0.7, 1.2), r), top, 2))


def _plane(b, rng):
  body = b.material("body", _PAINT[1:4] + _METAL,
                    texture=_maybe_texture(rng, 0.3, ["stripes"]))
  trim = b.material("trim", _PAINT + _DARK)
  length = rng.uniform(1.0, 1.6)
  radius = length * rng.uniform(0.05, 0.09)
  b.add(body, ellipsoid((radius, radius, length / 2), (0, 0, 0), 3))
  span = length * rng.uniform(0.8, 1.3)
  chord = length * rng.uniform(0.12, 0.25)
  sweep = chord * rng.uniform(0.0, 1.5)
  wing_t = radius * 0.25
  wing_y = radius * rng.uniform(-0.6, 0.2)
  wing_z = length * rng.uniform(-0.05, 0.15)
  dihedral = span / 2 * np.tan(np.radians(rng.uniform(0, 8)))
  for sx in (-1, 1):
    root = [(0, wing_y, wing_z + chord / 2), (0, wing_y, wing_z - chord / 2)]
    tip_z = wing_z - sweep
    tip = [(sx * span / 2, wing_y + dihedral, tip_z + chord * 0.2),
           (sx * span / 2, wing_y + dihedral, tip_z - chord * 0.2)]
    pts = [(x, y + dy, z) for (x, y, z) in root + tip for dy in (-wing_t / 2, wing_t / 2)]
    b.add(body, hull(pts))
  tail_z = -length * 0.42
  tail_span = span * rng.uniform(0.25, 0.4)
  b.add(trim, box((tail_span, wing_t, chord * 0.6), (0, radius * 0.2, tail_z)))
  fin_h = length * rng.uniform(0.1, 0.2)
  fin = [(dx, radius * 0.5, tail_z + chord * 0.4) for dx in (-wing_t, wing_t)]
  fin += [(dx, radius * 0.5 + fin_h, tail_z - chord * 0.3) for dx in (-wing_t, wing_t)]
  fin += [(dx, radius * 0.5, tail_z - chord * 0.4) for dx in (-wing_t, wing_t)]
  b.add(trim, hull(fin))
  engines = int(rng.choice([0, 2, 4]))
  for k in range(engines):
    sx = -1 if k % 2 == 0 else 1
    x = sx * span * (0.18 if k < 2 else 0.32)
    b.add(trim, cylinder(radius * 0.35, chord * 0.8,
                         (x, wing_y - radius * 0.5, wing_z - sweep * abs(x) / (span / 2) + chord * 0.3),
                         "z", 16))


def _car(b, rng):
  body = b.material("body", _PAINT,
                    texture=_maybe_texture(rng, 0.35, ["stripes", "checker"]))
  glass = b.material("glass", [(40, 50, 70), (70, 90, 110)])
  tire = b.material("tire", _DARK)
  style = rng.choice(["sedan", "sports", "suv", "pickup", "van"])
  length = rng.uniform(0.9, 1.3)
  width = length * {"sports": rng.uniform(0.42, 0.5), "van": rng.uniform(0.36, 0.42)}.get(
      style, rng.uniform(0.38, 0.46))
  body_h = length * {"sports": rng.uniform(0.08, 0.12), "suv": rng.uniform(0.2, 0.26),
                     "van": rng.uniform(0.22, 0.3)}.get(style, rng.uniform(0.12, 0.18))
  clearance = length * (rng.uniform(0.03, 0.05) if style == "sports" else rng.uniform(0.05, 0.1))
  b.add(body, box((width, body_h, length), (0, clearance + body_h / 2, 0)))
  y0 = clearance + body_h
  if style == "van":
    cab_l, cab_h, cab_z = length * rng.uniform(0.75, 0.9), length * rng.uniform(0.12, 0.2), \
        -length * 0.05
  elif style == "pickup":
    cab_l, cab_h, cab_z = length * rng.uniform(0.25, 0.32), length * rng.uniform(0.12, 0.18), \
        length * rng.uniform(0.05, 0.15)
    bed_l = length * 0.45
    for sx in (-1, 1):
      b.add(body, box((0.02 * length, 0.06 * length, bed_l),
                      (sx * width * 0.48, y0 + 0.03 * length, -length / 2 + bed_l / 2)))
  elif style == "sports":
    cab_l, cab_h, cab_z = length * rng.uniform(0.3, 0.4), length * rng.uniform(0.06, 0.09), \
        -length * rng.uniform(0.0, 0.1)
  else:
    cab_l, cab_h, cab_z = length * rng.uniform(0.4, 0.6), length * rng.uniform(0.1, 0.18), \
        length * rng.uniform(-0.15, 0.05)
  taper = rng.uniform(0.6, 0.9)
  pts = []
  for sx in (-1, 1):
    pts += [(sx * width * 0.47, y0, cab_z + cab_l / 2), (sx * width * 0.47, y0, cab_z - cab_l / 2),
            (sx * width * 0.42, y0 + cab_h, cab_z + cab_l * taper / 2 - cab_l * 0.05),
            (sx * width * 0.42, y0 + cab_h, cab_z - cab_l * taper / 2)]
  b.add(glass, hull(pts))
  wheel_r = clearance + body_h * rng.uniform(0.3, 0.5)
  wheel_w = width * rng.uniform(0.15, 0.22)
  base = length * rng.uniform(0.28, 0.36)
  for sz in (-1, 1):
    for sx in (-1, 1):
      b.add(tire, cylinder(wheel_r, wheel_w, (sx * (width / 2 - wheel_w * 0.3), wheel_r,
                                              sz * base), "x", 20))
  if style == "sports" or rng.uniform() < 0.2:
    b.add(body, box((width * 0.9, 0.02, length * 0.08), (0, y0 + 0.06, -length / 2 + 0.05)))


def _bench(b, rng):
  wood = b.material("wood", _WOOD + _PAINT, texture=_maybe_texture(rng, 0.4, ["wood"]))
  frame = b.material("frame", _METAL + _DARK)
  length, depth = rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.5)
  h, t = rng.uniform(0.4, 0.5), rng.uniform(0.03, 0.06)
  b.add(wood, box((length, t, depth), (0, h - t / 2, 0)))
  if rng.uniform() < 0.5:
    for sx in (-1, 1):
      b.add(frame, box((0.05, h - t, depth * 0.9), (sx * (length / 2 - 0.1), (h - t) / 2, 0)))
  else:
    _legs(b, frame, rng, length, depth, h - t, 0.06, 0.05, rng.uniform() < 0.5)
  if rng.uniform() < 0.6:
    back_h = rng.uniform(0.25, 0.45)
    slats = int(rng.integers(1, 4))
    for k in range(slats):
      y = h + back_h * (k + 0.5) / slats
      b.add(wood, box((length, back_h / slats * 0.6, 0.03), (0, y, -depth / 2 + 0.02)))
    for sx in (-1, 1):
      b.add(frame, box((0.04, back_h, 0.04), (sx * (length / 2 - 0.1), h + back_h / 2,
                                               -depth / 2 + 0.02)))


def _monitor(b, rng):
  case = b.material("case", _DARK + [(220, 220, 225)])
  screen = b.material("screen", [(20, 30, 60), (30, 30, 35)],
                      texture=_maybe_texture(rng, 0.5, ["noise", "stripes"]),
                      texture_palette=[(60, 120, 200), (200, 200, 220)])
  w = rng.uniform(0.4, 0.7)
  h = w * rng.uniform(0.55, 0.75)
  depth = rng.uniform(0.02, 0.12)
  neck_h = rng.uniform(0.08, 0.2)
  y = neck_h + h / 2
  b.add(case, box((w, h, depth), (0, y, 0)))
  b.add(screen, box((w * 0.94, h * 0.9, 0.01), (0, y, depth / 2)))
  b.add(case, box((w * 0.1, neck_h + h * 0.3, 0.03), (0, (neck_h + h * 0.3) / 2, -depth / 2)))
  if rng.uniform() < 0.5:
    b.add(case, box((w * rng.uniform(0.3, 0.6), 0.02, 0.2), (0, 0.01, -depth / 2)))
  else:
    b.add(case, ellipsoid((w * 0.25, 0.015, 0.12), (0, 0.015, -depth / 2), 2))


def _sofa(b, rng):
  fabric = b.material("fabric", _FABRIC, texture=_maybe_texture(rng, 0.4, ["noise", "checker"]))
  feet = b.material("feet", _WOOD + _DARK)
  length, depth = rng.uniform(1.4, 2.4), rng.uniform(0.7, 1.0)
  base_h = rng.uniform(0.2, 0.3)
  foot_h = rng.uniform(0.03, 0.12)
  b.add(fabric, box((length, base_h, depth), (0, foot_h + base_h / 2, 0)))
  n = int(rng.integers(1, 4))
  cushion_h = rng.uniform(0.08, 0.15)
  arm_w = rng.uniform(0.1, 0.25)
  inner = length - 2 * arm_w
  for k in range(n):
    x = -inner / 2 + inner * (k + 0.5) / n
    b.add(fabric, box((inner / n * 0.96, cushion_h, depth * 0.8),
                      (x, foot_h + base_h + cushion_h / 2, depth * 0.08)))
  back_h = rng.uniform(0.3, 0.5)
  b.add(fabric, box((length, back_h, depth * 0.22),
                    (0, foot_h + base_h + back_h / 2, -depth / 2 + depth * 0.11)))
  arm_h = rng.uniform(0.15, 0.3)
  for sx in (-1, 1):
    b.add(fabric, box((arm_w, base_h + arm_h, depth),
                      (sx * (length - arm_w) / 2, foot_h + (base_h + arm_h) / 2, 0)))
  _legs(b, feet, rng, length, depth, foot_h + 0.01, 0.06, 0.05, rng.uniform() < 0.5)


def _cabinet(b, rng):
  wood = b.material("wood", _WOOD + _PAINT, texture=_maybe_texture(rng, 0.5, ["wood"]))
  handle = b.material("handle", _METAL)
  w, h, d = rng.uniform(0.4, 1.2), rng.uniform(0.5, 1.8), rng.uniform(0.3, 0.6)
  plinth = rng.uniform(0.0, 0.1)
  b.add(wood, box((w, h, d), (0, plinth + h / 2, 0)))
  if plinth > 0.02:
    b.add(wood, box((w * 0.92, plinth, d * 0.9), (0, plinth / 2, 0)))
  cols, rows = int(rng.integers(1, 3)), int(rng.integers(1, 4))
  for i in range(cols):
    for j in range(rows):
      x = -w / 2 + w * (i + 0.5) / cols
      y = plinth + h * (j + 0.5) / rows
      b.add(wood, box((w / cols * 0.92, h / rows * 0.92, 0.02), (x, y, d / 2 + 0.01)))
      b.add(handle, cylinder(0.012, 0.08, (x + w / cols * 0.3, y, d / 2 + 0.03), "y", 8))


def _speaker(b, rng):
  case = b.material("case", _WOOD + _DARK, texture=_maybe_texture(rng, 0.3, ["wood"]))
  cone = b.material("cone", _DARK + [(150, 150, 150)])
  w, h, d = rng.uniform(0.15, 0.4), rng.uniform(0.25, 1.0), rng.uniform(0.15, 0.4)
  stand = rng.uniform() < 0.3
  y0 = 0.4 if stand else 0.0
  if stand:
    b.add(cone, cylinder(0.03, y0, (0, y0 / 2, 0), "y", 12))
    b.add(cone, box((w, 0.03, d), (0, 0.015, 0)))
  b.add(case, box((w, h, d), (0, y0 + h / 2, 0)))
  n = int(rng.integers(1, 4))
  for k in range(n):
    r = min(w, h / n) * rng.uniform(0.25, 0.42)
    y = y0 + h * (k + 0.5) / n
    b.add(cone, cylinder(r, 0.03, (0, y, d / 2), "z", 20))


def _rifle(b, rng):
  metal = b.material("metal", _DARK + _METAL)
  stock_mat = b.material("stock", _WOOD + _DARK, texture=_maybe_texture(rng, 0.4, ["wood"]))
  length = rng.uniform(0.8, 1.3)
  barrel_l = length * rng.uniform(0.35, 0.5)
  receiver_l = length * rng.uniform(0.2, 0.3)
  h = length * rng.uniform(0.05, 0.08)
  b.add(metal, box((h * 0.6, h, receiver_l), (0, 0, 0)))
  b.add(metal, cylinder(h * rng.uniform(0.12, 0.2), barrel_l,
                        (0, h * 0.2, receiver_l / 2 + barrel_l / 2), "z", 12))
  stock_l = length - barrel_l - receiver_l
  drop = h * rng.uniform(0.3, 1.0)
  z0 = -receiver_l / 2
  pts = []
  for dx in (-h * 0.3, h * 0.3):
    pts += [(dx, h / 2, z0), (dx, -h / 2, z0),
            (dx, h / 2 - drop, z0 - stock_l), (dx, -h / 2 - drop * 2, z0 - stock_l)]
  b.add(stock_mat, hull(pts))
  b.add(metal, box((h * 0.4, h * rng.uniform(1.0, 2.5), h * 0.6),
                   (0, -h, receiver_l * 0.2), _rotation("x", rng.uniform(-15, 15))))
  b.add(stock_mat, box((h * 0.45, h * 1.3, h * 0.5), (0, -h * 0.9, -receiver_l * 0.3),
                       _rotation("x", -20)))
  if rng.uniform() < 0.5:
    b.add(metal, cylinder(h * 0.25, receiver_l * 1.2, (0, h * 0.95, 0), "z", 12))


def _telephone(b, rng):
  body = b.material("body", _DARK + _PAINT)
  screen = b.material("screen", [(15, 15, 25)],
                      texture=_maybe_texture(rng, 0.5, ["checker", "noise"]),
                      texture_palette=[(80, 160, 220), (230, 230, 240)])
  if rng.uniform() < 0.7:  # smartphone standing upright, screen towards +z
    w, h, t = rng.uniform(0.06, 0.09), rng.uniform(0.12, 0.17), rng.uniform(0.007, 0.012)
    r = w * rng.uniform(0.05, 0.2)
    corners = [cylinder(r, t, (sx * (w / 2 - r), h / 2 + sy * (h / 2 - r), 0), "z", 12)
               for sx in (-1, 1) for sy in (-1, 1)]
    b.add(body, hull(np.concatenate([c.vertices for c in corners])))
    b.add(screen, box((w * 0.9, h * 0.85, 0.002), (0, h / 2, t / 2)))
  else:  # desk phone with handset
    w, d = rng.uniform(0.15, 0.22), rng.uniform(0.15, 0.22)
    pts = [(sx * w / 2, 0, sz * d / 2) for sx in (-1, 1) for sz in (-1, 1)]
    pts += [(sx * w * 0.4, 0.05, sz * d * 0.4 - 0.01) for sx in (-1, 1) for sz in (-1, 1)]
    b.add(body, hull(pts))
    b.add(body, cylinder(0.02, w * 1.1, (0, 0.07, -d * 0.25), "x", 12))
    for sx in (-1, 1):
      b.add(body, ellipsoid((0.03, 0.02, 0.03), (sx * w * 0.5, 0.07, -d * 0.25), 1))
    for i in range(3):
      for j in range(3):
        b.add(screen, box((0.02, 0.01, 0.015), ((i - 1) * 0.03, 0.05, 0.01 + (j - 1) * 0.025)))


def _watercraft(b, rng):
  hull_mat = b.material("hull", _PAINT, texture=_maybe_texture(rng, 0.3, ["stripes"]))
  deck = b.material("deck", _WOOD + [(240, 240, 240)])
  length = rng.uniform(1.0, 2.0)
  beam = length * rng.uniform(0.2, 0.35)
  depth = length * rng.uniform(0.08, 0.15)
  bow = length * rng.uniform(0.15, 0.3)
  stern = rng.uniform(0.6, 1.0)
  top = [(0, depth, length / 2),
         (beam / 2, depth, length / 2 - bow), (-beam / 2, depth, length / 2 - bow),
         (beam / 2 * stern, depth, -length / 2), (-beam / 2 * stern, depth, -length / 2)]
  keel = rng.uniform(0.2, 0.6)
  bottom = [(0, 0, length / 2 - bow * 0.5), (beam / 2 * keel, 0, -length / 2 + 0.05),
            (-beam / 2 * keel, 0, -length / 2 + 0.05), (0, -depth * 0.3, 0)]
  b.add(hull_mat, hull(top + bottom))
  if rng.uniform() < 0.5:  # sailing boat
    mast_h = length * rng.uniform(0.6, 1.1)
    mast_z = length * rng.uniform(0.0, 0.15)
    b.add(deck, cylinder(0.015, mast_h, (0, depth + mast_h / 2, mast_z), "y", 10))
    sail = [(dx, depth + 0.1, mast_z - 0.02) for dx in (-0.004, 0.004)]
    sail += [(dx, depth + mast_h * 0.95, mast_z - 0.02) for dx in (-0.004, 0.004)]
    sail += [(dx, depth + 0.1, mast_z - length * rng.uniform(0.3, 0.45)) for dx in (-0.004, 0.004)]
    b.add(deck, hull(sail))
  else:
    levels = int(rng.integers(1, 4))
    cab_l, cab_w = length * rng.uniform(0.25, 0.45), beam * rng.uniform(0.5, 0.8)
    y = depth
    for _ in range(levels):
      cab_h = depth * rng.uniform(0.6, 1.2)
      b.add(deck, box((cab_w, cab_h, cab_l), (0, y + cab_h / 2, -length * 0.1)))
      y += cab_h
      cab_l *= 0.7
      cab_w *= 0.85


_GENERATORS = {
    "02691156": _plane,
    "02828884": _bench,
    "02933112": _cabinet,
    "02958343": _car,
    "03001627": _chair,
    "03211117": _monitor,
    "03636649": _lamp,
    "03691459": _speaker,
    "04090263": _rifle,
    "04256520": _sofa,
    "04379243": _table,
    "04401088": _telephone,
    "04530566": _watercraft,
}

SYNSET_IDS = tuple(sorted(_GENERATORS))


# ----------------------------------------------------------------------------
# Public API.


def model_rng(seed, synset, index):
  """The generator of model `index` of `synset` for `seed`."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(synset), int(index)]))


def model_id_for(seed, synset, index):
  """Deterministic 32-hex-digit model id (the form of ShapeNet's ids)."""
  key = f"ige_tf-synthetic/{int(seed)}/{synset}/{int(index)}".encode()
  return hashlib.md5(key).hexdigest()


def generate_model(synset, rng):
  """One random model of a category.

  Args:
    synset: 8-digit synset id, a key of `CATEGORY_NAMES`.
    rng: `np.random.Generator`.

  Returns:
    (trimesh.Scene, info dict): one geometry per material; `info` has
    `"textured"` (bool), `"num_faces"` (int), `"scale"` and `"offset"`.
  """
  if synset not in _GENERATORS:
    raise ValueError(f"no synthetic generator for synset {synset!r}; "
                     f"known: {', '.join(SYNSET_IDS)}")
  builder = _ModelBuilder(rng)
  _GENERATORS[synset](builder, rng)
  scale = float(rng.uniform(0.5, 2.0))
  offset = rng.uniform(-0.3, 0.3, size=3)
  scene = builder.scene(scale, offset)
  info = {
      "textured": any(m.texture is not None and builder.parts[m.name]
                      for m in builder.materials.values()),
      "num_faces": int(sum(len(g.faces) for g in scene.geometry.values())),
      "scale": scale,
      "offset": offset.tolist(),
  }
  return scene, info


def write_obj(scene, model_dir, textures_subdir=None):
  """Writes `scene` as `model.obj` + `model.mtl` (+ PNG textures) into `model_dir`.

  Args:
    scene: trimesh.Scene whose geometries carry `SimpleMaterial`s.
    model_dir: existing directory.
    textures_subdir: if set (e.g. "images"), textures go into that
      subdirectory and the MTL refers to them there (a layout ShapeNet uses).
  """
  # trimesh numbers `vt` like `v` across the whole file, which is only valid
  # when every geometry with UVs comes before the ones without: reorder.
  ordered = trimesh.Scene()
  nodes = [scene.graph[node] + (node,) for node in scene.graph.nodes_geometry]
  nodes.sort(key=lambda item: getattr(scene.geometry[item[1]].visual, "uv", None) is None)
  for transform, name, _ in nodes:
    ordered.add_geometry(scene.geometry[name], geom_name=name, transform=transform)
  obj_text, files = trimesh.exchange.obj.export_obj(
      ordered, include_normals=False, include_texture=True, return_texture=True,
      mtl_name="model.mtl")
  mtl_lines = files.pop("model.mtl").decode().splitlines()
  for name, data in files.items():
    target = name
    if textures_subdir:
      os.makedirs(os.path.join(model_dir, textures_subdir), exist_ok=True)
      target = f"{textures_subdir}/{name}"
      mtl_lines = [f"map_Kd {target}" if line.strip() == f"map_Kd {name}" else line
                   for line in mtl_lines]
    with open(os.path.join(model_dir, target), "wb") as f:
      f.write(data)
  with open(os.path.join(model_dir, "model.mtl"), "w") as f:
    f.write("\n".join(mtl_lines) + "\n")
  with open(os.path.join(model_dir, "model.obj"), "w") as f:
    f.write(obj_text)


def make_synthetic_shapenet(out_dir, models_per_synset=4, seed=0, synsets=None,
                            progress=False):
  """Writes a procedural ShapeNetCore-v1-layout tree.

  Existing model folders are kept (the output is deterministic, so a rerun
  only completes an interrupted tree); every model is written to a temporary
  folder and renamed into place.

  Args:
    out_dir: output root; `<out_dir>/<synset>/<model_id>/model.obj`.
    models_per_synset: int >= 1.
    seed: int.
    synsets: iterable of synset ids (default: all 13 categories).
    progress: show a tqdm progress bar.

  Returns:
    list of dicts `{"synset", "model_id", "path", "textured", "num_faces"}`
    sorted by (synset, model_id); `textured`/`num_faces` are None for
    folders that already existed.
  """
  synsets = SYNSET_IDS if synsets is None else tuple(synsets)
  for synset in synsets:
    if synset not in _GENERATORS:
      raise ValueError(f"no synthetic generator for synset {synset!r}; "
                       f"known: {', '.join(SYNSET_IDS)}")
  if models_per_synset < 1:
    raise ValueError(f"models_per_synset must be >= 1, got {models_per_synset}")
  jobs = [(s, i) for s in synsets for i in range(models_per_synset)]
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    jobs = tqdm.tqdm(jobs, desc="synthetic models", unit="model")
  written = []
  for synset, index in jobs:
    model_id = model_id_for(seed, synset, index)
    synset_dir = os.path.join(out_dir, synset)
    model_dir = os.path.join(synset_dir, model_id)
    entry = {"synset": synset, "model_id": model_id,
             "path": os.path.join(model_dir, "model.obj"),
             "textured": None, "num_faces": None}
    if not os.path.exists(entry["path"]):
      rng = model_rng(seed, synset, index)
      scene, info = generate_model(synset, rng)
      textures_subdir = "images" if rng.uniform() < 0.5 else None
      os.makedirs(synset_dir, exist_ok=True)
      tmp = tempfile.mkdtemp(prefix=f".{model_id}.", dir=synset_dir)
      os.chmod(tmp, 0o755)
      try:
        write_obj(scene, tmp, textures_subdir)
        if os.path.exists(model_dir):  # partial folder from an older run
          shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
      finally:
        if os.path.exists(tmp):
          shutil.rmtree(tmp)
      entry.update(textured=info["textured"], num_faces=info["num_faces"])
    written.append(entry)
  written.sort(key=lambda e: (e["synset"], e["model_id"]))
  return written


def write_split_file(path, shapes, num_train):
  """Writes a Pix2Vox-style split (`ShapeNet.json`) of generated models.

  Args:
    path: the JSON file to write (atomically).
    shapes: `make_synthetic_shapenet`'s list of `{"synset", "model_id", ...}`.
    num_train: int; in each synset the first `num_train` models (by model
      id) train, the others test.

  Returns:
    `path`.
  """
  split = []
  for synset in sorted({m["synset"] for m in shapes}):
    ids = sorted(m["model_id"] for m in shapes if m["synset"] == synset)
    split.append({"taxonomy_id": synset, "train": ids[:num_train],
                  "test": ids[num_train:]})
  # The bytes of `json.dump(split, f)`: what earlier work directories hold,
  # so that their records (whose settings hash the file) still resume.
  atomic.write_text(path, json.dumps(split))
  return path


def make_synthetic_records(root, synsets=("02691156",), models_per_synset=2,
                           num_train=1, seed=0, **prepare_kwargs):
  """Generated models prepared as records, in the real on-disk layouts.

  Writes `<root>/shapes/` (`make_synthetic_shapenet`), `<root>/split.json`
  (`write_split_file`; none when `num_train` is None: `prepare_shapenet`'s
  hash split) and `<root>/records/` (`prepare_shapenet`). A rerun with the
  same arguments completes an interrupted directory and otherwise keeps
  what is there (both steps resume; the split file is rewritten with the
  same content).

  Args:
    root: output folder (str).
    synsets: synset ids.
    models_per_synset: int >= 1.
    num_train: int or None; models per synset in the train split (the rest
      test).
    seed: seeds the generated models.
    **prepare_kwargs: passed to `ige_tf.voxel.data.prepare.prepare_shapenet`
      (`resolutions`, `views`, `image_size`, ...); `workers` defaults to 1
      and `progress` to False.

  Returns:
    the records directory `<root>/records` (str).
  """
  from ige_tf.voxel.data import prepare  # pylint: disable=g-import-not-at-top
  shapes_dir = os.path.join(root, "shapes")
  shapes = make_synthetic_shapenet(shapes_dir, models_per_synset, seed=seed,
                                   synsets=synsets)
  if num_train is not None:
    prepare_kwargs["split_file"] = write_split_file(
        os.path.join(root, "split.json"), shapes, num_train)
  prepare_kwargs.setdefault("workers", 1)
  prepare_kwargs.setdefault("progress", False)
  records = os.path.join(root, "records")
  prepare.prepare_shapenet(shapes_dir, records, synsets=synsets,
                           **prepare_kwargs)
  return records
