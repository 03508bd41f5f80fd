"""BossNAS's rating, measured: architectures of Micro-HyTra trained from scratch, against the selector's scores.

    .venv/bin/python -m bench.bench_bossnas ground-truth --out runs/bossnas-gt [--epochs 2] [--per-stratum 2]
    .venv/bin/python -m bench.bench_bossnas picks --preferred runs/bossnas/preferred.json --out runs/bossnas-picks
    .venv/bin/python -m bench.bench_bossnas report --gt runs/bossnas-gt --runs ensemble=runs/bossnas own=... \
        [--picks runs/bossnas-picks] [--pairs "ensemble vs own"] [--raw bench/data/bossnas/micro-hytra.json] \
        [--plot bench/bossnas-rating.png]
    .venv/bin/python -m bench.bench_bossnas report --onto bench/data/bossnas/micro-hytra.json --runs NAME=DIR ...
        [--zero-cost fashion-mnist] [--darts runs/darts-micro-hytra] [--one-shot runs/hytra-uniform] \
        [--enas runs/enas-micro-hytra/b*/search.json]
    .venv/bin/python -m bench.bench_bossnas report --from bench/data/bossnas/micro-hytra.json [--plot ...]

`ground-truth` trains a stratified set of paths (params tertile x ResAtt count, plus the R50-, ViT- and BoT-like
paths of spec 2.2) from scratch with one short recipe, and a few of them again under other seeds: their spread is
the noise ceiling of the ground truth. `picks` trains each bucket's BossNAS pick and random paths of the same
params (within 10%) with the same recipe. Results are JSON lines, appended as each path finishes, so an interrupted
run continues where it stopped.

`report` gathers what the tables need into one raw file (bench/data/bossnas/SPACE.json, from which
`python -m bench report` builds bench/RESULTS.md; renderer `bossnas`): every ground-truth row (each path's test top-1,
the re-runs' per seed), each selector run's block-loss tables and picks, the picks study's rows, and with
`--zero-cost DATA` / `--darts RUN` / `--one-shot RUN` / `--enas SEARCH...` the other selectors' scores of the
ground-truth paths, one per path (PreNAS's SNIP at initialisation, data-free and after a labelled batch; the
log-probability under DARTS's last logits; the held-out top-1 through a uniform supernet, ENAS's reward; the
log-probability under ENAS's last policy: issue 26's comparison on one ground truth). A run is kept as its
block-loss tables rather than as a score per path: the score of any of the space's 3,587 paths is the sum of one loss
per block (`training.bossnas.arch_score`), so 294 losses per run (13 KB) give every path's score exactly, and the
scale-centred rating is recomputed from them; a score per path rounded to 4 digits, with its params and input scale,
would take 79 KB a run and could not be centred. The tables:
each rating's (params, MACs, the other selectors', each run's) Kendall tau, Spearman rho and Pearson R against the
ground truth with bootstrap intervals, the noise ceiling, each run's size preference and ResAtt share, how much of
each score is the scale its blocks are entered from (and the rating without it), how far runs agree, and the picks
against random paths of equal params. `--onto RAW` adds to a committed raw file (runs join by name; a ground truth
or picks given replace its own; ratings join by name), so that a study longer than one session is gathered in parts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import bootstrap, correlations, kendall, t_half
from bench.report import DATA
from training.checks import IMAGES, Range
from training.data import load_data, make_loader
from training.evaluate import accuracy_of, tensor_batches
from zoo.families.hytra import MICRO_HYTRA, HyTraArch, HyTraNet, HyTraSpace, enumerate_archs, flops, params
from zoo.io import atomic_write_figure, atomic_write_text

SPACE = MICRO_HYTRA
HAND_PICKED = {  # spec 2.2's examples
    "R50-like": [(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "conv")] * 3,
    "ViT-like": [(1, "att")] * 8,
    "BoT-like": [(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "att")] * 3,
}
EQUAL_PARAMS = 0.1  # the picks study's random paths, and the hand-picked paths shown beside a pick: within 10%


def att_count(arch: HyTraArch) -> int:
    return sum(op == "att" for _, op in arch.layers)


def stratified_archs(space: HyTraSpace, per_stratum: int, seed: int) -> list[tuple[str, HyTraArch]]:
    """`per_stratum` random paths from each (params tertile, ResAtt count 0 / 1-3 / 4+) cell, then the hand-picked
    ones (in Micro-HyTra, whose layers they are written for): the ground truth spans both axes the rating could be
    biased along."""
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
    hand = HAND_PICKED if space == MICRO_HYTRA else {}
    return chosen + [(name, space.validate(HyTraArch(layers))) for name, layers in hand.items()]


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


def train_all(space: HyTraSpace, jobs: list[tuple[str, HyTraArch, int, dict]], out: Path, epochs: float,
              shard: str = "0/1", test_images: int | None = None) -> None:
    """Train every (label, arch, seed, extra fields) of this shard ("i/n": every n-th job from the i-th, so n
    processes share the cores) not yet in out/results.jsonl, appending each result as it finishes (one write per
    line). `test_images`: score on the first that many test images only (smoke runs; default all)."""
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
    if test_images is not None:
        test = torch.utils.data.Subset(test, range(min(test_images, len(test))))
    test_batches = tensor_batches(test)
    for k, (label, arch, seed, extra) in enumerate(todo, 1):
        r = train_from_scratch(space, arch, seed, epochs, train, test_batches)
        row = {"label": label, "id": arch.id, "arch": arch.to_dict(), "seed": seed, "params": params(space, arch),
               "att": att_count(arch), "epochs": epochs, "test_images": len(test), **extra, **r}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{k}/{len(todo)}] {label:9s} {arch.describe()}  {row['params'] / 1e3:.0f}K  top-1 {r['top1']:.2f}  "
              f"({r['train_seconds']:.0f} s)", flush=True)


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# -- commands ---------------------------------------------------------------------------------------------------------
def ground_truth_jobs(space: HyTraSpace, per_stratum: int, seed: int, noise_archs: int, noise_seeds: int
                      ) -> list[tuple[str, HyTraArch, int, dict]]:
    """The stratified paths under seed 0, then `noise_archs` of them spread over that list again under seeds 1 ..
    `noise_seeds` - 1."""
    archs = stratified_archs(space, per_stratum, seed)
    noisy = [archs[i] for i in np.linspace(0, len(archs) - 1, noise_archs).round().astype(int)]
    return ([(label, a, 0, {}) for label, a in archs]
            + [(label, a, s, {}) for label, a in noisy for s in range(1, noise_seeds)])


def cmd_ground_truth(args) -> None:
    jobs = ground_truth_jobs(SPACE, args.per_stratum, args.seed, args.noise_archs, args.noise_seeds)
    train_all(SPACE, jobs, Path(args.out), args.epochs, args.shard, args.test_images)


def equal_params_archs(space: HyTraSpace, pick: HyTraArch, n: int, tolerance: float, seed: int) -> list[HyTraArch]:
    """`n` random paths other than `pick` whose params lie within `tolerance` of its params."""
    p = params(space, pick)
    near = [a for a in enumerate_archs(space) if a != pick and abs(params(space, a) - p) <= tolerance * p]
    return random.Random(seed).sample(near, min(n, len(near)))


def preferred_picks(path: str | Path) -> tuple[HyTraSpace, list[dict]]:
    """A BossNAS preferred.json's space and its picks in bucket order, each with its bucket's bounds."""
    from training.preferred import load_preferred

    space, _ = load_preferred(path)  # checked: the space, its hash and every arch
    doc = json.loads(Path(path).read_text())
    return space, [{"bucket": [b["low"], b["high"]], "id": e["id"], "layers": e["arch"]["layers"]}
                   for b in doc["buckets"] for e in b["entries"]]


def cmd_picks(args) -> None:
    space, picks = preferred_picks(args.preferred)
    chosen = picks if args.buckets is None else [picks[int(k)] for k in args.buckets.split(",")]
    jobs = []
    for k, pick in enumerate(chosen):
        arch, bucket = HyTraArch(pick["layers"]), {"bucket": pick["bucket"]}
        jobs.append((f"pick{k}", arch, 0, bucket))
        jobs += [(f"random{k}", a, 0, bucket)
                 for a in equal_params_archs(space, arch, args.random, EQUAL_PARAMS, args.seed + k)]
    train_all(space, jobs, Path(args.out), args.epochs, args.shard, args.test_images)


# -- the raw file and its tables ----------------------------------------------------------------------------------
def load_run(run: str | Path) -> dict:
    """A selector run as the raw file keeps it: its selector settings, its block-loss tables (every path's score
    follows from them) and its picks with their buckets."""
    scores = json.loads((Path(run) / "scores.json").read_text())
    space, picks = preferred_picks(Path(run) / "preferred.json")
    if scores["space_hash"] != space.hash:
        raise ValueError(f"{run}: scores.json and preferred.json are of different spaces")
    selector = json.loads((Path(run) / "preferred.json").read_text())["selector"]
    return {"source": str(run), "space_hash": space.hash, "selector": selector,
            "blocks": [{"losses": b["losses"]} for b in scores["blocks"]], "picks": picks}


def raw_doc(space: HyTraSpace, gt_rows: list[dict], runs: dict[str, dict], pairs: list[tuple[str, str]],
            picks_rows: list[dict], ratings: dict[str, dict] | None = None) -> dict:
    """The raw results of one report: every ground-truth row (seed 0 and the re-runs), each selector run, the run
    pairs to compare, the picks study's rows, and the other selectors' scores of the ground-truth paths (`ratings`).
    Refused when the runs or the paths are of another space, or a rating misses a ground-truth path."""
    for name, run in runs.items():
        if run["space_hash"] != space.hash:
            raise ValueError(f"run {name} ({run['source']}) is not of space {space.name}")
    for r in gt_rows + picks_rows:
        space.validate(HyTraArch.from_dict(r["arch"]))
    for a, b in pairs:
        if a not in runs or b not in runs:
            raise ValueError(f"pair {a!r} vs {b!r} names a run not given (runs: {', '.join(runs)})")
    ids = {r["id"] for r in gt_rows if r["seed"] == 0}
    for name, r in (ratings or {}).items():
        if missing := ids - set(r["scores"]):
            raise ValueError(f"rating {name!r} has no score for {len(missing)} ground-truth paths: give it again")
    return {"kind": "prezoo.bench-bossnas", "space": space.to_dict(), "ground_truth": gt_rows, "runs": runs,
            "pairs": [list(p) for p in pairs], "picks": picks_rows, **({"ratings": ratings} if ratings else {})}


def gt_archs_by_id(rows: list[dict]) -> dict[str, HyTraArch]:
    """The ground truth's paths (seed 0), by id."""
    return {r["id"]: HyTraArch.from_dict(r["arch"]) for r in rows if r["seed"] == 0}


