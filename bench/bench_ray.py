"""One `python -m server` process vs the Ray Serve application (server/ray_serve.py) with 1 and 2 model replicas.

    .venv/bin/python -m bench.bench_ray [--zoo DIR|tiny-sized] [--clients 16] [--duration 20] [--warmup 3]

The same request mix against each: Open Inference Protocol v2 infer requests (binary tensors, as tritonclient sends
them) of batch 1 and batch 8, each client cycling over every entry of the zoo, N concurrent clients back to back for
a fixed time. Ray runs as a local cluster on free loopback ports (`ray start --head`, no dashboard), stopped by PID
after each setting. Prints a markdown table: requests/s, images/s, p50/p95 latency, errors (must be 0). Clients,
server and Ray share the machine's CPUs: on a small machine this shows the overhead of the path, not its scaling.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.bench_server import ROOT

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
def ray_app(cluster: LocalRay, options: dict) -> Iterator[str]:
    """server/ray_serve.py's application on `cluster` with `options` (RayOptions' fields), its HTTP proxy on a free
    loopback port; this process is the driver until exit. Ray reads LOCAL_RAY_ENV when first imported: a process
    that imported it before calling this must have set them already."""
    os.environ.update(LOCAL_RAY_ENV)
    import ray
    from ray import serve

    from server.ray_serve import app_builder

    (http_port,) = free_ports(1)
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        serve.run(app_builder(options), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        ray.shutdown()
