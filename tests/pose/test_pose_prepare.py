"""prepare_h36m: record round trip, manifest skips, resume, bad input."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from ige_tf.data import records_check
from ige_tf.pose import skeleton
from ige_tf.pose.data import h36m
from ige_tf.pose.data import pipeline
from ige_tf.pose.data import prepare
from ige_tf.pose.data import records
# pylint: disable=import-error,unused-import
from test_pose_camera import reference_projection
from test_pose_readers import read_raw_3d
from test_pose_readers import write_videopose3d_npz


def load_manifest(out_dir):
  with open(os.path.join(out_dir, "manifest.json")) as f:
    return json.load(f)


def expected_examples(h36m_dir, subject, sequence, source, frames=None):
  """Examples of one shard, computed independently from the raw files."""
  with h5py.File(os.path.join(h36m_dir, "cameras.h5"), "r") as h5:
    out = {}
    world = read_raw_3d(h36m_dir, subject, sequence)
    for k, camera_id in enumerate(h36m.CAMERAS, start=1):
      g = h5[f"subject{subject[1:]}/camera{k}"]
      rot, centre = g["R"][()].T, g["T"][()][:, 0]
      f, c, kk, p = (g[n][()][:, 0] for n in "fckp")
      cam_3d = (world - centre) @ rot.T
      if source == "gt":
        mpii = skeleton.conversion_indices("h36m32", "mpii16")
        pose_2d = np.array([[reference_projection(cam_3d[n, j], f, c, kk, p)
                             for j in mpii] for n in range(len(world))])
      else:
        path = os.path.join(h36m_dir, subject, "StackedHourglass",
                            f"{sequence.replace(' ', '_')}.{camera_id}.h5")
        if not os.path.exists(path):
          continue
        with h5py.File(path, "r") as d:
          pose_2d = d["poses"][()]
      idx = np.arange(len(world)) if frames is None else frames
      out[camera_id] = dict(
          pose_2d=pose_2d[idx],
          pose_3d=cam_3d[idx][:, skeleton.H36M32_TO_H36M17] / 1000.0,
          f=f, c=c, k=kk, p=p, frames=idx)
  return out


def by_camera_frame(data):
  return {(c, int(fr)): i for i, (c, fr) in enumerate(zip(data["camera"],
                                                          data["frame"]))}


@pytest.mark.parametrize("source", ["gt", "sh"])
def test_records_round_trip(synthetic_h36m, records_gt, records_sh,
                            source):
  out = records_gt if source == "gt" else records_sh
  sequence = h36m.MartinezLayout(synthetic_h36m).sequences("S9")[1]
  path = os.path.join(out, "test", prepare.shard_name("S9", sequence) +
                      ".tfrecord")
  data = records.read_records(path)
  expected = expected_examples(synthetic_h36m, "S9", sequence, source)
  index = by_camera_frame(data)
  assert len(index) == len(data["frame"]) == 12 * len(expected)
  for camera_id, exp in expected.items():
    for n, frame in enumerate(exp["frames"]):
      i = index[(camera_id, frame)]
      np.testing.assert_allclose(data["pose_2d"][i], exp["pose_2d"][n],
                                 rtol=1e-6, atol=1e-3)
      np.testing.assert_allclose(data["pose_3d"][i], exp["pose_3d"][n],
                                 rtol=1e-6, atol=1e-6)
      for key in "fckp":
        np.testing.assert_allclose(data[key][i], exp[key], rtol=1e-6)
  assert set(data["subject"]) == {"S9"}
  assert set(data["sequence"]) == {sequence}
  assert set(data["action"]) == {h36m.action_of(sequence)}


def test_manifest_counts_and_skips(records_sh):
  manifest = load_manifest(records_sh)
  train, test = manifest["splits"]["train"], manifest["splits"]["test"]
  # S1: 6 sequences x 12 frames x 4 cameras; test: S9 full, S11 minus one
  # camera of Directions.
  assert train["num_examples"] == 6 * 12 * 4
  assert test["num_examples"] == 2 * 6 * 12 * 4 - 12
  assert train["subjects"] == {"S1": 288}
  assert sum(test["actions"].values()) == test["num_examples"]
  shards = glob.glob(os.path.join(records_sh, "*", "*.tfrecord"))
  assert len(shards) == len(train["shards"]) + len(test["shards"]) == 18
  [skip] = manifest["skipped"]
  assert skip["subject"] == "S11" and skip["sequence"] == "Directions"
  assert skip["camera"] == "54138969" and skip["scope"] == "camera"
  assert skip["file"].endswith("Directions.54138969.h5")
  assert "no detection file" in skip["reason"]
  assert manifest["joints"]["pose_2d"] == list(skeleton.MPII16.joints)
  assert not glob.glob(os.path.join(records_sh, "**", "*.tmp-*"),
                       recursive=True)


def test_subsample_keeps_every_nth_frame(synthetic_h36m, tmp_path):
  prepare.prepare_h36m(str(tmp_path), "gt", h36m_dir=synthetic_h36m,
                       subsample=5, subjects=("S9",), progress=False)
  data = records.read_records(sorted(glob.glob(str(tmp_path / "test" /
                                                   "*.tfrecord"))))
  assert sorted(set(data["frame"].tolist())) == [0, 5, 10]
  assert load_manifest(str(tmp_path))["splits"]["test"]["num_examples"] == (
      6 * 3 * 4)


def test_missing_subjects_are_listed(synthetic_h36m, tmp_path):
  manifest = prepare.prepare_h36m(str(tmp_path), "gt",
                                  h36m_dir=synthetic_h36m,
                                  subjects=("S1", "S5"), progress=False)
  [skip] = manifest["skipped"]
  assert skip["subject"] == "S5" and skip["scope"] == "subject"
  assert "3D positions folder not found" in skip["reason"]


def test_resume_skips_finished_shards(synthetic_h36m, tmp_path):
  out = str(tmp_path / "rec")
  kwargs = dict(h36m_dir=synthetic_h36m, subjects=("S9",), progress=False)
  first = prepare.prepare_h36m(out, "sh", **kwargs)
  shards = sorted(glob.glob(os.path.join(out, "test", "*.tfrecord")))
  mtimes = {p: os.stat(p).st_mtime_ns for p in shards}
  # Simulate an interrupted run: one shard lost its summary (and a stale
  # temporary file is lying around).
  os.remove(shards[0][:-len(".tfrecord")] + ".json")
  with open(shards[0] + ".tmp-123", "w") as f:
    f.write("partial")
  second = prepare.prepare_h36m(out, "sh", **kwargs)
  assert second == first
  for p in shards[1:]:
    assert os.stat(p).st_mtime_ns == mtimes[p]
  assert os.stat(shards[0]).st_mtime_ns != mtimes[shards[0]]
  with pytest.raises(ValueError, match=re.escape(
      f"{out} was prepared with other settings ({out}/parameters.json): "
      "subsample: previous 1, now 2; use a new --out_dir or the same flags")):
    prepare.prepare_h36m(out, "sh", subsample=2, **kwargs)


def test_bad_inputs_become_manifest_entries(synthetic_h36m, tmp_path):
  h36m_dir = str(tmp_path / "h36m")
  shutil.copytree(synthetic_h36m, h36m_dir)
  layout = h36m.MartinezLayout(h36m_dir)
  seq = layout.sequences("S9")
  # 1) truncated 3D file, 2) NaN joints in 3D, 3) wrong joint count in 2D,
  # 4) NaN in 2D.
  truncated = layout.positions_3d_path("S9", seq[0])
  with open(truncated, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:100])
  nan_path = layout.positions_3d_path("S9", seq[1])
  with h5py.File(nan_path, "a") as h5:
    values = h5["3D_positions"][()]
    values[5, [2, 7]] = np.nan  # joint 1 (y) in frames 2 and 7
    h5["3D_positions"][...] = values
  wrong = layout.detection_path("S9", seq[2], h36m.CAMERAS[3], "sh")
  with h5py.File(wrong, "w") as h5:
    h5["poses"] = np.zeros((12, 17, 2))
  nan_2d = layout.detection_path("S9", seq[3], h36m.CAMERAS[1], "sh")
  with h5py.File(nan_2d, "a") as h5:
    values = h5["poses"][()]
    values[4, 3, 0] = np.nan
    h5["poses"][...] = values
  manifest = prepare.prepare_h36m(str(tmp_path / "rec"), "sh",
                                  h36m_dir=h36m_dir, subjects=("S9",),
                                  progress=False)
  skipped = {(s["sequence"], s["camera"], s["scope"]): s
             for s in manifest["skipped"]}
  entry = skipped[(seq[0], None, "sequence")]
  assert entry["file"] == truncated and "truncated" in entry["reason"]
  entry = skipped[(seq[1], None, "frames")]
  assert entry["file"] == nan_path and entry["frames"] == 2
  assert "non-finite 3D joints in 2 of 12 frames" in entry["reason"]
  entry = skipped[(seq[2], h36m.CAMERAS[3], "camera")]
  assert entry["file"] == wrong and "(12, 17, 2)" in entry["reason"]
  entry = skipped[(seq[3], h36m.CAMERAS[1], "frames")]
  assert entry["file"] == nan_2d and entry["frames"] == 1
  # 6 sequences x 4 cameras x 12 frames, minus what was skipped.
  expected = 6 * 4 * 12 - 4 * 12 - 4 * 2 - 12 - 1
  assert manifest["splits"]["test"]["num_examples"] == expected


def test_missing_cameras_h5_is_fatal_and_named(synthetic_h36m, tmp_path):
  h36m_dir = str(tmp_path / "h36m")
  shutil.copytree(synthetic_h36m, h36m_dir)
  os.remove(os.path.join(h36m_dir, "cameras.h5"))
  with pytest.raises(h36m.H36MDataError, match="cameras.h5: file not found"):
    prepare.prepare_h36m(str(tmp_path / "rec"), "gt", h36m_dir=h36m_dir,
                         progress=False)


def test_bad_settings(synthetic_h36m, tmp_path):
  with pytest.raises(ValueError, match="subsample must be >= 1"):
    prepare.prepare_h36m(str(tmp_path), "gt", h36m_dir=synthetic_h36m,
                         subsample=0)
  with pytest.raises(ValueError, match="give --npz_2d"):
    prepare.prepare_h36m(str(tmp_path), "cpn", h36m_dir=synthetic_h36m)
  with pytest.raises(ValueError, match="unknown subjects"):
    prepare.prepare_h36m(str(tmp_path), "gt", h36m_dir=synthetic_h36m,
                         subjects=("S2",))


def test_npz_source_round_trip(synthetic_h36m, tmp_path):
  npz_3d, npz_2d, first = write_videopose3d_npz(synthetic_h36m,
                                                str(tmp_path / "vp3d"))
  out = str(tmp_path / "rec")
  manifest = prepare.prepare_h36m(
      out, "test17", npz_3d=npz_3d, npz_2d=npz_2d,
      cameras=os.path.join(synthetic_h36m, "cameras.h5"),
      subjects=("S1", "S9"), progress=False)
  assert manifest["splits"]["test"]["num_examples"] == 6 * 12 * 4 - 12
  [skip] = manifest["skipped"]
  assert (skip["sequence"], skip["camera"]) == (first, h36m.CAMERAS[0])
  assert skip["file"] == npz_2d
  # The npz 2D is the exact projection: it must equal the gt source.
  gt_out = str(tmp_path / "gt")
  prepare.prepare_h36m(gt_out, "gt", h36m_dir=synthetic_h36m,
                       subjects=("S9",), progress=False)
  name = prepare.shard_name("S9", first) + ".tfrecord"
  a = records.read_records(os.path.join(out, "test", name))
  b = records.read_records(os.path.join(gt_out, "test", name))
  ib = by_camera_frame(b)
  order = [ib[key] for key in zip(a["camera"], a["frame"].tolist())]
  np.testing.assert_allclose(a["pose_2d"], b["pose_2d"][order], atol=1e-3)
  np.testing.assert_allclose(a["pose_3d"], b["pose_3d"][order], atol=1e-6)


def test_statistics_file_matches_records(records_gt):
  stored = pipeline.load_statistics(records_gt, "train")
  computed = pipeline.compute_statistics(records_gt, "train")
  assert stored["count"] == computed["count"] == 6 * 12 * 4
  for key, value in stored.items():
    np.testing.assert_allclose(value, computed[key], rtol=1e-4, atol=1e-6,
                               err_msg=key)
  assert stored["pose_3d_mean"].shape == (16, 3)
  assert stored["pose_2d_std"].shape == (16, 2)


@pytest.mark.slow
def test_prepare_binary(synthetic_h36m, repo_dir, tmp_path):
  out = str(tmp_path / "rec")
  result = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "prepare_h36m.py"),
       f"--h36m_dir={synthetic_h36m}", "--source=sh_ft", f"--out_dir={out}",
       "--subjects=S11"], capture_output=True, text=True, check=True,
      env=dict(os.environ, PYTHONPATH=repo_dir))
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary == {"examples": {"train": 0, "test": 6 * 12 * 4 - 12},
                     "skipped": 1}


def test_resume_rewrites_damaged_shards_and_removes_stale_temporaries(
    synthetic_h36m, tmp_path, damage_shard):
  out = str(tmp_path / "rec")
  kwargs = dict(h36m_dir=synthetic_h36m, subjects=("S9",), progress=False)
  first = prepare.prepare_h36m(out, "gt", **kwargs)
  shards = sorted(glob.glob(os.path.join(out, "test", "*.tfrecord")))
  before = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in shards}
  damage_shard(shards[0], "flip")                  # same size, other sha256
  damage_shard(shards[1], "boundary", records=20)  # 20 of 48 records kept
  # Temporaries of a killed run (a pid that no longer runs).
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  stale = [f"{shards[2]}.tmp-{dead.pid}",
           os.path.join(out, f"manifest.json.tmp-{dead.pid}")]
  for path in stale:
    with open(path, "w") as f:
      f.write("partial")
  second = prepare.prepare_h36m(out, "gt", **kwargs)
  assert second == first
  for path, (mtime, data) in before.items():
    assert open(path, "rb").read() == data, path   # rewritten identically
    if path not in shards[:2]:
      assert os.stat(path).st_mtime_ns == mtime     # verified, kept
  for path in shards[:2]:
    assert os.stat(path).st_mtime_ns != before[path][0]
  assert not [p for p in stale if os.path.exists(p)]
  # The rewritten records read back whole.
  assert pipeline.num_examples(out, "test") == sum(
      len(records.read_records(p)["frame"]) for p in shards) == 6 * 12 * 4


def test_millimetre_npz_is_refused_with_the_unit_and_converted_with_the_flag(
    synthetic_h36m, tmp_path):
  cameras = os.path.join(synthetic_h36m, "cameras.h5")
  npz_m, _, _ = write_videopose3d_npz(synthetic_h36m, str(tmp_path / "m"),
                                      subjects=("S9",))
  npz_mm, _, _ = write_videopose3d_npz(synthetic_h36m, str(tmp_path / "mm"),
                                       subjects=("S9",), unit="mm")
  kwargs = dict(source="gt", cameras=cameras, subjects=("S9",),
                progress=False)
  with pytest.raises(h36m.H36MDataError,
                     match=re.escape(npz_mm) + r": 3D poses of S9 .* are not "
                     r"human-sized with positions in m: median bone length "
                     r"[\d.]+e\+05 mm, expected 80 to 600 mm; the file looks "
                     r"like millimetres \(VideoPose3D files hold metres\): "
                     r"pass --positions_unit=mm to convert"):
    prepare.prepare_h36m(str(tmp_path / "refused"), npz_3d=npz_mm, **kwargs)
  assert not glob.glob(str(tmp_path / "refused" / "*" / "*.tfrecord"))
  with pytest.raises(h36m.H36MDataError,
                     match=re.escape(npz_m) + r": .* not human-sized with "
                     r"positions in mm: .* looks like metres.*drop "
                     r"--positions_unit=mm"):
    prepare.prepare_h36m(str(tmp_path / "refused_m"), npz_3d=npz_m,
                         positions_unit="mm", **kwargs)
  converted = str(tmp_path / "converted")
  prepare.prepare_h36m(converted, npz_3d=npz_mm, positions_unit="mm", **kwargs)
  metres = str(tmp_path / "metres")
  prepare.prepare_h36m(metres, npz_3d=npz_m, **kwargs)
  a = records.read_records(sorted(glob.glob(f"{converted}/test/*.tfrecord")))
  b = records.read_records(sorted(glob.glob(f"{metres}/test/*.tfrecord")))
  assert len(a["frame"]) == len(b["frame"]) == 6 * 12 * 4
  np.testing.assert_allclose(a["pose_3d"], b["pose_3d"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="--positions_unit is the unit of "
                     "--npz_3d"):
    prepare.prepare_h36m(str(tmp_path / "x"), "gt", h36m_dir=synthetic_h36m,
                         positions_unit="mm")


def test_absurd_3d_values_are_refused_or_dropped(synthetic_h36m, tmp_path):
  h36m_dir = str(tmp_path / "h36m")
  shutil.copytree(synthetic_h36m, h36m_dir)
  layout = h36m.MartinezLayout(h36m_dir)
  sequences = layout.sequences("S9")
  one_frame = layout.positions_3d_path("S9", sequences[1])
  with h5py.File(one_frame, "a") as h5:
    values = h5["3D_positions"][()]    # (96, N) mm
    values[:, 3] = 1e30                  # frame 3
    h5["3D_positions"][...] = values
  manifest = prepare.prepare_h36m(str(tmp_path / "rec"), "gt",
                                  h36m_dir=h36m_dir, subjects=("S9",),
                                  progress=False)
  [entry] = [s for s in manifest["skipped"] if s["file"] == one_frame]
  assert entry["scope"] == "frames" and entry["frames"] == 1
  assert "implausible 3D joints" in entry["reason"] and (
      "first: frame 3" in entry["reason"])
  assert manifest["splits"]["test"]["num_examples"] == 6 * 12 * 4 - 4
  stats = pipeline.load_statistics(str(tmp_path / "rec"), "test")
  assert np.abs(stats["root_3d_mean"]).max() < 10    # metres, not poisoned
  everything = layout.positions_3d_path("S9", sequences[2])
  with h5py.File(everything, "a") as h5:
    h5["3D_positions"][...] = 1e30
  with pytest.raises(h36m.H36MDataError,
                     match=re.escape(everything) + r": 3D poses of S9 .* are "
                     r"not human-sized: median bone length .* Martinez h5 "
                     "files hold millimetres"):
    prepare.prepare_h36m(str(tmp_path / "rec2"), "gt", h36m_dir=h36m_dir,
                         subjects=("S9",), progress=False)


def test_inspect_records_verify_lists_damaged_shards(records_gt, repo_dir,
                                                      tmp_path, damage_shard):
  out = str(tmp_path / "rec")
  shutil.copytree(records_gt, out)
  command = [sys.executable, os.path.join(repo_dir, "bin",
                                          "inspect_records.py"),
             f"--records={out}", "--verify"]
  env = dict(os.environ, PYTHONPATH=repo_dir)
  result = subprocess.run(command, capture_output=True, text=True, env=env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f"18 shards listed in {out}/manifest.json, 0 damaged, missing or "
      "unlisted"]
  flipped = sorted(glob.glob(os.path.join(out, "test", "*.tfrecord")))[0]
  damage_shard(flipped, "flip")
  extra = os.path.join(out, "train", "extra.tfrecord")
  shutil.copy(flipped, extra)
  result = subprocess.run(command, capture_output=True, text=True, env=env)
  assert result.returncode == 1
  assert result.stdout.splitlines() == [
      f"{flipped}: sha256 differs from the recorded one (the file is "
      "corrupt)",
      f"{extra}: not listed in {out}/manifest.json",
      f"18 shards listed in {out}/manifest.json, 2 damaged, missing or "
      "unlisted"]


def _to_previous_layout(out):
  """Rewrites a records directory into the layout of manifest version 1
  (`prepare_config.json` without positions_unit, sidecars with file and
  examples, manifest with version, config and split `examples`)."""
  settings = os.path.join(out, "parameters.json")
  with open(settings) as f:
    config = json.load(f)
  del config["positions_unit"]
  with open(os.path.join(out, prepare.LEGACY_CONFIG_FILE), "w") as f:
    json.dump(config, f)
  os.remove(settings)
  for path in glob.glob(os.path.join(out, "*", "*.json")):
    with open(path) as f:
      sidecar = json.load(f)
    sidecar["file"] = sidecar.pop("shard")
    sidecar["examples"] = sidecar.pop("num_examples")
    with open(path, "w") as f:
      json.dump(sidecar, f)
  manifest = load_manifest(out)
  old = {"version": 1, "config": manifest["parameters"], "splits": {
      split: {"examples": entry["num_examples"], "shards": entry["shards"],
              "shard_checks": entry["shard_checks"]}
      for split, entry in manifest["splits"].items()}}
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(old, f)


def test_records_of_the_previous_version_are_refused_then_resumed(
    synthetic_h36m, records_gt, tmp_path):
  """Readers refuse a version-1 manifest naming the command; the command
  resumes the directory: every shard verified and kept, the manifest
  rewritten in this version's schema."""
  out = str(tmp_path / "rec")
  shutil.copytree(records_gt, out)
  _to_previous_layout(out)
  shards = sorted(glob.glob(os.path.join(out, "*", "*.tfrecord")))
  mtimes = {p: os.stat(p).st_mtime_ns for p in shards}
  manifest = os.path.join(out, "manifest.json")
  for read in (pipeline.num_examples, pipeline.split_shards):
    with pytest.raises(records_check.ShardError, match=re.escape(
        f"{manifest}: written by an older version of ige_tf") + ".*" +
        re.escape("re-run bin/prepare_h36m.py with the same flags: it resumes "
                  "(finished shards are verified and kept)")):
      read(out, "test")
  subjects = load_manifest(records_gt)["parameters"]["subjects"]
  again = prepare.prepare_h36m(out, "gt", h36m_dir=synthetic_h36m,
                               subjects=subjects, progress=False)
  assert again == load_manifest(records_gt)
  assert {p: os.stat(p).st_mtime_ns for p in shards} == mtimes
  assert pipeline.num_examples(out, "test") == 576
  assert os.path.exists(os.path.join(out, "parameters.json"))
