"""The programs (ige_tf/bin, installed as ige-*): help, quiet start-up,
the bin/ wrappers."""
import ast
import logging
import os
import pkgutil
import subprocess
import sys

import pytest

from ige_tf import bin as programs
from programs import run_programs

# One process (`programs.run_programs`) runs every program's console entry
# point (`run`, what the installed `ige-*` script calls) with --help, then
# the train program with the bad command lines of ERRORS: a process per
# program would spend ~4 s each importing TensorFlow.
ERRORS = {
    # No --model_dir: absl's required-flag error, before any work.
    "missing model_dir": ("train", ["--gin_file=core/denoise.gin"]),
    # A misspelled macro: refused by name before the model is built.
    "unused macro": ("train", ["--gin_file=core/denoise.gin",
                               "--model_dir=/nonexistent/never",
                               "--gin_param=EPOCHS=1"]),
}


def _clean_env():
  """This environment without the test-wide TF log level (the default is
  under test) and with this worktree importable."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(programs.__file__))))
  env["PYTHONPATH"] = os.pathsep.join(
      [repo] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  return env


def test_every_program_help_exits_0_lists_its_flags_and_is_quiet(tmp_path):
  """Also: a bad command line of `ige-train` fails with a message naming
  the problem (ERRORS)."""
  names = [info.name for info in pkgutil.iter_modules(programs.__path__)]
  errors = list(ERRORS.values())
  ran = run_programs(
      [(name, ["ige-" + name.replace("_", "-"), "--help"]) for name in names]
      + [(name, ["ige-" + name.replace("_", "-"), *args])
         for name, args in errors],
      tmp_path, timeout=300, env=_clean_env())
  helped, failed = ran[:len(names)], dict(zip(ERRORS, ran[len(names):]))
  missing = failed["missing model_dir"]
  assert missing["code"] == 1, missing
  assert "Flag --model_dir must have a value other than None" in missing[
      "err"], missing
  unused = failed["unused macro"]
  assert (unused["code"], unused["raised"] is not None) == (1, True), unused
  assert unused["raised"].startswith(
      "GinMacroError: --gin_param 'EPOCHS=1': macro EPOCHS is not "
      "referenced"), unused
  # The quiet import ran: TensorFlow was imported, and neither it (oneDNN,
  # CUDA drivers, CPU instructions, "All log messages before
  # absl::InitializeLog()") nor anything else wrote to the process's stderr.
  assert helped[-1]["tensorflow_imported"]
  expected = {"train", "evaluate", "export", "model_stats", "lift",
              "visualize", "prepare_h36m", "prepare_shapenet", "demo",
              "voxel_demo", "table1", "plot_figure4", "import_r2n2",
              "inspect_records", "make_synthetic_h36m",
              "make_synthetic_shapenet"}
  assert expected <= set(names)  # the list; more programs may come
  for name, result in zip(names, helped):
    program = "ige-" + name.replace("_", "-")
    assert result["code"] == 0, (program, result)
    assert (result["err"], result["fd2"]) == ("", ""), (program, result)
    # Its docstring (read, not imported: importing defines its flags here).
    with open(os.path.join(programs.__path__[0], name + ".py")) as source:
      doc = ast.get_docstring(ast.parse(source.read()))
    assert doc.splitlines()[0] in result["out"], program
    assert result["flags"], program
    for flag in result["flags"] + ["verbosity"]:
      assert (f"--{flag}" in result["out"]
              or f"--[no]{flag}" in result["out"]), (program, flag)


def test_bin_wrapper_runs_the_program(tmp_path, repo_dir):
  """`python bin/lift.py --help` (documented form): exit 0, quiet."""
  proc = subprocess.run(
      [sys.executable, os.path.join(repo_dir, "bin", "lift.py"), "--help"],
      cwd=tmp_path, env=_clean_env(), capture_output=True, text=True,
      timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  assert "Lifts 2D keypoints" in proc.stdout
  assert "--keypoints" in proc.stdout


def test_every_program_has_a_bin_wrapper(repo_dir):
  names = sorted(n[:-3] for n in os.listdir(os.path.dirname(programs.__file__))
                 if n.endswith(".py") and n != "__init__.py")
  wrappers = sorted(n[:-3] for n in os.listdir(os.path.join(repo_dir, "bin"))
                    if n.endswith(".py"))
  assert names == wrappers
  for name in names:
    with open(os.path.join(repo_dir, "bin", f"{name}.py")) as f:
      assert f"from ige_tf.bin import {name}\n" in f.read(), name


@pytest.mark.parametrize("argv, verbosity", [
    (["p"], None),
    (["p", "--verbosity=0"], 0),
    (["p", "--verbosity", "1"], 1),
    (["p", "-v", "-1"], -1),
    (["p", "-v=2", "--model_dir=x"], 2),
    (["p", "--", "--verbosity=0"], None),
    (["p", "--verbosity=loud"], None),
])
def test_requested_verbosity(argv, verbosity):
  assert programs.requested_verbosity(argv) == verbosity
  assert programs.quiet_requested(argv) == (verbosity is None or verbosity < 0)


def test_quiet_startup_defaults_and_verbosity(monkeypatch):
  hooks = lambda: [f for f in sys.meta_path  # noqa: E731
                   if isinstance(f, programs.QuietTensorFlowImport)]
  monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
  # As in a fresh program (nothing here imports TensorFlow meanwhile).
  monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  programs.quiet_startup(["p", "--verbosity=0"])
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
  assert not hooks()
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")  # the environment wins
  programs.quiet_startup(["p"])
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
  assert len(hooks()) == 1  # level 3: quiet, so the import is silenced too
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # asks for the lines
  programs.quiet_startup(["p"])
  assert not hooks()
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
  programs.quiet_startup(["p"])
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
  assert len(hooks()) == 1


def test_library_info_lines_quiet_unless_verbose(monkeypatch):
  import keras  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  tf_logger = logging.getLogger("tensorflow")
  handler = absl_logging.get_absl_handler()
  monkeypatch.setattr(tf_logger, "level", tf_logger.level)  # restored after
  monkeypatch.setattr(handler, "filters", list(handler.filters))
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)

  def record(level, path):
    return logging.LogRecord("absl", level, path, 1, "message", (), None)

  library = os.path.join(os.path.dirname(keras.__file__), "src", "saving.py")
  ours = os.path.abspath(programs.__file__)
  programs.quiet_python_logging(["p"])
  assert tf_logger.level == logging.WARNING
  assert not handler.filter(record(logging.INFO, library))
  assert handler.filter(record(logging.WARNING, library))
  assert handler.filter(record(logging.INFO, ours))  # e.g. "Resumed from"
  programs.quiet_python_logging(["p", "-v", "0"])
  assert tf_logger.level == logging.NOTSET
  assert handler.filter(record(logging.INFO, library))
