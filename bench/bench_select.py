"""Zero-cost selector: speed, greedy vs brute force, the wide-low ablation, and the official picks.

    .venv/bin/python -m bench.bench_select [--spaces autoformer-tiny,autoformer-small,autoformer-base]
                                           [--seeds 5] [--batches 64,512] [--sections speed,ablations,seeds]

Prints markdown tables (pasted into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics

import torch

from bench.common import machine
from training.select import (
    SelectConfig,
    brute_force_allocation,
    build_tables,
    gaussian_batch,
    gradient_pass,
    greedy_allocations,
    select,
)
from zoo import get_space
from zoo.official import OFFICIAL_PREFERRED

GOALS_S = {"autoformer-tiny": 20, "autoformer-small": 90, "autoformer-base": 180}
OFFICIAL_S = {"autoformer-tiny": "≈43 s (77 subnets/s)", "autoformer-small": "≈28 min (35 subnets/s)",
              "autoformer-base": "n/a"}


def speed_and_official(spaces: list[str]) -> None:
    print("### Speed (data-free batch 64, seed 0, gradient pass included)\n")
    print("| space | representatives | gradient pass s | score tables s | representatives + buckets s "
          "| scoring s (goal ≤ 2) | total s (goal) | archs/s scored | official code, same cores |")
    print("|---|---|---|---|---|---|---|---|---|")
    sels = {}
    for name in spaces:
        sel = select(SelectConfig(get_space(name), progress=False))
        s = sel.seconds
        sels[name] = sel
        print(f"| {name} | {len(sel.candidates):,} | {s['gradient_pass']:.1f} | {s['tables']:.2f} | "
              f"{s['representatives_and_buckets']:.2f} | {s['scoring_total']:.2f} | {s['total']:.1f} "
              f"(≤ {GOALS_S.get(name, '-')}) | {len(sel.candidates) / s['scoring_total']:,.0f} | "
              f"{OFFICIAL_S.get(name, '-')} |")
    for name, sel in sels.items():
        if name not in OFFICIAL_PREFERRED:
            continue
        print(f"\n### {name}: ours vs official, per bucket\n")
        print("| bucket | who | E | L | params | heads | MLP ratios |")
        print("|---|---|---|---|---|---|---|")
        official = {e.bucket: e for e in OFFICIAL_PREFERRED[name]}
        same_el = same_exact = 0
        for (lo, hi), best in zip(sel.config.buckets.edges(), sel.preferred, strict=True):
            key = round(hi / 1e6)
            ours = best[0].arch if best else None
            off = official.get(key)
            for who, arch, p in (("ours", ours, best[0].params if best else None),
                                 ("official", off.arch if off else None, off.params_m * 1e6 if off else None)):
                if arch is None:
                    print(f"| [{lo / 1e6:g}, {hi / 1e6:g})M | {who} | – | – | – | (empty) | |")
                else:
                    print(f"| [{lo / 1e6:g}, {hi / 1e6:g})M | {who} | {arch.embed_dim} | {arch.depth} | "
                          f"{p / 1e6:.3f}M | {','.join(map(str, arch.num_heads))} | "
                          f"{','.join(f'{r:g}' for r in arch.mlp_ratios)} |")
            if ours and off:
                same_el += (ours.embed_dim, ours.depth) == (off.arch.embed_dim, off.arch.depth)
                same_exact += ours == off.arch
        print(f"\nOverlap: {same_el}/{len(official)} buckets with the same (embed, depth); "
              f"{same_exact}/{len(official)} identical architectures.")


def greedy_vs_brute_force(space_name: str, seeds: int) -> None:
    space = get_space(space_name)
    print(f"\n### Greedy (Algorithm 1) vs brute force on `{space_name}` (three choices per layer)\n")
    print("| proxy | groups checked | greedy = brute-force optimum | mean shortfall when not |")
    print("|---|---|---|---|")
    for proxy in ("snip-normalised", "snip"):
        equal = total = 0
        gaps = []
        for seed in range(seeds):
            tables = _tables(space, proxy, seed)
            for prefix_all in (tables.heads, tables.mlp):
                for L in space.depths:
                    prefix = prefix_all[:L]
                    for k, alloc in enumerate(greedy_allocations(prefix)):
                        got = float(sum(prefix[i, a] for i, a in enumerate(alloc)))
                        _, best = brute_force_allocation(prefix, k)
                        total += 1
                        if got >= best * (1 - 1e-12):
                            equal += 1
                        else:
                            gaps.append((best - got) / best)
        gap = f"{statistics.mean(gaps) * 100:.3f}% of the optimum" if gaps else "–"
        print(f"| {proxy} | {total} | {equal}/{total} ({equal / total:.1%}) | {gap} |")


@functools.lru_cache(maxsize=16)
def _grads(space_name: str, seed: int):
    space = get_space(space_name)
    return gradient_pass(space, seed, (gaussian_batch(space, 64, torch.Generator().manual_seed(seed)), None))


def _tables(space, proxy, seed):
    return build_tables(space, *_grads(space.name, seed), proxy)


def bottom_share(alloc: tuple[int, ...]) -> float | None:
    """Share of the added units that sit in the lower half of the layers (middle layer: half)."""
    units = sum(alloc)
    if units == 0:
        return None
    L = len(alloc)
    low = sum(a for i, a in enumerate(alloc) if i < L // 2) + (alloc[L // 2] / 2 if L % 2 else 0)
    return low / units


def wide_low(space_names: list[str], seeds: int) -> None:
    print("\n### Appendix-A effect: how often step 1 picks wide-low isomers\n")
    print("Bottom share = fraction of a representative's added heads / MLP units that sit in the lower half "
          "of its layers (0.5 = balanced). Wide-low = bottom share > 0.5. Over every non-trivial isomer "
          f"representative (all depths, all totals except none/all), {seeds} seeds.\n")
    print("| space | proxy | representatives | wide-low | wide-high | balanced | mean bottom share |")
    print("|---|---|---|---|---|---|---|")
    for name in space_names:
        space = get_space(name)
        for proxy in ("snip", "snip-normalised"):
            shares = []
            for seed in range(seeds):
                tables = _tables(space, proxy, seed)
                for prefix_all in (tables.heads, tables.mlp):
                    for L in space.depths:
                        allocs = greedy_allocations(prefix_all[:L])
                        shares += [bottom_share(a) for a in allocs[1:-1]]
            n = len(shares)
            low = sum(s > 0.5 for s in shares)
            high = sum(s < 0.5 for s in shares)
            print(f"| {name} | {proxy} | {n} | {low / n:.1%} | {high / n:.1%} | {(n - low - high) / n:.1%} | "
                  f"{statistics.mean(shares):.3f} |")


def picks(space_name: str, seed: int, batch: int) -> dict[float, object]:
    """Bucket upper edge -> the arch the selector picks there with this seed and data-free batch size."""
    sel = select(SelectConfig(get_space(space_name), seed=seed, batch_size=batch, progress=False))
    return {hi: best[0].arch for (_, hi), best in zip(sel.config.buckets.edges(), sel.preferred, strict=True) if best}


def agreement(a, b) -> tuple[bool, bool, float | None]:
    """Identical? Same (embed, depth)? If so, the share of per-layer head and ratio choices that agree."""
    same_el = (a.embed_dim, a.depth) == (b.embed_dim, b.depth)
    layers = None
    if same_el:
        equal = sum(x == y for x, y in zip(a.num_heads + a.mlp_ratios, b.num_heads + b.mlp_ratios, strict=True))
        layers = equal / (2 * a.depth)
    return a == b, same_el, layers


def summarise(pairs: list[tuple]) -> str:
    scores = [agreement(a, b) for a, b in pairs]
    layer = [x[2] for x in scores if x[2] is not None]
    return (f"{statistics.mean(x[0] for x in scores):.0%} | {statistics.mean(x[1] for x in scores):.0%} | "
            + (f"{statistics.mean(layer):.0%}" if layer else "–"))


def seed_overlap(space_names: list[str], seeds: int, batches: list[int]) -> None:
    """Are our picks' differences from the official sets seed noise? Compare with how our own seeds differ."""
    print(f"\n### Our picks across {seeds} seeds vs the official sets\n")
    print("Per bucket, pairs of picks: among our seeds (all seed pairs), and each of our seeds against the "
          "official pick. identical = same architecture; same E, L = same embed and depth; layers = share of per-layer "
          "head and MLP-ratio choices that agree, over the pairs with the same E and L.\n")
    print("| space | data-free batch | buckets | seeds: identical | seeds: same E, L | seeds: layers "
          "| vs official: identical | vs official: same E, L | vs official: layers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch in itertools.product(space_names, batches):
        runs = [picks(name, seed, batch) for seed in range(seeds)]
        official = {e.bucket: e.arch for e in OFFICIAL_PREFERRED.get(name, [])}
        buckets = [hi for hi in runs[0] if round(hi / 1e6) in official]
        ours = [(r[hi], q[hi]) for hi in buckets for r, q in itertools.combinations(runs, 2)]
        theirs = [(r[hi], official[round(hi / 1e6)]) for hi in buckets for r in runs]
        print(f"| {name} | {batch} | {len(buckets)} | {summarise(ours)} | {summarise(theirs)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="autoformer-tiny,autoformer-small,autoformer-base")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batches", default="64", help="data-free batch sizes for the seeds study, e.g. 64,512")
    ap.add_argument("--sections", default="speed,ablations,seeds")
    args = ap.parse_args()
    sections, spaces = args.sections.split(","), args.spaces.split(",")
    print(f"machine: {machine()}\n")
    if "speed" in sections:
        speed_and_official(spaces)
    if "ablations" in sections:
        greedy_vs_brute_force("mini", args.seeds)
        wide_low(["mini", "autoformer-tiny"], args.seeds)
    if "seeds" in sections:
        seed_overlap(spaces, args.seeds, [int(b) for b in args.batches.split(",")])


if __name__ == "__main__":
    main()
