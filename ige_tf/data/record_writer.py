"""The one writer of TFRecord directories: settings, shards, sidecars, manifest.

`bin/prepare_h36m.py` (`ige_tf.pose.data.prepare`), `bin/prepare_shapenet.py`
(`ige_tf.voxel.data.prepare`) and `bin/import_r2n2.py`
(`ige_tf.voxel.data.r2n2`) all write their records through `RecordWriter`;
they only read their raw layouts and encode their examples. A records
directory (`--out_dir`) holds:

  parameters.json            the settings of the preparation; a rerun with
                             other settings is refused (`SettingsError`,
                             naming every differing setting)
  <split>/<stem>.tfrecord    a shard (serialized `tf.train.Example`s)
  <split>/<stem>.json        its sidecar; its presence marks the shard
                             finished
  manifest.json              written last: what the readers trust

A sidecar (`SIDECAR_KEYS`, plus the task's own keys):

  {"shard": "<split>/<stem>.tfrecord", "split": "<split>",
   "num_examples": int, "check": {"examples", "bytes", "sha256"},
   "skipped": [...], ...}

The manifest (`MANIFEST_VERSION` 2, plus the task's own keys):

  {"manifest_version": 2,
   "complete": bool,               every planned shard is finished
   "parameters": {...},            as in parameters.json
   "splits": {"<split>": {"num_examples": int, "num_shards": int (planned),
                          "shards": [finished shard paths],
                          "shard_checks": {path: check}, ...}},
   "skipped": [...]}               the task's skips, then every sidecar's

Shard paths are relative to the records directory. The shard check is
`ige_tf.data.records_check.shard_check`; the readers compare it with the
files (`records_check.check_split`) after `read_manifest`.

Resume: every file is written atomically (`ige_tf.atomic`), so a killed run
leaves finished shards, their sidecars and stale `*.tmp-PID` temporaries.
A rerun with the same settings removes the temporaries of dead processes
(`remove_stale_temporaries`), keeps every finished shard whose size and
sha256 still match its sidecar (`finished`), and rewrites the others.
Sidecars of the previous version (pose: `file`/`examples`) are read and
upgraded; so is the pose settings file `prepare_config.json`.

TensorFlow is imported only to write shards, so worker processes that
import this module stay light.
"""
import json
import os
import sys

from ige_tf import atomic
from ige_tf.data import records_check

MANIFEST_FILE = "manifest.json"
SETTINGS_FILE = "parameters.json"
MANIFEST_VERSION = 2
SHARD_SUFFIX = ".tfrecord"
SIDECAR_KEYS = ("shard", "split", "num_examples", "check")


class SettingsError(ValueError):
  """A records directory prepared with other settings; names them."""


class ManifestError(records_check.ShardError):
  """A manifest this version cannot read; the message names the file and
  the command that rewrites it."""


def sidecar_path(shard_path):
  """`<split>/<stem>.json` of `<split>/<stem>.tfrecord`."""
  if not shard_path.endswith(SHARD_SUFFIX):
    raise ValueError(f"{shard_path}: a shard name must end in {SHARD_SUFFIX}")
  return shard_path[:-len(SHARD_SUFFIX)] + ".json"


def split_of(shard):
  """The split of a shard path `<split>/<stem>.tfrecord`."""
  split = os.path.dirname(os.path.normpath(shard))
  if not split or os.path.dirname(split):
    raise ValueError(f"{shard}: a shard name is <split>/<stem>{SHARD_SUFFIX}")
  return split


def _json_copy(value):
  """`value` as it reads back from JSON (tuples become lists, ...)."""
  return json.loads(json.dumps(value))


def _stderr(message):
  print(message, file=sys.stderr)


def check_settings(out_dir, parameters, legacy_settings_file=None,
                   defaults=None):
  """Writes `<out_dir>/parameters.json`, or compares it with `parameters`.

  Args:
    out_dir: the records directory (exists).
    parameters: JSON-serializable dict of the settings that determine the
      records (not runtime options such as the number of workers).
    legacy_settings_file: a settings file name an older version wrote,
      read when `parameters.json` is absent (and then migrated).
    defaults: values of settings added since an older version, for stored
      settings that lack them.

  Raises:
    SettingsError: the directory was prepared with other settings (each
      differing setting named with its previous and new value), or its
      settings file is unreadable.
  """
  parameters = _json_copy(parameters)
  path = os.path.join(out_dir, SETTINGS_FILE)
  source = path
  if (not os.path.exists(path) and legacy_settings_file and
      os.path.exists(os.path.join(out_dir, legacy_settings_file))):
    source = os.path.join(out_dir, legacy_settings_file)
  if not os.path.exists(source):
    atomic.write_json(path, parameters)
    return
  try:
    with open(source) as f:
      previous = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise SettingsError(f"{source}: unreadable settings file ({err}); use a "
                        "new --out_dir") from None
  previous = dict(defaults or {}, **previous)
  if previous != parameters:
    differing = "; ".join(
        f"{k}: previous {previous.get(k)!r}, now {parameters.get(k)!r}"
        for k in sorted(set(previous) | set(parameters))
        if previous.get(k) != parameters.get(k))
    raise SettingsError(f"{out_dir} was prepared with other settings "
                        f"({source}): {differing}; use a new --out_dir or the "
                        "same flags")
  if source != path:
    atomic.write_json(path, parameters)


