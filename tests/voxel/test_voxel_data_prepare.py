"""ShapeNet -> records: bad inputs, resumption, splits, determinism, inspection."""
import collections
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import scipy.ndimage
import trimesh

from ige_tf.data import records_check
from ige_tf.voxel import camera as camera_lib
from ige_tf.voxel import frustum as frustum_lib
from ige_tf.voxel import mesh as mesh_lib
from ige_tf.voxel import synthetic
from ige_tf.voxel.data import inspection
from ige_tf.voxel.data import pipeline
from ige_tf.voxel.data import prepare
from ige_tf.voxel.data import records

SMALL = dict(resolutions=(8, 16), views=2, image_size=32, progress=False)
GOOD_SYNSETS = ("02958343", "03001627", "04379243")
CHAIR = "03001627"

CUBE = ("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nv 1 0 1\nv 1 1 1\nv 0 1 1\n"
        "f 1 3 2\nf 1 4 3\nf 5 6 7\nf 5 7 8\nf 1 2 6\nf 1 6 5\nf 2 3 7\nf 2 7 6\n"
        "f 3 4 8\nf 3 8 7\nf 4 1 5\nf 4 5 8\n")


def _write(root, model_id, files):
  model_dir = os.path.join(root, CHAIR, model_id)
  os.makedirs(model_dir, exist_ok=True)
  for name, content in files.items():
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(os.path.join(model_dir, name), mode) as f:
      f.write(content)
  return os.path.join(model_dir, "model.obj")


def _bad_models(root):
  """Writes the bad inputs; returns {kind: obj path}."""
  paths = {}
  paths["empty"] = _write(root, "bad_empty", {"model.obj": "v 0 0 0\nv 1 0 0\n"})
  nan_cube = CUBE.replace("v 1 1 1\n", "v nan 1 1\n")
  paths["nan"] = _write(root, "bad_nan", {"model.obj": nan_cube})
  paths["no_mtl"] = _write(root, "bad_no_mtl", {"model.obj": "mtllib gone.mtl\nusemtl a\n" + CUBE})
  paths["no_texture"] = _write(root, "bad_no_texture", {
      "model.mtl": "newmtl a\nKd 0.8 0.2 0.2\nmap_Kd missing.png\n",
      "model.obj": "mtllib model.mtl\nusemtl a\nvt 0 0\nvt 1 0\nvt 0 1\n"
                   + CUBE.replace("f 1 3 2", "f 1/1 3/2 2/3")})
  paths["zero_area"] = _write(root, "bad_zero_area",
                              {"model.obj": CUBE + "v 2 0 0\nf 1 2 9\nf 1 1 2\n"})
  paths["unreadable"] = _write(root, "bad_unreadable",
                               {"model.obj": bytes(range(256)) * 8})
  huge = trimesh.creation.icosphere(subdivisions=4)   # 5120 faces > max_faces below
  paths["huge"] = _write(root, "bad_huge", {"model.obj": trimesh.exchange.obj.export_obj(huge)})
  os.makedirs(os.path.join(root, CHAIR, "bad_no_obj"))
  paths["no_obj"] = os.path.join(root, CHAIR, "bad_no_obj", "model.obj")
  return paths


@pytest.fixture(scope="module")
def shapenet(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("shapenet"))
  good = synthetic.make_synthetic_shapenet(root, 1, seed=11, synsets=GOOD_SYNSETS)
  bad = _bad_models(root)
  return root, good, bad


@pytest.fixture(scope="module")
def prepared(shapenet, tmp_path_factory):
  root, _, _ = shapenet
  out = str(tmp_path_factory.mktemp("records"))
  manifest = prepare.prepare_shapenet(root, out, workers=1, models_per_shard=2,
                                      max_faces=3000, **SMALL)
  return out, manifest