def zero_cost_ratings(space: HyTraSpace, archs: dict[str, HyTraArch], data: str) -> dict[str, dict]:
    """PreNAS's zero-cost score of each path (`training.zero_cost`: SNIP at initialisation, each path's own model
    from seed 0): data-free, as the selector scores, and after one labelled batch of `data`'s train split."""
    from training.config import ZeroCostConfig
    from training.zero_cost import scorer

    out = {}
    for name, source in (("snip", "gaussian"), ("snip (labels)", data)):
        score = scorer(ZeroCostConfig(space, data=source, progress=False))
        out[name] = {"source": f"training.zero_cost, data {source}", "scores": {i: score(a) for i, a in archs.items()}}
    return out


def darts_rating(space: HyTraSpace, archs: dict[str, HyTraArch], run: Path) -> dict:
    """Each path's log-probability under the last logits of the DARTS search whose bucket holds it (as
    `bench.bench_rating` rates MBConv archs)."""
    from bench.bench_rating import darts_searches, policy_scorer

    searches = darts_searches(space, Path(run))
    score = policy_scorer(space, searches)
    preferred = json.loads((Path(run) / "preferred.json").read_text())
    return {"source": str(run), "scores": {i: score(a) for i, a in archs.items()},
            "run": {"seconds": preferred["stats"]["seconds"], "archs_scored": preferred["stats"]["archs_scored"],
                    "searches": [{k: s[k] for k in ("low", "high", "target")} | s["history"][-1] for s in searches],
                    "picks": [{"id": e["id"], "params": e["params"], "score": e["score"]}
                              for b in preferred["buckets"] for e in b["entries"]]}}


