"""argparse types every PreZoo command line shares (`zoo` is the one package they all may import): numbers that are
finite and within their range, and names that are not empty, refused at parse time with argparse's one line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def number(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], int | float]:
    """A finite number of `kind` within [low, high]: nan, inf, 0 or -1 would make a limit that refuses everything,
    a count that loops for ever, or a wait that never ends."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole' if kind is int else 'a'} number from "
                                             f"{low:g} to {high:g}")
        return value

    return parse


def zoo_source(text: str) -> str:
    """--zoo names a folder or a Hub id: an empty one is a mistake, not the built-in zoo."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name a zoo folder or Hub id, or leave --zoo out for the built-in")
    return text
