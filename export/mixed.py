"""Mixed-precision ONNX of a subnet: each Conv2d/Linear weight stored at the bits a precision map gives it
(`zoo.precision`), everything else fp32, activations fp32 (weight-only: the file is smaller, the arithmetic is
ONNX Runtime's choice). Each conv's BatchNorm is folded into it first (`zoo.precision.folded`).

How a weight is stored: int8 and int4 as QDQ's DequantizeLinear of packed integers with one float32 scale per output
channel (symmetric, no zero point; int4 needs opset 21, so every mixed file is opset 21), fp16 as a Cast of float16,
fp32 as it is. The layers are found in the graph without guessing at node names: the model is exported through
`export_onnx` with each layer's weight passed through a marker op (`prezoo.mark::Weight`, its `layer` attribute the
module name), and each marker is then replaced by that layer's storage. A linear layer's weight reaches MatMul
through a Transpose; the file stores it transposed instead (channel axis 1), so nothing is transposed at run time
and ONNX Runtime fuses DequantizeLinear -> MatMul into its MatMulNBits kernel. That kernel quantizes activations to
int8 on the fly (its default accuracy level), so with all graph optimizations on the logits differ from the
fake-quantized torch model by up to ~1e-2; with optimizations off the file computes exactly the torch model
(tests/test_edmips.py). ViT's patch embedding and every HyTra conv keep DequantizeLinear -> Conv in fp32.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper, version_converter
from torch import nn

from export.onnx import INPUT, Provenance, _finish, _provenance_of, export_onnx
from zoo.precision import STORAGE, check_map, folded, quantizable_layers, quantize, substituted

MARK_DOMAIN, MARK_OP = "prezoo.mark", "Weight"
OPSET = 21  # DequantizeLinear of int4


class _Mark(torch.autograd.Function):
    """Identity in torch; in the exported graph a `prezoo.mark::Weight` node naming its layer."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, layer: str) -> torch.Tensor:
        return w.clone()

    @staticmethod
    def symbolic(g, w, layer: str):
        out = g.op(f"{MARK_DOMAIN}::{MARK_OP}", w, layer_s=layer)
        out.setType(w.type())  # a conv's kernel shape must be known to the exporter
        return out


@dataclass(frozen=True)
class MixedExport:
    """A written mixed-precision file: where, its size, and its tensors' bytes (the part `zoo.precision.model_bytes`
    predicts; the rest is the graph, shape constants and metadata)."""

    path: Path
    file_bytes: int
    tensor_bytes: int


def export_mixed(model: nn.Module, bits: dict[str, int], path: str | Path, metadata: dict[str, str],
                 about: Provenance | None = None) -> MixedExport:
    """`model` as an ONNX file with each layer's weight at `bits` (checked: `zoo.precision.check_map`), checked by
    onnx.checker (full), written atomically; the map is in the metadata (`prezoo.precision_map`)."""
    bits = check_map(model, bits)
    model = folded(model)
    layers = quantizable_layers(model)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "marked.onnx"
        with substituted(model, lambda: {name: _Mark.apply(m.weight, name) for name, m in layers.items()}):
            export_onnx(model, raw, metadata, about=about)
        proto = version_converter.convert_version(onnx.load(str(raw)), OPSET)
    kept = {p.key: p.value for p in proto.metadata_props}
    _store_weights(proto.graph, {name: m.weight.detach() for name, m in layers.items()}, bits)
    described = f"Weights per layer: {_summary(bits)} (int4/int8: DequantizeLinear, per-output-channel scales)."
    out = _finish(proto, Path(path), {**kept, "prezoo.precision": "mixed", "prezoo.precision_map": json.dumps(bits)},
                  _provenance_of(proto, described))
    return MixedExport(out, out.stat().st_size, tensor_bytes(onnx.load(str(out))))


def _summary(bits: dict[str, int]) -> str:
    counts = {b: sum(1 for v in bits.values() if v == b) for b in sorted(set(bits.values()))}
    return ", ".join(f"{n} {STORAGE[b]}" for b, n in counts.items())


