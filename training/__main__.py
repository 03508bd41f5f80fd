"""`python -m training`: select preferred archs, train the supernet, evaluate them, search (baseline), package a
zoo, fine-tune an exported subnet. FLOPs are multiply-accumulates (MACs) per image, as in the zoo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.checks import BATCH, IMAGES, Range, nonempty, out_dir
from zoo.budget import FLOPS_LABEL, human, parse_count
from zoo.io import printable
from zoo.pull import HubError

# torch and the training modules load inside the subcommand that runs (or whose --help is asked): `python -m
# training --help` answers at once
MAX_COUNT = 1e13  # params or MACs: far above any model's, far below where a float's rounding shows


def _number(text: str) -> float:
    """'6M', '1.4G', '50K' or a plain number, for argparse."""
    try:
        value = parse_count(text, "value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text!r} is over {human(MAX_COUNT)}: no model costs that much")
    return value


def add_select_args(p: argparse.ArgumentParser) -> None:
    from training.config import SELECT_RANGES as R
    from training.config import ZERO_COST_RANGES
    from training.config import ZeroCostConfig as Z
    from training.proxies import PROXIES

    p.add_argument("--method", choices=["zero-cost", *SELECT_METHODS], default="zero-cost",
                   help="zero-cost (PreNAS's, this command's own flags); darts or bossnas: the same as `python -m "
                        "training darts|bossnas` with the flags that follow")
    p.add_argument("--space", type=nonempty, required=True,
                   help="a ViT or MBConv space: built-in name or a YAML/JSON space file")
    p.add_argument("--proxy", choices=sorted(PROXIES), help="ViT spaces only: step 1's proxy; default: snip-normalised")
    p.add_argument("--seed", type=R["seed"], help="default: 0")
    p.add_argument("--batch-size", type=R["batch_size"], help="images in the one gradient pass (official: 64)")
    p.add_argument("--data", type=nonempty,
                   help="'gaussian' (data-free, official; the default) or a dataset source, e.g. fashion-mnist")
    p.add_argument("--bucket-by", choices=["params", "flops"], help="ViT spaces only; default: params")
    p.add_argument("--low", type=_number, help="lowest bucket edge (default: per space)")
    p.add_argument("--high", type=_number, help="highest bucket edge")
    p.add_argument("--width", type=_number, help="bucket width (margin ε)")
    p.add_argument("--top-n", type=R["top_n"], help="preferred archs kept per bucket; default: 1")
    for name, help_ in (("evaluations", "distinct archs each params bucket's evolution scores"),
                        ("population", "the evolution's population")):
        p.add_argument("--" + name, type=ZERO_COST_RANGES[name],
                       help=f"MBConv spaces only: {help_}; {ZERO_COST_RANGES[name]}; default: {getattr(Z, name)}")
    p.add_argument("--out", type=out_dir, default="runs/select",
                   help="output directory for preferred.json and the plot")
    p.add_argument("--no-plot", action="store_true")


SELECT_METHODS = ("darts", "bossnas")  # `select --method M ...` runs the subcommand M


def routed(argv: list[str]) -> list[str]:
    """`select --method darts ...` (or bossnas) as the subcommand of that name with the other flags; zero-cost, an
    unknown method or no method stays with `select`, whose parser accepts the one and names the choices for another."""
    if not argv or argv[0] != "select":
        return argv
    for k, arg in enumerate(argv):
        if arg == "--method" and k + 1 < len(argv) and argv[k + 1] in SELECT_METHODS:
            return [argv[k + 1], *argv[1:k], *argv[k + 2:]]
        if arg.startswith("--method=") and (method := arg.split("=", 1)[1]) in SELECT_METHODS:
            return [method, *argv[1:k], *argv[k + 1:]]
    return argv


# The selectors per family that lists them (`Family.selectors`): (module, config class)
SELECT = {"vit": ("training.select", "SelectConfig"), "mbconv": ("training.zero_cost", "ZeroCostConfig")}
BOSSNAS = {"hytra": ("training.bossnas", "BossConfig"), "mbconv": ("training.bossnas_mbconv", "MBConvBossConfig")}


def selector_config(args: argparse.Namespace, space, selector: str, table: dict, cli_only: tuple = (), **settings):
    """The config of `space`'s family's `selector` (`table`: family -> (module, config class)) from the flags given
    (all but `cli_only`) and `settings`; ValueError for a flag it has no setting for."""
    import importlib
    from dataclasses import fields

    from zoo.family import get_family

    module, name = table[space.family]
    config = getattr(importlib.import_module(module), name)
    given = {k: v for k, v in vars(args).items()
             if k not in ("cmd", "space", "out", "threads", *cli_only) and v is not None}
    for k in sorted(given.keys() - {f.name for f in fields(config)}):
        raise ValueError(f"--{k.replace('_', '-')} does not apply to `python -m training {selector}` on "
                         f"{get_family(space.family).title} spaces ({space.name})")
    return config(space=space, **given, **settings)


def run_select(args: argparse.Namespace) -> int:
    import importlib

    space = space_for(args.space, "select")
    cfg = selector_config(args, space, "select", SELECT, ("method", "no_plot", "low", "high", "width"),
                          buckets=select_buckets(args, space))
    path = importlib.import_module(SELECT[space.family][0]).run(cfg, args.out, plot=not args.no_plot)
    print(f"next: python -m training train --preferred {path}")
    return 0


def space_for(name: str, selector: str):
    """The space `name` (any family's built-in, or a space file) if `selector` serves its family
    (`Family.selectors`), else ValueError naming the command that does."""
    from zoo.family import space_by_name

    family, space = space_by_name(name)
    if selector not in family.selectors:
        serving = " or ".join(f"`python -m training {s}`" for s in family.selectors) or \
            "a search in a uniformly trained supernet (`train --sampler uniform`, then `pick`)"
        raise ValueError(f"space {space.name} is a {family.title} space, which `python -m training {selector}` does "
                         f"not serve: its preferred archs come from {serving}")
    return space


def select_buckets(args: argparse.Namespace, space):
    """The buckets --low/--high/--width give (None: the space's default), the default filling in what they leave
    out: its edges, and its width or (a geometric default) its ratio."""
    from training.preferred import Buckets

    given = {k: getattr(args, k) for k in ("low", "high", "width") if getattr(args, k) is not None}
    if not given:
        return None
    default = Buckets.default(space, getattr(args, "bucket_by", None) or "params")
    low, high = given.get("low", default.low), given.get("high", default.high)
    if not low < high:
        tag = lambda k: "" if k in given else f" ({space.name}'s default)"
        raise ValueError(f"--low {human(low)}{tag('low')} must be below --high {human(high)}{tag('high')}")
    spacing = {"width": given["width"]} if "width" in given else {"width": default.width, "ratio": default.ratio}
    return Buckets(low, high, **spacing)


def add_bossnas_args(p: argparse.ArgumentParser) -> None:
    from training.bossnas import BOSS_RANGES as R
    from training.bossnas import TARGETS
    from training.bossnas import BossConfig as B
    from training.bossnas_mbconv import MBCONV_RANGES
    from training.bossnas_mbconv import MBConvBossConfig as M

    p.add_argument("--space", type=nonempty, default=B.space.name,
                   help=f"a HyTra or MBConv space: built-in name or space file; default: {B.space.name}")
    p.add_argument("--out", type=out_dir, default="runs/bossnas",
                   help="folder for preferred.json, scores.json and log.jsonl (MBConv: also config.json and "
                        "nets.safetensors, what rates any arch later)")
    p.add_argument("--target", default=B.target, choices=TARGETS,
                   help="ensemble: BossNAS; own: naive bootstrap (ablation); supervised: block-wise classification")
    p.add_argument("--epochs-per-block", type=R["epochs_per_block"], default=B.epochs_per_block)
    p.add_argument("--nas-train", type=R["nas_train"], default=B.nas_train,
                   help="training images the blocks learn from (a seeded subset of the train split)")
    p.add_argument("--nas-val", type=R["nas_val"], default=B.nas_val,
                   help="images every path is rated on (the head of the val split, held out of train)")
    p.add_argument("--batch-size", type=R["batch_size"], default=B.batch_size)
    p.add_argument("--paths", type=R["paths"], default=B.paths, help="distinct paths sampled per step")
    p.add_argument("--seed", type=R["seed"], default=B.seed)
    p.add_argument("--data", type=nonempty, default=B.data, help="dataset source, e.g. fashion-mnist")
    for name, help_ in (("centre_paths", "(input width, stage path) pairs that estimate each stage's centre"),
                        ("evaluations", "distinct archs each params bucket's evolution scores"),
                        ("population", "the evolution's population")):
        p.add_argument("--" + name.replace("_", "-"), type=MBCONV_RANGES[name],
                       help=f"MBConv spaces only: {help_}; {MBCONV_RANGES[name]}; default: {getattr(M, name)}")
    p.add_argument("--threads", type=Range(int, 1, 1024), help="torch CPU threads (default: torch's choice)")


def run_bossnas(args: argparse.Namespace) -> int:
    import importlib

    import torch

    from training.preferred import preferred_table

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = selector_config(args, space_for(args.space, "bossnas"), "bossnas", BOSSNAS)
    _, preferred = importlib.import_module(BOSSNAS[cfg.space.family][0]).search(cfg, args.out)
    print(preferred_table(preferred))
    print(f"wrote {', '.join(str(p) for p in sorted(Path(args.out).iterdir()))}")
    return 0


def add_ranged_settings(p: argparse.ArgumentParser, defaults: Any, ranges: dict, settings: tuple) -> None:
    """One flag per (name, help) of `settings`: typed and bounded by `ranges[name]`, defaulting to the config class's
    value; then --threads. The selectors' many numeric settings, each saying its range and default."""
    for name, help_ in settings:
        default = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=ranges[name], default=default,
                       help=f"{help_ + '; ' if help_ else ''}{ranges[name]}; default: {default}")
    p.add_argument("--threads", type=Range(int, 1, 1024), help="torch CPU threads (default: torch's choice)")


def add_darts_args(p: argparse.ArgumentParser) -> None:
    from training.darts import DARTS_RANGES as R
    from training.darts import DartsConfig as D

    p.add_argument("--space", type=nonempty, default=D.space, help=f"an MBConv space; default: {D.space}")
    p.add_argument("--data", type=nonempty, default=D.data, help="dataset source, e.g. fashion-mnist")
    p.add_argument("--out", type=out_dir, default="runs/darts",
                   help="folder for preferred.json, logits.json and darts.png")
    p.add_argument("--low", type=_number, help="lowest params bucket edge (default: per space)")
    p.add_argument("--high", type=_number, help="highest params bucket edge")
    p.add_argument("--width", type=_number, help="params bucket width")
    p.set_defaults(bucket_by="params")
    add_ranged_settings(p, D, R, (("nas_train", "train-split images the weights learn from"),
                                 ("nas_val", "other train-split images the architecture logits learn from"),
                                 ("batch_size", ""),
                                 ("warmup_steps", "weight steps on uniform paths before the searches"),
                                 ("steps", "per bucket: each one weight and one architecture step"),
                                 ("weight_lr", "AdamW's"), ("weight_decay", "AdamW's"),
                                 ("arch_lr", "Adam's, on the logits"),
                                 ("arch_weight_decay", ""), ("cost_weight", "λ of λ·log(E[params]/target)²"),
                                 ("tau_start", "Gumbel-softmax temperature, annealed geometrically"), ("tau_end", ""),
                                 ("collapse_share", "early stop past this share of parameter-free choices "
                                  "(MBConv: skipped block slots)"),
                                 ("eval_every", "steps between checks (candidates, logs)"),
                                 ("eval_images", "NAS-val images each candidate is scored on"),
                                 ("top_n", "preferred archs kept per bucket"), ("seed", "")))


def run_darts(args: argparse.Namespace) -> int:
    import torch

    from training.darts import DARTS_RANGES, DartsConfig, darts, relaxed_space

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = DartsConfig(space=args.space, data=args.data, buckets=select_buckets(args, relaxed_space(args.space)[1]),
                      **{k: getattr(args, k) for k in DARTS_RANGES})
    path = darts(cfg, args.out)
    print(f"wrote {path}, {Path(args.out) / 'logits.json'}, {Path(args.out) / 'darts.png'}")
    print(f"next: python -m training train --preferred {path}")
    return 0


def add_edmips_args(p: argparse.ArgumentParser) -> None:
    from training.edmips import EDMIPS_RANGES as R
    from training.edmips import EdmipsConfig as E

    p.add_argument("--zoo", type=nonempty, required=True, help="zoo folder, Hub repo id or shipped zoo name")
    p.add_argument("--entry", type=nonempty, required=True, help="the entry id whose precision is searched")
    p.add_argument("--out", type=out_dir, default="runs/edmips", help="folder for ENTRY/BYTES.json precision maps")
    p.add_argument("--budgets", type=_number, nargs="+",
                   help="bytes of the file's tensors, e.g. 60K 80K (default: 3 between every layer at int4 and "
                        "at fp16)")
    add_ranged_settings(p, E, R, (("steps", "per budget: an architecture step each (and a weight step with "
                                           "--weight-lr)"),
                                 ("batch_size", ""), ("arch_lr", "Adam's, on the logits"),
                                 ("weight_lr", "Adam's, fine-tuning the weights on the training split; 0: frozen"),
                                 ("cost_weight", "λ of λ·log(E[bytes]/budget)²"),
                                 ("arch_images", "head of the validation split the logits learn on (the rest scores)"),
                                 ("seed", "")))


def run_edmips(args: argparse.Namespace) -> int:
    import json

    import torch

    from training.edmips import EDMIPS_RANGES, EdmipsConfig, edmips
    from zoo.store import Zoo

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = EdmipsConfig(budgets=args.budgets, **{k: getattr(args, k) for k in EDMIPS_RANGES})
    zoo = Zoo.load(args.zoo)
    paths = edmips(zoo, args.entry, cfg, args.out)
    print(f"{'budget':>9} {'bytes':>9} {'stepped':>7} {'val top1':>8}  bits (int4/int8/fp16/fp32 layers)")
    for path in paths:
        doc = json.loads(path.read_text())
        counts = "/".join(str(list(doc["layers"].values()).count(b)) for b in (4, 8, 16, 32))
        print(f"{doc['budget']:>9,} {doc['bytes']:>9,} {doc['stepped_down']:>7} {doc['val_top1']:>8.2f}  {counts}")
        print(f"  wrote {path}")
    return 0


def _bit_widths(text: str) -> tuple[int, ...]:
    """'16,8,4' -> (16, 8, 4): weight widths a file stores below fp32, each once, for argparse."""
    from training.variants import UNIFORM_BITS

    try:
        widths = tuple(int(b) for b in text.split(","))
    except ValueError:
        widths = ()
    if not widths or any(b not in UNIFORM_BITS for b in widths) or len(set(widths)) < len(widths):
        raise argparse.ArgumentTypeError(f"{text[:64]!r} is not a comma-separated list of distinct widths among "
                                         f"{','.join(map(str, UNIFORM_BITS))}")
    return widths


def add_variants_args(p: argparse.ArgumentParser) -> None:
    from training.variants import UNIFORM_BITS

    p.add_argument("--zoo", type=nonempty, required=True, help="zoo folder or shipped zoo name (its index is "
                                                               "rewritten: a folder you can write)")
    p.add_argument("--bits", type=_bit_widths, default=UNIFORM_BITS,
                   help=f"uniform weight widths, one variant each (w16, w8, w4); default: "
                        f"{','.join(map(str, UNIFORM_BITS))}")
    p.add_argument("--edmips", type=nonempty, help="`training edmips` output folder (OUT/ENTRY/BYTES.json): each "
                                                  "map of an entry of this zoo becomes its variant edmips-BYTES")
    p.add_argument("--batch-size", type=BATCH, default=500)
    p.add_argument("--threads", type=Range(int, 1, 1024), help="torch CPU threads (default: torch's choice)")


def run_variants(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from training.variants import record_variants
    from zoo.store import Zoo

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    edmips = None if args.edmips is None else Path(args.edmips)
    if edmips is not None and not edmips.is_dir():
        raise ValueError(f"--edmips {edmips}: no such folder")
    zoo = Zoo.load(args.zoo)
    found = record_variants(zoo, args.bits, edmips, args.batch_size,
                            progress=lambda entries: tqdm(entries, desc="variants", unit="entry"))
    print(f"{'id':<20} {'variant':<14} {'val top1':>8} {'top1':>7}")
    for entry in zoo.entries:
        for v in [entry.fp32, *found[entry.id].values()]:
            print(f"{entry.id:<20} {v.name:<14} {v.val_top1:>8.2f} {v.top1:>7.2f}")
    print(f"wrote {sum(map(len, found.values()))} variants into {zoo.root / 'zoo.json'}")
    print(f"next: python -m export sizes --zoo {zoo.root}   (each file's bytes, which a bytes budget reads)")
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from training.config import SAMPLERS, TRAIN_RANGES, TrainConfig

    for f in fields(TrainConfig):  # every field has a default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
            continue
        numeric = str(f.type).split(" ")[0] in ("int", "float")  # annotations are strings such as "int | None"
        kind = TRAIN_RANGES[f.name] if numeric else out_dir if f.name == "out" else nonempty
        help_ = f"{kind}; default: {f.default}" if numeric else f"default: {f.default}"
        p.add_argument(flag, type=kind, default=f.default, help=help_,
                       **({"choices": SAMPLERS} if f.name == "sampler" else {}))
    p.add_argument("--allow-changed-settings", action="store_true",
                   help="resume an existing --out with settings other than its own (recorded in its config.json "
                        "and log.jsonl); without it such a resume is refused, naming the differences")


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from training.train import TrainConfig, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    out = train(cfg, allow_changed_settings=args.allow_changed_settings)
    print(f"wrote {out / 'supernet.safetensors'}")
    print(f"next: python -m training evaluate --run {out}")
    return 0


def load_run(run: Path):
    """The config and the trained supernet of a training run directory."""
    from training.evaluate import load_supernet
    from training.train import TrainConfig

    return TrainConfig.load(run / "config.json"), load_supernet(run / "supernet.safetensors")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=nonempty, help="training run directory (holds supernet.safetensors, "
                                                     "config.json): writes RUN/eval_SPLIT.json")
    source.add_argument("--zoo", type=nonempty,
                        help="zoo folder: its entries as it serves them, beside the accuracies its index records")
    p.add_argument("--preferred", type=nonempty, help="preferred.json to evaluate (default: the run's own)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="val: the images the supernet's training held out (its recorded data, seed and val_size)")
    p.add_argument("--batch-size", type=BATCH, default=500)
    p.add_argument("--write", action="store_true",
                   help="with --zoo and --split val: record each entry's validation accuracy in the zoo's index "
                        "(atomically; nothing else changes), so that it chooses entries on validation")


def run_evaluate(args: argparse.Namespace) -> int:
    if args.zoo is not None:
        return evaluate_zoo(args)
    if args.write:
        raise ValueError("--write records a zoo's validation accuracy: give --zoo (a run's evaluation is always "
                         "written to RUN/eval_SPLIT.json)")
    return evaluate_run(args)


def evaluate_zoo(args: argparse.Namespace) -> int:
    """A zoo's entries measured as it serves them, beside what its index records; --write records validation."""
    from training.evaluate import tensor_batches, zoo_accuracy, zoo_split
    from zoo.store import Zoo

    if args.preferred is not None:
        raise ValueError("--preferred is for --run: a zoo's entries are its own")
    if args.write and args.split != "val":
        raise ValueError("--write records validation accuracy (--split val); a zoo's test accuracy is written by "
                         "`python -m training package`")
    zoo = Zoo.load(args.zoo)
    data, validation = zoo_split(zoo, args.split)  # refuses a split that may overlap the training data
    measured = zoo_accuracy(zoo, tensor_batches(data, args.batch_size))
    recorded = "val_top1" if args.split == "val" else "top1"
    print(f"zoo {zoo.name}, {args.split} split, {len(data)} images; entries chosen by {zoo.chosen_by}")
    print(f"{'id':<20} {'params':>8} {FLOPS_LABEL:>12} {'recorded':>9} {'top1':>7} {'top5':>7} {'loss':>7}")
    for e in sorted(zoo.entries, key=lambda e: e.params):
        r, old = measured[e.id], getattr(e, recorded)
        print(f"{e.id:<20} {human(e.params):>8} {human(e.flops):>12} {'-' if old is None else f'{old:.2f}':>9} "
              f"{r.top1:>7.2f} {r.top5:>7.2f} {r.loss:>7.3f}")
    if args.write:
        zoo.with_validation(validation, {i: (r.top1, r.top5) for i, r in measured.items()})
        print(f"wrote validation accuracy into {zoo.root / 'zoo.json'}: {zoo.choice_text()}")
    return 0


def evaluate_run(args: argparse.Namespace) -> int:
    from training.checks import write_json
    from training.data import load_data
    from training.evaluate import calibration_batches, evaluate_archs, path_stats, protocol, tensor_batches
    from training.preferred import load_preferred
    from zoo.family import get_family

    run = Path(args.run)
    cfg, supernet = load_run(run)
    space = supernet.space
    family = get_family(space.family)
    if not (args.preferred or cfg.preferred):
        raise ValueError(f"{run} was trained with the {cfg.sampler} sampler and has no preferred set: give --preferred")
    preferred = args.preferred or cfg.preferred
    pref_space, entries = load_preferred(preferred)
    if pref_space.hash != space.hash:
        raise ValueError(f"the preferred set is for space {pref_space.name}, the supernet for {space.name}")
    data, info = load_data(cfg.data, args.split, img_size=space.img_size, in_chans=space.in_chans,
                           val_size=cfg.val_size, seed=cfg.seed)
    archs = [family.arch_from_dict(e["arch"]) for e in entries]
    calibration = calibration_batches(cfg, space)
    results = evaluate_archs(supernet, archs, tensor_batches(data, args.batch_size),
                             stats=path_stats(supernet, archs, calibration))
    rows = [{"id": a.id, "arch": a.to_dict(), "params": family.params(space, a), "flops": family.flops(space, a),
             "top1": r.top1, "top5": r.top5, "loss": r.loss, "n": r.n} for a, r in zip(archs, results, strict=True)]
    doc = {"schema_version": 1, "kind": "prezoo.eval", "split": args.split, "data": cfg.data, "preferred": preferred,
           "protocol": protocol(info.name, args.split, results[0].n, space), "results": rows}
    write_json(run / f"eval_{args.split}.json", doc)
    print(f"{'id':<20} {'params':>8} {FLOPS_LABEL:>12} {'top1':>7} {'top5':>7} {'loss':>7}")
    for r in rows:
        print(f"{r['id']:<20} {human(r['params']):>8} {human(r['flops']):>12} {r['top1']:>7.2f} {r['top5']:>7.2f} "
              f"{r['loss']:>7.3f}")
    print(f"wrote {run / f'eval_{args.split}.json'}")
    return 0


def add_search_args(p: argparse.ArgumentParser) -> None:
    from training.search import SEARCH_RANGES as R
    from training.search import SEARCHES, SearchConfig

    p.add_argument("--run", type=nonempty, required=True, help="training run directory of the supernet to search")
    p.add_argument("--algorithm", default="evolution", choices=sorted(SEARCHES),
                   help="evolution: AutoFormer's; aging: regularized evolution (Real et al. 2019); random; enas: an "
                        "ENAS-style REINFORCE controller (Pham et al. 2018)")
    p.add_argument("--evaluations", type=R["evaluations"],
                   help="distinct archs evaluated, the same budget for every algorithm (default: population x "
                        "generations)")
    p.add_argument("--min-params", type=_number, help="lowest params of the bucket [min, max), e.g. 0.6M")
    p.add_argument("--max-params", type=_number, help="params strictly under this, e.g. 0.65M")
    p.add_argument("--min-flops", type=_number, help=f"lowest {FLOPS_LABEL} of the bucket [min, max)")
    p.add_argument("--max-flops", type=_number, help=f"{FLOPS_LABEL} strictly under this, e.g. 20M")
    p.add_argument("--population", type=R["population"], default=SearchConfig.population,
                   help="evolution and aging (P); each evolution generation is half mutants, half crossovers")
    p.add_argument("--generations", type=Range(int, 1, 10_000), default=20,
                   help="with --population, the default --evaluations")
    p.add_argument("--sample", type=R["sample"], default=SearchConfig.sample, help="aging: tournament size (S)")
    p.add_argument("--controller-lr", type=R["controller_lr"], default=SearchConfig.controller_lr,
                   help="enas: Adam's learning rate on the controller's logits")
    p.add_argument("--baseline-decay", type=R["baseline_decay"], default=SearchConfig.baseline_decay,
                   help="enas: decay of the reward's moving-average baseline")
    p.add_argument("--entropy-weight", type=R["entropy_weight"], default=SearchConfig.entropy_weight,
                   help="enas: entropy bonus, in moving standard deviations of the reward")
    p.add_argument("--val-images", type=IMAGES, default=0,
                   help="val images per fitness evaluation (0: the full validation split)")
    p.add_argument("--seed", type=R["seed"], default=0)
    p.add_argument("--out", type=out_dir, help="folder for search.json and search.png (default: RUN/search)")


def run_search(args: argparse.Namespace) -> int:
    from training.pick import validation_fitness
    from training.search import SEARCHES, SearchConfig, check_reachable, plot_search, write_search
    from zoo.family import get_family

    if all(v is None for v in (args.min_params, args.max_params, args.min_flops, args.max_flops)):
        raise ValueError("give a budget: --max-params and/or --max-flops (and --min-params/--min-flops for a bucket)")
    search_cfg = SearchConfig.of_population(
        args.population,
        evaluations=args.population * args.generations if args.evaluations is None else args.evaluations,
        min_params=args.min_params, max_params=args.max_params, min_flops=args.min_flops, max_flops=args.max_flops,
        sample=args.sample, seed=args.seed,
        controller_lr=args.controller_lr, baseline_decay=args.baseline_decay, entropy_weight=args.entropy_weight)
    cfg, supernet = load_run(Path(args.run))
    space = supernet.space
    family = get_family(space.family)
    check_reachable(space, search_cfg)  # before the data loads
    score, fitness = validation_fitness(cfg, supernet, args.val_images)
    result = SEARCHES[args.algorithm](space, score, search_cfg)
    a = result.best
    print(f"best under the budget: {a.id}  {a.describe()}\n  params {human(family.params(space, a))}  "
          f"{FLOPS_LABEL} {human(family.flops(space, a))}  val top-1 {result.best_score:.2f}%  "
          f"({args.algorithm}: {result.evaluations} archs evaluated in {result.seconds:.0f} s)")
    print(f"arch JSON: {a.to_json()}")
    out = Path(args.out) if args.out else Path(args.run) / "search"
    print(f"wrote {write_search(space, search_cfg, result, fitness, out)}")
    print(f"wrote {plot_search(space, search_cfg, result, fitness, out / 'search.png')}")
    return 0


def add_pick_args(p: argparse.ArgumentParser) -> None:
    from training.config import JOBS
    from training.config import PICK_RANGES as R
    from training.config import PickConfig as P
    from training.search import SEARCHES

    p.add_argument("--run", type=nonempty, required=True,
                   help="training run directory of a supernet trained on the whole space (--sampler uniform)")
    p.add_argument("--out", type=out_dir, help="folder for preferred.json (default: RUN/pick)")
    p.add_argument("--algorithm", choices=list(SEARCHES), default=P.algorithm, help=f"default: {P.algorithm}")
    p.add_argument("--evaluations", type=R["evaluations"], default=P.evaluations,
                   help=f"distinct archs scored per bucket; default: {P.evaluations}")
    p.add_argument("--population", type=R["population"], default=P.population, help=f"default: {P.population}")
    p.add_argument("--top-n", type=R["top_n"], default=P.top_n, help=f"entries per bucket; default: {P.top_n}")
    p.add_argument("--val-images", type=R["val_images"], default=P.val_images,
                   help="held-out images each arch is scored on (0: all of them)")
    p.add_argument("--seed", type=R["seed"], default=P.seed)
    p.add_argument("--bucket-ratio", type=R["bucket_ratio"],
                   help="params buckets each this many times the one before, over the family's range (default: the "
                        "family's buckets; 1.414 gives two per octave)")
    p.add_argument("--jobs", type=JOBS, default=1,
                   help="buckets searched side by side, one process and one thread each (the picks are the same)")


def run_pick(args: argparse.Namespace) -> int:
    from training.config import PickConfig
    from training.pick import pick

    cfg = PickConfig(args.algorithm, args.evaluations, args.population, args.top_n, args.val_images, args.seed,
                     args.bucket_ratio)
    path = pick(args.run, cfg, args.out or Path(args.run) / "pick", jobs=args.jobs)
    print(f"wrote {path}")
    print(f"next: python -m training evaluate --run {args.run} --preferred {path}")
    return 0


def add_package_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=nonempty, required=True,
                   help="training run directory, already evaluated on the test split")
    p.add_argument("--out", type=out_dir, required=True, help="zoo directory to write")
    p.add_argument("--name", type=nonempty, required=True, help="zoo name, e.g. ladder-fmnist")
    p.add_argument("--max-fp16-drift", type=Range(float, 0, 100), default=0.1,
                   help="top-1 points fp16 storage may cost")


def run_package(args: argparse.Namespace) -> int:
    from training.package import package_run

    summary = package_run(args.run, args.out, args.name, args.max_fp16_drift)
    print(f"weights stored as {summary['dtype']} (largest fp16 top-1 drift "
          f"{max(summary['drift'].values()):.2f} pp, threshold {args.max_fp16_drift} pp)")
    print(f"validation accuracy: {summary['validation']}")
    print(f"wrote zoo {args.out}\nnext: prezoo profile --zoo {args.out}   (measure latency)")
    return 0


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    from training.config import FINETUNE_RANGES as R
    from training.config import FinetuneConfig as F

    p.add_argument("--model", type=nonempty, required=True,
                   help="exported model folder (config.json, model.safetensors) or hf-hub:ORG/NAME")
    p.add_argument("--data", type=nonempty, required=True,
                   help="folder:PATH (PATH/train/<class>/<images>; val is held out of it)")
    p.add_argument("--out", type=out_dir, default=F.out, help="folder to write the fine-tuned model, its card and "
                                                              "curve to")
    p.add_argument("--epochs", type=R["epochs"], default=F.epochs)
    p.add_argument("--lr", type=R["lr"], default=F.lr, help="peak learning rate (linear warmup, then cosine)")
    p.add_argument("--batch-size", type=R["batch_size"], default=F.batch_size)
    p.add_argument("--warmup-epochs", type=R["warmup_epochs"], default=F.warmup_epochs)
    p.add_argument("--weight-decay", type=R["weight_decay"], default=F.weight_decay)
    p.add_argument("--label-smoothing", type=R["label_smoothing"], default=F.label_smoothing)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=F.augment)
    p.add_argument("--val-size", type=R["val_size"],
                   help="images held out for validation (default: 10%% of the folder)")
    p.add_argument("--distill", type=nonempty,
                   help="zoo folder or Hub id whose largest entry teaches (needs the same classes)")
    p.add_argument("--distill-alpha", type=R["distill_alpha"], default=F.distill_alpha,
                   help="weight of the distillation loss")
    p.add_argument("--distill-temperature", type=R["distill_temperature"], default=F.distill_temperature)
    p.add_argument("--seed", type=R["seed"], default=F.seed)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=F.progress)


