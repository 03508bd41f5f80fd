"""Micro-HyTra: the space's rules and size, arch JSON and ids, closed-form cost vs real modules, the supernet's paths,
extraction, ONNX and BN recalibration."""

from __future__ import annotations

import hashlib
import json
import random
import statistics

import pytest
import torch
import torch.nn.functional as F

from export.onnx import export_onnx, model_metadata, parity, session
from tests.test_cost import counted_macs
from tests.zoo_fixtures import FMNIST_CLASSES, PREPROCESSING
from zoo.families.hytra import (
    MICRO_HYTRA,
    HyTraArch,
    HyTraNet,
    HyTraSpace,
    HyTraSupernet,
    SelfAttention,
    block_paths,
    crossover,
    enumerate_archs,
    flops,
    mutate,
    params,
)
from zoo.layers import recalibrate_bn

S = MICRO_HYTRA
R50_LIKE = HyTraArch([(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "conv")] * 3)
VIT_LIKE = HyTraArch([(1, "att")] * 8)
BOT_LIKE = HyTraArch([(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "att")] * 3)
# every kind of input: stem keep (16 -> 64 channels) and halve, 14 -> 7 and 7 -> 4 halvings into ResAtt, identity
MIXED = HyTraArch([(0, "conv"), (1, "att"), (1, "conv"), (2, "att"), (2, "att"), (2, "conv"), (2, "att"), (2, "att")])
ALL_S0 = HyTraArch([(0, "conv")] * 8)


@pytest.fixture(scope="module")
def all_archs():
    return enumerate_archs(S)


@pytest.fixture(scope="module")
def supernet():
    """A supernet whose BNs have random affine parameters and statistics: with the fresh γ = 0 of each body's last
    BN, every body would add nothing and a wrong body would go unnoticed."""
    torch.manual_seed(0)
    net = HyTraSupernet(S)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, low in ((m.weight.data, 0.5), (m.bias.data, -0.5), (m.running_mean, -0.5), (m.running_var, 0.5)):
                t.copy_(torch.rand(t.shape, generator=g) + low)
    return net.eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, S.in_chans, S.img_size, S.img_size, generator=torch.Generator().manual_seed(seed))


# -- the space ----------------------------------------------------------------------------------------------------
def test_space_size_and_block_path_counts(all_archs):
    """The spec's counts, from the rules: 99 block-0 paths, 99/80/16 for a block-1 input at S0/S1/S2, 3,587 in all."""
    assert len(all_archs) == len(set(all_archs)) == 3587
    assert [len(block_paths(S, s)) for s in range(S.num_scales)] == [99, 80, 16]
    assert all(S.validate(a) is a for a in all_archs)


@pytest.mark.parametrize("layers, message", [
    ([(0, "att")] + [(0, "conv")] * 7, "'att' is not available at S0"),
    ([(0, "conv"), (2, "conv")] + [(2, "conv")] * 6, "goes from S0 to S2"),
    ([(2, "conv")] * 8, "goes from S0 to S2"),  # the first layer keeps or halves the stem's S0
    ([(1, "conv"), (0, "conv")] + [(0, "conv")] * 6, "goes from S1 to S0"),
    ([(0, "conv")] * 7, "has 8 layers; the architecture gives 7"),
    ([(0, "conv"), (1, "conv"), (2, "conv"), (3, "conv")] + [(3, "conv")] * 4, "layer 3 is at S3"),
])
def test_rule_violations_name_the_layer(layers, message):
    with pytest.raises(ValueError, match=message):
        S.validate(HyTraArch(layers))


@pytest.mark.parametrize("layers, message", [
    ([(0, "mlp")], "unknown op 'mlp'"),
    ([(-1, "conv")], "non-negative int"),
    ([(True, "conv")], "non-negative int"),
    ([(0, "conv", 1)], r"\[scale, op\] pair"),
    ("conv", "list of"),
])
def test_malformed_archs_are_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        HyTraArch(layers)