def tensor_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the graph's initializers and Constant nodes' values as stored (raw data)."""
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node if n.op_type == "Constant"
                                                for a in n.attribute if a.HasField("t")]
    return sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in tensors)


def _store_weights(graph: onnx.GraphProto, weights: dict[str, torch.Tensor], bits: dict[str, int]) -> None:
    """Replace every marker node of `graph` by its layer's storage at its bits, in place."""
    consumers = _consumers(graph)
    nodes, initializers, dropped = [], [], set()
    for node in graph.node:
        if (node.domain, node.op_type) != (MARK_DOMAIN, MARK_OP):
            nodes.append(node)
            continue
        layer = helper.get_attribute_value(node.attribute[0]).decode()
        transpose = _only_transpose(consumers.get(node.output[0], []))
        value = transpose.output[0] if transpose is not None else node.output[0]
        if transpose is not None:
            dropped.add(id(transpose))
        stored, made = _storage(layer, weights[layer], bits[layer], transpose is not None, value)
        initializers.extend(stored)
        nodes.extend(made)
    unused = {n.input[0] for n in graph.node if (n.domain, n.op_type) == (MARK_DOMAIN, MARK_OP)}
    kept = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept + initializers)
    del graph.node[:]
    graph.node.extend(n for n in nodes if id(n) not in dropped)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _only_transpose(users: list[onnx.NodeProto]) -> onnx.NodeProto | None:
    """The marker's one consumer when it is a 2-D transpose (a linear layer's weight on its way to MatMul)."""
    if len(users) != 1 or users[0].op_type != "Transpose":
        return None
    perm = [list(helper.get_attribute_value(a)) for a in users[0].attribute if a.name == "perm"]
    return users[0] if perm in ([], [[1, 0]]) else None


def _storage(layer: str, w: torch.Tensor, bits: int, transposed: bool, value: str
             ) -> tuple[list[TensorProto], list[onnx.NodeProto]]:
    """(initializers, nodes) that make `value`: `layer`'s weight as stored at `bits`, transposed if asked."""
    orient = (lambda t: t.T) if transposed else (lambda t: t)
    name = f"{layer}.weight"
    if bits == 32:
        return [numpy_helper.from_array(orient(w).float().numpy().copy(), value)], []
    if bits == 16:
        half = numpy_helper.from_array(orient(w).half().numpy().copy(), f"{name}.fp16")
        return [half], [helper.make_node("Cast", [half.name], [value], to=TensorProto.FLOAT, name=f"{name}/Cast")]
    q, s = quantize(w, bits)
    ints = orient(q).numpy().copy()
    stored = (_int4(f"{name}.int4", ints) if bits == 4 else numpy_helper.from_array(ints, f"{name}.int8"))
    scale = numpy_helper.from_array(s.numpy(), f"{name}.scale")
    dq = helper.make_node("DequantizeLinear", [stored.name, scale.name], [value], axis=1 if transposed else 0,
                          name=f"{name}/DequantizeLinear")
    return [stored, scale], [dq]


def _int4(name: str, q: np.ndarray) -> TensorProto:
    """An INT4 initializer: two values a byte, the first in the low nibble (ONNX's packing)."""
    nibbles = (q.astype(np.int8).ravel() & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()
    return helper.make_tensor(name, TensorProto.INT4, q.shape, packed, raw=True)


COMPUTE_OPS = ("Conv", "Gemm", "MatMul")  # the layers whose inputs static QDQ quantizes


def quantize_qdq_int8(src: str | Path, dst: str | Path, calibration: list[np.ndarray], span: slice | None = None
                      ) -> Path:
    """Static INT8 in QDQ form, activations too: per-channel int8 weights, uint8 activations whose ranges are
    calibrated (MinMax) on `calibration` (preprocessed float32 batches of training images), so ONNX Runtime runs
    its integer kernels. The uniform baseline the weight-only files are set against. With `span`, only those compute
    layers (Conv/Gemm/MatMul in graph order, e.g. `slice(-4, None)`: the last four) are quantized and the rest stay
    fp32: activation widths per layer (bench_act_widths measures which spans pay)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {INPUT: x.astype(np.float32, copy=False)}

    source = onnx.load(str(src))
    metadata = {p.key: p.value for p in source.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        layers = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in COMPUTE_OPS]
        chosen = layers if span is None else layers[span]
        if not chosen:
            raise ValueError(f"{span}: no layer of the model's {len(layers)} compute layers")
        quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=None if span is None else chosen)
        first, stop, _ = (span or slice(None)).indices(len(layers))
        which, tag = ("", "") if span is None else (f", layers {first}-{stop - 1} of {len(layers)}", f"-{first}:{stop}")
        return _finish(onnx.load(str(out)), Path(dst), {**metadata, "prezoo.quantization": "int8-static-qdq" + tag},
                       _provenance_of(source, f"INT8: static QDQ quantization (per-channel weights, activations "
                                              f"calibrated on {sum(len(x) for x in calibration)} training images"
                                              f"{which})."))
