"""The zero-cost selector checked against accuracy (PreNAS Appendix A at our scale).

    .venv/bin/python -m bench.bench_selector_accuracy --supernet runs/uniform/train/supernet.safetensors \
        [--seeds 5] [--random 30] [--plot bench/selector-vs-accuracy.png]

`--supernet` is a *uniformly* trained supernet (AutoFormer-style: `python -m training train --sampler uniform`), used
as the accuracy oracle: every arch is scored with inherited weights on the validation split (held out of training;
never the test set). Per bucket of the space's default grid, the pick of normalised SNIP (PreNAS), the pick of plain
SNIP and `--random` distinct random archs of that bucket are ranked by that accuracy. A pick's best-rank is the share
of the bucket's random archs that beat it (0: none does, 1: all do; ties count half); mBR is its mean over buckets, per
selector seed; the seeds are the replicates of the interval.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from bench.common import machine
from training.data import load_data
from training.evaluate import accuracy, load_supernet, tensor_batches
from training.sampler import UniformSampler
from training.select import SelectConfig, select
from zoo import Arch, params
from zoo.io import atomic_write_figure

PROXIES = ("snip-normalised", "snip")
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}  # two-sided t, n samples


def random_archs(space, lo: float, hi: float, n: int, seed: int, tries: int = 200_000) -> list[Arch]:
    """Up to `n` distinct archs with lo <= params < hi, drawn as the uniform sampler draws."""
    sample, rng_seed = UniformSampler(space, seed), random.Random(seed)
    found: dict[str, Arch] = {}
    for _ in range(tries):
        arch = sample(rng_seed.randrange(2**62))
        if lo <= params(space, arch) < hi:
            found.setdefault(arch.id, arch)
            if len(found) == n:
                break
    return list(found.values())


def best_rank(score: float, others: list[float]) -> float:
    return (sum(o > score for o in others) + 0.5 * sum(o == score for o in others)) / len(others)


def mean_interval(values: list[float]) -> str:
    m = statistics.mean(values)
    if len(values) < 2:
        return f"{m:.3f}"
    half = T95.get(len(values), 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return f"{m:.3f} ± {half:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--random", type=int, default=30)
    ap.add_argument("--plot", default="bench/selector-vs-accuracy.png")
    args = ap.parse_args()
    supernet = load_supernet(args.supernet)
    space = supernet.space
    val, _ = load_data("fashion-mnist", "val", img_size=space.img_size, in_chans=space.in_chans)
    batches = tensor_batches(val, 1000)
    cache: dict[str, float] = {}

    def acc(arch: Arch) -> float:
        if arch.id not in cache:
            cache[arch.id] = accuracy(supernet, arch, batches).top1
        return cache[arch.id]

    picks = {(p, s): select(SelectConfig(space, proxy=p, seed=s, progress=False)) for p in PROXIES
             for s in range(args.seeds)}
    edges = picks[PROXIES[0], 0].config.buckets.edges()
    print(f"machine: {machine()}; supernet {args.supernet}; {len(val)} validation images; {args.seeds} selector "
          f"seeds; {args.random} random archs per bucket\n")
    print("| bucket | random archs: median / best val top-1 | normalised SNIP: top-1 (best-rank) per seed "
          "| plain SNIP: top-1 (best-rank) per seed |")
    print("|---|---|---|---|")
    ranks = {(p, s): [] for p in PROXIES for s in range(args.seeds)}
    points = []
    for k, (lo, hi) in enumerate(edges):
        randoms = [acc(a) for a in random_archs(space, lo, hi, args.random, seed=k)]
        if len(randoms) < 2:
            continue
        cells = []
        for p in PROXIES:
            cell = []
            for s in range(args.seeds):
                best = picks[p, s].preferred[k]
                if not best:
                    continue
                a = acc(best[0].arch)
                ranks[p, s].append(best_rank(a, randoms))
                cell.append(f"{a:.2f} ({ranks[p, s][-1]:.2f})")
                points.append((p, best[0].params, a))
            cells.append(", ".join(cell))
        points += [("random", (lo * hi) ** 0.5, r) for r in randoms]
        print(f"| [{lo / 1e3:.1f}K, {hi / 1e3:.1f}K) | {statistics.median(randoms):.2f} / {max(randoms):.2f} "
              f"(n={len(randoms)}) | {cells[0]} | {cells[1]} |")
    print("\n| selector | mBR (mean over seeds ± 95% t-interval; 0 = the best of the random archs) "
          "| per seed |\n|---|---|---|")
    for p in PROXIES:
        per_seed = [statistics.mean(ranks[p, s]) for s in range(args.seeds)]
        print(f"| {p} | {mean_interval(per_seed)} | {', '.join(f'{m:.3f}' for m in per_seed)} |")
    print(f"\nwrote {plot(points, args.plot)}")


def plot(points: list[tuple[str, float, float]], path: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100, layout="tight")
    ax = fig.add_subplot()
    style = {"random": ("#9ca3af", "o", "random archs of the bucket (at its centre)"),
             "snip-normalised": ("#2563eb", "*", "normalised SNIP picks (PreNAS)"),
             "snip": ("#ea580c", "x", "plain SNIP picks")}
    for who, (color, marker, label) in style.items():
        xs = [x for w, x, _ in points if w == who]
        ys = [y for w, _, y in points if w == who]
        ax.scatter(xs, ys, c=color, marker=marker, s=60 if who != "random" else 12, label=label, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation top-1 with inherited weights (%)")
    ax.set_title("selector picks vs random archs of each bucket (uniform supernet)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write_figure(path, fig)


if __name__ == "__main__":
    main()
