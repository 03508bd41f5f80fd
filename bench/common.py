"""Benchmark helpers: interleaved rounds, so both sides see the same machine noise."""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def supernet_validation_split(supernet_file: str | Path, space):
    """The validation split the supernet never trained on: the one its training run (its config.json) held out
    (training.evaluate.validation_split). Refused when there is no such record: a split loaded with another seed than
    training's holds about 9 in 10 of the supernet's own training images (4,568-4,616 of 5,000 measured for seeds 1-4
    against 0)."""
    from dataclasses import asdict

    from training.config import TrainConfig
    from training.evaluate import validation_split

    try:
        cfg = TrainConfig.load(Path(supernet_file).parent / "config.json")
        data, _ = validation_split(asdict(cfg), space)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{supernet_file}: no validation split is held out for sure: {e}") from None
    return data, cfg


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile: printed values up to 4 degrees of freedom, from 5 on the Cornish-Fisher
    expansion in the normal quantile (Abramowitz & Stegun 26.7.5), within 0.001 of the exact value (no scipy here)."""
    if dof < 1:
        raise ValueError(f"a t-interval needs at least 2 samples, got {dof + 1}")
    if dof <= 4:
        return (12.7062, 4.3027, 3.1824, 2.7764)[dof - 1]
    z, nu = statistics.NormalDist().inv_cdf(0.975), dof
    return (z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * nu**4))


def t_half(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean (the values are the replicates, e.g. seeds)."""
    return t95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def mean_interval(values: list[float]) -> str:
    m = statistics.mean(values)
    return f"{m:.3f}" if len(values) < 2 else f"{m:.3f} ± {t_half(values):.3f}"


# -- rank correlations (no scipy here: small n, exact formulas) ----------------------------------------------------
def pearson(x, y) -> float:
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1])


def ranks(x) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(x, y) -> float:
    return pearson(ranks(x), ranks(y))


def kendall(x, y) -> float:
    """Kendall's tau-b: concordant minus discordant pairs, normalised for ties."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = np.sign(x[:, None] - x[None, :])[np.triu_indices(len(x), 1)]
    dy = np.sign(y[:, None] - y[None, :])[np.triu_indices(len(y), 1)]
    denom = math.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy))
    return float((dx * dy).sum() / denom) if denom else float("nan")


def correlations(score, acc) -> dict[str, float]:
    return {"tau": kendall(score, acc), "rho": spearman(score, acc), "R": pearson(score, acc)}


def bootstrap(score: list[float], acc: list[float], draws: int = 2000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of tau/rho/R over resampled paths (one selector run: paths are the replicates)."""
    rng = np.random.default_rng(seed)
    s, a = np.asarray(score), np.asarray(acc)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of tied values has no correlation: NaN, skipped
        sims = [correlations(s[i], a[i]) for i in (rng.integers(0, len(s), len(s)) for _ in range(draws))]
    return {k: tuple(np.nanpercentile([x[k] for x in sims], [2.5, 97.5])) for k in ("tau", "rho", "R")}


def raw_results(args, measure: Callable[[object], dict], default_out: Callable[[dict], Path]) -> dict:
    """A study's raw results: read back from `--from` (args.from_raw), or measured now and written to `--raw`
    (args.raw) or the study's own file under bench/data (`default_out(raw)`)."""
    from zoo.io import atomic_write_text

    if args.from_raw:
        return json.loads(args.from_raw.read_text())
    raw = measure(args)
    out = args.raw or default_out(raw)
    atomic_write_text(out, json.dumps(raw) + "\n")
    print(f"wrote {out}; its tables in bench/RESULTS.md: python -m bench report\n")
    return raw
