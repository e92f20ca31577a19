"""Worker processes that end when their parent dies, however it dies.

`map_in_order(fn, items, workers)` runs work items on a process pool whose
workers do (the voxel record preparation's pool).

`die_with_parent(parent_pid)` is meant for the initializer of a
multiprocessing pool (e.g. `concurrent.futures.ProcessPoolExecutor(...,
initializer=..., initargs=(os.getpid(),))`). A pool's workers otherwise
outlive a parent killed with SIGKILL, each holding its memory, forever.

Two mechanisms, so that neither a missed signal nor another OS leaves an
orphan:

* Linux: `prctl(PR_SET_PDEATHSIG, SIGKILL)` - the kernel kills the worker
  when the thread that started it ends (the parent's main thread for the
  pools of this package);
* everywhere: a daemon thread that polls `os.getppid()` every
  `WATCHDOG_SECONDS` and ends the process (`os._exit`) once the parent is
  gone (the worker is re-parented, so its parent pid changes).
"""
import ctypes
import ctypes.util
import os
import signal
import sys
import threading

WATCHDOG_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1
EXIT_CODE = 70   # EX_SOFTWARE: ended because the parent died


def _set_parent_death_signal():
  """Linux: asks the kernel to SIGKILL this process when its parent dies.

  Returns:
    True if the request was accepted.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                       use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
  except (OSError, AttributeError):
    return False


def _watch_parent(parent_pid, interval):
  stop = threading.Event()
  while not stop.wait(interval):
    if os.getppid() != parent_pid:
      os._exit(EXIT_CODE)  # pylint: disable=protected-access


def die_with_parent(parent_pid, interval=WATCHDOG_SECONDS):
  """Makes this (worker) process end when `parent_pid` dies.

  Args:
    parent_pid: pid of the process that started this one (`os.getpid()` in
      the parent, passed to the worker).
    interval: seconds between the watchdog's parent checks.
  """
  _set_parent_death_signal()
  if os.getppid() != parent_pid:
    # The parent died before the death signal was armed.
    os._exit(EXIT_CODE)  # pylint: disable=protected-access
  thread = threading.Thread(target=_watch_parent, args=(parent_pid, interval),
                            name="die_with_parent", daemon=True)
  thread.start()


# Numeric libraries use one thread in a worker (set before the heavy modules
# are imported lazily by the work functions).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def _init_worker(parent_pid):
  """Pool initializer: `die_with_parent`, one thread per numeric library."""
  die_with_parent(parent_pid)
  for name in THREAD_VARIABLES:
    os.environ[name] = "1"


def map_in_order(fn, items, workers):
  """Yields `fn(item)` for every item, in order, on `workers` processes.

  With `workers` > 1, a "spawn" process pool runs at most `3 * workers`
  items ahead of the consumer; its workers end when this process dies
  (`die_with_parent`) and use one thread per numeric library. Closing the
  generator (or an error in `fn`) cancels the pending items and shuts the
  pool down.

  Args:
    fn: a picklable callable (a module-level function or a
      `functools.partial` of one); with `workers` <= 1 it runs here.
    items: iterable of picklable arguments.
    workers: number of processes.
  """
  # pylint: disable=g-import-not-at-top
  import concurrent.futures
  import multiprocessing
  if workers <= 1:
    for item in items:
      yield fn(item)
    return
  context = multiprocessing.get_context("spawn")
  executor = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_init_worker,
      initargs=(os.getpid(),))
  pending = []
  try:
    items = iter(items)
    exhausted = False
    while True:
      while not exhausted and len(pending) < workers * 3:
        try:
          item = next(items)
        except StopIteration:
          exhausted = True
          break
        pending.append(executor.submit(fn, item))
      if not pending:
        return
      yield pending.pop(0).result()
  finally:
    for future in pending:
      future.cancel()
    executor.shutdown(wait=True, cancel_futures=True)
