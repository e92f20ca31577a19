"""What multi-worker training needs beyond the strategy: who writes, where.

Under `MultiWorkerMirroredStrategy` every worker runs the same program.
Checkpoint saving is a collective (every worker must call it), but only the
chief's copy may land in `model_dir`: the other workers save to a private
temporary directory (`write_dir`) that `cleanup` removes. Resume reads the
chief's latest checkpoint on every worker (`latest_checkpoint`), so a worker
that died and restarted continues from the same step as the others.
Summaries, the operative config, run records and metrics are the chief's
alone (`is_chief`).

The chief is the task of type "chief" if the cluster has one, else worker 0
(TensorFlow's convention). Without a cluster (the "default" and "mirrored"
strategies) the single process is the chief.

When a worker dies, TensorFlow's coordination service (which
`MultiWorkerMirroredStrategy` starts) misses its heartbeats and aborts the
collective operations of the others with `tf.errors.UnavailableError`
(about 10 s later: TensorFlow's heartbeat timeout); `peer_failure_explained`
turns that into an error that names the dead task and the checkpoint a
restarted cluster resumes from.
"""
import contextlib
import json
import os
import re
import shutil
import tempfile

from absl import logging
import gin
import tensorflow as tf

SHARD_POLICIES = {"auto": None,
                  "file": tf.data.experimental.AutoShardPolicy.FILE,
                  "data": tf.data.experimental.AutoShardPolicy.DATA}


