"""BossNAS's rating, measured: architectures of Micro-HyTra trained from scratch, against the selector's scores.

    .venv/bin/python -m bench.bench_bossnas ground-truth --out runs/bossnas-gt [--epochs 2] [--per-stratum 2]
    .venv/bin/python -m bench.bench_bossnas picks --preferred runs/bossnas/preferred.json --out runs/bossnas-picks
    .venv/bin/python -m bench.bench_bossnas report --gt runs/bossnas-gt --runs ensemble=runs/bossnas own=... \
        [--picks runs/bossnas-picks] [--plot bench/bossnas-rating.png]

`ground-truth` trains a stratified set of paths (params tertile x ResAtt count, plus the R50-, ViT- and BoT-like
paths of spec 2.2) from scratch with one short recipe, and a few of them again under other seeds: their spread is
the noise ceiling of the ground truth. `picks` trains each bucket's BossNAS pick and random paths of the same
params (within 10%) with the same recipe. `report` correlates each selector run's score with the ground truth
(Kendall tau, Spearman rho, Pearson R), compares the ResAtt share of the picks with the space's, measures how much
of each score is the scale its blocks are entered from (and the rating without it), and prints the tables that
bench/RESULTS.md holds (copied by hand). Results are JSON lines, appended as each path finishes, so
an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import bootstrap, correlations, kendall, machine, mean_interval
from training.data import load_data, make_loader
from training.evaluate import accuracy_of, tensor_batches
from zoo.families.hytra import MICRO_HYTRA, HyTraArch, HyTraNet, HyTraSpace, enumerate_archs, params
from zoo.io import atomic_write_figure

SPACE = MICRO_HYTRA
HAND_PICKED = {  # spec 2.2's examples
    "R50-like": [(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "conv")] * 3,
    "ViT-like": [(1, "att")] * 8,
    "BoT-like": [(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "att")] * 3,
}


def att_count(arch: HyTraArch) -> int:
    return sum(op == "att" for _, op in arch.layers)


def stratified_archs(space: HyTraSpace, per_stratum: int, seed: int) -> list[tuple[str, HyTraArch]]:
    """`per_stratum` random paths from each (params tertile, ResAtt count 0 / 1-3 / 4+) cell, then the hand-picked
    ones: the ground truth spans both axes the rating could be biased along."""
    archs = enumerate_archs(space)
    sizes = sorted(params(space, a) for a in archs)
    cuts = [sizes[len(sizes) // 3], sizes[2 * len(sizes) // 3]]
    cells: dict[tuple[int, int], list[HyTraArch]] = {}
    for a in archs:
        size = sum(params(space, a) >= c for c in cuts)
        mix = 0 if att_count(a) == 0 else 1 if att_count(a) <= 3 else 2
        cells.setdefault((size, mix), []).append(a)
    rng = random.Random(seed)
    chosen = [(f"p{size}-a{mix}", a) for (size, mix), cell in sorted(cells.items())
              for a in rng.sample(cell, min(per_stratum, len(cell)))]
    return chosen + [(name, space.validate(HyTraArch(layers))) for name, layers in HAND_PICKED.items()]


def train_from_scratch(space: HyTraSpace, arch: HyTraArch, seed: int, epochs: float, train, test_batches,
                       batch_size: int = 256, lr: float = 1e-3) -> dict:
    """The one recipe of the ground truth: AdamW (wd 0.05), linear warm-up over 100 steps then cosine to 0, label
    smoothing 0.1, flips and 2-pixel crops; top-1 on the test images."""
    torch.manual_seed(seed)
    model = HyTraNet(space, arch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(train) // batch_size
    total = max(1, round(epochs * steps_per_epoch))
    t0, step = time.perf_counter(), 0
    model.train()
    while step < total:
        for x, y in make_loader(train, batch_size, shuffle=True, seed=seed, epoch=step // steps_per_epoch,
                                drop_last=True):
            if step >= total:
                break
            scale = min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr * scale
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    seconds = time.perf_counter() - t0
    top1 = accuracy_of(model.eval(), test_batches).top1
    return {"top1": top1, "train_seconds": round(seconds, 1), "steps": total, "images": total * batch_size}


def _done(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    return {(r["id"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}


def train_all(jobs: list[tuple[str, HyTraArch, int]], out: Path, epochs: float, shard: str = "0/1") -> None:
    """Train every (label, arch, seed) of this shard ("i/n": every n-th job from the i-th, so n processes share the
    cores) not yet in out/results.jsonl, appending each result as it finishes (one write per line)."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = _done(results)
    i, n = map(int, shard.split("/"))
    mine = jobs[i::n]
    todo = [j for j in mine if (j[1].id, j[2]) not in done]
    print(f"shard {shard}: {len(mine) - len(todo)} of its {len(mine)} paths already trained; training {len(todo)} "
          f"({epochs} epochs each)", flush=True)
    if not todo:
        return
    train, _ = load_data("fashion-mnist", "train", augment=True, val_size=5000, seed=0)
    test, _ = load_data("fashion-mnist", "test")
    test_batches = tensor_batches(test)
    for k, (label, arch, seed) in enumerate(todo, 1):
        r = train_from_scratch(SPACE, arch, seed, epochs, train, test_batches)
        row = {"label": label, "id": arch.id, "arch": arch.to_dict(), "seed": seed, "params": params(SPACE, arch),
               "att": att_count(arch), "epochs": epochs, **r}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{k}/{len(todo)}] {label:9s} {arch.describe()}  {row['params'] / 1e3:.0f}K  top-1 {r['top1']:.2f}  "
              f"({r['train_seconds']:.0f} s)", flush=True)


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# -- commands ---------------------------------------------------------------------------------------------------------
def cmd_ground_truth(args) -> None:
    archs = stratified_archs(SPACE, args.per_stratum, args.seed)
    jobs = [(label, a, 0) for label, a in archs]
    noisy = [archs[i] for i in np.linspace(0, len(archs) - 1, args.noise_archs).round().astype(int)]
    jobs += [(label, a, s) for label, a in noisy for s in range(1, args.noise_seeds)]
    train_all(jobs, Path(args.out), args.epochs, args.shard)


