"""Search baselines (issue 12 item 5, issue 26 item 2): AutoFormer evolution, aging evolution, random search and the
ENAS-style controller share one memo (no arch evaluated twice), one budget of distinct evaluations, and a bucket
[min, max) on params and FLOPs. Every built-in family lists its choices as decisions for the controller."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import product

import pytest
from PIL import Image

from training.search import SEARCHES, SearchConfig, fits, plot_search, write_search
from zoo import BUILTIN_SPACES, Arch, flops, params
from zoo.family import get_family

FAMILY = get_family("vit")

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
    ({"min_params": 200_000.25, "max_params": 200_000.75}, "in 500 (random draws|controller samples)"),  # no arch
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
                                    {"evaluations": 0}, {"controller_lr": 0.0}, {"baseline_decay": 1.0},
                                    {"entropy_weight": -0.1}])
def test_settings_out_of_range_are_named(change):
    [(name, _)] = change.items()
    with pytest.raises(ValueError, match=f"^{name} must be an? (int|float) in"):
        SearchConfig(**change)


@pytest.mark.parametrize("flag, value", [("--population", "0"), ("--generations", "nan"), ("--val-images", "-1"),
                                         ("--seed", "-1"), ("--evaluations", "1e30"), ("--max-params", "1e30"),
                                         ("--min-flops", "inf"), ("--sample", ""), ("--out", ""),
                                         ("--controller-lr", "0"), ("--baseline-decay", "1"),
                                         ("--entropy-weight", "nan")])
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



def test_enas_searches_an_mbconv_space_through_its_decisions():
    from zoo.families.mbconv.layers import params as mbconv_params
    from zoo.families.mbconv.space import MBCONV_TINY as TINY

    cfg = SearchConfig(evaluations=60, seed=0, max_params=12_000, **SMALL)
    result = SEARCHES["enas"](TINY, lambda a: float(mbconv_params(TINY, a)), cfg, progress=False)
    assert result.evaluations == 60 and all(TINY.validate(a) and fits(TINY, cfg, a) for a in result.scores)
    assert {"stage0.width", "stage2.block1.op"} <= set(result.policy)


# -- enas: the controller, its learning, and the families' decisions ------------------------------------------------

def test_enas_learns_where_random_search_does_not():
    """REINFORCE on a fitness whose every decision counts: the controller's late samples score near the optimum (14)
    where random search's stay at chance (14 genes, each right with probability 1/3), and its policy concentrates
    on the target's choices."""
    cfg = SearchConfig(evaluations=300, **SMALL)
    result = SEARCHES["enas"](MINI, genes_matched, cfg, progress=False)
    rand = SEARCHES["random"](MINI, genes_matched, cfg, progress=False)
    late = lambda r: sum(list(r.scores.values())[-50:]) / 50
    assert result.evaluations == 300 and result.best_score == 14 and rand.best_score < 12
    assert late(result) > 10 > 6 > late(rand), (late(result), late(rand))
    assert result.policy["embed_dim"]["80"] > 0.8 and result.policy["heads0"]["3"] > 0.8, result.policy


def test_enas_climbs_the_bucket_on_params_in_any_units():
    """Under a budget, the most params it allows (archs over it rejected unrewarded): the late samples crowd under
    the bound (measured over seeds 0-5: 0.307-0.322M late against random's 0.228-0.250M). The advantage is in moving
    standard deviations of the reward, so the same search runs on the fitness in millions or in units."""
    cfg = SearchConfig(evaluations=200, seed=2, max_params=0.35e6, **SMALL)
    result = SEARCHES["enas"](MINI, param_fitness, cfg, progress=False)
    rand = SEARCHES["random"](MINI, param_fitness, cfg, progress=False)
    late = lambda r: sum(list(r.scores.values())[-50:]) / 50
    assert late(result) > 0.3 > 0.26 > late(rand), (late(result), late(rand))
    in_units = SEARCHES["enas"](MINI, lambda a: params(MINI, a), cfg, progress=False)
    assert list(in_units.scores) == list(result.scores)