def test_bad_inputs_are_recorded_and_nothing_else_is_lost(shapenet, prepared):
  root, good, bad = shapenet
  out, manifest = prepared
  skipped = {s["model_id"]: s for s in manifest["skipped"]}
  # Unusable models: skipped, with a reason naming the file and the problem.
  for kind, problem in [("empty", "empty mesh"), ("unreadable", "empty mesh"),
                        ("huge", "too many faces"), ("no_obj", "not found")]:
    entry = skipped.pop(f"bad_{kind}")
    assert entry["reason"].startswith(bad[kind]) and problem in entry["reason"], entry
  assert not skipped
  # Recoverable problems: the model is written and the problem recorded.
  warnings = {w["model_id"]: " ".join(w["warnings"]) for w in manifest["warnings"]}
  for kind, problem in [("nan", "NaN"), ("no_mtl", "gone.mtl"), ("no_texture", "missing.png"),
                        ("zero_area", "zero-area")]:
    assert bad[kind] in warnings[f"bad_{kind}"] and problem in warnings[f"bad_{kind}"]
  written = {m for split in ("train", "test") for m in _model_ids(out, split)}
  expected = {g["model_id"] for g in good} | {f"bad_{k}" for k in
                                               ("nan", "no_mtl", "no_texture", "zero_area")}
  assert written == expected
  counts = manifest["counts"]
  assert counts["models_written"] == len(expected) and counts["models_skipped"] == 4
  assert counts["examples"] == 2 * len(expected)
  assert counts["by_synset"][CHAIR] == {"written": 5, "skipped": 4}
  assert manifest["complete"]
  params = manifest["parameters"]
  assert params["resolutions"] == [8, 16] and params["world_resolutions"] == [8, 16]
  assert params["split"]["source"] == "hash" and params["max_faces"] == 3000


def _model_ids(out, split):
  ids = collections.Counter()
  for name in pipeline.shard_files(out, split):
    for serialized in records.read_tfrecord(name):
      ids[records.parse(serialized).model_id] += 1
  return ids


def test_records_hold_the_model_geometry(shapenet, prepared):
  """Stored grids equal a fresh voxelization, camera and mask included."""
  root, good, _ = shapenet
  out, _ = prepared
  chair = next(g for g in good if g["synset"] == CHAIR)
  split = prepare.hash_split(chair["model_id"])
  examples = [records.parse(s) for f in pipeline.shard_files(out, split)
              for s in records.read_tfrecord(f)]
  examples = [e for e in examples if e.model_id == chair["model_id"]]
  assert [e.view for e in examples] == [0, 1]
  mesh = mesh_lib.load_mesh(chair["path"])
  cameras = camera_lib.view_cameras(chair["model_id"], seed=0, num_views=2, image_size=32)
  world = frustum_lib.world_grids(mesh.vertices, mesh.faces, (8, 16))
  for example, camera in zip(examples, cameras):
    np.testing.assert_allclose(example.extrinsics, camera.extrinsics, atol=1e-6)
    grids, near_far = frustum_lib.frustum_grids(mesh.vertices, mesh.faces, camera, (8, 16))
    np.testing.assert_allclose(example.near_far, near_far, rtol=1e-6)
    for r in (8, 16):
      np.testing.assert_array_equal(example.frustum[r], grids[r])
      np.testing.assert_array_equal(example.world[r], world[r])
    assert 0 < example.mask.mean() < 1
    # White background away from the (anti-aliased) silhouette edge; thin
    # parts that only sub-pixel samples hit are the rare exceptions at S=32.
    near = scipy.ndimage.binary_dilation(example.mask, iterations=1)
    assert (example.image[~near] == 255).all(axis=-1).mean() > 0.97
    # The grid's silhouette covers the rendered one (conservative voxels).
    covered = inspection.grid_silhouette(example.frustum[16], 32)
    assert (covered[example.mask]).mean() > 0.97


def test_resume_skips_finished_shards_and_rewrites_identically(shapenet, prepared, tmp_path):
  root, _, _ = shapenet
  out, manifest = prepared
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  shards = [os.path.join(copy, s) for split in manifest["splits"].values()
            for s in split["shards"]]
  before = {s: (os.stat(s).st_mtime_ns, open(s, "rb").read()) for s in shards}
  victim = shards[1]
  os.remove(victim[:-len(".tfrecord")] + ".json")        # unfinished: no sidecar
  with open(victim, "wb") as f:
    f.write(b"partial garbage")
  again = prepare.prepare_shapenet(root, copy, workers=1, models_per_shard=2, max_faces=3000,
                                   **SMALL)
  for shard, (mtime, data) in before.items():
    if shard == victim:
      assert open(shard, "rb").read() == data               # deterministic rewrite
    else:
      assert os.stat(shard).st_mtime_ns == mtime            # untouched
  timing = "mean_seconds_per_model"
  assert ({k: v for k, v in again["counts"].items() if k != timing}
          == {k: v for k, v in manifest["counts"].items() if k != timing})
  assert again["skipped"] == manifest["skipped"]
  assert not [f for f in os.listdir(os.path.dirname(victim)) if ".tmp" in f]
  with pytest.raises(ValueError, match=r"prepared with other settings .*"
                     r"resolutions: previous \[8, 16\], now \[8\]"):
    prepare.prepare_shapenet(root, copy, workers=1, models_per_shard=2, max_faces=3000,
                             **dict(SMALL, resolutions=(8,)))


