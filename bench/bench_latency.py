"""ONNX Runtime latency of every trained baseline and every shipped zoo entry, measured side by side in one run:
issue 23's "measured ONNX Runtime latency" axis of the zoos-vs-baselines table and plot.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_latency [--runs /tmp/prezoo-run/runs/baselines | --untrained]
        [--zoo NAME_OR_DIR ...] [--threads 1,2] [--rounds 200] [--reps 10] [--warmup 20] [--conditions TEXT]

Baselines: every finished model (`FAMILY/RUNG-sSEED/result.json` and its checkpoint) under `--runs`, as
bench/bench_baselines.py writes them (its lr sweep under `tune/` is left out); or, with `--untrained`, every model of
the committed raw files (bench/data/baselines/FAMILY.json) built from its rung with initial weights, so that a fresh
clone without the checkpoints times them too (a graph's latency does not depend on its weights' values). Each is
exported as the zoos' fp32 files are
(TorchScript exporter, opset 17, dynamic batch axis; export/onnx.py), with the export's largest logit difference from
torch recorded. Zoo entries: every entry of every `--zoo` (default: the shipped zoos), built as the server runs them
(`export.runtime.serving_session` through an ExportCache in a temp folder). Every model then gets one CPU session per
`--threads` value with the serving options (all graph optimisations, idle threads not spinning), and all of those
sessions are timed in the same interleaved rounds (bench.common.interleaved: `--warmup` calls each first, then
`--rounds` rounds in which each session runs `--reps` calls on one fixed random 1x1x28x28 input), so that whatever
else loads the machine hits every model alike. Per model and thread count: the median, p10 and p90 over rounds of a
round's mean ms per call. Raw results: bench/data/latency/fashion-mnist.json (small: the statistics, not the times),
with the machine, the command, the protocol and `--conditions` (say there what else ran, or that it was paused).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench.bench_baselines import IMG_SIZE, IN_CHANS, bounded, load_model, rung_of, standalone
from bench.common import interleaved, machine
from bench.report import DATA
from zoo.io import atomic_write_text

DEFAULT_RUNS = Path("/tmp/prezoo-run/runs/baselines")
BASELINES_RAW = DATA / "baselines"
MAX_CONDITIONS = 500  # characters of --conditions


def trained_baselines(runs: Path) -> list[tuple[dict, torch.nn.Module]]:
    """(result.json, trained model) of every finished baseline under `runs`; the lr sweep is not a ladder."""
    return [(result, load_model(architecture(result), p.parent)) for p in sorted(runs.glob("*/*/result.json"))
            if p.parent.parent.name != "tune" for result in [json.loads(p.read_text())]]


def untrained_baselines(data: Path) -> list[tuple[dict, torch.nn.Module]]:
    """(raw record, model with initial weights) of every model of the committed baseline raw files in `data`."""
    torch.manual_seed(0)
    return [(result, architecture(result)().eval()) for p in sorted(data.glob("*.json"))
            for result in json.loads(p.read_text())["models"]]


def architecture(result: dict) -> Callable[[], torch.nn.Module]:
    """What builds the model a result was trained as: a ladder's rung, or a PreZoo arch trained standalone."""
    if "arch" in result:
        return partial(standalone, json.dumps(result["arch"]))
    return rung_of(result["family"], result["rung"]).build


