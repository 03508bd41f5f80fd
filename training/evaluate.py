"""Accuracy of subnets with weights inherited from a trained supernet (no retraining), for any model family.

A family whose BatchNorm needs per-path statistics (`Family.calibrate_bn`: HyTra) is measured as a zoo serves it:
each path extracted, its statistics recalibrated on the first 2,048 training images (`calibration_batches`), then
evaluated on its own. A ViT path is evaluated through the sliced supernet, which equals its extraction.

Validation accuracy is measured on the images the supernet's training held out (`validation_split`: its data source,
seed and val_size, never another split), so that entries can be chosen on it and their test accuracy reported
unbiased; a packaged zoo's entries are measured as it serves them (`zoo_accuracy`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from training.config import TrainConfig
from zoo.family import DEFAULT_FAMILY, Arch, Space, Supernet, get_family
from zoo.layers import bn_statistics, load_bn_statistics, recalibrate_bn
from zoo.schema import held_out_split
from zoo.store import PathStats, Zoo

CALIBRATION_IMAGES = 2048  # spec 7 / §4.1: about 2k training images per path
CALIBRATION_BATCH = 256


@dataclass
class Accuracy:
    top1: float
    top5: float
    loss: float
    n: int


def load_supernet(path: str | Path, device: str | torch.device = "cpu") -> Supernet:
    """A trained supernet from `supernet.safetensors` (its family and space are stored in the metadata; runs saved
    before families existed have no family: a ViT)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no supernet weights at {path}; train one with `python -m training train`")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    if "space" not in meta:
        raise ValueError(f"{path} has no 'space' in its metadata: not a PreZoo supernet")
    family = get_family(meta.get("family", DEFAULT_FAMILY))
    model = family.supernet(family.space_from_dict(json.loads(meta["space"])))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def tensor_batches(dataset, batch_size: int = 500, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (first `limit`) items of a dataset as ready batches, loaded once for many subnets."""
    from training.data import make_loader

    out, count = [], 0
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        out.append((x, y))
        count += len(x)
        if limit is not None and count >= limit:
            break
    return out


def calibration_batches(cfg: TrainConfig, space: Space) -> list[Tensor] | None:
    """What each path's BatchNorm statistics are recalibrated on: the first 2,048 images of the run's training split,
    without augmentation, in batches of 256. None for a family that needs no statistics of its own."""
    if not get_family(space.family).calibrate_bn:
        return None
    from training.data import load_data

    train, _ = load_data(cfg.data, "train", img_size=space.img_size, in_chans=space.in_chans, val_size=cfg.val_size,
                         seed=cfg.seed)
    return [x for x, _ in tensor_batches(train, CALIBRATION_BATCH, limit=CALIBRATION_IMAGES)]


def path_stats(supernet: Supernet, archs: list[Arch], calibration: list[Tensor] | None,
               dtype: torch.dtype = torch.float32) -> PathStats | None:
    """Each arch's BatchNorm statistics, recalibrated on `calibration` and rounded through `dtype` as a zoo stores
    them, by arch id; None without calibration (a family that needs none)."""
    if calibration is None:
        return None
    device = next(supernet.parameters()).device
    stats = {}
    for a in archs:
        path = recalibrate_bn(supernet.extract(a), (x.to(device) for x in calibration))
        stats[a.id] = {k: v.to(dtype).to(v.dtype) if v.is_floating_point() else v.clone()
                       for k, v in bn_statistics(path).items()}
    return stats


@torch.inference_mode()
def accuracy_of(forward: Callable[[Tensor], Tensor], batches, device: str | torch.device = "cpu") -> Accuracy:
    """Top-1/top-5/loss of any model (`forward`: images to logits) on pre-loaded batches."""
    correct1 = correct5 = 0
    loss = 0.0
    n = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = forward(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    return Accuracy(100 * correct1 / n, 100 * correct5 / n, loss / n, n)


def accuracy(supernet: Supernet, arch: Arch, batches, device: str | torch.device = "cpu",
             stats: Mapping[str, Tensor] | None = None) -> Accuracy:
    """Top-1/top-5/loss of `arch` on pre-loaded batches: through the sliced supernet, or with `stats` (its own
    BatchNorm statistics) the extracted path holding them."""
    if stats is None:
        return accuracy_of(lambda x: supernet(x, arch), batches, device)
    return accuracy_of(load_bn_statistics(supernet.extract(arch), stats), batches, device)


def evaluate_archs(supernet: Supernet, archs: list[Arch], batches, progress: bool = True,
                   stats: PathStats | None = None) -> list[Accuracy]:
    """Every arch's accuracy; a family with `calibrate_bn` needs each arch's statistics (`path_stats`)."""
    family = get_family(supernet.space.family)
    if family.calibrate_bn and stats is None:
        raise ValueError(f"{family.title} paths are evaluated with BatchNorm statistics of their own: pass path_stats")
    device = next(supernet.parameters()).device
    return [accuracy(supernet, a, batches, device, None if stats is None else stats[a.id])
            for a in tqdm(archs, desc="evaluate", disable=not progress)]


def protocol(dataset: str, split: str, images: int, space: Space, held_out: str = "") -> str:
    """How a split's accuracies were measured, in one phrase (the index's eval_protocol and validation.protocol)."""
    recalibrated = (f", BatchNorm statistics recalibrated per path on the first {CALIBRATION_IMAGES} training images"
                    if get_family(space.family).calibrate_bn else "")
    return (f"{dataset} {split} split, {images} images{held_out}, single crop at {space.img_size}px, weights "
            f"inherited from the supernet{recalibrated}")


def validation_split(training: Any, space: Space) -> tuple[Dataset, dict[str, Any]]:
    """The images a supernet's training held out, as `space`'s models take them, and the index's `validation` block
    naming them (zoo.schema.Validation). `training`: the run's settings as a zoo records them; ValueError where they
    cannot tell the split, or it holds no image outside the training data (`held_out_split`)."""
    from training.data import load_data

    held = held_out_split(training)
    data, info = load_data(held.source, "val", img_size=space.img_size, in_chans=space.in_chans,
                           val_size=held.val_size, seed=held.seed)
    held_out = f" held out of the training split (seed {held.seed})"
    return data, {"source": held.source, "split": "val", "held_out_of": "train", "images": len(data),
                  "seed": held.seed, "protocol": protocol(info.name, "val", len(data), space, held_out)}


def zoo_split(zoo: Zoo, split: str) -> tuple[Dataset, dict[str, Any] | None]:
    """A zoo's test split, or its validation split with the block naming it (`validation_split`), found from the
    training settings the zoo records."""
    from training.data import load_data

    if split == "val":
        return validation_split(zoo.doc.get("training"), zoo.space)
    source = (zoo.doc.get("training") or {}).get("data")
    if not isinstance(source, str):
        raise ValueError(f"zoo {zoo.name} records no training data source (training.data): its test split cannot "
                         f"be found")
    return load_data(source, "test", img_size=zoo.space.img_size, in_chans=zoo.space.in_chans)[0], None


def zoo_accuracy(zoo: Zoo, batches, progress: bool = True) -> dict[str, Accuracy]:
    """Every entry's accuracy as the zoo serves it, by id: `Zoo.subnet`, which gives a HyTra entry the BatchNorm
    statistics packaging recalibrated on the first 2,048 training images (as its recorded accuracies were measured)
    and a ViT entry its extraction, which equals the sliced supernet packaging measured."""
    return {e.id: accuracy_of(zoo.subnet(e), batches)
            for e in tqdm(zoo.entries, desc="evaluate", disable=not progress)}
