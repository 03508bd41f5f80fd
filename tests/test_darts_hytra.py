"""The differentiable selector on a HyTra space (training.darts through `zoo.family.Relaxation`): one decision per
(layer, input scale), the exact Markov-chain E[params], the gates of the supernet's layers, and a whole search on a
small HyTra space file with synthetic images."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.test_darts import searched_in_two_buckets
from training.darts import decisions, sample_path
from training.preferred import load_preferred
from zoo.families.hytra import MICRO_HYTRA, HyTraSpace, all_archs, next_steps
from zoo.family import FAMILIES

HYTRA = FAMILIES["hytra"]
NAMES = decisions(MICRO_HYTRA)
SMALL = HyTraSpace("small-hytra", scale_channels=(16, 32, 64), head_dim=4, stem_channels=4, num_layers=4,
                   block_size=2)


def _one_hot(arch) -> dict[str, torch.Tensor]:
    uniform = {n: torch.ones(len(o)) / len(o) for n, o in NAMES.items()}
    taken = HYTRA.decisions_of(MICRO_HYTRA, arch)
    return {**uniform, **{n: torch.nn.functional.one_hot(torch.tensor(NAMES[n].index(step)), len(NAMES[n])).double()
                          for n, step in taken.items() if n in NAMES}}


def test_the_decisions_are_those_the_space_s_paths_take_with_the_options_their_input_scale_allows():
    asked = {n for a in all_archs(MICRO_HYTRA) for n in HYTRA.decisions_of(MICRO_HYTRA, a)}
    assert set(NAMES) == {n for n in asked if len(next_steps(MICRO_HYTRA, int(n.split("@S")[1]))) > 1}
    for name, options in NAMES.items():
        assert options == tuple(next_steps(MICRO_HYTRA, int(name.split("@S")[1])))


def test_expected_params_is_exact_for_one_arch_and_the_mean_under_per_decision_draws():
    cost, rng = HYTRA.relaxation.expected_params(MICRO_HYTRA), random.Random(1)
    for _ in range(40):
        a = HYTRA.random_arch(MICRO_HYTRA, rng)
        assert float(cost(_one_hot(a))) == HYTRA.params(MICRO_HYTRA, a)
    draws = [HYTRA.params(MICRO_HYTRA, HYTRA.build_arch(MICRO_HYTRA, lambda n, o: rng.choice(o))) for _ in range(4000)]
    uniform = {n: torch.ones(len(o)) / len(o) for n, o in NAMES.items()}
    assert float(cost(uniform)) == pytest.approx(sum(draws) / len(draws), rel=0.02)


def test_the_cheapest_option_of_each_decision_costs_least():
    cost = HYTRA.relaxation.expected_params(MICRO_HYTRA)
    for name, k in cost.cheapest(NAMES).items():
        assert float(cost.options[name][k]) == float(cost.options[name].min())


def test_gates_of_one_leave_the_forward_and_carry_gradients_to_every_drawn_decision():
    torch.manual_seed(0)
    net, x = HYTRA.supernet(MICRO_HYTRA).train(), torch.randn(4, 1, 28, 28)
    logits = {n: torch.randn(len(o), requires_grad=True) for n, o in NAMES.items()}
    for _ in range(4):
        a, gates, logp = sample_path(MICRO_HYTRA, logits, tau=1.0)
        assert logp < 0 and set(gates) == set(HYTRA.decisions_of(MICRO_HYTRA, a)) & set(NAMES)
        torch.manual_seed(1)
        plain = net(x, a)
        torch.manual_seed(1)
        gated = net(x, a, gates)
        assert torch.equal(plain, gated)
        grads = torch.autograd.grad(gated.square().sum(), [logits[n] for n in gates])
        assert all(g.abs().sum() > 0 for g in grads)


def test_darts_searches_a_hytra_space_and_writes_its_picks(tmp_path):
    space_file = tmp_path / "small-hytra.json"
    space_file.write_text(json.dumps({"family": "hytra", **SMALL.to_dict()}))
    (lo, hi), _ = HYTRA.cost_range(SMALL)
    out = tmp_path / "darts"
    doc = searched_in_two_buckets(str(space_file), lo, hi, out, "synthetic:256", warmup=3, steps=10, every=5,
                                  images=256)
    assert load_preferred(out / "preferred.json")[0] == SMALL and doc["family"] == "hytra"
    selector = doc["selector"]
    assert selector["collapse_guard"].startswith("none") and len(selector["searches"]) == 2
    assert all(s["stopped_at"] is None and [v for _, v in s["free_share"]] == [None, None]
               for s in selector["searches"])
    history = json.loads((out / "logits.json").read_text())["searches"][0]["history"]
    assert [h["step"] for h in history] == [5, 10] and all(0 < h["cheap_share"] < 1 for h in history)
    assert (out / "darts.png").stat().st_size > 1000