def test_resume_rewrites_a_damaged_shard_and_removes_stale_temporaries(
    shapenet, prepared, tmp_path, damage_shard):
  root, _, _ = shapenet
  out, manifest = prepared
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  shards = [os.path.join(copy, s) for split in manifest["splits"].values()
            for s in split["shards"]]
  before = {s: (os.stat(s).st_mtime_ns, open(s, "rb").read()) for s in shards}
  victim = shards[0]
  damage_shard(victim, "flip")            # sidecar kept, same size
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  stale = [f"{victim}.tmp-{dead.pid}", f"{shards[1]}.tmp-{dead.pid}",
           os.path.join(copy, f"manifest.json.tmp-{dead.pid}")]
  for path in stale:
    with open(path, "w") as f:
      f.write("partial")
  again = prepare.prepare_shapenet(root, copy, workers=1, models_per_shard=2,
                                   max_faces=3000, **SMALL)
  for shard, (mtime, data) in before.items():
    assert open(shard, "rb").read() == data, shard    # rewritten identically
    if shard != victim:
      assert os.stat(shard).st_mtime_ns == mtime       # verified, kept
  assert os.stat(victim).st_mtime_ns != before[victim][0]
  assert not [p for p in stale if os.path.exists(p)]
  assert again["splits"] == manifest["splits"]


def test_a_manifest_of_the_previous_version_is_refused_then_rewritten(
    shapenet, prepared, tmp_path):
  """Voxel manifests before the shared schema had no manifest_version:
  readers name the manifest and the command, which resumes (every shard
  verified and kept) and rewrites it."""
  root, _, _ = shapenet
  out, manifest = prepared
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  path = os.path.join(copy, "manifest.json")
  old = dict(manifest)
  del old["manifest_version"]
  with open(path, "w") as f:
    json.dump(old, f)
  shards = sorted(glob.glob(os.path.join(copy, "*", "*.tfrecord")))
  mtimes = {p: os.stat(p).st_mtime_ns for p in shards}
  with pytest.raises(records_check.ShardError, match=re.escape(
      f"{path}: written by an older version of ige_tf") + ".*" + re.escape(
          "re-run bin/prepare_shapenet.py (or bin/import_r2n2.py) with the "
          "same flags: it resumes")):
    pipeline.voxel_dataset(copy, "train", 8, 2)
  again = prepare.prepare_shapenet(root, copy, workers=1, models_per_shard=2,
                                   max_faces=3000, **SMALL)
  assert again == manifest
  assert {p: os.stat(p).st_mtime_ns for p in shards} == mtimes
  next(iter(pipeline.voxel_dataset(copy, "train", 8, 2)))


def test_worker_processes_write_the_same_bytes(shapenet, prepared, tmp_path):
  root, _, _ = shapenet
  out, manifest = prepared
  parallel = str(tmp_path / "parallel")
  prepare.prepare_shapenet(root, parallel, workers=2, models_per_shard=2, max_faces=3000,
                           **SMALL)
  for split in manifest["splits"].values():
    for shard in split["shards"]:
      with open(os.path.join(out, shard), "rb") as a, open(os.path.join(parallel, shard),
                                                           "rb") as b:
        assert a.read() == b.read(), shard


def test_hash_split_is_deterministic_and_80_20():
  ids = [f"{i:032x}" for i in range(3000)]
  splits = [prepare.hash_split(i) for i in ids]
  assert splits == [prepare.hash_split(i) for i in reversed(ids)][::-1]
  assert abs(splits.count("train") / len(ids) - 0.8) < 0.03
  assert set(splits) == {"train", "test"}
  # Pinned values: the split never changes between versions or machines
  # (sha256("model0")[:8] / 2^64 = 0.8735 -> test; the ShapeNet id: 0.2999).
  assert [prepare.hash_split(m) for m in ("1a6f615e8b1b5ae4dbbc9440457e303e",
                                          "model0", "model1", "model2")] == [
      "train", "test", "train", "train"]
  assert prepare.hash_split("model0", train_fraction=0.9) == "train"


