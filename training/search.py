"""AutoFormer-style evolutionary search under a cost limit: the baseline PreNAS removes.

Population 50, 20 generations, the top 10 as parents, 25 mutants (depth/embed mutate with
probability 0.4, each layer's heads/ratio with 0.2) and 25 crossovers per generation; fitness is
top-1 on the held-out val split, through the sliced supernet. Every arch is evaluated once.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from zoo import Arch, SearchSpace, flops, params
from zoo.budget import FLOPS_LABEL
from zoo.io import atomic_write_figure, atomic_write_text


@dataclass
class EvolutionConfig:
    max_params: float | None = None
    max_flops: float | None = None
    population: int = 50
    generations: int = 20
    parents: int = 10
    mutants: int = 25
    crossovers: int = 25
    s_prob: float = 0.4
    m_prob: float = 0.2
    seed: int = 0
    max_tries: int = 10_000  # random draws allowed to fill a generation with archs under the limits


@dataclass
class SearchResult:
    best: Arch
    best_score: float
    evaluations: int
    seconds: float
    history: list[float] = field(default_factory=list)  # best score after each generation
    scores: dict[Arch, float] = field(default_factory=dict)  # every evaluated arch


def _fits(space: SearchSpace, cfg: EvolutionConfig, arch: Arch) -> bool:
    return (cfg.max_params is None or params(space, arch) <= cfg.max_params) and \
        (cfg.max_flops is None or flops(space, arch) <= cfg.max_flops)


def _random_arch(space: SearchSpace, rng: random.Random) -> Arch:
    depth = rng.choice(space.depths)
    return Arch(rng.choice(space.embed_dims), depth, tuple(rng.choice(space.num_heads) for _ in range(depth)),
                tuple(rng.choice(space.mlp_ratios) for _ in range(depth)))


def _mutate(space: SearchSpace, a: Arch, rng: random.Random, cfg: EvolutionConfig) -> Arch:
    depth = rng.choice(space.depths) if rng.random() < cfg.s_prob else a.depth
    embed = rng.choice(space.embed_dims) if rng.random() < cfg.s_prob else a.embed_dim
    heads = [a.num_heads[i] if i < a.depth else rng.choice(space.num_heads) for i in range(depth)]
    ratios = [a.mlp_ratios[i] if i < a.depth else rng.choice(space.mlp_ratios) for i in range(depth)]
    heads = [rng.choice(space.num_heads) if rng.random() < cfg.m_prob else h for h in heads]
    ratios = [rng.choice(space.mlp_ratios) if rng.random() < cfg.m_prob else r for r in ratios]
    return Arch(embed, depth, tuple(heads), tuple(ratios))


def _crossover(a: Arch, b: Arch, rng: random.Random) -> Arch | None:
    if a.depth != b.depth:  # as AutoFormer: only parents of the same depth
        return None
    pick = [rng.random() < 0.5 for _ in range(a.depth)]
    return Arch(rng.choice([a.embed_dim, b.embed_dim]), a.depth,
                tuple(x if p else y for p, x, y in zip(pick, a.num_heads, b.num_heads, strict=True)),
                tuple(x if p else y for p, x, y in zip(pick, a.mlp_ratios, b.mlp_ratios, strict=True)))


def evolve(space: SearchSpace, fitness: Callable[[Arch], float], cfg: EvolutionConfig,
           progress: bool = True) -> SearchResult:
    """Maximise `fitness` over archs of `space` that fit the limits."""
    if not _fits(space, cfg, space.smallest_arch()):
        raise ValueError(f"no architecture of {space.name} fits max_params={cfg.max_params}, "
                         f"max_flops={cfg.max_flops}: the smallest has {params(space, space.smallest_arch()):,} "
                         f"params and {flops(space, space.smallest_arch()):,} FLOPs")
    rng = random.Random(cfg.seed)
    scores: dict[Arch, float] = {}
    t0 = time.perf_counter()

    def fill(make: Callable[[], Arch | None], n: int) -> list[Arch]:
        out: list[Arch] = []
        for _ in range(cfg.max_tries):
            if len(out) == n:
                break
            a = make()
            if a is not None and _fits(space, cfg, a) and a not in out:
                out.append(a)
        return out

    population = fill(lambda: _random_arch(space, rng), cfg.population)
    history = []
    bar = tqdm(range(cfg.generations), desc="evolution", unit="gen", disable=not progress)
    for _ in bar:
        for a in population:
            if a not in scores:
                scores[a] = fitness(a)
        ranked = sorted(scores, key=lambda a: -scores[a])
        top = ranked[:cfg.parents]
        history.append(scores[top[0]])
        bar.set_postfix(best=f"{scores[top[0]]:.2f}", evaluated=len(scores))
        mutants = fill(lambda top=top: _mutate(space, rng.choice(top), rng, cfg), cfg.mutants)
        crosses = fill(lambda top=top: _crossover(rng.choice(top), rng.choice(top), rng), cfg.crossovers)
        population = top + mutants + crosses
    for a in population:
        if a not in scores:
            scores[a] = fitness(a)
    best = max(scores, key=lambda a: scores[a])
    return SearchResult(best, scores[best], len(scores), time.perf_counter() - t0, history, scores)


def write_search(space: SearchSpace, cfg: EvolutionConfig, result: SearchResult, fitness: str,
                 out_dir: str | Path) -> Path:
    """`search.json`: the budget, the settings, the best arch and every evaluated one (best first) with its
    params, FLOPs (MACs) and score, and the best score per generation; `fitness` says what the score is."""
    def row(a: Arch) -> dict:
        return {"id": a.id, "arch": a.to_dict(), "params": params(space, a), "flops": flops(space, a),
                "score": result.scores[a]}

    ranked = sorted(result.scores, key=lambda a: -result.scores[a])
    doc = {"schema_version": 1, "kind": "prezoo.search", "space": space.name, "space_hash": space.hash,
           "fitness": fitness, "settings": asdict(cfg), "seconds": result.seconds, "best": row(result.best),
           "history": result.history, "evaluated": [row(a) for a in ranked]}
    path = Path(out_dir) / "search.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def plot_search(space: SearchSpace, cfg: EvolutionConfig, result: SearchResult, fitness: str,
                path: str | Path) -> Path:
    """Every evaluated arch against the budgeted cost (the best circled, the limit dashed), and the best score per
    generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost, limit, unit = (params, cfg.max_params, "M params") if cfg.max_params is not None \
        else (flops, cfg.max_flops, f"M {FLOPS_LABEL}")
    archs = list(result.scores)
    fig, (ax, gens) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110, width_ratios=(2, 1))
    ax.scatter([cost(space, a) / 1e6 for a in archs], [result.scores[a] for a in archs], s=10, alpha=0.5,
               label=f"{len(archs)} evaluated")
    ax.scatter([cost(space, result.best) / 1e6], [result.best_score], s=80, facecolors="none", edgecolors="red",
               linewidths=1.8, label=f"best {result.best.id}")
    ax.axvline(limit / 1e6, color="grey", ls="--", lw=1, label="budget")
    ax.set_xlabel(unit)
    ax.set_ylabel(fitness)
    ax.legend(fontsize=8)
    gens.plot(range(1, len(result.history) + 1), result.history, marker="o")
    gens.set_xlabel("generation")
    gens.set_ylabel("best score so far")
    fig.suptitle(f"{space.name}: evolutionary search, population {cfg.population}, {cfg.generations} generations")
    fig.tight_layout()
    path = atomic_write_figure(path, fig)
    plt.close(fig)
    return path