def test_enas_stops_when_nothing_new_is_left_and_rewards_revisits():
    """A space of 2 archs under a budget of 5: both evaluated once, then `max_tries` samples find nothing new."""
    from zoo import ViTSpace

    two = ViTSpace(name="two", embed_dims=(8, 16), depths=(1,), num_heads=(1,), mlp_ratios=(1.0,), head_dim=8,
                   patch_size=4, img_size=8, in_chans=1, num_classes=2)
    fitness = Counted()
    fitness.score = lambda arch: arch.embed_dim
    result = SEARCHES["enas"](two, fitness, SearchConfig(evaluations=5, max_tries=300, **SMALL), progress=False)
    assert result.evaluations == len(fitness.calls) == 2 and result.best.embed_dim == 16
    assert result.policy["embed_dim"]["16"] > 0.6  # revisits rewarded from the memo: the better arch is learnt


def test_enas_writes_its_policy():
    import tempfile

    cfg = SearchConfig(evaluations=20, **SMALL)
    result = SEARCHES["enas"](MINI, param_fitness, cfg, progress=False)
    with tempfile.TemporaryDirectory() as out:
        doc = json.loads(write_search(MINI, cfg, result, "param count", out).read_text())
    assert doc["algorithm"] == "enas" and doc["settings"]["entropy_weight"] == cfg.entropy_weight
    assert set(doc["policy"]) >= {"depth", "embed_dim", "heads0", "mlp_ratio3"}
    assert all(abs(sum(row.values()) - 1) < 1e-6 for row in doc["policy"].values())  # float32 softmax
    assert "policy" not in json.loads(write_search(MINI, cfg, SEARCHES["random"](MINI, param_fitness, cfg,
                                                                                  progress=False), "x", out)
                                      .read_text())


