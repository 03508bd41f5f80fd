"""`python -m export push`: push one budgeted model (safetensors + ONNX fp32/INT8/fp16 + a card for the repo), or the
whole zoo (index + supernet + a card with every entry and a Pareto plot), to the Hugging Face Hub.

    python -m export push --zoo DIR --max-params 0.3M --repo-id user/name [--private]
    python -m export push --zoo DIR --whole-zoo --repo-id user/zoo-name

The token comes from HF_TOKEN or the standard login cache (`hf auth login`); it is never printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from zoo.hub import HubError

# torch and ONNX load inside the command: `--help` answers at once


def cmd_push(args: argparse.Namespace) -> int:
    from export.cache import ExportCache
    from export.hub import push_folder
    from export.repo import repo_folder
    from zoo.store import DEFAULT_ZOO, Zoo

    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    budget = (args.max_params, args.max_flops, args.max_latency)
    if args.whole_zoo and any(v is not None for v in budget):
        raise ValueError("--whole-zoo pushes every entry; drop the budget options")
    if not args.whole_zoo and all(v is None for v in budget):
        raise ValueError("give a budget (--max-params/--max-flops/--max-latency) or --whole-zoo")
    entry = None if args.whole_zoo else zoo.query(*budget)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ExportCache(Path(args.cache) if args.cache else Path(tmp))
        with repo_folder(cache, zoo, entry, args.repo_id) as folder:
            url = push_folder(folder, args.repo_id, private=args.private,
                              commit_message=f"PreZoo zoo {zoo.name}" if entry is None else
                              f"PreZoo {zoo.name} {entry.id}")
    if entry is None:
        print(f"pushed zoo {zoo.name} ({len(zoo.entries)} entries) to {url}")
        print(f"next: Zoo.load('{args.repo_id}')  or  python -m zoo list --zoo {args.repo_id}")
    else:
        print(f"pushed {entry.id} to {url}")
        print(f"next: PreZooViT.from_pretrained('{args.repo_id}')  or  timm.create_model('hf-hub:{args.repo_id}', "
              "pretrained=True)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("push", help="push a model (by budget) or the whole zoo to the Hub")
    p.add_argument("--zoo", help="zoo directory or Hub repo id (default: the built-in zoo)")
    p.add_argument("--repo-id", required=True, help="org/name on the Hub")
    p.add_argument("--whole-zoo", action="store_true",
                   help="push the zoo itself (zoo.json + supernet, a card and a Pareto plot)")
    p.add_argument("--max-params")
    p.add_argument("--max-flops")
    p.add_argument("--max-latency")
    p.add_argument("--private", action="store_true")
    p.add_argument("--cache", help="export cache directory (default: a temporary one)")
    args = parser.parse_args(argv)
    from export.cache import CacheError  # after parsing: --help loads no torch

    try:
        return cmd_push(args)
    except (ValueError, FileNotFoundError, HubError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
