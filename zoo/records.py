"""What every family's spaces and archs share: field checks, and a frozen dataclass as data (dict, canonical JSON,
content hash, YAML/JSON file), so each family writes only its own fields and rules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

_S = TypeVar("_S", bound="SpaceRecord")


def positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def positive_number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")
    return float(v)


class SpaceRecord:
    """Mixin for a family's frozen-dataclass space: every field but `description` shapes the weights, so the hash
    leaves it out; tuples are lists in the dict."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls: type[_S], d: Any) -> _S:
        if not isinstance(d, dict):
            raise ValueError(f"a search space must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown search space field(s) {unknown}; known fields: {sorted(known)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in d and f.default is dataclasses.MISSING)
        if missing:
            raise ValueError(f"search space is missing field(s) {missing}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Content hash of everything that shapes the weights (the description is left out)."""
        d = self.to_dict()
        d.pop("description")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def save(self, path: str | Path) -> None:
        from zoo.io import atomic_write_text

        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yaml", ".yml") \
            else json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write_text(path, text)

    @classmethod
    def load(cls: type[_S], path: str | Path) -> _S:
        return cls.from_dict(read_space_file(path))


def read_space_file(path: str | Path) -> Any:
    """The parsed content of a YAML or JSON space file (`.json`: JSON, else YAML), or ValueError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read search space file {path}: {e}") from e
