"""argparse types every PreZoo command line shares (`zoo` is the one package they all may import): numbers that are
finite and within their range, and names that are not empty, refused at parse time with argparse's one line."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from zoo.io import quote


@dataclass(frozen=True)
class Range:
    """Finite numbers of `kind` (int or float) from `low` to `high`; `open_low`/`open_high` leave that end out. One
    range serves a library's checks (ValueError) and a command line (an argparse type, refused at parse time): nan,
    inf, 0 or -1 would make a limit that refuses everything, a count that loops for ever, or a wait that never ends."""

    kind: type
    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def __str__(self) -> str:
        ends = f"{'(' if self.open_low else '['}{_show(self.low)}, {_show(self.high)}{')' if self.open_high else ']'}"
        return f"{'an int' if self.kind is int else 'a float'} in {ends}"

    def holds(self, value: object) -> bool:
        """Whether `value` is a number of this range (a float range takes ints too: JSON writes 1.0 as 1)."""
        number = isinstance(value, int) if self.kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not number or (isinstance(value, float) and not math.isfinite(value)):
            return False
        above = self.low < value if self.open_low else self.low <= value
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def check(self, name: str, value: object) -> None:
        """ValueError naming the setting when `value` is out of the range."""
        if not self.holds(value):
            raise ValueError(f"{name} must be {self}, got {quote(value)}")

    def __call__(self, text: str) -> int | float:
        """The argparse type: the number `text` spells, or the one-line reason it is refused."""
        try:
            value = self.kind(text)
        except ValueError:  # also int() of a 5,000-digit string
            value = None
        if not self.holds(value):
            raise argparse.ArgumentTypeError(f"{quote(text)} is not {self}")
        return value


def _show(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def zoo_source(text: str) -> str:
    """--zoo names a folder or a Hub id: an empty one is a mistake, not the built-in zoo."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name a zoo folder or Hub id, or leave --zoo out for the built-in")
    return text
