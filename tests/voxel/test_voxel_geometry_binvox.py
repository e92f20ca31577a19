"""binvox read/write: round trip, axis order against a hand-made file, errors."""

import numpy as np
import pytest

from ige_tf.voxel import binvox


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((32, 32, 32), (5, 7, 3)):
        occupancy = rng.random(shape) < 0.3
        occupancy[0, :, :] = True  # long runs (> 255) must be split
        path = tmp_path / f"grid_{shape[0]}.binvox"
        binvox.write_binvox(path, occupancy, translate=(-0.25, 0.5, 1.0 / 3.0), scale=1.75)
        loaded = binvox.read_binvox(path)
        np.testing.assert_array_equal(loaded.occupancy, occupancy)
        np.testing.assert_array_equal(loaded.translate, [-0.25, 0.5, 1.0 / 3.0])
        assert loaded.scale == 1.75
    assert not list(tmp_path.glob(".binvox-*"))  # no temporary files left


def test_hand_made_file_axis_order(tmp_path):
    # dim 2 2 2; storage order x, z, y with y fastest:
    # flat index (x * Z + z) * Y + y. Set only flat index 1 -> (x=0, z=0, y=1)
    # and flat index 6 -> (x=1, z=1, y=0).
    header = b"#binvox 1\ndim 2 2 2\ntranslate 0.5 -1 2\nscale 4\ndata\n"
    runs = bytes([0, 1, 1, 1, 0, 4, 1, 1, 0, 1])
    path = tmp_path / "hand.binvox"
    path.write_bytes(header + runs)
    loaded = binvox.read_binvox(path)
    assert loaded.occupancy.shape == (2, 2, 2)
    np.testing.assert_array_equal(np.argwhere(loaded.occupancy), [[0, 1, 0], [1, 0, 1]])
    # [x, y, z] indexing: voxel (x=1, y=0, z=1) centre in model coordinates.
    lower, upper = loaded.bounds
    np.testing.assert_allclose(lower, [0.5, -1.0, 2.0])
    np.testing.assert_allclose(upper, [4.5, 3.0, 6.0])
    assert loaded.voxel_size == 2.0
    # Writing it back gives the same bytes.
    again = tmp_path / "again.binvox"
    binvox.write_binvox(again, loaded.occupancy, loaded.translate, loaded.scale)
    assert again.read_bytes().split(b"data\n", 1)[1] == runs


def test_non_cubic_dim_line_is_storage_order(tmp_path):
    occupancy = np.zeros((2, 3, 4), bool)  # X=2, Y=3, Z=4
    occupancy[1, 2, 3] = True
    path = tmp_path / "box.binvox"
    binvox.write_binvox(path, occupancy)
    raw = path.read_bytes()
    assert b"dim 2 4 3\n" in raw  # x, z, y
    flat = np.repeat(np.frombuffer(raw.split(b"data\n", 1)[1], np.uint8)[0::2],
                     np.frombuffer(raw.split(b"data\n", 1)[1], np.uint8)[1::2])
    assert np.flatnonzero(flat).tolist() == [(1 * 4 + 3) * 3 + 2]


def test_encode_runs():
    assert binvox.encode_runs(np.zeros(600, bool)) == bytes([0, 255, 0, 255, 0, 90])
    assert binvox.encode_runs(np.array([1, 1, 0, 1], bool)) == bytes([1, 2, 0, 1, 1, 1])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"#voxels\ndim 2 2 2\ndata\n", "first line"),
        (b"#binvox 1\ndim 2 2\ntranslate 0 0 0\nscale 1\ndata\n", "bad header"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\ndata\n\x00\x07", "cover 7 voxels"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\ndata\n\x00\x08\x01", "odd number"),
        (b"#binvox 1\ndim 2 2 2\n", "truncated"),
        (b"#binvox 1\ndim a b c\ntranslate 0 0 0\nscale 1\ndata\n", "bad or missing"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.binvox"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        binvox.read_binvox(path)
    assert str(path) in str(info.value)
