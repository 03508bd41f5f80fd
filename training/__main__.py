"""`python -m training`: zero-cost selection now; training, evaluation and search follow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.space import get_space


def _number(text: str) -> float:
    """'6M', '1.4G', '50K' or a plain number."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9}
    t = text.strip().upper()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (examples: 6M, 0.05M, 1.4G, 500000)") from None


def add_select_args(p: argparse.ArgumentParser) -> None:
    from training.proxies import PROXIES

    p.add_argument("--space", required=True, help="built-in space name or a YAML/JSON space file")
    p.add_argument("--proxy", default="snip-normalised", choices=sorted(PROXIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="images in the one gradient pass (official: 64)")
    p.add_argument("--data", default="gaussian",
                   help="'gaussian' (data-free, official) or a dataset source, e.g. fashion-mnist")
    p.add_argument("--bucket-by", default="params", choices=["params", "flops"])
    p.add_argument("--low", type=_number, help="lowest bucket edge (default: per space)")
    p.add_argument("--high", type=_number, help="highest bucket edge")
    p.add_argument("--width", type=_number, help="bucket width (margin ε)")
    p.add_argument("--top-n", type=int, default=1, help="preferred archs kept per bucket")
    p.add_argument("--out", default="runs/select", help="output directory for preferred.json and the plot")
    p.add_argument("--no-plot", action="store_true")


def run_select(args: argparse.Namespace) -> int:
    from training.report import plot_selection, selection_table
    from training.select import Buckets, SelectConfig, select, write_selection

    space = get_space(args.space)
    buckets = None
    if any(v is not None for v in (args.low, args.high, args.width)):
        default = Buckets.default(space, args.bucket_by)
        buckets = Buckets(args.low if args.low is not None else default.low,
                          args.high if args.high is not None else default.high,
                          args.width if args.width is not None else default.width)
    cfg = SelectConfig(space, proxy=args.proxy, seed=args.seed, batch_size=args.batch_size, data=args.data,
                       bucket_by=args.bucket_by, buckets=buckets, top_n=args.top_n)
    sel = select(cfg)
    print(selection_table(sel))
    path = write_selection(sel, args.out)
    print(f"\nwrote {path}")
    if not args.no_plot:
        print(f"wrote {plot_selection(sel, Path(args.out) / 'preferred.png')}")
    print(f"next: python -m training train --preferred {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_select_args(sub.add_parser("select", help="zero-cost selection of preferred architectures"))
    args = parser.parse_args(argv)
    try:
        return {"select": run_select}[args.cmd](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