def one_shot_rating(space: HyTraSpace, archs: dict[str, HyTraArch], run: Path) -> dict:
    """ENAS's reward for each path: its top-1 on all the held-out images of a uniformly trained HyTra supernet
    (`training.pick.validation_fitness`, what `training search` and `pick` score on), BatchNorm recalibrated."""
    from training.config import TrainConfig
    from training.evaluate import load_supernet
    from training.pick import validation_fitness

    supernet = load_supernet(Path(run) / "supernet.safetensors")
    if supernet.space.to_dict() != space.to_dict():
        raise ValueError(f"{run}'s supernet is of {supernet.space.name}, the ground truth of {space.name}")
    fitness, words = validation_fitness(TrainConfig.load(Path(run) / "config.json"), supernet, 0)
    return {"source": f"{run}: {words}", "scores": {i: fitness(a) for i, a in archs.items()}}


def enas_rating(space: HyTraSpace, archs: dict[str, HyTraArch], searches: list[Path]) -> dict:
    """Each path's log-probability under the last policy of the ENAS search (`training search --algorithm enas`, one
    per bucket) whose bucket holds it."""
    from bench.bench_rating import enas_searches, policy_scorer

    score = policy_scorer(space, enas_searches(space, [Path(s) for s in searches]))
    return {"source": " ".join(map(str, searches)), "scores": {i: score(a) for i, a in archs.items()}}


