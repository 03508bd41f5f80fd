"""The MBConv family (zoo/families/mbconv): the space's rules and their messages, arch JSON and ids, closed-form cost
against the real modules (numel, FlopCounterMode) over many archs of both built-in spaces, the supernet's paths and
their extraction, sampling and search moves, the registry, timm, and a tiny zoo trained a few steps on synthetic data,
packaged, loaded by zoo.store and exported (ONNX, the HF folder) with the same outputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from operator import ne
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch

from export.cache import FILES, ExportCache
from tests.test_cost import counted_macs
from tests.test_export import assert_folder_loads_every_way
from training.__main__ import main as training_main
from training.package import package_run
from training.preferred import Buckets, Candidate, pick_preferred, preferred_doc, write_preferred
from training.search import SEARCHES, SearchConfig
from training.train import TrainConfig, train
from zoo import Zoo
from zoo.families.mbconv import FAMILY, MBConvNet, MBConvSupernet, PreZooMBConv
from zoo.families.mbconv.layers import FLOPS_RULE, flops, params, path_blocks
from zoo.families.mbconv.sampling import cost_range, crossover, extreme_archs, mutate, random_arch
from zoo.families.mbconv.space import (
    BUILTIN_SPACES,
    FUSED,
    MBCONV,
    MBCONV_FMNIST,
    MBCONV_TINY,
    OPS,
    RESIDUAL,
    MBConvArch,
    MBConvSpace,
    arch,
)
from zoo.family import FAMILIES, family_of_config, get_family, space_by_name

TINY, FMNIST = MBCONV_TINY, MBCONV_FMNIST
# every op, squeeze-excite on and off, a stride-2 first block of each op, a residual stem block (8 -> 8) and a
# widening one (8 -> 12, no shortcut), later blocks that always add their input
EVERY_OP = arch((8, [[RESIDUAL, 3, 1, False]]),
                (16, [[MBCONV, 5, 3, True], [FUSED, 3, 2, False]]),
                (24, [[FUSED, 3, 1, False], [MBCONV, 3, 2, False]]))
STRIDED = [*(arch((12, [[MBCONV, 3, 2, False]]), (8, [[op, 3, 1, False]]), (16, [[op, 3, 1, False]]))
             for op in (FUSED, RESIDUAL)),
           arch((12, [[FUSED, 3, 2, False]]), (8, [[MBCONV, 5, 2, True]]),
                (16, [[MBCONV, 3, 3, True], [RESIDUAL, 3, 1, False]]))]


def _images(space: MBConvSpace, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, space.in_chans, space.img_size, space.img_size, generator=torch.Generator().manual_seed(seed))


def _random_bn(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """BNs with random affine parameters and statistics: with fresh ones (γ = 0 after a stage's first block) a wrong
    slice would go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, low in ((m.weight.data, 0.5), (m.bias.data, -0.5), (m.running_mean, -0.5), (m.running_var, 0.5)):
                t.copy_(torch.rand(t.shape, generator=g) + low)
    return net


@pytest.fixture(scope="module")
def supernets() -> dict[str, MBConvSupernet]:
    torch.manual_seed(0)
    return {name: _random_bn(MBConvSupernet(space)).eval() for name, space in BUILTIN_SPACES.items()}


def _archs(space: MBConvSpace, n: int, seed: int = 0) -> list[MBConvArch]:
    rng = random.Random(seed)
    return [*extreme_archs(space), *(random_arch(space, rng) for _ in range(n))]


# -- the space and its archs ------------------------------------------------------------------------------------------
def test_arch_json_round_trip_and_stable_id():
    for a in (EVERY_OP, *STRIDED):
        assert MBConvArch.from_dict(json.loads(a.to_json())) == a and TINY.validate(a) is a
    text = ('{"stages":[{"blocks":[["residual",3,1,false]],"width":8},{"blocks":[["mbconv",5,3,true],'
            '["fused",3,2,false]],"width":16},{"blocks":[["fused",3,1,false],["mbconv",3,2,false]],"width":24}]}')
    assert EVERY_OP.to_json() == text  # the canonical text behind the id, written out by hand
    assert EVERY_OP.id == "mbconv-B5-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    assert EVERY_OP.describe() == "8: R | 16: M5e3s F3e2 | 24: F3e1 M3e2"


def test_space_round_trip_hash_and_files(tmp_path):
    for space in BUILTIN_SPACES.values():
        again = MBConvSpace.from_dict(json.loads(space.to_json()))
        assert again == space and again.hash == space.hash
        path = tmp_path / f"{space.name}.yaml"
        space.save(path)
        assert MBConvSpace.load(path) == space
    assert MBConvSpace.from_dict({**TINY.to_dict(), "description": "other"}).hash == TINY.hash
    assert MBConvSpace.from_dict({**TINY.to_dict(), "kernels": [3]}).hash != TINY.hash
    two = MBConvSpace("x", widths=[[24, 16], [32]], depths=[1, 2])  # defaults fit any number of stages
    assert (two.widths, two.strides, two.ops) == (((16, 24), (32,)), (1, 2), (OPS, OPS))
    assert FMNIST.ops[0] == (FUSED, RESIDUAL)  # measured: MBConv at 28² costs 4-5x a dense conv per MAC


@pytest.mark.parametrize("field, value, message", [
    ("widths", [], r"'widths' must list 1 to 8 stages"),
    ("widths", None, r"'widths' must list 1 to 8 stages"),
    ("widths", [[8], [16, 16], [24]], r"'widths\[1\]' has duplicate values"),
    ("widths", [[8], [0], [24]], r"'widths\[1\]' must hold ints in \[1, 4096\], got 0"),
    ("depths", [1, 2], r"'depths' needs one value per stage \(3\)"),
    ("depths", [1, 2, 33], r"'depths\[2\]' must be an int in \[1, 32\], got 33"),
    ("strides", [1, 3, 2], r"'strides\[1\]' must be an int in \[1, 2\], got 3"),
    ("ops", [["mbconv"], ["attention"], ["fused"]], r"'ops\[1\]' must be a non-empty list of distinct ops"),
    ("ops", [["mbconv"]], r"'ops' needs one list of ops per stage \(3\)"),
    ("kernels", [3, 4], r"'kernels' must hold odd ints in \[1, 11\], got 4"),
    ("expansions", [True], r"'expansions' must hold ints in \[1, 16\], got True"),
    ("se", [1], r"'se' must be a non-empty list of distinct true/false"),
    ("stem_channels", 0, r"'stem_channels' must be an int in \[1, 4096\], got 0"),
    ("in_chans", "1", r"'in_chans' must be an int in \[1, 64\], got '1'"),
])
def test_bad_space_fields_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        MBConvSpace.from_dict({**TINY.to_dict(), field: value})


@pytest.mark.parametrize("space, stages, message", [
    (TINY, [(16, [[RESIDUAL, 3, 1, False]])] * 3, r"stage 0: width 16 is not allowed in space 'mbconv-tiny'; choose "
                                                  r"one of \[8, 12\]"),
    (TINY, [(8, [[RESIDUAL, 3, 1, False]] * 2)] * 3, r"stage 0 has 2 blocks; space 'mbconv-tiny' allows 1 to 1"),
    (FMNIST, [(16, [[MBCONV, 3, 3, False]]), (24, [[MBCONV, 3, 3, False]]), (48, [[MBCONV, 3, 3, False]])],
     r"stage 0 block 0: op 'mbconv' is not in stage 0 of space 'mbconv-fmnist' \(ops \['fused', 'residual'\]\)"),
    (TINY, [(8, [[MBCONV, 7, 2, False]])] + [(16, [[RESIDUAL, 3, 1, False]])] * 2,
     r"stage 0 block 0: kernel 7 is not allowed for 'mbconv' in space 'mbconv-tiny'; choose one of \[3, 5\]"),
    (TINY, [(8, [[FUSED, 3, 1, True]])] + [(16, [[RESIDUAL, 3, 1, False]])] * 2,
     r"stage 0 block 0: squeeze-excite true is not allowed for 'fused'.*\[false\]"),
    (TINY, [(8, [[RESIDUAL, 3, 2, False]])] + [(16, [[RESIDUAL, 3, 1, False]])] * 2,
     r"stage 0 block 0: expansion 2 is not allowed for 'residual'.*\[1\]"),
    (TINY, [(8, [[RESIDUAL, 3, 1, False]])] * 2, r"space 'mbconv-tiny' has 3 stages; the architecture gives 2"),
])
def test_rule_violations_name_the_stage_and_block(space, stages, message):
    with pytest.raises(ValueError, match=message):
        space.validate(arch(*stages))
    with pytest.raises(ValueError, match=message):  # nothing runs an arch outside its space
        params(space, arch(*stages))


@pytest.mark.parametrize("doc, message", [
    ({"stages": [], "depth": 3}, "exactly the field 'stages'"),
    ({"stages": []}, "stages must be a non-empty list"),
    ({"stages": [{"width": 8}]}, r"stages\[0\] must be a mapping with exactly 'width' and 'blocks'"),
    ({"stages": [{"width": 8, "blocks": []}]}, r"stages\[0\] needs at least one block"),
    ({"stages": [{"width": True, "blocks": []}]}, r"stages\[0\]: width must be a positive int"),
    ({"stages": [{"width": 8, "blocks": [["mbconv", 3, 3]]}]}, r"blocks\[0\] must be \[op, kernel, expansion, se\]"),
    ({"stages": [{"width": 8, "blocks": [["attn", 3, 3, False]]}]}, r"blocks\[0\]: unknown op 'attn'"),
    ({"stages": [{"width": 8, "blocks": [["mbconv", 3.0, 3, False]]}]}, "kernel must be a positive int"),
    ({"stages": [{"width": 8, "blocks": [["mbconv", 3, 3, 1]]}]}, "se must be true or false, got 1"),
])
def test_malformed_archs_are_refused(doc, message):
    with pytest.raises(ValueError, match=message):
        MBConvArch.from_dict(doc)


# -- cost -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, n", [("mbconv-tiny", 40), ("mbconv-fmnist", 20)])
def test_cost_equals_the_extracted_modules_numel_and_flop_count(supernets, name, n):
    space = BUILTIN_SPACES[name]
    x = _images(space, 1)
    for a in _archs(space, n, seed=3) + ([EVERY_OP, *STRIDED] if space is TINY else []):
        net = supernets[name].extract(a)
        assert params(space, a) == sum(p.numel() for p in net.parameters()), a.describe()
        assert flops(space, a) == counted_macs(net, x), a.describe()


def test_cost_range_is_exact_and_covers_every_draw():
    assert cost_range(FMNIST) == ((12_098, 2_048_058), (2_957_728, 177_135_104))
    for space in BUILTIN_SPACES.values():
        (p_lo, p_hi), (f_lo, f_hi) = cost_range(space)
        smallest, largest = extreme_archs(space)
        assert (params(space, smallest), params(space, largest)) == (p_lo, p_hi)
        for a in _archs(space, 300, seed=5):
            assert p_lo <= params(space, a) <= p_hi and f_lo <= flops(space, a) <= f_hi


def test_flops_rule_is_the_familys():
    assert FAMILY.flops_rule == FLOPS_RULE and "squeeze-excite's two 1x1s" in FLOPS_RULE


# -- the supernet and its paths ---------------------------------------------------------------------------------------
def test_extract_equals_the_supernet_path(supernets):
    for name, space in BUILTIN_SPACES.items():
        x = _images(space, 3)
        for a in _archs(space, 8, seed=7) + ([EVERY_OP, *STRIDED] if space is TINY else []):
            net = supernets[name].extract(a)
            assert type(net) is MBConvNet and not net.training
            with torch.no_grad():
                torch.testing.assert_close(net(x), supernets[name](x, a), rtol=1e-5, atol=1e-5)
            supernet_tensors = {t.data_ptr() for t in supernets[name].state_dict().values()}
            assert not any(t.data_ptr() in supernet_tensors for t in net.state_dict().values())  # copies


def test_forward_has_no_hidden_state_and_runs_channels_last(supernets):
    net, x = supernets["mbconv-tiny"], _images(TINY, 2)
    other = arch((8, [[RESIDUAL, 3, 1, False]]), (8, [[FUSED, 3, 1, False]]), (16, [[RESIDUAL, 3, 1, False]]))
    with torch.no_grad():
        a, b, a_again = net(x, EVERY_OP), net(x, other), net(x, EVERY_OP)
        features = net.extract(EVERY_OP).forward_features(x)
    assert torch.equal(a, a_again) and not torch.allclose(a, b)
    assert features.is_contiguous(memory_format=torch.channels_last)


def test_training_reaches_exactly_the_paths_slots():
    """Gradients reach the stem, the head and the slot of each block's op, and nothing else (other ops, skipped
    slots); BN statistics of the path's slices move, the rest stay."""
    torch.manual_seed(0)
    net = MBConvSupernet(TINY).train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    net(_images(TINY, 4), EVERY_OP).square().mean().backward()
    slot = lambda name: name.split(".")[0] if name.startswith(("stem", "head")) else ".".join(name.split(".")[:4])
    used = {"stem", "head"} | {f"stages.{p.stage}.{p.index}.{p.block.op}" for p in path_blocks(TINY, EVERY_OP)}
    assert {slot(name) for name, p in net.named_parameters() if p.grad is not None} == used
    moved = {slot(k) for k, v in net.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert moved == used - {"head"}


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    plain = MBConvSupernet(TINY)
    dropping = MBConvSupernet(TINY, drop_path_rate=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = _images(TINY, 4)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x, EVERY_OP), dropping.eval()(x, EVERY_OP))
    assert max(dropping.drop_rates.values()) == 0.5 and dropping.drop_rates[0, 0] == 0.0


# -- sampling and search ----------------------------------------------------------------------------------------------
def test_draws_mutation_and_crossover_stay_in_the_space_and_reach_others():
    rng = random.Random(0)
    for space in BUILTIN_SPACES.values():
        draws = [random_arch(space, rng) for _ in range(300)]
        assert all(space.validate(a) for a in draws) and len(set(draws)) > 250
        assert {b.op for a in draws for st in a.stages for b in st.blocks} == set(OPS)
        children = [mutate(space, a, rng, 0.3, 0.3) for a in draws[:200]]
        assert all(space.validate(c) for c in children) and sum(map(ne, children, draws)) > 150
        assert mutate(space, draws[0], rng, 0.0, 0.0) == draws[0]
        crosses = [crossover(space, a, b, rng) for a, b in zip(draws[:100], draws[100:200], strict=True)]
        assert all(space.validate(c) for c in crosses)
        assert crossover(space, draws[0], draws[0], rng) == draws[0]
    smallest, largest = extreme_archs(FMNIST)
    assert [len(st.blocks) for st in smallest.stages] == [1, 1, 1]
    assert [len(st.blocks) for st in largest.stages] == list(FMNIST.depths)


@pytest.mark.parametrize("algorithm", ["evolution", "aging", "random"])
def test_every_search_finds_the_best_arch_under_a_budget(algorithm):
    """Through the family's draws, mutation and crossover (training.search): with fitness = params, the best arch
    found under the budget is at most the budget and every evaluated arch is of the space."""
    budget = 12_000
    seen = []
    fitness = lambda a: seen.append(TINY.validate(a)) or float(params(TINY, a))
    cfg = SearchConfig(evaluations=60, population=12, parents=4, mutants=6, crossovers=6, sample=4,
                       max_params=budget)
    result = SEARCHES[algorithm](TINY, fitness, cfg, progress=False)
    assert params(TINY, result.best) < budget and result.best_score == max(params(TINY, a) for a in seen)
    assert len(seen) == len(set(seen)) == result.evaluations == 60


# -- the registry, words, timm ----------------------------------------------------------------------------------------
def test_the_family_is_found_every_way(tmp_path):
    assert FAMILIES["mbconv"] is FAMILY is get_family("mbconv") and list(FAMILIES)[:3] == ["vit", "hytra", "mbconv"]
    assert space_by_name("mbconv-fmnist") == (FAMILY, FMNIST)
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"family": "mbconv", **TINY.to_dict()}))
    assert space_by_name(str(path)) == (FAMILY, TINY)
    assert family_of_config({"architecture": "prezoo_mbconv"}) is FAMILY
    assert FAMILY.calibrate_bn and FAMILY.pretrained is PreZooMBConv
    assert FAMILY.random_arch(TINY, random.Random(0)).family == TINY.family == "mbconv"


