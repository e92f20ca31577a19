"""Runs, checkpoints and configs (docs/reliability.md): a run directory
describes itself, restores are exact or refused, strict macros, exact resume
after SIGKILL. On the denoising example (core/denoise.gin)."""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.examples.denoising import DenoisingProblem
from ige_tf.train import cli
from ige_tf.train import loop
from ige_tf.train import run

SMALL = ["train.epochs = 1", "train.batch_size = 32",
         "DenoisingProblem.split_sizes = {'train': 128, 'test': 64}",
         "DenoisingProblem.num_steps = 2"]
EVAL = ["evaluate.progress = False"]


def _bin(repo_dir, name, *args):
  """Runs bin/<name> to completion: `(returncode, stdout + stderr)`."""
  out = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", name), *args],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory):
  """A 4-step denoising run trained from gin (core/denoise.gin + SMALL)."""
  model_dir = str(tmp_path_factory.mktemp("denoise"))
  gin.clear_config()
  cli.parse_gin(["core/denoise.gin"], SMALL + ["train.progress = False"])
  loop.train(cli.make_problem(), model_dir)
  gin.clear_config()
  return model_dir


def _read_checkpoint(path):
  """Every tensor of a checkpoint but its save counter: name -> array."""
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if not name.startswith(("save_counter", "_CHECKPOINTABLE"))}


def test_run_directory_records_its_config(denoise_run):
  with open(os.path.join(denoise_run, "run.json")) as f:
    record = json.load(f)
  assert record["problem"] == "ige_tf.examples.denoising.DenoisingProblem"
  config = open(os.path.join(denoise_run, "config.gin")).read()
  assert "DenoisingProblem.num_steps = 2" in config
  assert "experiment.problem = @DenoisingProblem()" in config


def test_evaluate_export_model_stats_from_model_dir_alone_match_gin_files(
    denoise_run, repo_dir, tmp_path):
  # With the original gin files (the way it had to be done before).
  cli.parse_gin(["core/denoise.gin"], SMALL + EVAL)
  expected = loop.evaluate(cli.make_problem(), denoise_run)
  expected_stats = loop.model_stats(cli.make_problem())
  gin.clear_config()
  os.remove(os.path.join(denoise_run, "metrics.json"))
  # From --model_dir alone, through the binary.
  code, out = _bin(repo_dir, "evaluate.py", f"--model_dir={denoise_run}",
                   "--gin_param=evaluate.progress = False")
  assert code == 0, out
  with open(os.path.join(denoise_run, "metrics.json")) as f:
    assert json.load(f) == expected
  # Repeating the original gin files is accepted and gives the same numbers.
  with run.open_run(denoise_run, ["core/denoise.gin"], SMALL + EVAL) as loaded:
    assert loop.compute_metrics(loaded.problem, loaded.model, "test",
                                progress=False) == expected
  with run.open_run(denoise_run, restore=False) as loaded:
    assert loop.model_stats(loaded.problem) == expected_stats
    export_dir = loop.export(loaded.problem, denoise_run,
                             export_dir=str(tmp_path / "export"))
  with run.open_run(denoise_run) as loaded:
    model = loaded.model
  noisy = np.random.default_rng(0).normal(size=(3, 32)).astype(np.float32)
  served = tf.saved_model.load(export_dir).signatures["serve"](
      noisy=tf.constant(noisy))
  # Graph (SavedModel) and eager execution round differently in the last bit.
  np.testing.assert_allclose(served["steps"], model({"noisy": noisy})["steps"],
                             rtol=1e-5, atol=1e-6)


def test_open_run_leaves_a_notebook_gin_config_as_it_was(denoise_run):
  """A notebook's own config (parsed, and bound in Python, even to a value
  gin cannot write as text) is intact after `open_run`, also after one that
  raised; nothing of the run's config is left in it."""
  cli.parse_gin(["core/denoise.gin"], ["DenoisingProblem.num_steps = 7"])
  marker = object()
  gin.bind_parameter("evaluate.split", marker)
  before = gin.config_str()
  with run.open_run(denoise_run) as loaded:
    assert loaded.problem.num_steps == 2
    assert gin.query_parameter("DenoisingProblem.num_steps") == 2
    assert len(loaded.model({"noisy": np.zeros((1, 32), np.float32)})[
        "steps"]) == 3
  with pytest.raises(run.ConfigMismatchError):
    with run.open_run(denoise_run, gin_params=[
        "DenoisingProblem.num_steps = 3"], restore=False):
      pass
  assert gin.config_str() == before
  assert gin.query_parameter("DenoisingProblem.num_steps") == 7
  assert gin.query_parameter("evaluate.split") is marker
  with pytest.raises(ValueError):  # the run's SMALL bindings: not added
    gin.query_parameter("DenoisingProblem.split_sizes")


