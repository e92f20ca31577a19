"""Mesh loading, clean-up, canonical frame, ShapeNet discovery, bad inputs."""

import os

import numpy as np
import pytest
from PIL import Image

from ige_tf.voxel import mesh as M

TETRA_V = "v 0 0 0\nv 2 0 0\nv 0 4 0\nv 0 0 1\n"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def _textured_model(model_dir, texture_ref="../images/texture0.png", write_texture=True):
    """A v2-style model: models/model_normalized.obj + .mtl, texture in images/."""
    obj = os.path.join(model_dir, "models", "model_normalized.obj")
    _write(
        obj,
        "mtllib model_normalized.mtl\n" + TETRA_V + "vt 0 0\nvt 1 0\nvt 0 1\n"
        "usemtl red\nf 1 2 3\nf 1 3 4\nusemtl tex\nf 1/1 2/2 4/3\n",
    )
    _write(
        os.path.join(model_dir, "models", "model_normalized.mtl"),
        f"newmtl red\nKd 1 0 0\nnewmtl tex\nKd 1 1 0.5\nmap_Kd {texture_ref}\n",
    )
    if write_texture:
        os.makedirs(os.path.join(model_dir, "images"), exist_ok=True)
        image = np.zeros((4, 4, 3), np.uint8)
        image[...] = (200, 100, 40)
        Image.fromarray(image).save(os.path.join(model_dir, "images", "texture0.png"))
    return obj


def test_synsets():
    assert len(M.SYNSETS) == 13
    assert M.SYNSETS["03001627"] == "chair" and M.SYNSET_NAMES["plane"] == "02691156"
    assert M.SYNSET_IDS == tuple(sorted(M.SYNSET_IDS))