def _task(strategy):
  """(task_type, task_id, cluster_spec) or (None, None, None)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return None, None, None
  spec = resolver.cluster_spec()
  if not spec.jobs:
    return None, None, None
  return resolver.task_type, resolver.task_id, spec


def is_chief(strategy):
  """Whether this process writes the run directory (bool)."""
  task_type, task_id, spec = _task(strategy)
  if task_type is None or task_type == "chief":
    return True
  if task_type == "worker":
    return "chief" not in spec.jobs and task_id == 0
  return False


def worker_name(strategy):
  """"<type>_<id>" of this task (e.g. "worker_1"), "chief" when single."""
  task_type, task_id, _ = _task(strategy)
  return "chief" if task_type is None else f"{task_type}_{task_id}"


def write_dir(model_dir, strategy):
  """Where this process saves checkpoints: `model_dir` on the chief, a new
  temporary directory (outside `model_dir`) on the other workers."""
  if is_chief(strategy):
    return model_dir
  return tempfile.mkdtemp(prefix=f"ige_{worker_name(strategy)}_")


def cleanup(directory, model_dir):
  """Removes a non-chief `write_dir` (never `model_dir` itself)."""
  if os.path.abspath(directory) != os.path.abspath(model_dir):
    shutil.rmtree(directory, ignore_errors=True)


def latest_checkpoint(model_dir):
  """The chief's latest checkpoint prefix in `model_dir`, or None: what
  every worker resumes from."""
  return tf.train.latest_checkpoint(model_dir)


class PeerFailureError(RuntimeError):
  """A worker of the cluster died: the others cannot continue."""


def _own_task():
  """"/job:<type>/replica:0/task:<index>" of this process, from TF_CONFIG,
  or None outside a cluster."""
  try:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
  except json.JSONDecodeError:
    return None
  if "type" not in task:
    return None
  return f"/job:{task['type']}/replica:0/task:{int(task.get('index', 0))}"


@contextlib.contextmanager
def peer_failure_explained(model_dir):
  """Re-raises a dead peer's `tf.errors.UnavailableError` in a cluster
  (TF_CONFIG set) as `PeerFailureError`, whose message names the tasks
  TensorFlow reports down and the checkpoint of `model_dir` every restarted
  worker resumes from. Any other error, and any error outside a cluster,
  passes unchanged.
  """
  try:
    yield
  except tf.errors.UnavailableError as error:
    own = _own_task()
    if own is None:
      raise
    message = error.message or str(error)
    down = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", message))
                  - {own})
    latest = latest_checkpoint(model_dir)
    resume = (f"they resume from the chief's last checkpoint {latest}"
              if latest else f"no checkpoint in {model_dir} yet: they start "
              "over")
    summary = " ".join(re.sub(r"\{\{[^}]*\}\}", "", message).split())
    raise PeerFailureError(
        f"multi-worker training stopped on {own}: "
        f"{', '.join(down) or 'a peer'} stopped responding (TensorFlow "
        "aborted the collective operations: a worker died or lost the "
        "network). Restart every worker of the cluster with the same "
        f"command; {resume}. TensorFlow's error: "
        f"{summary[:400]}") from None


def summary_writer(model_dir, strategy, name):
  """A TensorBoard writer for `model_dir/logs/<name>` on the chief, a no-op
  writer on the other workers."""
  if is_chief(strategy):
    return tf.summary.create_file_writer(os.path.join(model_dir, "logs", name))
  return tf.summary.create_noop_writer()


def num_workers():
  """Tasks that train ("chief" and "worker") in TF_CONFIG's cluster; 1
  without TF_CONFIG. The pipelines read it (`shard_input`) before any
  strategy exists."""
  try:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  except json.JSONDecodeError:
    return 1
  return max(1, sum(len(cluster.get(job, [])) for job in ("chief", "worker")))


def _batches(examples, batch_size, drop_remainder):
  return (examples // batch_size if drop_remainder
          else -(-examples // batch_size))


def file_sharding(counts, batch_size, drop_remainder=False, workers=None):
  """Whether a split of record files can be sharded across workers by file.

  By file, worker w reads files `w, w + W, ...` (tf.data's FILE auto-shard
  of the file list) in batches of `batch_size / W`; every worker must take
  as many steps as a single process does with the global batch, or the
  workers that run out first leave the others waiting in a collective.
  So: at least one file per worker, a global batch divisible by W, and
  equal per-worker batch counts.

  Args:
    counts: examples per record file of the split, in file order.
    batch_size: the global batch.
    drop_remainder: whether the last partial batch is dropped.
    workers: W (default `num_workers()`).

  Returns:
    `(by_file: bool, reason: str)`, the reason naming the numbers.
  """
  workers = num_workers() if workers is None else int(workers)
  counts = [int(c) for c in counts]
  if workers <= 1:
    return False, "one worker"
  if len(counts) < workers:
    return False, f"{len(counts)} record file(s) for {workers} workers"
  if batch_size % workers:
    return False, (f"global batch {batch_size} is not divisible by "
                   f"{workers} workers")
  steps = _batches(sum(counts), batch_size, drop_remainder)
  per_worker = [_batches(sum(counts[w::workers]), batch_size // workers,
                         drop_remainder) for w in range(workers)]
  if any(n != steps for n in per_worker):
    return False, (f"by file the workers would take {per_worker} steps per "
                   f"epoch, not {steps} each")
  return True, (f"{len(counts)} record files, {workers} workers, "
                f"{steps} steps per epoch each")


_logged = set()


def shard_input(dataset, counts, batch_size, drop_remainder=False,
                unshardable=None):
  """`dataset` (batched by `batch_size` from record files with `counts`
  examples) marked to be sharded across workers by file when
  `file_sharding` allows and `unshardable` (a reason, str) is None, else by
  data; the choice is logged once per reason. A function of the files and the number of workers only, so a
  resumed run shards as the interrupted one did. Outside a cluster the
  dataset is returned unchanged.

  The mark is the dataset's `auto_shard_policy` option, which
  `distribute_dataset` follows unless `input_sharding.policy` forces one.
  """
  workers = num_workers()
  if workers <= 1:
    return dataset
  by_file, reason = file_sharding(counts, batch_size, drop_remainder, workers)
  if unshardable is not None:
    by_file, reason = False, unshardable
  message = f"input sharded by {'file' if by_file else 'data'}: {reason}"
  if message not in _logged:
    _logged.add(message)
    logging.info(message)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.FILE if by_file
      else tf.data.experimental.AutoShardPolicy.DATA)
  return dataset.with_options(options)


@gin.configurable
def input_sharding(policy="auto"):
  """How a multi-worker run splits the input across workers.

  Args:
    policy: "auto" (default): what the pipeline chose (`shard_input`: by
      file where the record files allow, by data otherwise; by data for a
      dataset without record files, e.g. in memory); "data": every worker
      reads all data and keeps its part of every global batch, so the
      batches equal a single-process run's; "file": each worker reads its
      own record files (tf.data fails on a dataset it cannot shard by file,
      and workers with fewer batches than the others leave them waiting).

  Returns:
    `tf.data.experimental.AutoShardPolicy` FILE or DATA, or None for "auto".
  """
  if policy not in SHARD_POLICIES:
    raise ValueError(f"input_sharding: unknown policy {policy!r}; expected "
                     f"one of {sorted(SHARD_POLICIES)}")
  return SHARD_POLICIES[policy]


def distribute_dataset(strategy, dataset):
  """`strategy.experimental_distribute_dataset` of a globally batched
  dataset, sharded across workers by `input_sharding()`'s policy (by
  default the pipeline's choice, else by data). Each step takes one global
  batch: every replica gets its part of it."""
  policy = input_sharding()
  if policy is None:
    chosen = dataset.options().experimental_distribute.auto_shard_policy
    policy = (chosen if chosen == tf.data.experimental.AutoShardPolicy.FILE
              else tf.data.experimental.AutoShardPolicy.DATA)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = policy
  return strategy.experimental_distribute_dataset(dataset.with_options(options))