def equal_params_archs(space: HyTraSpace, pick: HyTraArch, n: int, tolerance: float, seed: int) -> list[HyTraArch]:
    """`n` random paths other than `pick` whose params lie within `tolerance` of its params."""
    p = params(space, pick)
    near = [a for a in enumerate_archs(space) if a != pick and abs(params(space, a) - p) <= tolerance * p]
    return random.Random(seed).sample(near, min(n, len(near)))


def cmd_picks(args) -> None:
    from training.preferred import load_preferred

    space, entries = load_preferred(args.preferred)
    picks = [HyTraArch.from_dict(e["arch"]) for e in entries]
    chosen = picks if args.buckets is None else [picks[int(k)] for k in args.buckets.split(",")]
    jobs = []
    for k, pick in enumerate(chosen):
        jobs.append((f"pick{k}", pick, 0))
        jobs += [(f"random{k}", a, 0) for a in equal_params_archs(space, pick, args.random, 0.1, args.seed + k)]
    train_all(jobs, Path(args.out), args.epochs, args.shard)


def noise_ceiling(rows: list[dict], truth: dict[str, float], draws: int = 2000, seed: int = 0) -> dict:
    """What a perfect rating could reach against this ground truth: the pooled seed-to-seed standard deviation of the
    paths trained under several seeds, then the mean tau/rho/R of the true accuracies (each path's seed-0 top-1
    stands for them) against one simulated re-run of the whole ground truth (that much Gaussian noise added): the
    ceiling (`perfect`); and between two simulated re-runs, which understates it (both sides noisy)."""
    by_arch: dict[str, list[float]] = {}
    for r in rows:
        by_arch.setdefault(r["id"], []).append(r["top1"])
    groups = [v for v in by_arch.values() if len(v) > 1]
    dof = sum(len(v) - 1 for v in groups)
    sd = math.sqrt(sum(((np.asarray(v) - np.mean(v)) ** 2).sum() for v in groups) / dof)
    rng = np.random.default_rng(seed)
    acc = np.asarray(list(truth.values()))
    sims = [correlations(acc + rng.normal(0, sd, len(acc)), acc + rng.normal(0, sd, len(acc))) for _ in range(draws)]
    perfect = [correlations(acc, acc + rng.normal(0, sd, len(acc))) for _ in range(draws)]
    return {"seed_sd_pp": sd, "paths": len(groups), "dof": dof,
            **{k: float(np.mean([s[k] for s in sims])) for k in ("tau", "rho", "R")},
            "perfect": {k: float(np.mean([s[k] for s in perfect])) for k in ("tau", "rho", "R")}}


