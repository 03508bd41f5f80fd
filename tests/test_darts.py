"""The differentiable selector (training.darts) on mbconv-tiny with synthetic images: the supernet's gates, the
exact expected cost, the logits' movement under the cost term, the early stop on the skip share, preferred.json and
the command line's refusals."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from training.__main__ import main as training_main
from training.darts import DartsConfig, batches, decisions, nas_data, sample_path, search_bucket, warm_up
from training.preferred import load_preferred
from zoo.families.mbconv import FAMILY as MBCONV
from zoo.families.mbconv import MBConvSupernet
from zoo.families.mbconv.layers import params
from zoo.families.mbconv.relaxation import ExpectedParams, skip_share
from zoo.families.mbconv.sampling import build_arch, cost_range, random_arch
from zoo.families.mbconv.space import MBCONV_TINY as TINY

SMALL = dict(space="mbconv-tiny", data="synthetic:384", nas_train=192, nas_val=192, batch_size=32, warmup_steps=5,
             eval_every=10, eval_images=64)
NAMES = decisions(TINY)


def _images(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _supernet() -> MBConvSupernet:
    """A supernet whose later blocks' branches are not zero (they start at 0, and so do their gates' gradients)."""
    torch.manual_seed(0)
    net = MBConvSupernet(TINY)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    return net


def _drawn(rng: random.Random) -> tuple:
    """A random arch and the decisions it asked that have options, by name."""
    asked = {}

    def choose(name, options):
        asked[name] = rng.randrange(len(options))
        return options[asked[name]]

    a = build_arch(TINY, choose)
    return a, {n: k for n, k in asked.items() if n in NAMES}


def test_decisions_are_every_option_build_arch_asks():
    rng, seen = random.Random(0), set()
    for _ in range(300):
        seen |= set(_drawn(rng)[1])
    assert seen == set(NAMES)  # none missing, none that no arch asks
    assert all(len(options) > 1 for options in NAMES.values())


def test_gates_of_one_leave_the_forward_and_carry_gradients_to_every_gate_of_the_path():
    net, x, rng = _supernet().eval(), _images(4), random.Random(1)
    for _ in range(6):
        a, asked = _drawn(rng)
        gates = {n: torch.ones((), requires_grad=True) for n in asked}
        plain, gated = net(x, a), net(x, a, gates)
        assert torch.equal(plain, net(x, a, None)) and torch.equal(plain, gated)
        grads = torch.autograd.grad(gated.square().sum(), list(gates.values()))  # raises if a gate is unused
        assert all(g.abs() > 0 for g in grads), dict(zip(gates, grads, strict=True))


def test_gumbel_gates_are_one_hot_values_of_the_drawn_decisions():
    logits = {n: torch.randn(len(o), requires_grad=True) for n, o in NAMES.items()}
    a, gates, logp = sample_path(TINY, logits, tau=1.0)
    assert all(torch.equal(g.detach(), torch.tensor(1.0)) for g in gates.values()) and logp < 0
    out = _supernet().train()(_images(4), a, gates)
    out.square().mean().backward()
    assert {n for n, v in logits.items() if v.grad is not None and v.grad.abs().sum() > 0} == set(gates)


def test_expected_params_is_exact_for_one_arch_and_the_mean_under_uniform_choices():
    cost, rng = ExpectedParams(TINY), random.Random(2)
    uniform = {n: torch.ones(len(o)) / len(o) for n, o in NAMES.items()}
    for _ in range(40):
        a, asked = _drawn(rng)
        one_hot = {**uniform, **{n: torch.nn.functional.one_hot(torch.tensor(k), len(NAMES[n])).float()
                                 for n, k in asked.items()}}
        assert float(cost(one_hot)) == params(TINY, a)
    draws = [params(TINY, random_arch(TINY, rng)) for _ in range(4000)]  # random_arch: uniform per decision
    assert float(cost(uniform)) == pytest.approx(sum(draws) / len(draws), rel=0.03)


@pytest.fixture(scope="module")
def warmed():
    cfg = DartsConfig(**SMALL, steps=30, arch_lr=0.05)
    data = nas_data(cfg, TINY)
    return cfg, data, warm_up(cfg, TINY, data)


def _search(warmed, cost_weight: float, **kw):
    cfg, data, net = warmed
    cfg = DartsConfig(**{**SMALL, "steps": 30, "arch_lr": 0.05, "cost_weight": cost_weight, **kw})
    (lo, _), _ = cost_range(TINY)
    torch.manual_seed(0)
    return search_bucket(cfg, TINY, net, data, ExpectedParams(TINY), NAMES, lo, lo * 1.5, progress=False)


def test_a_large_cost_weight_drives_the_expected_params_down_and_picks_smaller_archs(warmed):
    free, costly = _search(warmed, 0.0), _search(warmed, 100.0)
    moved = lambda s: max(abs(v) for vs in s.logits[-1]["logits"].values() for v in vs)
    assert moved(free) > 0.05 and moved(costly) > 0.5  # the logits learn, from CE alone too
    start = float(ExpectedParams(TINY)({n: torch.ones(len(o)) / len(o) for n, o in NAMES.items()}))
    assert costly.history[-1]["expected_params"] < 0.7 * start < free.history[-1]["expected_params"]
    assert costly.history[-1]["argmax_params"] < free.history[-1]["argmax_params"]
    assert costly.history[-1]["free_share"] > free.history[-1]["free_share"]  # fewer blocks is cheaper
    assert [h["step"] for h in costly.history] == [10, 20, 30]
    assert all(c.params == params(TINY, c.arch) for c in costly.candidates)


def test_the_skip_share_stops_a_search_past_the_threshold(warmed):
    (_, hi), _ = cost_range(TINY)
    cfg, data, net = warmed
    cfg = DartsConfig(**{**SMALL, "steps": 30, "collapse_share": 0.01})
    s = search_bucket(cfg, TINY, net, data, ExpectedParams(TINY), NAMES, hi, 2 * hi, progress=False)
    assert s.stopped_at == 10 and len(s.history) == 1 and s.history[0]["free_share"] > 0.01
    never = DartsConfig(**{**SMALL, "steps": 20, "collapse_share": 1.0})
    assert search_bucket(never, TINY, net, data, ExpectedParams(TINY), NAMES, hi, 2 * hi, False).stopped_at is None


def test_skip_share_counts_skippable_slots_only():
    depth = lambda *p: torch.tensor(p)
    # mbconv-tiny: stage 0 has one slot; stages 1 and 2 each one skippable slot (index 1), skipped at depth 1
    assert skip_share(TINY, {"stage1.depth": depth(1.0, 0.0), "stage2.depth": depth(0.5, 0.5)}) == 0.75


def searched_in_two_buckets(space: str, lo: int, hi: int, out, data: str, warmup: int, steps: int, every: int,
                            images: int, command: tuple[str, ...] = ("darts",)) -> dict:
    """`training darts` (or another `command` meaning it) over two equal params buckets spanning [lo, hi]: its
    preferred.json, each entry checked to lie in its bucket."""
    width = int((hi - lo) / 2) + 1
    assert training_main([*command, "--space", space, "--data", data, "--nas-train", str(images // 2), "--nas-val",
                          str(images // 2), "--batch-size", "32", "--warmup-steps", str(warmup), "--steps", str(steps),
                          "--eval-every", str(every), "--eval-images", str(images // 6), "--arch-lr", "0.05",
                          "--low", str(lo), "--width", str(width), "--high", str(lo + 2 * width), "--out", str(out),
                          "--threads", "1"]) == 0
    doc = json.loads((out / "preferred.json").read_text())
    assert load_preferred(out / "preferred.json")[1]
    for b in doc["buckets"]:
        assert all(b["low"] <= e["params"] < b["high"] for e in b["entries"])
    return doc


def test_darts_writes_preferred_archs_in_their_buckets_and_its_history(tmp_path):
    (lo, hi), _ = cost_range(TINY)
    out = tmp_path / "darts"
    doc = searched_in_two_buckets("mbconv-tiny", lo, hi, out, "synthetic:384", warmup=5, steps=20, every=10,
                                  images=384)
    assert load_preferred(out / "preferred.json")[0] == TINY and doc["family"] == "mbconv"
    selector = doc["selector"]
    assert selector["method"] == "darts" and len(selector["searches"]) == 2
    assert all([step for step, _ in s["free_share"]] == [10, 20] for s in selector["searches"])
    logits = json.loads((out / "logits.json").read_text())
    assert set(logits["searches"][0]["logits"][-1]["logits"]) == set(NAMES)
    assert (out / "darts.png").stat().st_size > 1000


def test_select_with_method_darts_is_the_darts_command(tmp_path):
    """The issue's spelling, `select --method darts`, runs the same seeded search and writes the same picks."""
    (lo, hi), _ = cost_range(TINY)
    docs = [searched_in_two_buckets("mbconv-tiny", lo, hi, tmp_path / name, "synthetic:192", warmup=2, steps=4,
                                    every=2, images=192, command=command)
            for name, command in (("darts", ("darts",)), ("select", ("select", "--method", "darts")))]
    picks = [[[e["id"] for e in b["entries"]] for b in doc["buckets"]] for doc in docs]
    assert picks[0] == picks[1] and all(picks[0])


