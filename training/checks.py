"""What a valid setting is, and strict JSON for what the commands write (no torch).

One `Range` (zoo.arguments, shared with the server's and export's command lines) per numeric setting serves both the
config dataclasses (library callers get a ValueError) and the command line (an argparse type: a bad flag is refused at
parse time, before torch loads or any work starts). No command
writes NaN or Infinity, which Python's json module would write and every other JSON reader refuses.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path

from zoo.arguments import Range
from zoo.io import atomic_write_text, json_problem, quote

SEED_MAX = 2**32 - 1  # numpy's and most tools' seed range


SEED = Range(int, 0, SEED_MAX)
BATCH = Range(int, 1, 65_536)
IMAGES = Range(int, 0, 100_000_000)  # a count of images held out or evaluated (0: none, or all: see each flag)
EPOCHS = Range(float, 0, 10_000, open_low=True)
LR = Range(float, 0, 10, open_low=True)
MIN_LR = Range(float, 0, 10)
WARMUP = Range(float, 0, 10_000)
WEIGHT_DECAY = Range(float, 0, 10)
PROBABILITY = Range(float, 0, 1, open_high=True)  # label smoothing, drop path: 1 would leave nothing to learn


def check_all(obj: object, ranges: dict[str, Range]) -> None:
    """Every setting of a config object with a range, None meaning "the default" where a field allows it."""
    for name, r in ranges.items():
        if getattr(obj, name) is not None:
            r.check(name, getattr(obj, name))


def check_kinds(obj: object) -> None:
    """Every str and bool field of a config dataclass holds one (or None, where its annotation allows): a config read
    back from JSON may hold anything."""
    for f in fields(obj):
        kind, _, rest = str(f.type).partition(" ")  # annotations are strings such as "str | None"
        value, want = getattr(obj, f.name), {"str": str, "bool": bool}.get(kind)
        if want and not isinstance(value, want) and not (value is None and "None" in rest):
            raise ValueError(f"{f.name} must be a {kind}{' or None' if 'None' in rest else ''}, got {quote(value)}")


def nonempty(text: str) -> str:
    """The argparse type of a name, path or source: an empty one would silently mean the current folder or nothing."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value names nothing")
    return text


def out_dir(text: str) -> str:
    """The argparse type of an output folder: refused at once when it cannot become one (empty, a file, under a file,
    not writable), rather than after the work it was to hold."""
    nonempty(text)
    for p in (Path(text), *Path(text).parents):
        if p.is_symlink() and not p.exists():
            raise argparse.ArgumentTypeError(f"{quote(text)}: {p} is a broken link")
        if p.exists():
            if not p.is_dir():
                raise argparse.ArgumentTypeError(f"{quote(text)}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{quote(text)}: {p} is not writable")
            break
    return text


def json_text(doc: object, what: str, indent: int | None = 1) -> str:
    """`doc` as strict JSON; a value that is not finite is refused, naming where it is."""
    if problem := json_problem(doc):
        raise ValueError(f"refusing to write {what}: {problem}")
    return json.dumps(doc, indent=indent, allow_nan=False)


def write_json(path: str | Path, doc: dict) -> Path:
    """`doc` as strict JSON in `path`, atomically."""
    atomic_write_text(path, json_text(doc, str(path)) + "\n")
    return Path(path)