def read_manifest(records_dir, prepare_command):
  """The manifest of a records directory, checked to be of this version.

  Args:
    records_dir: the `--out_dir` of a prepare command.
    prepare_command: the command that writes it (named in errors), e.g.
      "bin/prepare_h36m.py".

  Returns:
    (path, manifest dict).

  Raises:
    FileNotFoundError: no manifest (names the path and the command).
    ManifestError: an unreadable manifest, or one written by another
      version (an older one: re-run the command, which resumes).
  """
  path = os.path.join(records_dir, MANIFEST_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no manifest; is {records_dir} a records "
                            f"directory written by {prepare_command}?")
  rerun = (f"re-run {prepare_command} with the same flags: it resumes "
           "(finished shards are verified and kept) and rewrites the "
           "manifest")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise ManifestError(path, f"unreadable manifest ({err}); {rerun}") from None
  version = manifest.get("manifest_version") if isinstance(manifest,
                                                           dict) else None
  if version is None or version < MANIFEST_VERSION:
    raise ManifestError(path, "written by an older version of ige_tf (no "
                        f"manifest_version {MANIFEST_VERSION}; split counts "
                        f"were 'examples' in pose manifests); {rerun}")
  if version > MANIFEST_VERSION:
    raise ManifestError(path, f"manifest_version {version} is newer than "
                        f"this version of ige_tf reads ({MANIFEST_VERSION}); "
                        "update ige_tf")
  return path, manifest


