"""How well each rating ranks a space's architectures: its score for every arch of a ground truth
(bench_ground_truth: archs trained from scratch, alone) against their test top-1, as Kendall tau, Spearman rho and
Pearson R with 95% bootstrap intervals over the archs (`python -m bench report`, renderer `rating`).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_rating --ground-truth bench/data/ground-truth/mbconv-small.json \
        --supernet runs/mbconv-small [--val-images 0] [--bossnas runs/bossnas-mbconv-small] \
        [--out bench/data/rating/mbconv-small.json]

Ratings, each timed on this machine:
- `params`, `MACs`: no search at all, the floor any selector has to clear;
- `one-shot`: top-1 on the supernet run's held-out images through the uniformly trained supernet, each path's
  BatchNorm recalibrated (`training.pick.validation_fitness`: what `python -m training pick` searches on, and the
  reward of the ENAS-style controller);
- `snip`: the zero-cost selector's score (`python -m training select` on an MBConv space, `training.zero_cost`):
  SNIP at initialisation, the sum of |theta * dL/dtheta| over the arch's standalone model freshly initialised (seed
  0) after one data-free batch of 64 Gaussian images, L the sum of the logits, as PreNAS's code scores;
- `snip (labels)`: the same after one batch of 64 of the run's training images, L their cross-entropy (the
  selector's `--data DATASET`);
- `DARTS α` (with `--darts RUN`, a `python -m training darts` folder): the arch's log-probability under the
  architecture logits its search ended with, from the search of the bucket that holds the arch's params (else the
  nearest target): how DARTS itself ranks paths, its weights read as a distribution over archs;
- `ENAS policy` (with `--enas SEARCH.json ...`, `python -m training search --algorithm enas` outputs, one per
  bucket): the same, under each search's last controller policy;
- `BossNAS` (with `--bossnas RUN`, a `python -m training bossnas` folder of an MBConv space): −Σ_k L_k, the arch's
  stage paths rated by the run's trained EB nets against its stage centres (`training.bossnas_mbconv.load_rater`;
  every stage path rated anew, each once). The raw file also gets, per stage, Kendall tau between the run's own
  ratings of its centre sample against the two centres it estimated (how far the ranking depends on the sample).
The ground truth must be of the supernet's dataset; its train/validation split may be another (a supernet of
another seed): no rating reads the test images the ground truth is scored on, and the one-shot rating reads only
the images its own supernet held out. The raw file records both splits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bench.common import kendall, machine
from bench.report import DATA
from training.bossnas_mbconv import load_rater
from training.config import TrainConfig, ZeroCostConfig
from training.darts import policy_of, search_for
from training.evaluate import load_supernet
from training.pick import validation_fitness
from training.search import log_probability
from training.zero_cost import scorer
from zoo.family import get_family
from zoo.io import atomic_write_text


def check_data(ground_truth: dict, train_cfg: TrainConfig) -> None:
    """The ground truth's accuracies must be on the dataset the supernet (and so every rating) learnt from."""
    if (theirs := ground_truth["models"][0]["data"]) != train_cfg.data:
        raise SystemExit(f"the ground truth was trained on {theirs!r}, the supernet on {train_cfg.data!r}: "
                         "a rating learnt on one dataset says nothing of accuracies on another")


def policy_scorer(space, searches: list[dict]) -> Callable:
    """An arch's log-probability under the policy of the search whose bucket holds it (`training.darts.search_for`:
    each search dict has low, high, target and its `policy`)."""
    family = get_family(space.family)

    def score(arch) -> float:
        return log_probability(space, arch, search_for(searches, family.params(space, arch))["policy"])

    return score


def darts_searches(space, run: Path) -> list[dict]:
    doc = json.loads((run / "logits.json").read_text())
    if doc["space"] != space.name:
        raise SystemExit(f"{run}: DARTS searched {doc['space']}, the ground truth is of {space.name}")
    return [{**s, "policy": policy_of(space, s["logits"][-1]["logits"])} for s in doc["searches"]]


def enas_searches(space, paths: list[Path]) -> list[dict]:
    searches = []
    for path in paths:
        doc = json.loads(path.read_text())
        if doc.get("algorithm") != "enas" or doc["space"] != space.name:
            raise SystemExit(f"{path}: not an ENAS search of {space.name}")
        low, high = doc["settings"]["min_params"] or 0, doc["settings"]["max_params"] or float("inf")
        searches.append({"low": low, "high": high, "target": math.sqrt(max(low, 1) * min(high, 1e12)),
                         "policy": doc["policy"]})
    return searches


