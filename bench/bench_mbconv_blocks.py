"""What each MBConv block choice costs on this machine, as ratios against a dense 3x3 conv measured beside it.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_mbconv_blocks [--space mbconv-fmnist] [--batch 128]
        [--rounds 2] [--reps 1] [--ort-runs 200] [--contiguous]

Per stage of the space (its middle width choice, its resolution), every block a slot may hold, every op even where the
space leaves it out, as a later block of the stage runs it (input = output width, stride 1, a residual): training time
(forward + backward, `--batch` images, channels-last as the family trains; with --contiguous also NCHW-contiguous) and
ONNX Runtime batch-1 latency (one thread), each divided by the same measure of a dense 3x3 conv + BN + ReLU at the
same width and resolution, measured in the same interleaved rounds: the machine may be shared, so only ratios are
comparable between runs. `MACs ratio` is the block's multiply-accumulates over the conv's; `train/MAC` is the train
ratio over the MAC ratio, what one MAC of the block costs against one of the dense conv in training (> 1: slower).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from bench.common import interleaved, machine, median
from zoo.families.mbconv.layers import Placed, block_cost, slot_blocks
from zoo.families.mbconv.model import MBBlock, MBConvSupernet
from zoo.families.mbconv.sampling import random_arch
from zoo.families.mbconv.space import BUILTIN_SPACES, OPS, MBConvSpace

REFERENCE = "dense 3x3 conv"


class DenseConv(nn.Sequential):
    """The reference: conv 3x3 (same width in and out), BN, ReLU."""

    def __init__(self, width: int) -> None:
        super().__init__(nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())


def width_of(space: MBConvSpace, stage: int) -> int:
    """The stage's middle width choice (mbconv-fmnist's give a dense 3x3 conv of 4.06M MACs at every stage)."""
    return space.widths[stage][len(space.widths[stage]) // 2]


def candidates(space: MBConvSpace, stage: int) -> dict[str, tuple[nn.Module, int]]:
    """The reference and every block choice at a later slot of `stage`, every op even where the space leaves it
    out: (module, MACs per image)."""
    width, side = width_of(space, stage), space.resolution(stage)
    out = {REFERENCE: (DenseConv(width), side**2 * width * width * 9)}
    for block in dataclasses.replace(space, ops=(OPS,) * space.num_stages).block_choices(stage):
        p = Placed(stage, 1, block, width, width, 1, side, side, space.se_reduction)
        out[block.describe()] = (MBBlock(p), block_cost(p)[1])
    return out


def train_step(module: nn.Module, x: torch.Tensor, *args):
    """Forward and backward of `module(x, *args)`."""
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x, *args).square().mean().backward()
    return step


def ort_session(module: nn.Module, x: torch.Tensor, folder: Path) -> ort.InferenceSession:
    path = folder / f"{id(module)}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_latency(sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int, runs: int
                ) -> dict[str, float]:
    """Median seconds per batch-1 run, over `rounds` interleaved rounds of `runs` runs each."""
    def run(session: ort.InferenceSession):
        return lambda: session.run(None, {"x": x})
    times = interleaved({k: run(s) for k, s in sessions.items()}, rounds=rounds, reps=runs, warmup=20)
    return {k: median(v) for k, v in times.items()}


def measure_stage(space: MBConvSpace, stage: int, args: argparse.Namespace, folder: Path) -> list[list]:
    width, side = width_of(space, stage), space.resolution(stage)
    modules = candidates(space, stage)
    x = torch.randn(args.batch, width, side, side)
    rows = {}
    formats = {"cl": torch.channels_last, **({"contig": torch.contiguous_format} if args.contiguous else {})}
    for fmt, memory in formats.items():
        xf = x.contiguous(memory_format=memory)
        for m, _ in modules.values():
            m.train().to(memory_format=memory)
        times = interleaved({k: train_step(m, xf) for k, (m, _) in modules.items()}, args.rounds, args.reps,
                            warmup=1)
        rows[fmt] = {k: median(v) for k, v in times.items()}
    sessions = {k: ort_session(m, torch.randn(1, width, side, side), folder) for k, (m, _) in modules.items()}
    latency = ort_latency(sessions, np.random.default_rng(0).standard_normal((1, width, side, side), np.float32),
                          args.rounds, args.ort_runs)
    ref_macs = modules[REFERENCE][1]
    out = []
    for k, (_, macs) in modules.items():
        train = rows["cl"][k] / rows["cl"][REFERENCE]
        contig = [f"{rows['contig'][k] / rows['contig'][REFERENCE]:.2f}", f"{rows['contig'][k] / rows['cl'][k]:.2f}"] \
            if args.contiguous else []
        out.append([f"{side}² w{width}", k, f"{macs / 1e6:.2f}M", f"{macs / ref_macs:.2f}", f"{train:.2f}", *contig,
                    f"{train / (macs / ref_macs):.2f}", f"{latency[k] / latency[REFERENCE]:.2f}"])
    print(f"  stage {stage}: {REFERENCE} {rows['cl'][REFERENCE] * 1e3:.1f} ms per train step (channels-last), "
          f"{latency[REFERENCE] * 1e6:.0f} µs ORT batch 1", flush=True)
    return out


def sharing(space: MBConvSpace, args: argparse.Namespace) -> list[str]:
    """OFA-style sharing against one weight per choice: the supernet's size under each, and what slicing costs a
    training step (the sliced supernet path against its extracted standalone net, interleaved)."""
    per_choice = sum(block_cost(dataclasses.replace(p, block=b))[0] for p in slot_blocks(space)
                     for b in space.block_choices(p.stage) if b.op == p.block.op)
    supernet = MBConvSupernet(space).train()
    lines = [f"block parameters of the supernet: {sum(block_cost(p)[0] for p in slot_blocks(space)):,} shared "
             f"(OFA: one weight per slot and op, kernels and expansions sliced) vs {per_choice:,} with one weight per "
             f"(slot, op, kernel, expansion, squeeze-excite) (widths still sliced)"]
    rng = random.Random(0)
    x = torch.randn(args.batch, space.in_chans, space.img_size, space.img_size)
    for arch in (random_arch(space, rng) for _ in range(args.archs)):
        times = interleaved({"supernet": train_step(supernet, x, arch),
                             "extracted": train_step(supernet.extract(arch).train(), x)}, args.rounds, args.reps,
                            warmup=1)
        sliced, plain = median(times["supernet"]), median(times["extracted"])
        lines.append(f"{arch.describe()}: supernet step {sliced * 1e3:.0f} ms, extracted {plain * 1e3:.0f} ms, "
                     f"slicing costs {sliced / plain - 1:+.0%}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv-fmnist", choices=sorted(BUILTIN_SPACES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--contiguous", action="store_true",
                    help="also train in the contiguous (NCHW) layout: its ratios, and its time over channels-last's")
    ap.add_argument("--ort-runs", type=int, default=200)
    ap.add_argument("--archs", type=int, default=3, help="random archs whose supernet step is timed")
    args = ap.parse_args()
    torch.manual_seed(0)
    space = BUILTIN_SPACES[args.space]
    print(f"machine: {machine()}, onnxruntime {ort.__version__}\nspace {space.name}; train: batch {args.batch}, "
          f"{args.rounds} interleaved rounds x {args.reps} steps (fwd + bwd); ORT: batch 1, {args.rounds} rounds x "
          f"{args.ort_runs} runs; medians, as ratios to the {REFERENCE} at the same width and resolution\n")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for s in range(space.num_stages) for row in measure_stage(space, s, args, Path(tmp))]
    headers = ["stage", "block", "MACs", "MACs ratio", "train (cl)",
               *(["train (contig)", "contig/cl"] if args.contiguous else []), "train/MAC", "ORT b1"]
    print("\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nweight sharing:\n" + "\n".join(f"  {line}" for line in sharing(space, args)))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
