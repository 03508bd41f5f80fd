"""Concentration vs selection: what PreNAS's preferred training owes to *which* archs it trains and to training
*few* archs, with seeds as the replicates.

    .venv/bin/python -m bench.bench_prenas --out runs/prenas [--seeds 5] [--epochs 2] [--jobs 1]
        [--plot bench/prenas-concentration.png]

Per seed s (the selector's seed and the trainer's), four supernets on the `ladder` space, same recipe, same steps:
  preferred        the normalised-SNIP picks, PreNAS Eq. 11 sampler (uniform over (embed, depth) groups, then inside)
  preferred-plain  the same picks, uniform over the picks (the paper's Eq. 11 ablation)
  random-set       one random arch per bucket (drawn as the uniform sampler draws), Eq. 11 sampler
  uniform          AutoFormer-style: any arch of the space
Every supernet is scored on the 10k test images with inherited weights: the random-set one on its own archs, the
other three on the picks. Nothing is selected on the test set, so it is the right split for this comparison.
Contrasts, paired by seed and bucket: selection = preferred - random-set, concentration = preferred - uniform,
Eq. 11 = preferred - preferred-plain. Intervals are 95% t-intervals over the seeds (bucket means per seed are the
replicates of the overall line). Runs resume: a finished (seed, condition) is not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_selector_accuracy import random_archs
from bench.common import machine, mean_interval, t_half
from training.select import SelectConfig, select, write_selection
from zoo import flops, get_space, params
from zoo.io import atomic_write_figure, atomic_write_text

SPACE = "ladder"
CONDITIONS = {"preferred": ("preferred", "selected"), "preferred-plain": ("preferred-plain", "selected"),
              "random-set": ("preferred", "random"), "uniform": ("uniform", "selected")}  # sampler, archs scored
CONTRASTS = {"selection (preferred - random-set)": "random-set",
             "concentration (preferred - uniform)": "uniform",
             "Eq. 11 (balanced - plain sampler)": "preferred-plain"}
RECIPE = ["--data", "fashion-mnist", "--batch-size", "128", "--lr", "1e-3", "--min-lr", "1e-5", "--weight-decay",
          "0.05", "--label-smoothing", "0.1", "--drop-path", "0.1", "--ckpt-every", "500", "--no-progress"]


def write_sets(seed: int, out: Path) -> dict[str, Path]:
    """The seed's selected set, and a random set with one arch in each bucket the selector filled."""
    sel = select(SelectConfig(get_space(SPACE), seed=seed, progress=False))
    selected = write_selection(sel, out / "selected")
    doc = json.loads(selected.read_text())
    space = sel.config.space
    for k, bucket in enumerate(doc["buckets"]):
        if bucket["entries"]:
            (arch,) = random_archs(space, bucket["low"], bucket["high"], 1, seed=1_000 * seed + k)
            bucket["entries"] = [{"id": arch.id, "arch": arch.to_dict(), "params": params(space, arch),
                                  "flops": flops(space, arch), "score": None}]
    doc["selector"] = {"proxy": "random", "seed": seed}
    random_set = out / "random" / "preferred.json"
    random_set.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(random_set, json.dumps(doc, indent=1) + "\n")
    return {"selected": selected, "random": random_set}


