"""GPU inference (issue 7): exported PreNAS-Ti-like subnets, torch vs ONNX Runtime (CUDA, TensorRT), in one run.

    .venv/bin/python -m bench.bench_gpu [--models 2] [--batches 1 8 64] [--rounds 5] [--reps 20] [--out DIR]

For the first --models official `autoformer-tiny` preferred archs (random-initialised weights: this measures speed),
at each batch size: median latency and images/s of torch eager fp32, torch bf16 autocast (+ torch.compile), ONNX
Runtime CUDA fp32 and fp16 exports, and the TensorRT provider (fp32, fp16) when it runs here; each engine's
speed-up over torch eager fp32 and how far its logits are from it (max |Δ|, top-1 agreement). ORT calls take numpy
in and give numpy out, copies included, as the server does. Needs a CUDA GPU and `bash setup.sh --gpu`;
`--device cpu` runs the torch rows and ORT on CPU instead, to check the script on any machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.common import interleaved, machine, median
from export.onnx import convert_fp16, export_onnx, run, session
from export.runtime import CPU, CUDA, TENSORRT, provider_options
from zoo import ViTSupernet, get_space
from zoo.io import atomic_write_text
from zoo.official import OFFICIAL_PREFERRED


def torch_engines(model: torch.nn.Module, device: torch.device, compile_: bool) -> dict[str, Callable]:
    """name -> fn(x on the device, the same x as numpy) -> logits as numpy."""
    def call(m, bf16: bool):
        def fn(x, _x_np):
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                return m(x).float().cpu().numpy()
        return fn

    engines = {"torch eager fp32": call(model, False), "torch bf16": call(model, True)}
    if compile_:
        engines["torch bf16 + compile"] = call(torch.compile(model), True)
    return engines


def ort_engines(fp32: Path, fp16: Path, device: torch.device, cache: Path) -> dict[str, Callable]:
    """ONNX Runtime engines that really run on the asked provider here (others are skipped with a note)."""
    if device.type == "cpu":
        chains = {"ORT CPU fp32": (fp32, [CPU])}
    else:
        trt32 = provider_options([TENSORRT, CUDA], cache)  # the server's TensorRT settings
        trt16 = [(TENSORRT, {**trt32[0][1], "trt_fp16_enable": "True"}), CUDA]
        chains = {"ORT CUDA fp32": (fp32, [CUDA]), "ORT CUDA fp16": (fp16, [CUDA]),
                  "ORT TensorRT fp32": (fp32, trt32), "ORT TensorRT fp16": (fp32, trt16)}
    engines = {}
    for name, (path, providers) in chains.items():
        try:
            sess = session(path, providers)
        except Exception as e:  # a provider whose libraries are missing
            print(f"skipped {name}: {type(e).__name__}: {e}")
            continue
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if sess.get_providers()[0] != wanted:
            print(f"skipped {name}: the session runs on {sess.get_providers()}, not {wanted}")
            continue
        engines[name] = lambda _x, x_np, s=sess: run(s, x_np)
    return engines


def bench_model(entry, space, args, device: torch.device, tmp: Path) -> list[dict]:
    torch.manual_seed(0)
    model = ViTSupernet(space).extract(entry.arch).eval()
    fp32 = export_onnx(model, tmp / f"{entry.arch.id}.onnx", {})
    fp16 = convert_fp16(fp32, tmp / f"{entry.arch.id}-fp16.onnx")
    model = model.to(device)
    engines = {**torch_engines(model, device, args.compile and device.type == "cuda"),
               **ort_engines(fp32, fp16, device, tmp)}
    rows = []
    for batch in args.batches:
        x = torch.randn(batch, space.in_chans, space.img_size, space.img_size, device=device)
        x_np = x.cpu().numpy()
        outputs = {name: fn(x, x_np) for name, fn in engines.items()}  # also the warm-up (engine builds, compiles)
        ref = outputs["torch eager fp32"]
        calls = {name: lambda fn=fn, x=x, x_np=x_np: fn(x, x_np) for name, fn in engines.items()}
        times = interleaved(calls, args.rounds, args.reps)
        base = median(times["torch eager fp32"])
        for name, t in times.items():
            out = outputs[name]
            rows.append({"model": entry.arch.id, "params_m": entry.params_m, "batch": batch, "engine": name,
                         "ms": median(t) * 1e3, "img_per_s": batch / median(t), "speedup": base / median(t),
                         "max_abs_diff": float(np.abs(out - ref).max()),
                         "top1_agree": float((out.argmax(1) == ref.argmax(1)).mean())})
            r = rows[-1]
            print(f"| {r['model']:<18} | {batch:>5} | {name:<22} | {r['ms']:>8.2f} | {r['img_per_s']:>8.0f} | "
                  f"{r['speedup']:>6.2f}x | {r['max_abs_diff']:>8.1e} | {r['top1_agree'] * 100:>6.1f}% |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=2, help="how many PreNAS-Ti-like archs (smallest first)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    device, space = torch.device(args.device), get_space("autoformer-tiny")
    gpu = f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    print(f"machine: {machine()}{gpu}, onnxruntime {ort.__version__} {ort.get_available_providers()}")
    print(f"{args.rounds} interleaved rounds x {args.reps} calls; random-initialised autoformer-tiny subnets at "
          f"{space.img_size}²\n")
    print("| model | batch | engine | ms | img/s | vs eager | max abs Δ | top-1 agree |\n"
          "|---|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for e in OFFICIAL_PREFERRED["autoformer-tiny"][:args.models]
                for r in bench_model(e, space, args, device, Path(tmp))]
    if args.out:
        atomic_write_text(args.out / "bench_gpu.json", json.dumps({"machine": machine() + gpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
