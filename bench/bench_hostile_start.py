"""A battery of bad starts: `python -m server` on out-of-range flags and on zoos whose weights were tampered with
(the index's sha256 rewritten to match, so only the new load checks can catch them), and `python -m export triton`
on folders it did not write. Each must exit 2 with one line naming the problem, no traceback, no hang, and leave
what it was pointed at unchanged.

    .venv/bin/python -m bench.bench_hostile_start

Flag cases run in this process through each package's `main(argv)` (argparse refuses them before any work); zoo and
folder cases run the real command in a subprocess, killed past its bound: a server that starts on a bad zoo is a
hang. The harness (cases, judging, report) is `bench.bench_hostile_cli`'s; `tests/test_hostile_cli.py` runs both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.bench_hostile_cli import BAD_NUMBERS, ROOT, BatteryResult, Case, run_all, run_battery_command
from zoo.io import sha256_file

HYTRA, VIT = ROOT / "zoos" / "hytra-fmnist", ROOT / "zoos" / "ladder-fmnist"
SHARED_VAR, SHARED_MEAN = "bodies.l0_s0_conv.2.running_var", "bodies.l0_s0_conv.2.running_mean"
SERVER_RANGES = {"--cache-max-mb": ("0", "-1", "1e3", str(2**25)), "--max-batch": ("0", "-5", "1025"),
                 "--max-wait-ms": ("-1", "1001"), "--sessions": ("0", "-1", "257"), "--ort-threads": ("0", "-1"),
                 "--shutdown-timeout": ("-1", "3601"), "--max-image-bytes": ("0", str(2**31)),
                 "--max-image-pixels": ("0", str(2**40)), "--max-aspect": ("0.5", "1e7"),
                 "--max-images": ("0", "1025"), "--header-timeout": ("0", "-1"), "--body-timeout": ("0", "1e9"),
                 "--port": ("-1", "65536"), "--grpc-port": ("-1", "65536")}
Edit = Callable[[dict[str, torch.Tensor]], object]


def path_key(tensors: dict[str, torch.Tensor], buffer: str) -> str:
    """The first per-path BatchNorm statistic of that buffer (`paths.<entry id>.<key>`)."""
    return next(k for k in tensors if k.startswith("paths.") and k.endswith(buffer))


TAMPERINGS: dict[str, Edit] = {
    "a supernet tensor missing": lambda t: t.pop("bodies.l0_s0_conv.1.weight"),
    "an entry's statistic missing": lambda t: t.pop(path_key(t, "running_var")),
    "a negative shared variance": lambda t: t[SHARED_VAR].fill_(-1),
    "a negative entry variance": lambda t: t[path_key(t, "running_var")].fill_(-1),
    "a running mean of 6e4": lambda t: t[SHARED_MEAN].fill_(6e4),
    "bool statistics": lambda t: t.update({(k := path_key(t, "running_var")): t[k].bool()}),
    "int64 statistics": lambda t: t.update({(k := path_key(t, "running_mean")): t[k].long()}),
    "an int32 supernet tensor": lambda t: t.update({"bodies.l0_s0_conv.1.weight": torch.ones_like(
        t["bodies.l0_s0_conv.1.weight"], dtype=torch.int32)}),
    "a bf16 tensor": lambda t: t.update({"bodies.l0_s0_conv.1.weight": t["bodies.l0_s0_conv.1.weight"].bfloat16()}),
    "statistics of no entry": lambda t: t.update({"paths.hytra-L4-00000000.stem.1.running_mean": torch.zeros(4)}),
    "a statistic of the wrong shape": lambda t: t.update({(k := path_key(t, "running_mean")): t[k][:-1]}),
    "a NaN weight": lambda t: t["bodies.l0_s0_conv.1.weight"].view(-1)[0].fill_(float("nan")),
}


def tampered(source: Path, out: Path, edit: Edit) -> Path:
    """A copy of the zoo with `edit` applied to its weights and the index's sha256 made to match them."""
    shutil.copytree(source, out)
    index = json.loads((out / "zoo.json").read_text())
    weights = out / index["weights"]["file"]
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights)
    index["weights"]["sha256"] = sha256_file(weights)
    (out / "zoo.json").write_text(json.dumps(index))
    return out