def bossnas_rater(space, run: Path):
    """The rater of a BossNAS run of `space`, and what the raw file says of it: its folder, the seconds it took to
    load (data, rating views), and per stage the tau of its centre check."""
    t0 = time.perf_counter()
    rater = load_rater(run)
    if rater.cfg.space != space:
        raise SystemExit(f"{run}: BossNAS searched {rater.cfg.space.name}, the ground truth is of {space.name}")
    checks = [s["centre_check"]["rated"] for s in json.loads((run / "scores.json").read_text())["stages"]]
    centre_tau = [kendall([r["loss"] for r in rows], [r["other_centre"] for r in rows])
                  if rows and rows[0]["other_centre"] is not None else None for rows in checks]
    return rater, {"run": str(run), "load_seconds": round(time.perf_counter() - t0, 2), "target": rater.cfg.target,
                   "centre_paths": rater.cfg.centre_paths, "centre_tau": centre_tau}


def rate(ground_truth: dict, run: Path, val_images: int, darts: Path | None = None,
         enas: list[Path] | None = None, bossnas: Path | None = None) -> dict:
    """Every rating's score for every ground-truth arch, with each rating's seconds."""
    train_cfg = TrainConfig.load(run / "config.json")
    check_data(ground_truth, train_cfg)
    supernet = load_supernet(run / "supernet.safetensors")
    space, family = supernet.space, get_family(supernet.space.family)
    if ground_truth["space"] != space.to_dict():
        raise SystemExit(f"the ground truth is of another space than the supernet's ({space.name})")
    one_shot, words = validation_fitness(train_cfg, supernet, val_images)
    snip = scorer(ZeroCostConfig(space, progress=False))
    snip_labels = scorer(ZeroCostConfig(space, data=train_cfg.data, progress=False))
    archs = [(m, family.arch_from_dict(m["arch"]["arch"])) for m in ground_truth["models"]]
    ratings: dict[str, Callable] = {
        "params": lambda a: family.params(space, a), "MACs": lambda a: family.flops(space, a),
        "one-shot": one_shot, "snip": snip, "snip (labels)": snip_labels}
    if darts:
        ratings["DARTS α"] = policy_scorer(space, darts_searches(space, darts))
    if enas:
        ratings["ENAS policy"] = policy_scorer(space, enas_searches(space, enas))
    extra = {}
    if bossnas:
        rater, extra["bossnas"] = bossnas_rater(space, bossnas)
        ratings["BossNAS"] = lambda a: -rater.score(a)
    scores, seconds = {name: [] for name in ratings}, {}
    for name, fn in ratings.items():
        t0 = time.perf_counter()
        scores[name] = [fn(a) for _, a in archs]
        seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {len(archs)} archs in {seconds[name]:.1f} s", flush=True)
    return {"kind": "rating", "space": space.name, "machine": machine(),
            "ground_truth": {k: archs[0][0][k] for k in ("epochs", "lr", "schedule", "test_images", "data",
                                                         "val_size", "split_seed")},
            "supernet": {"run": asdict(train_cfg), "one_shot": words},
            "seconds": seconds, **extra,
            "archs": [{"id": a.id, "params": m["params"], "test_top1": m["test_top1"], "val_top1": m["val_top1"],
                       "scores": {name: scores[name][k] for name in ratings}}
                      for k, (m, a) in enumerate(archs)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ground-truth", type=Path, required=True, help="a bench_ground_truth raw file")
    ap.add_argument("--supernet", type=Path, required=True, help="a uniformly trained supernet's run folder")
    ap.add_argument("--val-images", type=int, default=0, help="held-out images per one-shot score (0: all)")
    ap.add_argument("--darts", type=Path, help="a `python -m training darts` output folder (its logits.json)")
    ap.add_argument("--enas", type=Path, nargs="+", help="`training search --algorithm enas` search.json files")
    ap.add_argument("--bossnas", type=Path, help="a `python -m training bossnas` output folder of the same space")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/data/rating/SPACE.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ground_truth = json.loads(args.ground_truth.read_text())
    doc = rate(ground_truth, args.supernet, args.val_images, args.darts, args.enas, args.bossnas)
    doc["command"] = "python -m bench.bench_rating " + " ".join(sys.argv[1:] if argv is None else argv)
    out = args.out or DATA / "rating" / f"{doc['space']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
