"""Search baselines done properly, against zero-cost selection.

    .venv/bin/python -m bench.bench_search --uniform runs/uniform70/train/supernet.safetensors \
        [--zoo zoos/ladder-fmnist] [--buckets 2,5,8] [--evaluations 50] [--population 10] [--seeds 2] \
        [--out runs/search] [--plot bench/search-vs-selection.png]

Per chosen bucket of the zoo's grid and per seed, AutoFormer's evolution, aging (regularized) evolution, random
search and the ENAS-style controller each evaluate the same number of distinct archs of the bucket (both bounds hold)
in the *uniformly* trained supernet; fitness is top-1 on the full validation split (held out of training). Each pick
is then scored on the 10k test images with the same inherited weights. Selection's pick is the zoo's entry of the
bucket: scored in the same uniform supernet (selection vs search on equal weights), and as shipped (preferred
training, the PreNAS pipeline).

Cost: a search is charged the seconds its archs' evaluations took (an arch evaluated once is shared between
searches, so the run is cheaper than what it reports); selection is charged its one gradient pass and scoring, timed
here for all buckets at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.common import machine, supernet_validation_split
from training.data import load_data
from training.evaluate import accuracy, load_supernet, tensor_batches
from training.preferred import Buckets
from training.search import SEARCHES, SearchConfig
from training.select import SelectConfig, select
from zoo import Arch, Zoo, params
from zoo.io import atomic_write_figure, atomic_write_text


class TimedFitness:
    """Validation top-1 with a memo that remembers what each arch's one evaluation cost."""

    def __init__(self, supernet, batches) -> None:
        self.supernet, self.batches = supernet, batches
        self.scores: dict[Arch, tuple[float, float]] = {}

    def __call__(self, arch: Arch) -> float:
        if arch not in self.scores:
            t = time.perf_counter()
            top1 = accuracy(self.supernet, arch, self.batches).top1
            self.scores[arch] = (top1, time.perf_counter() - t)
        return self.scores[arch][0]

    def seconds(self, archs) -> float:
        return sum(self.scores[a][1] for a in archs)


