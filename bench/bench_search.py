"""Search baselines done properly, against zero-cost selection.

    .venv/bin/python -m bench.bench_search --uniform runs/uniform70/train/supernet.safetensors \
        [--zoo zoos/ladder-fmnist] [--buckets 2,5,8] [--evaluations 50] [--population 10] [--seeds 2] \
        [--raw bench/data/search/ladder.json] [--plot bench/search-vs-selection.png]
    .venv/bin/python -m bench.bench_search --from bench/data/search/ladder.json

Per chosen bucket of the zoo's grid and per seed, AutoFormer's evolution, aging (regularized) evolution, random
search and the ENAS-style controller each evaluate the same number of distinct archs of the bucket (both bounds hold)
in the *uniformly* trained supernet; fitness is top-1 on the full validation split (held out of training). Each pick
is then scored on the 10k test images with the same inherited weights. Selection's pick is the zoo's entry of the
bucket: scored in the same uniform supernet (selection vs search on equal weights), and as shipped (preferred
training, the PreNAS pipeline).

Cost: a search is charged the seconds its archs' evaluations took (an arch evaluated once is shared between
searches, so the run is cheaper than what it reports); selection is charged its one gradient pass and scoring, timed
here for all buckets at once.

The raw results go to bench/data/search/SPACE.json (per bucket selection's entry and each search's best arch per
seed with its evaluations and their seconds; every reported arch's params, validation and test top-1; the
validation split's source, seed and size), from which `python -m bench report` builds the tables in
bench/RESULTS.md (renderer `search`) and `--from RAW` prints them and redraws the plot.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import machine, raw_results, supernet_validation_split
from bench.report import DATA
from training.checks import Range
from training.data import load_data
from training.evaluate import accuracy, load_supernet, tensor_batches
from training.preferred import Buckets
from training.search import SEARCHES, SearchConfig
from training.select import SelectConfig, select
from zoo import Arch, Zoo, params
from zoo.io import atomic_write_figure


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
            rows.append({"algorithm": name, "seed": seed, "best": found.best, "evaluations": found.evaluations,
                         "seconds": fitness.seconds(found.scores)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uniform", help="a uniformly trained supernet of the zoo's space (its config.json beside it)")
    ap.add_argument("--from", dest="from_raw", type=Path, help="print the tables and redraw the plot of this raw file")
    ap.add_argument("--zoo", default="zoos/ladder-fmnist")
    ap.add_argument("--buckets", default="2,5,8", help="bucket indices of the zoo's grid")
    ap.add_argument("--evaluations", type=Range(int, 1, 100_000), default=50)
    ap.add_argument("--population", type=Range(int, 2, 10_000), default=10)
    ap.add_argument("--seeds", type=Range(int, 1, 1000), default=2)
    ap.add_argument("--raw", type=Path, help="raw results file (default: bench/data/search/SPACE.json)")
    ap.add_argument("--plot", type=Path, default=Path("bench/search-vs-selection.png"))
    args = ap.parse_args(argv)
    if (args.uniform is None) == (args.from_raw is None):
        ap.error("give either --uniform or --from RAW_FILE")
    raw = raw_results(args, measure, lambda raw: DATA / "search" / f"{raw['space']}.json")
    print(tables(raw))
    print(f"\nwrote {plot(raw, args.plot)}")


def measure(args) -> dict:
    """Selection's entry and every search per chosen bucket, scored on validation and test: the raw results."""
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
    archs: dict[str, dict] = {}

    def scored(arch: Arch) -> str:
        """The arch's id, its params, validation and test top-1 recorded once."""
        if arch.id not in archs:
            archs[arch.id] = {"params": params(space, arch), "val_top1": fitness(arch),
                              "test_top1": accuracy(supernet, arch, test_batches).top1}
        return arch.id

    edges = sel_cfg.buckets.edges()
    buckets = []
    for k in (int(i) for i in args.buckets.split(",")):
        lo, hi = edges[k]
        entry = next(e for e in zoo.entries if lo <= e.params < hi)
        if entry.id not in picks:
            raise SystemExit(f"the zoo's entry {entry.id} is not what the selector picks today: rebuild the zoo")
        rows = search_bucket(space, fitness, lo, hi, args)
        buckets.append({"bucket": [lo, hi], "selection": {"arch": scored(entry.arch), "test_zoo": entry.top1},
                        "searches": [{**r, "best": scored(r["best"])} for r in rows]})
        print(f"bucket {k} [{lo / 1e3:.0f}K, {hi / 1e3:.0f}K) done", flush=True)
    return {"kind": "prezoo.bench-search", "space": space.name, "zoo": str(args.zoo), "uniform": str(args.uniform),
            "machine": machine(), "select_s": select_s, "grid_buckets": len(edges),
            "settings": {k: getattr(args, k) for k in ("buckets", "evaluations", "population", "seeds")},
            "validation": {"source": run_cfg.data, "seed": run_cfg.seed, "images": len(val)},
            "test_images": len(test), "buckets": buckets, "archs": archs}


