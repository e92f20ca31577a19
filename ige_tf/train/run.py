"""Loading a trained run from its directory alone: the one way every tool does.

`bin/train.py` (`loop.train`) records in `model_dir`:
  config.gin            the parsed gin config (macros kept): the experiment as
                        the user gave it, self-contained (includes inlined).
  operative_config.gin  what the model, data and loop actually used (every
                        parameter, defaults included, macros resolved).
  run.json              `{"format": 1, "problem": <class>, "rebuild_bindings":
                        [...]}`; the bindings let the model be rebuilt from its
                        checkpoint alone (e.g. no training statistics file and
                        no initial-estimate run for pose IGE models).

`open_run(model_dir, gin_files, gin_params)` rebuilds the problem (and, by
default, the model with its latest checkpoint restored exactly) from that
record. Extra `gin_files` / `gin_params` may change evaluation-time settings
only (`EVALUATION_BINDINGS` plus the problem's `evaluation_bindings()`:
records directory, split, batch size, progress, ...); a binding that changes
the model or the problem against the run's record raises `ConfigMismatchError`
naming every differing binding. The run's config is read as data
(`gin_text.read_config`) for that comparison; the problem and model are
built with it parsed into gin inside `isolated_gin`, so the caller's global
gin config is exactly as it was after the block (a notebook's bindings
survive `open_run` and every loader built on it).
"""
import collections
import contextlib
import fnmatch
import importlib
import json
import os

import gin

from ige_tf.train import cli
from ige_tf.train import gin_text
from ige_tf.train import loop

# Configurables whose parameters never change a trained model or its problem.
EVALUATION_BINDINGS = ("train.*", "evaluate.*", "export.*", "model_stats.*",
                       "adam_optimizer.*")

Run = collections.namedtuple("Run", ["model_dir", "problem", "model"])
Run.__doc__ = """A loaded run: its directory, `Problem` and Keras model (None
when `open_run(..., restore=False)`)."""


class ConfigMismatchError(ValueError):
  """Gin files or bindings given to a tool change the run's model or problem."""


class RunError(ValueError):
  """A directory is not a usable bin/train.py run."""


# -- gin state --------------------------------------------------------------
@contextlib.contextmanager
def isolated_gin():
  """Runs the block on an empty gin config; afterwards the caller's config
  (bindings, imports, operative config, lock) is exactly as it was, whatever
  the block parsed, and also when it raised."""
  # gin keeps one global config and has no public way to set it aside and
  # put it back: `gin.config_str()` leaves out every value it cannot write
  # as text (a Path, an array, an object bound in Python), and although the
  # bindings themselves can be copied through `gin.get_bindings`, nothing
  # public reads back or sets the operative config (loop.train records it
  # in operative_config.gin, which open_run's mismatch check reads). So this
  # copies the globals `gin.clear_config` resets; it is the only use of gin
  # internals in ige_tf (docs/decisions.md, "gin: public API, one
  # set-aside", with each public candidate and the test it fails).
  config = gin.config
  names = ("_CONFIG", "_SINGLETONS", "_IMPORTS", "_OPERATIVE_CONFIG")
  saved = {name: getattr(config, name).copy() for name in names}
  saved["_CONFIG"] = {k: dict(v) for k, v in saved["_CONFIG"].items()}
  locked = gin.config_is_locked()
  gin.clear_config()
  try:
    yield
  finally:
    gin.clear_config()
    for name, value in saved.items():
      getattr(config, name).update(value)
    config._set_config_is_locked(locked)  # pylint: disable=protected-access


def current_bindings():
  """The current gin config as `{"scope/configurable.param": value}`, macros
  resolved, configurables named by their short name (`gin_text.read_config`
  of `gin.config_str()`)."""
  return gin_text.read_config(text=gin.config_str()).bindings


# -- the run record -----------------------------------------------------------
def _read_record(model_dir):
  path = os.path.join(model_dir, loop.RUN_RECORD)
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise RunError(f"{path}: unreadable run record ({e})") from e
  if not isinstance(record, dict) or record.get("format") != loop.RUN_FORMAT:
    raise RunError(f"{path}: not a run record of format {loop.RUN_FORMAT}")
  return record