def train_and_score(seed: int, condition: str, sets: dict[str, Path], out: Path, epochs: float) -> dict:
    """One supernet (a one-thread subprocess, so `--jobs` runs share the cores fairly), then its test scores."""
    sampler, scored = CONDITIONS[condition]
    run = out / condition
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if not (run / "eval_test.json").exists():
        train = ["train", "--space", SPACE, "--sampler", sampler, "--preferred", str(sets[scored]), "--seed",
                 str(seed), "--epochs", str(epochs), "--warmup-epochs", str(epochs / 10), "--out", str(run), *RECIPE]
        for args in (train, ["evaluate", "--run", str(run), "--preferred", str(sets[scored]), "--split", "test"]):
            subprocess.run([sys.executable, "-m", "training", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((run / "eval_test.json").read_text())["results"]
    print(f"seed {seed} {condition}: mean test top-1 {statistics.mean(r['top1'] for r in rows):.2f}", flush=True)
    steps = json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"]
    return {"seed": seed, "condition": condition, "steps": steps, "rows": rows}


def contrasts(results: list[dict]) -> dict[str, dict[int, list[float]]]:
    """Per contrast and bucket index: preferred minus the other condition, one value per seed."""
    by = {(r["seed"], r["condition"]): r["rows"] for r in results}
    seeds = sorted({r["seed"] for r in results})
    out = {}
    for name, other in CONTRASTS.items():
        per_bucket: dict[int, list[float]] = {}
        for s in seeds:
            for k, (a, b) in enumerate(zip(by[s, "preferred"], by[s, other], strict=True)):
                per_bucket.setdefault(k, []).append(a["top1"] - b["top1"])
        out[name] = per_bucket
    return out


def report(results: list[dict], epochs: float) -> str:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["seed"], r["condition"]): r["rows"] for r in results}
    diffs = contrasts(results)
    n_buckets = len(by[seeds[0], "preferred"])
    lines = [f"`{SPACE}` on Fashion-MNIST, {epochs:g} epochs ({results[0]['steps']} steps of 128) per supernet, seeds "
             f"{', '.join(map(str, seeds))}; test top-1 (10k images) with inherited weights; {machine()}.\n",
             "| bucket | picks' params (seed 0) | " + " | ".join(CONDITIONS) + " | "
             + " | ".join(CONTRASTS) + " |", "|---|---|" + "---|" * (len(CONDITIONS) + len(CONTRASTS))]
    for k in range(n_buckets):
        row = by[seeds[0], "preferred"][k]
        means = [statistics.mean(by[s, c][k]["top1"] for s in seeds) for c in CONDITIONS]
        lines.append(f"| {k} | {row['params'] / 1e3:.0f}K | " + " | ".join(f"{m:.2f}" for m in means) + " | "
                     + " | ".join(mean_interval(diffs[c][k]) for c in CONTRASTS) + " |")
    lines.append("\nMean over buckets, one value per seed (the replicates), then mean ± 95% t-interval over seeds:\n")
    lines += ["| contrast | per seed | mean ± 95% CI | buckets where the interval excludes 0 (+ / -) |",
              "|---|---|---|---|"]
    for c in CONTRASTS:
        per_seed = [statistics.mean(diffs[c][k][i] for k in range(n_buckets)) for i in range(len(seeds))]
        plus = sum(_excludes_zero(diffs[c][k]) == 1 for k in range(n_buckets))
        minus = sum(_excludes_zero(diffs[c][k]) == -1 for k in range(n_buckets))
        lines.append(f"| {c} | {', '.join(f'{v:+.2f}' for v in per_seed)} | {mean_interval(per_seed)} | "
                     f"{plus} / {minus} of {n_buckets} |")
    return "\n".join(lines)


def _excludes_zero(values: list[float]) -> int:
    """+1 / -1 when the 95% t-interval of the values lies above / below zero, else 0."""
    m, half = statistics.mean(values), t_half(values)
    return 1 if m - half > 0 else -1 if m + half < 0 else 0


def plot(results: list[dict], path: Path) -> Path:
    """Each contrast per bucket: the mean over seeds with its 95% t-interval."""
    from matplotlib.figure import Figure

    diffs = contrasts(results)
    fig = Figure(figsize=(7.5, 4.2), dpi=100, layout="tight")
    ax = fig.add_subplot()
    for j, (name, per_bucket) in enumerate(diffs.items()):
        ks = sorted(per_bucket)
        means = [statistics.mean(per_bucket[k]) for k in ks]
        halves = [t_half(per_bucket[k]) for k in ks]
        ax.errorbar([k + 0.2 * (j - 1) for k in ks], means, yerr=halves, fmt="os^"[j], capsize=3, label=name)
    ax.axhline(0, color="#6b7280", linewidth=0.8)
    first = next(r["rows"] for r in results if r["condition"] == "preferred")
    ax.set_xticks(range(len(first)), labels=[f"{row['params'] / 1e3:.0f}K" for row in first], rotation=45)
    ax.set_xlabel("bucket (params of one seed's pick)")
    ax.set_ylabel("test top-1 difference (points)")
    ax.set_title(f"preferred training vs its controls, {len({r['seed'] for r in results})} seeds (95% t-intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return atomic_write_figure(path, fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/prenas"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--jobs", type=int, default=1, help="supernets trained at once (one thread each)")
    ap.add_argument("--plot", type=Path, default=Path("bench/prenas-concentration.png"))
    args = ap.parse_args()
    sets = {s: write_sets(s, args.out / f"seed{s}") for s in range(args.seeds)}
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda sc: train_and_score(sc[0], sc[1], sets[sc[0]], args.out / f"seed{sc[0]}",
                                                           args.epochs),
                                [(s, c) for s in range(args.seeds) for c in CONDITIONS]))
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=1) + "\n")
    print(report(results, args.epochs))
    print(f"\nwrote {plot(results, args.plot)}")


if __name__ == "__main__":
    main()