def test_a_reinforce_step_moves_the_policy_towards_rewarded_decisions_and_away_from_punished_ones():
    from dataclasses import replace

    from training.search import Controller

    family = replace(FAMILY, build_arch=lambda space, choose: choose("d", ("a", "b", "c")))
    controller = Controller(family, MINI, SearchConfig(entropy_weight=0.0), random.Random(0))
    controller.sample()
    assert controller.probabilities()["d"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    controller.learn([("d", 1)], 1.0)
    p = controller.probabilities()["d"]
    assert p["b"] > 1 / 3 > p["a"] == pytest.approx(p["c"])
    controller.learn([("d", 1)], -5.0)
    assert controller.probabilities()["d"]["b"] < p["b"]


def test_a_decision_name_must_fix_its_options():
    from dataclasses import replace

    from training.search import Controller

    family = replace(FAMILY, build_arch=lambda space, choose: (choose("x", (1, 2)), choose("x", (1, 2, 3))))
    with pytest.raises(ValueError, match=r"decision 'x' of the ViT family offered \(1, 2\) before and \(1, 2, 3\)"):
        Controller(family, MINI, SearchConfig(), random.Random(0)).sample()


def test_enas_refuses_a_family_without_decisions():
    from dataclasses import replace

    from training.search import controllable

    with pytest.raises(ValueError, match="enas search samples an arch decision by decision, which the ViT family "
                                         "cannot list .*: use evolution, aging or random search"):
        controllable(replace(FAMILY, build_arch=None))


def every_arch(family, space) -> list:
    """Every arch `build_arch` reaches: its decision tree walked leaf by leaf (an odometer over option indices)."""
    out, path = [], []
    while True:
        sizes: list[int] = []

        def choose(name, options, sizes=sizes, path=path):
            sizes.append(len(options))
            return options[path[len(sizes) - 1] if len(sizes) <= len(path) else 0]

        out.append(family.build_arch(space, choose))
        path += [0] * (len(sizes) - len(path))
        k = max((i for i in range(len(sizes)) if path[i] + 1 < sizes[i]), default=-1)
        if k < 0:
            return out
        path = path[:k] + [path[k] + 1]


def small_spaces() -> dict:
    """One small space per built-in family with its every arch, enumerated without `build_arch`."""
    from zoo import ViTSpace
    from zoo.families.hytra import MICRO_HYTRA, all_archs
    from zoo.families.mbconv.space import MBConvArch, MBConvSpace, Stage

    vit = ViTSpace(name="t", embed_dims=(8, 16), depths=(1, 2), num_heads=(1, 2), mlp_ratios=(1.0, 2.0), head_dim=8,
                   patch_size=4, img_size=8, in_chans=1, num_classes=2)
    vits = [Arch(e, d, h, r) for d in vit.depths for e in vit.embed_dims
            for h in product(vit.num_heads, repeat=d) for r in product(vit.mlp_ratios, repeat=d)]
    mb = MBConvSpace(name="t", widths=((8, 12), (8,)), depths=(1, 2), kernels=(3, 5), expansions=(2,),
                     fused_expansions=(1, 2))
    stages = [[Stage(w, blocks) for w in mb.widths[s] for d in range(1, mb.depths[s] + 1)
               for blocks in product(mb.block_choices(s), repeat=d)] for s in range(mb.num_stages)]
    return {"vit": (vit, vits), "hytra": (MICRO_HYTRA, list(all_archs(MICRO_HYTRA))),
            "mbconv": (mb, [MBConvArch(tuple(p)) for p in product(*stages)])}


@pytest.mark.parametrize("family", ["vit", "hytra", "mbconv"])
def test_build_arch_reaches_exactly_the_space(family):
    """The decision tree's leaves are the space's archs, each once: nothing unreachable, nothing outside."""
    space, archs = small_spaces()[family]
    reached = every_arch(get_family(family), space)
    assert len(reached) == len(set(reached)) == len(archs) > 30 and set(reached) == set(archs)


def replay(space, arch) -> dict:
    """The decisions that build `arch`, by name (each family's names, as its `build_arch` docstring gives them)."""
    if space.family == "vit":
        return {"depth": arch.depth, "embed_dim": arch.embed_dim,
                **{f"heads{i}": h for i, h in enumerate(arch.num_heads)},
                **{f"mlp_ratio{i}": r for i, r in enumerate(arch.mlp_ratios)}}
    if space.family == "hytra":
        scales = [0] + [scale for scale, _ in arch.layers]
        return {f"layer{i}@S{scales[i]}": step for i, step in enumerate(arch.layers)}
    out = {}
    for s, stage in enumerate(arch.stages):
        out |= {f"stage{s}.width": stage.width, f"stage{s}.depth": len(stage.blocks)}
        for i, b in enumerate(stage.blocks):
            where = f"stage{s}.block{i}.{b.op}"
            out |= {f"stage{s}.block{i}.op": b.op, f"{where}.kernel": b.kernel, f"{where}.expansion": b.expansion,
                    f"{where}.se": b.se}
    return out


@pytest.mark.parametrize("name", ["mini", "ladder", "micro-hytra", "mbconv-tiny", "mbconv-fmnist"])
def test_build_arch_draws_valid_archs_and_reaches_every_random_and_extreme_one(name):
    from zoo.family import space_by_name

    family, space = space_by_name(name)
    rng = random.Random(0)
    drawn = [family.build_arch(space, lambda _, options: rng.choice(options)) for _ in range(200)]
    assert all(space.validate(a) is a for a in drawn) and len(set(drawn)) > 100
    for target in [*family.extreme_archs(space), *(family.random_arch(space, rng) for _ in range(200))]:
        values = replay(space, target)

        def choose(name, options, values=values):
            assert values[name] in options, (name, options)
            return values.pop(name)

        assert family.build_arch(space, choose) == target and not values  # every decision taken, none left
