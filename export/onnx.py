"""ONNX export of a materialised subnet (fp32, INT8, fp16), parity checks and latency measurement.

We export the standalone module (`ViT`, `HyTraNet`: `Supernet.extract`), never the sliced supernet: the dynamo
exporter would keep the full supernet tensors plus Slice ops. Default exporter: TorchScript (`dynamo=False`) at
opset 17 — with our pinned torch it is 8-13x faster to export (0.5 s vs 6.5 s for a `mini` subnet, 1.6 s vs 12.5 s
for PreNAS-Ti) at the same parity (max |Δ| < 1e-7), which is what a cold export on a server request waits for.
`exporter="dynamo"` (opset 20) is there for when TorchScript export goes away.

Every file says what it is in ONNX's own fields too (`Provenance`): `doc_string` (zoo, entry, architecture, size,
accuracy), `model_version`, and PreZoo as producer; it declares only the opset domains its nodes use
(`quantize_dynamic` declares all of ONNX Runtime's), and passes `onnx.checker.check_model(full_check=True)`.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from torch import nn

from zoo import __version__
from zoo.family import get_family
from zoo.io import atomic_write_bytes
from zoo.pretrained import self_description

if TYPE_CHECKING:
    from zoo.store import Zoo, ZooEntry

INPUT, OUTPUT = "pixel_values", "logits"
PRODUCER = "prezoo"
DEFAULT_DOMAIN = ""  # ONNX's own operators ("ai.onnx" is its other name)
FORMATS = ("onnx", "onnx-int8", "onnx-fp16")
# torch.onnx.export keeps its state process-wide (GLOBALS.in_onnx_export, the export opset, the ONNX log switch):
# two exports at once in one process fail (AssertionError) or mix each other's settings, so they take turns here.
_TORCH_EXPORT = threading.Lock()


def model_metadata(model: nn.Module, labels: list[str], preprocessing: dict) -> dict[str, str]:
    """What a consumer of the .onnx file needs without our code: family, arch, labels, preprocessing."""
    return {**self_description(model, labels, preprocessing), "prezoo.input": INPUT, "prezoo.output": OUTPUT}


@dataclass(frozen=True)
class Provenance:
    """What a file is, in ONNX's own fields: `doc_string` (in words) and `model_version` (a positive int64)."""

    doc_string: str
    model_version: int

    @classmethod
    def of_model(cls, model: nn.Module) -> Provenance:
        """A model exported outside a zoo: its family, arch and size; version 1."""
        return cls(model_doc(get_family(model.family).title, model.arch.id, sum(p.numel() for p in model.parameters()),
                             model.arch.to_json()), 1)


def provenance(zoo: Zoo, entry: ZooEntry) -> Provenance:
    """A zoo entry's: its zoo, id, architecture, size and accuracy. The version is the zoo's weights sha256, its
    first 13 hex digits as an int (52 bits: exact as a JSON or JavaScript number too): it changes with the weights."""
    top1 = "unmeasured" if entry.top1 is None else \
        f"{entry.top1:.2f}%" + ("" if entry.top5 is None else f", top-5 {entry.top5:.2f}%")
    measured = (f" of zoo {zoo.name} (weights sha256 {zoo.checksum[:16]}), {entry.flops:,} MACs per image, top-1 "
                f"{top1} ({zoo.doc.get('eval_protocol', 'protocol not recorded')})")
    return Provenance(model_doc(zoo.family.title, entry.id, entry.params, entry.arch.to_json(), measured),
                      int(zoo.checksum[:13], 16) or 1)


def model_doc(family: str, arch_id: str, params: int, arch_json: str, measured: str = "") -> str:
    return (f"PreZoo {family} model {arch_id}{measured}; {params:,} parameters. Input {INPUT}: float32 [batch, C, H, "
            f"W], preprocessed as metadata prezoo.preprocessing says; output {OUTPUT}: [batch, classes], named by "
            f"prezoo.labels. Architecture: {arch_json}.")


