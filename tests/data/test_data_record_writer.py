"""record_writer: the one settings guard, per-shard resume and manifest
schema of every records directory (pose and voxel preparation use it; their
own tests run it end to end)."""
import json
import os
import re
import subprocess
import sys

import pytest

from ige_tf.data import record_writer
from ige_tf.data import records_check

SETTINGS = {"source": "gt", "resolutions": [8, 16], "seed": 0}


def _records(name, count):
  return [f"{name}-{i}".encode() * 7 for i in range(count)]


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def test_settings_guard_names_every_differing_setting(tmp_path):
  out = str(tmp_path / "rec")
  record_writer.RecordWriter(out, dict(SETTINGS, resolutions=(8, 16)))
  assert _read_json(os.path.join(out, "parameters.json")) == SETTINGS
  record_writer.RecordWriter(out, SETTINGS)   # the same settings: resumes
  with pytest.raises(record_writer.SettingsError, match=re.escape(
      f"{out} was prepared with other settings ({out}/parameters.json): "
      "resolutions: previous [8, 16], now [8]; source: previous 'gt', now "
      "None; workers: previous None, now 2; use a new --out_dir or the same "
      "flags")):
    record_writer.RecordWriter(out, {"resolutions": [8], "seed": 0,
                                     "workers": 2})
  with open(os.path.join(out, "parameters.json"), "w") as f:
    f.write('{"source": ')
  with pytest.raises(record_writer.SettingsError,
                     match=re.escape(f"{out}/parameters.json: unreadable "
                                     "settings file")):
    record_writer.RecordWriter(out, SETTINGS)


def test_settings_of_the_previous_version_are_read_and_migrated(tmp_path):
  """The pose settings file of manifest version 1, which lacked a setting
  added since (it has a default)."""
  out = tmp_path / "rec"
  out.mkdir()
  (out / "prepare_config.json").write_text(json.dumps({"source": "gt"}))
  kwargs = dict(legacy_settings_file="prepare_config.json",
                settings_defaults={"unit": "m"})
  with pytest.raises(record_writer.SettingsError,
                     match=r"prepare_config.json\): unit: previous 'm', now "
                     "'mm'"):
    record_writer.RecordWriter(out, {"source": "gt", "unit": "mm"}, **kwargs)
  assert not (out / "parameters.json").exists()
  record_writer.RecordWriter(out, {"source": "gt", "unit": "m"}, **kwargs)
  assert _read_json(out / "parameters.json") == {"source": "gt", "unit": "m"}


def test_manifest_lists_finished_shards_with_their_checks(tmp_path):
  writer = record_writer.RecordWriter(tmp_path / "rec", SETTINGS)
  shards = ["train/a.tfrecord", "train/b.tfrecord", "test/c.tfrecord",
            "test/d.tfrecord"]
  for shard, count in zip(shards[:3], (5, 0, 3)):
    sidecar = writer.write_shard(shard, _records(shard, count),
                                 skipped=[f"{shard} skip"], models=count)
    assert sidecar == {"shard": shard, "split": shard.split("/")[0],
                       "num_examples": count,
                       "check": records_check.shard_check(writer.path(shard),
                                                          count),
                       "skipped": [f"{shard} skip"], "models": count}
    assert _read_json(writer.path(shard[:-len(".tfrecord")] + ".json")) == (
        sidecar)
  manifest, sidecars = writer.manifest(shards, splits=("train", "val", "test"),
                                       skipped=["before"])
  writer.write_manifest(manifest)
  # d.tfrecord was planned (e.g. another task's) but is not finished.
  assert manifest["complete"] is False
  assert [s["shard"] for s in sidecars] == shards[:3]
  assert manifest["manifest_version"] == record_writer.MANIFEST_VERSION
  assert manifest["parameters"] == SETTINGS
  assert manifest["skipped"] == ["before", "train/a.tfrecord skip",
                                 "train/b.tfrecord skip", "test/c.tfrecord skip"]
  splits = manifest["splits"]
  assert {k: (v["num_examples"], v["num_shards"], v["shards"])
          for k, v in splits.items()} == {
              "train": (5, 2, shards[:2]), "val": (0, 0, []),
              "test": (3, 2, shards[2:3])}
  # What the readers do with it: every listed shard checked, counts summed.
  path, read = record_writer.read_manifest(writer.out_dir, "bin/x.py")
  assert read == manifest and path == writer.path("manifest.json")
  files, counts = records_check.check_split(
      writer.path("train"), read["splits"]["train"], path,
      examples=read["splits"]["train"]["num_examples"])
  assert files == [writer.path(s) for s in shards[:2]] and counts == [5, 0]
  assert [r for r in records_check.read_checked(files[0], 5)] == _records(
      shards[0], 5)
  # The empty shard reads as such, also in the checked tf.data reader.
  assert [r.numpy() for r in records_check.checked_record_dataset(
      files, counts)] == _records(shards[0], 5)
  with pytest.raises(ValueError, match=r"sidecar fields \['num_examples'\] "
                     "are the writer's own"):
    writer.write_shard("train/e.tfrecord", [], num_examples=3)


