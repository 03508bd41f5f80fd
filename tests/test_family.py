"""Model families: a HyTra zoo is written, checked, queried, sliced and exported through the same store as a ViT zoo,
and the committed ViT zoo still loads and is rewritten byte for byte."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export.cache import ExportCache
from export.onnx import parity, run, session
from tests.test_store_schema import broken, removing, setting
from tests.zoo_fixtures import FMNIST_CLASSES, PREPROCESSING
from zoo import BudgetError, Zoo, ZooError
from zoo.families.hytra import MICRO_HYTRA, HyTraArch, HyTraNet, HyTraSupernet, flops, params
from zoo.family import FAMILIES, family_of, get_family
from zoo.layers import bn_statistics
from zoo.store import DEFAULT_ZOO, ZooEntry, write_zoo

S = MICRO_HYTRA
ARCHS = [HyTraArch([(1, "att")] * 8),  # ViT-like: the smallest
         HyTraArch([(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "att")] * 3),  # BoT-like: halving into either op
         HyTraArch([(0, "conv")] * 2 + [(1, "conv")] * 3 + [(2, "conv")] * 3)]  # ResNet-like: the largest
ACCURACY = [80.0, 86.0, 84.0]  # test inputs: the largest is dominated by the middle one
BATCHES_TRACKED = 70_000  # beyond float16's largest number (65,504): BN's batch counts must stay integers


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A supernet state with every BatchNorm drawn at random: a fresh body's last BN starts at γ = 0 and would make
    every body add nothing, so a wrong body would go unnoticed."""
    torch.manual_seed(seed)
    state = HyTraSupernet(S).state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            t.fill_(BATCHES_TRACKED)
        elif t.dim() == 1:  # BN's γ, β and statistics, conv and head biases
            low = 0.5 if name.endswith(("running_var", "weight")) else -0.5
            t.copy_(torch.rand(t.shape, generator=g) + low)
    return state


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, S.in_chans, S.img_size, S.img_size, generator=torch.Generator().manual_seed(seed))


def make_hytra_zoo(out, dtype: torch.dtype = torch.float32, state: dict[str, torch.Tensor] | None = None):
    """Each entry stores its path's BatchNorm statistics as the supernet holds them: its model equals the path."""
    entries = [ZooEntry(a, params(S, a), flops(S, a), acc, min(100.0, acc + 9), 0.5)
               for a, acc in zip(ARCHS, ACCURACY, strict=True)]
    supernet = HyTraSupernet(S)
    supernet.load_state_dict(_random_state() if state is None else state)
    return write_zoo(out, name="hytra-test", space=S, state=supernet.state_dict(), entries=entries,
                     classes=FMNIST_CLASSES, preprocessing=PREPROCESSING, weights_dtype=dtype, family="hytra",
                     path_stats={a.id: bn_statistics(supernet.extract(a)) for a in ARCHS}, dataset="fashion-mnist",
                     eval_protocol="test inputs")


@pytest.fixture(scope="module")
def hytra_dir(tmp_path_factory):
    return make_hytra_zoo(tmp_path_factory.mktemp("hytra") / "zoo")


@pytest.fixture(scope="module")
def hytra_zoo(hytra_dir) -> Zoo:
    return Zoo.load(hytra_dir)


# -- the registry ---------------------------------------------------------------------------------------------------
def test_registry_and_the_family_of_an_index():
    assert list(FAMILIES)[:2] == ["vit", "hytra"]  # built-in; others registered in this process follow
    assert family_of({}).name == "vit" and family_of({"family": "hytra"}).name == "hytra"
    assert get_family("hytra").spaces["micro-hytra"] is S
    for bad in ("resnet", 5, None):
        with pytest.raises(ValueError, match=r"unknown model family .*; known families: vit, hytra"):
            family_of({"family": bad})


# -- writing and loading ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_hytra_zoo_round_trip(tmp_path, dtype):
    state = _random_state()
    zoo = Zoo.load(make_hytra_zoo(tmp_path / "zoo", dtype, state))
    doc = json.loads((zoo.root / "zoo.json").read_text())
    assert doc["family"] == "hytra" and doc["weights"]["dtype"] == str(dtype)
    assert doc["flops_rule"] == FAMILIES["hytra"].flops_rule != FAMILIES["vit"].flops_rule
    assert zoo.family.name == "hytra" and zoo.space == S
    assert [e.arch for e in zoo.entries] == ARCHS and [e.top1 for e in zoo.entries] == ACCURACY
    supernet = zoo.supernet
    assert type(supernet) is HyTraSupernet and not supernet.training
    loaded = supernet.state_dict()
    assert loaded.keys() == state.keys()
    for name, t in state.items():
        expected = t.to(dtype).float() if t.is_floating_point() else t
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], expected), name
    assert loaded["stem.1.num_batches_tracked"].item() == BATCHES_TRACKED


def test_the_committed_vit_zoo_loads_and_is_rewritten_byte_for_byte(tmp_path):
    """No "family" in its index, the ViT's FLOPs rule: an existing zoo's index and weights are what write_zoo writes
    today (the index's key order aside: `profile` appended its latency protocol after the entries)."""
    zoo = Zoo.load(DEFAULT_ZOO)
    assert zoo.family is FAMILIES["vit"] and "family" not in zoo.doc
    own = ("schema_version", "kind", "name", "space", "space_hash", "classes", "preprocessing", "flops_rule",
           "weights", "entries")
    extra = {k: v for k, v in zoo.doc.items() if k not in own}
    dtype = getattr(torch, zoo.doc["weights"]["dtype"].removeprefix("torch."))
    out = write_zoo(tmp_path / "again", name=zoo.name, space=zoo.space, state=zoo.supernet.state_dict(),
                    entries=zoo.entries, classes=zoo.classes, preprocessing=zoo.preprocessing, weights_dtype=dtype,
                    **extra)
    assert json.loads((out / "zoo.json").read_text()) == zoo.doc
    assert (out / "supernet.safetensors").read_bytes() == (DEFAULT_ZOO / "supernet.safetensors").read_bytes()


