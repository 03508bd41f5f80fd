"""A zoo's entries picked out of a uniformly trained supernet by search: OFA's and BigNAS's last step, for any
family, and the way to a zoo for a family no zero-cost selector covers (MBConv).

In every params bucket (the family's default buckets for its space, as the selectors use), one search of
`training.search` runs over the bucket's archs, each scored by its top-1 on the images the run's training held out,
through the supernet (a family with `calibrate_bn` gets each path's BatchNorm statistics recalibrated first, as
its zoo will store them). The space's smallest and largest archs, which a sandwich-trained supernet trains at every
step (BigNAS), are scored too and compete in their buckets beside what the search found: a search of a few dozen
archs can miss them. The best `top_n` of each bucket are its preferred entries, written as a `preferred.json`
like the selectors' whose "selector" says how they were picked; `evaluate --preferred` and `package --preferred`
take it. Test images are touched only after the choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from training.config import JOBS, PickConfig, TrainConfig
from training.evaluate import accuracy, calibration_batches, load_supernet, path_stats, tensor_batches, validation_split
from training.preferred import Buckets, Candidate, pick_preferred, preferred_doc, write_preferred
from training.search import SEARCHES, SearchConfig, check_reachable
from training.workers import one_thread_pool
from zoo.family import Arch, Space, Supernet, get_family


def validation_fitness(train_cfg: TrainConfig, supernet: Supernet, val_images: int) -> tuple[Callable[[Arch], float],
                                                                                             str]:
    """Top-1 on the run's held-out images as a function of the arch, and what it is in words. A path whose family
    needs BatchNorm statistics of its own is recalibrated on the run's calibration images before it is scored."""
    space = supernet.space
    data, _ = validation_split(asdict(train_cfg), space)
    batches = tensor_batches(data, 500, limit=val_images or None)
    calibration = calibration_batches(train_cfg, space)

    def fitness(arch: Arch) -> float:
        stats = path_stats(supernet, [arch], calibration)
        return accuracy(supernet, arch, batches, stats=None if stats is None else stats[arch.id]).top1

    n = sum(len(y) for _, y in batches)
    which = f"all {n}" if n == len(data) else f"the first {n} of the {len(data)}"
    words = f"val top-1 (%) on {which} images held out of training, through the supernet" + \
        (" with each path's BatchNorm recalibrated" if calibration is not None else "")
    return fitness, words


def pick_buckets(space: Space, ratio: float | None) -> Buckets:
    """The family's params buckets for the space, or, with a `ratio`, buckets each `ratio` times the one before up to
    the same top, from the same bottom where that is a ratio grid's, else from the space's smallest arch (a finer
    grid gives more entries, so that a budget just under one entry falls less far)."""
    buckets = Buckets.default(space, "params")
    if ratio is None:
        return buckets
    low = buckets.low if buckets.ratio is not None else get_family(space.family).cost_range(space)[0][0]
    return Buckets(low, buckets.high, ratio=ratio)


def scored_candidates(train_cfg: TrainConfig, supernet: Supernet, cfg: PickConfig, groups: int, group: int,
                      progress: bool) -> tuple[list[Candidate], str]:
    """Every `groups`-th bucket from the `group`-th, each searched (group 0 also scores the space's extreme archs),
    with the fitness in words: one of `pick`'s processes, or all of its work when it runs alone. Interleaved, the
    groups share the larger buckets' slower archs."""
    space, family = supernet.space, get_family(supernet.space.family)
    fitness, words = validation_fitness(train_cfg, supernet, cfg.val_images)
    archs = family.extreme_archs(space) if group == 0 else []
    candidates = [Candidate(a, family.params(space, a), family.flops(space, a), fitness(a)) for a in archs]
    for low, high in pick_buckets(space, cfg.bucket_ratio).edges()[group::groups]:
        bucket = SearchConfig.of_population(cfg.population, evaluations=cfg.evaluations, min_params=low,
                                            max_params=high, seed=cfg.seed)
        try:
            check_reachable(space, bucket)
        except ValueError:  # a bucket past the space's cost range stays empty
            continue
        result = SEARCHES[cfg.algorithm](space, fitness, bucket, progress=progress and groups == 1)
        candidates += [Candidate(a, family.params(space, a), family.flops(space, a), score)
                       for a, score in result.scores.items()]
        if progress:
            print(f"[{low:,.0f}, {high:,.0f}) params: {result.best.id} val top-1 {result.best_score:.2f}% "
                  f"({result.evaluations} archs, {result.seconds:.0f} s)", flush=True)
    return candidates, words


def searched_group(run: str, cfg: PickConfig, groups: int, group: int, progress: bool) -> tuple[list[Candidate], str]:
    """`scored_candidates` in a worker process of `pick`, which reads the run itself."""
    run_dir = Path(run)
    return scored_candidates(TrainConfig.load(run_dir / "config.json"), load_supernet(run_dir / "supernet.safetensors"),
                             cfg, groups, group, progress)


def pick(run: str | Path, cfg: PickConfig, out: str | Path, progress: bool = True, jobs: int = 1) -> Path:
    """Search every bucket of the run's space and write `out/preferred.json`; returns its path. `jobs` processes
    (one thread each) search the buckets side by side; each bucket's search is seeded alike, so at one thread the
    picks do not depend on `jobs`."""
    JOBS.check("jobs", jobs)
    run = Path(run)
    train_cfg = TrainConfig.load(run / "config.json")
    supernet = load_supernet(run / "supernet.safetensors")
    space = supernet.space
    buckets = pick_buckets(space, cfg.bucket_ratio)
    start = time.perf_counter()
    if jobs == 1:
        groups = [scored_candidates(train_cfg, supernet, cfg, 1, 0, progress)]
    else:
        with one_thread_pool(jobs) as pool:
            futures = [pool.submit(searched_group, str(run), cfg, jobs, g, progress) for g in range(jobs)]
            groups = [f.result() for f in futures]
    selector = {"method": "search", "algorithm": cfg.algorithm, "fitness": groups[0][1], "run": str(run),
                "supernet_training": {"sampler": train_cfg.sampler, "sandwich": train_cfg.sandwich},
                **{k: v for k, v in asdict(cfg).items() if k != "algorithm"}}
    found = [c for candidates, _ in groups for c in candidates]
    candidates = list({c.arch.id: c for c in found}.values())  # a search may have met an extreme arch too
    stats = {"archs_scored": len(candidates), "seconds": round(time.perf_counter() - start, 1)}
    doc = preferred_doc(space, selector, stats, buckets, pick_preferred(candidates, buckets, "params", cfg.top_n),
                        family=get_family(space.family).name)
    return write_preferred(doc, out)
