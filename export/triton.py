"""A Triton Inference Server model repository of zoo entries: `REPO/<entry id>/config.pbtxt` and
`REPO/<entry id>/1/model.onnx` (ONNX Runtime backend), ready for `tritonserver --model-repository=REPO` or a KServe
InferenceService with the Triton runtime (deploy/kserve-inferenceservice.yaml).

The ONNX files are the export cache's (fp32, fp16 or INT8), linked like a Hub push's; each config is a `ModelConfig`
message written with protobuf's text format, so it is valid against Triton's schema by construction, and its inputs
and outputs are read from the ONNX graph it sits beside (the batch axis becomes `max_batch_size`). The repository is
built in a temporary folder beside OUT and swapped into place: OUT is the old repository or the new one, never a mix.

Only what this command wrote is ever replaced: each repository holds a marker (`MARKER`, naming its models), and an
OUT holding anything else is refused. A symlink OUT is written through (the folder it points to is replaced; the link
stays). The temporary folders of a killed run are removed by the next run beside the same OUT.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import onnx
from google.protobuf import text_format

from export.cache import FILES, ExportCache
from export.repo import link_or_copy
from zoo.catalog import Catalog
from zoo.io import (
    atomic_write_text,
    clip,
    folder_in_use,
    printable,
    read_versioned_json,
    remove_stale_temporaries,
    staged_folder,
)
from zoo.store import Zoo, ZooEntry

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
MARKER, MARKER_KIND = ".prezoo-triton.json", "prezoo-triton-repository"  # Triton ignores files beside model folders
TEMP = "prezoo-tmp."  # temp folders are `.{OUT name}.prezoo-tmp.XXXXXXXX`: no name a person gives a backup


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


def repository_paths(ids: list[str]) -> set[str]:
    """Every path (relative) of a repository we write of the entries `ids`."""
    return {MARKER, *(p for i in ids for p in (i, f"{i}/{CONFIG}", f"{i}/{VERSION}", f"{i}/{VERSION}/{MODEL}"))}


def written_ids(out: Path) -> list[str] | None:
    """The entry ids OUT's marker names, or None when OUT has no readable marker of ours."""
    try:
        ids = read_versioned_json(out / MARKER, MARKER_KIND, 1).get("entries")
    except ValueError:
        return None
    return ids if isinstance(ids, list) and all(isinstance(i, str) for i in ids) else None


def check_out(out: Path) -> Path:
    """The folder to write: OUT, or the folder a symlink OUT points to. It may be missing, empty, or a repository
    this command wrote with nothing added since: anything else would be lost when the new repository takes its
    place."""
    if out.is_symlink():  # written through: the link names where models live; a folder swapped in for it strands them
        if not (target := out.resolve()).is_dir():
            raise ValueError(f"refusing to write through {out}: it is a symlink to {target}, not to a folder")
        out = target
    if not out.exists():
        return out
    if not out.is_dir():
        raise ValueError(f"refusing to replace {out}: it is not a folder")
    ids = written_ids(out)
    if ids is None:
        if any(out.iterdir()):
            raise ValueError(f"refusing to replace {out}: it was not written by `python -m export triton` (no "
                             f"readable {MARKER}); empty it, or choose another --out")
        return out
    extra = {str(p.relative_to(out)) for p in out.rglob("*")} - repository_paths(ids)
    if strays := sorted(p for p in extra if str(Path(p).parent) not in extra):  # a folder's files go with it
        raise ValueError(f"refusing to replace {out}: {printable(clip(', '.join(strays[:5]), 200))} "
                         f"{'was' if len(strays) == 1 else 'were'} not written by `python -m export triton`")
    return out


def remove_killed_runs(out: Path) -> list[Path]:
    """The temp folders that killed runs left beside OUT: ours by name and marker, and no live run holds them."""
    return remove_stale_temporaries(out.parent, f".{glob.escape(out.name)}.{TEMP}*",
                                    lambda tmp: (tmp / MARKER).is_file() and not folder_in_use(tmp))


def write_repository(cache: ExportCache, zoo: Zoo | Catalog, entries: list[ZooEntry], out: str | Path, *,
                     precision: str, max_batch_size: int, tensorrt: bool = False) -> Path:
    """Write the model repository of `entries` (of one zoo, or of several as a catalog: each exported from its own)
    at `out`, replacing an earlier one as a unit; the folder written."""
    zoo = Catalog.of(zoo)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if max_batch_size < 1:
        raise ValueError(f"the max batch size must be at least 1, got {max_batch_size}")
    out = check_out(Path(out))
    remove_killed_runs(out)
    with staged_folder(out, TEMP) as tmp:
        marker = {"kind": MARKER_KIND, "schema_version": 1, "written_by": "python -m export triton",
                  "zoo": zoo.name, "checksum": zoo.checksum, "precision": precision, "entries": [e.id for e in entries]}
        atomic_write_text(tmp / MARKER, json.dumps(marker, indent=1))  # first: the folder is ours from here on
        fmt = PRECISIONS[precision]
        for entry in entries:
            model = tmp / entry.id / VERSION / MODEL
            with cache.reading(zoo.zoo_of(entry), entry, fmt) as folder:
                link_or_copy(folder / FILES[fmt][0], model)
            config = model_config(entry.id, model, max_batch_size, precision, tensorrt)
            atomic_write_text(tmp / entry.id / CONFIG, text_format.MessageToString(config))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the repository from a server running as another user
    return out
