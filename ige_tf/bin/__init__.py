"""The command-line programs: one module per program, installed as `ige-*`.

Each module `ige_tf/bin/<name>.py` defines its absl flags, a `main(argv)` and
`run()`, the console entry point `ige-<name with - for _>` declared in
setup.py (`ige_tf/bin/train.py` -> `ige-train`); `bin/<name>.py` in the
repository is a thin wrapper calling the same `run()`.

Start-up is quiet by default. Importing this package (which happens before a
program module imports anything else) arranges that:

- `TF_CPP_MIN_LOG_LEVEL` defaults to 1 (TensorFlow's C++ INFO lines off,
  warnings and errors kept) unless the environment sets it;
- the first `import tensorflow` runs with file descriptor 2 sent to
  /dev/null: TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA
  drivers, CPU instructions, "All log messages before absl::InitializeLog()")
  through C++ abseil logging before any level applies, so the environment
  variable alone does not hide them. Python exceptions raised by the import
  are unaffected (they are printed after stderr is restored).

While a program runs (`run_app`), TensorFlow's and Keras' Python INFO lines
("Assets written to ...", "Writing fingerprint ...", "Function `fn` contains
input name(s) ..."), logged through their `tensorflow` logger or through
absl from their own modules, are dropped; their warnings and errors, and our
own absl `logging.info` lines (e.g. "Resumed from ..."), still show.

`--verbosity=0` (absl's flag, `-v 0`; 0 = INFO, higher = debug) on the
command line, or `TF_CPP_MIN_LOG_LEVEL=0` in the environment, turns all of
this off: TensorFlow then imports with stderr intact, `TF_CPP_MIN_LOG_LEVEL`
defaults to 0 and its Python logger follows absl's verbosity.

`define_voxel_records_flags` defines the flags both voxel record writers
(`prepare_shapenet`, `import_r2n2`) take.

`run_app(main)` runs absl's `app.run(main)` so that `--help`, `--helpshort`,
`--helpfull` and `--helpxml` exit 0 (absl exits 1) and list the program's
own flags and `--verbosity` (absl lists only flags defined by the `__main__`
module, which for a console script or wrapper defines none).
"""
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml")


def requested_verbosity(argv):
  """absl's `--verbosity` / `-v` value given in `argv`, or None.

  Args:
    argv: list of str, the command line (argv[0] is the program).

  Returns:
    int or None: the last value given before a `--` terminator; None when
    absent or not an integer (absl's parser then reports the bad value).
  """
  value = None
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg == "--":
      break
    for name in ("--verbosity", "-verbosity", "-v", "--v"):
      if arg == name and i + 1 < len(args):
        value = args[i + 1]
      elif arg.startswith(name + "="):
        value = arg[len(name) + 1:]
  try:
    return None if value is None else int(value)
  except ValueError:
    return None


def quiet_requested(argv):
  """Whether start-up stays quiet: no `--verbosity` of 0 (INFO) or more."""
  verbosity = requested_verbosity(argv)
  return verbosity is None or verbosity < 0


def _quiet(argv):
  """Quiet unless `--verbosity` >= 0 or TF_CPP_MIN_LOG_LEVEL=0 asks for logs."""
  return (quiet_requested(argv)
          and os.environ.get(TF_LOG_LEVEL_ENV, "1").strip() != "0")


@contextlib.contextmanager
def stderr_silenced():
  """Sends file descriptor 2 (C/C++ and Python stderr) to /dev/null inside.

  Does nothing when descriptor 2 cannot be duplicated (e.g. closed).
  """
  try:
    saved = os.dup(2)
  except OSError:
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  sys.stderr.flush()
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """A `sys.meta_path` finder: the first `import tensorflow` runs silenced.

  It finds `tensorflow` through the remaining finders (so the same package is
  imported), wraps that loader's `exec_module` in `stderr_silenced`, and
  removes itself, so TensorFlow is imported only when something needs it
  (data-preparation workers never import it) and only the first time.
  """

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname != "tensorflow":
      return None
    if self in sys.meta_path:
      sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)
    loader = spec.loader if spec is not None else None
    if loader is None or not hasattr(loader, "exec_module"):
      return spec
    exec_module = loader.exec_module

    def quiet_exec_module(module):
      try:
        with stderr_silenced():
          exec_module(module)
      finally:
        loader.__dict__.pop("exec_module", None)

    try:
      loader.exec_module = quiet_exec_module
    except AttributeError:  # A loader without instance attributes: as is.
      pass
    return spec


