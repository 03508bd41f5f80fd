"""Zero-cost proxies for step 1 of the selector: element-wise scores of one layer's weight matrix.

A proxy maps (θ, g) of a matrix region to a tensor of the same shape. Per-layer sums of its
slices rank which heads and MLP units of a layer matter; add a proxy by registering a function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not needed to list the proxies (`python -m training select --help`)
    from torch import Tensor

Proxy = Callable[["Tensor", "Tensor"], "Tensor"]


def snip(theta: Tensor, grad: Tensor) -> Tensor:
    """Plain SNIP, |θ ⊙ g|. Lower layers carry larger gradients, so it favours wide-low isomers."""
    return (theta * grad).abs()


def snip_normalised(theta: Tensor, grad: Tensor) -> Tensor:
    """PreNAS Eq. 13 as implemented: |θ ⊙ g| / (‖θ‖₁ · ‖g‖₁) over the layer's matrix, so every
    layer's scores are on one scale and depth no longer decides where the width goes."""
    return (theta * grad).abs() / (theta.abs().sum() * grad.abs().sum()).clamp_min(1e-30)


PROXIES: dict[str, Proxy] = {"snip": snip, "snip-normalised": snip_normalised}


def get_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise ValueError(f"unknown proxy '{name}'; choose one of {sorted(PROXIES)}")
    return PROXIES[name]