@pytest.mark.parametrize("kw, message", [
    (dict(steps=0), "steps must be an int in"),
    (dict(collapse_share=0.0), "collapse_share must be"),
    (dict(batch_size=500), "exceeds nas_train"),
    (dict(eval_images=1000), "eval_images 1000 exceeds nas_val"),
    (dict(cost_weight=float("nan")), "cost_weight must be"),
    (dict(space=3), "space must be a str"),
])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        DartsConfig(**{**SMALL, **kw})


def test_the_command_refuses_other_families_and_too_few_images(capsys):
    assert training_main(["darts", "--space", "mini"]) == 2
    assert "built from named decisions: hytra, mbconv" in capsys.readouterr().err
    assert training_main(["darts", "--space", "mbconv-tiny", "--data", "synthetic:100", "--nas-train", "64",
                          "--nas-val", "64", "--batch-size", "32", "--eval-images", "32"]) == 2
    assert "exceed the 100 images" in capsys.readouterr().err


def test_batches_are_full_and_cover_each_epoch():
    x, y = torch.arange(10).float(), torch.arange(10)
    it = batches(x, y, 4, seed=0)
    first = [next(it) for _ in range(2)]
    assert all(len(b[0]) == 4 for b in first)
    assert len({int(v) for b in first for v in b[1]}) == 8  # one epoch: no repeats