def search_bucket(space, fitness: TimedFitness, lo: float, hi: float, args) -> list[dict]:
    rows = []
    p = args.population
    for name, search in SEARCHES.items():
        for seed in range(args.seeds):
            cfg = SearchConfig(evaluations=args.evaluations, min_params=lo, max_params=hi, population=p,
                               parents=max(2, p // 5), mutants=p // 2, crossovers=p - p // 2, sample=max(2, p // 4),
                               seed=seed)
            found = search(space, fitness, cfg, progress=False)
            assert all(lo <= params(space, a) < hi for a in found.scores)
            rows.append({"algorithm": name, "seed": seed, "arch": found.best.id, "params": params(space, found.best),
                         "val": found.best_score, "evaluations": found.evaluations,
                         "seconds": fitness.seconds(found.scores), "_arch": found.best})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uniform", required=True, help="a uniformly trained supernet of the zoo's space")
    ap.add_argument("--zoo", default="zoos/ladder-fmnist")
    ap.add_argument("--buckets", default="2,5,8", help="bucket indices of the zoo's grid")
    ap.add_argument("--evaluations", type=int, default=50)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/search"))
    ap.add_argument("--plot", type=Path, default=Path("bench/search-vs-selection.png"))
    args = ap.parse_args()
    zoo = Zoo.load(args.zoo)
    supernet = load_supernet(args.uniform)
    space = supernet.space
    if space.hash != zoo.space.hash:
        raise SystemExit(f"{args.uniform} is a supernet of {space.name}, the zoo is of {zoo.space.name}")
    sel_cfg = SelectConfig(space, **{k: zoo.doc["selector"][k] for k in ("proxy", "seed", "batch_size", "data")},
                           buckets=Buckets(**zoo.doc["selector"]["buckets"]), progress=False)
    t = time.perf_counter()
    selection = select(sel_cfg)
    select_s = time.perf_counter() - t
    picks = {c.arch.id for c in selection.preferred_archs}
    val, run_cfg = supernet_validation_split(args.uniform, space)
    test, _ = load_data(run_cfg.data, "test", img_size=space.img_size, in_chans=space.in_chans)
    fitness, test_batches = TimedFitness(supernet, tensor_batches(val, 1000)), tensor_batches(test, 1000)
    test_top1 = lambda arch: accuracy(supernet, arch, test_batches).top1
    edges = sel_cfg.buckets.edges()
    results = []
    for k in (int(i) for i in args.buckets.split(",")):
        lo, hi = edges[k]
        entry = next(e for e in zoo.entries if lo <= e.params < hi)
        if entry.id not in picks:
            raise SystemExit(f"the zoo's entry {entry.id} is not what the selector picks today: rebuild the zoo")
        rows = search_bucket(space, fitness, lo, hi, args)
        for r in rows:
            r["test"] = test_top1(r.pop("_arch"))
        results.append({"bucket": [lo, hi], "selection": {
            "arch": entry.id, "params": entry.params, "val": fitness(entry.arch), "test_uniform": test_top1(entry.arch),
            "test_zoo": entry.top1}, "search": rows})
        print(f"bucket {k} [{lo / 1e3:.0f}K, {hi / 1e3:.0f}K) done", flush=True)
    doc = {"machine": machine(), "select_s": select_s, "settings": vars(args) | {"out": str(args.out),
                                                                                   "plot": str(args.plot)},
           "results": results}
    atomic_write_text(args.out / "search.json", json.dumps(doc, indent=1) + "\n")
    print(report(doc))
    print(f"\nwrote {plot(results, args.plot)}")


def _spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.mean(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(doc: dict) -> str:
    s = doc["settings"]
    lines = [f"{machine()}; {s['evaluations']} distinct archs per search (population {s['population']}), "
             f"{s['seeds']} seeds each; fitness: validation top-1 (5k images) in the uniform supernet; test: 10k "
             f"images. Cells: mean over seeds (min-max).\n",
             "| bucket | selection: pick, test top-1 in the uniform supernet / as shipped (preferred training) | "
             + " | ".join(f"{a}: val / test top-1, params" for a in SEARCHES) + " |",
             "|---|---|" + "---|" * len(SEARCHES)]
    for res in doc["results"]:
        lo, hi = res["bucket"]
        sel = res["selection"]
        cells = []
        for a in SEARCHES:
            rows = [r for r in res["search"] if r["algorithm"] == a]
            cells.append(f"{_spread([r['val'] for r in rows])} / {_spread([r['test'] for r in rows])}, "
                         f"{_spread([r['params'] / 1e3 for r in rows], '.0f')}K")
        lines.append(f"| [{lo / 1e3:.0f}K, {hi / 1e3:.0f}K) | {sel['arch']} ({sel['params'] / 1e3:.0f}K): "
                     f"{sel['test_uniform']:.2f} / **{sel['test_zoo']:.2f}** | " + " | ".join(cells) + " |")
    lines += ["", "| method | archs evaluated per bucket | seconds per bucket (mean over seeds and buckets) |",
              "|---|---|---|",
              f"| selection (all {len(doc['results'])} buckets and the rest of the grid at once) | 0 | "
              f"{doc['select_s']:.1f} for the whole grid |"]
    for a in SEARCHES:
        rows = [r for res in doc["results"] for r in res["search"] if r["algorithm"] == a]
        lines.append(f"| {a} | {statistics.mean(r['evaluations'] for r in rows):.0f} | "
                     f"{statistics.mean(r['seconds'] for r in rows):.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> Path:
    """Test top-1 against params: every search pick (per seed), selection's pick in the uniform supernet and as
    shipped."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    for (a, marker) in zip(SEARCHES, "os^D", strict=True):
        rows = [r for res in results for r in res["search"] if r["algorithm"] == a]
        ax.scatter([r["params"] for r in rows], [r["test"] for r in rows], marker=marker, s=22, alpha=0.7,
                   label=f"{a} search (uniform supernet)")
    sel = [res["selection"] for res in results]
    ax.scatter([s["params"] for s in sel], [s["test_uniform"] for s in sel], marker="x", s=60, c="k",
               label="selection's pick, uniform supernet")
    ax.scatter([s["params"] for s in sel], [s["test_zoo"] for s in sel], marker="*", s=110, c="#2563eb",
               label="selection's pick, preferred training (the zoo)")
    for res in results:
        for edge in res["bucket"]:
            ax.axvline(edge, color="#d1d5db", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    ax.set_title("search at equal evaluations vs zero-cost selection")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return atomic_write_figure(path, fig)


if __name__ == "__main__":
    main()