def _fmt(c: dict, ci: dict | None = None) -> str:
    if ci is None:
        return " | ".join(f"{c[k]:+.2f}" for k in ("tau", "rho", "R"))
    return " | ".join(f"{c[k]:+.2f} [{ci[k][0]:+.2f}, {ci[k][1]:+.2f}]" for k in ("tau", "rho", "R"))


def att_share(archs: list[HyTraArch]) -> float:
    return sum(att_count(a) for a in archs) / (len(archs) * SPACE.num_layers)


def load_run(run: str) -> tuple[dict, list[HyTraArch]]:
    """A selector run's scores.json document and its picks, one per bucket."""
    from training.preferred import load_preferred

    picks = [HyTraArch.from_dict(e["arch"]) for e in load_preferred(Path(run) / "preferred.json")[1]]
    return json.loads((Path(run) / "scores.json").read_text()), picks


def cmd_report(args) -> None:
    from training.bossnas import arch_score

    runs = {name: load_run(run) for name, run in (r.split("=", 1) for r in args.runs)}
    rows = read_results(Path(args.gt))
    truth = {r["id"]: r["top1"] for r in rows if r["seed"] == 0}
    archs = {r["id"]: HyTraArch.from_dict(r["arch"]) for r in rows}
    ids = sorted(truth)
    acc = [truth[i] for i in ids]
    print(f"# BossNAS rating on {SPACE.name} ({machine()})\n")
    print(f"Ground truth: {len(ids)} paths, {rows[0]['epochs']} epoch(s) from scratch each, top-1 on the 10k test "
          f"images, {min(acc):.2f}-{max(acc):.2f}%.\n")
    ceiling = noise_ceiling(rows, truth)
    print(f"Noise ceiling: seed-to-seed sd {ceiling['seed_sd_pp']:.2f} pp ({ceiling['paths']} paths, "
          f"{ceiling['dof']} degrees of freedom); a perfect rating against one re-run of the ground truth reaches "
          f"{_fmt(ceiling['perfect'])}, two re-runs agree to {_fmt(ceiling)} (tau | rho | R)\n")
    print("| rating | tau [95%] | rho [95%] | R [95%] |\n|---|---|---|---|")
    sizes = [params(SPACE, archs[i]) for i in ids]
    print(f"| params alone (no search) | {_fmt(correlations(sizes, acc), bootstrap(sizes, acc))} |")
    scored = {}
    for name, (scores, _) in runs.items():
        score = [-arch_score(scores, archs[i]) for i in ids]
        scored[name] = score
        print(f"| {name} | {_fmt(correlations(score, acc), bootstrap(score, acc))} |")
    space_archs = enumerate_archs(SPACE)
    print(f"\nResAtt share of the layers: space {att_share(space_archs):.2f}; ground truth "
          f"{att_share([archs[i] for i in ids]):.2f}")
    for name, (_, picks) in runs.items():
        print(f"- {name}: picks {att_share(picks):.2f} ({', '.join(a.describe() for a in picks)})")
    report_agreement(runs, space_archs)
    report_input_scales(runs, [archs[i] for i in ids], acc, space_archs)
    if args.picks:
        report_picks(read_results(Path(args.picks)))
    if args.plot:
        plot_rating(scored, acc, [input_scales(SPACE, archs[i]) for i in ids], args.plot)


def report_agreement(runs: dict[str, tuple[dict, list[HyTraArch]]], space_archs: list[HyTraArch]) -> None:
    """Each run's size preference (tau between its score and params over every path of the space: the ground truth
    rewards size, so a rating that prefers small paths cannot rank it), then how far runs agree with each other,
    ground truth aside: tau between their scores over the space, and how many buckets got the same pick (two seeds of
    one method: the selector's own noise)."""
    from training.bossnas import arch_score

    rated = {name: [-arch_score(doc, a) for a in space_archs] for name, (doc, _) in runs.items()}
    space = HyTraSpace.from_dict(next(iter(runs.values()))[0]["space"])
    sizes = [params(space, a) for a in space_archs]
    print(f"\n| run | tau(score, params) over the space's {len(space_archs):,} paths |\n|---|---|")
    for name, score in rated.items():
        print(f"| {name} | {kendall(score, sizes):+.2f} |")
    picks = {name: run_picks for name, (_, run_picks) in runs.items()}
    names = list(runs)
    if len(names) > 1:
        print(f"\n| runs | tau over the space's {len(space_archs):,} paths | same pick |\n|---|---|---|")
    for k, a in enumerate(names):
        for b in names[k + 1:]:
            same = sum(x == y for x, y in zip(picks[a], picks[b], strict=True))
            print(f"| {a} vs {b} | {kendall(rated[a], rated[b]):+.2f} | {same} of {len(picks[a])} buckets |")


