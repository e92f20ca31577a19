"""records_check: damaged shards are errors naming the shard; stale
temporaries of killed runs are removed."""
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from ige_tf.data import records_check


@pytest.fixture
def shards(tmp_path):
  """Two shards of 10 records each, and their checks."""
  paths, checks = [], {}
  folder = tmp_path / "train"
  folder.mkdir()
  for name in ("a", "b"):
    path = str(folder / f"{name}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      for i in range(10):
        writer.write(f"{name}{i}".encode() * 20)
    paths.append(path)
    checks[f"train/{name}.tfrecord"] = records_check.shard_check(path, 10)
  return str(folder), paths, checks


def read_all(dataset, in_function):
  if not in_function:
    return sum(1 for _ in dataset)

  @tf.function
  def count():
    total = tf.constant(0)
    for _ in dataset:
      total += 1
    return total
  return int(count())


# Eagerly shards read one after another; in a tf.function interleaved.
@pytest.mark.parametrize("in_function,cycle_length", [(False, 1), (True, 2)],
                         ids=["eager", "tf_function_interleaved"])
@pytest.mark.parametrize("how", ["mid", "header", "flip"])
def test_damaged_shard_read_is_an_error_naming_it(shards, how, in_function,
                                                 cycle_length, damage_shard):
  _, paths, _ = shards
  assert read_all(records_check.checked_record_dataset(
      paths, [10, 10], cycle_length=cycle_length), in_function) == 20
  damage_shard(paths[1], how)
  dataset = records_check.checked_record_dataset(paths, [10, 10],
                                                 cycle_length=cycle_length)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape(paths[1]) + r": shard damaged: \d of the "
                     "10 records listed in the manifest read back"):
    read_all(dataset, in_function)
  # Eagerly, TF's own detail (with the offset) is kept.
  # (TF ends a file cut inside a length header silently: the count shows.)
  detail = {"mid": r"corrupt shard \(truncated record at \d+, after 5 good "
                   r"records\)",
            "header": r"holds 5 records, the manifest records 10",
            "flip": r"corrupt shard \(corrupted record at \d+, after 5 good "
                    r"records\)"}[how]
  with pytest.raises(records_check.ShardError,
                     match=re.escape(paths[1]) + ": " + detail):
    list(records_check.read_checked(paths[1], 10))


def test_a_split_without_shard_checks_names_the_manifest_and_the_command(
    shards, tmp_path):
  """Records written before shard checks existed are refused (both
  pipelines read their split entries through `check_split`)."""
  folder, paths, checks = shards
  manifest = str(tmp_path / "manifest.json")
  files, counts = records_check.check_split(
      folder, {"shard_checks": checks}, manifest, examples=20)
  assert files == paths and counts == [10, 10]
  with pytest.raises(records_check.ShardError,
                     match=re.escape(manifest) + ": written by an older "
                     "version without shard checks; re-run "
                     "bin/prepare_h36m.py with the same flags"):
    records_check.check_split(folder, {"examples": 20}, manifest,
                              prepare_command="bin/prepare_h36m.py")


def test_open_time_check_names_missing_truncated_and_unlisted_shards(
    shards, tmp_path, damage_shard):
  folder, paths, checks = shards
  manifest = str(tmp_path / "manifest.json")
  files, counts = records_check.check_shards(folder, checks, manifest,
                                             examples=20)
  assert files == paths and counts == [10, 10]
  with pytest.raises(records_check.ShardError,
                     match=re.escape(manifest) + ": the shards of .* hold 20 "
                     "examples but the split records 21"):
    records_check.check_shards(folder, checks, manifest, examples=21)
  damage_shard(paths[0], "boundary", records=4)
  with pytest.raises(records_check.ShardError,
                     match=re.escape(paths[0]) + r": \d+ bytes but .*manifest"
                     r".json records \d+ bytes \(10 examples\): the shard is "
                     "truncated"):
    records_check.check_shards(folder, checks, manifest)
  os.remove(paths[0])
  with pytest.raises(records_check.ShardError,
                     match=re.escape(paths[0]) + ": shard listed in .* is "
                     "missing"):
    records_check.check_shards(folder, checks, manifest)
  extra = os.path.join(folder, "c.tfrecord")
  open(extra, "wb").close()
  with pytest.raises(records_check.ShardError,
                     match=re.escape(extra) + ": shard not listed in"):
    records_check.check_shards(folder, {"train/b.tfrecord":
                                        checks["train/b.tfrecord"]}, manifest)


def test_verify_shard_on_resume(shards, damage_shard):
  _, paths, checks = shards
  check = checks["train/a.tfrecord"]
  assert records_check.verify_shard(paths[0], check) == (check, None)
  # A shard of an older version (no check) is read back and adopted.
  assert records_check.verify_shard(paths[0], None, 10) == (check, None)
  assert records_check.verify_shard(paths[0], None, 11)[1] == (
      "holds 10 records, the manifest records 11; " +
      records_check.REWRITE_HINT)
  damage_shard(paths[0], "flip")
  assert records_check.verify_shard(paths[0], check) == (
      None, "sha256 differs from the recorded one (the file is corrupt)")
  damage_shard(paths[1], "boundary", records=3)
  assert records_check.verify_shard(paths[1], checks["train/b.tfrecord"])[
      1] == "168 bytes but 560 bytes recorded (truncated or changed)"


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  alive = subprocess.Popen([sys.executable, "-c", "import time; "
                            "time.sleep(60)"])
  try:
    names = ["a.tfrecord", "a.json", "b.tfrecord"]
    for name in names:
      (tmp_path / f"{name}.tmp-{dead.pid}").write_text("partial")
    (tmp_path / f"a.tfrecord.tmp-{alive.pid}").write_text("in use")
    (tmp_path / "a.tfrecord").write_text("finished")
    removed = records_check.remove_stale_temporaries(
        str(tmp_path), names={"a.tfrecord", "a.json"})
    assert removed == sorted(str(tmp_path / f"{n}.tmp-{dead.pid}")
                             for n in names[:2])
    assert sorted(os.listdir(tmp_path)) == sorted([
        "a.tfrecord", f"a.tfrecord.tmp-{alive.pid}",
        f"b.tfrecord.tmp-{dead.pid}"])
  finally:
    alive.kill()
    alive.wait()


def test_damaged_shard_in_distributed_iteration_names_it(shards,
                                                         damage_shard):
  _, paths, _ = shards
  damage_shard(paths[0], "flip")
  strategy = tf.distribute.MirroredStrategy(devices=["/cpu:0"])
  dataset = strategy.experimental_distribute_dataset(
      records_check.checked_record_dataset(paths, [10, 10]).batch(4))

  @tf.function
  def count(batch):
    return strategy.run(lambda b: tf.shape(b)[0], args=(batch,))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape(paths[0]) + ": shard damaged"):
    for batch in dataset:
      count(batch)