def run_finetune(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)
                            if hasattr(args, f.name)})
    result = finetune(cfg)
    best = max(result.history, key=lambda h: h["val_top1"])
    print(f"val top-1 {result.history[-1]['val_top1']:.2f}% after the last epoch (best {best['val_top1']:.2f}% "
          f"at epoch {best['epoch']})")
    print(f"wrote {result.out} (config.json, model.safetensors, README.md, val_curve.png, finetune.json)")
    print(f"load it: timm.create_model('local-dir:{result.out}', pretrained=True) after `import zoo`")
    return 0


def add_tune_args(p: argparse.ArgumentParser) -> None:
    from training.config import TUNE_RANGES as R
    from training.config import TuneConfig as T

    p.add_argument("--zoo", type=nonempty, required=True, help="zoo folder to tune in place (as `package` wrote it)")
    p.add_argument("--work", type=out_dir, required=True,
                   help="folder for each tuned entry as it finishes (what an interrupted tuning resumes from)")
    p.add_argument("--epochs", type=R["epochs"], default=T.epochs, help=f"per entry; default: {T.epochs}")
    p.add_argument("--lr", type=R["lr"], default=T.lr, help=f"peak learning rate; default: {T.lr}")
    p.add_argument("--min-lr", type=R["min_lr"], default=T.min_lr)
    p.add_argument("--batch-size", type=R["batch_size"], default=T.batch_size)
    p.add_argument("--warmup-epochs", type=R["warmup_epochs"], default=T.warmup_epochs)
    p.add_argument("--weight-decay", type=R["weight_decay"], default=T.weight_decay)
    p.add_argument("--label-smoothing", type=R["label_smoothing"], default=T.label_smoothing)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=T.augment, help="flips and crops")
    p.add_argument("--crop-padding", type=R["crop_padding"], default=T.crop_padding,
                   help=f"random crops padded by this many pixels (0: none); default: {T.crop_padding}")
    p.add_argument("--seed", type=R["seed"], default=T.seed)
    p.add_argument("--jobs", type=R["jobs"], default=T.jobs, help="entries tuned side by side, one thread each")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=T.progress)


