"""Accuracy of subnets with weights inherited from a trained supernet (no retraining)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm import tqdm

from zoo import Arch, SearchSpace, ViTSupernet


@dataclass
class Accuracy:
    top1: float
    top5: float
    loss: float
    n: int


def load_supernet(path: str | Path, device: str | torch.device = "cpu") -> ViTSupernet:
    """A trained supernet from `supernet.safetensors` (its space is stored in the metadata)."""
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
    space = SearchSpace.from_dict(json.loads(meta["space"]))
    model = ViTSupernet(space)
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


@torch.inference_mode()
def accuracy(supernet: ViTSupernet, arch: Arch, batches, device: str | torch.device = "cpu") -> Accuracy:
    """Top-1/top-5/loss of `arch` on pre-loaded batches, through the sliced supernet."""
    correct1 = correct5 = 0
    loss = 0.0
    n = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = supernet(x, arch).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    return Accuracy(100 * correct1 / n, 100 * correct5 / n, loss / n, n)


def evaluate_archs(supernet: ViTSupernet, archs: list[Arch], batches, progress: bool = True) -> list[Accuracy]:
    device = next(supernet.parameters()).device
    return [accuracy(supernet, a, batches, device) for a in tqdm(archs, desc="evaluate", disable=not progress)]
