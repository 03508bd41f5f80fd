"""The Open Inference Protocol v2 over gRPC beside HTTP, on one `python -m server --grpc-port` on loopback:

    .venv/bin/python -m bench.bench_grpc [--zoo DIR] [--model ID] [--calls 200] [--duration 10] [--concurrency 16]

(a) latency: tritonclient gRPC and HTTP (binary tensors), batch 1 and 8, one call of each in turn per round
    (bench.common.interleaved), so every side sees the same machine noise: median and p90 per call;
(b) load, perf_analyzer-style: tritonclient.grpc.aio with `--concurrency` requests in flight (each worker sends its
    next as soon as its last is answered) for `--duration` s, batch 1, beside tritonclient.http.aio (aiohttp) at the
    same concurrency: req/s, p50, p99, errors, the server's mean micro-batch;
(c) client x call: tritonclient HTTP and gRPC, KServe REST and gRPC (bench/kserve_client.py, in a process of its
    own): live, ready (server and model), metadata, infer (logits equal to tritonclient HTTP's), config, stats (the
    entry's counters moved after the infer), index; "—" where the client has no such call.

Prints markdown. The clients share the CPU with the server: say so when quoting. Inputs are random standard-normal
tensors of the zoo's input shape (what preprocessing gives, values within a few units of 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio

from bench.bench_ray import free_ports
from bench.bench_server import ROOT, running_server
from bench.common import interleaved, machine
from zoo.store import DEFAULT_ZOO

BATCHES = (1, 8)
CALLS = ("live", "ready", "metadata", "infer", "config", "stats", "index")
KSERVE_CALLS = {"live": ("live",), "ready": ("ready", "model_ready"), "infer": ("infer",)}  # kserve_client's names


def tensor(module, x: np.ndarray):
    """pixel_values for tritonclient's grpc or http module (binary data)."""
    return module.InferInput("pixel_values", list(x.shape), "FP32").set_data_from_numpy(x)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_table(grpc_url: str, http_url: str, model: str, shape: list[int], calls: int) -> list[str]:
    """(a): per-call latency of each protocol and batch size, interleaved."""
    g = triton_grpc.InferenceServerClient(grpc_url)
    h = triton_http.InferenceServerClient(http_url, network_timeout=120)
    rng = np.random.default_rng(0)
    fns: dict[str, Callable[[], object]] = {}
    for n in BATCHES:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        fns[f"gRPC|{n}"] = lambda x=x: g.infer(model, [tensor(triton_grpc, x)])
        fns[f"HTTP|{n}"] = lambda x=x: h.infer(model, [tensor(triton_http, x)])
    times = interleaved(fns, rounds=calls, reps=1, warmup=5)
    g.close()
    h.close()
    rows = ["| protocol | batch | calls | median ms | p90 ms |", "|---|---|---|---|---|"]
    for name, seconds in times.items():
        protocol, n = name.split("|")
        ms = [s * 1e3 for s in seconds]
        rows.append(f"| {protocol} | {n} | {len(ms)} | {statistics.median(ms):.2f} | {percentile(ms, 0.9):.2f} |")
    return rows


async def load(infer: Callable[[], object], concurrency: int, duration: float) -> tuple[list[float], int, float]:
    """`concurrency` workers sending back to back for `duration` s: (latencies ms, errors, seconds)."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                await infer()
            except Exception:  # counted, not raised: the row reports how many failed
                errors += 1
                continue
            latencies.append((time.perf_counter() - t) * 1e3)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def batching(http_url: str) -> dict:
    return httpx.get(f"http://{http_url}/api/health", timeout=30).json()["batching"]


async def load_rows(grpc_url: str, http_url: str, model: str, shape: list[int], concurrency: int,
                    duration: float) -> list[str]:
    """(b): the same load over gRPC, then HTTP; the server's mean micro-batch over each run."""
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    g = triton_grpc_aio.InferenceServerClient(grpc_url)
    h = triton_http_aio.InferenceServerClient(http_url, conn_limit=concurrency, conn_timeout=120)
    clients = {"gRPC (tritonclient.grpc.aio)": lambda: g.infer(model, [tensor(triton_grpc, x)]),
               "HTTP (tritonclient.http.aio)": lambda: h.infer(model, [tensor(triton_http, x)])}
    rows = ["| protocol | in flight | seconds | requests | req/s | p50 ms | p99 ms | errors | mean micro-batch |",
            "|---|---|---|---|---|---|---|---|---|"]
    try:
        for label, infer in clients.items():
            await load(infer, concurrency, min(2.0, duration))  # warm-up: connections, sessions
            before = batching(http_url)
            latencies, errors, seconds = await load(infer, concurrency, duration)
            after = batching(http_url)
            batches = after["batches"] - before["batches"]
            mean_batch = (after["images"] - before["images"]) / batches if batches else 0.0
            lat = latencies or [float("nan")]
            rows.append(f"| {label} | {concurrency} | {seconds:.1f} | {len(latencies):,} | "
                        f"{len(latencies) / seconds:,.1f} | {statistics.median(lat):.2f} | {percentile(lat, 0.99):.2f} "
                        f"| {errors} | {mean_batch:.2f} |")
    finally:
        await g.close()
        await h.close()
    return rows


