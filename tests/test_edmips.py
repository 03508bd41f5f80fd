"""Mixed precision as a bytes budget (issue 26, item 3): the precision map, EdMIPS's search (`training.edmips`) and
the mixed-precision ONNX file (`export.mixed`), on real entries of both shipped zoos, through real ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.mixed import OPSET, export_mixed
from export.onnx import run, session
from training.__main__ import main as training_main
from training.edmips import EdmipsConfig, byte_table, endless, expected_bytes, fit, search, splits
from training.evaluate import tensor_batches, zoo_split
from zoo.precision import (
    BITS,
    check_map,
    fixed_bytes,
    folded,
    model_bytes,
    quantizable_layers,
    quantize,
    quantized,
    read_map,
    uniform,
    write_map,
)
from zoo.store import Zoo

VIT, HYTRA = ("ladder-fmnist", "e32-d1-b8d459ce"), ("hytra-fmnist", "hytra-L8-2ef57624")
# what a file holds besides the tensors `model_bytes` counts: torch's shape constants (measured: 236-264 B), and
# the graph, names and metadata (measured: 9-52 KB)
SHAPE_CONSTANTS_MAX = 1024
GRAPH_MAX = 64 * 1024
EXACT = 1e-4  # ORT with graph optimizations off computes what the fake-quantized torch model computes (~1e-6)
# with every optimization on, DequantizeLinear -> MatMul runs in MatMulNBits, which quantizes activations to int8 on
# the fly (measured: max |Δ logit| 1.5e-2 to 2.8e-2 on ViT entries; HyTra's convs stay exact)
SERVED = 0.1


def subnet(which: tuple[str, str]):
    zoo = Zoo.load(which[0])
    return zoo, zoo.subnet(which[1])


def mixed(model) -> dict[str, int]:
    """Every width of BITS, in turn over the layers."""
    return {name: BITS[i % len(BITS)] for i, name in enumerate(quantizable_layers(model))}


@pytest.fixture(scope="module")
def test_images() -> dict[str, torch.Tensor]:
    return {name: next(iter(tensor_batches(zoo_split(Zoo.load(name), "test")[0], 64, limit=64)))[0]
            for name in (VIT[0], HYTRA[0])}


@pytest.mark.parametrize("which", [VIT, HYTRA], ids=["vit", "hytra"])
def test_expected_bytes_are_the_files_tensor_bytes(which, tmp_path):
    zoo, model = subnet(which)
    bits = mixed(model)
    written = export_mixed(model, bits, tmp_path / "m.onnx", {})
    predicted = model_bytes(model, bits)
    assert 0 <= written.tensor_bytes - predicted <= SHAPE_CONSTANTS_MAX, (written, predicted)
    assert 0 < written.file_bytes - written.tensor_bytes <= GRAPH_MAX
    assert written.file_bytes == (tmp_path / "m.onnx").stat().st_size
    one_hot = torch.nn.functional.one_hot(torch.tensor([BITS.index(b) for b in bits.values()]), len(BITS))
    assert float(expected_bytes(one_hot, byte_table(model), fixed_bytes(model))) == predicted


@pytest.mark.parametrize("which", [VIT, HYTRA], ids=["vit", "hytra"])
def test_mixed_file_runs_in_ort_and_matches_the_fake_quantized_model(which, tmp_path, test_images):
    zoo, model = subnet(which)
    bits = mixed(model)
    originals = {n: m.weight for n, m in quantizable_layers(model).items()}
    path = export_mixed(model, bits, tmp_path / "m.onnx", {"prezoo.test": "1"}).path
    assert all(m.weight is originals[n] for n, m in quantizable_layers(model).items())  # the model is unchanged
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    stored = {t.data_type for t in proto.graph.initializer}
    assert {onnx.TensorProto.INT4, onnx.TensorProto.INT8, onnx.TensorProto.FLOAT16} <= stored
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["prezoo.precision_map"]) == bits and meta["prezoo.test"] == "1"
    x = test_images[which[0]]
    with quantized(folded(model), bits) as stored, torch.inference_mode():
        ref = stored(x).numpy()
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    exact = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"])
    assert np.abs(run(exact, x.numpy()) - ref).max() < EXACT
    served = run(session(path), x.numpy())
    assert np.abs(served - ref).max() < SERVED and (served.argmax(1) == ref.argmax(1)).mean() >= 0.95
    with torch.inference_mode():
        assert np.abs(model(x).numpy() - ref).max() > 0  # the quantization is real: fp32 answers otherwise


@pytest.mark.parametrize("name", ["hytra-fmnist", "mbconv-fmnist"])
def test_folding_each_convs_batch_norm_keeps_the_function_and_the_integers(name):
    zoo = Zoo.load(name)
    model = zoo.subnet(zoo.entries[3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    twin = folded(model)
    assert norms(model) > norms(twin) and model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is unchanged
    x = torch.randn(8, model.space.in_chans, model.space.img_size, model.space.img_size)
    with torch.inference_mode():
        assert torch.allclose(twin(x), model.eval()(x), atol=1e-4)
    # per-output-channel scales: a folded layer's int8 grid is the unfolded one's, channel signs aside (a float
    # rounding may move a value lying on a half-step)
    layers, twins = quantizable_layers(model), quantizable_layers(twin)
    changed = [layer for layer in layers if not torch.equal(layers[layer].weight, twins[layer].weight)]
    assert changed
    for layer in changed:
        (q, _), (q_folded, _) = quantize(layers[layer].weight, 8), quantize(twins[layer].weight, 8)
        off = (q_folded.int().abs() - q.int().abs()).abs()
        assert off.max() <= 1 and (off > 0).float().mean() < 1e-3, layer


def test_folding_refuses_a_conv_whose_output_is_read_besides_its_batch_norm():
    class Skip(torch.nn.Module):
        space = type("Space", (), {"in_chans": 1, "img_size": 8})

        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.bn.running_var.fill_(4.0)

        def forward(self, x):
            y = self.conv(x)
            return (self.bn(y) + y).mean((2, 3))

    with pytest.raises(ValueError, match="Skip: folding its BatchNorms into their convs changes its output"):
        folded(Skip())


def test_precision_map_refuses_unknown_layers_missing_layers_and_bits(tmp_path):
    _, model = subnet(VIT)
    good = uniform(model, 8)
    cases = [({**good, "blocks.9.nope": 8}, "lacks, e.g. 'blocks.9.nope'"),
             ({k: v for k, v in good.items() if k != "head"}, "lacks 1 of the model's 6 layers, e.g. 'head'"),
             ({**good, "head": 3}, "layer 'head': bits must be one of 4, 8, 16, 32"),
             ({**good, "head": True}, "got True"), ({**good, "head": "8"}, "got '8'"), ([8] * 6, "JSON object")]
    for bits, names in cases:
        with pytest.raises(ValueError, match="precision map|bits must|JSON object") as e:
            check_map(model, bits)
        assert names.split(", e.g.")[-1] in str(e.value), (names, str(e.value))
        with pytest.raises(ValueError):
            export_mixed(model, bits, tmp_path / "bad.onnx", {})
        assert not (tmp_path / "bad.onnx").exists()
    path = write_map(tmp_path / "map.json", {**good, "head": 2}, entry="x")
    with pytest.raises(ValueError, match=r"map\.json: layer 'head': bits must be one of"):
        read_map(path, model)
    assert read_map(write_map(tmp_path / "ok.json", good, entry="x"), model) == (good, json.loads(
        (tmp_path / "ok.json").read_text()))
    (tmp_path / "other.json").write_text('{"kind": "prezoo.zoo", "schema_version": 1}')
    with pytest.raises(ValueError, match="not a PreZoo prezoo.precision file"):
        read_map(tmp_path / "other.json", model)


def test_fit_steps_the_least_sure_layer_down_until_the_pick_fits():
    table = torch.tensor([[10.0, 20, 40, 80], [10, 20, 40, 80]], dtype=torch.float64)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.2, 0.8]])  # a 0: no division by it
    assert fit(probs, table, 5, 1000) == ([3, 3], 0)
    assert fit(probs, table, 5, 125) == ([2, 3], 1)  # layer 0's fp16 is 0.75 as likely as its fp32; layer 1's: 1/8
    assert fit(probs, table, 5, 25) == ([0, 0], 6)
    with pytest.raises(ValueError, match="under the smallest this model makes: 25 bytes"):
        fit(probs, table, 5, 24)


def test_a_short_search_moves_expected_bytes_to_the_budget_and_its_pick_fits():
    zoo, model = subnet(VIT)
    cfg = EdmipsConfig(steps=30, batch_size=32, arch_images=256)
    _, arch_images, _ = splits(zoo, cfg)
    low, high = model_bytes(model, uniform(model, 4)), model_bytes(model, uniform(model, 16))
    budget = (low + high) / 2
    torch.manual_seed(0)
    bits, stepped, history = search(model, budget, None, endless(arch_images, cfg.batch_size, 0), cfg)
    start, end = history[0]["expected_bytes"], history[-1]["expected_bytes"]
    assert abs(end - budget) < abs(start - budget) / 2, history
    assert low <= model_bytes(model, bits) <= budget and check_map(model, bits) == bits
    assert all(not p.requires_grad for p in model.parameters())  # frozen: the zoo's weights, untouched


def test_edmips_command_writes_one_precision_map_per_budget(tmp_path, capsys):
    zoo, model = subnet(VIT)
    out = tmp_path / "out"
    assert training_main(["edmips", "--zoo", VIT[0], "--entry", VIT[1], "--out", str(out), "--budgets", "20K", "25K",
                          "--steps", "3", "--arch-images", "64", "--batch-size", "32", "--threads", "1"]) == 0
    for budget in (20000, 25000):
        bits, doc = read_map(out / VIT[1] / f"{budget}.json", model)
        assert doc["entry"] == VIT[1] and doc["budget"] == budget and doc["bytes"] == model_bytes(model, bits) <= budget
        assert doc["val_images"] == 5000 - 64 and 0 < doc["val_top1"] <= 100
    assert "wrote" in capsys.readouterr().out
    assert training_main(["edmips", "--zoo", VIT[0], "--entry", VIT[1], "--out", str(tmp_path / "no"),
                          "--budgets", "1K"]) == 2
    assert "under the smallest this model makes" in capsys.readouterr().err and not (tmp_path / "no").exists()
