"""Does a bigger budget buy a measurably better model? Each entry of a zoo on the test set, with its 95% interval,
and each step along the Pareto front tested against the step below it on the *same* images (paired: McNemar's exact
test and a 95% interval of the accuracy difference), so that a rise is told apart from test-set noise.

    .venv/bin/python -m bench.bench_tradeoff [--zoo zoos/ladder-fmnist] [--plot bench/default-zoo-pareto.png]
"""

from __future__ import annotations

import argparse
import math

import torch

from bench.common import machine
from export.hf import pareto_plot
from training.data import load_data
from training.evaluate import tensor_batches
from zoo.stats import Z95, wilson_interval
from zoo.store import DEFAULT_ZOO, Zoo


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: of the b + c images the two models disagree on, is b vs c a fair coin?"""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(right_big: torch.Tensor, right_small: torch.Tensor) -> tuple[float, float, float, float]:
    """(difference in pp, its 95% interval low and high, McNemar p) of two models' per-image correctness."""
    n = len(right_big)
    b = int((~right_big & right_small).sum())  # only the smaller one right
    c = int((right_big & ~right_small).sum())  # only the bigger one right
    diff = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    return 100 * diff, 100 * (diff - Z95 * se), 100 * (diff + Z95 * se), mcnemar_p(b, c)


@torch.inference_mode()
def correctness(zoo: Zoo, batches) -> dict[str, torch.Tensor]:
    """Per entry, which test images its standalone subnet gets right."""
    out = {}
    for entry in zoo.entries:
        model = zoo.subnet(entry).eval()
        out[entry.id] = torch.cat([model(x).argmax(1) == y for x, y in batches])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=str(DEFAULT_ZOO))
    ap.add_argument("--plot", default="bench/default-zoo-pareto.png")
    args = ap.parse_args()
    zoo = Zoo.load(args.zoo)
    pre = zoo.preprocessing
    test, _ = load_data("fashion-mnist", "test", img_size=pre["img_size"], in_chans=pre["in_chans"])
    right = correctness(zoo, tensor_batches(test, 1000))
    n = len(test)
    front = {e.id for e in zoo.pareto("params")}
    print(f"zoo {zoo.name}: {len(zoo.entries)} entries, {n:,} test images; machine: {machine()}\n")
    print("| entry | params | MACs | test top-1 (95% interval) | zoo.json top-1 | on the front | vs the front entry "
          "below: Δ pp (95% interval), McNemar p |")
    print("|---|---|---|---|---|---|---|")
    below = None
    for e in sorted(zoo.entries, key=lambda e: e.params):
        top1 = 100 * float(right[e.id].float().mean())
        lo, hi = wilson_interval(top1, n)
        step = ""
        if e.id in front:
            if below is not None:
                d, dlo, dhi, p = paired_difference(right[e.id], right[below])
                step = f"{d:+.2f} ({dlo:+.2f}, {dhi:+.2f}), p = {p:.2g}"
            below = e.id
        print(f"| {e.id} | {e.params:,} | {e.flops / 1e6:.2f}M | {top1:.2f} ({lo:.2f}–{hi:.2f}) | {e.top1:.2f} | "
              f"{'yes' if e.id in front else ''} | {step} |")
    smallest, largest = min(zoo.entries, key=lambda e: e.params), max(zoo.entries, key=lambda e: e.params)
    d, dlo, dhi, p = paired_difference(right[largest.id], right[smallest.id])
    print(f"\nLargest minus smallest ({largest.id} vs {smallest.id}): {d:+.2f} pp (95% interval {dlo:+.2f} to "
          f"{dhi:+.2f}), McNemar p = {p:.2g}.")
    print(f"wrote {pareto_plot(zoo, args.plot)}")


if __name__ == "__main__":
    main()
