"""Benchmark helpers: interleaved rounds, so both sides see the same machine noise."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: int, warmup: int = 2
                ) -> dict[str, list[float]]:
    """Seconds per call of each fn: `rounds` alternating rounds of `reps` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - t) / reps)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
