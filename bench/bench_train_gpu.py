"""Supernet training throughput vs timm's VisionTransformer of the same largest arch, in one run (issues 4, 7).

    .venv/bin/python -m bench.bench_train_gpu [--space autoformer-tiny] [--batch 128] [--rounds 5] [--reps 10]
                                              [--compile] [--no-amp] [--device cuda]

Synthetic images at the space's size (224² for the AutoFormer spaces), AdamW, bf16 autocast on CUDA. Rows:
timm `VisionTransformer` with the space's largest arch (same embed, depth, heads, MLP ratio; but its attention is
embed wide rather than heads x head_dim, and it has no relative position, so on the AutoFormer spaces it does a
little less work than our supernet), our supernet at that largest arch, and our
supernet cycling through the preferred archs as `training train --sampler preferred` does (the official PreNAS
set for the AutoFormer spaces). With --compile each also runs under `torch.compile`. Images/s and ratio vs timm.
"""

from __future__ import annotations

import argparse
import itertools

import timm
import torch
import torch.nn.functional as F

from bench.common import interleaved, machine, median
from zoo import ViTSupernet, get_space
from zoo.official import OFFICIAL_PREFERRED


def timm_vit(space) -> torch.nn.Module:
    arch = space.largest_arch()
    return timm.models.VisionTransformer(
        img_size=space.img_size, patch_size=space.patch_size, in_chans=space.in_chans, num_classes=space.num_classes,
        embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads[0], mlp_ratio=arch.mlp_ratios[0],
        global_pool="avg", fc_norm=False)


def step_fn(model, x, y, amp: bool, archs=None):
    """One training step (forward, backward, AdamW) per call; with `archs`, the next arch of the cycle each call."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cycle = itertools.cycle(archs) if archs else None

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x) if cycle is None else model(x, next(cycle))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="autoformer-tiny")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also each model under torch.compile")
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    device, space = torch.device(args.device), get_space(args.space)
    amp = device.type == "cuda" and not args.no_amp
    preferred = [e.arch for e in OFFICIAL_PREFERRED.get(space.name, [])] or [space.largest_arch()]
    x = torch.randn(args.batch, space.in_chans, space.img_size, space.img_size, device=device)
    y = torch.randint(0, space.num_classes, (args.batch,), device=device)
    models = {"timm VisionTransformer (largest)": (timm_vit(space), None),
              "supernet @ largest": (ViTSupernet(space), [space.largest_arch()]),
              f"supernet, {len(preferred)} preferred archs": (ViTSupernet(space), preferred)}
    fns = {}
    for name, (model, archs) in models.items():
        model.to(device).train()
        fns[name] = step_fn(model, x, y, amp, archs)
        if args.compile:
            fns[name + " + compile"] = step_fn(torch.compile(model), x, y, amp, archs)
    print(f"machine: {machine()}" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
    print(f"space {space.name} at {space.img_size}², batch {args.batch}, {'bf16 autocast' if amp else 'fp32'}, "
          f"{args.rounds} interleaved rounds x {args.reps} steps (fwd + bwd + AdamW)\n")
    times = interleaved(fns, rounds=args.rounds, reps=args.reps, warmup=max(3, len(preferred)))
    base = median(next(iter(times.values())))
    print(f"| {'model':<48} | {'img/s':>8} | {'vs timm':>7} |\n|{'-' * 50}|{'-' * 10}:|{'-' * 9}:|")
    for name, t in times.items():
        print(f"| {name:<48} | {args.batch / median(t):>8.1f} | {base / median(t):>6.2f}x |")


if __name__ == "__main__":
    main()
