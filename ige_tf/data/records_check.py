"""Shards checked against their manifest, for both record writers and readers.

The records writer of both tasks (`ige_tf.data.record_writer`) records, for
every finished shard, a *shard check*

  {"examples": int, "bytes": int, "sha256": str}

(`shard_check`) in its sidecar and in `manifest.json`. Then:

* readers call `check_shards` when they open a split: every shard the
  manifest lists must exist with the recorded size, and the split folder must
  hold no other shard (cheap: one `stat` per shard, no hashing). A shard cut
  at a record boundary is caught here;
* records are read through `checked_record_dataset` (tf.data, also inside
  `tf.function` and distributed iteration) or `read_checked` (eager): a shard
  whose records do not all read back - cut mid-record, a flipped bit (TFRecord
  CRC), fewer or more records than recorded - is an error naming the shard
  file, not a bare `DataLossError: truncated record at 22620`;
* `verify_records_dir` (`bin/inspect_records.py --verify`) hashes every
  shard of a records directory against its manifest, on request;
* the writer's resume calls `verify_shard` (size and sha256) on every
  finished shard and rewrites the damaged ones (shards of older versions,
  without a check, are read back once and get one), and
  `remove_stale_temporaries` deletes the `*.tmp-PID` files of killed runs
  (the temporaries of `ige_tf.atomic`).

This module imports TensorFlow only inside the functions that read records,
so data-preparation worker processes stay light.
"""
import hashlib
import json
import os
import re

CHECK_KEYS = ("examples", "bytes", "sha256")
_TMP_PATTERN = re.compile(r"^(?P<name>.+)\.tmp-(?P<pid>\d+)$")
_TF_DETAIL = re.compile(r"(truncated|corrupted) record at \d+")
REWRITE_HINT = "re-run the prepare command with the same flags to rewrite it"


class ShardError(ValueError):
  """A shard that does not match its manifest; the message names the file."""

  def __init__(self, path, problem):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{path}: {problem}")


