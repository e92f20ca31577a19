"""Grouping experiment configs by the training step they take.

The config step tests (tests/pose/test_pose_problem_experiments.py,
tests/voxel/test_voxel_problem_configs.py) parse every experiment with the
tests' overrides and compare the resulting gin configs: two configs whose
configs are equal (once the macros that only choose the data, which the
tests replace anyway, are set aside) run the same training step, so one step
per class covers the class. The grouping is derived from the parsed configs,
so a new config joins its class, or forms a new one, by itself.

Imported by the test modules as `config_steps` (tests/ is on `sys.path`, as
the directory of the top-level conftest.py).
"""
import re

import gin


def unwrap(text):
  """gin config text (str) with its wrapped long lines (`name = \\` followed
  by an indented value) joined."""
  return re.sub(r"\\\n\s*", "", text)


def step_bindings(ignore=()):
  """The current gin config as text (`gin.config_str()`, unwrapped), without
  the lines binding a name in `ignore` (macros or `configurable.parameter`
  names, e.g. "RECORDS_DIR"): str."""
  prefixes = tuple(f"{name} =" for name in ignore)
  return "\n".join(line for line in unwrap(gin.config_str()).splitlines()
                   if not (prefixes and line.startswith(prefixes)))


def step_classes(configs, bindings_of, sort_key=None):
  """Groups `configs` by their step bindings.

  Args:
    configs: config names (str).
    bindings_of: dict config -> its step bindings (str, from `step_bindings`).
    sort_key: orders each class's members, first the one whose step stands
      for the class (default: by name).

  Returns:
    list of classes, each a list of configs (its representative first), in
    the order of their representatives' names.
  """
  classes = {}
  for config in configs:
    classes.setdefault(bindings_of[config], []).append(config)
  members = [sorted(m, key=sort_key) for m in classes.values()]
  return sorted(members, key=lambda m: m[0])