@pytest.mark.parametrize("space_name", ["mbconv-tiny", "mbconv-small", "micro-hytra"])
def test_decisions_of_rebuilds_every_arch_and_names_only_what_build_arch_asks(space_name):
    from zoo.family import space_by_name

    family, space = space_by_name(space_name)
    rng = random.Random(0)
    for _ in range(50):
        a = family.random_arch(space, rng)
        taken, asked = family.decisions_of(space, a), []

        def choose(name, options, taken=taken, asked=asked):
            assert taken[name] in options
            asked.append(name)
            return taken[name]

        assert family.build_arch(space, choose) == a and sorted(asked) == sorted(taken)


def test_log_probability_sums_the_policy_over_the_decisions_that_build_the_arch():
    from training.darts import policy_of, search_for
    from training.search import log_probability

    a, _ = _drawn(random.Random(3))
    # uniform: minus the log of every asked decision's option count
    counts = []
    build_arch(TINY, lambda name, options: counts.append(len(options)) or MBCONV.decisions_of(TINY, a)[name])
    assert log_probability(TINY, a, {}) == pytest.approx(-sum(math.log(n) for n in counts))
    # DARTS's logits as a policy: each asked decision's log-softmax at the arch's choice
    logits = {name: [0.5 * k - 1.0 for k in range(len(options))] for name, options in NAMES.items()}
    taken = MBCONV.decisions_of(TINY, a)
    expected = sum(float(torch.tensor(logits[n]).log_softmax(0)[NAMES[n].index(v)]) for n, v in taken.items()
                   if n in NAMES)
    assert log_probability(TINY, a, policy_of(TINY, logits)) == pytest.approx(expected, abs=1e-6)  # float32
    searches = [{"low": 0, "high": 10, "target": 5}, {"low": 10, "high": 100, "target": 50}]
    assert search_for(searches, 20) is searches[1] and search_for(searches, 1000) is searches[1]
    assert search_for(searches, 3) is searches[0]