def report_darts_run(name: str, rating: dict) -> list[str]:
    """What the DARTS search behind a rating did, per bucket: where E[params] and the cheap share ended, the
    argmax path's params (DARTS's discretisation), and the bucket's pick with its NAS-val top-1."""
    run = rating["run"]
    secs = run["seconds"]
    lines = [f"{name} from `{rating['source']}`: {secs['warmup']:,.0f} s of warm-up and {secs['search']:,.0f} s of "
             f"searches on these cores, {run['archs_scored']} archs scored.", "",
             "| params bucket | E[params] at the end (target) | cheap share | argmax path's params | pick: params, "
             "NAS-val top-1 |", "|---|---|---|---|---|"]
    for s in run["searches"]:
        pick = next((p for p in run["picks"] if s["low"] <= p["params"] < s["high"]), None)
        cell = f"{pick['params'] / 1e3:.0f}K, {pick['score']:.1f}" if pick else "-"
        lines.append(f"| [{s['low'] / 1e3:.0f}K, {s['high'] / 1e3:.0f}K) | {s['expected_params'] / 1e3:.0f}K "
                     f"({s['target'] / 1e3:.0f}K) | {s['cheap_share']:.2f} | {s['argmax_params'] / 1e3:.1f}K | "
                     f"{cell} |")
    return lines


def scores_of(space: HyTraSpace, run: dict) -> dict:
    """A raw run's block-loss tables as the scores.json document `arch_score` reads."""
    return {"space": space.to_dict(), "blocks": run["blocks"]}


def rating(space: HyTraSpace, run: dict, archs: list[HyTraArch]) -> list[float]:
    """The run's rating of each arch: minus the sum of its block losses (higher is better)."""
    from training.bossnas import arch_score

    doc = scores_of(space, run)
    return [-arch_score(doc, a) for a in archs]


def noise_ceiling(rows: list[dict], truth: dict[str, float], draws: int = 2000, seed: int = 0) -> dict | None:
    """What a perfect rating could reach against this ground truth: the pooled seed-to-seed standard deviation of the
    paths trained under several seeds, then the mean tau/rho/R of the true accuracies (each path's seed-0 top-1
    stands for them) against one simulated re-run of the whole ground truth (that much Gaussian noise added): the
    ceiling (`perfect`); and between two simulated re-runs, which understates it (both sides noisy). None without
    re-runs."""
    by_arch: dict[str, list[float]] = {}
    for r in rows:
        by_arch.setdefault(r["id"], []).append(r["top1"])
    groups = [v for v in by_arch.values() if len(v) > 1]
    dof = sum(len(v) - 1 for v in groups)
    if not dof:
        return None
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


