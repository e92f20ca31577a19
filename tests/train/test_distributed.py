"""Multi-worker training with real processes: two `bin/train.py` workers on
127.0.0.1, each with its own TF_CONFIG, as on a cluster.

Checks: a worker killed mid-run stops the chief with a clear error in
bounded time; the restarted workers resume from the chief's checkpoint and
exit 0 with the weights of a single-process run with the same global batch;
only the chief writes the run directory (one set of checkpoints and logs,
no worker leftovers); a tiny pose run trains on two workers.
"""
import glob
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.train import cli
from ige_tf.train import distributed
from ige_tf.train import loop
from ige_tf.train import strategies

TIMEOUT = 240  # seconds per process
# The chief must stop within this time of a worker's death: TensorFlow's
# coordination service declares a task dead after 10 s without heartbeats.
CHIEF_EXIT_SECONDS = 90
DENOISE = ["--gin_file=core/denoise.gin",
           "--gin_param=DenoisingProblem.split_sizes = {'train': 256}",
           "--gin_param=train.batch_size = 32",
           "--gin_param=train.progress = False"]


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _train(repo_dir, model_dir, args, tf_config=None, tmp_dir=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  if tmp_dir is not None:
    env["TMPDIR"] = tmp_dir  # where non-chief workers put their saves
  return subprocess.Popen(
      [sys.executable, os.path.join(repo_dir, "bin", "train.py"),
       f"--model_dir={model_dir}", *args], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _train_here(model_dir, args):
  """The one-process reference run: what `bin/train.py --model_dir=...
  <args>` runs (`cli.parse_gin`, `loop.train`), in this process (outside a
  cluster: the test process has no TF_CONFIG)."""
  assert "TF_CONFIG" not in os.environ
  prefixes = ("--gin_file=", "--gin_param=")
  assert all(a.startswith(prefixes) for a in args), args
  files, params = ([a[len(p):] for a in args if a.startswith(p)]
                   for p in prefixes)
  gin.clear_config()
  try:
    cli.parse_gin(files, params)
    loop.train(cli.make_problem(), model_dir)
  finally:
    gin.clear_config()


def _cluster(repo_dir, model_dir, args, tmp_dir):
  ports = _free_ports(2)
  workers = [f"127.0.0.1:{p}" for p in ports]
  args = [*args, "--gin_param=train.strategy = 'multi_worker'"]
  return [_train(repo_dir, model_dir, args,
                 {"cluster": {"worker": workers},
                  "task": {"type": "worker", "index": i}}, tmp_dir)
          for i in range(2)]


def _wait(procs):
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _weights(model_dir):
  """{name: value} of every variable in the latest checkpoint (weights,
  optimizer slots, step)."""
  path = tf.train.latest_checkpoint(model_dir)
  return {n: tf.train.load_variable(path, n)
          for n, _ in tf.train.list_variables(path)
          if n != "_CHECKPOINTABLE_OBJECT_GRAPH" and "save_counter" not in n}


def _assert_same_weights(a, b):
  assert a.keys() == b.keys() and len(a) > 3
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6,
                               err_msg=name)


def _run_files(model_dir):
  return sorted(os.path.relpath(p, model_dir) for p in
                glob.glob(os.path.join(model_dir, "**", "*"), recursive=True))


def test_chief_and_write_dir_without_a_cluster(tmp_path):
  strategy = strategies.get_strategy("default")
  assert distributed.is_chief(strategy)
  assert distributed.write_dir(str(tmp_path), strategy) == str(tmp_path)
  with pytest.raises(ValueError, match="unknown policy 'rows'"):
    import gin  # pylint: disable=import-outside-toplevel
    gin.bind_parameter("input_sharding.policy", "rows")
    distributed.input_sharding()


def test_file_sharding_needs_a_file_and_equal_steps_per_worker():
  assert distributed.file_sharding([16] * 6, 16, workers=2) == (
      True, "6 record files, 2 workers, 6 steps per epoch each")
  assert distributed.file_sharding([16] * 6, 16, workers=1) == (
      False, "one worker")
  assert distributed.file_sharding([32], 8, workers=2) == (
      False, "1 record file(s) for 2 workers")
  assert distributed.file_sharding([16] * 6, 15, workers=2) == (
      False, "global batch 15 is not divisible by 2 workers")
  # Worker 0 reads files 0 and 2 (32 examples), worker 1 file 1 (10).
  assert distributed.file_sharding([16, 10, 16], 8, workers=2) == (
      False, "by file the workers would take [8, 3] steps per epoch, not 6 "
      "each")
  assert distributed.file_sharding([16, 10, 16], 8, drop_remainder=True,
                                   workers=2)[0] is False


def _two_worker_env(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
       "task": {"type": "worker", "index": 1}}))


