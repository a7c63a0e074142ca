"""Worker processes that die with the process that started them.

multiprocessing's pool workers block on a pipe that their siblings also hold open, so when the
parent is killed (SIGKILL, the OOM killer) they never see end-of-file: they finish their task, print
BrokenPipeError tracebacks and wait forever. Each worker here asks the kernel to SIGKILL it when its
parent dies (Linux prctl PR_SET_PDEATHSIG) and, where that is not available, watches its parent's pid.
"""

import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_INTERVAL_S = 0.5  # how often the portable fallback looks for its parent


def die_with_parent(parent_pid: int) -> None:
    """Make this (child) process end when `parent_pid` does: at once on Linux, else within WATCH_INTERVAL_S."""
    if not _set_parent_death_signal():
        _watch_parent(parent_pid)
    # The parent may have died before the death signal was armed: then nobody would ever send it.
    if os.getppid() != parent_pid:
        os._exit(1)


def _set_parent_death_signal() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL); False where it is unavailable (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """A daemon thread that ends the process once it has been re-parented (its parent died)."""

    def watch():
        while os.getppid() == parent_pid:
            threading.Event().wait(WATCH_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _initialise(parent_pid: int, initializer: Callable[[], None] | None) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer()


def pool(processes: int, initializer: Callable[[], None] | None = None) -> multiprocessing.pool.Pool:
    """A multiprocessing Pool whose workers die with this process (then run `initializer`).

    PR_SET_PDEATHSIG fires when the *thread* that started a worker ends: create the pool in a thread
    that outlives it (the main thread, or the one that terminates the pool)."""
    return multiprocessing.get_context().Pool(processes, initializer=_initialise, initargs=(os.getpid(), initializer))
