"""One `python -m server` process vs the Ray Serve application (server/ray_serve.py) with 1 and 2 model replicas.

    .venv/bin/python -m bench.bench_ray [--zoo DIR|tiny-sized] [--clients 16] [--duration 20] [--warmup 3]

The same request mix against each: Open Inference Protocol v2 infer requests (binary tensors, as tritonclient sends
them) of batch 1 and batch 8, each client cycling over every entry of the zoo, N concurrent clients back to back for
a fixed time. Ray runs as a local cluster on free loopback ports (`ray start --head`, no dashboard), stopped by PID
after each setting. Prints a markdown table: requests/s, images/s, p50/p95 latency, errors (must be 0). Clients,
server and Ray share the machine's CPUs: on a small machine this shows the overhead of the path, not its scaling.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.bench_server import ROOT, LoadResult, load, running_server, zoo_folder
from zoo.store import DEFAULT_ZOO

RAY = Path(sys.executable).with_name("ray")  # the environment's ray CLI: its workers run this environment's python
WORKER_PORTS = 24  # worker processes a small cluster starts (ingress, replicas, controller, proxy and spares)
START_S = 120
APP = "prezoo"  # the Serve application's name
# every port a head node opens, chosen free at start: parallel clusters (tests, benchmarks) never collide
PORT_FLAGS = ("port", "node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-port",
              "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
              "runtime-env-agent-port")
# The environment of the cluster and of its driver. Ray replaces a loopback --node-ip-address with the machine's
# address (for other nodes to reach it) unless clusters are off: a one-node cluster for tests and benchmarks stays on
# 127.0.0.1. Token authentication with a token of this process's own (not ~/.ray/auth_token, nor a new one there).
# Never a cluster started behind our back (Ray's default on a call without one: Serve's handles call Ray after
# shutdown).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                 "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ENABLE_AUTO_CONNECT": "0"}


@dataclass(frozen=True)
class LocalRay:
    address: str  # the GCS address to ray.init(address=...)
    session: int  # the session id of every process the cluster started


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago (all bound at once, so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def live_pids(session: int | None = None, parent: int | None = None) -> list[int]:
    """Live processes (zombies excluded) of a session or with a parent, from /proc: Ray's daemons and workers stay
    in the session `ray start` opened."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, _, sid = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:  # exited meanwhile
            continue
        if state != "Z" and (int(sid) == session or int(ppid) == parent):
            found.append(int(stat.parent.name))
    return found


