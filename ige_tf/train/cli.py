"""What the absl binaries share: flags, strict gin parsing, the experiment.

Every binary takes `--gin_file` (repeatable) and `--gin_param` (repeatable).
Gin files are found as given or, failing that, relative to `GIN_DIR`, the
configs shipped inside the package (`ige_tf/configs/`, also after a
non-editable install); `include` lines inside them resolve the same way,
without changing the working directory. Parsing is strict: an unknown
configurable or parameter is an error, and so is a `--gin_param` macro that
nothing references.
"""
import difflib
import importlib.util
import os
import re

from absl import flags
import gin

import ige_tf

GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(ige_tf.__file__)),
                       "configs")


def define_flags(model_dir_required=True):
  """Defines --model_dir, --gin_file and --gin_param."""
  flags.DEFINE_string("model_dir", None, "Run directory (checkpoints, logs, "
                      "operative config, metrics, export).")
  flags.DEFINE_multi_string("gin_file", [], "Gin config file(s); paths "
                            f"relative to {GIN_DIR} are accepted.")
  flags.DEFINE_multi_string("gin_param", [], "Gin binding(s), e.g. "
                            "'train.epochs = 2'.")
  if model_dir_required:
    flags.mark_flag_as_required("model_dir")


def resolve_gin_file(path):
  """Returns `path` if it exists, else `GIN_DIR/path`; raises if neither."""
  if os.path.isfile(path):
    return path
  candidate = os.path.join(GIN_DIR, path)
  if os.path.isfile(candidate):
    return candidate
  raise FileNotFoundError(
      f"gin file {path!r} not found (also looked in {GIN_DIR})")


def _in_regular_package(path):
  """Whether `path`'s folder names an importable, regular Python package."""
  head = os.path.dirname(path)
  if not head or os.path.isabs(path):
    return False
  try:
    spec = importlib.util.find_spec(head.replace("/", "."))
  except (ImportError, ValueError):
    return False
  return spec is not None and spec.origin is not None


def _guard_package_lookup():
  """Makes gin's "file inside a Python package" lookup safe and quiet.

  For an include like 'pose/base.gin', gin first asks whether `pose` is an
  importable package holding `base.gin`. If `pose` resolves to a namespace
  package (any folder called `pose` on `sys.path`, e.g. `tests/pose` under
  pytest), gin crashes with a TypeError instead of moving on to the search
  path; otherwise it logs "ERROR ... Path not found" for every include. The
  check is wrapped to answer False, silently, unless the folder is a regular
  package.
  """
  readers = gin.config._FILE_READERS  # pylint: disable=protected-access
  for i, (reader, exists) in enumerate(readers):
    if getattr(exists, "_ige_guarded", False) or exists is os.path.isfile:
      continue

    def guarded(path, exists=exists):
      if not _in_regular_package(path):
        return False
      try:
        return exists(path)
      except TypeError:
        return False

    guarded._ige_guarded = True  # pylint: disable=protected-access
    readers[i] = (reader, guarded)


# `NAME = value` with no "." or "/" in NAME binds a macro, not a parameter.
_MACRO_BINDING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


class GinMacroError(ValueError):
  """A --gin_param sets a macro that nothing in the config references."""


def referenced_macros():
  """Names of the macros (`%NAME`) referenced by the current gin config."""
  config = gin.config._CONFIG  # pylint: disable=protected-access
  return {ref.config_key[0] for ref in gin.config.iterate_references(config)
          if ref.config_key[1] == "gin.macro"}


def check_macro_params(gin_params):
  """Raises `GinMacroError` if a binding in `gin_params` sets a macro that no
  parsed file or binding references (e.g. `EPOCH=1` for `EPOCHS`), naming the
  closest referenced macro."""
  known = referenced_macros()
  for param in gin_params:
    match = _MACRO_BINDING.match(param)
    if match and match.group(1) not in known:
      name = match.group(1)
      close = difflib.get_close_matches(name, sorted(known), n=1)
      hint = (f"; did you mean {close[0]}?" if close else
              f"; referenced macros: {sorted(known) or 'none'}")
      raise GinMacroError(
          f"--gin_param {param.strip()!r}: macro {name} is not referenced by "
          f"any gin file or binding, so it would change nothing{hint}")


def add_search_path():
  """Lets gin find `include`d files relative to `GIN_DIR` (idempotent)."""
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(GIN_DIR)
  _guard_package_lookup()


def parse_gin(gin_files, gin_params=()):
  """Parses gin files and bindings strictly.

  Unknown configurables or parameters are errors (gin's own check), and so
  is a macro set in `gin_params` that nothing references
  (`check_macro_params`).
  """
  add_search_path()
  files = [resolve_gin_file(f) for f in gin_files]
  gin.parse_config_files_and_bindings(files, list(gin_params),
                                      skip_unknown=False, finalize_config=False)
  check_macro_params(gin_params)


@gin.configurable("experiment")
def make_problem(problem=gin.REQUIRED):
  """The experiment's `Problem`, e.g. `experiment.problem = @PoseProblem()`."""
  return problem
