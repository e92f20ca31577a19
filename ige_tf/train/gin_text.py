"""gin files as data: finding them and reading them without the global config.

Gin files are found as given (relative to the working directory) or,
failing that, relative to `GIN_DIR`, the configs shipped inside the package
(`ige_tf/configs/`, also after a non-editable install), so
`pose/b128-1.gin` works from any directory; `include` lines resolve the same
way (`resolve_gin_file`).

`read_config` reads files and bindings with gin's public parser
(`gin.config_parser.ConfigParser`) into plain Python data: every binding as
`"scope/configurable.param" -> value` with macros resolved, and the macros
the text references. It never touches gin's global config, so it can compare
a run's recorded config with what a tool is given, or list the macros a
config references, without parsing either into gin. References to
configurables are `Reference`s and unbound macros `Macro`s; both print as
gin writes them (`@ige_lifter`, `%EPOCHS`), so `repr` of a value is its gin
text.
"""
import collections
import io
import os

from gin import config_parser

import ige_tf

GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(ige_tf.__file__)),
                       "configs")


def resolve_gin_file(path, included_from=None):
  """`path` if it is a file, else `GIN_DIR/path`.

  Args:
    path: str, a gin file as given (`--gin_file`, an `include` line).
    included_from: `config_parser.Location` of the `include` line, for the
      error message.

  Raises:
    FileNotFoundError: neither exists (naming the including file and line).
  """
  if os.path.isfile(path):
    return path
  candidate = os.path.join(GIN_DIR, path)
  if os.path.isfile(candidate):
    return candidate
  where = ("" if included_from is None else
           f"{included_from.filename}, line {included_from.line_num}: "
           "include ")
  raise FileNotFoundError(
      f"{where}gin file {path!r} not found (also looked in {GIN_DIR})")


class Reference(collections.namedtuple("Reference", ["name", "evaluate"])):
  """`@name` or `@name()` in a gin file: `name` is the configurable's short
  name with its scopes (`encoder/ige_voxel_model`), `evaluate` whether it is
  called (`()`)."""

  def __repr__(self):
    return f"@{self.name}{'()' if self.evaluate else ''}"


class Macro(collections.namedtuple("Macro", ["name"])):
  """`%name` in a gin file whose macro the text does not bind."""

  def __repr__(self):
    return f"%{self.name}"


def _short_name(scoped_selector):
  """`a/b/module.name` -> `a/b/name` (gin matches selectors by suffix)."""
  *scopes, selector = scoped_selector.split("/")
  return "/".join(scopes + [selector.split(".")[-1]])


class _DataDelegate(config_parser.ParserDelegate):
  """Parses references and macros into `Reference` / `Macro` placeholders."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return Reference(_short_name(scoped_configurable_name), bool(evaluate))

  def macro(self, macro_name):
    return Macro(macro_name)


def named_text(text, name):
  """A file-like object holding `text` whose `name` gin reports in errors."""
  stream = io.StringIO(text)
  stream.name = name
  return stream


def statements(text, name=None):
  """gin statements (`config_parser.BindingStatement`, `IncludeStatement`,
  `ImportStatement`, ...) of `text`, in order; `name` names it in errors."""
  return list(config_parser.ConfigParser(named_text(text, name),
                                         _DataDelegate()))


def _walk(text, name, out, depth=0):
  """Appends the binding statements of `text` (includes followed) to `out`."""
  if depth > 50:
    raise ValueError(f"{name}: gin includes nested more than 50 deep "
                     "(an include cycle?)")
  for statement in statements(text, name):
    if isinstance(statement, config_parser.IncludeStatement):
      path = resolve_gin_file(statement.filename, statement.location)
      with open(path) as f:
        _walk(f.read(), path, out, depth + 1)
    elif isinstance(statement, config_parser.BindingStatement):
      out.append(statement)


ConfigData = collections.namedtuple(
    "ConfigData", ["bindings", "macros", "referenced_macros"])
ConfigData.__doc__ = """A gin config read as data (`read_config`).

bindings: dict `"scope/configurable.param" -> value`, configurables by their
  short name, macros resolved (a macro the text does not bind stays a
  `Macro`).
macros: dict macro name -> value as written.
referenced_macros: set of the macro names referenced anywhere (`%NAME`).
"""


def _macro_names(value):
  if isinstance(value, Macro):
    yield value.name
  elif isinstance(value, (list, tuple)) and not isinstance(value, Reference):
    for item in value:
      yield from _macro_names(item)
  elif isinstance(value, dict):
    for item in value.values():
      yield from _macro_names(item)


def _resolve(value, macros, seen=()):
  """`value` with every bound macro replaced by its (resolved) value."""
  if isinstance(value, Macro):
    if value.name in macros and value.name not in seen:
      return _resolve(macros[value.name], macros, seen + (value.name,))
    return value
  if isinstance(value, Reference):
    return value
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(v, macros, seen) for v in value)
  if isinstance(value, dict):
    return {k: _resolve(v, macros, seen) for k, v in value.items()}
  return value


def read_config(files=(), bindings=(), text=None):
  """Reads gin files, a config text and bindings as data (`ConfigData`).

  Later statements win, as in gin: `files` in order, then `text`, then
  `bindings`. Nothing is parsed into gin's global config and no module is
  imported.

  Args:
    files: gin file paths (`resolve_gin_file`).
    bindings: binding strings (`--gin_param`).
    text: a gin config as one string (e.g. `gin.config_str()`).

  Raises:
    FileNotFoundError: a file or an include is missing.
    SyntaxError: gin cannot parse a statement (naming file and line).
  """
  found = []
  for path in files:
    path = resolve_gin_file(path)
    with open(path) as f:
      _walk(f.read(), path, found)
  if text:
    _walk(text, "<gin config>", found)
  if bindings:
    _walk("\n".join(bindings), "<gin bindings>", found)
  macros, params, referenced = {}, {}, set()
  for statement in found:
    referenced.update(_macro_names(statement.value))
    selector = _short_name(statement.selector)
    if not statement.arg_name:  # NAME = value binds a macro
      name = (statement.scope + "/" if statement.scope else "") + \
          statement.selector
      macros[name] = statement.value
    else:
      scope = statement.scope + "/" if statement.scope else ""
      params[f"{scope}{selector}.{statement.arg_name}"] = statement.value
  resolved = {key: _resolve(value, macros) for key, value in params.items()}
  return ConfigData(resolved, macros, referenced)