def kill_session(session: int, grace_s: float = 10) -> None:
    """SIGTERM to every process of the session, SIGKILL to what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        for pid in live_pids(session):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while live_pids(session) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def local_ray(cpus: int) -> Iterator[LocalRay]:
    """A one-node Ray cluster on loopback, every port chosen free here; on exit every process it started is killed
    by PID (its session's processes) and its temp folder removed."""
    chosen = free_ports(len(PORT_FLAGS) + WORKER_PORTS)
    ports, workers = dict(zip(PORT_FLAGS, chosen, strict=False)), chosen[len(PORT_FLAGS):]
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    cmd = [str(RAY), "start", "--head", "--block", "--disable-usage-stats", "--include-dashboard=false",
           "--node-ip-address=127.0.0.1", *(f"--{flag}={port}" for flag, port in ports.items()),
           f"--worker-port-list={','.join(map(str, workers))}", f"--num-cpus={cpus}", f"--temp-dir={temp}"]
    env = {**os.environ, **LOCAL_RAY_ENV, "PYTHONPATH": str(ROOT)}
    log = (temp / "start.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_start(proc, temp / "start.log")
        yield LocalRay(f"127.0.0.1:{ports['port']}", proc.pid)
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_start(proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not start within {START_S} s: {log.read_text()[-2000:]}")
        if "Ray runtime started" in log.read_text():
            return
        time.sleep(0.3)


@contextmanager
def ray_app(cluster: LocalRay, options: dict, grpc_port: int | None = None) -> Iterator[str]:
    """server/ray_serve.py's application on `cluster` with `options` (RayOptions' fields), its HTTP proxy on a free
    loopback port, and Serve's gRPC proxy serving the v2 gRPC service on `grpc_port` if given; this process is the
    driver until exit. Ray reads LOCAL_RAY_ENV when first imported: a process that imported it before calling this
    must have set them already."""
    os.environ.update(LOCAL_RAY_ENV)
    import ray
    from ray import serve

    from server.grpc_v2 import RAY_SERVICER_FUNCTION
    from server.ray_serve import app_builder

    (http_port,) = free_ports(1)
    grpc = {"port": grpc_port, "grpc_servicer_functions": [RAY_SERVICER_FUNCTION]} if grpc_port else None
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port}, grpc_options=grpc)
        serve.run(app_builder(options), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        try:
            serve.shutdown()  # also stops this driver's handles: their periodic tasks would outlive ray.shutdown
        finally:
            ray.shutdown()


@dataclass(frozen=True)
class Setting:
    label: str
    replicas: int  # 0: one `python -m server` process


SETTINGS = [Setting("one process (`python -m server`)", 0), Setting("Ray Serve, 1 model replica", 1),
            Setting("Ray Serve, 2 model replicas", 2)]


def infer_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request as tritonclient sends it: JSON header, then the tensor's bytes (binary extension)."""
    header = json.dumps({"inputs": [{"name": "pixel_values", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return header + x.astype("<f4").tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                                "Content-Type": "application/octet-stream"}


def bench_one(url: str, args: argparse.Namespace, label: str) -> list[str]:
    """One row per batch size: every client cycles over the first `--entries` entries."""
    info = httpx.get(f"{url}/api/zoo", timeout=60).json()
    entries = [e["id"] for e in info["entries"]][:args.entries]
    p = info["preprocessing"]
    rows = []
    for batch in args.batches:
        x = np.random.default_rng(0).standard_normal((batch, p["in_chans"], p["img_size"], p["img_size"]))
        infer = cycling_infer(entries, x.astype(np.float32))
        asyncio.run(load(url, args.clients, args.warmup, infer))  # exports, session loads, first calls
        rows.append(row(label, batch, args.clients, asyncio.run(load(url, args.clients, args.duration, infer))))
    return rows


def cycling_infer(entries: list[str], x: np.ndarray):
    """A request function for bench_server.load: `x` to the next entry in turn."""
    body, headers = infer_body(x)
    turn = itertools.count()

    async def infer(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"/v2/models/{entries[next(turn) % len(entries)]}/infer", content=body,
                                 headers=headers)

    return infer


def row(label: str, batch: int, clients: int, result: LoadResult) -> str:
    lat = sorted(result.latencies_ms) or [float("nan")]
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    rate = len(result.latencies_ms) / result.seconds
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "0"
    return (f"| {label} | {batch} | {clients} | {len(result.latencies_ms):,} | {rate:,.1f} | {rate * batch:,.0f} | "
            f"{statistics.median(lat):.1f} | {p95:.1f} | {errors} |")


def bench(args: argparse.Namespace) -> None:
    print(f"`{' '.join(['python -m bench.bench_ray', *sys.argv[1:]])}`\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"Python {platform.python_version()}; clients, server and Ray on the same machine.\n")
    print(f"Zoo `{args.zoo}`, clients cycle over {args.entries} entries; {args.clients} clients, {args.duration:g} s "
          f"per row after {args.warmup:g} s warm-up; v2 infer with binary tensors. Ray: a local one-node cluster, "
          f"{args.entries} sessions per model replica, Serve batching as the server's micro-batching "
          f"(up to 16 requests, 5 ms).\n")
    print("| setting | batch | clients | requests | req/s | images/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="prezoo-bench-ray-") as tmp:
        zoo, cache = zoo_folder(args.zoo, Path(tmp)), Path(tmp) / "cache"
        threads = [] if args.ort_threads is None else ["--ort-threads", str(args.ort_threads)]
        for setting in SETTINGS:
            if setting.replicas == 0:
                with running_server(zoo, cache, "--sessions", str(args.entries), *threads) as served:
                    rows = bench_one(served.url, args, setting.label)
            else:
                options = {"zoo": zoo, "cache": str(cache), "max_models_per_replica": args.entries,
                           "min_replicas": setting.replicas, "max_replicas": setting.replicas,
                           "ort_threads": args.ort_threads}
                with local_ray(os.cpu_count() or 1) as cluster, ray_app(cluster, options) as url:
                    rows = bench_one(url, args, setting.label)
            print("\n".join(rows), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(DEFAULT_ZOO), help="zoo folder or `tiny-sized` (default: %(default)s)")
    p.add_argument("--entries", type=int, default=4, help="entries the clients cycle over (default: %(default)s)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before each row")
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8],
                   help="images per request, comma-separated (default: 1,8)")
    p.add_argument("--ort-threads", type=int, help="ONNX Runtime threads per session, everywhere (default: ORT's)")
    bench(p.parse_args(argv))


if __name__ == "__main__":
    main()
