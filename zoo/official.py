"""The published PreNAS preferred sets (`tinyvision/PreNAS:interval_cands/*.json`), as data.

Each entry: bucket upper edge (M params), the architecture, and the published parameter count
(M, 3 decimals) and dense-matmul GMACs at 197 tokens with relative position (spec §5, F*).
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.arch import Arch


@dataclass(frozen=True)
class OfficialEntry:
    bucket: int
    arch: Arch
    params_m: float
    gmacs: float


def _e(bucket: int, E: int, heads: list[int], ratios: list[float], params_m: float, gmacs: float):
    return OfficialEntry(bucket, Arch(E, len(heads), tuple(heads), tuple(ratios)), params_m, gmacs)


OFFICIAL_PREFERRED: dict[str, list[OfficialEntry]] = {
    "autoformer-tiny": [
        _e(6, 192, [4, 4, 4, 4, 3, 3, 3, 3, 3, 4, 3, 4], [4, 4, 4, 4, 4, 3.5, 3.5, 4, 4, 3.5, 4, 4], 5.995, 1.53),
        _e(7, 216, [4, 4, 4, 4, 4, 3, 3, 3, 4, 4, 3, 4], [4, 3.5, 4] + [3.5] * 9, 6.997, 1.74),
        _e(8, 240, [3] * 12, [4, 3.5, 4, 4, 3.5, 3.5, 3.5, 4, 4, 3.5, 4, 3.5], 7.997, 1.85),
        _e(9, 240, [4] * 12, [4, 4, 4, 4, 4, 3.5, 4, 4, 4, 3.5, 4, 4], 8.967, 2.16),
        _e(10, 240, [4, 4, 4, 4, 4, 3, 3, 3, 4, 4, 3, 4, 3, 4],
           [4, 4, 4, 4, 4, 3.5, 3.5, 4, 4, 3.5, 4, 3.5, 4, 4], 9.978, 2.39),
        _e(11, 240, [4] * 14, [4] * 14, 10.517, 2.54),
    ],
    "autoformer-small": [
        _e(18, 320, [7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 5, 6, 5],
           [4, 4, 3.5, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5, 4, 4], 17.991, 4.28),
        _e(23, 384, [7, 7, 7, 7, 5, 7, 7, 5, 6, 5, 5, 6, 5],
           [4, 4, 3.5, 4, 3.5, 4, 3.5, 3.5, 4, 4, 3, 4, 3.5], 22.990, 5.19),
        _e(28, 448, [7, 7, 7, 7, 5, 7, 7, 5, 6, 5, 5, 6, 5],
           [4, 4, 3, 4, 3, 3.5, 3, 3, 4, 3, 3, 4, 3], 27.976, 6.16),
        _e(33, 448, [7, 7, 7, 7, 7, 7, 7, 7, 5, 7, 5, 6, 5, 7],
           [4, 4, 3.5, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5, 4, 4, 3.5], 32.982, 7.26),
    ],
    "autoformer-base": [
        _e(42, 528, [9] * 14, [3] * 12 + [3.5, 3], 41.967, 9.36),
        _e(54, 576, [9, 9, 10, 9, 9, 10, 9, 9, 9, 9, 9, 9, 10, 9],
           [3.5, 4, 3.5, 3.5, 3.5, 4, 3.5, 3.5, 3.5, 3.5, 4, 3, 3.5, 4], 53.876, 11.72),
        _e(66, 624, [9, 10, 10, 9, 9, 10, 10, 9, 10, 9, 9, 9, 10, 10], [4, 4, 3.5] + [4] * 11, 65.916, 14.12),
    ],
}

# PreNAS-Ti / S / B: the 6M, 23M and 54M buckets.
PRENAS_MODELS = {"PreNAS-Ti": ("autoformer-tiny", 6), "PreNAS-S": ("autoformer-small", 23),
                 "PreNAS-B": ("autoformer-base", 54)}