def att_share(space: HyTraSpace, archs: list[HyTraArch]) -> float:
    return sum(att_count(a) for a in archs) / (len(archs) * space.num_layers)


def tables(raw: dict) -> str:
    """Every table of the BossNAS rating study from its raw file (renderer `bossnas` of `python -m bench report`)."""
    space = HyTraSpace.from_dict(raw["space"])
    rows, runs = raw["ground_truth"], raw["runs"]
    truth = {r["id"]: r["top1"] for r in rows if r["seed"] == 0}
    archs = gt_archs_by_id(rows)
    ids = sorted(truth)
    acc, gt_archs, space_archs = [truth[i] for i in ids], [archs[i] for i in ids], enumerate_archs(space)
    epochs = {r["epochs"] for r in rows}
    lines = [f"`{space.name}`: {len(ids)} paths trained from scratch ({', '.join(f'{e:g}' for e in sorted(epochs))} "
             f"epoch(s), seed 0), top-1 on {rows[0]['test_images']:,} test images: {min(acc):.2f}–{max(acc):.2f}%.",
             "", noise_line(noise_ceiling(rows, truth)), "",
             "| rating | Kendall τ [95%] | Spearman ρ [95%] | Pearson R [95%] |", "|---|---|---|---|"]
    sizes, macs = [params(space, a) for a in gt_archs], [flops(space, a) for a in gt_archs]
    lines.append(f"| params alone (no search at all) | {_fmt(correlations(sizes, acc), bootstrap(sizes, acc))} |")
    lines.append(f"| MACs alone | {_fmt(correlations(macs, acc), bootstrap(macs, acc))} |")
    for name, r in raw.get("ratings", {}).items():
        score = [r["scores"][i] for i in ids]
        lines.append(f"| {name} | {_fmt(correlations(score, acc), bootstrap(score, acc))} |")
    for name, run in runs.items():
        score = rating(space, run, gt_archs)
        lines.append(f"| {name} | {_fmt(correlations(score, acc), bootstrap(score, acc))} |")
    lines += rating_replicates(raw.get("ratings", {}), ids)
    for name, r in raw.get("ratings", {}).items():
        if "run" in r:
            lines += [""] + report_darts_run(name, r)
    lines += ["", f"ResAtt share of the layers: the space {att_share(space, space_archs):.2f}, the ground truth "
              f"{att_share(space, gt_archs):.2f}.", ""]
    lines += report_agreement(space, runs, space_archs, [tuple(p) for p in raw["pairs"]])
    lines += [""] + report_input_scales(space, runs, gt_archs, acc, space_archs)
    if raw["picks"]:
        lines += [""] + report_picks(raw["picks"], rows)
    return "\n".join(lines) + "\n"


def rating_replicates(ratings: dict[str, dict], ids: list[str]) -> list[str]:
    """How far each rating agrees with its replicate under another seed (`report --tag s1`: the same name with the
    tag appended), ground truth aside: Kendall tau between their scores of the ground-truth paths."""
    pairs = [(tagged[1], name) for name in ratings
             if (tagged := re.fullmatch(r"(.+) s\d+", name)) and tagged[1] in ratings]
    if not pairs:
        return []
    score = lambda name: [ratings[name]["scores"][i] for i in ids]
    return ["", f"Each rating against its replicate under another seed, over the {len(ids)} paths (no ground truth "
            "involved): " + "; ".join(f"{a} vs {b}: τ {kendall(score(a), score(b)):+.2f}" for a, b in pairs) + "."]


def noise_line(ceiling: dict | None) -> str:
    if ceiling is None:
        return "Noise ceiling: no path was trained again under another seed, so none is given."
    p = ceiling["perfect"]
    return (f"Noise ceiling: {ceiling['paths']} paths trained again under other seeds, pooled seed-to-seed sd "
            f"{ceiling['seed_sd_pp']:.2f} pp ({ceiling['dof']} degrees of freedom). A perfect rating (the seed-0 "
            f"accuracies) against one simulated noisy re-run of the ground truth reaches τ {p['tau']:.2f}, ρ "
            f"{p['rho']:.2f}, R {p['R']:.2f}; two simulated re-runs agree to τ {ceiling['tau']:.2f}, ρ "
            f"{ceiling['rho']:.2f}, R {ceiling['R']:.2f} (both sides noisy: an understatement of the ceiling).")