def test_the_pipelines_choose_file_or_data_sharding(
    monkeypatch, pose_records, voxel_records):
  # pylint: disable=import-outside-toplevel
  from ige_tf.pose.data import pipeline as pose_pipeline
  from ige_tf.voxel.data import pipeline as voxel_pipeline
  policy = lambda d: d.options().experimental_distribute.auto_shard_policy  # noqa: E731
  auto_shard = tf.data.experimental.AutoShardPolicy
  # Outside a cluster nothing is chosen.
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert policy(pose_pipeline.pose_dataset(
      pose_records, "train", 16, in_memory=False)) == auto_shard.AUTO
  _two_worker_env(monkeypatch)
  assert distributed.num_workers() == 2
  # 6 train shards of 16 examples (one per sequence): 3 per worker.
  streamed = pose_pipeline.pose_dataset(pose_records, "train", 16, seed=0,
                                        in_memory=False)
  assert policy(streamed) == auto_shard.FILE
  # Flip augmentation numbers the batches (a `range` source): by data.
  assert policy(pose_pipeline.pose_dataset(
      pose_records, "train", 16, flip_augment=True,
      in_memory=False)) == auto_shard.DATA
  # The one train shard of the voxel records cannot serve two workers.
  voxel = voxel_pipeline.voxel_dataset(voxel_records, "train", 32, 2)
  assert policy(voxel) == auto_shard.DATA
  # In memory there are no files: distribute_dataset shards by data.
  assert policy(pose_pipeline.pose_dataset(
      pose_records, "train", 16, in_memory=True)) == auto_shard.AUTO
  # Deterministic for resume: the same files give the same choice and the
  # same batches.
  again = pose_pipeline.pose_dataset(pose_records, "train", 16, seed=0,
                                     in_memory=False)
  assert policy(again) == auto_shard.FILE
  np.testing.assert_array_equal(next(iter(again))[0]["pose_2d"],
                                next(iter(streamed))[0]["pose_2d"])


def test_peer_failure_names_the_dead_task_and_the_checkpoint(
    tmp_path, monkeypatch):
  tf_error = tf.errors.UnavailableError(None, None, (
      "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/"
      "replica:0/task:0/device:CPU:0}} Collective ops is aborted by: The "
      "following tasks are unhealthy (stopped sending heartbeats):\n"
      "/job:worker/replica:0/task:1\nThe tasks have crashed."))
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(tf.errors.UnavailableError):  # no cluster: unchanged
    with distributed.peer_failure_explained(str(tmp_path)):
      raise tf_error
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["a:1", "b:2"]},
       "task": {"type": "worker", "index": 0}}))
  with pytest.raises(distributed.PeerFailureError) as raised:
    with distributed.peer_failure_explained(str(tmp_path)):
      raise tf_error
  assert str(raised.value).startswith(
      "multi-worker training stopped on /job:worker/replica:0/task:0: "
      "/job:worker/replica:0/task:1 stopped responding")
  assert f"no checkpoint in {tmp_path} yet" in str(raised.value)
  tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / "ckpt"))
  with pytest.raises(distributed.PeerFailureError,
                     match=f"resume from the chief's last checkpoint "
                     f"{tmp_path}/ckpt-1. TensorFlow's error: Collective ops "
                     "is aborted by: The following tasks are unhealthy"):
    with distributed.peer_failure_explained(str(tmp_path)):
      raise tf_error
  with pytest.raises(ValueError, match="other"):  # other errors pass
    with distributed.peer_failure_explained(str(tmp_path)):
      raise ValueError("other")


