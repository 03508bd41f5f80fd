"""Does a bigger budget buy a measurably better model? Each entry of a zoo on the test set, with its 95% interval,
and each step along the Pareto front (drawn on validation accuracy) tested against the step below it on the *same*
test images (paired: McNemar's exact test and a 95% interval of the accuracy difference, alone and Holm-corrected),
so that a rise is told apart from test-set noise.

    .venv/bin/python -m bench.bench_tradeoff [--zoo zoos/ladder-fmnist] [--plot PNG]

The plot goes to `--plot`, by default bench/ZOO-pareto.png for a zoo other than the default one (whose plot is
bench/default-zoo-pareto.png), so that measuring one zoo never overwrites another's figure.

Writes the raw per-image correctness (test and validation) to bench/data/zoo-front/ZOO.json, from which
`python -m bench report` builds the table in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine
from bench.report import DATA, pack_bits, zoo_front
from export.hf import pareto_plot
from training.evaluate import tensor_batches, zoo_split
from zoo.io import atomic_write_text
from zoo.store import DEFAULT_ZOO, Zoo


@torch.inference_mode()
def correctness(zoo: Zoo, batches) -> dict[str, np.ndarray]:
    """Per entry, which images of the batches its standalone subnet gets right."""
    out = {}
    for entry in zoo.entries:
        model = zoo.subnet(entry).eval()
        out[entry.id] = torch.cat([model(x).argmax(1) == y for x, y in batches]).numpy()
    return out


def raw_results(zoo: Zoo) -> dict:
    """Both splits' per-image correctness of every entry; the validation split is the one the zoo's training held out
    (training.evaluate.zoo_split)."""
    (test, _), (val, block) = zoo_split(zoo, "test"), zoo_split(zoo, "val")
    right_test, right_val = (correctness(zoo, tensor_batches(d, 1000)) for d in (test, val))
    return {"zoo": zoo.name, "weights_sha256": zoo.doc["weights"]["sha256"], "machine": machine(),
            "command": f"python -m bench.bench_tradeoff --zoo {zoo.root}", "test_images": len(test),
            "val_images": len(val), "val_split": {k: block[k] for k in ("source", "images", "seed")},
            "entries": [{"id": e.id, "params": e.params, "flops": e.flops, "test_right": pack_bits(right_test[e.id]),
                         "val_right": pack_bits(right_val[e.id])} for e in zoo.entries]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=str(DEFAULT_ZOO))
    ap.add_argument("--plot", default=None, help="default: bench/default-zoo-pareto.png for the default zoo, "
                                                 "bench/ZOO_NAME-pareto.png for another")
    ap.add_argument("--raw", type=Path, default=None, help="default: bench/data/zoo-front/ZOO_NAME.json")
    args = ap.parse_args()
    zoo = Zoo.load(args.zoo)
    raw = raw_results(zoo)
    out = args.raw or DATA / "zoo-front" / f"{zoo.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(raw, indent=1) + "\n")
    print(f"zoo {zoo.name}: {len(zoo.entries)} entries; machine: {raw['machine']}; raw results: {out}\n")
    print(zoo_front(raw))
    plot = args.plot or ("bench/default-zoo-pareto.png" if Path(args.zoo).resolve() == DEFAULT_ZOO.resolve()
                         else f"bench/{zoo.name}-pareto.png")
    print(f"wrote {pareto_plot(zoo, plot)}")


if __name__ == "__main__":
    main()
