"""`python -m export get`: the model a budget picks (or an entry by id), exported: the HF folder (config.json,
model.safetensors and a card: what `from_pretrained` and timm's `local-dir:` read), the weights alone, or ONNX
fp32/INT8/fp16.
`python -m export profile`: every entry's latency measured on this host as the server runs it, into the zoo's index.
`python -m export sizes`: the bytes of every file an entry is served as (its fp32 ONNX and each variant's, which a
bytes budget compares), measured on the files the export cache builds, into the zoo's index; with --latency each
variant's latency too. A command of its own, not part of `profile`: bytes are the same on every host and cheap,
latency is not, and recording bytes leaves the zoo's recorded latencies as they are.
`python -m export push`: push one budgeted model (safetensors + ONNX fp32/INT8/fp16 + a card for the repo), or the
whole zoo (index + supernet + a card with every entry and a Pareto plot), to the Hugging Face Hub.
`python -m export triton`: write a Triton model repository of zoo entries (all, by id, or the one a budget picks).

    python -m export get --max-params 0.3M [--max-flops 20M] [--max-latency 2ms] --format onnx --out DIR
    python -m export get --id e96-d4-a0fba311 --format hf --out DIR
    python -m export get --max-bytes 120K [--max-params 0.3M ...] --out DIR   (the most accurate ONNX file that fits)
    python -m export profile [--zoo DIR] [--provider cpu|cuda] [--threads 2] [--batch 1]
    python -m export sizes [--zoo DIR] [--latency [--threads 2 ...]]
    python -m export push --zoo DIR --max-params 0.3M --repo-id user/name [--zoo-repo-id user/zoo-name] [--private]
    python -m export push --zoo DIR --whole-zoo --repo-id user/zoo-name
    python -m export triton [--zoo DIR ...] --out REPO [--id ID ...] [--precision fp32|fp16|int8] [--tensorrt]

FLOPs are multiply-accumulates (MACs) per image. --zoo is a folder, a shipped zoo's name (ladder-fmnist, the default;
hytra-fmnist) or a Hub repo id; `triton` takes several (default: every shipped zoo, as `python -m server` serves
them), their entries one set, as the server's catalog: ids across all, a budget picks among all. Exports go to
--cache, or to a temporary cache gone after the command. A pushed model's card names the zoo's Hub repo as its base
model: --zoo-repo-id (checked to hold the same zoo), or --zoo when it is a Hub repo id. The token comes from HF_TOKEN
or the standard login cache (`hf auth login`); it is never printed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.arguments import Range, zoo_source
from zoo.budget import FLOPS_LABEL, human
from zoo.pull import HubError

if TYPE_CHECKING:
    from export.cache import ExportCache
    from zoo.catalog import Catalog
    from zoo.store import Zoo, ZooEntry

# torch and ONNX load inside the command: `--help` answers at once
# get --format -> the download (export.download.DOWNLOADS) whose files it writes into --out; hf: the folder a hf-zip
# download unpacks to
GET_FORMATS = {"hf": "hf-zip", "safetensors": "safetensors", "onnx": "onnx", "onnx-int8": "onnx-int8",
               "onnx-fp16": "onnx-fp16"}


def cmd_get(args: argparse.Namespace) -> int:
    from export.download import DOWNLOADS
    from zoo.store import DEFAULT_ZOO, Zoo

    if args.max_bytes is not None:
        return get_file(args)
    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    budget = (args.max_params, args.max_flops, args.max_latency)
    entry = selected_entries(zoo, [args.id], budget)[0] if args.id is not None else zoo.query(*budget)
    out, download = Path(args.out), DOWNLOADS[GET_FORMATS[args.format or "hf"]]
    with export_cache(args) as cache:
        folder = cache.get(zoo, entry, download.fmt)
        out.mkdir(parents=True, exist_ok=True)
        for name in download.files:
            shutil.copyfile(folder / name, out / name)
    top1 = f"{entry.top1:.2f}%" if entry.top1 is not None else "unmeasured"
    why = "as asked (--id)" if args.id is not None else \
        f"the most accurate of {len(zoo.entries)} entries within the budget"
    print(f"chose {entry.id}: {human(entry.params)} params, {human(entry.flops)} {FLOPS_LABEL}, top-1 {top1} — {why}")
    for name in download.files:
        print(f"wrote {out / name}")
    return 0


def get_file(args: argparse.Namespace) -> int:
    """`get --max-bytes`: the most accurate ONNX file (an entry's fp32 file or one of its variants) within the
    budget, written to --out as prezoo-ID.VARIANT.onnx."""
    from export.profile import variant_file
    from zoo.store import DEFAULT_ZOO, Zoo

    if args.id is not None or args.format not in (None, "onnx"):
        raise ValueError("--max-bytes picks an ONNX file of any entry: drop --id, and --format (it is onnx)")
    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    entry, variant = zoo.query_variant(args.max_bytes, args.max_params, args.max_flops, args.max_latency)
    out = Path(args.out) / f"prezoo-{entry.id}.{variant.name}.onnx"
    with export_cache(args) as cache:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(variant_file(cache, zoo, entry, variant), out)
    split, images = zoo.choice_split
    print(f"chose {entry.id} {variant.name}: {variant.file_bytes:,} bytes, {human(entry.params)} params, "
          f"{split} top-1 {zoo.choice_variant_top1(variant):.2f}% ({images:,} images), test top-1 "
          f"{variant.top1:.2f}% — the most accurate file of {len(zoo.entries)} entries within the budget")
    if out.stat().st_size != variant.file_bytes:
        print(f"warning: the file built here has {out.stat().st_size:,} bytes, not the {variant.file_bytes:,} the "
              f"zoo records (another torch or onnx than `export sizes` ran with)", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def cmd_sizes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.profile import profiling_providers, size_zoo, sizes_protocol, time_variants
    from zoo.store import DEFAULT_ZOO, Zoo

    providers = profiling_providers(args.provider)[0] if args.latency else None
    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    with export_cache(args) as cache:
        sizes = size_zoo(zoo, cache, progress=lambda entries: tqdm(entries, desc="sizes", unit="entry"))
        timed, protocol = (time_variants(zoo, cache, providers, args.threads, args.batch, args.warmup, args.runs,
                                         progress=lambda entries: tqdm(entries, desc="latency", unit="entry"))
                           if args.latency else (None, None))
    zoo.with_sizes(sizes, {**sizes_protocol(), **({"latency_protocol": protocol} if protocol else {})}, timed)
    for entry_id, files in sizes.items():
        print(f"{entry_id:<20} " + "  ".join(f"{name} {size:,}" for name, size in files.items()))
    print(f"\nupdated {zoo.root / 'zoo.json'} with the bytes of {sum(map(len, sizes.values()))} files"
          + (" and each variant's latency" if timed else ""))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from export.profile import profile_zoo, profiling_providers
    from zoo.store import DEFAULT_ZOO, Zoo

    providers, _ = profiling_providers(args.provider)  # an unknown or unusable provider: exit 2 before any work
    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    with export_cache(args) as cache:
        latencies, protocol = profile_zoo(zoo, cache, providers, args.threads, args.batch, args.warmup, args.runs,
                                          progress=lambda entries: tqdm(entries, desc="profile", unit="entry"))
    zoo.with_latency(latencies, protocol)
    for entry_id, ms in latencies.items():
        print(f"{entry_id:<20} {ms['median_ms']:9.3f} ms  (p10 {ms['p10_ms']:.3f}, p90 {ms['p90_ms']:.3f})")
    print(f"\nupdated {zoo.root / 'zoo.json'} with latency measured here: {zoo.latency_protocol_text()}")
    print(f"next: python -m zoo list --zoo {zoo.root}   (the entries with their accuracy and latency)")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from export.hf import zoo_repo_holding
    from export.hub import push_folder
    from export.repo import repo_folder
    from zoo.store import DEFAULT_ZOO, Zoo

    budget = (args.max_params, args.max_flops, args.max_latency)
    if args.whole_zoo and any(v is not None for v in budget):
        raise ValueError("--whole-zoo pushes every entry; drop the budget options")
    if not args.whole_zoo and all(v is None for v in budget):
        raise ValueError("give a budget (--max-params/--max-flops/--max-latency) or --whole-zoo")
    if args.whole_zoo and args.zoo_repo_id:
        raise ValueError("--zoo-repo-id names the zoo repo a pushed model was sliced from; --whole-zoo pushes the zoo "
                         "itself to --repo-id")
    zoo = Zoo.load(args.zoo or DEFAULT_ZOO)
    entry = None if args.whole_zoo else zoo.query(*budget)
    base_model = zoo_repo_holding(zoo, args.zoo_repo_id) if args.zoo_repo_id else None
    with export_cache(args) as cache:
        with repo_folder(cache, zoo, entry, args.repo_id, base_model) as folder:
            url = push_folder(folder, args.repo_id, private=args.private,
                              commit_message=f"PreZoo zoo {zoo.name}" if entry is None else
                              f"PreZoo {zoo.name} {entry.id}")
    if entry is None:
        print(f"pushed zoo {zoo.name} ({len(zoo.entries)} entries) to {url}")
        print(f"next: Zoo.load('{args.repo_id}')  or  python -m zoo list --zoo {args.repo_id}")
    else:
        print(f"pushed {entry.id} to {url}")
        print(f"next: zoo.{zoo.family.pretrained.__name__}.from_pretrained('{args.repo_id}')  or, after `import zoo`, "
              f"timm.create_model('hf-hub:{args.repo_id}', pretrained=True)")
    return 0


def cmd_triton(args: argparse.Namespace) -> int:
    from export.triton import DEFAULT_MAX_BATCH_SIZE, write_repository
    from zoo.catalog import Catalog, named
    from zoo.store import Zoo, shipped_zoos

    zoo = Catalog([Zoo.load(source) for source in args.zoo or shipped_zoos().values()])
    entries = selected_entries(zoo, args.id or [], (args.max_params, args.max_flops, args.max_latency))
    max_batch_size = DEFAULT_MAX_BATCH_SIZE if args.max_batch_size is None else args.max_batch_size
    with export_cache(args) as cache:
        out = write_repository(cache, zoo, entries, args.out, precision=args.precision,
                               max_batch_size=max_batch_size, tensorrt=args.tensorrt)
    print(f"wrote {len(entries)} {args.precision} model(s) of {named(zoo.zoos)} to {out}: "
          f"{', '.join(e.id for e in entries)}")
    print(f"next: tritonserver --model-repository={out.resolve()}  (README: Triton and KServe)")
    return 0


def selected_entries(zoo: Zoo | Catalog, ids: list[str], budget: tuple[str | None, ...]) -> list[ZooEntry]:
    """The entries named by id, else the one the budget picks (`query`), else every entry."""
    if ids and any(v is not None for v in budget):
        raise ValueError("choose entries by --id or by a budget, not both")
    if any(v is not None for v in budget):
        return [zoo.query(*budget)]
    try:
        return [zoo.entry(i) for i in dict.fromkeys(ids)] if ids else list(zoo.entries)
    except KeyError as e:
        raise ValueError(e.args[0]) from None


@contextmanager
def export_cache(args: argparse.Namespace) -> Iterator[ExportCache]:
    """The export cache at --cache, or a temporary one gone after the command."""
    from export.cache import ExportCache

    with tempfile.TemporaryDirectory() as tmp:
        yield ExportCache(Path(args.cache) if args.cache else Path(tmp))


def add_zoo_options(p: argparse.ArgumentParser, budget: bool = True, several: bool = False) -> None:
    """The options every command takes: the zoo (`several`: repeatable), the export cache; and a budget, but for
    `profile`."""
    if several:
        p.add_argument("--zoo", type=zoo_source, action="append", help="zoo directory, shipped zoo name (hytra-fmnist) "
                       "or Hub repo id; repeatable: their entries as one set (default: every shipped zoo)")
    else:
        p.add_argument("--zoo", type=zoo_source, help="zoo directory, shipped zoo name (hytra-fmnist) or Hub repo id "
                                                      "(default: the built-in zoo, ladder-fmnist)")
    p.add_argument("--cache", help="export cache directory (default: a temporary one)")
    if budget:
        p.add_argument("--max-params", help="e.g. 0.3M")
        p.add_argument("--max-flops", help=f"{FLOPS_LABEL}, e.g. 20M or 1.4G")
        p.add_argument("--max-latency", help="e.g. 2ms (needs measured latency)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get", help="budget -> exported model")
    add_zoo_options(g)
    g.add_argument("--max-bytes", help="the ONNX file's bytes, e.g. 120K or 0.5M (K: 1,000 bytes): picks an entry's "
                                       "fp32 file or one of its variants (needs `export sizes`)")
    g.add_argument("--id", help="an entry id from `python -m zoo list`, instead of a budget")
    g.add_argument("--format", choices=GET_FORMATS, help="hf: the HF folder (config.json, "
                   "model.safetensors, README.md); safetensors: the weights alone; onnx, onnx-int8, onnx-fp16: one "
                   ".onnx file (default: hf; with --max-bytes: onnx, the chosen file)")
    g.add_argument("--out", required=True)
    g.set_defaults(run=cmd_get)
    pr = sub.add_parser("profile", help="measure latency of every entry here and update the zoo's index")
    add_zoo_options(pr, budget=False)
    pr.add_argument("--provider", help="execution provider to time on, cpu or cuda (default: the best this host "
                                       "runs, as the server chooses it)")
    pr.add_argument("--threads", type=Range(int, 1, 256), default=2)
    pr.add_argument("--batch", type=Range(int, 1, 1024), default=1)
    pr.add_argument("--warmup", type=Range(int, 0, 10_000), default=10)
    pr.add_argument("--runs", type=Range(int, 1, 100_000), default=100)
    pr.set_defaults(run=cmd_profile)
    sz = sub.add_parser("sizes", help="measure the bytes of every entry's ONNX files (fp32 and variants) into the "
                                      "zoo's index")
    add_zoo_options(sz, budget=False)
    sz.add_argument("--latency", action="store_true", help="also time each variant's file, with the options below "
                                                           "(as `profile` times the entries)")
    sz.add_argument("--provider", help="with --latency: cpu or cuda (default: the best this host runs)")
    sz.add_argument("--threads", type=Range(int, 1, 256), default=2)
    sz.add_argument("--batch", type=Range(int, 1, 1024), default=1)
    sz.add_argument("--warmup", type=Range(int, 0, 10_000), default=10)
    sz.add_argument("--runs", type=Range(int, 1, 100_000), default=100)
    sz.set_defaults(run=cmd_sizes)
    p = sub.add_parser("push", help="push a model (by budget) or the whole zoo to the Hub")
    add_zoo_options(p)
    p.add_argument("--repo-id", required=True, help="org/name on the Hub")
    p.add_argument("--whole-zoo", action="store_true",
                   help="push the zoo itself (zoo.json + supernet, a card and a Pareto plot)")
    p.add_argument("--zoo-repo-id", help="the Hub repo this zoo was pushed to (--whole-zoo): the "
                   "model's card names it as its base model (checked: it must hold the same zoo); default: --zoo "
                   "when it is a Hub repo id")
    p.add_argument("--private", action="store_true")
    p.set_defaults(run=cmd_push)
    t = sub.add_parser("triton", help="write a Triton model repository (ONNX Runtime backend) of zoo entries")
    add_zoo_options(t, several=True)
    t.add_argument("--out", required=True, type=Path, help="the repository folder (created, or one this command "
                   "wrote replaced as a whole; a symlink is written through)")
    t.add_argument("--id", action="append", help="an entry id (repeatable; default: every entry, or the one the "
                   "budget picks)")
    t.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    t.add_argument("--max-batch-size", type=Range(int, 1, 1024), help="Triton's max_batch_size (default: 32, as many "
                   "images as `python -m server` takes in one request by default)")
    t.add_argument("--tensorrt", action="store_true", help="run the models through ONNX Runtime's TensorRT "
                   "execution provider on GPU")
    t.set_defaults(run=cmd_triton)
    args = parser.parse_args(argv)
    from export.cache import CacheError  # after parsing: --help loads no torch

    try:
        return args.run(args)
    except (ValueError, OSError, ImportError, HubError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
