"""Multi-worker training with real processes: two `bin/train.py` workers on
127.0.0.1, each with its own TF_CONFIG, as on a cluster.

Checks: both exit 0; only the chief writes the run directory (one set of
checkpoints and logs, no worker leftovers); the weights equal a
single-process run with the same global batch; a cluster killed mid-run
and restarted resumes from the chief's checkpoint to the same weights.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from ige_tf.train import distributed
from ige_tf.train import strategies

TIMEOUT = 240  # seconds per process
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


@pytest.mark.slow
def test_two_workers_equal_one_process_and_only_the_chief_writes(
    tmp_path, repo_dir):
  args = DENOISE + ["--gin_param=train.epochs = 2"]
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  single = _train(repo_dir, single_dir, args)
  _wait([single])
  _wait(_cluster(repo_dir, multi_dir, args, str(worker_tmp)))
  assert tf.train.latest_checkpoint(multi_dir).endswith("ckpt-16")
  _assert_same_weights(_weights(multi_dir), _weights(single_dir))
  files = _run_files(multi_dir)
  # One set: the files of the single-process run, nothing per worker.
  assert [f for f in files if not f.startswith("logs/train/events")] == [
      f for f in _run_files(single_dir)
      if not f.startswith("logs/train/events")]
  assert len(glob.glob(os.path.join(multi_dir, "logs", "train", "events*"))) == 1
  assert os.listdir(worker_tmp) == []  # worker 1's saves were removed


@pytest.mark.slow
def test_killed_cluster_resumes_from_the_chiefs_checkpoint(tmp_path, repo_dir):
  args = DENOISE + ["--gin_param=train.epochs = 20",
                    "--gin_param=train.checkpoint_every_steps = 8"]
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  single = _train(repo_dir, single_dir, args)
  procs = _cluster(repo_dir, multi_dir, args, str(worker_tmp))
  deadline = time.time() + TIMEOUT
  while time.time() < deadline and not glob.glob(
      os.path.join(multi_dir, "ckpt-16.index")):
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGKILL)  # a worker dies...
  procs[1].wait()
  procs[0].send_signal(signal.SIGKILL)  # ...the job restarts the cluster
  procs[0].wait()
  killed_at = tf.train.latest_checkpoint(multi_dir)
  assert killed_at is not None and int(killed_at.split("-")[-1]) < 160
  outs = _wait(_cluster(repo_dir, multi_dir, args, str(worker_tmp)))
  assert all(f"Resumed from {killed_at}" in out for out in outs), outs[1][-2000:]
  _wait([single])
  assert tf.train.latest_checkpoint(multi_dir).endswith("ckpt-160")
  _assert_same_weights(_weights(multi_dir), _weights(single_dir))


@pytest.mark.slow
def test_two_workers_train_a_tiny_pose_run(tmp_path, repo_dir, pose_records):
  args = ["--gin_file=pose/b128-1.gin", f"--gin_param=RECORDS_DIR = {pose_records!r}",
          "--gin_param=EPOCHS = 1", "--gin_param=BATCH_SIZE = 16",
          "--gin_param=PoseProblem.shuffle_buffer = 64",
          "--gin_param=input_sharding.policy = 'data'",
          "--gin_param=train.progress = False"]
  single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  single = _train(repo_dir, single_dir, args)
  _wait(_cluster(repo_dir, multi_dir, args, str(worker_tmp)))
  _wait([single])
  assert (tf.train.latest_checkpoint(multi_dir) ==
          tf.train.latest_checkpoint(single_dir).replace(single_dir, multi_dir))
  # Batch normalization is per replica and dropout draws per replica, so the
  # weights differ from the single process; the run directory does not.
  strip = lambda files: [f for f in files if not f.startswith("logs/train/ev")]  # noqa: E731
  assert strip(_run_files(multi_dir)) == strip(_run_files(single_dir))
  assert os.listdir(worker_tmp) == []
