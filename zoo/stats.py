"""Uncertainty of measured accuracy: a top-1 measured on n test images is a binomial proportion, and a zoo whose
entries differ by less than that uncertainty must say so rather than draw noise as a trade-off."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(percent: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval (in percent) of an accuracy of `percent` measured on `n` images. Unlike the normal
    approximation it stays inside [0, 100] and is honest near 0% and 100%."""
    if n < 1:
        raise ValueError(f"an interval needs at least one image, got n={n}")
    p = percent / 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)