def triton_calls(client, module, model: str, x: np.ndarray, expected: np.ndarray) -> dict[str, bool]:
    """tritonclient's calls (grpc or http module, same API): whether each answers as the protocol says."""
    def stats_count() -> int:
        stats = client.get_inference_statistics(model, as_json=True) if module is triton_grpc \
            else client.get_inference_statistics(model)
        return int(stats["model_stats"][0]["inference_count"])

    def index() -> list[str]:
        found = client.get_model_repository_index(as_json=True) if module is triton_grpc \
            else {"models": client.get_model_repository_index()}
        return [m["name"] for m in found["models"]]

    checks = {"live": client.is_server_live,
              "ready": lambda: client.is_server_ready() and client.is_model_ready(model),
              "metadata": lambda: bool(client.get_server_metadata()) and bool(client.get_model_metadata(model)),
              "config": lambda: bool(client.get_model_config(model)),
              "index": lambda: model in index()}
    results = {name: passes(check) for name, check in checks.items()}
    before = stats_count() if passes(stats_count) else None
    results["infer"] = passes(lambda: np.array_equal(
        client.infer(model, [tensor(module, x)]).as_numpy("logits"), expected))
    results["stats"] = before is not None and passes(lambda: stats_count() == before + len(x))
    return results


def passes(check: Callable[[], object]) -> bool:
    try:
        return bool(check())
    except Exception:  # a client error is a failed call in the table
        return False


def kserve_calls(grpc_url: str, http_url: str, model: str, x: np.ndarray, expected: np.ndarray
                 ) -> dict[str, dict[str, bool]] | str:
    """KServe's clients (bench/kserve_client.py in its own process); a reason instead when they cannot run here."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        done = subprocess.run([sys.executable, "-m", "bench.kserve_client", "--grpc", grpc_url, "--http",
                               f"http://{http_url}", "--model", model, "--input", str(Path(tmp) / "x.npy")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    results = json.loads(done.stdout)
    table = {}
    for client, calls in results.items():
        table[client] = {call: all(calls[name]["ok"] for name in names) for call, names in KSERVE_CALLS.items()}
        table[client]["infer"] &= calls["logits"] is not None and np.array_equal(
            np.asarray(calls["logits"], np.float32), expected)
    return table


def client_table(grpc_url: str, http_url: str, model: str, shape: list[int]) -> list[str]:
    """(c): every client's calls, pass / FAIL / — (no such call in that client)."""
    x = np.random.default_rng(2).standard_normal((8, *shape)).astype(np.float32)
    h = triton_http.InferenceServerClient(http_url, network_timeout=120)
    g = triton_grpc.InferenceServerClient(grpc_url)
    expected = h.infer(model, [tensor(triton_http, x)]).as_numpy("logits")
    table = {"tritonclient HTTP": triton_calls(h, triton_http, model, x, expected),
             "tritonclient gRPC": triton_calls(g, triton_grpc, model, x, expected)}
    h.close()
    g.close()
    kserve = kserve_calls(grpc_url, http_url, model, x, expected)
    if isinstance(kserve, str):
        note = f"KServe's clients could not run: {kserve}"
    else:
        table |= {"KServe REST (InferenceRESTClient)": kserve["rest"],
                  "KServe gRPC (InferenceGRPCClient)": kserve["grpc"]}
        note = "KServe's clients have no metadata, config, statistics or index calls (—)"
    rows = [f"| client | {' | '.join(CALLS)} |", f"|---|{'---|' * len(CALLS)}"]
    for client, results in table.items():
        cells = ["—" if call not in results else "pass" if results[call] else "FAIL" for call in CALLS]
        rows.append(f"| {client} | {' | '.join(cells)} |")
    return [*rows, "", note]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_grpc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(DEFAULT_ZOO))
    p.add_argument("--model", help="entry id (default: the zoo's default, its most accurate)")
    p.add_argument("--calls", type=int, default=200, help="latency calls per protocol and batch size")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load row")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight in the load rows")
    args = p.parse_args(argv)
    grpc_port = free_ports(1)[0]
    with tempfile.TemporaryDirectory() as cache, running_server(args.zoo, Path(cache), "--grpc-port",
                                                                str(grpc_port)) as served:
        http_url, grpc_url = served.url.removeprefix("http://"), f"127.0.0.1:{grpc_port}"
        zoo = httpx.get(f"{served.url}/api/zoo", timeout=60).json()
        model = args.model or zoo["default_model"]
        p = zoo["preprocessing"]
        shape = [p["in_chans"], p["img_size"], p["img_size"]]
        print(f"Machine: {machine()}; server and clients on the same host (loopback). Zoo {zoo['name']}, entry "
              f"{model}, input {shape}.\n")
        print("(a) latency per call, interleaved rounds\n")
        print("\n".join(latency_table(grpc_url, http_url, model, shape, args.calls)))
        print(f"\n(b) load: batch 1, {args.concurrency} in flight, {args.duration:g} s per row\n")
        print("\n".join(asyncio.run(load_rows(grpc_url, http_url, model, shape, args.concurrency, args.duration))))
        print("\n(c) client x call\n")
        print("\n".join(client_table(grpc_url, http_url, model, shape)))


if __name__ == "__main__":
    main()
