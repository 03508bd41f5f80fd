"""Activation widths per layer (issue 26, item 3): static QDQ int8 on a span of a real entry's compute layers
(`export.mixed.quantize_qdq_int8`) quantizes those layers' inputs and no others, computes what the model computes
through real ONNX Runtime, and bench_act_widths' spans and table are what they say."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bench.bench_act_widths import bench_entry, spans, tables
from export.mixed import COMPUTE_OPS, quantize_qdq_int8
from export.onnx import export_onnx, model_metadata, run, session
from training.evaluate import tensor_batches, zoo_split
from zoo.store import Zoo

SMALL = ("mbconv-fmnist", "mbconv-B3-860aa1c1")


def quantized_layers(path) -> list[bool]:
    """Per compute layer in graph order: is it quantized, i.e. does its weight come out of a DequantizeLinear? (A
    layer's data input can come out of one without it: QDQ also quantizes a quantized layer's output.)"""
    graph = onnx.load(str(path)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.input[1] in dequantized for node in graph.node if node.op_type in COMPUTE_OPS]


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    zoo = Zoo.load(SMALL[0])
    model = zoo.subnet(SMALL[1])
    fp32 = export_onnx(model, tmp_path_factory.mktemp("aw") / "fp32.onnx",
                       model_metadata(model, zoo.classes, zoo.preprocessing))
    images = next(iter(tensor_batches(zoo_split(zoo, "test")[0], 64, limit=64)))[0]
    return model, fp32, images


def test_spans_cover_every_layer_once_in_quarters_and_end_in_suffixes():
    for n in (4, 9, 17, 26):
        named = spans(n)
        quarters = [s for name, s in named.items() if name.startswith("layers")]
        assert sorted(i for s in quarters for i in range(n)[s]) == list(range(n)), n
        suffixes = [range(n)[s] for name, s in named.items() if name.startswith("last")]
        assert all(r[-1] == n - 1 and len(r) == int(name.split()[1]) for r, name in
                   zip(suffixes, [k for k in named if k.startswith("last")], strict=True)), n
        assert len({(s.start, s.stop) for s in named.values()}) == len(named), n  # no span twice


def test_a_span_quantizes_those_layers_inputs_only_and_keeps_the_function(entry, tmp_path):
    model, fp32, images = entry
    calibration = [images.numpy()]
    whole = quantized_layers(quantize_qdq_int8(fp32, tmp_path / "all.onnx", calibration))
    n = len(whole)
    assert all(whole) and n == sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in model.modules())
    for span in (slice(-2, None), slice(0, 3), slice(3, 5)):
        path = quantize_qdq_int8(fp32, tmp_path / "span.onnx", calibration, span)
        want = [i in range(n)[span] for i in range(n)]
        assert quantized_layers(path) == want, span
        with torch.no_grad():
            reference = model.eval()(images).numpy()
        logits = run(session(path, threads=1), images.numpy())
        assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.9 and np.abs(logits - reference).max() < 1.0
        assert dict((p.key, p.value) for p in onnx.load(str(path)).metadata_props)["prezoo.quantization"] == \
            f"int8-static-qdq-{range(n)[span].start}:{range(n)[span].stop}"
    with pytest.raises(ValueError, match="no layer"):
        quantize_qdq_int8(fp32, tmp_path / "none.onnx", calibration, slice(n, None))


@pytest.mark.slow
def test_bench_times_and_scores_every_span_of_a_real_entry():
    raw = bench_entry(Zoo.load(SMALL[0]), SMALL[1], rounds=1)
    assert list(raw["rows"]) == ["fp32", "int8 whole graph", *(f"int8 {name}" for name in spans(raw["compute_layers"]))]
    assert all(row["test"]["n"] == 10_000 and row["latency_b1"]["median_ms"] > 0 for row in raw["rows"].values())
    assert raw["rows"]["int8 whole graph"]["file_bytes"] < raw["rows"]["fp32"]["file_bytes"]
    table = tables(raw)
    assert table.count("\n| int8 ") == len(raw["rows"]) - 1 and "| fp32 |" in table and "1.00×" in table
