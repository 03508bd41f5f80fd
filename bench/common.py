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


T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # two-sided t, n samples


def t_half(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean (the values are the replicates, e.g. seeds)."""
    return T95.get(len(values), 1.96) * statistics.stdev(values) / len(values) ** 0.5


def mean_interval(values: list[float]) -> str:
    m = statistics.mean(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {t_half(values):.3f}"
