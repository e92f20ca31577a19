"""What the absl binaries share: flags, strict gin parsing, the experiment.

Every binary takes `--gin_file` (repeatable) and `--gin_param` (repeatable).
Gin files are found as given or, failing that, relative to `GIN_DIR`, the
configs shipped inside the package (`ige_tf/configs/`, also after a
non-editable install); `include` lines inside them resolve the same way,
without changing the working directory (`gin_text.resolve_gin_file`).
Parsing is strict: an unknown configurable or parameter is an error, and so
is a `--gin_param` macro that nothing references.

Only gin's public API is used. `include` lines are followed here rather than
by gin: gin's own lookup also asks its package-resource reader, which raises
a TypeError when the include's first folder is a namespace package (any
folder called `pose` on `sys.path`) and logs an ERROR for every other
include; `parse_gin` hands gin each file's text between its include lines
(`gin.parse_config`, file name and line numbers kept for gin's errors) and
parses the included files in their place.
"""
import difflib
import re

from absl import flags
import gin
from gin import config_parser

from ige_tf.train import gin_text
from ige_tf.train.gin_text import GIN_DIR, resolve_gin_file  # noqa: F401


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


# `NAME = value` with no "." or "/" in NAME binds a macro, not a parameter.
_MACRO_BINDING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


class GinMacroError(ValueError):
  """A --gin_param sets a macro that nothing in the config references."""


def referenced_macros():
  """Names of the macros (`%NAME`) referenced by the current gin config
  (read from `gin.config_str()`)."""
  return gin_text.read_config(text=gin.config_str()).referenced_macros


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


def _parse_text(text, name, depth=0):
  """Parses gin `text` into the global config, following its includes.

  Each stretch between include lines goes to `gin.parse_config` padded with
  blank lines, so gin's errors name `name` and the line in it; each included
  file is parsed, the same way, where its include line stands.
  """
  if depth > 50:
    raise ValueError(f"{name}: gin includes nested more than 50 deep "
                     "(an include cycle?)")
  lines = text.splitlines(keepends=True)
  start = 0  # index of the first line not yet parsed
  for statement in gin_text.statements(text, name):
    if not isinstance(statement, config_parser.IncludeStatement):
      continue
    line = statement.location.line_num - 1
    gin.parse_config(gin_text.named_text(
        "\n" * start + "".join(lines[start:line]), name))
    path = resolve_gin_file(statement.filename, statement.location)
    with open(path) as f:
      _parse_text(f.read(), path, depth + 1)
    start = line + 1
  gin.parse_config(gin_text.named_text(
      "\n" * start + "".join(lines[start:]), name))


def parse_gin(gin_files, gin_params=()):
  """Parses gin files and bindings strictly into the global gin config.

  Unknown configurables or parameters are errors (gin's own check), and so
  is a macro set in `gin_params` that nothing references
  (`check_macro_params`).

  Args:
    gin_files: paths as given or relative to `GIN_DIR`.
    gin_params: binding strings, parsed after the files.

  Raises:
    FileNotFoundError: a file or an included file is missing.
    ValueError: unknown configurable or parameter (gin, naming file and line).
    GinMacroError: see `check_macro_params`.
  """
  for path in gin_files:
    path = resolve_gin_file(path)
    with open(path) as f:
      _parse_text(f.read(), path)
  if gin_params:
    _parse_text("\n".join(gin_params), "<gin bindings>")
  check_macro_params(gin_params)


@gin.configurable("experiment")
def make_problem(problem=gin.REQUIRED):
  """The experiment's `Problem`, e.g. `experiment.problem = @PoseProblem()`."""
  return problem