def test_split_file_assigns_splits_and_reports_missing(shapenet, tmp_path):
  root, good, _ = shapenet
  by_synset = {g["synset"]: g["model_id"] for g in good}
  split_file = tmp_path / "ShapeNet.json"
  split_file.write_text(json.dumps([
      {"taxonomy_id": "03001627", "taxonomy_name": "chair", "train": [by_synset[CHAIR]],
       "val": [], "test": ["not_on_disk"]},
      {"taxonomy_id": "04379243", "taxonomy_name": "table", "train": [],
       "val": [by_synset["04379243"]], "test": []},
  ]))
  out = str(tmp_path / "out")
  manifest = prepare.prepare_shapenet(root, out, synsets=[CHAIR, "04379243"],
                                      split_file=str(split_file), workers=1, **SMALL)
  assert {k: v["num_models"] for k, v in manifest["splits"].items()} == {"train": 1, "val": 1}
  assert manifest["split_file_models_missing"] == ["03001627/not_on_disk"]
  assert manifest["models_not_in_split_file"] == 8     # the 8 bad chair folders
  assert manifest["parameters"]["split"]["source"] == "file"
  _, labels = next(iter(pipeline.voxel_dataset(out, "val", 16, 4)))
  assert set(labels["model_id"].numpy()) == {by_synset["04379243"].encode()}
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"train": []}))
  with pytest.raises(ValueError, match=f"{bad}: split file must be a JSON list"):
    prepare.read_split_file(str(bad))


def test_inspect_record_writes_npz_and_png(prepared, tmp_path):
  out, _ = prepared
  prefix = str(tmp_path / "inspect" / "ex")
  result = inspection.inspect_record(os.path.join(out, "train"), 1, prefix)
  with np.load(prefix + ".npz") as data:
    keys = set(data.files)
    assert {"image", "mask", "frustum_8", "frustum_16", "world_8", "world_16",
            "intrinsics", "extrinsics"} <= keys
    example = result["example"]
    np.testing.assert_array_equal(data["image"], example.image)
    np.testing.assert_array_equal(data["mask"], example.mask)
    np.testing.assert_array_equal(data["frustum_16"], example.frustum[16])
    assert data["image"].shape == (32, 32, 3) and data["mask"].dtype == bool
    assert data["intrinsics"].shape == (3, 3) and data["extrinsics"].shape == (3, 4)
  with PIL.Image.open(prefix + ".png") as image:
    assert image.format == "PNG" and image.width > 3 * image.height / 2
  # Example 1 of the sorted files is the second view of the first model.
  first = records.parse(next(records.read_tfrecord(inspection.record_files(
      os.path.join(out, "train"))[0])))
  assert (example.model_id, example.view) == (first.model_id, 1)
  with pytest.raises(IndexError, match="out of range"):
    inspection.read_example(os.path.join(out, "train"), 10_000)


def _children(pid):
  """Pids of the live (not zombie) processes whose parent is `pid`."""
  found = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid and fields[0] != "Z":
      found.append(int(entry))
  return found


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc (Linux)")
def test_sigkilled_prepare_shapenet_leaves_no_live_worker(repo_dir, tmp_path):
  root = str(tmp_path / "shapenet")
  synthetic.make_synthetic_shapenet(root, 2, seed=3, synsets=GOOD_SYNSETS)
  out = str(tmp_path / "records")
  parent = subprocess.Popen(
      [sys.executable, os.path.join(repo_dir, "bin", "prepare_shapenet.py"),
       f"--shapenet_dir={root}", f"--out_dir={out}", "--workers=2",
       f"--synsets={','.join(GOOD_SYNSETS)}", "--models_per_shard=1",
       "--resolutions=8", "--views=2", "--image_size=32", "--max_faces=3000"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, PYTHONPATH=repo_dir))
  workers, helpers = [], []
  try:
    # Kill the parent while its workers are processing models (after the
    # first finished shard).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and parent.poll() is None:
      workers = [p for p in _children(parent.pid)
                 if "spawn_main" in open(f"/proc/{p}/cmdline").read()]
      if len(workers) == 2 and glob.glob(os.path.join(out, "*", "*.json")):
        break
      time.sleep(0.02)
    helpers = _children(parent.pid)   # the workers and multiprocessing's own
    assert parent.poll() is None, "the run ended before it could be killed"
    assert len(workers) == 2 and all(map(_alive, workers))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(map(_alive, helpers)):
      time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)]
  finally:
    if parent.poll() is None:
      parent.kill()
      parent.wait()
    for pid in set(workers) | set(helpers):   # no orphan, even on failure
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)
