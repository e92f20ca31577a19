"""What the absl binaries share: flags, strict gin parsing, the experiment.

Every binary takes `--gin_file` (repeatable) and `--gin_param` (repeatable).
Gin files are found as given or, failing that, relative to the repository's
`gin/` directory; `include` lines inside them resolve the same way, without
changing the working directory. Parsing is strict: an unknown configurable or
parameter is an error.
"""
import os

from absl import flags
import gin

import ige_tf

GIN_DIR = os.path.abspath(
    os.path.join(os.path.dirname(ige_tf.__file__), os.pardir, "gin"))


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


def parse_gin(gin_files, gin_params=()):
  """Parses gin files and bindings strictly (unknown names are errors)."""
  if GIN_DIR not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(GIN_DIR)
  files = [resolve_gin_file(f) for f in gin_files]
  gin.parse_config_files_and_bindings(files, list(gin_params),
                                      skip_unknown=False, finalize_config=False)


@gin.configurable("experiment")
def make_problem(problem=gin.REQUIRED):
  """The experiment's `Problem`, e.g. `experiment.problem = @PoseProblem()`."""
  return problem
