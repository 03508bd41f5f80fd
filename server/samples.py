"""Sample images for the UI's "try it" tab: one Fashion-MNIST test image per class, written as small PNGs.

Taken from Debian's dataset-fashion-mnist when it is installed and the zoo was trained on Fashion-MNIST;
otherwise there are no samples (the tab still takes uploads).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.store import Zoo

log = logging.getLogger("server")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def write_samples(zoo: Zoo, out: Path, source: Path = FASHION_MNIST) -> list[Path]:
    """PNG paths, one per class (first test image of each), or [] when there is nothing fitting to show."""
    if zoo.doc.get("dataset") != "fashion-mnist" or not (source / IMAGES).is_file():
        return []
    paths = [out / f"{label}-{name.replace('/', '-').replace(' ', '-').lower()}.png"
             for label, name in enumerate(zoo.classes)]
    if all(p.exists() for p in paths):
        return paths
    try:
        images, labels = _read_idx(source / IMAGES, 3), _read_idx(source / LABELS, 1)
    except (OSError, EOFError, ValueError) as e:
        log.warning("no sample images: cannot read Fashion-MNIST in %s (%s)", source, e)
        return []
    out.mkdir(parents=True, exist_ok=True)
    for label, path in enumerate(paths):
        Image.fromarray(images[int(np.argmax(labels == label))]).save(path)
    return paths


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzip IDX file: 4-byte magic (type 0x08 = uint8, then ndim), one big-endian uint32 per dimension, data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != 0x0800 | ndim:
        raise ValueError(f"{path} is not an IDX file of {ndim}-d uint8 data")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
