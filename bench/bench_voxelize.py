"""Benchmark: seconds per model for world + 24 frustum voxel grids.

For generated meshes of about 5k, 20k and 50k faces (a torus, a bumpy sphere
and a self-intersecting "chair" of subdivided boxes) this times, per model:

* ``nested_32_64_128``: what data preparation does -- the world grid and the
  24 frustum grids, each voxelized once at 128 and OR-pooled to 64 and 32,
  every grid filled;
* ``R_<r>``: the world grid and 24 frustum grids at one resolution r
  (32, 64, 128, 256), filled.

A stress case (``coincident_cylinders``: ~50 thin 256-section cylinders on
top of each other, so every cell is tested by hundreds of sliver triangles)
is run at the largest face count.

CPU seconds (``time.process_time``, single thread) are the per-core figure;
wall seconds are recorded too. Results: ``bench/results/voxelize.json`` and
``bench/results/voxelize.md``.

Usage:
  python bench/bench_voxelize.py [--resolutions 32,64,128,256] [--backend numba]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import trimesh

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from ige_tf.voxel import camera as camera_lib  # noqa: E402
from ige_tf.voxel import frustum as frustum_lib  # noqa: E402
from ige_tf.voxel import voxelize as voxelize_lib  # noqa: E402
from ige_tf.voxel.mesh import mesh_from_arrays  # noqa: E402


def _torus(faces: int) -> trimesh.Trimesh:
    minor = int(round(np.sqrt(faces / 2 / 2.5)))
    major = int(round(faces / 2 / minor))
    return trimesh.creation.torus(0.35, 0.1, major_sections=major, minor_sections=minor)


def _bumpy_sphere(faces: int) -> trimesh.Trimesh:
    rows = int(round(np.sqrt(faces / 8)))
    sphere = trimesh.creation.uv_sphere(radius=0.4, count=[rows, 2 * rows])
    direction = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    bump = 1.0 + 0.15 * np.sin(5 * direction[:, 0]) * np.cos(4 * direction[:, 1]) * np.sin(3 * direction[:, 2] + 1)
    return trimesh.Trimesh(sphere.vertices * bump[:, None], sphere.faces, process=False)


def _chair(faces: int) -> trimesh.Trimesh:
    """Seat and back (subdivided boxes), 4 cylinder legs, 5 back spindles.

    Thin cylinders with many sections (long sliver triangles) are common in
    ShapeNet; the section count is chosen to reach the face count.
    """
    boxes = [((0.5, 0.05, 0.5), (0, 0, 0)), ((0.5, 0.12, 0.05), (0, 0.45, -0.22))]
    parts = [trimesh.creation.box(size, trimesh.transformations.translation_matrix(pos)) for size, pos in boxes]
    base = trimesh.util.concatenate(parts)
    vertices, tris = trimesh.remesh.subdivide(*trimesh.remesh.subdivide(base.vertices, base.faces))
    parts = [trimesh.Trimesh(vertices, tris, process=False)]
    sections = max(8, int((faces - len(tris)) / (9 * 4)))
    upright = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    for x in (-0.22, 0.22):
        for z in (-0.22, 0.22):
            leg = trimesh.creation.cylinder(0.025, 0.45, sections=sections, transform=upright)
            leg.apply_translation([x, -0.25, z])
            parts.append(leg)
    for x in np.linspace(-0.18, 0.18, 5):
        spindle = trimesh.creation.cylinder(0.012, 0.35, sections=sections, transform=upright)
        spindle.apply_translation([x, 0.22, -0.22])
        parts.append(spindle)
    return trimesh.util.concatenate(parts)


def _coincident_cylinders(faces: int) -> trimesh.Trimesh:
    """Stress case: many thin 256-section cylinders on top of each other."""
    parts = []
    rng = np.random.default_rng(0)
    while sum(len(p.faces) for p in parts) < faces:
        spindle = trimesh.creation.cylinder(0.015, 0.45, sections=256)
        spindle.apply_translation([rng.uniform(-0.02, 0.02), 0.0, rng.uniform(-0.02, 0.02)])
        parts.append(spindle)
    parts.append(trimesh.creation.box((0.5, 0.05, 0.5)))
    return trimesh.util.concatenate(parts)


GENERATORS = {"torus": _torus, "bumpy_sphere": _bumpy_sphere, "chair": _chair}
STRESS = {"coincident_cylinders": _coincident_cylinders}


def _time(fn):
    wall = time.perf_counter()
    cpu = time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def run(resolutions=(32, 64, 128, 256), face_counts=(5000, 20000, 50000), backend=None, views=24, stress=True):
    """Runs the benchmark and returns a JSON-serializable dict."""
    # Compile / load the numba kernels outside the timings.
    warm = trimesh.creation.icosphere(1)
    voxelize_lib.voxelize(warm.vertices * 0.4, warm.faces, 8)
    cameras = camera_lib.view_cameras("benchmark", seed=0, num_views=views)
    rows = []
    jobs = [(name, generator, count) for name, generator in GENERATORS.items() for count in face_counts]
    if stress:
        jobs += [(name, generator, max(face_counts)) for name, generator in STRESS.items()]
    for name, generator, count in jobs:
        raw = generator(count)
        mesh = mesh_from_arrays(raw.vertices, raw.faces)
        v, f = mesh.vertices, mesh.faces
        row = {"mesh": name, "faces": int(len(f)), "timings": {}}

        def nested():
            frustum_lib.world_grids(v, f, (32, 64, 128), backend=backend)
            for cam in cameras:
                frustum_lib.frustum_grids(v, f, cam, (32, 64, 128), backend=backend)

        cpu, wall = _time(nested)
        row["timings"]["nested_32_64_128"] = {"cpu_s": cpu, "wall_s": wall}
        for r in resolutions:

            def single(r=r):
                voxelize_lib.voxelize(v, f, r, backend=backend)
                for cam in cameras:
                    frustum_lib.frustum_grids(v, f, cam, (r,), backend=backend)

            cpu, wall = _time(single)
            row["timings"][f"R_{r}"] = {"cpu_s": cpu, "wall_s": wall}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {
        "backend": backend or voxelize_lib.DEFAULT_BACKEND,
        "views": views,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


def to_markdown(result) -> str:
    keys = list(result["rows"][0]["timings"])
    lines = [
        f"Backend `{result['backend']}`, {result['views']} views, CPU seconds per model "
        "(world grid + all frustum grids, filled; single thread).",
        "",
        "| mesh | faces | " + " | ".join(keys) + " |",
        "|---|---:|" + "---:|" * len(keys),
    ]
    for row in result["rows"]:
        cells = [f"{row['timings'][k]['cpu_s']:.2f}" for k in keys]
        lines.append(f"| {row['mesh']} | {row['faces']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", default="32,64,128,256")
    parser.add_argument("--faces", default="5000,20000,50000")
    parser.add_argument("--backend", default=None, choices=list(voxelize_lib.BACKENDS))
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--no_stress", action="store_true", help="skip the coincident-cylinders stress mesh")
    parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    result = run(
        tuple(int(r) for r in args.resolutions.split(",")),
        tuple(int(c) for c in args.faces.split(",")),
        backend=args.backend,
        views=args.views,
        stress=not args.no_stress,
    )
    os.makedirs(args.out_dir, exist_ok=True)
    suffix = "" if args.backend in (None, voxelize_lib.DEFAULT_BACKEND) else f"_{args.backend}"
    with open(os.path.join(args.out_dir, f"voxelize{suffix}.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    markdown = to_markdown(result)
    with open(os.path.join(args.out_dir, f"voxelize{suffix}.md"), "w") as handle:
        handle.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
