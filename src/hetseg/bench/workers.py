"""The benches' cell processes (``--jobs N``): N single-thread processes that die with the bench.

Why single-thread: two single-thread processes fill two cores without the OpenMP barrier waits
that make one two-thread process crawl when anything else runs (docs/BENCHMARKS.md).

Why they must die with the bench: a worker is busy in a training loop, so when the bench process
is killed (a timeout, ``kill -9``, a closed terminal) nothing tells the worker, and it kept
training as an orphan for the rest of its cell -- invisible, holding a core, writing into the runs
directory. Stages resume exactly from their checkpoints (``hetseg.engine.resume``) and write
atomically, so killing a worker mid-stage loses at most the steps since its last checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import torch

from hetseg.errors import HetsegError

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent exits (elsewhere: nothing).

    The parent may already be gone by the time this runs; then exit at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # best effort: a refusal leaves a plain worker
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


def worker_init() -> None:
    """Runs once in each worker: one thread, and die with the bench process."""
    torch.set_num_threads(1)
    die_with_parent()


def cell_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes (spawn: no forked torch/OpenMP state) set up by :func:`worker_init`."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init)


def job(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in a worker; a HetsegError comes back as a plain one (DataError does not unpickle)."""
    try:
        return fn(*args)
    except HetsegError as e:
        raise HetsegError(str(e)) from None
