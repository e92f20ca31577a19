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
"""
import os
import shutil
import tempfile

import gin
import tensorflow as tf

SHARD_POLICIES = {"auto": tf.data.experimental.AutoShardPolicy.AUTO,
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


def summary_writer(model_dir, strategy, name):
  """A TensorBoard writer for `model_dir/logs/<name>` on the chief, a no-op
  writer on the other workers."""
  if is_chief(strategy):
    return tf.summary.create_file_writer(os.path.join(model_dir, "logs", name))
  return tf.summary.create_noop_writer()


@gin.configurable
def input_sharding(policy="data"):
  """How a multi-worker run splits the input across workers.

  Args:
    policy: "data" (default: every worker reads all data and keeps its part
      of every global batch, so the batches equal a single-process run's;
      works for any dataset), "file" (each worker reads its own record
      files: less input work, other batches; needs at least as many files
      as workers) or "auto" (TensorFlow's choice: by file for a dataset
      that reads files, else by data). With "file" or "auto", a dataset
      with fewer files than workers fails on its first batch with
      TensorFlow's "Could not apply FILE based sharding" error. See
      `tf.data.experimental.AutoShardPolicy`.
  """
  if policy not in SHARD_POLICIES:
    raise ValueError(f"input_sharding: unknown policy {policy!r}; expected "
                     f"one of {sorted(SHARD_POLICIES)}")
  return SHARD_POLICIES[policy]


def distribute_dataset(strategy, dataset):
  """`strategy.experimental_distribute_dataset` of a globally batched
  dataset, sharded across workers by `input_sharding()`'s policy. Each step
  takes one global batch: every replica gets its part of it."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = input_sharding()
  return strategy.experimental_distribute_dataset(dataset.with_options(options))
