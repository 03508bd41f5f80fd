"""The bytes front of mixed precision (issue 26, item 3): EdMIPS picks at several bytes budgets against uniform
precisions, each as the ONNX file ONNX Runtime serves.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_edmips [--entries ZOO:ID ...] [--steps 100] [--seed 0]
        [--out DIR]

Per entry: fp32 (`export_onnx`), INT8 dynamic (`quantize_int8`), INT8 static QDQ with activations calibrated on 256
training images (`quantize_qdq_int8`), fp16 (`convert_fp16`), weight-only int4 and int8 (`export_mixed`, every
layer alike), and EdMIPS's picks at the default budgets (frozen weights; for the first entry of each zoo also the
middle budget with the weights fine-tuned, `weight_lr` 1e-4). Each file: its bytes, test top-1 on the 10k test images
and top-1 on the validation images the search never saw (both through ONNX Runtime, all graph optimizations, 1
thread), 95% Wilson intervals, and the batch-1 median latency (100 runs after 10 warm-up, the files of one entry
measured in turn in this process). One JSON per entry in --out: ENTRY.json under seed 0, ENTRY-sSEED.json under
another `--seed` (the searches' batch order and initial logits; the uniform files do not depend on it), a replicate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine
from export.mixed import export_mixed, quantize_qdq_int8
from export.onnx import convert_fp16, export_onnx, measure_latency, model_metadata, provenance, quantize_int8, session
from export.onnx import run as ort_run
from training.edmips import EdmipsConfig, edmips, splits
from training.evaluate import tensor_batches, zoo_split
from zoo.io import atomic_write_text
from zoo.precision import read_map, uniform
from zoo.stats import wilson_interval
from zoo.store import Zoo

ENTRIES = ("hytra-fmnist:hytra-L8-2ef57624", "hytra-fmnist:hytra-L8-e6339778", "ladder-fmnist:e32-d1-b8d459ce",
           "ladder-fmnist:e128-d2-cdf12fc2")
CALIBRATION = 256
FINETUNE_LR = 1e-4


def accuracy(path: Path, batches: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Top-1 of an ONNX file through ONNX Runtime (1 thread) with its 95% Wilson interval."""
    sess = session(path, threads=1)
    correct = sum(int((ort_run(sess, x).argmax(1) == y).sum()) for x, y in batches)
    n = sum(len(y) for _, y in batches)
    top1 = 100 * correct / n
    return {"top1": round(top1, 2), "interval": [round(v, 2) for v in wilson_interval(top1, n)], "n": n}


def numpy_batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in tensor_batches(dataset, 500)]


def uniform_files(zoo: Zoo, entry_id: str, folder: Path, calibration: list[np.ndarray]) -> dict[str, Path]:
    """The uniform baselines of one entry, by name."""
    model, entry = zoo.subnet(entry_id), zoo.entry(entry_id)
    meta, about = model_metadata(model, zoo.classes, zoo.preprocessing), provenance(zoo, entry)
    fp32 = export_onnx(model, folder / "fp32.onnx", meta, about=about)
    files = {"fp32": fp32, "int8-dynamic": quantize_int8(fp32, folder / "int8-dynamic.onnx"),
             "int8-static-qdq": quantize_qdq_int8(fp32, folder / "int8-static-qdq.onnx", calibration),
             "fp16": convert_fp16(fp32, folder / "fp16.onnx")}
    for bits in (4, 8):
        files[f"int{bits}-weights"] = export_mixed(model, uniform(model, bits), folder / f"int{bits}-weights.onnx",
                                                   meta, about).path
    return files