def test_textured_v2_model_colours_and_canonical_frame(tmp_path):
    obj = _textured_model(str(tmp_path / "04379243" / "abc"))
    mesh = M.load_mesh(obj)
    assert mesh.warnings == []
    assert mesh.faces.shape == (3, 3)
    lower, upper = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    np.testing.assert_allclose((lower + upper) / 2, 0.0, atol=1e-12)
    assert np.max(upper - lower) == pytest.approx(1.0)
    np.testing.assert_allclose(mesh.center, [1.0, 2.0, 0.5])
    assert mesh.scale == pytest.approx(0.25)
    # red faces untextured; the textured face samples texel * Kd
    by_texture = {int(t): c for t, c in zip(mesh.face_texture, mesh.face_colors)}
    np.testing.assert_array_equal(by_texture[-1], [255, 0, 0, 255])
    assert len(mesh.textures) == 1 and mesh.textures[0].shape == (4, 4, 3)
    textured = int(np.flatnonzero(mesh.face_texture == 0)[0])
    color = mesh.sample_color([textured], [[1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_array_equal(color[0], [200, 100, 20, 255])
    red = int(np.flatnonzero(mesh.face_texture == -1)[0])
    np.testing.assert_array_equal(mesh.sample_color([red], [[1, 0, 0]])[0], [255, 0, 0, 255])
    tm = mesh.to_trimesh()
    assert len(tm.faces) == 3


def test_missing_mtl_and_texture_fall_back_with_warnings(tmp_path):
    obj = _textured_model(str(tmp_path / "m1"), texture_ref="../images/gone.jpg", write_texture=False)
    mesh = M.load_mesh(obj)
    assert mesh.warnings == [f"{obj}: texture '../images/gone.jpg' not found; using the material colour"]
    assert np.all(mesh.face_texture == -1)
    assert [255, 255, 128, 255] in mesh.face_colors.tolist()  # Kd of the textured material

    obj2 = _write(tmp_path / "m2" / "model.obj", "mtllib nowhere.mtl\n" + TETRA_V + "usemtl red\nf 1 2 3\nf 1 2 4\n")
    mesh2 = M.load_mesh(obj2)
    assert mesh2.warnings == [f"{obj2}: material library 'nowhere.mtl' not found; using fallback colour"]
    np.testing.assert_array_equal(mesh2.face_colors, np.tile(M.FALLBACK_COLOR, (2, 1)))


def test_undecodable_texture_is_recorded(tmp_path):
    obj = _textured_model(str(tmp_path / "m"), write_texture=False)
    _write(tmp_path / "m" / "images" / "texture0.png", "this is not a png")
    mesh = M.load_mesh(obj)
    assert mesh.warnings == [f"{obj}: texture '../images/texture0.png' could not be decoded; using the material colour"]
    assert np.all(mesh.face_texture == -1)


def test_vertex_colours(tmp_path):
    obj = _write(tmp_path / "vc.obj", "v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 0 1 0 0 0 1\nf 1 2 3\n")
    mesh = M.load_mesh(obj)
    assert mesh.corner_colors.shape == (1, 3, 4)
    np.testing.assert_array_equal(mesh.sample_color([0], [[1, 0, 0]])[0], [255, 0, 0, 255])
    np.testing.assert_array_equal(mesh.sample_color([0], [[0, 0.5, 0.5]])[0], [0, 128, 128, 255])


def test_cleaning_drops_nan_degenerate_and_duplicate_faces(tmp_path):
    obj = _write(
        tmp_path / "dirty.obj",
        TETRA_V + "v nan 0 0\nv 1 0 0\nv 0 0 0\n"
        "f 1 2 3\n"  # good
        "f 3 2 1\n"  # duplicate, flipped
        "f 7 2 3\n"  # duplicate through a vertex repeated at the same position
        "f 1 2 4\n"  # good
        "f 5 2 3\n"  # NaN vertex
        "f 1 6 2\n"  # zero area (collinear)
        "f 1 1 3\n",  # repeated index
    )
    mesh = M.load_mesh(obj)
    assert len(mesh.faces) == 2
    assert len(mesh.vertices) == 4 and np.all(np.isfinite(mesh.vertices))
    assert mesh.warnings == [
        f"{obj}: dropped 1 vertices with NaN/inf coordinates and the 1 faces using them",
        f"{obj}: dropped 2 zero-area faces",
        f"{obj}: dropped 2 duplicated faces",
    ]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty mesh (no faces)"),
        ("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "no valid faces: all 1 faces use NaN/inf vertices"),
        ("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\nf 3 2 1\n", "no valid faces: all 2 faces are degenerate (zero area)"),
    ],
)
def test_unusable_meshes_raise_naming_the_file(tmp_path, text, problem):
    obj = _write(tmp_path / "bad.obj", text)
    with pytest.raises(M.MeshError) as info:
        M.load_mesh(obj)
    assert str(info.value) == f"{obj}: {problem}"
    assert info.value.path == obj and info.value.problem == problem


def test_missing_unreadable_and_huge_files(tmp_path):
    missing = str(tmp_path / "nope" / "model.obj")
    with pytest.raises(M.MeshError, match="file not found") as info:
        M.load_mesh(missing)
    assert str(info.value).startswith(missing)

    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\nproperty float x\nend_header\n\x00")
    with pytest.raises(M.MeshError, match="unreadable mesh file") as info:
        M.load_mesh(broken)
    assert str(broken) in str(info.value)

    faces = "".join(f"f 1 {i} {i + 1}\n" for i in range(2, 12))
    vertices = "".join(f"v {np.cos(i)} {np.sin(i)} {i * 0.1}\n" for i in range(12))
    big = _write(tmp_path / "big.obj", vertices + faces)
    with pytest.raises(M.MeshError, match=r"too many faces: at least 10 > max_faces=5"):
        M.load_mesh(big, max_faces=5)
    assert len(M.load_mesh(big, max_faces=10).faces) == 10
    with pytest.raises(M.MeshError, match=r"<array>: too many faces: 10 > max_faces=3"):
        M.mesh_from_arrays(np.random.rand(12, 3), np.array([[0, i, i + 1] for i in range(1, 11)]), max_faces=3)


def test_mesh_from_arrays_and_canonicalize():
    vertices = np.array([[1.0, 1.0, 1.0], [3.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 1.5]])
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    mesh = M.mesh_from_arrays(vertices, faces, path="mem", face_colors=np.full((4, 3), 9))
    np.testing.assert_allclose(mesh.vertices.min(axis=0), [-0.5, -0.25, -0.125])
    np.testing.assert_allclose(mesh.vertices.max(axis=0), [0.5, 0.25, 0.125])
    np.testing.assert_allclose(mesh.vertices / mesh.scale + mesh.center, vertices)
    np.testing.assert_array_equal(mesh.face_colors[0], [9, 9, 9, 255])
    raw = M.mesh_from_arrays(vertices, faces, canonical=False)
    np.testing.assert_array_equal(raw.vertices, vertices)
    with pytest.raises(ValueError, match="zero size"):
        M.canonicalize(np.ones((3, 3)))


def test_find_models_v1_and_v2(tmp_path):
    root = tmp_path / "ShapeNetCore"
    _write(root / "03001627" / "b_chair" / "model.obj", TETRA_V + "f 1 2 3\n")
    _textured_model(str(root / "03001627" / "a_chair"))
    os.makedirs(root / "03001627" / "c_empty")
    _write(root / "02691156" / "plane1" / "model.obj", TETRA_V + "f 1 2 3\n")
    _write(root / "99999999" / "other" / "model.obj", TETRA_V + "f 1 2 3\n")
    (root / "03001627" / "notes.txt").write_text("not a model")
    models = M.find_models(root)
    assert [(m.synset, m.model_id, m.layout) for m in models] == [
        ("02691156", "plane1", "v1"),
        ("03001627", "a_chair", "v2"),
        ("03001627", "b_chair", "v1"),
        ("03001627", "c_empty", "v1"),
    ]
    assert models[1].path == str(root / "03001627" / "a_chair" / "models" / "model_normalized.obj")
    with pytest.raises(M.MeshError, match="file not found"):
        M.load_mesh(models[3].path)
    assert [m.synset for m in M.find_models(root, synsets=None)].count("99999999") == 1
    assert [m.model_id for m in M.find_models(root, synsets=["02691156"])] == ["plane1"]
    with pytest.raises(FileNotFoundError, match="ShapeNet directory not found"):
        M.find_models(tmp_path / "missing")


def test_texture_without_uvs_uses_material_colour(tmp_path):
    model = tmp_path / "nouv"
    obj = _write(model / "model.obj", "mtllib m.mtl\n" + TETRA_V + "usemtl tex\nf 1 2 3\nf 1 2 4\n")
    _write(model / "m.mtl", "newmtl tex\nKd 0 0 1\nmap_Kd tex.png\n")
    Image.fromarray(np.full((2, 2, 3), 50, np.uint8)).save(model / "tex.png")
    mesh = M.load_mesh(obj)
    assert np.all(mesh.face_texture == -1)
    np.testing.assert_array_equal(mesh.face_colors[:, :3], [[0, 0, 255]] * 2)
    assert len(mesh.warnings) == 1 and "has no texture coordinates" in mesh.warnings[0]
    assert mesh.warnings[0].startswith(obj)