def test_words_and_tables():
    assert len(FAMILY.describe_choices(FMNIST).splitlines()) == 2
    assert FAMILY.describe_arch(TINY, EVERY_OP) == (
        "Stem 8 channels, 3 stages of 1, 2, 2 blocks (2 MBConv, 2 fused-MBConv, 1 residual; 1 with squeeze-excite) "
        "at widths 8, 16, 24 and resolutions 28², 14², 7², average pooling.")
    rows = FAMILY.layer_rows(TINY, EVERY_OP)
    assert len(rows) == 5 and all(len(r) == len(FAMILY.layer_headers) for r in rows)
    assert rows[0] == [0, 0, "residual", 3, 1, "–", "8 -> 8", 28, 1, "yes"]
    assert rows[1] == [1, 0, "MBConv", 5, 3, "yes", "8 -> 16", 14, 2, "–"]


def test_timm_builds_the_default_its_features_and_maps():
    model = timm.create_model("prezoo_mbconv").eval()
    space, a = PreZooMBConv.timm_default
    assert type(model) is PreZooMBConv and model.arch == a and model.space == space
    x = _images(space, 2)
    assert model(x).shape == (2, 10)
    features = timm.create_model("prezoo_mbconv", features_only=True).eval()
    # one map per stage: its width at 28², 14², 7² (the default: mbconv-fmnist's best entry, 16 / 40 / 96 channels)
    assert [f.shape[1:] for f in features(x)] == [(st.width, side, side) for st, side in zip(a.stages, (28, 14, 7),
                                                                                             strict=True)]
    maps = timm.create_model("prezoo_mbconv", num_classes=0, global_pool="")
    assert maps(x).shape == (2, maps.num_features, *maps.pretrained_cfg["pool_size"])
    rgb = timm.create_model("prezoo_mbconv", in_chans=3)
    assert rgb.stem.conv.weight.shape[1] == 3 and rgb(torch.randn(1, 3, 28, 28)).shape == (1, 10)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))
    with pytest.raises(ValueError, match="img_size=28"):
        timm.create_model("prezoo_mbconv", img_size=32)