def report_agreement(space: HyTraSpace, runs: dict[str, dict], space_archs: list[HyTraArch],
                     pairs: list[tuple[str, str]]) -> list[str]:
    """Each run's size preference (tau between its score and params over every path of the space: the ground truth
    rewards size, so a rating that prefers small paths cannot rank it) and its picks' ResAtt share, then how far the
    `pairs` of runs agree, ground truth aside: tau between their scores over the space, and how many buckets got the
    same pick (two seeds of one method: the selector's own noise)."""
    rated = {name: rating(space, run, space_archs) for name, run in runs.items()}
    sizes = [params(space, a) for a in space_archs]
    n = f"{len(space_archs):,}"
    lines = [f"| run | τ(score, params) over the {n} paths | ResAtt share of its picks |", "|---|---|---|"]
    for name, run in runs.items():
        picks = [HyTraArch(p["layers"]) for p in run["picks"]]
        lines.append(f"| {name} | {kendall(rated[name], sizes):+.2f} | {att_share(space, picks):.2f} |")
    if pairs:
        lines += ["", f"| runs compared (no ground truth involved) | τ between their scores over the {n} paths | "
                  "same pick |", "|---|---|---|"]
    for a, b in pairs:
        same = sum(x["layers"] == y["layers"] for x, y in zip(runs[a]["picks"], runs[b]["picks"], strict=True))
        lines.append(f"| {a} vs {b} | {kendall(rated[a], rated[b]):+.2f} | {same} of {len(runs[a]['picks'])} "
                     "buckets |")
    return lines


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


def report_input_scales(space: HyTraSpace, runs: dict[str, dict], gt_archs: list[HyTraArch], acc: list[float],
                        space_archs: list[HyTraArch]) -> list[str]:
    """How much of each run's score is the scale its blocks are entered from, and the rating with that part removed
    (scale_centred): tau against the ground truth and the size preference over the space."""
    which = "the block-1 input scale" if space.num_blocks == 2 else "the input scales of the blocks after the first"
    sizes = [params(space, a) for a in space_archs]
    lines = [f"| run | score variance explained by {which} (η², over the space) | scale-centred: τ [95%] | "
             "scale-centred: τ(score, params) |", "|---|---|---|---|"]
    for name, run in runs.items():
        centred = scale_centred(scores_of(space, run))
        score = rating(space, centred, gt_archs)
        tau, (lo, hi) = kendall(score, acc), bootstrap(score, acc)["tau"]
        size = kendall(rating(space, centred, space_archs), sizes)
        lines.append(f"| {name} | {scale_share(scores_of(space, run), space_archs):.2f} | {tau:+.2f} [{lo:+.2f}, "
                     f"{hi:+.2f}] | {size:+.2f} |")
    return lines


def _hand_picked_near(rows: list[dict], p: int) -> str:
    """The hand-picked ground-truth paths within EQUAL_PARAMS of `p` params: seed-0 top-1, and the re-runs' range."""
    cells = []
    for label in HAND_PICKED:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["seed"])
        if mine and abs(mine[0]["params"] - p) <= EQUAL_PARAMS * p:
            tops = [r["top1"] for r in mine]
            spread = (f" (seeds {mine[0]['seed']}–{mine[-1]['seed']}: {min(tops):.2f}–{max(tops):.2f})"
                      if len(mine) > 1 else "")
            cells.append(f"{label} ({mine[0]['params'] / 1e3:.0f}K): {tops[0]:.2f}{spread}")
    return "; ".join(cells) or "-"


