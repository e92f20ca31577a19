"""CPU seconds of each test (setup, call, teardown), for test files run alone.

On a shared machine the wall times of `pytest --durations` grow with the
load (several times over at a load average of 10 on 2 cores); the CPU
seconds a test spends do not, or much less, so this is how the suite's cost
is compared before and after a change (docs/benchmarks.md, "Tests").

Runs pytest in this process (no xdist) on the given arguments with a plugin
that reads `getrusage` around every test phase: the process's own CPU time
(all threads, user + system) plus that of the child processes the phase
waited for (the binaries tests start). Prints the slowest phases and the
total, and writes every phase to --out (JSON).

Example:
  python bench/bench_test_cpu.py --out=bench/results/test_cpu.json -- \
      tests/pose/test_pose_problem_experiments.py -q -p no:cacheprovider
"""
import argparse
import json
import resource
import sys

import pytest


def _cpu_seconds():
  """User + system CPU seconds of this process and its waited-for children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuSeconds:
  """pytest plugin: `rows` of (cpu_seconds, phase, nodeid) per test phase."""

  def __init__(self):
    self.rows = []

  def _measure(self, phase, item):
    start = _cpu_seconds()
    yield
    self.rows.append((_cpu_seconds() - start, phase, item.nodeid))

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_setup(self, item):
    yield from self._measure("setup", item)

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_call(self, item):
    yield from self._measure("call", item)

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_teardown(self, item):
    yield from self._measure("teardown", item)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None, help="JSON file for every phase")
  parser.add_argument("--top", type=int, default=15,
                      help="slowest phases to print")
  parser.add_argument("pytest_args", nargs="+",
                      help="arguments for pytest (after --)")
  args = parser.parse_args()
  plugin = CpuSeconds()
  code = pytest.main(args.pytest_args, plugins=[plugin])
  rows = sorted(plugin.rows, reverse=True)
  total = sum(r[0] for r in rows)
  print(f"\nslowest {min(args.top, len(rows))} phases, CPU seconds:")
  for seconds, phase, nodeid in rows[:args.top]:
    print(f"{seconds:8.2f}s {phase:8s} {nodeid}")
  print(f"total: {total:.1f} CPU s over {len(rows)} phases "
        f"(pytest exit code {int(code)})")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"pytest_args": args.pytest_args, "exit_code": int(code),
                 "total_cpu_seconds": round(total, 2),
                 "phases": [{"cpu_seconds": round(s, 3), "phase": p,
                             "nodeid": n} for s, p, n in rows]}, f, indent=1)
  return int(code)


if __name__ == "__main__":
  sys.exit(main())
