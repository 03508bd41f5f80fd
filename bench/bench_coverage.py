"""Why some HyTra paths score near chance through a uniformly trained supernet: a module trained in almost no step.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_coverage --runs runs/hytra-uniform runs/hytra-sandwich \
        [--max-params 80000] [--random 50] [--val-images 2000] [--seed 0] [--out bench/data/coverage/NAME.json]
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_coverage --runs runs/hytra-option-balanced --add

Micro-HyTra holds one input projection and shortcut per (layer, scale, op, input mode) and one head per end scale
(`zoo.families.hytra.HyTraSupernet`). Uniform sampling draws one of the space's 3,587 paths a step, and a path that
stays at S0 for long is one of few: the all-S0 path's S0 head is on no other path, so it is trained in about 1 step
of 3,587. Each scored path gets its **rarest module's step share** under its run's sampler (the fraction of training
steps that run that module: its share of the uniformly drawn paths; 1 if the sandwich's largest or smallest path runs
it; with k sampled paths a step, 1 − (1 − share)^k; under another sampler, such as `option-balanced`, counted over
the run's steps replayed) and its **one-shot score** through that run's supernet
(`training.pick.validation_fitness`, each path's BatchNorm recalibrated: what `pick` and ENAS search on).

The paths, the same for every run: every path of at most `--max-params` parameters (the ENAS buckets that searches
could not fill) and `--random` more drawn uniformly from the rest (seed `--seed`); `--add` scores more runs on the
paths a raw file holds and adds them to it. Renderer `coverage` of
`python -m bench report`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bench.common import bootstrap, machine, spearman
from bench.report import DATA
from training.config import TrainConfig
from training.evaluate import load_supernet
from training.pick import validation_fitness
from training.train import path_sampler
from zoo.families.hytra import HyTraArch, HyTraSupernet, all_archs, extreme_archs, params
from zoo.family import get_family
from zoo.io import atomic_write_text


def modules_of(supernet: HyTraSupernet) -> Callable[[HyTraArch], set[str]]:
    """A path's parameter-holding modules (the stem, each layer's three, its head), by name in `supernet`."""
    names = {id(m): n for n, m in supernet.named_modules()}

    def path_modules(arch: HyTraArch) -> set[str]:
        stem, layers, head = supernet.path(arch)
        return {names[id(m)] for m in (stem, head, *(part for layer in layers for part in layer))
                if next(m.parameters(), None) is not None}
    return path_modules


def step_shares(supernet: HyTraSupernet, cfg: TrainConfig, steps: int) -> dict[str, float]:
    """Each module's share of the training steps that run it, under the run's sampler: expected under uniform
    sampling (maybe sandwiched), counted over the run's `steps` draws (replayed: a sampler is a function of the step)
    under any other."""
    if not isinstance(supernet, HyTraSupernet) or cfg.sampler.startswith("preferred"):
        raise SystemExit(f"{cfg.out}: a {cfg.sampler} {cfg.space} run; step shares are worked out for HyTra "
                         "supernets trained on the whole space only")
    paths, path_modules = all_archs(supernet.space), modules_of(supernet)
    if cfg.sampler != "uniform":
        sample = path_sampler(cfg, get_family(supernet.space.family), supernet.space)
        counts = Counter(name for step in range(steps) for name in set().union(*map(path_modules, sample(step))))
        return {name: counts[name] / steps for name in set().union(*map(path_modules, paths))}
    counts = Counter(name for arch in paths for name in path_modules(arch))
    if cfg.sandwich < 0:  # one uniformly drawn path a step
        return {name: c / len(paths) for name, c in counts.items()}
    always = set().union(*(path_modules(a) for a in extreme_archs(supernet.space)))
    return {name: 1.0 if name in always else 1 - (1 - c / len(paths)) ** cfg.sandwich for name, c in counts.items()}


def scored_paths(space, max_params: int, n_random: int, seed: int) -> list[HyTraArch]:
    sized = [(a, params(space, a)) for a in all_archs(space)]
    small = [a for a, n in sized if n <= max_params]
    rest = [a for a, n in sized if n > max_params]
    return small + random.Random(seed).sample(rest, min(n_random, len(rest)))


def measure(run: Path, supernet: HyTraSupernet, archs: list[HyTraArch], val_images: int) -> dict:
    cfg = TrainConfig.load(run / "config.json")
    steps = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"]
    shares, path_modules = step_shares(supernet, cfg, steps), modules_of(supernet)
    fitness, words = validation_fitness(cfg, supernet, val_images)
    t0 = time.perf_counter()
    scores = [fitness(a) for a in archs]
    print(f"{run}: {len(archs)} paths scored in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"run": str(run), "config": asdict(cfg), "steps": steps, "one_shot": words,
            "rarest_share": [min(shares[m] for m in path_modules(a)) for a in archs], "score": scores}


BINS = ((0, 10), (10, 100), (100, 1000), (1000, float("inf")))  # the rarest module's expected training steps


def _steps(lo: float, hi: float) -> str:
    return f"> {lo:,.0f}" if hi == float("inf") else f"{lo:,.0f}–{hi:,.0f}" if lo else f"< {hi:,.0f}"


def tables(raw: dict) -> str:
    """Paths grouped by their rarest module's expected training steps in the first run; per run, those steps and
    the one-shot scores of the same paths; the small paths one by one; then, per run, Spearman rho of the score with
    that share and with params (95% bootstrap intervals over the paths)."""
    paths, runs = raw["paths"], raw["runs"]
    steps = [[share * run["steps"] for share in run["rarest_share"]] for run in runs]
    names = [Path(run["run"]).name for run in runs]
    lines = [f"`{raw['space']}`: {len(paths)} paths, each scored through every supernet: every path of at most "
             f"{raw['max_params']:,} params ({sum(p['params'] <= raw['max_params'] for p in paths)}) and "
             f"{sum(p['params'] > raw['max_params'] for p in paths)} drawn uniformly from the rest. Groups by the "
             f"expected training steps of each path's rarest module in `{names[0]}`.", "",
             "| rarest module's steps in " + names[0] + " | paths | params | "
             + " | ".join(f"{n}: rarest module's steps (median) | {n}: one-shot top-1 median [min, max]"
                          for n in names) + " |",
             "|---|---:|---|" + "---:|---|" * len(runs)]
    for lo, hi in BINS:
        group = [i for i, s in enumerate(steps[0]) if lo <= s < hi]
        if not group:
            continue
        size = [paths[i]["params"] for i in group]
        cells = []
        for run, st in zip(runs, steps, strict=True):
            score = [run["score"][i] for i in group]
            cells.append(f"{statistics.median(st[i] for i in group):,.0f} | {statistics.median(score):.1f} "
                         f"[{min(score):.1f}, {max(score):.1f}]")
        lines.append(f"| {_steps(lo, hi)} | {len(group)} | {min(size) / 1e3:.0f}K–{max(size) / 1e3:.0f}K | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Each path of at most {raw['max_params']:,} params:", "",
              "| path | params | " + " | ".join(f"{n}: rarest module's steps | {n}: one-shot top-1" for n in names)
              + " |", "|---|---:|" + "---:|---:|" * len(runs)]
    for i in sorted((i for i, p in enumerate(paths) if p["params"] <= raw["max_params"]),
                    key=lambda i: (paths[i]["params"], paths[i]["layers"])):
        lines.append(f"| {paths[i]['layers']} | {paths[i]['params']:,} | "
                     + " | ".join(f"{st[i]:,.1f} | {run['score'][i]:.1f}" for run, st in zip(runs, steps, strict=True))
                     + " |")
    lines += ["", "| run | steps | sampler | Spearman ρ (score, rarest share) [95%] | "
              "Spearman ρ (score, params) [95%] |", "|---|---:|---|---|---|"]
    size = [p["params"] for p in paths]
    for run, name in zip(runs, names, strict=True):
        cfg = run["config"]
        rho = []
        for x in (run["rarest_share"], size):
            ci = bootstrap(x, run["score"])["rho"]
            rho.append(f"{spearman(x, run['score']):+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]")
        sampler = cfg["sampler"] + (f", sandwich (largest + smallest + {cfg['sandwich']})" if cfg["sandwich"] >= 0
                                    else "")
        lines.append(f"| {name} | {run['steps']:,} | {sampler} | {rho[0]} | {rho[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="HyTra supernet run folders")
    ap.add_argument("--max-params", type=int, default=80_000, help="every path up to this many params is scored")
    ap.add_argument("--random", type=int, default=50, help="paths drawn uniformly from the rest")
    ap.add_argument("--val-images", type=int, default=2000, help="held-out images per one-shot score")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random paths")
    ap.add_argument("--out", type=Path, default=DATA / "coverage" / "micro-hytra.json")
    ap.add_argument("--add", action="store_true",
                    help="score the runs on the paths --out holds and add them to its runs (its runs' folders may be "
                         "gone: their scores are kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m bench.bench_coverage " + " ".join(sys.argv[1:] if argv is None else argv)
    supernets = [load_supernet(run / "supernet.safetensors") for run in args.runs]
    space = supernets[0].space
    if args.add:
        doc = json.loads(args.out.read_text())
        if doc["space"] != space.name:
            raise SystemExit(f"{args.out} scores paths of {doc['space']}, not of {space.name}")
        by_id = {a.id: a for a in all_archs(space)}
        archs = [by_id[p["id"]] for p in doc["paths"]]
        doc["command"] += f"; {command}"
    else:
        archs = scored_paths(space, args.max_params, args.random, args.seed)
        doc = {"kind": "coverage", "space": space.name, "machine": machine(), "command": command,
               "max_params": args.max_params,
               "paths": [{"id": a.id, "layers": a.describe(), "params": params(space, a)} for a in archs], "runs": []}
    doc["runs"] += [measure(run, supernet, archs, args.val_images)
                    for run, supernet in zip(args.runs, supernets, strict=True)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
