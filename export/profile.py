"""Latency of a zoo's entries on this host, measured as they are served (`export.runtime.serving_session`), and the
protocol that says how, with what, where and when: `python -m export profile` records both in the zoo's index, and
the server's background profiler (server/profile.py) uses the same protocol for its own numbers. The bytes of every
file an entry is served as (its fp32 file and its variants', `python -m export sizes`), measured on the files."""

from __future__ import annotations

import os
import platform
import socket
from datetime import UTC, datetime
from typing import Any

import onnxruntime as ort

from export.cache import ExportCache, variant_format
from export.onnx import measure_latency
from export.runtime import CPU, choose_providers, serving_session
from zoo.schema import FP32
from zoo.store import Variant, Zoo, ZooEntry

PROVIDERS = ("cpu", "cuda")  # what `--provider` takes; default: the best this host runs (choose_providers)


def profiling_providers(name: str | None) -> tuple[list[str], str]:
    """The providers `--provider` names (None: the best available, as the server chooses them) and why; ValueError
    when CUDA is asked for on a host where it does not run."""
    if name is not None and name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    if name == "cpu":
        return [CPU], "asked for cpu"
    providers, reason = choose_providers()
    if name == "cuda" and providers[0] == CPU:
        raise ValueError(f"--provider cuda: CUDA does not run on this host ({reason}); use --provider cpu")
    return providers, reason


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name (None when torch sees none)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def host_description(provider: str) -> str:
    """This host as a latency's reader needs it: name, CPU model and cores, and the GPU when a GPU provider runs."""
    gpu = gpu_name() if provider != CPU else None
    return f"{socket.gethostname()} ({cpu_model()}, {os.cpu_count()} cores{f', {gpu}' if gpu else ''})"


def latency_protocol(provider: str, threads: int | None, batch: int, warmup: int, runs: int) -> dict[str, Any]:
    """How, with what, where and when latencies are being measured here (the zoo index's `latency_protocol`)."""
    return {"engine": f"onnxruntime {ort.__version__} {provider}, fp32", "provider": provider,
            "host": host_description(provider), "device": f"{platform.machine()} {os.cpu_count()} cores",
            "threads": threads or "ORT default", "batch": batch, "warmup": warmup, "runs": runs,
            "statistic": "median, p10, p90", "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}


def input_shape(zoo: Zoo, batch: int) -> tuple[int, int, int, int]:
    pre = zoo.preprocessing
    return batch, pre["in_chans"], pre["img_size"], pre["img_size"]


def profile_zoo(zoo: Zoo, cache: ExportCache, providers: list[str], threads: int | None, batch: int, warmup: int,
                runs: int, progress=iter) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Every entry's latency as the server would run it (`python -m export profile`), and the protocol to record."""
    latencies = {e.id: measure_latency(serving_session(cache, zoo, e, providers, threads), input_shape(zoo, batch),
                                       warmup, runs)
                 for e in progress(zoo.entries)}
    return latencies, latency_protocol(providers[0], threads, batch, warmup, runs)


def sizes_protocol() -> dict[str, Any]:
    """How file bytes are measured here (the index's `variants.sizes`): the files as this install builds and serves
    them, by the versions that shape them."""
    import onnx
    import torch

    return {"what": "bytes of each ONNX file as the export cache builds and the server serves it (fp32: the `onnx` "
                    "download; a variant: its export.mixed file, opset 21)",
            "torch": torch.__version__, "onnx": onnx.__version__, "host": socket.gethostname(),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}


def size_zoo(zoo: Zoo, cache: ExportCache, progress=iter) -> dict[str, dict[str, int]]:
    """Every entry's served files' bytes: entry id -> variant name (zoo.schema.FP32: its own fp32 file) -> bytes,
    each file built through `cache` as the server builds it."""
    return {e.id: {v.name: variant_file(cache, zoo, e, v).stat().st_size for v in e.all_variants()}
            for e in progress(zoo.entries)}


def variant_file(cache: ExportCache, zoo: Zoo, entry: ZooEntry, variant: Variant):
    """The ONNX file a variant is served as: the entry's fp32 export, or the variant's own (`variant_format`)."""
    fmt = "onnx" if variant.name == FP32 else variant_format(variant)
    return cache.file(zoo, entry, fmt)


def time_variants(zoo: Zoo, cache: ExportCache, providers: list[str], threads: int | None, batch: int, warmup: int,
                  runs: int, progress=iter) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, Any]]:
    """Every stored variant's latency as the server would run its file (`profile_zoo`'s session options and
    protocol; the fp32 file's is the entry's own, `python -m export profile`)."""
    from export.onnx import session

    timed = {e.id: {v.name: measure_latency(session(variant_file(cache, zoo, e, v), providers, threads, False),
                                            input_shape(zoo, batch), warmup, runs) for v in e.variants.values()}
             for e in progress(zoo.entries)}
    return timed, latency_protocol(providers[0], threads, batch, warmup, runs)