def server_cases(tmp: Path) -> list[Case]:
    flags = [Case("server", "flag", (flag, value), flag, program="server")
             for flag, values in SERVER_RANGES.items() for value in (*BAD_NUMBERS, *values)]
    flags += [Case("server", "flag", (flag, ""), flag, program="server") for flag in ("--zoo", "--compare-zoo")]
    start = ("--port", "0", "--no-profile", "--cache", str(tmp / "cache"))
    zoos = [Case("server", "file", ("--zoo", str(tampered(HYTRA, tmp / "zoos" / name.replace(" ", "-"), edit)),
                                    *start), "cannot use zoo", subprocess=True, program="server")
            for name, edit in TAMPERINGS.items()]
    vit_bf16 = tampered(VIT, tmp / "zoos" / "vit-bf16", lambda t: t.update({(k := next(iter(t))): t[k].bfloat16()}))
    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    gradio_served = Path(tempfile.gettempdir()) / "gradio" / "prezoo-hostile-cache"  # Gradio's upload folder
    zoos += [Case("server", "file", ("--zoo", str(vit_bf16), *start), "cannot use zoo", True, program="server"),
             Case("server", "file", ("--zoo", str(HYTRA), "--compare-zoo", str(vit_bf16), *start),
                  "cannot use --compare-zoo", True, program="server"),
             Case("server", "file", ("--zoo", str(tmp / "absent"), *start), "no zoo at", True, program="server"),
             Case("server", "file", ("--zoo", str(a_file), *start), "cannot use zoo", True, program="server"),
             Case("server", "folder", ("--zoo", str(HYTRA), *start[:-1], str(a_file)), "--cache", True,
                  program="server"),
             Case("server", "folder", ("--zoo", str(HYTRA), *start[:-1], str(gradio_served)), "serves to anyone",
                  True, program="server")]
    return flags + zoos


def foreign_repository(folder: Path) -> Path:
    """A Triton model repository someone else wrote (a TensorRT plan PreZoo never made)."""
    (folder / "mymodel" / "1").mkdir(parents=True)
    (folder / "mymodel" / "config.pbtxt").write_text('name: "mymodel"\nplatform: "tensorrt_plan"\n')
    (folder / "mymodel" / "1" / "model.plan").write_bytes(b"\0" * 64)
    return folder


def triton_cases(tmp: Path) -> list[Case]:
    """`python -m export triton` pointed at what it must not replace; each folder watched for any change."""
    foreign, a_file = foreign_repository(tmp / "triton" / "other"), tmp / "a-file"
    linked = tmp / "triton" / "link-to-file"
    linked.symlink_to(a_file)
    base = ("triton", "--zoo", str(HYTRA), "--id", "hytra-L8-2ef57624")
    return [Case("export triton", "folder", (*base, "--out", str(foreign)), "refusing to replace", True,
                 program="export"),
            Case("export triton", "folder", (*base, "--out", str(a_file)), "refusing to replace", True,
                 program="export"),
            Case("export triton", "folder", (*base, "--out", str(linked)), "refusing to write through", True,
                 watch=str(a_file), program="export")]


EXPORT_RANGES = {("profile", "--threads"): ("0", "-1", "257"), ("profile", "--batch"): ("0", "1025"),
                 ("profile", "--warmup"): ("-1",), ("profile", "--runs"): ("0", "-1"),
                 ("triton", "--max-batch-size"): ("0", "-1", "1025")}


def export_flag_cases(tmp: Path) -> list[Case]:
    """`python -m export`'s numbers and zoo refused by argparse, before any zoo is read or anything written."""
    out = ("--out", str(tmp / "export-out"))
    cases = [Case(f"export {command}", "flag", (command, flag, value, *(out if command != "profile" else ())), flag,
                  program="export")
             for (command, flag), values in EXPORT_RANGES.items() for value in (*BAD_NUMBERS, *values)]
    return cases + [Case(f"export {command}", "flag", (command, "--zoo", ""), "--zoo", program="export")
                    for command in ("get", "profile", "push", "triton")]


def battery(tmp: Path) -> BatteryResult:
    t0 = time.perf_counter()
    todo = server_cases(tmp) + triton_cases(tmp) + export_flag_cases(tmp)
    return run_all(todo, time.perf_counter() - t0, [])


def main(argv: list[str] | None = None) -> None:
    run_battery_command("bench_hostile_start", __doc__, battery, argv)


if __name__ == "__main__":
    main()
