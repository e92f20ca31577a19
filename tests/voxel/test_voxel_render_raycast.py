"""Ray-cast rendering: geometry against analytic references, colours, determinism."""
import numpy as np
import PIL.Image
import pytest
import trimesh

from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import mesh as mesh_lib
from ige_tf.voxel import render


def _mesh(tm, color=(200, 100, 50)):
  return mesh_lib.mesh_from_arrays(tm.vertices, tm.faces, canonical=False,
                                   face_colors=np.tile(np.array(color, np.uint8), (len(tm.faces), 1)))


def _pixel_rays(camera):
  size = camera.image_size
  rows, cols = np.mgrid[0:size, 0:size]
  pixels = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
  return render.camera_rays(camera.intrinsics, camera.rotation, camera.translation, pixels)


def test_box_silhouette_and_depth_match_the_analytic_front_face():
  half = 0.3
  mesh = _mesh(trimesh.creation.box(extents=(2 * half,) * 3))
  camera = camera_lib.look_at_camera(0.0, 0.0, image_size=32)
  result = render.Renderer(mesh, supersample=1).render(camera)
  origins, dirs = _pixel_rays(camera)
  # Head-on, only the face z = +half is visible: intersect its plane.
  s = (half - origins[:, 2]) / dirs[:, 2]
  hit = origins + s[:, None] * dirs
  inside = (np.abs(hit[:, 0]) <= half) & (np.abs(hit[:, 1]) <= half)
  np.testing.assert_array_equal(result.mask.ravel(), inside)
  expected_depth = camera.to_camera(hit)[:, 2]
  np.testing.assert_allclose(result.depth.ravel()[inside], expected_depth[inside], rtol=0,
                             atol=1e-6)
  assert expected_depth[inside] == pytest.approx(camera_lib.DEFAULT_DISTANCE - half)
  assert (result.depth.ravel()[~inside] == 0).all()
  assert (result.image[~result.mask] == 255).all()          # white background
  assert (result.face_index[~result.mask] == -1).all()


def test_sphere_matches_analytic_sphere_and_independent_ray_tests():
  radius = 0.4
  sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
  mesh = _mesh(sphere)
  camera = camera_lib.look_at_camera(33.0, 27.0, image_size=24)
  embree = render.Renderer(mesh, supersample=1, backend="embree").render(camera)
  numpy_rt = render.Renderer(mesh, supersample=1, backend="numpy").render(camera)
  # Two independent ray casters agree.
  np.testing.assert_array_equal(embree.mask, numpy_rt.mask)
  np.testing.assert_allclose(embree.depth, numpy_rt.depth, atol=1e-5)
  # Against the exact sphere: the inscribed polyhedron's silhouette is inside
  # the disk, and depths are within the polyhedron's sagitta.
  origins, dirs = _pixel_rays(camera)
  b = np.einsum("ij,ij->i", origins, dirs)
  c = np.einsum("ij,ij->i", origins, origins) - radius**2
  disc = b**2 - c
  exact_hit = disc > 0
  mask = embree.mask.ravel()
  assert not (mask & ~exact_hit).any()
  assert mask.sum() >= 0.9 * exact_hit.sum()
  t = -b - np.sqrt(np.maximum(disc, 0))
  exact_depth = camera.to_camera(origins + t[:, None] * dirs)[:, 2]
  depth = embree.depth.ravel()
  assert np.abs(depth[mask] - exact_depth[mask]).max() < 0.01
  assert (depth[mask] >= exact_depth[mask] - 1e-6).all()   # polyhedron is inside


def test_rendering_is_deterministic_for_a_seed():
  mesh = _mesh(trimesh.creation.icosphere(subdivisions=2, radius=0.45))
  camera = camera_lib.look_at_camera(10.0, 25.0, image_size=32)
  renderer = render.Renderer(mesh, supersample=2)
  first = renderer.render(camera, seed=3)
  again = render.Renderer(mesh, supersample=2).render(camera, seed=3)
  other = renderer.render(camera, seed=4)
  np.testing.assert_array_equal(first.image, again.image)
  np.testing.assert_array_equal(first.depth, again.depth)
  # The seed only moves the anti-aliasing samples: edges change, geometry not.
  assert (first.image != other.image).any()
  np.testing.assert_array_equal(first.mask, other.mask)
  np.testing.assert_array_equal(first.depth, other.depth)
  views = render.render_views(mesh, [camera, camera], seed=9, supersample=2)
  assert (views[0].image != views[1].image).any()   # per-view seeds differ
  np.testing.assert_array_equal(
      views[1].image, render.render_views(mesh, [camera, camera], seed=9)[1].image)