def _config_files(model_dir):
  """`(config, operative)` paths; `config` falls back to the operative config
  for runs recorded before config.gin existed."""
  if not os.path.isdir(model_dir):
    raise RunError(f"{model_dir}: no such run directory")
  operative = os.path.join(model_dir, loop.OPERATIVE_CONFIG)
  if not os.path.isfile(operative):
    raise RunError(f"{operative}: no operative config; is {model_dir!r} a "
                   "bin/train.py --model_dir (trained for at least one step)?")
  config = os.path.join(model_dir, loop.RUN_CONFIG)
  return (config if os.path.isfile(config) else operative), operative


def _make_problem(model_dir, config_path):
  try:
    return cli.make_problem()
  except (ValueError, TypeError) as e:
    if "experiment" in str(e):
      raise RunError(
          f"{config_path} binds no experiment.problem: the run was not "
          "configured through gin; rebuild its Problem in Python and use "
          "ige_tf.train.loop.restore_model") from e
    raise


@contextlib.contextmanager
def open_run(model_dir, gin_files=(), gin_params=(), restore=True):
  """Rebuilds a trained run from its directory (module docstring).

  Inside the block gin holds the run's config (plus the allowed extras), so
  gin-configured functions such as `loop.evaluate` and `loop.export` see it;
  the caller's config is restored afterwards.

  Args:
    model_dir: a `bin/train.py --model_dir`.
    gin_files, gin_params: extra gin files and bindings, parsed on top of the
      run's config (strictly, `cli.parse_gin`); only evaluation-time settings
      may differ from the run's record.
    restore: also build the model and restore the latest checkpoint exactly
      (`loop.restore_model`).

  Yields:
    `Run(model_dir, problem, model)`.

  Raises:
    RunError: not a run directory, or a run not configured through gin.
    ConfigMismatchError: the extras change the model or the problem; the
      message lists each binding with the run's and the given value.
    FileNotFoundError, loop.CheckpointError: from `loop.restore_model`.
  """
  model_dir = os.fspath(model_dir)
  config_path, operative_path = _config_files(model_dir)
  record = _read_record(model_dir)
  if record.get("problem"):
    # Its configurables must be registered even if the run was built in
    # Python (its operative config then has no import line for it).
    importlib.import_module(record["problem"].rsplit(".", 1)[0])
  # What the run used, read as data: the config as given (macros resolved
  # here) under the operative config (every parameter, defaults included).
  recorded = gin_text.read_config([operative_path]).bindings
  if config_path != operative_path:
    recorded = dict(gin_text.read_config([config_path]).bindings, **recorded)
  with isolated_gin():
    cli.parse_gin([config_path])
    if gin_files or gin_params:
      cli.parse_gin(gin_files, gin_params)
      _check_unchanged(model_dir, config_path, recorded,
                       _make_problem(model_dir, config_path))
    rebuild = record.get("rebuild_bindings")
    if rebuild is None:  # a run recorded before run.json existed
      rebuild = _make_problem(model_dir, config_path).rebuild_bindings()
    gin.parse_config(rebuild)
    problem = _make_problem(model_dir, config_path)
    model = loop.restore_model(problem, model_dir) if restore else None
    yield Run(model_dir, problem, model)


def _check_unchanged(model_dir, config_path, recorded, problem):
  """Raises `ConfigMismatchError` if the current gin config binds a model or
  problem parameter to another value than the run's `recorded` bindings."""
  allowed = EVALUATION_BINDINGS + tuple(problem.evaluation_bindings())
  differing = [
      f"{key}: run {recorded[key]!r}, given {value!r}"
      for key, value in sorted(current_bindings().items())
      if key in recorded and value != recorded[key]
      and not any(fnmatch.fnmatchcase(key, p) for p in allowed)]
  if differing:
    raise ConfigMismatchError(
        f"{model_dir}: the given gin files/bindings change the run's model "
        f"or problem ({len(differing)} binding(s) differ from "
        f"{config_path}): " + "; ".join(differing) + ". Drop --gin_file "
        "(the run directory describes itself) or use another --model_dir.")


def rebuildable_problem():
  """The current gin config's problem, with its `rebuild_bindings()` applied
  (so its model can be built without data or initial-estimate runs, e.g. to
  count parameters). Binds them in the current gin config."""
  problem = cli.make_problem()
  bindings = list(problem.rebuild_bindings())
  if not bindings:
    return problem
  gin.parse_config(bindings)
  return cli.make_problem()
