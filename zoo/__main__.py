"""`python -m zoo`: the zoo's command line. For now: the built-in search spaces and their costs."""

from __future__ import annotations

import argparse
import sys

from zoo.cost import cost_range
from zoo.space import BUILTIN_SPACES, SearchSpace, get_space


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(n)


def describe_space(space: SearchSpace) -> str:
    (p_lo, p_hi), (f_lo, f_hi) = cost_range(space)
    ratios = ", ".join(f"{r:g}" for r in space.mlp_ratios)
    return (f"{space.name}  [{space.hash}]  {space.description}\n"
            f"  embed {list(space.embed_dims)}  depth {list(space.depths)}  "
            f"heads {list(space.num_heads)} x {space.head_dim}  mlp ratio [{ratios}]\n"
            f"  input {space.in_chans}x{space.img_size}² patch {space.patch_size}  "
            f"classes {space.num_classes}  rel-pos {'on' if space.rel_pos else 'off'}  pool {space.pool}\n"
            f"  params {_fmt(p_lo)} – {_fmt(p_hi)}   FLOPs (MACs) {_fmt(f_lo)} – {_fmt(f_hi)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    sp = sub.add_parser("spaces", help="list the built-in search spaces with their param/FLOP ranges")
    sp.add_argument("space", nargs="*", help="names of built-in spaces or YAML/JSON space files")
    args = parser.parse_args(argv)
    names = getattr(args, "space", None) or list(BUILTIN_SPACES)
    try:
        spaces = [get_space(n) for n in names]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n\n".join(describe_space(s) for s in spaces))
    print("\nnext: python -m training select --space mini   (zero-cost selection of preferred archs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
