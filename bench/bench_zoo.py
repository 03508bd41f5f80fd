"""The zoo as a product: specialization latency vs search, and inference engines side by side.

    .venv/bin/python -m bench.bench_zoo [--zoo zoos/ladder-fmnist] [--budget 0.3M] [--skip-search]

1. Budget -> standalone model (query + slice) on the default zoo and on an autoformer-tiny-sized
   supernet (goal ≤ 100 ms); budget -> ONNX file cold and cached; vs the evolutionary search
   baseline (AutoFormer's population 50 x 20 generations, val top-1 fitness) on the same supernet
   and budget.
2. torch eager vs ONNX Runtime fp32 vs INT8 for two zoo entries at batch 1 and 32 (interleaved
   rounds, 2 threads each), with top-1 on the Fashion-MNIST test set and agreement with torch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import interleaved, machine, median
from export.cache import ExportCache
from export.onnx import run, session
from training.data import load_data
from training.evaluate import accuracy, tensor_batches
from training.search import SearchConfig, evolution
from zoo import BUILTIN_SPACES, ViTSupernet, Zoo, ZooEntry, flops, params
from zoo.official import OFFICIAL_PREFERRED
from zoo.store import DEFAULT_ZOO, write_zoo


def _ms(fn, reps: int = 20) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def tiny_sized_zoo(root: Path) -> Zoo:
    """autoformer-tiny supernet (random weights) indexed with the official PreNAS-Ti preferred set."""
    space = BUILTIN_SPACES["autoformer-tiny"]
    entries = [ZooEntry(e.arch, params(space, e.arch), flops(space, e.arch), top1=70.0 + e.bucket)
               for e in OFFICIAL_PREFERRED[space.name]]
    write_zoo(root, name="tiny-sized", space=space, state=ViTSupernet(space).state_dict(), entries=entries,
              classes=[f"c{i}" for i in range(1000)],
              preprocessing={"img_size": 224, "in_chans": 3, "crop_pct": 0.875, "interpolation": "bicubic",
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    return Zoo.load(root)


def specialization(zoo: Zoo, budget: str, skip_search: bool) -> None:
    print("### Specialization: budget -> model\n")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        big = tiny_sized_zoo(Path(tmp) / "tiny")
        big.supernet  # noqa: B018 (load once; a server keeps it in memory)
        load_big = time.perf_counter() - t
        zoo.supernet  # noqa: B018
        spec_mini = _ms(lambda: zoo.subnet(zoo.query(max_params=budget)))
        spec_big = _ms(lambda: big.subnet(big.query(max_params="6M")))
        cache = ExportCache(Path(tmp) / "cache")
        entry = zoo.query(max_params=budget)
        t = time.perf_counter()
        cache.file(zoo, entry, "onnx")
        onnx_cold = (time.perf_counter() - t) * 1e3
        onnx_cached = _ms(lambda: cache.file(zoo, entry, "onnx"))
        t = time.perf_counter()
        cache.file(zoo, entry, "onnx-int8")
        int8_cold = (time.perf_counter() - t) * 1e3
    print("| operation | time | vs search |")
    print("|---|---|---|")
    search_ms = None
    if not skip_search:
        val, _ = load_data("fashion-mnist", "val")
        batches = tensor_batches(val, 500, limit=2000)
        t = time.perf_counter()
        found = evolution(zoo.space, lambda a: accuracy(zoo.supernet, a, batches).top1,
                          SearchConfig(max_params=entry.params + 1), progress=True)  # a bucket is [min, max)
        search_ms = (time.perf_counter() - t) * 1e3
        print(f"| evolutionary search, budget {budget} (pop 50 x 20 gen, {found.evaluations} archs on 2000 val "
              f"images; found {found.best.id}) | {search_ms / 1e3:.1f} s | 1x |")
    ratio = lambda ms: f"{search_ms / ms:,.0f}x faster" if search_ms else "-"
    print(f"| zoo query + slice, `{zoo.name}`, budget {budget} -> {entry.id} | {spec_mini:.2f} ms | "
          f"{ratio(spec_mini)} |")
    print(f"| zoo query + slice, autoformer-tiny-sized supernet, budget 6M -> PreNAS-Ti (5.995M) | {spec_big:.1f} ms "
          f"(goal ≤ 100) | - |")
    print(f"| budget -> ONNX file, cold (export + check + write) | {onnx_cold:.0f} ms | {ratio(onnx_cold)} |")
    print(f"| budget -> ONNX file, cached | {onnx_cached:.2f} ms | {ratio(onnx_cached)} |")
    print(f"| budget -> INT8 ONNX, cold (from cached fp32) | {int8_cold:.0f} ms | {ratio(int8_cold)} |")
    print(f"\nOne-time load of the tiny-sized zoo (verify sha256 + build supernet): {load_big:.1f} s.\n")


def engines(zoo: Zoo, rounds: int) -> None:
    print("### Inference engines (2 threads each)\n")
    test, _ = load_data("fashion-mnist", "test")
    batches = tensor_batches(test, 1000)
    torch.set_num_threads(2)
    print("| entry | engine | b1 ms | b1 speedup | b32 ms | b32 speedup | test top-1 | top-1 agreement with torch |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cache = ExportCache(tmp)
        for entry in (min(zoo.entries, key=lambda e: e.params), max(zoo.entries, key=lambda e: e.params)):
            model = zoo.subnet(entry)
            sessions = {k: session(cache.file(zoo, entry, k), threads=2) for k in ("onnx", "onnx-int8")}
            with torch.inference_mode():
                ref = torch.cat([model(x) for x, _ in batches]).argmax(1).numpy()
            labels = torch.cat([y for _, y in batches]).numpy()
            preds = {"torch eager": ref, **{k: np.concatenate([run(s, x.numpy()) for x, _ in batches]).argmax(1)
                                            for k, s in sessions.items()}}
            times = {}
            for b in (1, 32):
                x = torch.randn(b, *batches[0][0].shape[1:])
                fns = {"torch eager": lambda x=x, m=model: _torch(m, x)}
                fns |= {k: lambda s=s, x=x: run(s, x.numpy()) for k, s in sessions.items()}
                t = interleaved(fns, rounds=rounds, reps=20 if b == 1 else 5)
                times[b] = {k: median(v) * 1e3 for k, v in t.items()}
            for name, label in (("torch eager", "torch eager fp32"), ("onnx", "ORT fp32"), ("onnx-int8", "ORT INT8")):
                b1, b32 = times[1][name], times[32][name]
                print(f"| {entry.id} ({entry.params / 1e6:.3f}M) | {label} | {b1:.3f} | "
                      f"{times[1]['torch eager'] / b1:.2f}x | {b32:.2f} | {times[32]['torch eager'] / b32:.2f}x | "
                      f"{100 * (preds[name] == labels).mean():.2f}% | {100 * (preds[name] == ref).mean():.2f}% |")


def _torch(model, x):
    with torch.inference_mode():
        return model(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=str(DEFAULT_ZOO))
    ap.add_argument("--budget", default="0.3M")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--skip-search", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    zoo = Zoo.load(args.zoo)
    specialization(zoo, args.budget, args.skip_search)
    engines(zoo, args.rounds)


if __name__ == "__main__":
    main()