def run_tune(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from training.config import TuneConfig
    from training.tune import tune_zoo

    cfg = TuneConfig(**{f.name: getattr(args, f.name) for f in fields(TuneConfig)})
    zoo = tune_zoo(args.zoo, args.work, cfg)
    print(f"wrote {zoo.root}: {len(zoo.tuned)} entries with their own weights")
    print(f"next: python -m training variants --zoo {zoo.root}; python -m export sizes --zoo {zoo.root}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "select": ("zero-cost selection of preferred architectures", add_select_args, run_select),
    "bossnas": ("BossNAS: label-free block-wise selection of preferred HyTra or MBConv paths", add_bossnas_args,
                run_bossnas),
    "darts": ("DARTS-style differentiable selection of preferred MBConv or HyTra paths under params budgets",
              add_darts_args, run_darts),
    "edmips": ("EdMIPS: per-layer weight bits of a zoo entry under bytes budgets", add_edmips_args,
               run_edmips),
    "variants": ("an entry's weights at fewer bytes (w16, w8, w4, EdMIPS maps): accuracy into the zoo's index",
                 add_variants_args, run_variants),
    "train": ("one-shot supernet training (preferred or uniform sampling)", add_train_args, run_train),
    "evaluate": ("accuracy of every preferred arch of a trained supernet", add_evaluate_args, run_evaluate),
    "search": ("baseline search in a budget: AutoFormer or aging evolution, random, or an ENAS controller",
               add_search_args, run_search),
    "pick": ("a zoo's entries searched bucket by bucket in a uniformly trained supernet", add_pick_args, run_pick),
    "package": ("package an evaluated run into a zoo directory", add_package_args, run_package),
    "finetune": ("fine-tune an exported subnet on an image folder", add_finetune_args, run_finetune),
    "tune": ("fine-tune every entry of a zoo standalone from its supernet weights, in place", add_tune_args,
             run_tune),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Every subcommand is listed, but only the one named first on the command line gets its options: some take
    their choices and defaults from modules that import torch, which `--help` alone should not wait for."""
    argv = routed(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, (help_, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if argv and argv[0] == name:
            add_args(p)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.cmd][2](args)
    except (ValueError, OSError, FloatingPointError, HubError) as e:  # the input's problem, or the disk's: one line
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
