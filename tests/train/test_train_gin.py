"""gin through its public API (ige_tf/train/cli.py, gin_text.py): includes
resolved from any directory, in order, past namespace packages and without
gin's error log; errors name file and line; configs read as data without
touching the global config; gin internals used in one function only."""
import contextlib
import inspect
import logging
import os
import re

import gin
import pytest

import ige_tf
from ige_tf.train import cli
from ige_tf.train import gin_text
from ige_tf.train import loop  # noqa: F401  (registers train.*)
from ige_tf.train import run


def test_includes_follow_gin_order_relative_to_the_working_directory(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  os.mkdir("sub")
  with open("sub/b.gin", "w") as f:
    f.write("train.epochs = 2\ntrain.batch_size = 4\ntrain.seed = 9\n")
  with open("a.gin", "w") as f:
    f.write("# a comment\ntrain.epochs = 1\ninclude 'sub/b.gin'\n"
            "train.batch_size = 3\n")
  cli.parse_gin(["a.gin"], ["train.seed = 5"])
  # Before the include: overridden by it; after it: overrides it.
  assert gin.query_parameter("train.epochs") == 2
  assert gin.query_parameter("train.batch_size") == 3
  assert gin.query_parameter("train.seed") == 5
  data = gin_text.read_config(["a.gin"], ["train.seed = 5"])
  assert {k: data.bindings[k] for k in (
      "train.epochs", "train.batch_size", "train.seed")} == {
          "train.epochs": 2, "train.batch_size": 3, "train.seed": 5}


def test_packaged_configs_from_another_directory_past_a_namespace_package(
    tmp_path, monkeypatch, caplog):
  """A folder `pose/` on sys.path (a namespace package, as tests/pose is
  under pytest) made gin's package-resource lookup raise a TypeError for
  `include 'pose/base.gin'`; other includes logged "Path not found"."""
  (tmp_path / "pose").mkdir()
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.chdir(tmp_path)
  caplog.set_level(logging.INFO)
  cli.parse_gin(["pose/ige4.gin"], ["EPOCHS = 3"])
  assert gin.query_parameter("%NUM_STEPS") == 4
  assert gin.query_parameter("%EPOCHS") == 3
  assert not [r for r in caplog.records if "Path not found" in r.getMessage()
              or r.levelno >= logging.ERROR]


def test_errors_name_the_file_and_line(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with open("inner.gin", "w") as f:
    f.write("train.epochs = 1\ntrain.epoch = 2\n")
  with open("outer.gin", "w") as f:
    f.write("\ninclude 'inner.gin'\n")
  with pytest.raises(ValueError, match=r"(?s)doesn't have a parameter named "
                     r"'epoch'.*In file \"inner.gin\", line 2"):
    cli.parse_gin(["outer.gin"])
  with open("missing.gin", "w") as f:
    f.write("train.epochs = 1\n\ninclude 'nowhere/x.gin'\n")
  with pytest.raises(FileNotFoundError, match=(
      r"missing.gin, line 3: include gin file 'nowhere/x.gin' not found "
      r"\(also looked in .*configs\)")):
    cli.parse_gin(["missing.gin"])
  with pytest.raises(FileNotFoundError, match="gin file 'nope.gin' not found"):
    cli.parse_gin(["nope.gin"])


def test_reading_a_config_as_data_leaves_the_global_config_alone():
  gin.bind_parameter("train.epochs", 11)
  before = gin.config_str()
  data = gin_text.read_config(["pose/ige4.gin"], ["EPOCHS = 2"])
  assert gin.config_str() == before
  assert data.bindings["train.epochs"] == 2  # %EPOCHS resolved
  assert data.bindings["ige_lifter.num_steps"] == 4
  assert data.bindings["PoseProblem.model_fn"] == gin_text.Reference(
      "ige_lifter", False)
  assert repr(data.bindings["experiment.problem"]) == "@PoseProblem()"
  assert {"EPOCHS", "NUM_STEPS", "RECORDS_DIR"} <= data.referenced_macros
  # The macros a parsed config references, read back from gin.config_str().
  gin.clear_config()
  cli.parse_gin(["pose/ige4.gin"])
  assert cli.referenced_macros() == data.referenced_macros
  assert run.current_bindings()["ige_lifter.num_steps"] == 4


def test_isolated_gin_restores_what_gins_public_api_cannot():
  """What `run.isolated_gin` must keep, and why it copies gin's globals
  (docs/decisions.md, "gin: public API, one set-aside"): after a block that
  parsed and called configurables, also after one that raised, the caller's
  bindings (one gin cannot write as text among them), its operative config
  and its lock are as before, and nothing of the block's is left. gin 0.5
  has no public way to read back or set the operative config: a set-aside
  through `gin.config_str()` / `gin.get_bindings` loses it."""
  marker = object()
  gin.parse_config(["adam_optimizer.learning_rate = 0.5", "EPOCHS = 3",
                    "train.epochs = %EPOCHS"])
  gin.bind_parameter("experiment.problem", marker)
  cli.make_problem()  # gin hands it a copy
  loop.adam_optimizer()  # the caller's operative config: both calls
  gin.finalize()
  before = gin.config_str(), gin.operative_config_str()
  assert "adam_optimizer.learning_rate = 0.5" in before[1]
  for fails in (False, True):
    with pytest.raises(KeyError) if fails else contextlib.nullcontext():
      with run.isolated_gin():
        assert not gin.config_is_locked()
        assert gin.config_str() == gin.operative_config_str() == ""
        gin.parse_config(["adam_optimizer.learning_rate = 0.25",
                          "experiment.problem = 1", "import ige_tf.pose"])
        assert cli.make_problem() == 1
        loop.adam_optimizer()
        if fails:
          raise KeyError("in the block")
    assert (gin.config_str(), gin.operative_config_str()) == before
    assert gin.config_is_locked()
    assert gin.query_parameter("experiment.problem") is marker
    assert gin.query_parameter("%EPOCHS") == 3


# Every use of gin's private names (gin.config._X, or a gin global such as
# _CONFIG / _FILE_READERS / _LOCATION_PREFIXES / _format_value).
_PRIVATE_GIN = re.compile(r"gin\.config\._|\b_CONFIG\b|_FILE_READERS|"
                          r"_LOCATION_PREFIXES|_format_value|"
                          r"_set_config_is_locked")


def test_gin_internals_are_used_in_one_function_only():
  """The house rule (docs/decisions.md): only `run.isolated_gin` touches gin
  internals, to set the caller's config aside and put it back."""
  root = os.path.dirname(ige_tf.__file__)
  uses = []
  for folder, _, names in os.walk(root):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path) as f:
          for number, line in enumerate(f, 1):
            if _PRIVATE_GIN.search(line) and not line.lstrip().startswith("#"):
              uses.append((os.path.relpath(path, root), number))
  source, first = inspect.getsourcelines(run.isolated_gin)
  inside = set(range(first, first + len(source)))
  assert uses and all(p == os.path.join("train", "run.py") and n in inside
                      for p, n in uses), uses
