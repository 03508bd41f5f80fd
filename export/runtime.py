"""ONNX Runtime sessions of the zoo's exports as they are served: which execution provider this host really runs
(TensorRT, CUDA, else CPU, each tried with a real one-node session) and the session built from an entry's fp32
export with those providers and the serving options. Here, below the server, so that offline profiling
(`export.profile`) builds exactly what the server serves without importing it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.cache import ExportCache
from export.onnx import session
from zoo.store import Zoo, ZooEntry

log = logging.getLogger("server")  # the operator's log: a provider that is listed but does not run
TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


def choose_providers(available: list[str] | None = None) -> tuple[list[str], str]:
    """TensorRT, else CUDA, when this onnxruntime build has it and a session really runs on it; else CPU. And why."""
    available = ort.get_available_providers() if available is None else available
    if CUDA not in available:
        return [CPU], f"{CUDA} is not in this onnxruntime build ({', '.join(available)})"
    problems = []
    for chain in ([TENSORRT, CUDA, CPU], [CUDA, CPU]):
        if chain[0] not in available:
            continue
        error = _probe(chain)
        if error is None:
            for problem in problems:
                log.warning(problem)
            return chain, "; ".join([f"{chain[0]} works", *problems])
        problems.append(f"{chain[0]} is available but unusable: {error}")
    reason = "; ".join(problems) + "; falling back to CPU"
    log.warning(reason)
    return [CPU], reason


def _probe(chain: list[str]) -> str | None:
    """None when a session asked for `chain` runs on its first provider, else what went wrong."""
    try:
        probe = ort.InferenceSession(_probe_model(), providers=chain)
        probe.run(None, {"x": np.ones((1, 4), np.float32)})
        used = probe.get_providers()
    except Exception as e:  # a broken driver or missing CUDA/TensorRT libraries surface here in many forms
        return f"{type(e).__name__}: {e}"
    return None if used and used[0] == chain[0] else f"a session asked for {chain[0]} got {used}"


def _probe_model() -> bytes:
    """A one-node ONNX model (y = x + x) to try a provider on."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION_2023_5_5
                             ).SerializeToString()


def provider_options(providers: list[str], cache_dir: Path) -> list[str | tuple[str, dict[str, str]]]:
    """ONNX Runtime's providers argument: TensorRT keeps its built engines on disk (building one takes minutes)."""
    trt = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir / "tensorrt")}
    return [(p, trt) if p == TENSORRT else p for p in providers]


def serving_session(cache: ExportCache, zoo: Zoo, entry: ZooEntry, providers: list[str], threads: int | None = None,
                    spinning: bool = False):
    """An ORT session of the entry's fp32 ONNX export as the server runs it (providers, threads, spinning): latency
    profiling builds its sessions here too, so it measures what serving gets."""
    path = cache.file(zoo, entry, "onnx")
    return session(path, provider_options(providers, cache.root), threads, spinning)
