"""An entry's weights stored at fewer bytes, and what that costs in accuracy (`python -m training variants`): the
choices a bytes budget picks from (`max_bytes`).

Variants of every entry of a zoo: uniform weight-only widths (`w16`, `w8`, `w4`: every Conv2d/Linear weight stored
at that width, as `export.mixed` writes it; activations fp32) and, optionally, EdMIPS precision maps already searched
(`python -m training edmips`'s OUT/ENTRY/BYTES.json) as `edmips-<bytes>`. Each is measured exactly as its file
computes: the zoo's served model (`Zoo.subnet`: a HyTra or MBConv entry with its stored BatchNorm statistics), its
weights fake-quantized as the file stores them (`zoo.precision.quantized`), top-1/top-5 on the zoo's recorded
validation split (its source, seed and size: what chooses) and on the test split (what is reported). The file's
bytes are measured later, on the file itself (`python -m export sizes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from zoo.store import Variant, Zoo

UNIFORM_BITS = (16, 8, 4)
EDMIPS = "edmips-"  # + the searched budget in bytes
BATCH = 500


def uniform_name(bits: int) -> str:
    return f"w{bits}"


def variant_maps(model: nn.Module, entry_id: str, bits: Iterable[int], edmips: Path | None
                 ) -> dict[str, tuple[dict[str, int], str]]:
    """name -> (precision map, origin) of one entry: a uniform map per width of `bits`, then every EdMIPS map of
    `edmips`/ENTRY/*.json (checked against the model, `zoo.precision.read_map`)."""
    from zoo.precision import read_map, uniform

    maps = {uniform_name(b): (uniform(model, b), "uniform") for b in bits}
    for path in sorted((edmips / entry_id).glob("*.json")) if edmips is not None else []:
        layers, doc = read_map(path, model)
        if doc.get("entry") != entry_id:
            raise ValueError(f"{path}: a precision map of entry {doc.get('entry')!r}, found under {entry_id}")
        maps[f"{EDMIPS}{int(doc['budget'])}"] = (layers, f"edmips {path}")
    return maps


def measure(model: nn.Module, bits: dict[str, int], splits: dict[str, list]) -> dict[str, float]:
    """top1/top5 (test) and val_top1/val_top5 of `model` with its weights as a file at `bits` stores them."""
    from training.evaluate import accuracy_of
    from zoo.precision import folded, quantized

    model = folded(model)  # as the file holds it (`export.mixed`): its fp16 weights round after folding
    with quantized(model, bits):
        test, val = (accuracy_of(model, splits[s]) for s in ("test", "val"))
    return {"top1": test.top1, "top5": test.top5, "val_top1": val.top1, "val_top5": val.top5}


def splits_of(zoo: Zoo, batch_size: int = BATCH) -> tuple[dict[str, list], dict[str, Any]]:
    """The zoo's test and recorded validation splits as ready batches, and the protocol saying which they are;
    ValueError where the zoo records no validation (it chooses among variants) or its training settings hold out
    another split than the one it records."""
    from training.evaluate import tensor_batches, validation_split, zoo_split

    if not zoo.validation:
        raise ValueError(f"zoo {zoo.name} records no validation accuracy, which chooses among variants: run "
                         f"`python -m training evaluate --zoo {zoo.root} --split val --write` first")
    val, block = validation_split(zoo.doc.get("training"), zoo.space)
    if {k: block[k] for k in ("source", "images", "seed")} != {k: zoo.validation[k] for k in ("source", "images",
                                                                                               "seed")}:
        raise ValueError(f"zoo {zoo.name}'s validation record ({zoo.validation['images']} images, seed "
                         f"{zoo.validation['seed']}) is not the split its training settings hold out "
                         f"({block['images']} images, seed {block['seed']})")
    test = zoo_split(zoo, "test")[0]
    batches = {"val": tensor_batches(val, batch_size), "test": tensor_batches(test, batch_size)}
    protocol = (f"weights fake-quantized per layer as each file stores them (zoo.precision: int4/int8 per-output-"
                f"channel symmetric, fp16), activations fp32, the model as the zoo serves it; test: {len(test)} "
                f"images; validation: {block['protocol']}")
    return batches, {"protocol": protocol, "test_images": len(test), "val_images": len(val)}


def zoo_variants(zoo: Zoo, splits: dict[str, list], bits: Iterable[int] = UNIFORM_BITS, edmips: Path | None = None,
                 progress: Callable = iter) -> dict[str, dict[str, Variant]]:
    """Every entry's variants (entry id -> name -> `Variant`) measured on `splits` (`splits_of`); nothing written."""
    from zoo.store import Variant

    found = {}
    for entry in progress(zoo.entries):
        model = zoo.subnet(entry)
        found[entry.id] = {name: Variant(name, layers, origin, **measure(model, layers, splits))
                           for name, (layers, origin) in variant_maps(model, entry.id, bits, edmips).items()}
    return found


def record_variants(zoo: Zoo, bits: Iterable[int] = UNIFORM_BITS, edmips: Path | None = None,
                    batch_size: int = BATCH, progress: Callable = iter) -> dict[str, dict[str, Variant]]:
    """`zoo_variants`, written into the zoo's index (atomically; measured bytes kept where a map is unchanged)."""
    bits = tuple(bits)
    splits, protocol = splits_of(zoo, batch_size)
    found = zoo_variants(zoo, splits, bits, edmips, progress)
    zoo.with_variants(found, {**protocol, "uniform_bits": list(bits), "edmips": None if edmips is None
                              else str(edmips)})
    return found