def quiet_startup(argv=None):
  """Sets TensorFlow's start-up logging from `argv` (default `sys.argv`).

  Quiet (the default): `TF_CPP_MIN_LOG_LEVEL` defaults to "1" and the first
  `import tensorflow` is silenced; verbose (`--verbosity` >= 0, or
  `TF_CPP_MIN_LOG_LEVEL=0` in the environment): it defaults to "0" and
  nothing is silenced. An environment value always wins. No effect on the log
  level when TensorFlow is already imported.
  """
  argv = sys.argv if argv is None else argv
  quiet = _quiet(argv)
  os.environ.setdefault(TF_LOG_LEVEL_ENV, "1" if quiet else "0")
  installed = [f for f in sys.meta_path if isinstance(f, QuietTensorFlowImport)]
  if quiet and "tensorflow" not in sys.modules and not installed:
    sys.meta_path.insert(0, QuietTensorFlowImport())
  elif not quiet:
    for finder in installed:
      sys.meta_path.remove(finder)


class LibraryInfoFilter(logging.Filter):
  """Drops records below WARNING logged from TensorFlow's or Keras' modules.

  The libraries' folders are read from `sys.modules` when a record arrives,
  so the filter imports nothing (and does not disturb the quiet import).
  """

  LIBRARIES = ("tensorflow", "keras")

  def filter(self, record):
    if record.levelno >= logging.WARNING:
      return True
    folders = tuple(
        os.path.dirname(module.__file__) + os.sep
        for module in (sys.modules.get(name) for name in self.LIBRARIES)
        if getattr(module, "__file__", None))
    return not (folders and record.pathname.startswith(folders))


def quiet_python_logging(argv=None):
  """Library INFO lines off when quiet (`LibraryInfoFilter`), else on.

  Quiet: TensorFlow's `tensorflow` logger at WARNING (TensorFlow sets no
  level on it outside interactive shells, so this holds whether or not it
  is imported yet) and `LibraryInfoFilter` on absl's handler. Verbose: the
  logger inherits (NOTSET) and the filter is removed.
  """
  argv = sys.argv if argv is None else argv
  quiet = _quiet(argv)
  logging.getLogger("tensorflow").setLevel(
      logging.WARNING if quiet else logging.NOTSET)
  handler = absl_logging.get_absl_handler()
  for existing in [f for f in handler.filters
                   if isinstance(f, LibraryInfoFilter)]:
    handler.removeFilter(existing)
  if quiet:
    handler.addFilter(LibraryInfoFilter())


def _exit_zero_after_help(parse):
  """Wraps a help flag's `parse`: absl's exit status 1 after help becomes 0."""

  def parse_help(argument):
    try:
      parse(argument)
    except SystemExit as exit_:
      if exit_.code == 1:
        raise SystemExit(0) from None
      raise

  parse_help.ige_exit_zero = True
  return parse_help


def _prepare_help(main):
  """Help flags exit 0 and show `main`'s module doc and the program's flags."""
  app.define_help_flags()
  for name in HELP_FLAGS:
    flag = flags.FLAGS[name]
    if not getattr(flag.parse, "ige_exit_zero", False):
      flag.parse = _exit_zero_after_help(flag.parse)
  program = sys.modules.get(getattr(main, "__module__", None))
  main_module = sys.modules.get("__main__")
  if program is not None and main_module is not None and program.__doc__:
    main_module.__doc__ = program.__doc__
  by_module = flags.FLAGS.flags_by_module_dict()
  for module_name, module_flags in sorted(by_module.items()):
    if module_name.split(".")[0] == "ige_tf":
      for flag in module_flags:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  if "verbosity" in flags.FLAGS:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0],
                                             flags.FLAGS["verbosity"])


def define_voxel_records_flags(default_resolutions):
  """Defines the flags of the programs writing voxel records
  (`prepare_shapenet`, `import_r2n2`), as their library functions take them:
  --out_dir, --synsets, --split_file, --resolutions (a list of str, default
  `default_resolutions`), --workers, --models_per_shard and
  --train_fraction."""
  from ige_tf.voxel.data import prepare  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("out_dir", None, "Output records directory.")
  flags.DEFINE_list("synsets", None,
                    "Synset ids (default: the 13 3D-R2N2 categories).")
  flags.DEFINE_string("split_file", None, "Pix2Vox-style ShapeNet.json "
                      "(default: 80/20 hash split).")
  flags.DEFINE_list("resolutions", list(default_resolutions),
                    "Frustum grid resolutions R.")
  flags.DEFINE_integer("workers", None,
                       "Worker processes (default: all cores).")
  flags.DEFINE_integer("models_per_shard", prepare.DEFAULT_MODELS_PER_SHARD,
                       "Models per shard (the unit of resumption).")
  flags.DEFINE_float("train_fraction", prepare.DEFAULT_TRAIN_FRACTION,
                     "Train share of the hash split.")


def run_app(main):
  """Runs `app.run(main)` with quiet start-up and help that exits 0.

  Args:
    main: the program's `main(argv)`, defined in its `ige_tf.bin` module.
  """
  quiet_startup()
  quiet_python_logging()
  _prepare_help(main)
  app.run(main)


quiet_startup()
