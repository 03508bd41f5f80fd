"""Budgets as people write them: 6M, 0.5M params; 1.4G FLOPs; 12ms latency."""

from __future__ import annotations

import re

FLOPS_LABEL = "FLOPs (MACs)"  # every command prints FLOPs as multiply-accumulates per image, as `Family.flops` counts
BARE_NUMBER_HINT = 1000  # no ViT costs fewer params or MACs: a smaller number without a unit means a missing M or G
_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGT]?)\s*\Z", re.IGNORECASE)
_LATENCY = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|us|µs)?\s*\Z", re.IGNORECASE)


def parse_count(value: str | float | int | None, what: str = "budget") -> float | None:
    """'6M' -> 6e6, '1.4G' -> 1.4e9, 500000 -> 500000.0; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number such as 6M or 1.4G, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = _NUMBER.match(str(value))
        if not m:
            raise ValueError(f"{what} must be a number such as 6M, 0.5M or 1.4G, got {value!r}")
        number, unit = float(m.group(1)) * _SCALE[m.group(2).upper()], m.group(2)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    if not unit and number < BARE_NUMBER_HINT:
        raise ValueError(f"{what} {value!r} has no unit and is under {BARE_NUMBER_HINT:,}: did you mean "
                         f"{str(value).strip()}M? (a number without a unit counts single parameters or MACs)")
    return number


MAX_BYTES = 1e12  # a file budget: far above any model file a zoo serves, far below where a float's rounding shows


def parse_bytes(value: str | float | int | None, what: str = "max_bytes") -> float | None:
    """A file size budget, as `parse_count` reads it ('120K' -> 120000.0: K is 1,000 bytes), at most MAX_BYTES;
    None stays None."""
    number = parse_count(value, what)
    if number is not None and number > MAX_BYTES:
        raise ValueError(f"{what} {value!r} is over {human(MAX_BYTES)} bytes: no model file is that big")
    return number


def parse_latency_ms(value: str | float | int | None) -> float | None:
    """'12ms' -> 12.0, '0.5s' -> 500.0, 12 -> 12.0 (milliseconds); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"latency budget must be a duration such as 12ms or 0.5s, got {value!r}")
    if isinstance(value, (int, float)):
        ms = float(value)
    else:
        m = _LATENCY.match(str(value))
        if not m:
            raise ValueError(f"latency budget must be a duration such as 12ms or 0.5s, got {value!r}")
        unit = (m.group(2) or "ms").lower()
        ms = float(m.group(1)) * {"ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}[unit]
    if not ms > 0 or ms == float("inf"):
        raise ValueError(f"latency budget must be positive and finite, got {value!r}")
    return ms


def human(n: float) -> str:
    for unit in ("T", "G", "M", "K"):
        if abs(n) >= _SCALE[unit]:
            return f"{n / _SCALE[unit]:.3g}{unit}"
    return f"{n:.3g}"
