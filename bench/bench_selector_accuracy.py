"""The zero-cost selector checked against accuracy (PreNAS Appendix A at our scale).

    .venv/bin/python -m bench.bench_selector_accuracy --supernet runs/uniform/train/supernet.safetensors \
        [--seeds 5] [--random 30] [--raw bench/data/selector-accuracy/ladder-buckets.json] \
        [--plot bench/selector-vs-accuracy.png]
    .venv/bin/python -m bench.bench_selector_accuracy --supernet runs/isomer/train/supernet.safetensors \
        --isomers 6 --plot bench/selector-isomers.png
    .venv/bin/python -m bench.bench_selector_accuracy --from bench/data/selector-accuracy/ladder-buckets.json

`--supernet` is a *uniformly* trained supernet (AutoFormer-style: `python -m training train --sampler uniform`), used
as the accuracy oracle: every arch is scored with inherited weights on the validation split (held out of training;
never the test set). Per bucket of the space's default grid, the pick of normalised SNIP (PreNAS), the pick of plain
SNIP and `--random` distinct random archs of that bucket are ranked by that accuracy. A pick's best-rank is the share
of the bucket's random archs that beat it (0: none does, 1: all do; ties count half); mBR is its mean over buckets, per
selector seed; the seeds are the replicates of the interval. With `--isomers N` (for the `isomer` space: one embed,
one depth) the groups are the N largest isomer groups instead (same embed, depth, total heads and total MLP ratio, so
the same params): each proxy's representative against random allocations of the same totals, as in the paper's
Appendix A, with each pick's bottom share to show whether a proxy prefers wide-low isomers.

The raw results go to bench/data/selector-accuracy/SPACE-STUDY.json (every scored arch with its params and
validation top-1, per group its random archs and each proxy's pick per seed, the validation split's source, seed and
size), from which `python -m bench report` builds the tables in bench/RESULTS.md (renderer `selector_accuracy`) and
`--from RAW` prints them and redraws the plot.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from pathlib import Path

from bench.bench_select import bottom_share
from bench.common import machine, mean_interval, raw_results, supernet_validation_split
from bench.report import DATA
from training.checks import Range
from training.evaluate import accuracy, load_supernet, tensor_batches
from training.sampler import UniformSampler
from training.select import SelectConfig, select
from zoo import Arch, params
from zoo.families.vit.space import ViTSpace
from zoo.io import atomic_write_figure

PROXIES = ("snip-normalised", "snip")
TITLES = {"snip-normalised": "normalised SNIP", "snip": "plain SNIP"}


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", help="a uniformly trained supernet (its run's config.json beside it)")
    ap.add_argument("--from", dest="from_raw", type=Path, help="print the tables and redraw the plot of this raw file")
    ap.add_argument("--seeds", type=Range(int, 1, 1000), default=5, help="selector seeds (the replicates)")
    ap.add_argument("--random", type=Range(int, 2, 100_000), default=30, help="random archs per group")
    ap.add_argument("--isomers", type=Range(int, 0, 100_000), default=0, metavar="N",
                    help="rank within the N largest isomer groups instead of within the buckets")
    ap.add_argument("--raw", type=Path, help="default: bench/data/selector-accuracy/SPACE-STUDY.json")
    ap.add_argument("--plot", default="bench/selector-vs-accuracy.png")
    args = ap.parse_args(argv)
    if (args.supernet is None) == (args.from_raw is None):
        ap.error("give either --supernet or --from RAW_FILE")
    raw = raw_results(args, measure,
                      lambda raw: DATA / "selector-accuracy" / f"{raw['space']['name']}-{raw['study']}.json")
    print(tables(raw))
    print(f"\nwrote {plot(points(raw), args.plot, 'isomer group' if raw['study'] == 'isomers' else None)}")


def measure(args) -> dict:
    """Score the picks and the random archs of every group: the raw results."""
    supernet = load_supernet(args.supernet)
    space = supernet.space
    val, run = supernet_validation_split(args.supernet, space)
    batches = tensor_batches(val, 1000)
    scored: dict[str, dict] = {}

    def acc(arch: Arch) -> str:
        if arch.id not in scored:
            scored[arch.id] = {"params": params(space, arch), "val_top1": accuracy(supernet, arch, batches).top1,
                               "arch": arch.to_dict()}
        return arch.id

    picks = {(p, s): select(SelectConfig(space, proxy=p, seed=s, progress=False)) for p in PROXIES
             for s in range(args.seeds)}
    study = isomer_study if args.isomers else bucket_study
    groups = study(args, space, picks, acc)
    return {"kind": "prezoo.bench-selector-accuracy", "study": "isomers" if args.isomers else "buckets",
            "space": space.to_dict(), "supernet": str(args.supernet), "machine": machine(), "seeds": args.seeds,
            "random": args.random, "validation": {"source": run.data, "seed": run.seed, "images": len(val)},
            "groups": groups, "archs": scored}


def bucket_study(args, space, picks, acc) -> list[dict]:
    """Each proxy's pick per bucket of the default grid against random archs of the bucket (buckets with fewer than
    two random archs are left out)."""
    groups = []
    for k, (lo, hi) in enumerate(picks[PROXIES[0], 0].config.buckets.edges()):
        randoms = [acc(a) for a in random_archs(space, lo, hi, args.random, seed=k)]
        if len(randoms) < 2:
            continue
        chosen = {p: [acc(picks[p, s].preferred[k][0].arch) if picks[p, s].preferred[k] else None
                      for s in range(args.seeds)] for p in PROXIES}
        groups.append({"bucket": [lo, hi], "random": randoms, "picks": chosen})
    return groups


def isomer_study(args, space, picks, acc) -> list[dict]:
    """PreNAS Appendix A: each proxy's representative of an isomer group against random isomers of that group.
    Groups are the `--isomers` (total heads, total ratio) pairs with the most isomers (the paper's Case 1)."""
    reps = {(p, s): {totals_key(c.arch): c.arch for c in picks[p, s].candidates} for p, s in picks}
    size = {k: len(isomers(space, a)) for k, a in reps[PROXIES[0], 0].items()}
    groups = []
    for g, key in enumerate(sorted(size, key=lambda k: (-size[k], k))[:args.isomers]):
        rep = reps[PROXIES[0], 0][key]
        groups.append({"totals": [key[2], key[3]], "isomers": size[key], "params": params(space, rep),
                       "random": [acc(a) for a in random_isomers(space, rep, args.random, seed=g)],
                       "picks": {p: [acc(reps[p, s][key]) for s in range(args.seeds)] for p in PROXIES}})
    return groups


def _fmt(share: float | None) -> str:
    return "-" if share is None else f"{share:.2f}"


def tables(raw: dict) -> str:
    """The study's tables from its raw file (renderer `selector_accuracy` of `python -m bench report`): per group the
    random archs' median and best and each proxy's pick per seed with its best-rank (and, for isomers, its bottom
    share), then mBR per proxy over the seeds."""
    space, archs, isomer = ViTSpace.from_dict(raw["space"]), raw["archs"], raw["study"] == "isomers"
    top1 = lambda arch_id: archs[arch_id]["val_top1"]
    v = raw["validation"]
    lines = [f"`{space.name}`, uniformly trained supernet `{raw['supernet']}`; validation top-1 on {v['images']:,} "
             f"images held out of its training ({v['source']}, seed {v['seed']}); {raw['seeds']} selector seeds; "
             f"{raw['random']} random archs per {'isomer group' if isomer else 'bucket'}.", ""]
    extra = "; low share" if isomer else ""
    lines += [("| group: total heads, total MLP ratio (isomers) | params | random isomers: median / best | " if isomer
               else "| bucket | random archs: median / best val top-1 | ")
              + " | ".join(f"{TITLES[p]}: top-1 (best-rank{extra}) per seed" for p in PROXIES) + " |",
              "|---|" + "---|" * (len(PROXIES) + (2 if isomer else 1))]
    ranks = {(p, s): [] for p in PROXIES for s in range(raw["seeds"])}
    lows: dict[str, list[float | None]] = {p: [] for p in PROXIES}
    for g in raw["groups"]:
        randoms = [top1(a) for a in g["random"]]
        cells = []
        for p in PROXIES:
            cell = []
            for s, pick in enumerate(g["picks"][p]):
                if pick is None:
                    continue
                ranks[p, s].append(best_rank(top1(pick), randoms))
                low = ""
                if isomer:
                    lows[p].append(low_share(space, Arch.from_dict(archs[pick]["arch"])))
                    low = f"; {_fmt(lows[p][-1])}"
                cell.append(f"{top1(pick):.2f} ({ranks[p, s][-1]:.2f}{low})")
            cells.append(", ".join(cell))
        spread = f"{statistics.median(randoms):.2f} / {max(randoms):.2f} (n={len(randoms)})"
        if isomer:
            heads, ratio = g["totals"]
            lines.append(f"| {heads}, {ratio:g} ({g['isomers']:,}) | {g['params'] / 1e3:.0f}K | {spread} | "
                         + " | ".join(cells) + " |")
        else:
            lo, hi = g["bucket"]
            lines.append(f"| [{lo / 1e3:.1f}K, {hi / 1e3:.1f}K) | {spread} | " + " | ".join(cells) + " |")
    if isomer:
        lines += ["", "Mean bottom share of the picks (share of the added heads and MLP units in the lower half of "
                  "the layers; 0.5 = even, above = wide-low): "
                  + ", ".join(f"{p} {statistics.mean(x for x in v if x is not None):.3f}" for p, v in lows.items())]
    lines += ["", "| selector | mBR (mean over seeds ± 95% t-interval; 0 = the best of the random archs) | per seed |",
              "|---|---|---|"]
    for p in PROXIES:
        per_seed = [statistics.mean(ranks[p, s]) for s in range(raw["seeds"])]
        lines.append(f"| {p} | {mean_interval(per_seed)} | {', '.join(f'{m:.3f}' for m in per_seed)} |")
    return "\n".join(lines) + "\n"


def points(raw: dict) -> list[tuple[str, float, float]]:
    """The plot's points: each pick at its params (buckets) or its group's index (isomers), each random arch at its
    bucket's geometric centre or its group's index."""
    archs, out = raw["archs"], []
    for g, group in enumerate(raw["groups"]):
        for p in PROXIES:
            out += [(p, g if "totals" in group else archs[a]["params"], archs[a]["val_top1"])
                    for a in group["picks"][p] if a is not None]
        x = g if "totals" in group else (group["bucket"][0] * group["bucket"][1]) ** 0.5
        out += [("random", x, archs[a]["val_top1"]) for a in group["random"]]
    return out


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
