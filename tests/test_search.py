"""Search baselines (issue 12 item 5): AutoFormer evolution, aging evolution and random search share one memo (no
arch evaluated twice), one budget of distinct evaluations, and a bucket [min, max) on params and FLOPs."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from training.search import SEARCHES, SearchConfig, fits, plot_search, write_search
from zoo import BUILTIN_SPACES, Arch, flops, params

MINI = BUILTIN_SPACES["mini"]
BUCKET = {"min_params": 0.30e6, "max_params": 0.35e6, "min_flops": 16e6, "max_flops": 18e6}  # each bound binds
SMALL = {"population": 8, "parents": 4, "mutants": 6, "crossovers": 6, "sample": 3}


def param_fitness(arch) -> float:
    """A synthetic fitness with a known optimum: the most parameters the bucket allows."""
    return params(MINI, arch) / 1e6


class Counted:
    """A fitness that records every call, so tests see the order and the number of evaluations per arch."""

    def __init__(self):
        self.score, self.calls = param_fitness, []

    def __call__(self, arch) -> float:
        self.calls.append(arch)
        return self.score(arch)


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
def test_same_distinct_budget_no_arch_twice_and_both_bounds_hold(algorithm):
    fitness = Counted()
    cfg = SearchConfig(evaluations=60, seed=1, **BUCKET, **SMALL)
    result = SEARCHES[algorithm](MINI, fitness, cfg, progress=False)
    assert result.evaluations == len(result.scores) == len(fitness.calls) == 60
    assert max(Counter(fitness.calls).values()) == 1
    for arch in [*fitness.calls, result.best]:
        assert 0.30e6 <= params(MINI, arch) < 0.35e6 and 16e6 <= flops(MINI, arch) < 18e6, arch
    assert result.best_score == max(result.scores.values()) == param_fitness(result.best)


def test_a_bucket_is_half_open():
    arch = MINI.smallest_arch()
    p, f = params(MINI, arch), flops(MINI, arch)
    assert fits(MINI, SearchConfig(min_params=p, max_params=p + 1, min_flops=f, max_flops=f + 1), arch)
    assert not fits(MINI, SearchConfig(max_params=p), arch)
    assert not fits(MINI, SearchConfig(min_flops=f + 1), arch)


def test_evolution_children_are_never_visited_archs():
    """AutoFormer rejects visited archs: the last population is the `parents` best kept plus children that were all
    first proposed, and evaluated, in the last generation."""
    fitness = Counted()
    cfg = SearchConfig(evaluations=8 + 3 * 12, seed=0, max_params=0.3e6, **SMALL)
    result = SEARCHES["evolution"](MINI, fitness, cfg, progress=False)
    top, children = result.population[:cfg.parents], result.population[cfg.parents:]
    assert 0 < len(children) <= cfg.mutants + cfg.crossovers and len(fitness.calls) == 44
    assert children == fitness.calls[-len(children):]  # all evaluated in the last generation, none before
    assert all(t in fitness.calls[:-len(children)] for t in top)
    assert len(result.history) == 44 // cfg.population + 1  # every 8 evaluations, and at the end


def newer_is_worse() -> Counted:
    fitness = Counted()
    fitness.score = lambda arch: -len(fitness.calls)
    return fitness


def test_aging_removes_exactly_the_oldest_each_step():
    """Each arch scores worse than every older one, so the OLDEST member is always the BEST: removing the worst
    instead would leave a population other than the last P born. Budgets P, P+1, ... show every step."""
    population = SMALL["population"]
    births: list = []
    for steps in range(0, 12):
        fitness = newer_is_worse()
        cfg = SearchConfig(evaluations=population + steps, seed=3, max_params=0.4e6, **SMALL)
        result = SEARCHES["aging"](MINI, fitness, cfg, progress=False)
        assert fitness.calls[:len(births)] == births  # seeded: each run continues the shorter one
        births = fitness.calls
        assert result.population == births[steps:steps + population]  # oldest first, the oldest `steps` gone
    assert len(births) == population + 11


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
def test_a_seed_reproduces_the_search(algorithm):
    def run(seed):
        fitness = Counted()
        SEARCHES[algorithm](MINI, fitness, SearchConfig(evaluations=30, seed=seed, max_params=0.3e6, **SMALL),
                            progress=False)
        return fitness.calls

    assert run(5) == run(5) != run(6)


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
@pytest.mark.parametrize(("bucket", "message"), [
    ({"max_params": 1e3}, "its params range from 105,866"),
    ({"min_flops": 1e9}, "its FLOPs range from"),
    ({"min_params": 200_000.25, "max_params": 200_000.75}, "in 500 random draws"),  # in range, holds no arch
])
def test_a_bucket_without_an_arch_is_a_clear_error(algorithm, bucket, message):
    with pytest.raises(ValueError, match=f"no architecture of mini fits .*{message}"):
        SEARCHES[algorithm](MINI, param_fitness, SearchConfig(max_tries=500, **bucket), progress=False)


def test_an_inverted_bucket_is_refused():
    with pytest.raises(ValueError, match=r"min_params \(300,000\) must be below max_params"):
        SearchConfig(min_params=0.3e6, max_params=0.3e6)


TARGET = Arch(80, 6, (3, 2, 4, 3, 2, 4), (3.0, 2.0, 4.0, 3.0, 2.0, 4.0))


def genes_matched(arch) -> float:
    """A synthetic fitness that rewards closeness to TARGET gene by gene (14 at most): easy to climb by mutation,
    hard to hit by chance (each gene matches a random arch with probability 1/3)."""
    return (arch.embed_dim == TARGET.embed_dim) + (arch.depth == TARGET.depth) + \
        sum(h == t for h, t in zip(arch.num_heads, TARGET.num_heads, strict=False)) + \
        sum(r == t for r, t in zip(arch.mlp_ratios, TARGET.mlp_ratios, strict=False))


@pytest.mark.parametrize("algorithm", ["evolution", "aging"])
def test_evolution_climbs_where_random_search_does_not(algorithm):
    cfg = SearchConfig(evaluations=300, **SMALL)
    result = SEARCHES[algorithm](MINI, genes_matched, cfg, progress=False)
    rand = SEARCHES["random"](MINI, genes_matched, cfg, progress=False)
    assert result.history == sorted(result.history) and result.best_score > result.history[0]
    assert result.best_score >= 11 and result.best_score > rand.best_score, (result.best_score, rand.best_score)


def test_results_name_the_algorithm_the_cost_and_draw_both_bounds(tmp_path):
    cfg = SearchConfig(evaluations=20, **BUCKET, **SMALL)
    result = SEARCHES["aging"](MINI, param_fitness, cfg, progress=False)
    doc = json.loads(write_search(MINI, cfg, result, "param count", tmp_path).read_text())
    assert doc["algorithm"] == "aging" and doc["evaluations"] == len(doc["evaluated"]) == 20 and doc["seconds"] >= 0
    assert doc["settings"]["min_params"] == 0.30e6 and doc["history"] == result.history and len(doc["history"]) == 3
    assert doc["best"] == doc["evaluated"][0] and doc["best"]["score"] == result.best_score
    with Image.open(plot_search(MINI, cfg, result, "param count", tmp_path / "search.png")) as plot:
        assert plot.format == "PNG" and plot.width > 500


@pytest.mark.parametrize("change", [{"s_prob": float("nan")}, {"m_prob": 2.0}, {"seed": -1}, {"mutants": -1},
                                    {"evaluations": 0}])
def test_settings_out_of_range_are_named(change):
    [(name, _)] = change.items()
    with pytest.raises(ValueError, match=f"^{name} must be an? (int|float) in"):
        SearchConfig(**change)


@pytest.mark.parametrize("flag, value", [("--population", "0"), ("--generations", "nan"), ("--val-images", "-1"),
                                         ("--seed", "-1"), ("--evaluations", "1e30"), ("--max-params", "1e30"),
                                         ("--min-flops", "inf"), ("--sample", ""), ("--out", "")])
def test_cli_flags_are_refused_at_parse_time(capsys, flag, value):
    from training.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["search", "--run", "runs/x", flag, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"python -m training search: error: argument {flag}")


@pytest.mark.parametrize("algorithm", sorted(SEARCHES))
def test_every_algorithm_searches_a_hytra_space_through_its_family(algorithm):
    """Mutation and crossover are the family's (`Family.mutate`, `Family.crossover`): HyTra's keep every path legal."""
    from zoo.families.hytra import MICRO_HYTRA
    from zoo.families.hytra import params as hytra_params

    cfg = SearchConfig(evaluations=40, seed=0, max_params=150e3, **SMALL)
    result = SEARCHES[algorithm](MICRO_HYTRA, lambda a: hytra_params(MICRO_HYTRA, a) / 1e3, cfg, progress=False)
    assert result.evaluations == 40 and all(MICRO_HYTRA.validate(a) and fits(MICRO_HYTRA, cfg, a)
                                            for a in result.scores)