def test_arch_json_round_trip_and_stable_id():
    for arch in (R50_LIKE, MIXED):
        assert HyTraArch.from_dict(json.loads(arch.to_json())) == arch
        assert hash(HyTraArch.from_dict(arch.to_dict())) == hash(arch)
    # the canonical text is the contract behind the id: pinned here, written out by hand
    text = '{"layers":[[0,"conv"],[0,"conv"],[1,"conv"],[1,"conv"],[1,"conv"],[2,"conv"],[2,"conv"],[2,"conv"]]}'
    assert R50_LIKE.to_json() == text
    assert R50_LIKE.id == "hytra-L8-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    with pytest.raises(ValueError, match="exactly the field 'layers'"):
        HyTraArch.from_dict({"layers": [], "depth": 8})


def test_space_round_trip_and_hash():
    again = HyTraSpace.from_dict(json.loads(S.to_json()))
    assert again == S and again.hash == S.hash
    narrow = HyTraSpace.from_dict({**S.to_dict(), "scale_channels": [32, 64, 128]})
    assert narrow.hash != S.hash
    assert HyTraSpace.from_dict({**S.to_dict(), "description": "other words"}).hash == S.hash
    assert (S.mean, S.std) == ((0.2860,), (0.3530,))
    with pytest.raises(ValueError, match="bottleneck 8 is not a multiple of head_dim 16"):
        HyTraSpace.from_dict({**S.to_dict(), "scale_channels": [16, 32, 64]})


# -- cost -----------------------------------------------------------------------------------------------------------
def test_spec_figures():
    """Spec 2.2's examples and ranges (params in M to 3 decimals, MACs in M to 2 or 1)."""
    got = {name: (round(params(S, a) / 1e6, 3), round(flops(S, a) / 1e6, 2))
           for name, a in (("R50", R50_LIKE), ("ViT", VIT_LIKE), ("BoT", BOT_LIKE))}
    assert got == {"R50": (0.311, 9.17), "ViT": (0.096, 5.87), "BoT": (0.238, 8.08)}


def test_space_ranges(all_archs):
    p = [params(S, a) / 1e6 for a in all_archs]
    m = [flops(S, a) / 1e6 for a in all_archs]
    assert (round(min(p), 3), round(max(p), 3), round(statistics.median(p), 2)) == (0.039, 0.542, 0.27)
    assert (round(min(m), 1), round(max(m), 1), round(statistics.median(m), 1)) == (5.9, 9.9, 7.9)


def test_cost_equals_extracted_module(supernet, all_archs):
    x = _images(1)
    for arch in [R50_LIKE, VIT_LIKE, BOT_LIKE, MIXED, ALL_S0] + random.Random(0).sample(all_archs, 15):
        net = supernet.extract(arch)
        assert params(S, arch) == sum(p.numel() for p in net.parameters()), arch
        assert flops(S, arch) == counted_macs(net, x), arch


# -- supernet -------------------------------------------------------------------------------------------------------
def test_supernet_holds_exactly_the_union_of_all_paths(supernet, all_archs):
    """No module that no path runs, none missing: its 1.81M parameters are what sharing gives. (The spec's 1.85M
    matches also building the keep input at S2 for the third layer, which no path can feed.)"""
    used: set[int] = set()
    for arch in all_archs:
        stem, layers, head = supernet.path(arch)
        used.update(id(p) for m in (stem, head, *(m for layer in layers for m in layer)) for p in m.parameters())
    assert used == {id(p) for p in supernet.parameters()}


def test_forward_trains_exactly_the_path(all_archs):
    torch.manual_seed(0)
    net = HyTraSupernet(S).train()
    net(_images(4), MIXED).square().mean().backward()
    stem, layers, head = net.path(MIXED)
    path_params = {id(p) for m in (stem, head, *(m for layer in layers for m in layer)) for p in m.parameters()}
    with_grad = {id(p) for p in net.parameters() if p.grad is not None}
    assert with_grad == path_params
    assert sum(p.numel() for p in net.parameters() if p.grad is not None) == params(S, MIXED)