def test_resume_keeps_intact_shards_and_names_the_damaged_ones(
    tmp_path, damage_shard):
  writer = record_writer.RecordWriter(tmp_path / "rec", SETTINGS)
  names = ["train/a.tfrecord", "train/b.tfrecord", "train/c.tfrecord",
           "train/d.tfrecord"]
  for name in names:
    writer.write_shard(name, _records(name, 6), note=name)
  intact = writer.read_sidecar(names[0])
  damage_shard(writer.path(names[1]), "flip")
  damage_shard(writer.path(names[2]), "boundary", records=2)
  with open(writer.path("train/d.json"), "w") as f:
    f.write("{")   # a sidecar cut short
  messages = []
  assert writer.finished(names[0], log=messages.append) == intact
  for name in names[1:]:
    assert writer.finished(name, log=messages.append) is None
  assert writer.finished("train/never.tfrecord", log=messages.append) is None
  path = writer.path
  framed = 8 + 4 + len(_records(names[2], 1)[0]) + 4   # TFRecord framing
  assert messages[:2] == [
      f"{path(names[1])}: sha256 differs from the recorded one (the file is "
      "corrupt); rewriting the shard",
      f"{path(names[2])}: {2 * framed} bytes but {6 * framed} bytes recorded "
      "(truncated or changed); rewriting the shard"]
  assert re.fullmatch(re.escape(path("train/d.json")) + r": unreadable shard "
                      r"sidecar \(.*\); rewriting the shard", messages[2])
  assert len(messages) == 3
  os.remove(path(names[0]))
  assert writer.finished(names[0], log=messages.append) is None
  assert messages[3] == (f"{path(names[0])}: shard file missing; rewriting "
                         "the shard")


def test_sidecars_of_the_previous_pose_version_are_verified_and_upgraded(
    tmp_path):
  writer = record_writer.RecordWriter(tmp_path / "rec", SETTINGS)
  new = writer.write_shard("test/S9-Walking.tfrecord",
                           _records("w", 4), subject="S9")
  old = {"file": new["shard"], "examples": 4, "split": "test",
         "subject": "S9", "check": None}   # v1 keys, before shard checks
  with open(writer.path("test/S9-Walking.json"), "w") as f:
    json.dump(old, f)
  assert writer.finished(new["shard"]) == new
  assert _read_json(writer.path("test/S9-Walking.json")) == new
  # A v1 sequence without examples had no shard file: rewritten as an
  # empty shard.
  with open(writer.path("test/S9-Sitting.json"), "w") as f:
    json.dump(dict(old, file=None, examples=0), f)
  messages = []
  assert writer.finished("test/S9-Sitting.tfrecord",
                         log=messages.append) is None
  assert messages == [f"{writer.path('test/S9-Sitting.json')}: sidecar of an "
                      "older version without a shard; rewriting the shard"]


def test_stale_temporaries_of_the_own_shards_or_of_all(tmp_path):
  writer = record_writer.RecordWriter(tmp_path / "rec", SETTINGS)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  stale = {name: writer.path(f"{name}.tmp-{dead.pid}") for name in (
      "train/a.tfrecord", "train/a.json", "train/b.tfrecord", "manifest.json")}
  os.makedirs(writer.path("train"))
  for path in stale.values():
    with open(path, "w") as f:
      f.write("partial")
  # Shared with other tasks: only this task's shard and its sidecar.
  assert writer.remove_stale_temporaries(["train/a.tfrecord"], shared=True) == (
      sorted([stale["train/a.tfrecord"], stale["train/a.json"]]))
  assert writer.remove_stale_temporaries(["train/a.tfrecord"]) == sorted(
      [stale["train/b.tfrecord"], stale["manifest.json"]])
  assert sorted(os.listdir(writer.out_dir)) == ["parameters.json", "train"]
  assert os.listdir(writer.path("train")) == []


def test_manifests_of_other_versions_name_the_file_and_the_command(tmp_path):
  out = tmp_path / "rec"
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"{out}/manifest.json: no manifest; is {out} a records directory "
      "written by bin/prepare_h36m.py?")):
    record_writer.read_manifest(str(out), "bin/prepare_h36m.py")
  out.mkdir()
  path = out / "manifest.json"
  # Version 1 (pose): "version", "config", split counts in "examples".
  path.write_text(json.dumps({"version": 1, "config": {}, "splits": {
      "test": {"examples": 4, "shards": [], "shard_checks": {}}}}))
  with pytest.raises(record_writer.ManifestError, match=re.escape(
      f"{path}: written by an older version of ige_tf (no manifest_version "
      "2; split counts were 'examples' in pose manifests); re-run "
      "bin/prepare_h36m.py with the same flags: it resumes (finished shards "
      "are verified and kept) and rewrites the manifest")):
    record_writer.read_manifest(str(out), "bin/prepare_h36m.py")
  path.write_text(json.dumps({"manifest_version": 3}))
  with pytest.raises(record_writer.ManifestError,
                     match="manifest_version 3 is newer than this version of "
                     r"ige_tf reads \(2\); update ige_tf"):
    record_writer.read_manifest(str(out), "bin/prepare_h36m.py")
  path.write_text('{"manifest_version": 2, "spl')
  with pytest.raises(record_writer.ManifestError,
                     match=re.escape(f"{path}: unreadable manifest (")):
    record_writer.read_manifest(str(out), "bin/prepare_h36m.py")
  assert issubclass(record_writer.ManifestError, records_check.ShardError)
