"""Jobs side by side on a small CPU machine: spawned processes with one torch thread each, so that N jobs share N
cores without oversubscribing them."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def one_thread_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes whose torch starts with one thread. The variable is read when torch
    starts its thread pool, so it is set here, before the workers start (and it stays set in this process)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