def input_scales(space: HyTraSpace, arch: HyTraArch) -> tuple[int, ...]:
    """The scale each block after the first is entered from (the end scale of the block before it)."""
    from training.bossnas import in_scale_of

    return tuple(in_scale_of(arch.layers[:first]) for first in range(space.block_size, space.num_layers,
                                                                     space.block_size))


def scale_share(doc: dict, space_archs: list[HyTraArch]) -> float:
    """The share of the score's variance over the space that the blocks' input scales explain (eta squared)."""
    from training.bossnas import arch_score

    space = HyTraSpace.from_dict(doc["space"])
    score = np.array([arch_score(doc, a) for a in space_archs])
    groups: dict[tuple[int, ...], list[float]] = {}
    for a, v in zip(space_archs, score, strict=True):
        groups.setdefault(input_scales(space, a), []).append(v)
    between = sum(len(g) * (np.mean(g) - score.mean()) ** 2 for g in groups.values())
    return float(between / ((score - score.mean()) ** 2).sum())


def scale_centred(doc: dict) -> dict:
    """The scores with each (block, input scale) table's mean subtracted: a path's loss is then compared only with
    the losses of paths entering its block at the same scale, which saw the same inputs."""
    blocks = [{**b, "losses": {s: {k: v - float(np.mean(list(table.values()))) for k, v in table.items()}
                               for s, table in b["losses"].items()}} for b in doc["blocks"]]
    return {**doc, "blocks": blocks}


def report_input_scales(runs: dict[str, tuple[dict, list[HyTraArch]]], gt_archs: list[HyTraArch], acc: list[float],
                        space_archs: list[HyTraArch]) -> None:
    """How much of each run's score is the scale its blocks are entered from, and the rating with that part removed
    (scale_centred): tau against the ground truth and the size preference over the space."""
    from training.bossnas import arch_score

    print("\n| run | score variance from the input scales | centred: tau [95%] | centred: tau(score, params) |")
    print("|---|---|---|---|")
    for name, (doc, _) in runs.items():
        centred = scale_centred(doc)
        space = HyTraSpace.from_dict(doc["space"])
        score = [-arch_score(centred, a) for a in gt_archs]
        tau, (lo, hi) = kendall(score, acc), bootstrap(score, acc)["tau"]
        size = kendall([-arch_score(centred, a) for a in space_archs], [params(space, a) for a in space_archs])
        print(f"| {name} | {scale_share(doc, space_archs):.2f} | {tau:+.2f} [{lo:+.2f}, {hi:+.2f}] | {size:+.2f} |")


def report_picks(rows: list[dict]) -> None:
    """Per bucket: the pick's top-1 against the random paths of equal params, same recipe."""
    print("\n| pick (--buckets order) | layers | params | pick top-1 | random (n) mean [95%] | pick's rank |")
    print("|---|---|---|---|---|---|")
    for k in sorted({int(r["label"][4:]) for r in rows if r["label"].startswith("pick")}):
        pick = next(r for r in rows if r["label"] == f"pick{k}")
        others = [r["top1"] for r in rows if r["label"] == f"random{k}"]
        rank = 1 + sum(o > pick["top1"] for o in others)
        print(f"| {k} | {HyTraArch.from_dict(pick['arch']).describe()} | {pick['params'] / 1e3:.0f}K | "
              f"{pick['top1']:.2f} | {mean_interval(others)} ({len(others)}) | {rank} of {len(others) + 1} |")