def file_sha256(path):
  """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def shard_check(path, examples):
  """The check of a just-written shard: `{"examples", "bytes", "sha256"}`."""
  return {"examples": int(examples), "bytes": os.path.getsize(path),
          "sha256": file_sha256(path)}


def verify_shard(path, check, examples=None):
  """Checks a finished shard on resume.

  Args:
    path: shard file.
    check: its recorded shard check; None (a shard of a version before shard
      checks) is accepted only if `examples` is given and every record reads
      back (TFRecord CRCs) and counts `examples`.
    examples: the example count recorded beside the shard (for old shards).

  Returns:
    (check, reason): the shard's check and None if it can be kept, else
    (None, a str reason: missing file, size or sha256 mismatch, damage).
  """
  if not os.path.exists(path):
    return None, "shard file missing"
  if not check or any(k not in check for k in CHECK_KEYS):
    if examples is None:
      return None, "no shard check recorded"
    try:
      for _ in read_checked(path, int(examples)):
        pass
    except ShardError as err:
      return None, err.problem
    return shard_check(path, examples), None
  size = os.path.getsize(path)
  if size != check["bytes"]:
    return None, (f"{size} bytes but {check['bytes']} bytes recorded "
                  "(truncated or changed)")
  if file_sha256(path) != check["sha256"]:
    return None, "sha256 differs from the recorded one (the file is corrupt)"
  return check, None


def check_split(folder, entry, manifest_path, examples=None,
                prepare_command="the prepare command"):
  """`check_shards` for one split entry of a manifest.

  Args:
    folder: the split folder.
    entry: the manifest's entry for the split (holding "shard_checks").
    manifest_path: the manifest, named in errors.
    examples: the split's example count in the manifest, or None.
    prepare_command: the command that writes these records, named in the
      error for a manifest written before shard checks existed.

  Returns:
    (files, counts), as `check_shards`.

  Raises:
    ShardError: the manifest has no shard checks, or as `check_shards`.
  """
  if "shard_checks" not in entry:
    raise ShardError(
        manifest_path, "written by an older version without shard checks; "
        f"re-run {prepare_command} with the same flags (it verifies the "
        "finished shards and records their checks)")
  return check_shards(folder, entry["shard_checks"], manifest_path,
                      examples=examples)


def check_shards(folder, checks, manifest_path, examples=None,
                 suffix=".tfrecord"):
  """Compares the shards of a split on disk with its manifest (cheap).

  Args:
    folder: the split folder; every `*suffix` file in it must be listed.
    checks: dict shard path (absolute or relative to `folder`'s parent) ->
      shard check, as recorded in the manifest.
    manifest_path: the manifest, named in errors.
    examples: the split's example count in the manifest, or None; the
      shards' counts must add up to it.
    suffix: shard file suffix.

  Returns:
    (files, counts): the listed shard paths, sorted, and their example counts.

  Raises:
    ShardError: a listed shard is missing or has another size (e.g. cut at a
      record boundary), an unlisted shard lies in the folder, or the counts
      do not add up to `examples`.
  """
  root = os.path.dirname(os.path.normpath(folder))
  expected = {os.path.normpath(os.path.join(root, name)): check
              for name, check in checks.items()}
  for path, check in sorted(expected.items()):
    if not os.path.exists(path):
      raise ShardError(path, f"shard listed in {manifest_path} is missing; "
                       f"{REWRITE_HINT}")
    size = os.path.getsize(path)
    if size != check["bytes"]:
      raise ShardError(path, f"{size} bytes but {manifest_path} records "
                       f"{check['bytes']} bytes ({check['examples']} "
                       f"examples): the shard is truncated or was changed; "
                       f"{REWRITE_HINT}")
  if os.path.isdir(folder):
    on_disk = (os.path.normpath(os.path.join(folder, f))
               for f in os.listdir(folder) if f.endswith(suffix))
    extra = sorted(f for f in on_disk if f not in expected)
    if extra:
      raise ShardError(extra[0], f"shard not listed in {manifest_path} (it "
                       "belongs to no finished preparation); remove it or "
                       "re-run the prepare command")
  files = sorted(expected)
  counts = [int(expected[f]["examples"]) for f in files]
  if examples is not None and sum(counts) != int(examples):
    raise ShardError(manifest_path, f"the shards of {folder} hold "
                     f"{sum(counts)} examples but the split records "
                     f"{examples}; re-run the prepare command")
  return files, counts


def verify_records_dir(records_dir, manifest_name="manifest.json"):
  """Full check of a records directory: every shard's size and sha256.

  For the pose and voxel layouts alike (`splits.<split>.shard_checks` in the
  manifest). Reads every byte once: use it before an important run, not on
  every read.

  Args:
    records_dir: the `--out_dir` of a prepare command.
    manifest_name: its manifest file.

  Returns:
    (checked, damaged): the number of shards listed, and a sorted list of
    (shard path, reason) for the damaged, missing and unlisted ones.

  Raises:
    FileNotFoundError: no manifest. ShardError: a manifest without shard
    checks.
  """
  manifest_path = os.path.join(records_dir, manifest_name)
  if not os.path.exists(manifest_path):
    raise FileNotFoundError(f"{manifest_path}: no manifest")
  with open(manifest_path) as f:
    manifest = json.load(f)
  checked, damaged = 0, []
  for split, entry in sorted(manifest.get("splits", {}).items()):
    if "shard_checks" not in entry:
      raise ShardError(manifest_path, "written by an older version without "
                       f"shard checks (split {split!r}); re-run the prepare "
                       "command with the same flags")
    listed = set()
    for name, check in sorted(entry["shard_checks"].items()):
      path = os.path.normpath(os.path.join(records_dir, name))
      listed.add(path)
      checked += 1
      _, reason = verify_shard(path, check)
      if reason is not None:
        damaged.append((path, reason))
    folder = os.path.join(records_dir, split)
    if os.path.isdir(folder):
      for f in sorted(os.listdir(folder)):
        path = os.path.normpath(os.path.join(folder, f))
        if f.endswith(".tfrecord") and path not in listed:
          damaged.append((path, f"not listed in {manifest_path}"))
  return checked, sorted(damaged)


def _tf_detail(error):
  match = _TF_DETAIL.search(str(error))
  return match.group(0) if match else str(error).splitlines()[0]


def read_checked(path, expected=None, batch_size=None):
  """Eagerly yields the records of one shard; damage is a `ShardError`.

  Args:
    path: shard file.
    expected: recorded example count, or None (not checked).
    batch_size: None yields numpy bytes records; an int yields string
      tensors `[<= batch_size]`.

  Raises:
    ShardError: a record does not read back (TF's detail and offset, e.g.
      "truncated record at 22620", in the message) or the shard holds another
      number of records than `expected`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.TFRecordDataset(path)
  if batch_size is not None:
    dataset = dataset.batch(batch_size)
  count = 0
  try:
    for item in dataset:
      count += 1 if batch_size is None else int(item.shape[0])
      yield item.numpy() if batch_size is None else item
  except tf.errors.DataLossError as err:
    # (Batched, the good records before the damage are not counted.)
    after = "" if batch_size is not None else f", after {count} good records"
    raise ShardError(path, f"corrupt shard ({_tf_detail(err)}{after}); "
                     f"{REWRITE_HINT}") from None
  if expected is not None and count != expected:
    raise ShardError(path, f"holds {count} records, the manifest records "
                     f"{expected}; {REWRITE_HINT}")


def _checked_file_records(path, expected):
  """tf.data records of one shard; an assertion naming it if it is damaged.

  A damaged shard ends early (`ignore_errors` after a TFRecord read error
  moves on to the next file), so the count check that follows the last
  record catches truncation and CRC errors alike.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = tf.data.TFRecordDataset(path).ignore_errors()
  records = records.map(lambda r: (r, False))
  end = tf.data.Dataset.from_tensors((tf.constant(b""), True))
  expected = tf.cast(expected, tf.int64)

  def check(index, item):
    record, is_end = item
    ok = tf.where(is_end, tf.equal(index, expected), tf.less(index, expected))
    message = tf.strings.join([
        path, ": shard damaged: ", tf.where(
            is_end,
            tf.strings.join([tf.strings.as_string(index), " of the ",
                             tf.strings.as_string(expected), " records listed "
                             "in the manifest read back (truncated, or a "
                             "corrupt record: TFRecord CRC error)"]),
            tf.strings.join(["more records than the ",
                             tf.strings.as_string(expected),
                             " listed in the manifest"])),
        f"; {REWRITE_HINT}"])
    assertion = tf.debugging.Assert(ok, [message], summarize=1)
    with tf.control_dependencies([assertion]):
      return tf.identity(record), is_end

  checked = records.concatenate(end).enumerate().map(check)
  return checked.filter(lambda r, is_end: tf.logical_not(is_end)).map(
      lambda r, is_end: r)


def checked_record_dataset(files, counts, shuffle=False, seed=None,
                           cycle_length=1, deterministic=None):
  """Serialized records of shards, each checked against its recorded count.

  Works eagerly, inside `tf.function` and in distributed iteration. A damaged
  shard raises (when the iteration reaches its end) an
  `InvalidArgumentError` whose message starts with
  "assertion failed: [<shard path>: shard damaged: ...".

  Args:
    files: shard paths (from `check_shards`).
    counts: their recorded example counts.
    shuffle: shuffle the shard order (reshuffled every iteration).
    seed: shuffle seed.
    cycle_length: shards read concurrently (interleaved one record at a
      time); 1 reads them one after another in order.
    deterministic: tf.data determinism of the interleave (None: default).

  Returns:
    `tf.data.Dataset` of string scalars.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(files), tf.string), tf.constant(list(counts),
                                                         tf.int64)))
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
  cycle_length = max(1, min(int(cycle_length), len(files)))
  if cycle_length == 1:
    return dataset.flat_map(_checked_file_records)
  return dataset.interleave(
      _checked_file_records, cycle_length=cycle_length, block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def remove_stale_temporaries(folder, names=None):
  """Deletes `<name>.tmp-<pid>` files of processes no longer running.

  Args:
    folder: folder to clean (not recursive).
    names: if given, only temporaries of these file names (e.g. the shards a
      task owns when several machines share an output folder).

  Returns:
    sorted list of the removed paths.
  """
  removed = []
  if not os.path.isdir(folder):
    return removed
  for entry in sorted(os.listdir(folder)):
    match = _TMP_PATTERN.match(entry)
    if not match or (names is not None and match.group("name") not in names):
      continue
    if _process_alive(int(match.group("pid"))):
      continue
    path = os.path.join(folder, entry)
    try:
      os.remove(path)
    except FileNotFoundError:
      continue
    removed.append(path)
  return removed


def _process_alive(pid):
  if pid == os.getpid():
    return False   # our own leftovers from an earlier call; not in use now
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
