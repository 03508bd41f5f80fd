"""Building blocks both families' forwards share (kept free of timm, which imports the families back)."""

from __future__ import annotations

from torch import Tensor


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescale the kept ones."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *(1,) * (x.dim() - 1)).bernoulli_(1 - rate)
    return x * keep / (1 - rate)