def _write_square(tmp_path, texture=None, kd=(1.0, 1.0, 1.0)):
  """A unit square in z = 0 facing +z, UVs (0,0)..(1,1), optional texture."""
  mtl = f"newmtl m\nKd {kd[0]} {kd[1]} {kd[2]}\n"
  if texture is not None:
    PIL.Image.fromarray(texture).save(tmp_path / "tex.png")
    mtl += "map_Kd tex.png\n"
  (tmp_path / "model.mtl").write_text(mtl)
  (tmp_path / "model.obj").write_text(
      "mtllib model.mtl\nusemtl m\n"
      "v -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\n"
      "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
      "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
  return str(tmp_path / "model.obj")


def _shade(renderer, camera):
  light_world = camera.rotation.T @ renderer.light_camera
  return renderer.ambient + renderer.diffuse * abs(light_world[2])   # normal +-z


def _pixel_of(camera, point):
  uv, _ = camera.project(np.array([point], float))
  return int(uv[0, 1]), int(uv[0, 0])


def test_texture_is_sampled_at_the_hit_point_and_upright(tmp_path):
  blocks = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [250, 250, 0]]], np.uint8)
  texture = blocks.repeat(4, axis=0).repeat(4, axis=1)          # 8x8, 2x2 blocks
  mesh = mesh_lib.load_mesh(_write_square(tmp_path, texture))
  assert not mesh.warnings
  camera = camera_lib.look_at_camera(0.0, 0.0, image_size=48)
  renderer = render.Renderer(mesh, supersample=1)
  image = renderer.render(camera).image
  shade = _shade(renderer, camera)
  # Texture row 0 is v = 1 (top of the square, +y, top of the image).
  for (x, y), block in {(-0.25, 0.25): blocks[0, 0], (0.25, 0.25): blocks[0, 1],
                        (-0.25, -0.25): blocks[1, 0], (0.25, -0.25): blocks[1, 1]}.items():
    row, col = _pixel_of(camera, (x, y, 0.0))
    np.testing.assert_allclose(image[row, col], block * shade, atol=1.0)


def test_untextured_material_colour_is_shaded_uniformly(tmp_path):
  mesh = mesh_lib.load_mesh(_write_square(tmp_path, kd=(0.2, 0.6, 0.4)))
  camera = camera_lib.look_at_camera(0.0, 0.0, image_size=48)
  renderer = render.Renderer(mesh, supersample=1)
  result = renderer.render(camera)
  expected = np.array([0.2, 0.6, 0.4]) * 255 * _shade(renderer, camera)
  np.testing.assert_allclose(result.image[result.mask], np.tile(expected, (result.mask.sum(), 1)),
                             atol=1.5)
  # Anti-aliased edges blend towards the white background, interiors do not.
  aliased = render.Renderer(mesh, supersample=3).render(camera, seed=0)
  interior = result.mask.copy()
  interior[1:] &= result.mask[:-1]
  interior[:-1] &= result.mask[1:]
  interior[:, 1:] &= result.mask[:, :-1]
  interior[:, :-1] &= result.mask[:, 1:]
  np.testing.assert_allclose(aliased.image[interior], result.image[interior], atol=1.0)
  edge = result.mask & ~interior
  assert (aliased.image[edge].astype(int).sum(axis=1)
          >= result.image[edge].astype(int).sum(axis=1)).all()


def test_camera_arrays_and_errors():
  mesh = _mesh(trimesh.creation.box(extents=(0.5, 0.5, 0.5)))
  camera = camera_lib.look_at_camera(45.0, 30.0, image_size=16)
  by_camera = render.render_view(mesh, camera, supersample=1)
  by_arrays = render.render_view(mesh, intrinsics=camera.intrinsics,
                                 extrinsics=camera.extrinsics, image_size=16, supersample=1)
  np.testing.assert_array_equal(by_camera.image, by_arrays.image)
  with pytest.raises(ValueError, match="give a camera or intrinsics"):
    render.render_view(mesh)
  with pytest.raises(ValueError, match="supersample must be >= 1"):
    render.Renderer(mesh, supersample=0)


def test_composite_rgba_over_white():
  rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], np.uint8)
  rgb, mask = render.composite_rgba(rgba)
  np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
  np.testing.assert_array_equal(rgb[0, 1], [255, 255, 255])
  np.testing.assert_array_equal(rgb[0, 2], [127, 127, 255])
  np.testing.assert_array_equal(mask, [[True, False, True]])
