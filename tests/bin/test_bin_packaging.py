"""A built wheel, installed into a fresh venv outside the repository, runs
the denoising example through its console entry points from another
directory (no network: the wheel's dependencies come from this
interpreter's site-packages)."""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest


def _run(cmd, **kwargs):
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                        check=False, **kwargs)
  assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-4000:])
  return proc


@pytest.mark.slow
def test_wheel_installs_and_trains_and_evaluates_from_anywhere(tmp_path,
                                                               repo_dir):
  # Build from a copy, so the worktree gets no build/ or egg-info.
  source = tmp_path / "source"
  shutil.copytree(os.path.join(repo_dir, "ige_tf"), source / "ige_tf",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  shutil.copy(os.path.join(repo_dir, "setup.py"), source)
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
        "--no-build-isolation", "--no-index", "-q", "-w",
        str(tmp_path / "dist"), str(source)], env=env, cwd=tmp_path)
  (wheel,) = glob.glob(str(tmp_path / "dist" / "ige_tf-*.whl"))

  # Every config ships: the same relative names as in the source tree.
  configs = sorted(os.path.relpath(p, source / "ige_tf") for p in glob.glob(
      str(source / "ige_tf" / "configs" / "**" / "*.gin"), recursive=True))
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
  assert "ige_tf/configs/core/denoise.gin" in names
  assert sorted(n[len("ige_tf/"):] for n in names
                if n.endswith(".gin")) == configs

  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
  python = str(venv / "bin" / "python")
  _run([sys.executable, "-m", "pip", "--python", python, "install",
        "--no-deps", "--no-index", "-q", wheel], env=env)
  # Dependencies: this interpreter's site-packages as plain path entries (a
  # .pth line does not run that folder's own .pth hooks, so the editable
  # ige_tf of a development venv stays invisible). Written after the
  # install, so pip never sees (or touches) the other ige_tf.
  purelib = _run([python, "-c", "import sysconfig; "
                  "print(sysconfig.get_path('purelib'))"]).stdout.strip()
  deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
  with open(os.path.join(purelib, "zz_ige_test_dependencies.pth"), "w") as f:
    f.write("\n".join(sorted(deps)) + "\n")

  # A console script per program module (their list: test_bin_programs.py).
  scripts = sorted(os.path.basename(p) for p in glob.glob(
      str(venv / "bin" / "ige-*")))
  modules = [os.path.basename(p)[:-3] for p in glob.glob(
      str(source / "ige_tf" / "bin" / "*.py"))]
  assert "ige-train" in scripts and "ige-evaluate" in scripts
  assert scripts == sorted("ige-" + m.replace("_", "-") for m in modules
                           if m != "__init__")

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  # (`cli.GIN_DIR` is gin_text's, which imports no TensorFlow.)
  where = _run([python, "-c", "import ige_tf, ige_tf.train.gin_text as g; "
                "print(ige_tf.__file__); print(g.GIN_DIR)"],
               env=env, cwd=elsewhere).stdout.split()
  assert where[0].startswith(str(venv)), where
  assert where[1] == os.path.join(os.path.dirname(where[0]), "configs")

  args = ["--gin_file=core/denoise.gin", "--model_dir=run"]
  _run([str(venv / "bin" / "ige-train"), *args,
        "--gin_param=train.epochs = 1"], env=env, cwd=elsewhere)
  evaluated = _run([str(venv / "bin" / "ige-evaluate"), *args], env=env,
                   cwd=elsewhere)
  printed = json.loads(evaluated.stdout.strip().splitlines()[-1])
  with open(elsewhere / "run" / "metrics.json") as f:
    metrics = json.load(f)
  assert printed["mse"] == metrics["mse"]
  mse = metrics["mse"]
  assert len(mse) == 5  # steps 0..4 of core/denoise.gin
  assert mse[-1] < 0.5 * mse[0]  # one epoch already denoises
  with open(elsewhere / "run" / "operative_config.gin") as f:
    assert "DenoisingProblem" in f.read()
