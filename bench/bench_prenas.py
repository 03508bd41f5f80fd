"""The paper's central claim at our scale: preferred training vs uniform ("redundant") training.

    .venv/bin/python -m bench.bench_prenas [--epochs 10] [--seed 0] [--out runs/experiment]
    .venv/bin/python -m bench.bench_prenas --combine runs/experiment [--plot docs/prenas-vs-uniform.png]

Same space (`mini`), same steps, same seed:
 (a) PreNAS: train with the preferred sampler, evaluate the preferred archs;
 (b) AutoFormer-style uniform training, evaluating the same preferred archs;
 (c) uniform training + evolutionary search per bucket (fitness: val top-1), then test top-1.
Prints a markdown table per bucket and the search time of (c) vs PreNAS's selection time; writes
`<out>/seed<S>/experiment.json` and `experiment.png`. `--combine` reads every seed's JSON under a folder: the
per-bucket mean over seeds, each seed's mean and wins, and one plot with every seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import machine
from training.data import load_data
from training.evaluate import accuracy, evaluate_archs, load_supernet, tensor_batches
from training.search import SearchConfig, evolution
from training.select import SelectConfig, select, write_selection
from training.train import TrainConfig, train
from zoo import get_space, params
from zoo.io import atomic_write_figure, atomic_write_text


def run(epochs: float, seed: int, out: Path, population: int, generations: int, val_images: int) -> dict:
    space = get_space("mini")
    t = time.perf_counter()
    sel = select(SelectConfig(space, seed=seed, progress=False))
    select_s = time.perf_counter() - t
    pref_path = write_selection(sel, out / "select")
    pairs = [(edge, best[0]) for edge, best in zip(sel.config.buckets.edges(), sel.preferred, strict=True) if best]
    runs = {}
    for sampler in ("preferred", "uniform"):
        run_dir = out / sampler
        if not (run_dir / "supernet.safetensors").exists():
            train(TrainConfig(out=str(run_dir), space="mini", preferred=str(pref_path), sampler=sampler,
                              epochs=epochs, seed=seed, ckpt_every=1000, progress=True))
        runs[sampler] = load_supernet(run_dir / "supernet.safetensors")
    test, _ = load_data("fashion-mnist", "test")
    test_batches = tensor_batches(test)
    val, _ = load_data("fashion-mnist", "val", seed=seed)
    val_batches = tensor_batches(val, 500, limit=val_images)
    archs = [c.arch for _, c in pairs]
    acc = {s: [a.top1 for a in evaluate_archs(runs[s], archs, test_batches)] for s in runs}
    rows = []
    for ((lo, hi), c), a_pre, a_uni in zip(pairs, acc["preferred"], acc["uniform"], strict=True):
        evo = SearchConfig(evaluations=population * generations, min_params=lo, max_params=hi, population=population,
                           parents=max(2, population // 5), mutants=population // 2,
                           crossovers=population - population // 2, seed=seed)
        t = time.perf_counter()
        found = evolution(space, lambda a: accuracy(runs["uniform"], a, val_batches).top1, evo, progress=False)
        search_s = time.perf_counter() - t
        rows.append({"bucket": [lo, hi], "preferred_id": c.arch.id, "params": c.params,
                     "a_preferred_training": a_pre, "b_uniform_training": a_uni,
                     "c_search_id": found.best.id, "c_search_params": params(space, found.best),
                     "c_uniform_plus_search": accuracy(runs["uniform"], found.best, test_batches).top1,
                     "c_evaluations": found.evaluations, "c_search_s": search_s})
    return {"epochs": epochs, "seed": seed, "select_s": select_s, "machine": machine(),
            "search": {"population": population, "generations": generations, "val_images": val_images},
            "rows": rows}


METHODS = {"a_preferred_training": "(a) preferred training (PreNAS)",
           "b_uniform_training": "(b) uniform training, same archs",
           "c_uniform_plus_search": "(c) uniform training + evolutionary search"}


def summary(res: dict) -> dict[str, float]:
    """One seed's mean top-1 per method, (a)'s wins over (b), and the total search time of (c)."""
    rows = res["rows"]
    return {**{k: sum(r[k] for r in rows) / len(rows) for k in METHODS},
            "wins": sum(r["a_preferred_training"] > r["b_uniform_training"] for r in rows),
            "search_s": sum(r["c_search_s"] for r in rows)}


def report(res: dict) -> str:
    lines = [f"mini on Fashion-MNIST, {res['epochs']} epochs per supernet, seed {res['seed']}; search: population "
             f"{res['search']['population']}, {res['search']['generations']} generations, fitness = val top-1 on "
             f"{res['search']['val_images']} held-out images; test top-1 on the 10k test set.\n",
             "| bucket (params) | preferred arch | (a) preferred training | (b) uniform training | "
             "(c) uniform + search (arch, params) | search time s |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lo, hi = r["bucket"]
        lines.append(f"| [{lo / 1e6:.2f}, {hi / 1e6:.2f})M | {r['preferred_id']} ({r['params'] / 1e6:.3f}M) | "
                     f"{r['a_preferred_training']:.2f} | {r['b_uniform_training']:.2f} | "
                     f"{r['c_uniform_plus_search']:.2f} ({r['c_search_id']}, {r['c_search_params'] / 1e6:.3f}M) | "
                     f"{r['c_search_s']:.0f} |")
    n, sm = len(res["rows"]), summary(res)
    lines.append(f"| mean | | {sm['a_preferred_training']:.2f} | {sm['b_uniform_training']:.2f} | "
                 f"{sm['c_uniform_plus_search']:.2f} | {sm['search_s']:.0f} |")
    lines.append(f"\n(a) beats (b) in {sm['wins']}/{n} buckets. Selection time of PreNAS: {res['select_s']:.2f} s for "
                 f"all buckets; search time of (c): {sm['search_s']:.0f} s ({sm['search_s'] / res['select_s']:,.0f}x).")
    return "\n".join(lines)


def combine(results: list[dict]) -> str:
    """Markdown: per bucket, each method's mean test top-1 over the seeds (min-max); then one line per seed."""
    seeds = [r["seed"] for r in results]
    lines = [f"Seeds {', '.join(map(str, seeds))}; {results[0]['epochs']} epochs per supernet. Per bucket: mean test "
             f"top-1 over the seeds (min-max).\n", "| bucket (params) | " + " | ".join(METHODS.values()) + " |",
             "|---|" + "---|" * len(METHODS)]
    buckets = sorted({tuple(row["bucket"]) for r in results for row in r["rows"]})
    for lo, hi in buckets:
        rows = [row for r in results for row in r["rows"] if tuple(row["bucket"]) == (lo, hi)]
        cells = [f"{sum(v) / len(v):.2f} ({min(v):.2f}-{max(v):.2f})" for v in
                 ([row[k] for row in rows] for k in METHODS)]
        lines.append(f"| [{lo / 1e6:.2f}, {hi / 1e6:.2f})M | " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        sm = summary(r)
        means = ", ".join(f"{k[0]} {sm[k]:.2f}" for k in METHODS)
        lines.append(f"- seed {r['seed']}: mean top-1 {means}; (a) beats (b) in {sm['wins']}/{len(r['rows'])} buckets; "
                     f"selection {r['select_s']:.2f} s vs search {sm['search_s']:.0f} s")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Each method's test top-1 against params, one line (or, for (c), points) per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for (key, label), marker, color in zip(METHODS.items(), "os^", ("C0", "C1", "C2"), strict=True):
        for i, r in enumerate(results):
            px = "c_search_params" if key.startswith("c_") else "params"
            ax.plot([row[px] / 1e6 for row in r["rows"]], [row[key] for row in r["rows"]], marker=marker,
                    color=color, alpha=0.8,  # (c)'s archs are not ordered by size: points, not lines
                    linestyle="none" if key.startswith("c_") else ("-", "--", ":")[i % 3],
                    label=f"{label}, seed {r['seed']}")
    ax.set_xlabel("M params")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    ax.set_title(f"mini space, {results[0]['epochs']} epochs, seeds {', '.join(str(r['seed']) for r in results)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_figure(path, fig)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/experiment")
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--val-images", type=int, default=1000)
    ap.add_argument("--combine", metavar="DIR", help="report every DIR/seed*/experiment.json together instead")
    ap.add_argument("--plot", type=Path, help="with --combine: where to write the plot, and the seeds' results as "
                                              "JSON beside it (default DIR/experiment.png)")
    args = ap.parse_args()
    if args.combine:
        results = sorted((json.loads(p.read_text()) for p in Path(args.combine).glob("seed*/experiment.json")),
                         key=lambda r: r["seed"])
        if not results:
            raise SystemExit(f"no seed*/experiment.json under {args.combine}: run the experiment first")
        print(combine(results))
        plot_path = args.plot or Path(args.combine) / "experiment.png"
        plot(results, plot_path)
        atomic_write_text(plot_path.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {plot_path} and {plot_path.with_suffix('.json')}")
        return
    out = Path(args.out) / f"seed{args.seed}"
    res = run(args.epochs, args.seed, out, args.population, args.generations, args.val_images)
    atomic_write_text(out / "experiment.json", json.dumps(res, indent=1) + "\n")
    plot([res], out / "experiment.png")
    print(report(res))
    print(f"\nwrote {out / 'experiment.json'} and {out / 'experiment.png'}")


if __name__ == "__main__":
    main()