class RecordWriter:
  """Writes the shards, sidecars and manifest of one records directory.

  Creating it creates `out_dir` and checks (or records) the settings.

  Attributes:
    out_dir: the records directory (str).
    parameters: the settings, as stored in parameters.json.
  """

  def __init__(self, out_dir, parameters, legacy_settings_file=None,
               settings_defaults=None):
    """See `check_settings` for the arguments.

    Raises:
      SettingsError: as `check_settings`.
    """
    self.out_dir = os.fspath(out_dir)
    os.makedirs(self.out_dir, exist_ok=True)
    check_settings(self.out_dir, parameters, legacy_settings_file,
                   settings_defaults)
    self.parameters = _json_copy(parameters)

  def path(self, name):
    """Absolute path of `name`, relative to the records directory."""
    return os.path.join(self.out_dir, name)

  def remove_stale_temporaries(self, shards, shared=False):
    """Removes the `*.tmp-PID` files of processes no longer running.

    Args:
      shards: the shard paths this process writes.
      shared: other processes (`--num_tasks` > 1) write other shards into
        the same directory: only the temporaries of `shards` and their
        sidecars are removed. Otherwise every stale temporary of the
        directory and of the shards' split folders.

    Returns:
      sorted list of the removed paths.
    """
    names = {}
    for shard in shards:
      folder, base = os.path.split(self.path(shard))
      names.setdefault(folder, set()).update(
          {base, os.path.basename(sidecar_path(shard))})
    removed = []
    for folder, allowed in names.items():
      removed += records_check.remove_stale_temporaries(
          folder, allowed if shared else None)
    if not shared:
      removed += records_check.remove_stale_temporaries(self.out_dir)
    return sorted(removed)

  def read_sidecar(self, shard):
    """The sidecar of a finished shard, unverified, or None.

    None when the sidecar or the shard file is missing or the sidecar is
    unreadable. A sidecar of the previous pose version (`file`,
    `examples`) comes back in this version's keys.
    """
    try:
      with open(self.path(sidecar_path(shard))) as f:
        sidecar = json.load(f)
    except (OSError, json.JSONDecodeError):
      return None
    sidecar = _upgraded(sidecar)
    if sidecar is None or not os.path.exists(self.path(shard)):
      return None
    return sidecar

  def finished(self, shard, log=_stderr):
    """The sidecar of `shard` if the shard is finished and intact, else None.

    A shard whose file is missing, has another size or sha256 than its
    sidecar records, or whose sidecar is unreadable is to be rewritten: the
    reason is passed to `log` (`<shard>: <reason>; rewriting the shard`).
    A shard of an older version (no check) is read back once and kept if
    it is whole; its sidecar is then rewritten in this version's keys.

    Args:
      shard: shard path `<split>/<stem>.tfrecord`.
      log: callable taking one message (default: print to stderr).
    """
    side = self.path(sidecar_path(shard))
    if not os.path.exists(side):
      return None
    try:
      with open(side) as f:
        stored = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
      log(f"{side}: unreadable shard sidecar ({err}); rewriting the shard")
      return None
    sidecar = _upgraded(stored)
    if sidecar is None:
      log(f"{side}: sidecar of an older version without a shard; rewriting "
          "the shard")
      return None
    path = self.path(shard)
    check, reason = records_check.verify_shard(path, sidecar.get("check"),
                                               sidecar.get("num_examples"))
    if reason is not None:
      log(f"{path}: {reason}; rewriting the shard")
      return None
    if check != sidecar.get("check") or sidecar != stored:
      sidecar["check"] = check
      atomic.write_json(side, sidecar)
    return sidecar

  def write_shard(self, shard, records, **fields):
    """Writes a shard and then its sidecar, both atomically.

    Args:
      shard: shard path `<split>/<stem>.tfrecord` (its folder is created).
      records: iterable of serialized records (bytes); may be empty (an
        empty shard is written, so that every planned shard has a file).
      **fields: the task's own JSON-serializable sidecar entries (a
        "skipped" list is merged into the manifest's).

    Returns:
      the sidecar dict.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    clash = sorted(set(fields) & set(SIDECAR_KEYS))
    if clash:
      raise ValueError(f"sidecar fields {clash} are the writer's own")
    path = self.path(shard)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic.replacing(path) as tmp:
      count = 0
      with tf.io.TFRecordWriter(tmp) as writer:
        for record in records:
          writer.write(record)
          count += 1
      check = records_check.shard_check(tmp, count)
    sidecar = {"shard": shard, "split": split_of(shard),
               "num_examples": count, "check": check}
    sidecar.update(_json_copy(fields))
    atomic.write_json(self.path(sidecar_path(shard)), sidecar)
    return sidecar

  def manifest(self, shards, splits=(), skipped=()):
    """The manifest of the finished shards among `shards` (not written).

    Args:
      shards: every planned shard path, in manifest order (also those of
        other tasks sharing the directory).
      splits: split names listed even when no shard belongs to them.
      skipped: the task's skip entries found before writing shards; every
        sidecar's "skipped" entries follow them.

    Returns:
      (manifest, sidecars): the manifest dict (schema in the module
      docstring; the task adds its own keys) and the sidecars of the
      finished shards, in `shards` order.
    """
    entries = {split: _empty_split() for split in splits}
    sidecars, skips = [], list(skipped)
    for shard in shards:
      entry = entries.setdefault(split_of(shard), _empty_split())
      entry["num_shards"] += 1
      sidecar = self.read_sidecar(shard)
      if sidecar is None or not sidecar.get("check"):
        continue
      entry["shards"].append(shard)
      entry["shard_checks"][shard] = sidecar["check"]
      entry["num_examples"] += int(sidecar["num_examples"])
      skips.extend(sidecar.get("skipped", []))
      sidecars.append(sidecar)
    manifest = {"manifest_version": MANIFEST_VERSION,
                "complete": len(sidecars) == len(shards),
                "parameters": self.parameters, "splits": entries,
                "skipped": skips}
    return manifest, sidecars

  def write_json(self, name, value):
    """Writes `<out_dir>/<name>` (JSON, sorted keys) atomically."""
    atomic.write_json(self.path(name), value, sort_keys=True)

  def write_manifest(self, manifest):
    """Writes `manifest.json` atomically (last: readers trust it)."""
    atomic.write_json(self.path(MANIFEST_FILE), manifest)


def _empty_split():
  return {"num_examples": 0, "num_shards": 0, "shards": [],
          "shard_checks": {}}


def _upgraded(sidecar):
  """A sidecar in this version's keys; None for an older one that names no
  shard (a pose sequence without examples: rewritten as an empty shard)."""
  if not isinstance(sidecar, dict):
    return None
  if "num_examples" in sidecar and "shard" in sidecar:
    return sidecar
  if "file" in sidecar and "examples" in sidecar:   # pose, manifest v1
    if not sidecar["file"]:
      return None
    sidecar = dict(sidecar)
    sidecar["shard"] = sidecar.pop("file")
    sidecar["num_examples"] = sidecar.pop("examples")
    return sidecar
  return None