def test_extract_equals_supernet_path(supernet):
    x = _images(3)
    for arch in (R50_LIKE, VIT_LIKE, MIXED, ALL_S0):
        net = supernet.extract(arch)
        assert type(net) is HyTraNet and not net.training
        with torch.no_grad():
            assert (net(x) - supernet(x, arch)).abs().max().item() <= 1e-5
        supernet_tensors = {t.data_ptr() for t in supernet.state_dict().values()}
        assert not any(t.data_ptr() in supernet_tensors for t in net.state_dict().values())  # copies, not views


def test_forward_has_no_hidden_state(supernet):
    x = _images(2)
    with torch.no_grad():
        a, b, a_again = supernet(x, MIXED), supernet(x, R50_LIKE), supernet(x, MIXED)
    assert torch.equal(a, a_again) and not torch.allclose(a, b)


def test_attention_is_standard_not_transposed():
    """softmax(q·kᵀ/√d) over keys applied to v (SDPA's definition), not BossNAS search code's `v @ attn`."""
    torch.manual_seed(0)
    attn = SelfAttention(dim=32, num_heads=2, head_dim=16)
    x = torch.randn(2, 32, 7, 7)
    q, k, v = attn.qkv(x).flatten(2).unflatten(1, (3, 2, 16)).unbind(1)  # (B, heads, d, tokens)
    tokens = lambda t: t.transpose(-2, -1)
    expected = tokens(F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))).reshape(2, 32, 7, 7)
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_onnx_export_parity(supernet, tmp_path):
    net = supernet.extract(MIXED)
    path = export_onnx(net, tmp_path / "m.onnx", model_metadata(net, FMNIST_CLASSES, PREPROCESSING))
    sess = session(path)
    for n in (1, 5):
        diff, agree = parity(net, sess, _images(n, seed=n))
        assert diff < 1e-4 and agree == 1.0


def test_recalibrate_bn_gives_exact_batch_averages(supernet):
    net = supernet.extract(MIXED)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen: dict[torch.nn.Module, list[torch.Tensor]] = {bn: [] for bn in norms}
    hooks = [bn.register_forward_hook(lambda m, inputs, _: seen[m].append(inputs[0].detach())) for bn in norms]
    recalibrate_bn(net, [_images(8, seed=s) for s in range(3)])
    for h in hooks:
        h.remove()
    assert not net.training and all(bn.momentum == 0.1 for bn in norms)
    for bn in (norms[0], norms[-1]):
        inputs = torch.cat(seen[bn])
        assert torch.allclose(bn.running_mean, inputs.mean(dim=(0, 2, 3)), atol=1e-5)
        per_batch_var = torch.stack([t.var(dim=(0, 2, 3)) for t in seen[bn]]).mean(0)  # unbiased, as PyTorch keeps
        assert torch.allclose(bn.running_var, per_batch_var, rtol=1e-4, atol=1e-6)


def test_mutation_and_crossover_keep_paths_legal_and_reach_others(all_archs):
    rng = random.Random(0)
    children = [mutate(S, a, rng, 0.4, 0.3) for a in rng.sample(all_archs, 200)]
    assert all(S.validate(c) for c in children) and len(set(children)) > 150
    assert mutate(S, MIXED, rng, 1.0, 0.0) == MIXED  # no global choices; no layer redrawn
    crosses = [crossover(S, a, b, rng) for a, b in zip(rng.sample(all_archs, 200), rng.sample(all_archs, 200),
                                                       strict=True)]
    assert all(c is None or S.validate(c) for c in crosses) and any(c is None for c in crosses)
    assert crossover(S, R50_LIKE, R50_LIKE, rng) == R50_LIKE
