"""Slicing overhead: a supernet training step vs a fixed ViT of the same arch, side by side.

    .venv/bin/python -m bench.bench_supernet [--space mini] [--batch 128] [--rounds 7]

Goal (issue 2): the sliced supernet step is at most 10% slower than the fixed model's.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import interleaved, machine, median
from zoo import Arch, ViT, ViTSupernet, get_space


def train_step(model, opt, x, y, arch=None):
    logits = model(x) if arch is None else model(x, arch)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mini")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    space = get_space(args.space)
    d_mid = space.depths[len(space.depths) // 2]
    mid = Arch(space.embed_dims[len(space.embed_dims) // 2], d_mid,
               tuple(space.num_heads[i % len(space.num_heads)] for i in range(d_mid)),
               tuple(space.mlp_ratios[(i + 1) % len(space.mlp_ratios)] for i in range(d_mid)))
    x = torch.randn(args.batch, space.in_chans, space.img_size, space.img_size)
    y = torch.randint(0, space.num_classes, (args.batch,))
    print(f"machine: {machine()}\nspace {space.name}, batch {args.batch}, "
          f"{args.rounds} interleaved rounds x {args.reps} steps (fwd + bwd + AdamW)\n")
    print(f"{'arch':<42} {'fixed img/s':>12} {'supernet img/s':>15} {'supernet slower by':>19}")
    for arch in (space.largest_arch(), mid, space.smallest_arch()):
        supernet = ViTSupernet(space).train()
        fixed = supernet.extract(arch).train()
        assert isinstance(fixed, ViT)
        opt_s = torch.optim.AdamW(supernet.parameters(), lr=1e-3)
        opt_f = torch.optim.AdamW(fixed.parameters(), lr=1e-3)
        t = interleaved({"fixed": lambda m=fixed, o=opt_f: train_step(m, o, x, y),
                         "supernet": lambda m=supernet, o=opt_s, a=arch: train_step(m, o, x, y, a)},
                        rounds=args.rounds, reps=args.reps)
        tf, ts = median(t["fixed"]), median(t["supernet"])
        print(f"{arch.describe()[:42]:<42} {args.batch / tf:>12.0f} {args.batch / ts:>15.0f} "
              f"{(ts / tf - 1) * 100:>18.1f}%")


if __name__ == "__main__":
    main()
