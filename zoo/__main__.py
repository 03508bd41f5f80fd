"""`python -m zoo`: search spaces, the zoo's entries, a zoo from an official checkpoint.

    python -m zoo                      # every family's built-in search spaces with their param/FLOP ranges
    python -m zoo list [--zoo DIR|org/name]
    python -m zoo import-official --checkpoint supernet-tiny.pth --space autoformer-tiny \\
        --preferred interval_cands/tiny.json --out DIR

FLOPs are multiply-accumulates (MACs) per image, in every command and in the zoo's index. Budget -> exported model
and latency profiling build exports: they are `python -m export get` and `python -m export profile` (or `prezoo get`,
`prezoo profile`), since the `zoo` package imports nothing of `export` or `server`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from zoo.budget import FLOPS_LABEL, human
from zoo.io import printable
from zoo.pull import HubError

if TYPE_CHECKING:
    from zoo.family import Family, Space
    from zoo.store import Zoo

# torch and timm load inside the commands that use them: `--help` and argument errors answer at once
MOVED = ("get", "profile")  # `python -m zoo get|profile` until issue 22: now `python -m export get|profile`


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
            f"{'id':<20} {'params':>8} {FLOPS_LABEL:>12} {'top-1':>6} {'top-5':>6} {'val-1':>6} {'latency':>10}  "
            f"pareto  layout"]
    for e in sorted(zoo.entries, key=lambda e: e.params):
        lat = f"{e.latency_ms:.3f}ms" if e.latency_ms is not None else "-"
        top1, top5, val1 = (f"{v:.2f}" if v is not None else "-" for v in (e.top1, e.top5, e.val_top1))
        rows.append(f"{e.id:<20} {human(e.params):>8} {human(e.flops):>12} {top1:>6} {top5:>6} {val1:>6} {lat:>10}  "
                    f"{'  *   ' if e.id in front else '      '}  {e.arch.describe()}")
    rows.append(f"accuracy: {zoo.choice_text()} (top-1, top-5: test; val-1: validation top-1)")
    if how := zoo.latency_protocol_text():
        rows.append(f"latency: {how}")
    return "\n".join(rows)


def load_zoo(source: str | None) -> Zoo:
    """The zoo --zoo names, or the built-in one."""
    from zoo.store import DEFAULT_ZOO, Zoo

    return Zoo.load(source or DEFAULT_ZOO)


def cmd_list(args: argparse.Namespace) -> int:
    print(entries_table(load_zoo(args.zoo)))
    print("\nnext: python -m export get --max-params <budget> --format onnx --out DIR   (or --id ENTRY)")
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from zoo.families.vit.space import get_space
    from zoo.official import import_official

    out = import_official(args.checkpoint, get_space(args.space), args.preferred, args.out, args.name)
    print(f"wrote zoo {out}\nnext: python -m zoo list --zoo {out}")
    return 0


def moved(command: str) -> int:
    """Exit 2 with the command's new name: who types the old one is told, and `zoo` still imports no `export`."""
    print(f"python -m zoo {command} is now `prezoo {command}` (or `python -m export {command}`), with the same "
          f"options", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MOVED:
        return moved(argv[0])
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    sp = sub.add_parser("spaces", help="every family's built-in search spaces with their param/FLOP ranges")
    sp.add_argument("space", nargs="*", help="names of built-in spaces or YAML/JSON space files")
    ls = sub.add_parser("list", help="the zoo's entries")
    ls.add_argument("--zoo", help="zoo directory or Hub repo id (default: the built-in zoo)")
    imp = sub.add_parser("import-official", help="a zoo from an official AutoFormer/PreNAS supernet checkpoint")
    imp.add_argument("--checkpoint", required=True, help="supernet-{tiny,small,base}.pth")
    imp.add_argument("--space", required=True, help="autoformer-tiny, -small or -base")
    imp.add_argument("--preferred", required=True, help="the official interval_cands/*.json")
    imp.add_argument("--out", required=True)
    imp.add_argument("--name", default="prenas-official")
    args = parser.parse_args(argv)
    commands = {None: cmd_spaces, "spaces": cmd_spaces, "list": cmd_list, "import-official": cmd_import_official}
    if args.cmd is None:
        args.space = []
    try:
        return commands[args.cmd](args)
    except (ValueError, FileNotFoundError, KeyError, HubError) as e:
        print(f"error: {printable(str(e.args[0] if isinstance(e, KeyError) else e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
