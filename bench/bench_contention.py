"""ONNX Runtime's threading policy under CPU contention: which one the server should use.

    .venv/bin/python -m bench.bench_contention [--zoo DIR] [--burners 1] [--rounds 15] [--load-seconds 15]

ORT's intra-op threads busy-wait ("spin") between ops. On a quiet machine that saves a wake-up; on a busy one the
spinning threads take the cores that the working threads (and the HTTP server) need. Two measurements, each with
and without a CPU-burning neighbour (`--burners` processes running a busy loop):

1. Batch-1 latency of the zoo's largest entry, per policy (intra-op threads 1 or 2, spinning on or off) beside
   torch eager, in interleaved rounds so every policy sees the same noise.
2. The server's load test (bench.bench_server: 32 clients POST /api/predict for `--load-seconds`) per policy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.bench_server import TINY_SIZED, load, running_server, sample_png, zoo_folder
from bench.common import interleaved, machine, median
from export.cache import ExportCache
from export.onnx import run, session
from zoo.store import DEFAULT_ZOO, Zoo

POLICIES = {  # name -> (intra-op threads, spinning)
    "2 threads, spinning (ORT default)": (2, True),
    "2 threads, no spinning": (2, False),
    "1 thread, spinning": (1, True),
    "1 thread, no spinning": (1, False),
}


@contextmanager
def burners(n: int) -> Iterator[None]:
    """`n` processes each burning one core until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def latency_rows(zoo: Zoo, cache: ExportCache, n_burners: int, rounds: int) -> list[str]:
    entry = max(zoo.entries, key=lambda e: e.params)
    onnx = cache.file(zoo, entry, "onnx")
    x = np.random.default_rng(0).standard_normal((1, zoo.space.in_chans, zoo.space.img_size, zoo.space.img_size)
                                                  ).astype(np.float32)
    sessions = {name: session(onnx, threads=t, spinning=spin) for name, (t, spin) in POLICIES.items()}
    fns = {name: (lambda s=s: run(s, x)) for name, s in sessions.items()}
    model, xt = zoo.subnet(entry), torch.from_numpy(x)
    fns["torch eager, 2 threads"] = lambda: model(xt)
    rows = []
    for neighbour in (0, n_burners):
        with burners(neighbour), torch.inference_mode():
            times = interleaved(fns, rounds=rounds, reps=20, warmup=20)
        rows += [f"| {neighbour} | {name} | {median(t) * 1e3:.3f} | {max(t) * 1e3:.3f} |" for name, t in times.items()]
    return rows


def load_rows(zoo_dir: str, n_burners: int, seconds: float, clients: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="prezoo-contention-") as tmp:
        for name, (threads, spin) in POLICIES.items():
            flags = ["--ort-threads", str(threads), "--ort-spinning", "on" if spin else "off"]
            with running_server(zoo_dir, Path(tmp), *flags) as served:
                url = served.url
                info = httpx.get(f"{url}/api/zoo", timeout=60).json()
                image = sample_png(info["preprocessing"])

                async def predict(client: httpx.AsyncClient, image=image) -> httpx.Response:
                    return await client.post("/api/predict", files={"files": ("x.png", image, "image/png")})

                asyncio.run(load(url, clients, 3, predict))  # export + warm-up
                for neighbour in (0, n_burners):
                    with burners(neighbour):
                        result = asyncio.run(load(url, clients, seconds, predict))
                    rows.append(result.row(f"{neighbour} | {name}", "predict", clients, "–"))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_contention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(DEFAULT_ZOO), help=f"zoo directory or '{TINY_SIZED}' (224² models, "
                                                           "see bench.bench_server)")
    p.add_argument("--burners", type=int, default=1, help="busy-loop processes beside the measurement")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds of 20 calls per policy")
    p.add_argument("--load-seconds", type=float, default=15.0, help="seconds of load per server row")
    p.add_argument("--clients", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    print(f"Machine: {machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start.\n")
    with tempfile.TemporaryDirectory(prefix="prezoo-contention-") as tmp:
        zoo_dir = zoo_folder(args.zoo, Path(tmp))
        zoo = Zoo.load(zoo_dir)
        rows = latency_rows(zoo, ExportCache(Path(tmp) / "exports"), args.burners, args.rounds)
        print(f"### Batch-1 latency, largest entry of {zoo.name} ({args.rounds} rounds of 20 calls)\n")
        print("| burners | engine / policy | median ms | worst round ms |\n|---|---|---|---|")
        print("\n".join(rows), flush=True)
        print(f"\n### Server load: {args.clients} clients, POST /api/predict, {args.load_seconds:g} s per row\n")
        print("| burners | policy | endpoint | clients | requests | req/s | p50 ms | p99 ms | errors | mean batch |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(load_rows(zoo_dir, args.burners, args.load_seconds, args.clients)))


if __name__ == "__main__":
    main()