# -- a tiny zoo, end to end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    """Three archs of mbconv-tiny in their own buckets, trained a few steps on synthetic data, evaluated, packaged."""
    root = tmp_path_factory.mktemp("mbconv")
    buckets = Buckets.default(TINY, "params")
    picked = [EVERY_OP, *extreme_archs(TINY)]
    candidates = [Candidate(a, params(TINY, a), flops(TINY, a), 0.0) for a in picked]
    doc = preferred_doc(TINY, {"method": "hand-picked"}, {}, buckets, pick_preferred(candidates, buckets, "params", 1),
                        family="mbconv")
    preferred = write_preferred(doc, root / "select")
    run = train(TrainConfig(space="mbconv-tiny", preferred=str(preferred), data="synthetic:256", augment=False,
                            epochs=1, batch_size=32, warmup_epochs=0, sandwich=0, out=str(root / "run"),
                            progress=False))
    assert training_main(["evaluate", "--run", str(run)]) == 0
    package_run(run, root / "zoo", "mbconv-tiny-test", progress=False)
    return root / "zoo"


@pytest.fixture(scope="module")
def tiny_zoo(zoo_dir) -> Zoo:
    return Zoo.load(zoo_dir)


def test_the_tiny_zoo_loads_with_each_entrys_statistics(tiny_zoo):
    assert tiny_zoo.family is FAMILY and tiny_zoo.space == TINY and tiny_zoo.doc["family"] == "mbconv"
    assert len(tiny_zoo.entries) == 3 and all(e.params == params(TINY, e.arch) for e in tiny_zoo.entries)
    entry = tiny_zoo.query(max_params=params(TINY, EVERY_OP))
    assert entry.params <= params(TINY, EVERY_OP)
    with torch.no_grad():  # the entry's own statistics, not the supernet's slices
        assert not torch.allclose(tiny_zoo.subnet(entry)(_images(TINY, 2)), tiny_zoo.supernet(_images(TINY, 2),
                                                                                              entry.arch))