def _spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.mean(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def algorithms(raw: dict) -> list[str]:
    return list(dict.fromkeys(r["algorithm"] for b in raw["buckets"] for r in b["searches"]))


def tables(raw: dict) -> str:
    """The study's tables from its raw file (renderer `search` of `python -m bench report`): per bucket selection's
    entry (test top-1 in the uniform supernet and as shipped) and each search's best arch (validation / test top-1,
    params: mean over seeds, min-max), then what each method evaluated and the seconds it took."""
    s, v, archs = raw["settings"], raw["validation"], raw["archs"]
    names = algorithms(raw)
    lines = [f"`{raw['space']}`, uniformly trained supernet `{raw['uniform']}`, zoo `{raw['zoo']}`; {s['evaluations']} "
             f"distinct archs per search (population {s['population']}), {s['seeds']} seeds each; fitness: validation "
             f"top-1 on {v['images']:,} images held out of the supernet's training ({v['source']}, seed {v['seed']}); "
             f"test: {raw['test_images']:,} images. Cells: mean over seeds (min-max). {raw['machine']}.", "",
             "| bucket | selection: pick, test top-1 in the uniform supernet / as shipped (preferred training) | "
             + " | ".join(f"{a}: val / test top-1, params" for a in names) + " |", "|---|---|" + "---|" * len(names)]
    for b in raw["buckets"]:
        lo, hi = b["bucket"]
        sel = b["selection"]
        cells = []
        for a in names:
            best = [archs[r["best"]] for r in b["searches"] if r["algorithm"] == a]
            cells.append(f"{_spread([x['val_top1'] for x in best])} / {_spread([x['test_top1'] for x in best])}, "
                         f"{_spread([x['params'] / 1e3 for x in best], '.0f')}K")
        pick = archs[sel["arch"]]
        lines.append(f"| [{lo / 1e3:.0f}K, {hi / 1e3:.0f}K) | {sel['arch']} ({pick['params'] / 1e3:.0f}K): "
                     f"{pick['test_top1']:.2f} / **{sel['test_zoo']:.2f}** | " + " | ".join(cells) + " |")
    lines += ["", "| method | archs evaluated per bucket | seconds per bucket (mean over seeds and buckets) |",
              "|---|---|---|",
              f"| selection (all {len(raw['buckets'])} buckets and the rest of the grid at once) | 0 | "
              f"{raw['select_s']:.1f} for the whole grid |"]
    for a in names:
        rows = [r for b in raw["buckets"] for r in b["searches"] if r["algorithm"] == a]
        lines.append(f"| {a} | {statistics.mean(r['evaluations'] for r in rows):.0f} | "
                     f"{statistics.mean(r['seconds'] for r in rows):.0f} |")
    return "\n".join(lines) + "\n"


def plot(raw: dict, path: Path) -> Path:
    """Test top-1 against params: every search pick (per seed), selection's pick in the uniform supernet and as
    shipped."""
    from matplotlib.figure import Figure

    archs = raw["archs"]
    fig = Figure(figsize=(7.5, 4.4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    for a, marker in zip(algorithms(raw), "os^Dv<>", strict=False):
        best = [archs[r["best"]] for b in raw["buckets"] for r in b["searches"] if r["algorithm"] == a]
        ax.scatter([x["params"] for x in best], [x["test_top1"] for x in best], marker=marker, s=22, alpha=0.7,
                   label=f"{a} search (uniform supernet)")
    sel = [(archs[b["selection"]["arch"]], b["selection"]["test_zoo"]) for b in raw["buckets"]]
    ax.scatter([x["params"] for x, _ in sel], [x["test_top1"] for x, _ in sel], marker="x", s=60, c="k",
               label="selection's pick, uniform supernet")
    ax.scatter([x["params"] for x, _ in sel], [z for _, z in sel], marker="*", s=110, c="#2563eb",
               label="selection's pick, preferred training (the zoo)")
    for b in raw["buckets"]:
        for edge in b["bucket"]:
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