def _finish(proto: onnx.ModelProto, path: Path, metadata: dict[str, str], about: Provenance) -> Path:
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string, proto.model_version = about.doc_string, about.model_version
    proto.producer_name, proto.producer_version = PRODUCER, __version__
    used = {_domain(n.domain) for n in _nodes(proto)} | {DEFAULT_DOMAIN}
    kept = [o for o in proto.opset_import if _domain(o.domain) in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def _domain(name: str) -> str:
    return DEFAULT_DOMAIN if name == "ai.onnx" else name


def _nodes(proto: onnx.ModelProto):
    """Every node of the model: the graph's, its subgraphs' (If, Loop, Scan) and its local functions'."""
    def walk(nodes):
        for node in nodes:
            yield node
            for attr in node.attribute:
                for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from walk(graph.node)

    yield from walk(proto.graph.node)
    for function in proto.functions:
        yield from walk(function.node)


def _provenance_of(proto: onnx.ModelProto, made: str) -> Provenance:
    """A converted file's: its source's, saying how it was made from it."""
    return Provenance(f"{proto.doc_string} {made}".strip(), proto.model_version or 1)


def export_onnx(model: nn.Module, path: str | Path, metadata: dict[str, str], exporter: str = "torchscript",
                about: Provenance | None = None) -> Path:
    """fp32 ONNX with a dynamic batch axis, checked by onnx.checker, written atomically; `about` says what it is
    (default: the model alone, `Provenance.of_model`); the exporter that wrote the graph is kept in the metadata
    (`prezoo.exporter`). Thread-safe: exports take turns (see `_TORCH_EXPORT`)."""
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    model = model.eval()
    space = model.space
    x = torch.zeros(2, space.in_chans, space.img_size, space.img_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        # catch_warnings swaps the process-wide warning filters too: inside the lock, or two exports restore
        # each other's filters and leave warnings silenced for the whole process
        with _TORCH_EXPORT, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer / deprecation chatter
            if exporter == "torchscript":
                torch.onnx.export(model, (x,), str(raw), dynamo=False, opset_version=17, input_names=[INPUT],
                                  output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
            else:
                torch.onnx.export(model, (x,), str(raw), dynamo=True, external_data=False, input_names=[INPUT],
                                  output_names=[OUTPUT], verbose=False,
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
        proto = onnx.load(str(raw))
        written_by = f"{proto.producer_name} {proto.producer_version} ({exporter})"
        return _finish(proto, Path(path), {**metadata, "prezoo.exporter": written_by},
                       about or Provenance.of_model(model))


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic INT8 (per-channel weights): 4x smaller, faster on CPU at batch 1 and 32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = onnx.load(str(src))
    metadata = {p.key: p.value for p in source.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True)
        return _finish(onnx.load(str(out)), Path(dst), {**metadata, "prezoo.quantization": "int8-dynamic"},
                       _provenance_of(source, "INT8: dynamic quantization (per-channel weights) of the fp32 file."))


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """fp16 weights and activations, fp32 inputs/outputs (for GPU serving; no gain on CPU)."""
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    metadata = {p.key: p.value for p in proto.metadata_props}
    half = ir.from_proto(convert_float_to_float16(proto, keep_io_types=True))
    half.graph.sort()  # the converter appends its input casts at the end of the node list
    return _finish(ir.to_proto(half), Path(dst), {**metadata, "prezoo.precision": "float16"},
                   _provenance_of(proto, "fp16: the fp32 file's weights and activations in float16, inputs and "
                                         "outputs float32."))


def session(path: str | Path, providers: list | None = None, threads: int | None = None, spinning: bool = True):
    """An ORT session; `providers` as ONNX Runtime takes them (names, or (name, options) pairs), CPU by default.

    `spinning=False` makes ORT's idle intra-op threads sleep instead of busy-waiting for the next op: on a loaded
    machine the spinning threads steal the cores the working ones need (bench/bench_contention.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT], {INPUT: x.astype(np.float32, copy=False)})[0]


def parity(model: nn.Module, sess, x: torch.Tensor) -> tuple[float, float]:
    """(max |logit difference|, top-1 agreement in [0, 1]) of ONNX Runtime vs torch on `x`."""
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    got = run(sess, x.numpy())
    return float(np.abs(got - ref).max()), float((got.argmax(1) == ref.argmax(1)).mean())


def measure_latency(sess, shape: tuple[int, ...], warmup: int = 10, runs: int = 50) -> dict[str, float]:
    """Median and spread of single-call latency (ms) on random input of `shape`."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        run(sess, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(sess, x)
        times.append((time.perf_counter() - t) * 1e3)
    q = statistics.quantiles(times, n=10)
    return {"median_ms": round(statistics.median(times), 4), "p10_ms": round(q[0], 4), "p90_ms": round(q[-1], 4)}