@pytest.mark.slow
def test_a_killed_worker_stops_the_chief_and_the_cluster_resumes(
    tmp_path, repo_dir):
  """One cluster run covers what a user relies on: worker 1 is killed
  mid-run; the chief, left alone, exits non-zero with an error naming the
  dead task and the checkpoint to resume from, in bounded time (TF's
  heartbeat timeout, ~10 s), not hanging; both restarted workers resume
  from that checkpoint and exit 0; the final weights and optimizer state
  equal a one-process run with the same global batch; the run directory
  holds one set of checkpoints and logs (the one-process run's files, one
  event file per session) and the restarted worker removed its saves."""
  args = DENOISE + ["--gin_param=train.epochs = 8",
                    "--gin_param=train.checkpoint_every_steps = 8"]
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  procs = _cluster(repo_dir, multi_dir, args, str(worker_tmp))
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not glob.glob(
      os.path.join(multi_dir, "ckpt-16.index")):
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)  # worker 1 dies, the chief lives
  procs[1].wait()
  killed = time.time()
  # While the chief waits for the heartbeat timeout: the reference run.
  _train_here(single_dir, args)
  reference_seconds = time.time() - killed
  try:
    chief_out = procs[0].communicate(
        timeout=max(1.0, CHIEF_EXIT_SECONDS - (time.time() - killed)))[0]
  finally:
    if procs[0].poll() is None:  # hung: fail, but leave no process behind
      procs[0].kill()
      procs[0].wait()
  waited = time.time() - killed
  killed_at = tf.train.latest_checkpoint(multi_dir)
  assert killed_at is not None and int(killed_at.split("-")[-1]) < 64
  assert procs[0].returncode not in (0, None), chief_out[-2000:]
  assert "PeerFailureError: multi-worker training stopped on " \
      "/job:worker/replica:0/task:0: /job:worker/replica:0/task:1 stopped " \
      "responding" in chief_out, chief_out[-2000:]
  assert f"resume from the chief's last checkpoint {killed_at}" in chief_out
  print(f"chief exited within {waited:.1f} s of worker 1's kill (the "
        f"reference run, meanwhile, took {reference_seconds:.1f} s of it)")

  outs = _wait(_cluster(repo_dir, multi_dir, args, str(worker_tmp)))
  assert all(f"Resumed from {killed_at}" in out for out in outs), outs[1][-2000:]
  assert tf.train.latest_checkpoint(multi_dir).endswith("ckpt-64")
  _assert_same_weights(_weights(multi_dir), _weights(single_dir))
  strip = lambda files: [f for f in files if not f.startswith("logs/train/ev")]  # noqa: E731
  assert strip(_run_files(multi_dir)) == strip(_run_files(single_dir))
  assert len(glob.glob(os.path.join(multi_dir, "logs", "train", "events*"))) == 2
  # The SIGKILLed worker could not remove its saves; the restarted one did.
  assert len(glob.glob(str(worker_tmp / "ige_worker_1_*"))) == 1


@pytest.mark.slow
def test_two_workers_train_a_tiny_pose_run_sharded_by_file(
    tmp_path, repo_dir, pose_records, caplog):
  """Streamed from its 6 train shards, the pose run is sharded by file
  (3 shards per worker, logged), and the run directory equals a one-process
  run's."""
  args = ["--gin_file=pose/b128-1.gin", f"--gin_param=RECORDS_DIR = {pose_records!r}",
          "--gin_param=EPOCHS = 1", "--gin_param=BATCH_SIZE = 16",
          "--gin_param=PoseProblem.shuffle_buffer = 64",
          "--gin_param=PoseProblem.in_memory = False",
          "--gin_param=train.progress = False"]
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  procs = _cluster(repo_dir, multi_dir, args, str(worker_tmp))
  # absl's logger holds its own level (WARNING until absl flags are parsed,
  # whatever an earlier test in this process did): set it for the capture.
  with caplog.at_level(logging.INFO, logger="absl"):
    _train_here(single_dir, args)  # while the workers run
  outs = _wait(procs)
  chosen = "input sharded by file: 6 record files, 2 workers, 6 steps per epoch each"
  assert all(chosen in out for out in outs), outs[0][-2000:]
  # Its INFO lines are captured (precise BN's), none on input sharding.
  assert "precise BN: moving statistics of" in caplog.text
  assert "input sharded by" not in caplog.text
  assert (tf.train.latest_checkpoint(multi_dir) ==
          tf.train.latest_checkpoint(single_dir).replace(single_dir, multi_dir))
  assert tf.train.latest_checkpoint(multi_dir).endswith("ckpt-6")
  # Batch normalization is per replica, dropout draws per replica and each
  # worker reads its own shards, so the weights differ from the single
  # process; the run directory does not.
  strip = lambda files: [f for f in files if not f.startswith("logs/train/ev")]  # noqa: E731
  assert strip(_run_files(multi_dir)) == strip(_run_files(single_dir))
  assert not glob.glob(str(worker_tmp / "ige_worker_*"))
