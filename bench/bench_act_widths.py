"""Activation widths per layer (issue 26, item 3): which layers' int8 activations buy ONNX Runtime CPU latency.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_act_widths [--entries ZOO:ID ...] [--rounds 5] [--out DIR]

A bytes budget never buys activation widths (they are not stored), so their cost is latency. Per entry: the fp32
file, static QDQ int8 over the whole graph (`quantize_qdq_int8`, as bench_edmips), and static QDQ int8 on spans of
the compute layers only (Conv/Gemm/MatMul in graph order): each quarter on its own, and the last half and three
quarters. Each file: its bytes, test top-1 through ONNX Runtime on the 10,000 test images (Wilson 95%), and its
batch-1 median latency (one thread, all graph optimizations; `--rounds` rounds of 200
calls after 10 warm-up, the files measured in turn within each round, the median over rounds). If the layers' gains
added up, a per-layer latency table would make a differentiable cost for the search; this measures whether they do.
Raw: DIR/ENTRY.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

from bench.bench_edmips import CALIBRATION, accuracy, numpy_batches
from bench.common import machine
from bench.report import DATA
from export.mixed import COMPUTE_OPS, quantize_qdq_int8
from export.onnx import export_onnx, measure_latency, model_metadata, provenance, session
from training.edmips import EdmipsConfig, splits
from training.evaluate import tensor_batches, zoo_split
from zoo.io import atomic_write_text
from zoo.store import Zoo

ENTRIES = ("mbconv-fmnist:mbconv-B4-b860680b", "mbconv-fmnist:mbconv-B6-a0cf75b8", "hytra-fmnist:hytra-L8-e6339778")


def spans(n: int) -> dict[str, slice]:
    """Each quarter of the n compute layers alone (the last is the shortest suffix), then the last half and three
    quarters."""
    cuts = [round(n * q / 4) for q in range(5)]
    quarters = {f"layers {a}-{b - 1}": slice(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a}
    suffixes = {f"last {n - a}": slice(a, None) for a in (cuts[2], cuts[1]) if cuts[3] > a}
    return quarters | suffixes


def files_of(zoo: Zoo, entry_id: str, folder: Path, calibration) -> tuple[dict[str, Path], int]:
    """The entry's fp32 file, its whole-graph QDQ int8 file and one QDQ file per span; and its compute layer count."""
    model = zoo.subnet(entry_id)
    fp32 = export_onnx(model, folder / "fp32.onnx", model_metadata(model, zoo.classes, zoo.preprocessing),
                       about=provenance(zoo, zoo.entry(entry_id)))
    n = sum(node.op_type in COMPUTE_OPS for node in onnx.load(str(fp32)).graph.node)
    files = {"fp32": fp32, "int8 whole graph": quantize_qdq_int8(fp32, folder / "all.onnx", calibration)}
    for i, (name, span) in enumerate(spans(n).items()):
        files[f"int8 {name}"] = quantize_qdq_int8(fp32, folder / f"span{i}.onnx", calibration, span)
    return files, n


def interleaved_latency(files: dict[str, Path], shape: tuple[int, ...], rounds: int) -> dict[str, dict]:
    """Batch-1 median ms per file: each round times every file in turn, so drift hits all alike."""
    sessions = {name: session(path, threads=1) for name, path in files.items()}
    medians = {name: [] for name in files}
    for _ in range(rounds):
        for name, sess in sessions.items():
            medians[name].append(measure_latency(sess, shape, warmup=10, runs=200)["median_ms"])
    return {name: {"median_ms": round(statistics.median(v), 4), "rounds_ms": v} for name, v in medians.items()}


def bench_entry(zoo: Zoo, entry_id: str, rounds: int) -> dict:
    train = splits(zoo, EdmipsConfig(weight_lr=1e-4))[0]  # the training images the edmips bench calibrates on
    calibration = [x.numpy() for x, _ in tensor_batches(train, 64, limit=CALIBRATION)]
    test = numpy_batches(zoo_split(zoo, "test")[0])
    with tempfile.TemporaryDirectory() as tmp:
        files, n = files_of(zoo, entry_id, Path(tmp), calibration)
        side = zoo.space.img_size
        latency = interleaved_latency(files, (1, zoo.space.in_chans, side, side), rounds)
        rows = {name: {"file_bytes": path.stat().st_size, "test": accuracy(path, test), "latency_b1": latency[name]}
                for name, path in files.items()}
    return {"kind": "act-widths", "zoo": zoo.name, "entry": entry_id, "params": zoo.entry(entry_id).params,
            "compute_layers": n, "rounds": rounds, "rows": rows}


def tables(raw: dict) -> str:
    """One entry's files: bytes, test top-1, batch-1 latency and its ratio to fp32."""
    fp32 = raw["rows"]["fp32"]["latency_b1"]["median_ms"]
    lines = [f"`{raw['zoo']}` / `{raw['entry']}` ({raw['params']:,} params, {raw['compute_layers']} compute layers; "
             f"batch-1 median of {raw['rounds']} interleaved rounds, 1 thread)", "",
             "| file | bytes | test top-1 (95% interval) | batch-1 median ms | vs fp32 |", "|---|---|---|---|---|"]
    for name, row in raw["rows"].items():
        ms, test = row["latency_b1"]["median_ms"], row["test"]
        lines.append(f"| {name} | {row['file_bytes']:,} | {test['top1']:.2f} ({test['interval'][0]:.2f}–"
                     f"{test['interval'][1]:.2f}) | {ms:.3f} | {fp32 / ms:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", nargs="+", default=list(ENTRIES), help="ZOO:ENTRY_ID pairs")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    p.add_argument("--out", type=Path, default=DATA / "act-widths")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for pair in args.entries:
        zoo_name, entry_id = pair.split(":", 1)
        started = time.perf_counter()
        result = bench_entry(Zoo.load(zoo_name), entry_id, args.rounds)
        result.update(machine=machine(), seconds=round(time.perf_counter() - started, 1),
                      command="OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_act_widths "
                              + " ".join(sys.argv[1:] if argv is None else argv))
        path = args.out / f"{entry_id}.json"
        atomic_write_text(path, json.dumps(result, indent=1) + "\n")
        print(f"wrote {path} ({result['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