def export_baseline(model: torch.nn.Module, path: Path) -> Path:
    """fp32 ONNX as export/onnx.py writes a zoo entry's (TorchScript exporter, opset 17, dynamic batch axis)."""
    from export.onnx import INPUT, OUTPUT

    x = torch.zeros(2, IN_CHANS, IMG_SIZE, IMG_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return path


def baseline_sessions(baselines: list[tuple[dict, torch.nn.Module]], tmp: Path, threads: list[int], x: torch.Tensor
                      ) -> list[tuple[dict, dict]]:
    """(the record, {threads: session}) of every baseline, smallest first, each exported once into `tmp`."""
    from export.onnx import parity, session

    out = []
    for result, model in sorted(baselines, key=lambda rm: (rm[0]["family"], rm[0]["params"], rm[0]["seed"])):
        path = export_baseline(model, tmp / f"{result['family']}-{result['rung']}-s{result['seed']}.onnx")
        sessions = {t: session(path, threads=t, spinning=False) for t in threads}  # serving_session's options
        record = {"kind": "baseline", "family": result["family"], "rung": result["rung"], "seed": result["seed"],
                  "params": result["params"], "macs": result["macs"],
                  "onnx_max_abs_diff": float(f"{parity(model, sessions[threads[0]], x)[0]:.3g}")}
        out.append((record, sessions))
        print(f"[{record['family']} {record['rung']} s{record['seed']}] exported", flush=True)
    return out


def zoo_sessions(sources: list[str], cache_root: Path, threads: list[int]) -> list[tuple[dict, dict]]:
    """(the record, {threads: session}) of every entry of the zoos, as the server runs it on CPU."""
    from export.cache import ExportCache
    from export.runtime import CPU, serving_session
    from zoo.store import Zoo

    cache = ExportCache(cache_root)
    out = []
    for source in sources:
        zoo = Zoo.load(source)
        for entry in zoo.entries:
            record = {"kind": "zoo", "zoo": zoo.name, "id": entry.id, "params": entry.params, "macs": entry.flops,
                      "weights_sha256": zoo.checksum}
            out.append((record, {t: serving_session(cache, zoo, entry, [CPU], t) for t in threads}))
        print(f"[{zoo.name}] {len(zoo.entries)} entries exported", flush=True)
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, p10 and p90 in ms of per-round mean seconds per call."""
    ms = [1e3 * s for s in seconds]
    q = statistics.quantiles(ms, n=10)
    return {"median_ms": round(statistics.median(ms), 4), "p10_ms": round(q[0], 4), "p90_ms": round(q[-1], 4)}


def measure(models: list[tuple[dict, dict]], x: np.ndarray, rounds: int, reps: int, warmup: int) -> list[dict]:
    """Every (model, threads) session timed in the same interleaved rounds; the records with their `latency`."""
    from export.onnx import run

    calls = {(i, t): partial(run, sess, x) for i, (_, sessions) in enumerate(models) for t, sess in sessions.items()}
    times = interleaved(calls, rounds=rounds, reps=reps, warmup=warmup)
    return [{**record, "latency": {str(t): summary(times[i, t]) for t in sessions}}
            for i, (record, sessions) in enumerate(models)]


def _threads(text: str) -> list[int]:
    values = [bounded(int, 1, 64)(t) for t in text.split(",") if t.strip()]
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct thread counts, e.g. 1,2")
    return values


def _conditions(text: str) -> str:
    if len(text) > MAX_CONDITIONS:
        raise argparse.ArgumentTypeError(f"at most {MAX_CONDITIONS} characters")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=None, help=f"bench_baselines' --out (default: {DEFAULT_RUNS})")
    ap.add_argument("--untrained", action="store_true", help=f"time the models of {BASELINES_RAW}/*.json built with "
                                                             "initial weights instead of --runs' trained ones")
    ap.add_argument("--zoo", action="append", help="a zoo folder or shipped zoo name, repeatable (default: every "
                                                   "shipped zoo)")
    ap.add_argument("--threads", type=_threads, default=[1, 2], help="ORT intra-op threads, each measured")
    ap.add_argument("--rounds", type=bounded(int, 10, 100_000), default=200)
    ap.add_argument("--reps", type=bounded(int, 1, 1000), default=10, help="calls per session in each round")
    ap.add_argument("--warmup", type=bounded(int, 0, 10_000), default=20, help="calls per session before the rounds")
    ap.add_argument("--conditions", type=_conditions, default="not recorded",
                    help="what else ran on the machine (recorded in the raw file)")
    ap.add_argument("--out", type=Path, default=DATA / "latency" / "fashion-mnist.json")
    args = ap.parse_args(argv)
    if args.untrained and args.runs is not None:
        ap.error("--untrained times the committed raw files' models: give no --runs")
    args.runs = args.runs or DEFAULT_RUNS
    if not args.untrained and not args.runs.is_dir():
        ap.error(f"--runs {args.runs}: no such folder (bench_baselines' --out)")
    return args


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from export.profile import host_description
    from export.runtime import CPU
    from zoo.store import shipped_zoos

    args = parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m bench.bench_latency " + " ".join(sys.argv[1:] if argv is None else argv)
    zoos = args.zoo or list(shipped_zoos())
    x = torch.randn(1, IN_CHANS, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        baselines = untrained_baselines(BASELINES_RAW) if args.untrained else trained_baselines(args.runs)
        models = baseline_sessions(baselines, Path(tmp), args.threads, x) + \
            zoo_sessions(zoos, Path(tmp) / "cache", args.threads)
        if not models:
            raise SystemExit(f"nothing to measure: no finished baseline under {args.runs} and no zoo entry")
        print(f"timing {len(models)} models x {len(args.threads)} thread counts: {args.rounds} rounds of "
              f"{args.reps} calls each", flush=True)
        started, load = time.perf_counter(), os.getloadavg()[0]
        measured = measure(models, x.numpy(), args.rounds, args.reps, args.warmup)
        seconds = time.perf_counter() - started
    doc = {"kind": "latency", "dataset": "fashion-mnist", "machine": f"{host_description(CPU)}; {machine()}",
           "command": command, "conditions": args.conditions,
           "baseline_weights": "initial (untrained)" if args.untrained else "trained",
           "load_average_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2)},
           "protocol": {"engine": f"onnxruntime {ort.__version__} {CPU}, fp32", "batch": 1, "threads": args.threads,
                        "session": "serving_session's options: ORT_ENABLE_ALL, idle threads not spinning",
                        "export": "TorchScript exporter, opset 17, dynamic batch axis (zoo entries: the ExportCache)",
                        "warmup": args.warmup, "rounds": args.rounds, "reps": args.reps,
                        "order": "every (model, threads) session once per round, in the same order each round",
                        "statistic": "median, p10, p90 over rounds of the round's mean ms per call",
                        "seconds": round(seconds, 1)},
           "models": measured}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    for m in measured:
        name = f"{m['family']} {m['rung']} s{m['seed']}" if m["kind"] == "baseline" else f"{m['zoo']} {m['id']}"
        print(f"{name:40s} {m['params']:>10,} " + "  ".join(f"{t} thr {v['median_ms']:.3f} ms"
                                                           for t, v in m["latency"].items()))
    print(f"wrote {args.out} ({seconds:.0f} s of timing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
