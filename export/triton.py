"""A Triton Inference Server model repository of zoo entries: `REPO/<entry id>/config.pbtxt` and
`REPO/<entry id>/1/model.onnx` (ONNX Runtime backend), ready for `tritonserver --model-repository=REPO` or a KServe
InferenceService with the Triton runtime (deploy/kserve-inferenceservice.yaml).

The ONNX files are the export cache's (fp32, fp16 or INT8), linked like a Hub push's; each config is a `ModelConfig`
message written with protobuf's text format, so it is valid against Triton's schema by construction, and its inputs
and outputs are read from the ONNX graph it sits beside (the batch axis becomes `max_batch_size`). The repository is
built in a temporary folder beside OUT and swapped into place: OUT is the old repository or the new one, never a mix.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf import text_format

from export.cache import FILES, ExportCache
from export.repo import link_or_copy
from zoo.io import atomic_write_text
from zoo.store import Zoo, ZooEntry, replace_folder

NEEDS = 'Triton configs are written with tritonclient\'s ModelConfig: pip install "tritonclient[grpc]"'
try:
    from tritonclient.grpc import model_config_pb2 as triton
except (ImportError, RuntimeError) as e:  # tritonclient's grpc half raises RuntimeError when grpcio is missing
    raise ImportError(NEEDS) from e

PRECISIONS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}  # --precision -> export cache format
PLATFORM = "onnxruntime_onnx"
DEFAULT_MAX_BATCH_SIZE = 32  # python -m server's default images per request (export may not import the server)
CONFIG, VERSION, MODEL = "config.pbtxt", "1", "model.onnx"  # the names Triton looks for
DATATYPES = {onnx.TensorProto.FLOAT: triton.TYPE_FP32, onnx.TensorProto.FLOAT16: triton.TYPE_FP16}


def tensor_spec(value: onnx.ValueInfoProto) -> tuple[int, list[int]]:
    """(Triton datatype, dims without the batch axis) of a graph input or output; ValueError when Triton cannot
    batch it or we have no mapping for its element type."""
    tensor = value.type.tensor_type
    if tensor.elem_type not in DATATYPES:
        raise ValueError(f"tensor '{value.name}' has ONNX element type "
                         f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}; Triton types are mapped for "
                         f"{', '.join(onnx.TensorProto.DataType.Name(t) for t in DATATYPES)}")
    dims = tensor.shape.dim
    if not dims or dims[0].HasField("dim_value") or any(not d.HasField("dim_value") for d in dims[1:]):
        raise ValueError(f"tensor '{value.name}' needs a dynamic batch axis and fixed other axes, got "
                         f"{[d.dim_value if d.HasField('dim_value') else d.dim_param for d in dims]}")
    return DATATYPES[tensor.elem_type], [d.dim_value for d in dims[1:]]


def model_config(name: str, model: Path, max_batch_size: int, precision: str, tensorrt: bool) -> triton.ModelConfig:
    """The config of one model: inputs and outputs as the ONNX graph at `model` declares them, dynamic batching up
    to `max_batch_size`, and optionally ONNX Runtime's TensorRT execution provider (in fp16 for the fp16 model)."""
    graph = onnx.load(str(model)).graph
    config = triton.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    for values, tensors in ((graph.input, config.input), (graph.output, config.output)):
        for value in values:
            data_type, dims = tensor_spec(value)
            tensors.add(name=value.name, data_type=data_type, dims=dims)
    config.dynamic_batching.SetInParent()  # Triton's defaults: batch what is queued, no added delay
    if tensorrt:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        if precision == "fp16":
            accelerator.parameters["precision_mode"] = "FP16"
    return config


def check_out(out: Path) -> None:
    """OUT may be missing, an empty folder or a model repository (every item a folder with a config.pbtxt):
    anything else would be lost when the new repository takes its place."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"refusing to replace {out}: it is not a folder")
    strays = sorted(p.name for p in out.iterdir() if not (p / CONFIG).is_file())
    if strays:
        raise ValueError(f"refusing to replace {out}: it is not a Triton model repository "
                         f"({', '.join(strays[:5])} {'is' if len(strays) == 1 else 'are'} not a model folder)")


def write_repository(cache: ExportCache, zoo: Zoo, entries: list[ZooEntry], out: str | Path, *, precision: str,
                     max_batch_size: int, tensorrt: bool = False) -> Path:
    """Write the model repository of `entries` at `out` (replacing an earlier one as a unit)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if max_batch_size < 1:
        raise ValueError(f"the max batch size must be at least 1, got {max_batch_size}")
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        fmt = PRECISIONS[precision]
        for entry in entries:
            model = tmp / entry.id / VERSION / MODEL
            with cache.reading(zoo, entry, fmt) as folder:
                link_or_copy(folder / FILES[fmt][0], model)
            config = model_config(entry.id, model, max_batch_size, precision, tensorrt)
            atomic_write_text(tmp / entry.id / CONFIG, text_format.MessageToString(config))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the repository from a server running as another user
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old repository after a swap, or a failed new one
    return out
