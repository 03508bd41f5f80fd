"""The zero-cost selector checked against accuracy (PreNAS Appendix A at our scale).

    .venv/bin/python -m bench.bench_selector_accuracy --supernet runs/uniform/train/supernet.safetensors \
        [--seeds 5] [--random 30] [--plot bench/selector-vs-accuracy.png]
    .venv/bin/python -m bench.bench_selector_accuracy --supernet runs/isomer/train/supernet.safetensors \
        --isomers 6 --plot bench/selector-isomers.png

`--supernet` is a *uniformly* trained supernet (AutoFormer-style: `python -m training train --sampler uniform`), used
as the accuracy oracle: every arch is scored with inherited weights on the validation split (held out of training;
never the test set). Per bucket of the space's default grid, the pick of normalised SNIP (PreNAS), the pick of plain
SNIP and `--random` distinct random archs of that bucket are ranked by that accuracy. A pick's best-rank is the share
of the bucket's random archs that beat it (0: none does, 1: all do; ties count half); mBR is its mean over buckets, per
selector seed; the seeds are the replicates of the interval. With `--isomers N` (for the `isomer` space: one embed,
one depth) the groups are the N largest isomer groups instead (same embed, depth, total heads and total MLP ratio, so
the same params): each proxy's representative against random allocations of the same totals, as in the paper's
Appendix A, with each pick's bottom share to show whether a proxy prefers wide-low isomers.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from pathlib import Path

from bench.bench_select import bottom_share
from bench.common import machine, mean_interval, supernet_validation_split
from training.evaluate import accuracy, load_supernet, tensor_batches
from training.sampler import UniformSampler
from training.select import SelectConfig, select
from zoo import Arch, params
from zoo.io import atomic_write_figure

PROXIES = ("snip-normalised", "snip")


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


def totals_key(arch: Arch) -> tuple:
    """What isomers share (PreNAS Case 1): embed, depth, total heads and total MLP ratio, so the same params when the
    choices are evenly spaced (as in the `isomer` space and the official ones)."""
    return arch.embed_dim, arch.depth, sum(arch.num_heads), sum(arch.mlp_ratios)


def layouts(choices, depth: int, total: float) -> list[tuple]:
    """Every per-layer assignment of `choices` over `depth` layers that sums to `total`."""
    return [t for t in itertools.product(choices, repeat=depth) if sum(t) == total]


def isomers(space, arch: Arch) -> list[Arch]:
    """The whole isomer group of `arch` in `space`, `arch` included."""
    e, d, heads, ratios = totals_key(arch)
    return [Arch(e, d, h, r) for h in layouts(space.num_heads, d, heads) for r in layouts(space.mlp_ratios, d, ratios)]


def random_isomers(space, arch: Arch, n: int, seed: int) -> list[Arch]:
    """Up to `n` distinct isomers of `arch`, drawn uniformly from its group, `arch` itself excluded."""
    others = [a for a in isomers(space, arch) if a != arch]
    return random.Random(seed).sample(others, min(n, len(others)))


def low_share(space, arch: Arch) -> float | None:
    """Mean bottom share (`bench_select`'s wide-low measure) of the arch's head and MLP allocations: the share of
    the units added above each layer's smallest choice that sit in the lower half of the layers; above 0.5 is
    wide-low. None when nothing is added."""
    shares = [bottom_share(tuple(choices.index(v) for v in values))
              for choices, values in ((space.num_heads, arch.num_heads), (space.mlp_ratios, arch.mlp_ratios))]
    shares = [x for x in shares if x is not None]
    return statistics.mean(shares) if shares else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--random", type=int, default=30)
    ap.add_argument("--isomers", type=int, default=0, metavar="N",
                    help="rank within the N largest isomer groups instead of within the buckets")
    ap.add_argument("--plot", default="bench/selector-vs-accuracy.png")
    args = ap.parse_args()
    supernet = load_supernet(args.supernet)
    space = supernet.space
    val, _ = supernet_validation_split(args.supernet, space)
    batches = tensor_batches(val, 1000)
    cache: dict[str, float] = {}

    def acc(arch: Arch) -> float:
        if arch.id not in cache:
            cache[arch.id] = accuracy(supernet, arch, batches).top1
        return cache[arch.id]

    picks = {(p, s): select(SelectConfig(space, proxy=p, seed=s, progress=False)) for p in PROXIES
             for s in range(args.seeds)}
    study = isomer_study if args.isomers else bucket_study
    print(f"machine: {machine()}; supernet {args.supernet}; {len(val)} validation images; {args.seeds} selector "
          f"seeds; {args.random} random archs per group\n")
    ranks, points = study(args, space, picks, acc)
    print("\n| selector | mBR (mean over seeds ± 95% t-interval; 0 = the best of the random archs) "
          "| per seed |\n|---|---|---|")
    for p in PROXIES:
        per_seed = [statistics.mean(ranks[p, s]) for s in range(args.seeds)]
        print(f"| {p} | {mean_interval(per_seed)} | {', '.join(f'{m:.3f}' for m in per_seed)} |")
    print(f"\nwrote {plot(points, args.plot, 'isomer group' if args.isomers else None)}")


def bucket_study(args, space, picks, acc):
    """Each proxy's pick per bucket of the default grid against random archs of the bucket."""
    edges = picks[PROXIES[0], 0].config.buckets.edges()
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
    return ranks, points


def _fmt(share: float | None) -> str:
    return "-" if share is None else f"{share:.2f}"


def isomer_study(args, space, picks, acc):
    """PreNAS Appendix A: each proxy's representative of an isomer group against random isomers of that group.
    Groups are the `--isomers` (total heads, total ratio) pairs with the most isomers (the paper's Case 1)."""
    reps = {(p, s): {totals_key(c.arch): c.arch for c in picks[p, s].candidates} for p, s in picks}
    size = {k: len(isomers(space, a)) for k, a in reps[PROXIES[0], 0].items()}
    groups = sorted(size, key=lambda k: (-size[k], k))[:args.isomers]
    print("| group: total heads, total MLP ratio (isomers) | params | random isomers: median / best | normalised SNIP: "
          "top-1 (best-rank; low share) per seed | plain SNIP: top-1 (best-rank; low share) per seed |")
    print("|---|---|---|---|---|")
    ranks = {(p, s): [] for p in PROXIES for s in range(args.seeds)}
    points, lows = [], {p: [] for p in PROXIES}
    for g, key in enumerate(groups):
        rep = reps[PROXIES[0], 0][key]
        randoms = [acc(a) for a in random_isomers(space, rep, args.random, seed=g)]
        cells = []
        for p in PROXIES:
            cell = []
            for s in range(args.seeds):
                arch = reps[p, s][key]
                a = acc(arch)
                ranks[p, s].append(best_rank(a, randoms))
                lows[p].append(low_share(space, arch))
                cell.append(f"{a:.2f} ({ranks[p, s][-1]:.2f}; {_fmt(lows[p][-1])})")
                points.append((p, g, a))
            cells.append(", ".join(cell))
        points += [("random", g, r) for r in randoms]
        print(f"| {key[2]}, {key[3]:g} ({size[key]:,}) | {params(space, rep) / 1e3:.0f}K | "
              f"{statistics.median(randoms):.2f} / {max(randoms):.2f} (n={len(randoms)}) | {cells[0]} | {cells[1]} |")
    print("\nMean bottom share of the picks (share of the added heads and MLP units in the lower half of the layers; "
          "0.5 = even, above = wide-low): "
          + ", ".join(f"{p} {statistics.mean(x for x in v if x is not None):.3f}" for p, v in lows.items()))
    return ranks, points


def plot(points: list[tuple[str, float, float]], path: str, x_label: str | None = None) -> Path:
    """Picks and random archs by accuracy against params (buckets), or against the group's index (isomers)."""
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
    if x_label:
        ax.set_xlabel(x_label)
    else:
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
    ax.set_ylabel("validation top-1 with inherited weights (%)")
    ax.set_title(f"selector picks vs random archs of each {x_label or 'bucket'} (uniform supernet)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write_figure(path, fig)


if __name__ == "__main__":
    main()