def edmips_files(zoo: Zoo, entry_id: str, folder: Path, cfg: EdmipsConfig, tag: str) -> tuple[dict[str, Path], dict]:
    """EdMIPS's picks for one entry as files, by name, and each pick's search record."""
    files, records = {}, {}
    for doc_path in edmips(zoo, entry_id, cfg, folder / tag):
        model = zoo.subnet(entry_id)
        bits, doc = read_map(doc_path, model)
        if "weights" in doc:
            from safetensors.torch import load_file
            model.load_state_dict(load_file(str(doc_path.parent / doc["weights"])))
        name = f"{tag}@{doc['budget']}"
        meta = model_metadata(model, zoo.classes, zoo.preprocessing)
        files[name] = export_mixed(model, bits, folder / f"{name}.onnx", meta, provenance(zoo, zoo.entry(entry_id))
                                   ).path
        records[name] = {k: doc[k] for k in ("budget", "bytes", "stepped_down", "val_top1", "seconds", "history")}
        records[name]["layers"] = bits
    return files, records


def bench_entry(zoo: Zoo, entry_id: str, steps: int, finetune: bool, test, held, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    cfg = EdmipsConfig(steps=steps, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train = splits(zoo, EdmipsConfig(weight_lr=FINETUNE_LR))[0]
        calibration = [x.numpy() for x, _ in tensor_batches(train, 64, limit=CALIBRATION)]
        files = uniform_files(zoo, entry_id, folder, calibration)
        started = time.perf_counter()
        picked, records = edmips_files(zoo, entry_id, folder, cfg, "edmips")
        search_s = time.perf_counter() - started
        files.update(picked)
        if finetune:
            middle = sorted(r["budget"] for r in records.values())[1]
            tuned_cfg = EdmipsConfig(steps=steps, weight_lr=FINETUNE_LR, budgets=(middle,), seed=seed)
            tuned, tuned_records = edmips_files(zoo, entry_id, folder, tuned_cfg, "edmips-finetuned")
            files.update(tuned)
            records.update(tuned_records)
        rows = {}
        for name, path in files.items():
            sess = session(path, threads=1)
            rows[name] = {"file_bytes": path.stat().st_size, "test": accuracy(path, test),
                          "val_holdout": accuracy(path, held),
                          "latency_b1": measure_latency(sess, (1, zoo.space.in_chans, zoo.space.img_size,
                                                               zoo.space.img_size), warmup=10, runs=100),
                          **({"search": records[name]} if name in records else {})}
    return {"zoo": zoo.name, "entry": entry_id, "params": zoo.entry(entry_id).params, "steps": steps, "seed": seed,
            "search_seconds_frozen": round(search_s, 1), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", nargs="+", default=list(ENTRIES), help="ZOO:ENTRY_ID pairs")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="the searches' seed (a replicate: another file per entry)")
    p.add_argument("--out", type=Path, default=Path("bench/data/edmips"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    seen = set()
    for pair in args.entries:
        zoo_name, entry_id = pair.split(":", 1)
        zoo = Zoo.load(zoo_name)
        test = numpy_batches(zoo_split(zoo, "test")[0])
        held = numpy_batches(splits(zoo, EdmipsConfig())[2])
        started = time.perf_counter()
        result = bench_entry(zoo, entry_id, args.steps, zoo_name not in seen, test, held, args.seed)
        seen.add(zoo_name)
        result.update(machine=machine(), threads=1, seconds=round(time.perf_counter() - started, 1),
                      command="OMP_NUM_THREADS=1 .venv/bin/python -m bench.bench_edmips "
                      + " ".join(sys.argv[1:] if argv is None else argv))
        path = args.out / (f"{entry_id}.json" if args.seed == 0 else f"{entry_id}-s{args.seed}.json")
        atomic_write_text(path, json.dumps(result, indent=1) + "\n")
        print(f"{entry_id}: {result['seconds']} s -> {path}")
        for name, r in result["rows"].items():
            print(f"  {name:<24} {r['file_bytes']:>9,} B  test {r['test']['top1']:6.2f} {r['test']['interval']}  "
                  f"val {r['val_holdout']['top1']:6.2f}  {r['latency_b1']['median_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
