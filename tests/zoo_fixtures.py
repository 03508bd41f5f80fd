"""A small real zoo for tests: a randomly initialised `mini` supernet and a few entries.

The accuracies are test inputs (the index's job is to store and rank them), not results.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoo import BUILTIN_SPACES, Arch, ViTSupernet, ZooEntry, flops, params
from zoo.store import write_zoo

MINI = BUILTIN_SPACES["mini"]
ENTRY_ARCHS = [
    MINI.smallest_arch(),
    Arch(80, 4, (4, 2, 4, 2), (2.0, 4.0, 2.0, 2.0)),
    Arch(96, 5, (4, 2, 4, 4, 4), (4.0, 4.0, 2.0, 2.0, 3.0)),
    MINI.largest_arch(),
]
ACCURACY = [84.0, 86.5, 85.0, 89.0]  # the third is dominated: more params, less accurate than the second
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
PREPROCESSING = {"img_size": 28, "in_chans": 1, "crop_pct": 1.0, "interpolation": "bicubic",
                 "mean": [0.286], "std": [0.353]}


def make_zoo(out: Path, dtype: torch.dtype = torch.float32, seed: int = 0, **metadata) -> Path:
    """The zoo folder; `metadata` adds or replaces top-level fields of zoo.json (e.g. eval_images=400)."""
    torch.manual_seed(seed)
    supernet = ViTSupernet(MINI)
    entries = [ZooEntry(a, params(MINI, a), flops(MINI, a), acc, min(100.0, acc + 9), 0.5)
               for a, acc in zip(ENTRY_ARCHS, ACCURACY, strict=True)]
    return write_zoo(out, name="test-zoo", space=MINI, state=supernet.state_dict(), entries=entries,
                     classes=FMNIST_CLASSES, preprocessing=PREPROCESSING, weights_dtype=dtype,
                     **{"dataset": "fashion-mnist", "eval_protocol": "test inputs", **metadata})