def report_picks(rows: list[dict], gt_rows: list[dict]) -> list[str]:
    """Per pick: its top-1 against the random paths of equal params, same recipe, and the hand-picked ground-truth
    paths of equal params."""
    lines = [f"Picks vs random paths of equal params (±{EQUAL_PARAMS:.0%}), same recipe ({rows[0]['epochs']:g} "
             f"epoch(s), seed 0), top-1 on {rows[0]['test_images']:,} test images:", "",
             "| bucket | pick | params | pick top-1 | random paths of equal params: mean ± 95% t-interval (n) | "
             "pick's rank | hand-picked at equal params |", "|---|---|---|---|---|---|---|"]
    for k in sorted({int(r["label"][4:]) for r in rows if r["label"].startswith("pick")}):
        pick = next(r for r in rows if r["label"] == f"pick{k}")
        others = [r["top1"] for r in rows if r["label"] == f"random{k}"]
        spread = f" ± {t_half(others):.2f}" if len(others) > 1 else ""
        random_cell = f"{statistics.mean(others):.2f}{spread} ({len(others)})" if others else "- (0)"
        lo, hi = pick["bucket"]
        lines.append(f"| [{lo / 1e3:.0f}K, {hi / 1e3:.0f}K) | {HyTraArch.from_dict(pick['arch']).describe()} | "
                     f"{pick['params'] / 1e3:.0f}K | {pick['top1']:.2f} | {random_cell} | "
                     f"{1 + sum(o > pick['top1'] for o in others)} of {len(others) + 1} | "
                     f"{_hand_picked_near(gt_rows, pick['params'])} |")
    return lines


def read_onto(path: Path) -> dict:
    """The raw file `--onto` adds to, or SystemExit saying why it cannot be one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--onto {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "prezoo.bench-bossnas":
        raise SystemExit(f"--onto {path}: not a bench_bossnas raw file (kind prezoo.bench-bossnas)")
    return doc


def gathered(args) -> dict:
    """The raw document `report` writes: the ground truth, runs and picks given, on top of `--onto`'s raw file, so
    that a study longer than one session is gathered in parts (runs join by name; a ground truth or picks given
    replace the file's; `--pairs` replace its pairs, which otherwise stay, and without `--onto` default to every
    pair)."""
    base = read_onto(args.onto) if args.onto else {}
    if bad := [r for r in args.runs or [] if "=" not in r]:
        raise SystemExit(f"--runs takes NAME=RUN_DIR, got {', '.join(map(repr, bad))}")
    given = dict(r.split("=", 1) for r in args.runs or [])
    runs = base.get("runs", {}) | {name: load_run(run) for name, run in given.items()}
    space = HyTraSpace.from_dict(base["space"] if base else
                                 json.loads((Path(next(iter(given.values()))) / "scores.json").read_text())["space"])
    names = list(runs)
    pairs = ([tuple(p.split(" vs ", 1)) for p in args.pairs] if args.pairs is not None
             else [tuple(p) for p in base["pairs"]] if base
             else [(a, b) for k, a in enumerate(names) for b in names[k + 1:]])
    if bad := [" vs ".join(p) for p in pairs if len(p) != 2]:
        raise SystemExit(f"--pairs takes \"NAME vs NAME\", got {', '.join(map(repr, bad))}")
    gt = base["ground_truth"] if base and args.gt is None else read_results(Path(args.gt or "runs/bossnas-gt"))
    picks = read_results(Path(args.picks)) if args.picks else base.get("picks", [])
    archs, added = gt_archs_by_id(gt), {}
    try:
        if args.zero_cost:
            added |= zero_cost_ratings(space, archs, args.zero_cost)
        if args.darts:
            added["DARTS α"] = darts_rating(space, archs, args.darts)
        if args.one_shot:
            added["one-shot (ENAS's reward)"] = one_shot_rating(space, archs, args.one_shot)
        if args.enas:
            added["ENAS policy"] = enas_rating(space, archs, args.enas)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--zero-cost {args.zero_cost} / --darts {args.darts} / --one-shot {args.one_shot} / "
                         f"--enas {args.enas}: {e}") from None
    ratings = base.get("ratings", {}) | {f"{name} {args.tag}" if args.tag else name: r for name, r in added.items()}
    return raw_doc(space, gt, runs, pairs, picks, ratings)


def cmd_report(args) -> None:
    if args.from_raw:
        raw = json.loads(Path(args.from_raw).read_text())
    else:
        raw = gathered(args)
        out = args.raw or args.onto or DATA / "bossnas" / f"{HyTraSpace.from_dict(raw['space']).name}.json"
        atomic_write_text(out, json.dumps(raw) + "\n")
        print(f"wrote {out}; its tables in bench/RESULTS.md: python -m bench report\n")
    print(tables(raw))
    if args.plot:
        print(f"plot: {plot_rating(raw, args.plot)}")


def plot_rating(raw: dict, path: str | Path) -> Path:
    """Score against top-1 per run, each ground-truth path coloured by the scales it enters its blocks at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = HyTraSpace.from_dict(raw["space"])
    gt = sorted((r for r in raw["ground_truth"] if r["seed"] == 0), key=lambda r: r["id"])
    gt_archs, acc = [HyTraArch.from_dict(r["arch"]) for r in gt], [r["top1"] for r in gt]
    entries = [input_scales(space, a) for a in gt_archs]
    scored = {name: rating(space, run, gt_archs) for name, run in raw["runs"].items()}
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
    try:
        return atomic_write_figure(path, fig)
    finally:
        plt.close(fig)


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