def test_the_tiny_zoos_exports_equal_torch(tiny_zoo, tmp_path):
    cache, x = ExportCache(tmp_path / "cache"), _images(TINY, 4)
    for entry in tiny_zoo.entries:
        model = tiny_zoo.subnet(entry)
        with torch.no_grad():
            expected = model(x)
        onnx_file = cache.get(tiny_zoo, entry, "onnx") / FILES["onnx"][0]
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"pixel_values": x.numpy()})[0], expected.numpy(), rtol=1e-4,
                                   atol=1e-4)
        assert session.get_modelmeta().custom_metadata_map["prezoo.family"] == "mbconv"
    folder = cache.get(tiny_zoo, tiny_zoo.entries[-1], "safetensors")
    with torch.no_grad():
        assert_folder_loads_every_way(folder, x, tiny_zoo.subnet(tiny_zoo.entries[-1])(x), PreZooMBConv, MBConvNet,
                                      tiny_zoo.classes)
    card = (folder / "README.md").read_text()
    assert FAMILY.describe_arch(TINY, tiny_zoo.entries[-1].arch) in card and "zoo.PreZooMBConv" in card


def test_a_space_change_moves_the_hash_and_the_supernet_refuses_other_archs():
    wider = dataclasses.replace(TINY, widths=((8, 12), (8, 16), (16, 32)))
    assert wider.hash != TINY.hash
    with pytest.raises(ValueError, match=r"stage 2: width 32 is not allowed"):
        MBConvSupernet(TINY)(_images(TINY, 1), arch((8, [[RESIDUAL, 3, 1, False]]), (8, [[RESIDUAL, 3, 1, False]]),
                                                    (32, [[RESIDUAL, 3, 1, False]])))
