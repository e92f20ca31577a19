"""The programs (ige_tf/bin, installed as ige-*): help, quiet start-up,
the bin/ wrappers."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from ige_tf import bin as programs

# One process runs every program's console entry point (`run`, what the
# installed `ige-*` script calls) with --help, and the train program with
# the bad command lines of ERRORS: a process per program would spend ~4 s
# each importing TensorFlow. absl flags are global, so each program's own
# flags are removed after it (as a fresh process would start). An exception
# out of `run` is what the program's process would die of (exit code 1,
# its traceback on stderr).
ERRORS = {
    # No --model_dir: absl's required-flag error, before any work.
    "missing model_dir": ("train", ["--gin_file=core/denoise.gin"]),
    # A misspelled macro: refused by name before the model is built.
    "unused macro": ("train", ["--gin_file=core/denoise.gin",
                               "--model_dir=/nonexistent/never",
                               "--gin_param=EPOCHS=1"]),
}
ERRORS_START = "--- the bad command lines of ERRORS ---\n"
HELP_ALL = textwrap.dedent("""
    import contextlib, importlib, io, json, os, pkgutil, sys
    from absl import app, flags
    import ige_tf.bin
    app.define_help_flags()
    ERRORS, SEPARATOR = json.loads(sys.argv[1]), sys.argv[2]

    def invoke(module, argv):
      sys.argv = argv
      out, err = io.StringIO(), io.StringIO()
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
          module.run()
          code = "returned without exiting"
        except SystemExit as exit_:
          code = exit_.code
        except Exception as error:  # pylint: disable=broad-except
          code = 1
          err.write(f"{type(error).__name__}: {error}")
      flags.FLAGS.unparse_flags()
      return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

    results, errors = {}, {}
    for info in pkgutil.iter_modules(ige_tf.bin.__path__):
      module = importlib.import_module("ige_tf.bin." + info.name)
      own = sorted({f.name for m, fs in flags.FLAGS.flags_by_module_dict().items()
                    if m.startswith("ige_tf") for f in fs})
      program = "ige-" + info.name.replace("_", "-")
      helped = invoke(module, [program, "--help"])
      results[program] = {"code": helped["code"], "help": helped["out"],
                          "stderr": helped["err"], "flags": own,
                          "doc": module.__doc__.strip().splitlines()[0]}
      for name in own:
        delattr(flags.FLAGS, name)
    results["tensorflow imported"] = "tensorflow" in sys.modules
    # TensorFlow's C++ lines of a real run (e.g. a failed cuInit) may follow.
    os.write(2, SEPARATOR.encode())
    for case, (name, args) in ERRORS.items():
      before = set(flags.FLAGS)
      module = importlib.reload(importlib.import_module("ige_tf.bin." + name))
      errors[case] = invoke(module, ["ige-" + name.replace("_", "-"), *args])
      for flag in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag)
    print(json.dumps({"help": results, "errors": errors}))
""")


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
  proc = subprocess.run([sys.executable, "-c", HELP_ALL, json.dumps(ERRORS),
                         ERRORS_START], cwd=tmp_path, env=_clean_env(),
                        capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  # No TensorFlow start-up lines (oneDNN, CUDA drivers, CPU instructions,
  # "All log messages before absl::InitializeLog()"), nor anything else,
  # before the bad command lines run.
  assert proc.stderr.split(ERRORS_START)[0] == "", proc.stderr
  assert ERRORS_START in proc.stderr
  ran = json.loads(proc.stdout.strip().splitlines()[-1])
  results, errors = ran["help"], ran["errors"]
  assert errors.keys() == ERRORS.keys()
  missing = errors["missing model_dir"]
  assert missing["code"] == 1, missing
  assert "Flag --model_dir must have a value other than None" in missing[
      "err"], missing
  unused = errors["unused macro"]
  assert unused["code"] == 1, unused
  assert unused["err"].startswith(
      "GinMacroError: --gin_param 'EPOCHS=1': macro EPOCHS is not "
      "referenced"), unused
  assert results.pop("tensorflow imported") is True  # the quiet import ran
  expected = {"ige-" + name.replace("_", "-") for name in
              ("train", "evaluate", "export", "model_stats", "lift",
               "visualize", "prepare_h36m", "prepare_shapenet", "demo",
               "voxel_demo", "table1", "plot_figure4", "import_r2n2",
               "inspect_records", "make_synthetic_h36m",
               "make_synthetic_shapenet")}
  assert expected <= set(results)  # the list; more programs may come
  for program, result in results.items():
    assert result["code"] == 0, (program, result)
    assert result["stderr"] == "", (program, result)
    assert result["doc"] in result["help"], program
    assert result["flags"], program
    for flag in result["flags"] + ["verbosity"]:
      assert (f"--{flag}" in result["help"]
              or f"--[no]{flag}" in result["help"]), (program, flag)


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
