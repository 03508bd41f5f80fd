"""Can the MBConv supernet's training step run faster on this CPU without changing what it learns? Side by side, one
training step (forward, backward, AdamW) of the space's largest path, which takes 60-70% of a sandwich step:

- `eager fp32`: as `python -m training train` runs it;
- `bf16 autocast`: `torch.autocast("cpu", torch.bfloat16)` around the forward (this CPU has AMX-BF16 tiles);
- `torch.compile`: inductor's generated kernels (its compile time is left out of the timed rounds).

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.bench_step_speed [--space mbconv-small] [--threads 2] [--rounds 5]
        [--reps 4] [--out bench/data/step-speed/mbconv-small.json]

Prints each variant's median ms per step and its speed relative to eager fp32; the raw file keeps every round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import interleaved, machine, median
from bench.report import DATA
from zoo.family import space_by_name
from zoo.io import atomic_write_text


def stepper(model, arch, x, y, bf16: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x, arch)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv-small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="default: bench/data/step-speed/SPACE.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    family, space = space_by_name(args.space)
    largest = family.extreme_archs(space)[1]
    x = torch.randn(args.batch, space.in_chans, space.img_size, space.img_size)
    y = torch.randint(0, space.num_classes, (args.batch,))
    models = {name: family.supernet(space).train() for name in ("eager fp32", "bf16 autocast", "torch.compile")}
    t0 = time.perf_counter()
    compiled = torch.compile(models["torch.compile"])
    steps = {"eager fp32": stepper(models["eager fp32"], largest, x, y, False),
             "bf16 autocast": stepper(models["bf16 autocast"], largest, x, y, True),
             "torch.compile": stepper(compiled, largest, x, y, False)}
    steps["torch.compile"]()
    compile_seconds = time.perf_counter() - t0
    times = interleaved(steps, rounds=args.rounds, reps=args.reps)
    base = median(times["eager fp32"])
    print(f"machine: {machine()}\n{space.name} largest path ({family.params(space, largest):,} params), batch "
          f"{args.batch}, {args.rounds} interleaved rounds x {args.reps} steps; torch.compile's first step "
          f"{compile_seconds:.0f} s\n\n| variant | median ms per step | speed vs eager fp32 |\n|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {median(t) * 1e3:.0f} | {base / median(t):.2f}x |")
    out = args.out or DATA / "step-speed" / f"{space.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "step-speed", "space": space.name, "machine": machine(), "batch": args.batch,
           "command": "python -m bench.bench_step_speed " + " ".join(sys.argv[1:] if argv is None else argv),
           "compile_seconds": round(compile_seconds, 1), "seconds_per_step": times}
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