def test_an_unknown_family_is_refused_on_write(tmp_path, hytra_zoo):
    with pytest.raises(ValueError, match=r"unknown model family 'resnet'; known families: vit, hytra"):
        write_zoo(tmp_path / "zoo", name="x", space=S, state=hytra_zoo.supernet.state_dict(), entries=[],
                  classes=FMNIST_CLASSES, preprocessing=PREPROCESSING, family="resnet")
    assert not (tmp_path / "zoo").exists()


TAMPERED = {
    "params off by one": (lambda doc, _: doc["entries"][1].update(params=doc["entries"][1]["params"] + 1),
                          r"entries\[1\]: says id/params/flops 'hytra-L8-\w+'/\d+/\d+ but its arch gives "
                          r"hytra-L8-\w+/\d+/\d+$"),
    "flops of another arch": (lambda doc, _: doc["entries"][0].update(flops=doc["entries"][2]["flops"]),
                              r"entries\[0\]: says id/params/flops"),
    "a layer skips a scale": (setting("entries.1.arch.layers.1", [2, "conv"]),
                              r"entries\[1\]\.arch: layer 1 goes from S0 to S2: a layer keeps its input's scale"),
    "attention at S0": (setting("entries.2.arch.layers.0", [0, "att"]),
                        r"entries\[2\]\.arch: layer 0: 'att' is not available at S0"),
    "a ViT arch": (setting("entries.0.arch", {"embed_dim": 64, "depth": 1, "num_heads": [1], "mlp_ratios": [1.0]}),
                   r"entries\[0\]\.arch: a HyTra architecture must be a mapping with exactly the field 'layers'"),
    "an unknown family": (setting("family", "resnet"),
                          r"zoo\.json: family: unknown model family 'resnet'; known families: vit, hytra"),
    "family not a string": (setting("family", ["hytra"]), r"zoo\.json: family: unknown model family \['hytra'\]"),
    # read as a ViT zoo, the HyTra space is what is wrong
    "family vit": (setting("family", "vit"), r"zoo\.json: space: unknown search space field\(s\) \['att_scales'"),
    "family dropped": (removing("family"), r"zoo\.json: space: unknown search space field\(s\) \['att_scales'"),
    "a space field": (setting("space.head_dim", 12), r"zoo\.json: space: S1's bottleneck 32 is not a multiple of "
                                                     r"head_dim 12"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_hytra_index_names_the_field(hytra_dir, tmp_path, case):
    change, message = TAMPERED[case]
    with pytest.raises(ZooError, match=message):
        Zoo.load(broken(hytra_dir, tmp_path, change))


# -- queries, slicing, export -----------------------------------------------------------------------------------------
def test_budget_queries_pick_the_right_entry(hytra_zoo):
    small, middle, large = (params(S, a) for a in ARCHS)
    assert small < middle < large
    assert hytra_zoo.query().arch == ARCHS[1]  # the most accurate
    assert hytra_zoo.query(max_params=middle - 1).arch == ARCHS[0]
    assert hytra_zoo.query(max_params=middle).arch == ARCHS[1]  # limits are inclusive
    assert hytra_zoo.query(max_flops=flops(S, ARCHS[0])).arch == ARCHS[0]
    assert [e.arch for e in hytra_zoo.pareto("params")] == ARCHS[:2]
    with pytest.raises(BudgetError, match=rf"fits max_params=10K; nearest: {ARCHS[0].id}") as e:
        hytra_zoo.query(max_params="10K")
    assert e.value.nearest[0].arch == ARCHS[0]


def test_the_extracted_subnet_equals_the_supernet_path(hytra_zoo):
    x = _images(4)
    for entry in hytra_zoo.entries:
        sub = hytra_zoo.subnet(entry)
        assert type(sub) is HyTraNet and not sub.training and sub.arch == entry.arch
        assert sum(p.numel() for p in sub.parameters()) == entry.params
        with torch.no_grad():
            assert torch.equal(sub(x), hytra_zoo.supernet(x, entry.arch))
    assert hytra_zoo.subnet(ARCHS[2].id).arch == ARCHS[2]
    with pytest.raises(ValueError, match="expected a HyTraArch, got ViTArch"):
        hytra_zoo.subnet(Zoo.load(DEFAULT_ZOO).entries[0].arch)


def test_onnx_exports_of_the_cache_run_the_hytra_subnet(hytra_zoo, tmp_path):
    cache = ExportCache(tmp_path / "cache")
    entry = hytra_zoo.entries[1]  # ResConv and ResAtt, both halvings
    model = hytra_zoo.subnet(entry)
    fp32 = cache.file(hytra_zoo, entry, "onnx")
    for n in (1, 5):
        diff, agree = parity(model, session(fp32), _images(n, seed=n))
        assert diff < 1e-4 and agree == 1.0
    x = _images(8).numpy()
    ref = run(session(fp32), x)
    scale = np.abs(ref).max()
    for fmt, tolerance in (("onnx-int8", 0.05), ("onnx-fp16", 0.005)):
        path = cache.file(hytra_zoo, entry, fmt)
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["prezoo.arch_id"] == entry.id and json.loads(meta["prezoo.arch"]) == entry.arch.to_dict()
        out = run(session(path), x)
        assert out.shape == ref.shape and np.abs(out - ref).max() < tolerance * scale, fmt
