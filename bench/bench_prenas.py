"""Concentration vs selection: what PreNAS's preferred training owes to *which* archs it trains and to training
*few* archs, with seeds as the replicates.

    .venv/bin/python -m bench.bench_prenas --out runs/prenas [--seeds 5] [--epochs 2] [--jobs 1]
        [--conditions preferred,random-matched,...] [--plot bench/prenas-concentration.png] [--raw FILE]

Per seed s (the selector's seed and the trainer's), four supernets on the `ladder` space, same recipe, same steps:
  preferred        the normalised-SNIP picks, PreNAS Eq. 11 sampler (uniform over (embed, depth) groups, then inside)
  preferred-plain  the same picks, uniform over the picks (the paper's Eq. 11 ablation)
  random-set       one random arch per bucket (drawn as the uniform sampler draws), Eq. 11 sampler
  random-matched   one random arch per pick with params within ±5% of the pick's (not the pick), Eq. 11 sampler:
                   the selector's picks sit near their buckets' upper edges, so random-set's archs are smaller
  uniform          AutoFormer-style: any arch of the space
Every supernet is scored on the 10k test images with inherited weights: the random-set one on its own archs, the
other three on the picks. Nothing is selected on the test set, so it is the right split for this comparison.
Contrasts, paired by seed and bucket: selection = preferred - random-set, concentration = preferred - uniform,
Eq. 11 = preferred - preferred-plain. Intervals are 95% t-intervals over the seeds (bucket means per seed are the
replicates of the overall line). Runs resume: a finished (seed, condition) is not retrained. The per-seed,
per-bucket accuracies go to --raw (bench/data/concentration/), from which `python -m bench report` builds RESULTS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench_selector_accuracy import random_archs
from bench.common import machine, t_half
from bench.report import concentration, contrasts
from training.select import SelectConfig, select, write_selection
from zoo import flops, get_space, params
from zoo.families.vit.arch import ViTArch
from zoo.io import atomic_write_figure, atomic_write_text

SPACE = "ladder"
CONDITIONS = {"preferred": ("preferred", "selected"), "preferred-plain": ("preferred-plain", "selected"),
              "random-set": ("preferred", "random"), "random-matched": ("preferred", "matched"),
              "uniform": ("uniform", "selected")}  # sampler, archs scored
MATCH = 0.05  # random-matched: params within ±5% of the pick's
RECIPE = ["--data", "fashion-mnist", "--batch-size", "128", "--lr", "1e-3", "--min-lr", "1e-5", "--weight-decay",
          "0.05", "--label-smoothing", "0.1", "--drop-path", "0.1", "--ckpt-every", "500", "--no-progress"]


def write_sets(seed: int, out: Path) -> dict[str, Path]:
    """The seed's selected set, and a random set with one arch in each bucket the selector filled."""
    sel = select(SelectConfig(get_space(SPACE), seed=seed, progress=False))
    selected = write_selection(sel, out / "selected")
    doc = json.loads(selected.read_text())
    space = sel.config.space
    randoms = {k: random_archs(space, b["low"], b["high"], 1, seed=1_000 * seed + k)
               for k, b in enumerate(doc["buckets"]) if b["entries"]}
    matched = {k: matched_arch(space, b["entries"][0], seed=1_000 * seed + k)
               for k, b in enumerate(doc["buckets"]) if b["entries"]}
    return {"selected": selected, "random": write_set(doc, randoms, seed, out / "random"),
            "matched": write_set(doc, matched, seed, out / "matched")}


def matched_arch(space, pick: dict, seed: int, tries: int = 400_000) -> list:
    """One random arch other than the pick with params within ±MATCH of the pick's: an (embed, depth) group that can
    reach that range, uniformly, then each layer's heads and MLP ratio uniformly, kept if inside (the uniform sampler
    alone almost never draws near the space's largest arch)."""
    lo, hi, rng = pick["params"] * (1 - MATCH), pick["params"] * (1 + MATCH), random.Random(seed)
    def uniform_layers(e: int, d: int, heads: list[int], ratios: list[float]) -> ViTArch:
        return ViTArch(e, d, tuple(rng.choice(heads) for _ in range(d)), tuple(rng.choice(ratios) for _ in range(d)))
    groups = [(e, d) for e in space.embed_dims for d in space.depths
              if params(space, uniform_layers(e, d, [min(space.num_heads)], [min(space.mlp_ratios)])) <= hi
              and params(space, uniform_layers(e, d, [max(space.num_heads)], [max(space.mlp_ratios)])) >= lo]
    for _ in range(tries if groups else 0):
        arch = uniform_layers(*rng.choice(groups), space.num_heads, space.mlp_ratios)
        if lo <= params(space, arch) <= hi and arch.id != pick["id"]:
            return [arch]
    raise SystemExit(f"no random arch within ±{MATCH:.0%} of {pick['id']}'s {pick['params']:,} params")


def write_set(doc: dict, archs: dict[int, list], seed: int, folder: Path) -> Path:
    """A preferred.json like the selector's, with the given arch in each filled bucket."""
    doc = json.loads(json.dumps(doc))
    space = get_space(SPACE)
    for k, (arch,) in archs.items():
        doc["buckets"][k]["entries"] = [{"id": arch.id, "arch": arch.to_dict(), "params": params(space, arch),
                                         "flops": flops(space, arch), "score": None}]
    doc["selector"] = {"proxy": "random", "seed": seed}
    path = folder / "preferred.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


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
        ax.errorbar([k + 0.15 * (j - 1.5) for k in ks], means, yerr=halves, fmt="os^D"[j], capsize=3, label=name)
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
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help="which supernets (preferred is always one)")
    ap.add_argument("--plot", type=Path, default=Path("bench/prenas-concentration.png"))
    ap.add_argument("--raw", type=Path, default=Path("bench/data/concentration/ladder.json"))
    args = ap.parse_args()
    conditions = ["preferred", *(c for c in args.conditions.split(",") if c != "preferred")]
    if unknown := set(conditions) - set(CONDITIONS):
        raise SystemExit(f"--conditions: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CONDITIONS)}")
    sets = {s: write_sets(s, args.out / f"seed{s}") for s in range(args.seeds)}
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda sc: train_and_score(sc[0], sc[1], sets[sc[0]], args.out / f"seed{sc[0]}",
                                                           args.epochs),
                                [(s, c) for s in range(args.seeds) for c in conditions]))
    raw = {"space": SPACE, "epochs": args.epochs, "steps": results[0]["steps"], "machine": machine(),
           "command": " ".join(["python -m bench.bench_prenas", *sys.argv[1:]]), "test_images": 10_000,
           "results": [{k: r[k] for k in ("seed", "condition")}
                       | {"rows": [{k: row[k] for k in ("id", "params", "top1")} for row in r["rows"]]}
                       for r in results]}
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.raw, json.dumps(raw, indent=1) + "\n")
    print(concentration(raw))
    print(f"\nwrote {args.raw} and {plot(raw['results'], args.plot)}")


if __name__ == "__main__":
    main()
