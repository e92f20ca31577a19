"""binvox voxel files (read and write).

Format (http://www.patrickmin.com/binvox/binvox.html): an ASCII header ::

    #binvox 1
    dim <X> <Z> <Y>
    translate <tx> <ty> <tz>
    scale <s>
    data

then run-length pairs of bytes ``(value, count)``, count in 1..255. Voxels are
stored with y running fastest, then z, then x: the flat index of voxel
``(x, y, z)`` is ``(x * Z + z) * Y + y``, so the ``dim`` line lists the sizes
in storage order x, z, y (all ShapeNet grids are cubic).

Axis mapping (:class:`Binvox`): ``occupancy[i, j, k]`` is the voxel at binvox
x index i, y index j, z index k -- the same ``[x, y, z]`` order as our world
grids (``world[i, j, k]``), i.e. storage ``[x, z, y]`` transposed by
``(0, 2, 1)``. Model coordinates: voxel index ``n`` along an axis covers
``translate + scale * [n, n + 1] / max(dim)`` (binvox fits the longest side of
the model's box into ``scale``), so cell centres are
``translate + scale * (n + 0.5) / max(dim)``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence, Tuple

import numpy as np

from ige_tf import atomic


@dataclasses.dataclass
class Binvox:
    """A binvox grid.

    Attributes:
      occupancy: bool [X, Y, Z] indexed ``[x, y, z]``.
      translate: float64 [3] model coordinates of the grid's lower corner.
      scale: float, model-space length of ``max(X, Y, Z)`` voxels.
    """

    occupancy: np.ndarray
    translate: np.ndarray
    scale: float

    @property
    def voxel_size(self) -> float:
        """Model-space edge length of one voxel."""
        return float(self.scale) / max(self.occupancy.shape)

    @property
    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """(lower, upper): float64 [3] model-space corners of the whole grid."""
        lower = np.asarray(self.translate, dtype=np.float64)
        return lower, lower + self.voxel_size * np.array(self.occupancy.shape, dtype=np.float64)


def _header_error(path, message):
    return ValueError(f"{path}: invalid binvox file: {message}")


def read_binvox(path) -> Binvox:
    """Reads a binvox file.

    Args:
      path: the ``.binvox`` file.

    Returns:
      :class:`Binvox` with ``occupancy`` bool [X, Y, Z] in ``[x, y, z]`` order.

    Raises:
      ValueError: naming the file, for a bad header or run-length data.
      FileNotFoundError: missing file.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    lines = []
    position = 0
    while len(lines) < 5:
        end = raw.find(b"\n", position)
        if end < 0:
            raise _header_error(path, "truncated header")
        line = raw[position:end].strip()
        position = end + 1
        lines.append(line)
        if line == b"data":
            break
    if not lines or not lines[0].startswith(b"#binvox"):
        raise _header_error(path, "first line is not '#binvox 1'")
    fields = {}
    for line in lines[1:]:
        if line == b"data":
            break
        parts = line.decode("ascii", "replace").split()
        if parts:
            fields[parts[0]] = parts[1:]
    if lines[-1] != b"data":
        raise _header_error(path, "missing 'data' line")
    try:
        dims = [int(x) for x in fields["dim"]]
        translate = np.array([float(x) for x in fields.get("translate", ["0", "0", "0"])], dtype=np.float64)
        scale = float(fields.get("scale", ["1"])[0])
    except (KeyError, ValueError, IndexError):
        raise _header_error(path, "bad or missing 'dim', 'translate' or 'scale'") from None
    if len(dims) != 3 or min(dims) < 1 or translate.shape != (3,):
        raise _header_error(path, f"bad header values dim={dims} translate={translate.tolist()}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=position)
    if len(data) % 2:
        raise _header_error(path, "odd number of run-length bytes")
    values, counts = data[0::2], data[1::2]
    total = int(counts.sum(dtype=np.int64))
    expected = dims[0] * dims[1] * dims[2]
    if total != expected:
        raise _header_error(path, f"run lengths cover {total} voxels, dim needs {expected}")
    flat = np.repeat(values != 0, counts)
    occupancy = flat.reshape(dims).transpose(0, 2, 1)  # stored [x, z, y] -> [x, y, z]
    return Binvox(np.ascontiguousarray(occupancy), translate, scale)


def encode_runs(flat: np.ndarray) -> bytes:
    """Run-length encodes a flat bool array as binvox ``(value, count)`` byte pairs."""
    flat = np.asarray(flat, dtype=np.uint8).reshape(-1)
    if not len(flat):
        return b""
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.r_[0, change]
    lengths = np.diff(np.r_[starts, len(flat)])
    values = flat[starts]
    # Split runs longer than 255.
    pieces = (lengths + 254) // 255
    run_values = np.repeat(values, pieces)
    run_lengths = np.full(int(pieces.sum()), 255, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    run_lengths[last] = lengths - 255 * (pieces - 1)
    pairs = np.stack([run_values, run_lengths.astype(np.uint8)], axis=1)
    return pairs.astype(np.uint8).tobytes()


def write_binvox(path, occupancy, translate: Sequence[float] = (0.0, 0.0, 0.0), scale: float = 1.0) -> None:
    """Writes a binvox file atomically (temporary file, then rename).

    Args:
      path: destination.
      occupancy: bool [X, Y, Z] indexed ``[x, y, z]``.
      translate: float [3] model coordinates of the grid's lower corner.
      scale: model-space length of ``max(X, Y, Z)`` voxels.
    """
    path = os.fspath(path)
    occupancy = np.asarray(occupancy, dtype=bool)
    if occupancy.ndim != 3:
        raise ValueError(f"occupancy must be 3D, got shape {occupancy.shape}")
    x, y, z = occupancy.shape
    translate = [float(t) for t in translate]
    header = (
        "#binvox 1\n"
        f"dim {x} {z} {y}\n"
        f"translate {translate[0]!r} {translate[1]!r} {translate[2]!r}\n"
        f"scale {float(scale)!r}\n"
        "data\n"
    ).encode("ascii")
    body = encode_runs(occupancy.transpose(0, 2, 1).reshape(-1))
    atomic.write_bytes(path, header + body)