def main(argv: list[str] | None = None) -> None:
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
    rp = sub.add_parser("report", help="gather the raw results into one file and print the tables it gives")
    rp.add_argument("--gt", help="a `ground-truth` output folder (default: runs/bossnas-gt, or --onto's rows)")
    rp.add_argument("--runs", nargs="+", help="NAME=RUN_DIR (holding scores.json, preferred.json)")
    rp.add_argument("--onto", type=Path, help="a raw file to add to (default --raw: the same file)")
    rp.add_argument("--picks", help="a `picks` output folder")
    rp.add_argument("--pairs", nargs="*", help='runs to compare, "NAME vs NAME" (default: every pair)')
    rp.add_argument("--zero-cost", metavar="DATA", help="rate the ground truth by PreNAS's zero-cost score too: "
                    "data-free, and after a labelled batch of DATA (e.g. fashion-mnist)")
    rp.add_argument("--darts", type=Path, help="rate it by a `python -m training darts` run's logits too")
    rp.add_argument("--one-shot", type=Path, help="rate it by a uniformly trained HyTra supernet (a `training train "
                    "--sampler uniform` run): each path's held-out top-1 through it, ENAS's reward")
    rp.add_argument("--enas", type=Path, nargs="+", help="rate it by `training search --algorithm enas` search.json "
                    "files (one per bucket): the log-probability under the last policy")
    rp.add_argument("--tag", help="appended to the names of the ratings this call adds (e.g. s1, another seed's: "
                    "replicates join beside the first instead of replacing it)")
    rp.add_argument("--raw", type=Path, help="raw results file (default: bench/data/bossnas/SPACE.json)")
    rp.add_argument("--from", dest="from_raw", type=Path, help="print the tables (and --plot) of this raw file")
    rp.add_argument("--plot", help="scatter of score vs ground truth, e.g. bench/bossnas-rating.png")
    pa = sub.add_parser("pareto", help="several zoos on one Pareto plot (params and latency)")
    pa.add_argument("--zoos", nargs="+", required=True)
    pa.add_argument("--plot", default="bench/zoos-pareto.png")
    for p in (gt, pk):
        p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
        p.add_argument("--shard", default="0/1", help="i/n: train every n-th path from the i-th (parallel runs)")
        p.add_argument("--test-images", type=Range(int, 1, IMAGES.high),
                       help="score on the first N test images only (smoke runs; default: all)")
    args = ap.parse_args(argv)
    if args.cmd == "report" and (args.from_raw is None) == (args.runs is None and args.onto is None):
        ap.error("report takes either --runs (and --gt), --onto RAW_FILE, or --from RAW_FILE")
    if args.cmd in ("ground-truth", "picks"):
        torch.set_num_threads(args.threads)
    {"ground-truth": cmd_ground_truth, "picks": cmd_picks, "report": cmd_report, "pareto": cmd_pareto}[args.cmd](args)


if __name__ == "__main__":
    main()
