"""Server load test on loopback, micro-batching on vs off side by side; or a UI screenshot for the README.

    .venv/bin/python -m bench.bench_server [--zoo DIR|tiny-sized] [--clients 32] [--duration 30] [--warmup 3]
    .venv/bin/python -m bench.bench_server --screenshot docs/ui.png [--zoo DIR]

For each setting the server runs in its own subprocess (`python -m server`, access log off); N concurrent clients
(one asyncio loop, httpx) send requests back to back for a fixed time: first POST /api/predict (one image each,
the zoo's default model), then POST /api/specialize. Prints markdown tables: requests/s, p50/p99 latency, errors
(must be 0) and the server's mean micro-batch size. The client shares the CPU with the server: say so when quoting.
`--zoo tiny-sized` serves a random-weight autoformer-tiny supernet with the PreNAS-Ti set (224² RGB, 6-11M params),
built for the run: models big enough that inference, not HTTP handling, is the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.bench_zoo import tiny_sized_zoo
from zoo.store import DEFAULT_ZOO

ROOT = Path(__file__).resolve().parent.parent
TINY_SIZED = "tiny-sized"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def row(self, label: str, endpoint: str, clients: int, mean_batch: str) -> str:
        lat = sorted(self.latencies_ms) or [float("nan")]
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        errors = sum(self.errors.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in self.errors.items())})" if errors else ""
        return (f"| {label} | {endpoint} | {clients} | {len(self.latencies_ms):,} | "
                f"{len(self.latencies_ms) / self.seconds:,.1f} | {statistics.median(lat):.1f} | {p99:.1f} | "
                f"{errors}{detail} | {mean_batch} |")


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


@contextmanager
def running_server(zoo: str, cache: Path, *extra: str) -> Iterator[Served]:
    """`python -m server` on a free loopback port, once /api/health answers; without the background latency profiling
    (`--no-profile`), which would share the cores with what is measured and report other latencies than the zoo's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "server", "--zoo", zoo, "--cache", str(cache), "--port", str(port),
           "--log-level", "warning", "--no-profile", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /api/health within 180 s")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield Served(url, proc.pid)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (the server shuts down gracefully), then SIGKILL if it has not exited after `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def zoo_folder(zoo: str, tmp: Path) -> str:
    """The zoo to serve: as given, or for `tiny-sized` one built under `tmp`."""
    if zoo != TINY_SIZED:
        return zoo
    tiny_sized_zoo(tmp / "zoo")
    return str(tmp / "zoo")


def sample_png(preprocessing: dict) -> bytes:
    """A Fashion-MNIST-sized random image in the zoo's input format (content does not change the cost)."""
    size, chans = preprocessing["img_size"], preprocessing["in_chans"]
    shape = (size, size) if chans == 1 else (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


async def load(url: str, clients: int, seconds: float, request) -> LoadResult:
    """`clients` tasks send requests back to back for `seconds`; every non-2xx or exception is an error."""
    result = LoadResult(seconds)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    r = await request(client)
                    key = None if r.is_success else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    key = type(e).__name__
                if key is None:
                    result.latencies_ms.append((time.perf_counter() - t) * 1e3)
                else:
                    result.errors[key] = result.errors.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return result


def bench(args: argparse.Namespace) -> None:
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"Python {platform.python_version()}; server and clients on the same machine.\n")
    print(f"Zoo `{args.zoo}`; {args.clients} clients, {args.duration:g} s per row after {args.warmup:g} s warm-up; "
          f"micro-batching max_batch {args.max_batch}, max_wait {args.max_wait_ms:g} ms.\n")
    print("| micro-batching | endpoint | clients | requests | req/s | p50 ms | p99 ms | errors | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="prezoo-bench-") as tmp:
        zoo = zoo_folder(args.zoo, Path(tmp))
        for batching in (True, False):
            extra = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
            with running_server(zoo, Path(tmp), *extra, *([] if batching else ["--no-batching"])) as served:
                for row in bench_one_server(served.url, args, "on" if batching else "off"):
                    print(row, flush=True)


def bench_one_server(url: str, args: argparse.Namespace, label: str) -> list[str]:
    info = httpx.get(f"{url}/api/zoo", timeout=60).json()
    image = sample_png(info["preprocessing"])
    budget = {"max_params": max(e["params"] for e in info["entries"])}

    async def predict(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/predict", files={"files": ("x.png", image, "image/png")})

    async def specialize(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/specialize", json=budget)

    rows = []
    for endpoint, request in (("predict", predict), ("specialize", specialize)):
        asyncio.run(load(url, args.clients, args.warmup, request))  # first request exports the model; JIT caches
        before = httpx.get(f"{url}/api/health", timeout=60).json()["batching"]
        result = asyncio.run(load(url, args.clients, args.duration, request))
        after = httpx.get(f"{url}/api/health", timeout=60).json()["batching"]
        batches, images = after["batches"] - before["batches"], after["images"] - before["images"]
        mean_batch = f"{images / batches:.1f}" if batches else "–"
        rows.append(result.row(label, endpoint, args.clients, mean_batch))
    return rows


def screenshot(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    out = Path(args.screenshot)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prezoo-shot-") as tmp, running_server(args.zoo, Path(tmp)) as served, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(served.url, wait_until="load")
        page.wait_for_selector("#chosen :text('Chosen')", timeout=120_000)
        page.locator("#download-onnx:not([disabled])").wait_for(timeout=120_000)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(DEFAULT_ZOO), help=f"zoo directory, Hub repo id, or '{TINY_SIZED}' (a random "
                                                           "autoformer-tiny supernet at 224²; default: %(default)s)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each row, not counted")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--screenshot", metavar="PNG", help="only take a UI screenshot (chromium) and write it here")
    args = p.parse_args(argv)
    if not Path(args.zoo).exists() and args.zoo == str(DEFAULT_ZOO):
        raise SystemExit(f"no zoo at {DEFAULT_ZOO}: build it first or pass --zoo DIR")
    if args.screenshot:
        if not shutil.which(CHROMIUM):
            raise SystemExit(f"{CHROMIUM} not found: apt-get install chromium (setup.sh does)")
        screenshot(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
