"""Several program runs in one fresh Python process.

A test that needs a program's own behaviour (its flags, its exit code, its
messages, its output files) but not a process of its own per run can run
several programs here: one TensorFlow import (~4 CPU s) instead of one per
run. Each run calls the program's console entry point (`ige_tf.bin.<name>.run`,
what `bin/<name>.py` and the installed `ige-*` script call) with its own
`sys.argv`; its absl flags are defined afresh (the module is reloaded) and
removed after it, as a fresh process would start.

What a separate process would report is reported per run:
- "code": the exit code. `sys.exit(message)` is code 1 with the message on
  stderr, as Python does; an exception out of `run` is code 1, and
  "raised" names it (a separate process would print its traceback).
- "out", "err": what the run wrote to Python's `sys.stdout` / `sys.stderr`.
- "fd2": what the process wrote to its file descriptor 2 during the run
  (TensorFlow's C++ log lines go there, not to "err"), imports included.
- "flags": the absl flags of `ige_tf` modules defined during the run (the
  program's own flags and those of the modules it imported first).
- "tensorflow_imported": whether TensorFlow was imported by the run's end.
"""
import json
import os
import subprocess
import sys
import textwrap

# The repository (bin/<name>.py lives in REPO_DIR/bin).
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import contextlib, importlib, io, json, os, sys
    from absl import app, flags

    app.define_help_flags()  # once per process: kept across the runs
    results = []
    for index, (name, argv) in enumerate(json.loads(sys.argv[1])):
      os.write(2, (MARK % index).encode())  # splits fd 2 by run
      before = set(flags.FLAGS)
      module = importlib.import_module("ige_tf.bin." + name)
      if set(flags.FLAGS) == before:  # imported before: define its flags again
        module = importlib.reload(module)
      sys.argv = argv
      out, err = io.StringIO(), io.StringIO()
      raised = None
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
          module.run()
          code = 0
        except SystemExit as exit_:
          code = exit_.code
          if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
          code = 0 if code is None else code
        except Exception as error:  # pylint: disable=broad-except
          code, raised = 1, f"{type(error).__name__}: {error}"
      flags.FLAGS.unparse_flags()
      defined = set(flags.FLAGS) - before
      own = sorted(f.name for module_name, module_flags
                   in flags.FLAGS.flags_by_module_dict().items()
                   if module_name.startswith("ige_tf")
                   for f in module_flags if f.name in defined)
      for flag in defined:
        delattr(flags.FLAGS, flag)
      results.append({"code": code, "out": out.getvalue(),
                      "err": err.getvalue(), "raised": raised, "flags": own,
                      "tensorflow_imported": "tensorflow" in sys.modules})
    os.write(2, (MARK % len(results)).encode())
    print(json.dumps(results))
""")
# Written to file descriptor 2 before each run and after the last.
_MARK = "\n--- run %d ---\n"


def run_programs(runs, cwd, timeout=600, env=None):
  """Runs `runs` in order in one new Python process.

  Args:
    runs: list of `(program, argv)`: `program` a module of `ige_tf.bin`
      ("lift"), `argv` its command line including `argv[0]`.
    cwd: the process's working directory.
    timeout: seconds for the whole process.
    env: the process's environment (default: this one with TensorFlow's
      C++ logging at warnings and above, `TF_CPP_MIN_LOG_LEVEL=2`).

  Returns:
    One dict per run: "code" (int), "out", "err", "fd2" (str), "raised"
    (None or "ExceptionType: message"), "flags" (list of str),
    "tensorflow_imported" (bool); see the module docstring.

  Raises:
    AssertionError: the process itself failed (its stderr in the message).
  """
  if env is None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  script = f"MARK = {_MARK!r}\n{_SCRIPT}"
  proc = subprocess.run(
      [sys.executable, "-c", script, json.dumps([list(r) for r in runs])],
      cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(proc.stdout.strip().splitlines()[-1])
  stderr = proc.stderr
  for index, result in enumerate(results):
    start = stderr.index(_MARK % index) + len(_MARK % index)
    result["fd2"] = stderr[start:stderr.index(_MARK % (index + 1), start)]
  return results
