"""The one-shot recipe, ablated (issue 23, item 3): which parts of OFA's and BigNAS's recipe pay on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_recipe [--space mbconv-small] [--seeds 0,1,2] [--epochs 2]
        [--conditions base,all,-distill,-crop,-erasing,-ema] [--archs 8] [--jobs 2] [--out runs/recipe]

Every supernet trains on the whole space (uniform sampling with the sandwich rule: largest + smallest + one random
path per step; batch 128, AdamW lr 2e-3 with the trainer's warm-up and cosine, label smoothing 0.1, flips, no drop
path) for `--epochs`, and the conditions differ only in the four parts under test (`PARTS`): in-place distillation,
2-pixel random crops, random erasing (probability 0.25), and a weight average (EMA; decay 0.99 here, a horizon of
about a tenth of a 2-epoch run, since torch's average has no warm-up). `base` has none of them, `all` every one,
`-X` all but X, `+X` base and X: equal steps everywhere; `C@KNOB` is condition C with a change of the recipe itself,
`C@KNOB@KNOB` with two (`KNOBS`: `paths2` trains two random paths per step beside the extremes, as BigNAS does;
`lr5e-3`, `lr1e-2`, `lr2e-2` raise the peak learning rate). Each supernet is scored on the same archs, the space's
smallest and largest and `--archs` random ones (drawn once, seed 1234), each path's BatchNorm recalibrated on the
run's 2,048 calibration images: top-1 on the 5,000 images its training held out (the recipe is chosen on
validation). Seeds are the replicates: per condition the mean over archs, one value per seed.

Resumable (each supernet is a training run under `--out`, checkpointed; a finished one keeps result.json); `--jobs N`
trains N side by side, one thread each; `--collect` writes the raw file from the finished ones without training.
Raw results: bench/data/recipe/SPACE.json (per condition and seed: each arch's val top-1, the training seconds, which
count from the last resume); its table comes from `python -m bench report`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from bench.common import machine
from bench.report import DATA
from training.config import TrainConfig
from training.evaluate import load_supernet
from training.pick import validation_fitness
from training.train import train
from zoo.family import space_by_name
from zoo.io import atomic_write_text

PARTS = {"distill": {"distill": True}, "crop": {"crop_padding": 2}, "erasing": {"random_erasing": 0.25},
         "ema": {"ema": 0.99}}
# recipe changes tried on top of a condition: BigNAS's two random paths per step, higher peak learning rates
KNOBS = {"paths2": {"sandwich": 2}, "lr5e-3": {"lr": 5e-3}, "lr1e-2": {"lr": 1e-2}, "lr2e-2": {"lr": 2e-2}}
RECIPE = dict(sampler="uniform", sandwich=1, batch_size=128, lr=2e-3, drop_path=0.0, label_smoothing=0.1)
ARCH_SEED = 1234


def settings(condition: str) -> dict:
    """The trainer settings of a condition: base, all, -PART or +PART, then any @KNOBs (changes of the recipe
    itself, e.g. `all@paths2` or `all@lr1e-2@paths2`)."""
    parts_of, *knobs = condition.split("@")
    if parts_of in ("base", "all"):
        parts = [] if parts_of == "base" else list(PARTS)
    elif parts_of[:1] in "+-" and parts_of[1:] in PARTS:
        parts = [parts_of[1:]] if parts_of[0] == "+" else [p for p in PARTS if p != parts_of[1:]]
    else:
        raise ValueError(f"condition {condition!r}: give base, all, -PART or +PART (parts: {', '.join(PARTS)}), "
                         f"optionally @KNOB (knobs: {', '.join(KNOBS)})")
    for knob in knobs:
        if knob not in KNOBS:
            raise ValueError(f"condition {condition!r}: no knob {knob!r} (knobs: {', '.join(KNOBS)})")
    return {k: v for p in parts for k, v in PARTS[p].items()} | {k: v for knob in knobs for k, v in KNOBS[knob].items()}


def scored_archs(space_name: str, n: int) -> list:
    """The smallest and largest arch of the space and `n` random ones, the same for every condition."""
    family, space = space_by_name(space_name)
    rng = random.Random(ARCH_SEED)
    archs = [*family.extreme_archs(space), *(family.random_arch(space, rng) for _ in range(n))]
    return list(dict.fromkeys(archs))


@dataclass(frozen=True)
class Job:
    space: str
    condition: str
    seed: int
    epochs: float
    archs: int
    out: str


def run(job: Job) -> dict:
    """Train (or resume) one supernet and score the archs; the result is kept beside the run."""
    torch.set_num_threads(1)
    out = Path(job.out)
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    cfg = TrainConfig(out=str(out), space=job.space, epochs=job.epochs, seed=job.seed, progress=False,
                      **(RECIPE | settings(job.condition)))
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    supernet = load_supernet(out / "supernet.safetensors")
    fitness, words = validation_fitness(cfg, supernet, 0)
    family, space = space_by_name(job.space)
    rows = [{"id": a.id, "params": family.params(space, a), "val_top1": fitness(a)}
            for a in scored_archs(job.space, job.archs)]
    # a resumed run's seconds count from the resume
    result = {**asdict(job), "settings": settings(job.condition), "train_seconds": round(seconds, 1),
              "metric": words, "rows": rows}
    atomic_write_text(done, json.dumps(result, indent=1))
    return result


def write_raw(path: Path, results: list[dict], args: argparse.Namespace, command: str) -> None:
    doc = {"study": "recipe", "command": command, "machine": machine(),
           "space": args.space, "epochs": args.epochs, "recipe": RECIPE, "parts": PARTS, "knobs": KNOBS,
           "results": sorted(results, key=lambda r: (r["condition"], r["seed"]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv-small")
    ap.add_argument("--conditions", default="base,all,-distill,-crop,-erasing,-ema")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--archs", type=int, default=8, help="random archs scored beside the two extremes")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/recipe"))
    ap.add_argument("--raw", type=Path, help="raw results file (default: bench/data/recipe/SPACE.json)")
    ap.add_argument("--collect", action="store_true",
                    help="train nothing: write the raw file from the supernets already finished under --out")
    args = ap.parse_args(argv)
    command = "python -m bench.bench_recipe " + " ".join(sys.argv[1:] if argv is None else argv)
    conditions = args.conditions.split(",")
    for c in conditions:
        settings(c)  # refuses an unknown condition before any work
    jobs = [Job(args.space, c, int(s), args.epochs, args.archs, str(args.out / f"{c}-s{s}"))
            for s in args.seeds.split(",") for c in conditions]
    raw = args.raw or DATA / "recipe" / f"{args.space}.json"
    if args.collect:
        done = [Path(job.out) / "result.json" for job in jobs]
        results = [json.loads(path.read_text()) for path in done if path.is_file()]
        write_raw(raw, results, args, command)
        print(f"wrote {raw}: {len(results)} of {len(jobs)} supernets finished")
        return 0
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for result in pool.map(run, jobs):
            results.append(result)
            mean = sum(r["val_top1"] for r in result["rows"]) / len(result["rows"])
            print(f"[{result['condition']} s{result['seed']}] mean val top-1 {mean:.2f}% over "
                  f"{len(result['rows'])} archs, {result['train_seconds']:.0f} s training", flush=True)
            write_raw(raw, results, args, command)
    print(f"wrote {raw}; tables: python -m bench report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