def plot_rating(scored: dict[str, list[float]], acc: list[float], entries: list[tuple[int, ...]], path: str) -> None:
    """Score against top-1 per run, each path coloured by the scales it enters its blocks at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(scored))
    rows = math.ceil(len(scored) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(scored):]:
        ax.set_visible(False)
    for ax, (name, score) in zip(axes.flat, scored.items(), strict=False):  # the last row's spare axes stay empty
        for k, entry in enumerate(sorted(set(entries))):
            at = [j for j, e in enumerate(entries) if e == entry]
            ax.scatter([score[j] for j in at], [acc[j] for j in at], s=18, color=f"C{k}",
                       label="block 1 from " + ", ".join(f"S{s}" for s in entry))
        ax.legend(fontsize=7)
        ax.set_title(f"{name}: tau {kendall(score, acc):+.2f}")
        ax.set_xlabel("BossNAS score (-sum of block losses)")
        ax.set_ylabel("top-1 from scratch (%)")
    fig.tight_layout()
    atomic_write_figure(path, fig)
    plt.close(fig)
    print(f"\nplot: {path}")


def cmd_pareto(args) -> None:
    """Both families' zoos on one plot: top-1 with its 95% interval against params and against measured latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.store import Zoo

    zoos = [Zoo.load(z) for z in args.zoos]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    print("| zoo | family | entry | params | latency ms | top-1 [95%] |\n|---|---|---|---|---|---|")
    for zoo, colour in zip(zoos, ("#2563eb", "#dc2626", "#16a34a", "#9333ea"), strict=False):
        label = f"{zoo.name} ({zoo.family.title})"
        for e in zoo.entries:
            lo, hi = zoo.top1_interval(e)
            lat = f"{e.latency_ms:.2f}" if e.latency_ms is not None else "-"
            print(f"| {zoo.name} | {zoo.family.title} | {e.id} | {e.params / 1e3:.0f}K | {lat} | {e.top1:.2f} "
                  f"[{lo:.2f}, {hi:.2f}] |")
        for ax, cost in zip(axes, (lambda e: e.params, lambda e: e.latency_ms), strict=True):
            shown = sorted((e for e in zoo.entries if cost(e) is not None), key=cost)
            if not shown:
                continue
            bounds = [zoo.top1_interval(e) for e in shown]
            ax.errorbar([cost(e) for e in shown], [e.top1 for e in shown], fmt="o-", color=colour, label=label,
                        yerr=[[e.top1 - lo for e, (lo, _) in zip(shown, bounds, strict=True)],
                              [hi - e.top1 for e, (_, hi) in zip(shown, bounds, strict=True)]], capsize=2, ms=4)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters")
    axes[1].set_xlabel("latency, ms (median, batch 1, ONNX Runtime fp32, this machine)")
    for ax in axes:
        ax.set_ylabel("top-1 on the 10k test images (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write_figure(args.plot, fig)
    plt.close(fig)
    print(f"\nplot: {args.plot}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    gt = sub.add_parser("ground-truth", help="train the stratified paths from scratch")
    gt.add_argument("--out", default="runs/bossnas-gt")
    gt.add_argument("--epochs", type=float, default=2.0)
    gt.add_argument("--per-stratum", type=int, default=2)
    gt.add_argument("--noise-archs", type=int, default=4, help="paths trained again under other seeds")
    gt.add_argument("--noise-seeds", type=int, default=3, help="seeds per noise path, seed 0 included")
    gt.add_argument("--seed", type=int, default=0, help="which paths the strata draw")
    pk = sub.add_parser("picks", help="train the selector's picks and random paths of equal params")
    pk.add_argument("--preferred", required=True, help="a BossNAS preferred.json")
    pk.add_argument("--out", default="runs/bossnas-picks")
    pk.add_argument("--buckets", help="comma-separated indices into the preferred list (default: all)")
    pk.add_argument("--random", type=int, default=5, help="random paths per pick, params within 10%%")
    pk.add_argument("--epochs", type=float, default=2.0)
    pk.add_argument("--seed", type=int, default=0)
    rp = sub.add_parser("report", help="correlate the selector runs' scores with the ground truth")
    rp.add_argument("--gt", default="runs/bossnas-gt")
    rp.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR (holding scores.json, preferred.json)")
    rp.add_argument("--picks", help="a `picks` output folder")
    rp.add_argument("--plot", help="scatter of score vs ground truth, e.g. bench/bossnas-rating.png")
    pa = sub.add_parser("pareto", help="several zoos on one Pareto plot (params and latency)")
    pa.add_argument("--zoos", nargs="+", required=True)
    pa.add_argument("--plot", default="bench/zoos-pareto.png")
    for p in (gt, pk):
        p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
        p.add_argument("--shard", default="0/1", help="i/n: train every n-th path from the i-th (parallel runs)")
    args = ap.parse_args()
    if args.cmd in ("ground-truth", "picks"):
        torch.set_num_threads(args.threads)
    {"ground-truth": cmd_ground_truth, "picks": cmd_picks, "report": cmd_report, "pareto": cmd_pareto}[args.cmd](args)


if __name__ == "__main__":
    main()
