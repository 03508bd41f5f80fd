"""Architectures of a PreZoo space trained from scratch, each on its own: the ground truth that ratings (the
supernet's inherited accuracy that `training pick` searches on, zero-cost scores, DARTS's weights, BossNAS, params)
are judged against, and the answer to "does weight sharing cost these archs accuracy?".

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_ground_truth --space mbconv-small [--archs 20] [--strata 5]
        [--epochs 2] [--lr 1e-2] [--seeds 0] [--zoo zoos/mbconv-fmnist] [--jobs 1] [--out runs/ground-truth]

Which archs: the space's params range cut at the quantiles of 5,000 random archs (the family's `random_arch`) into
`--strata` bins, `--archs / --strata` distinct random archs from each (seed 0), plus every entry of `--zoo` (its
archs trained alone, beside their one-shot accuracy). How: bench_baselines' recipe and machinery unchanged (AdamW,
one-cycle at `--lr`, label smoothing 0.1, flips and 2-pixel crops, batch 128, one thread per model; validated on the
5,000 images PreZoo holds out with seed 0, tested once on the 10,000 test images), each arch as its family's
standalone model, freshly initialised; resumable per arch (runs/ground-truth/SPACE/FAMILY/ARCH-sSEED). Raw results:
bench/data/ground-truth/SPACE.json (each arch's JSON, params, MACs, val and test top-1, per-image test correctness).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from bench.bench_baselines import Job, _listed, bounded, run_jobs, write_raw
from bench.report import DATA
from zoo.family import Family, space_by_name

DRAWS = 5000  # random archs whose params set the strata
MAX_ARCHS = 1000


def stratified(family: Family, space, archs: int, strata: int, seed: int) -> list:
    """`archs // strata` distinct random archs from each params stratum (cut at the quantiles of DRAWS draws)."""
    rng = random.Random(seed)
    draws = [family.random_arch(space, rng) for _ in range(DRAWS)]
    sizes = [family.params(space, a) for a in draws]
    ordered = sorted(sizes)
    cuts = [ordered[len(ordered) * k // strata] for k in range(1, strata)]
    stratum = [sum(size >= c for c in cuts) for size in sizes]
    chosen: dict[str, object] = {}
    for k in range(strata):
        distinct = list({a.id: a for a, at in zip(draws, stratum, strict=True) if at == k}.values())
        chosen.update({a.id: a for a in distinct[:archs // strata]})
    return list(chosen.values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", required=True, help="a built-in space, e.g. mbconv-small")
    ap.add_argument("--archs", type=bounded(int, 1, MAX_ARCHS), default=20, help="random archs, over all strata")
    ap.add_argument("--strata", type=bounded(int, 1, MAX_ARCHS), default=5)
    ap.add_argument("--zoo", type=Path, default=None, help="also train this zoo's entries from scratch")
    ap.add_argument("--seeds", type=_listed(bounded(int, 0, 2**31 - 1)), default=[0])
    ap.add_argument("--epochs", type=bounded(int, 1, 1000), default=2)
    ap.add_argument("--lr", type=bounded(float, 1e-6, 1.0), default=1e-2,
                    help="peak lr (default: what bench_baselines' sweep chose for the cnn, resnet and vit ladders)")
    ap.add_argument("--jobs", type=bounded(int, 1, 64), default=1, help="archs trained side by side")
    ap.add_argument("--out", type=Path, default=Path("runs/ground-truth"))
    ap.add_argument("--raw-dir", type=Path, default=DATA / "ground-truth")
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, or synthetic:<n> for smoke tests")
    ap.add_argument("--val-size", type=bounded(int, 1, 10**7), default=5000)
    ap.add_argument("--stop-after", type=bounded(int, 1, 1000), default=None,
                    help="train each arch at most this many epochs now (a rerun resumes)")
    ap.add_argument("--log-every", type=bounded(int, 1, 10**6), default=100, help="steps between progress lines")
    args = ap.parse_args(argv)
    try:
        args.family, args.space = space_by_name(args.space)
    except (KeyError, ValueError) as e:
        ap.error(f"--space: {e}")
    if args.archs < args.strata:
        ap.error(f"--archs {args.archs} gives no arch to each of --strata {args.strata}")
    return args


def zoo_archs(folder: Path, family: Family, space) -> list:
    """The zoo's entries' archs; the zoo must be of the same space."""
    from zoo.store import Zoo

    zoo = Zoo.load(folder)
    if zoo.space.hash != space.hash:
        raise SystemExit(f"--zoo {folder} is of space {zoo.space.name}, not {space.name}")
    return [e.arch for e in zoo.entries]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    family, space = args.family, args.space
    archs = stratified(family, space, args.archs, args.strata, seed=0)
    if args.zoo:
        archs += [a for a in zoo_archs(args.zoo, family, space) if a.id not in {b.id for b in archs}]
    out = args.out / space.name
    command = "python -m bench.bench_ground_truth " + " ".join(sys.argv[1:] if argv is None else argv)
    args.raw_dir.mkdir(parents=True, exist_ok=True)
    jobs = [Job(family.name, a.id, s, args.epochs, args.lr, "fixed", args.data, args.val_size,
                folder=out / family.name / f"{a.id}-s{s}", stop_after=args.stop_after, log_every=args.log_every,
                arch=json.dumps({"space": space.name, "arch": a.to_dict()}))
            for a in archs for s in args.seeds]
    finished = []

    def done(job: Job, result: dict | None) -> None:
        finished.append(job)
        if result is not None:
            write_raw(args.raw_dir, out, family.name, command, name=space.name, kind="ground-truth",
                      space=space.to_dict())
        print(f"{len(finished)}/{len(jobs)} archs {'done' if result else 'stopped'}", flush=True)

    failures = run_jobs(jobs, args.jobs, done)
    for message in failures:
        print(f"FAILED {message}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
