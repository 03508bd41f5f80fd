"""`python -m zoo`: search spaces, the zoo's entries, budget -> model, latency profiling.

    python -m zoo                      # every family's built-in search spaces with their param/FLOP ranges
    python -m zoo list [--zoo DIR|org/name]
    python -m zoo get --max-params 0.3M [--max-flops 20M] [--max-latency 2ms] --format onnx --out DIR
    python -m zoo get --id e96-d4-a0fba311 --format onnx --out DIR
    python -m zoo profile [--zoo DIR] [--provider cpu|cuda] [--threads 2] [--batch 1]
    python -m zoo import-official --checkpoint supernet-tiny.pth --space autoformer-tiny \\
        --preferred interval_cands/tiny.json --out DIR

FLOPs are multiply-accumulates (MACs) per image, in every command and in the zoo's index. `get` and `profile` use
the `export` package, and `profile` times sessions built as the server builds them (`server.profile`): this CLI is an
application entry point; the `zoo` library itself never imports `export` or `server`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.budget import FLOPS_LABEL, human
from zoo.hub import HubError
from zoo.io import printable

if TYPE_CHECKING:
    from zoo.family import Family, Space
    from zoo.store import Zoo

CACHE = Path(os.environ.get("PREZOO_CACHE", Path.home() / ".cache" / "prezoo"))
# torch, timm, ONNX Runtime load inside the commands that use them: `--help` and argument errors answer at once


def describe_space(family: Family, space: Space) -> str:
    (p_lo, p_hi), (f_lo, f_hi) = family.cost_range(space)
    return (f"{space.name}  [{space.hash}]  {family.title}  {space.description}\n{family.describe_choices(space)}\n"
            f"  params {human(p_lo)} – {human(p_hi)}   {FLOPS_LABEL} {human(f_lo)} – {human(f_hi)}")


def cmd_spaces(args: argparse.Namespace) -> int:
    from zoo.family import FAMILIES, space_by_name

    names = args.space or [n for f in FAMILIES.values() for n in f.spaces]
    print("\n\n".join(describe_space(*space_by_name(n)) for n in names))
    print("\nnext: python -m training select --space mini   (zero-cost selection of preferred archs)")
    return 0


def entries_table(zoo: Zoo) -> str:
    front = {e.id for e in zoo.pareto("params")}
    rows = [f"zoo {zoo.name}  space {zoo.space.name}  {len(zoo.entries)} entries  ({zoo.root})",
            f"{'id':<20} {'params':>8} {FLOPS_LABEL:>12} {'top-1':>6} {'top-5':>6} {'latency':>10}  pareto  layout"]
    for e in sorted(zoo.entries, key=lambda e: e.params):
        lat = f"{e.latency_ms:.3f}ms" if e.latency_ms is not None else "-"
        top1 = f"{e.top1:.2f}" if e.top1 is not None else "-"
        top5 = f"{e.top5:.2f}" if e.top5 is not None else "-"
        rows.append(f"{e.id:<20} {human(e.params):>8} {human(e.flops):>12} {top1:>6} {top5:>6} {lat:>10}  "
                    f"{'  *   ' if e.id in front else '      '}  {e.arch.describe()}")
    if how := zoo.latency_protocol_text():
        rows.append(f"latency: {how}")
    return "\n".join(rows)


def load_zoo(source: str | None) -> Zoo:
    """The zoo --zoo names, or the built-in one."""
    from zoo.store import DEFAULT_ZOO, Zoo

    return Zoo.load(source or DEFAULT_ZOO)


def cmd_list(args: argparse.Namespace) -> int:
    print(entries_table(load_zoo(args.zoo)))
    print("\nnext: python -m zoo get --max-params <budget> --format onnx --out DIR   (or --id ENTRY)")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    from export.cache import FILES, ExportCache

    zoo = load_zoo(args.zoo)
    budget = (args.max_params, args.max_flops, args.max_latency)
    if args.id is not None and any(v is not None for v in budget):
        raise ValueError("--id names the entry; drop the budget options (or drop --id to choose by budget)")
    entry = zoo.entry(args.id) if args.id is not None else zoo.query(*budget)
    folder = ExportCache(args.cache).get(zoo, entry, args.format)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES[args.format]:
        shutil.copyfile(folder / name, out / name)
    top1 = f"{entry.top1:.2f}%" if entry.top1 is not None else "unmeasured"
    why = "as asked (--id)" if args.id is not None else \
        f"the most accurate of {len(zoo.entries)} entries within the budget"
    print(f"chose {entry.id}: {human(entry.params)} params, {human(entry.flops)} {FLOPS_LABEL}, top-1 {top1} — {why}")
    for name in FILES[args.format]:
        print(f"wrote {out / name}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.cache import ExportCache
    from server.inference import InferenceConfig
    from server.profile import profile_zoo, profiling_providers

    providers, _ = profiling_providers(args.provider)  # an unknown or unusable provider: exit 2 before any work
    zoo = load_zoo(args.zoo)
    latencies, protocol = profile_zoo(zoo, ExportCache(args.cache), InferenceConfig(threads=args.threads), providers,
                                      args.batch, args.warmup, args.runs,
                                      progress=lambda entries: tqdm(entries, desc="profile", unit="entry"))
    zoo.with_latency(latencies, protocol)
    print(entries_table(zoo))
    print(f"\nupdated {zoo.root / 'zoo.json'} with latency measured here: {zoo.latency_protocol_text()}")
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from zoo.official import import_official
    from zoo.space import get_space

    out = import_official(args.checkpoint, get_space(args.space), args.preferred, args.out, args.name)
    print(f"wrote zoo {out}\nnext: python -m zoo list --zoo {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    sp = sub.add_parser("spaces", help="every family's built-in search spaces with their param/FLOP ranges")
    sp.add_argument("space", nargs="*", help="names of built-in spaces or YAML/JSON space files")
    for name, help_ in (("list", "the zoo's entries"), ("get", "budget -> exported model"),
                        ("profile", "measure latency of every entry here and update the index")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--zoo", help="zoo directory or Hub repo id (default: the built-in zoo)")
        if name != "list":
            p.add_argument("--cache", default=str(CACHE / "exports"), help="export cache directory")
    get = sub.choices["get"]
    get.add_argument("--id", help="an entry id from `python -m zoo list`, instead of a budget")
    get.add_argument("--max-params", help="e.g. 0.3M")
    get.add_argument("--max-flops", help=f"{FLOPS_LABEL}, e.g. 20M or 1.4G")
    get.add_argument("--max-latency", help="e.g. 2ms (needs measured latency)")
    get.add_argument("--format", default="safetensors", choices=["safetensors", "onnx", "onnx-int8", "onnx-fp16"])
    get.add_argument("--out", required=True)
    prof = sub.choices["profile"]
    prof.add_argument("--provider", help="execution provider to time on, cpu or cuda (default: the best this host "
                                         "runs, as the server chooses it)")
    prof.add_argument("--threads", type=int, default=2)
    prof.add_argument("--batch", type=int, default=1)
    prof.add_argument("--warmup", type=int, default=10)
    prof.add_argument("--runs", type=int, default=100)
    imp = sub.add_parser("import-official", help="a zoo from an official AutoFormer/PreNAS supernet checkpoint")
    imp.add_argument("--checkpoint", required=True, help="supernet-{tiny,small,base}.pth")
    imp.add_argument("--space", required=True, help="autoformer-tiny, -small or -base")
    imp.add_argument("--preferred", required=True, help="the official interval_cands/*.json")
    imp.add_argument("--out", required=True)
    imp.add_argument("--name", default="prenas-official")
    args = parser.parse_args(argv)
    commands = {None: cmd_spaces, "spaces": cmd_spaces, "list": cmd_list, "get": cmd_get, "profile": cmd_profile,
                "import-official": cmd_import_official}
    if args.cmd is None:
        args.space = []
    try:
        return commands[args.cmd](args)
    except (ValueError, FileNotFoundError, KeyError, HubError) as e:
        print(f"error: {printable(str(e.args[0] if isinstance(e, KeyError) else e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