def test_a_config_that_changes_the_model_is_refused(denoise_run):
  """What `bin/evaluate.py --model_dir=... --gin_param=...` runs (its `main`:
  `open_run`, then `loop.evaluate`), in this process: that a library error
  ends a program non-zero with its message is checked on `ige-train`
  (tests/bin/test_bin_programs.py) and the cluster's chief
  (tests/train/test_distributed.py)."""
  metrics = os.path.join(denoise_run, "metrics.json")
  with open(metrics, "w") as f:
    f.write('{"mse": [1.0]}')
  with pytest.raises(run.ConfigMismatchError) as refused:
    with run.open_run(denoise_run, [], [
        "DenoisingProblem.num_steps = 4",
        "DenoisingProblem.output_units = 8"], restore=False) as loaded:
      loop.evaluate(loaded.problem, denoise_run)
  out = str(refused.value)
  assert ("2 binding(s) differ" in out
          and "DenoisingProblem.num_steps: run 2, given 4" in out
          and "DenoisingProblem.output_units: run 64, given 8" in out), out
  with open(metrics) as f:
    assert f.read() == '{"mse": [1.0]}'
  # Evaluation-time settings may differ.
  with run.open_run(denoise_run, gin_params=["evaluate.batch_size = 8",
                                             "train.epochs = 3"],
                    restore=False):
    assert gin.query_parameter("evaluate.batch_size") == 8


def test_a_partial_checkpoint_is_refused_listing_the_variables(tmp_path):
  model_dir = str(tmp_path)
  kwargs = dict(epochs=1, batch_size=64, progress=False)
  sizes = {"train": 64, "test": 64}
  loop.train(DenoisingProblem(split_sizes=sizes, learn_momentum=False),
             model_dir, **kwargs)
  # The model has a momentum weight the checkpoint lacks.
  with pytest.raises(loop.CheckpointError,
                     match=r"1 variable\(s\) of the model have no value in the "
                     r"checkpoint: model: inner_optimizer/momentum"):
    loop.restore_model(DenoisingProblem(split_sizes=sizes), model_dir)
  # Resuming training is refused too (the optimizer's slots, stored by
  # position, no longer line up: TF names the first that does not fit).
  with pytest.raises(loop.CheckpointError,
                     match="cannot restore checkpoint .*incompatible tensor"):
    loop.train(DenoisingProblem(split_sizes=sizes), model_dir, **kwargs)
  loop.train(DenoisingProblem(split_sizes=sizes), str(tmp_path / "full"),
             **kwargs)
  # The checkpoint has a momentum weight the model lacks.
  with pytest.raises(loop.CheckpointError,
                     match=r"1 checkpointed variable\(s\) match nothing in the "
                     r"model: model/.*_momentum_weight"):
    loop.restore_model(DenoisingProblem(split_sizes=sizes, learn_momentum=False),
                       str(tmp_path / "full"))


def test_misspelled_macro_names_the_closest_macro():
  """(`ige-train` with an unreferenced macro:
  tests/bin/test_bin_programs.py.)"""
  with pytest.raises(cli.GinMacroError,
                     match="macro EPOCH is not referenced .*did you mean EPOCHS"):
    cli.parse_gin(["pose/b128-1.gin"], ["EPOCH=1"])
  gin.clear_config()
  with pytest.raises(cli.GinMacroError, match="did you mean RECORDS_DIR"):
    cli.parse_gin(["pose/ige4.gin"], ["RECORD_DIR = 'records/x'"])
  gin.clear_config()
  cli.parse_gin(["pose/b128-1.gin"], ["EPOCHS = 1"])  # the right name works
  assert run.current_bindings()["train.epochs"] == 1


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path,
                                                               repo_dir):
  """Killed right after the checkpoint of a random step (mid-epoch), resumed
  with `--model_dir` alone: weights, optimizer slots, step and random states
  equal the uninterrupted run's, bit for bit. The uninterrupted run is what
  `bin/train.py` runs (`cli.parse_gin`, `loop.train`), in this process."""
  params = ["train.epochs = 6", "train.checkpoint_every_steps = 3",
            "train.progress = False",
            "DenoisingProblem.split_sizes = {'train': 320}"]
  args = ["--gin_file=core/denoise.gin",
          *(f"--gin_param={p}" for p in params)]
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  gin.clear_config()
  cli.parse_gin(["core/denoise.gin"], params)
  loop.train(cli.make_problem(), full)
  gin.clear_config()
  kill_step = random.Random().choice(range(3, 30, 3))  # 5 steps per epoch
  proc = subprocess.Popen(
      [sys.executable, os.path.join(repo_dir, "bin", "train.py"),
       f"--model_dir={killed}", *args], stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  deadline = time.time() + 240
  # The kill comes once ckpt-<kill_step> is the latest checkpoint (the
  # manager writes its `checkpoint` state file after the shard files).
  while (not (tf.train.latest_checkpoint(killed) or "").endswith(
      f"-{kill_step}") and proc.poll() is None and time.time() < deadline):
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  latest = tf.train.latest_checkpoint(killed)
  assert latest is not None and int(latest.split("-")[-1]) < 30, latest
  # Resumed from the run directory alone: its config.gin holds the gin args.
  code, out = _bin(repo_dir, "train.py", f"--model_dir={killed}")
  assert code == 0, out
  a = _read_checkpoint(os.path.join(full, "ckpt-30"))
  b = _read_checkpoint(os.path.join(killed, "ckpt-30"))
  assert sorted(a) == sorted(b)
  assert any("optimizer" in name for name in a)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=(
        f"{name} differs after a kill at step {latest} (target {kill_step})"))
