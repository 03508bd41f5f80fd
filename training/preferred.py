"""Preferred sets, whichever selector picks them (`python -m training select`: PreNAS's zero-cost selector for the ViT,
its step 2 for MBConv; `python -m training bossnas`: BossNAS for HyTra and MBConv; `python -m training darts`): cost
buckets, the best candidates per bucket, the search per bucket of the selectors that score one arch at a time, and
`preferred.json`.

`preferred.json` (schema_version 1): {schema_version, kind: "prezoo.preferred", created, family (absent: "vit"),
space: <the family's space dict>, space_hash, selector: {the selector's settings, bucket_by, buckets: {low, high,
width | ratio}, ...}, stats: {..., seconds: {...}}, buckets: [{low, high, entries: [{id, arch, params, flops,
score}]}]}: params in parameters, FLOPs in multiply-accumulates (the family's `flops`), the score the selector's
(higher is better); empty buckets are listed with no entries.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.checks import write_json
from training.search import SearchConfig, check_reachable, evolution
from zoo.budget import human
from zoo.family import Space, family_of, get_family
from zoo.io import read_versioned_json

SCHEMA_VERSION = 1
BUCKET_BY = ("params", "flops")


@dataclass(frozen=True)
class Buckets:
    """Half-open buckets from `low` up to at most `high`: each `width` wide, or (with `ratio`) each `ratio` times
    the one before, so that a space spanning orders of magnitude gets as many buckets per decade at both ends."""

    low: float
    high: float
    width: float | None = None
    ratio: float | None = None

    def __post_init__(self) -> None:
        if (self.width is None) == (self.ratio is None):
            raise ValueError(f"buckets need exactly one of width and ratio, got {self}")
        if not self.high > self.low >= 0 or (self.width is not None and not self.width > 0) \
                or (self.ratio is not None and not (self.ratio > 1 and self.low > 0)):
            raise ValueError(f"buckets need 0 <= low < high and width > 0 (or low > 0 and ratio > 1), got {self}")
        if self.count == 0:
            raise ValueError(f"no bucket fits between {self.low:g} and {self.high:g} ({self})")

    @property
    def count(self) -> int:
        if self.ratio is not None:
            return int(math.floor(math.log(self.high / self.low) / math.log(self.ratio) + 1e-9))
        return int(math.floor((self.high - self.low) / self.width + 1e-9))

    def edges(self) -> list[tuple[float, float]]:
        if self.ratio is not None:
            points = [self.low * self.ratio**k for k in range(self.count + 1)]
        else:
            points = [self.low + k * self.width for k in range(self.count + 1)]
        return list(itertools.pairwise(points))

    def index(self, value: float) -> int | None:
        """The bucket holding `value`, or None outside every bucket."""
        for k, (lo, hi) in enumerate(self.edges()):
            if lo <= value < hi:
                return k
        return None

    @classmethod
    def default(cls, space: Space, by: str) -> Buckets:
        """The space's family's buckets for it (`Family.default_buckets`, by params), else about eight buckets of a
        round width over its cost range."""
        family = get_family(space.family)
        if by == "params" and space.name in family.default_buckets:
            return cls(**family.default_buckets[space.name])
        lo, hi = family.cost_range(space)[BUCKET_BY.index(by)]
        width = float(f"{(hi - lo) / 8:.1g}")
        low = math.floor(lo / width) * width
        return cls(low, low + math.ceil((hi - low) / width + 1e-9) * width, width)


@dataclass
class Candidate:
    """An arch a selector scored, with its costs."""

    arch: Any
    params: int
    flops: int
    score: float


def pick_preferred(candidates: list[Candidate], buckets: Buckets, by: str, top_n: int) -> list[list[Candidate]]:
    """Top-N candidates by score within each bucket (empty buckets stay empty)."""
    per_bucket: list[list[Candidate]] = [[] for _ in range(buckets.count)]
    for c in candidates:
        k = buckets.index(getattr(c, by))
        if k is not None:
            per_bucket[k].append(c)
    return [sorted(b, key=lambda c: (-c.score, c.arch.id))[:top_n] for b in per_bucket]


def evolution_per_bucket(space: Space, score: Callable[[Any], float], buckets: Buckets, population: int,
                         evaluations: int, seed: int, progress: bool,
                         log: Callable[[dict], None]) -> tuple[list[Candidate], dict[str, float]]:
    """Every reachable params bucket searched by `training.search.evolution` on `score` (higher is better), for
    selectors that score one arch at a time: the archs the searches scored and each bucket's seconds."""
    family = get_family(space.family)
    candidates: dict[str, Candidate] = {}
    searched = {}
    for low, high in buckets.edges():
        bucket = SearchConfig.of_population(population, evaluations=evaluations, min_params=low, max_params=high,
                                            seed=seed)
        try:
            check_reachable(space, bucket)
            result = evolution(space, score, bucket, progress=progress)
        except ValueError as e:  # past the space's cost range, or no random draw lands inside: stays empty
            log({"event": "bucket", "low": low, "high": high, "skipped": str(e)})
            continue
        candidates |= {a.id: Candidate(a, family.params(space, a), family.flops(space, a), s)
                       for a, s in result.scores.items()}
        searched[f"{low:g}-{high:g}"] = result.seconds
        log({"event": "bucket", "low": low, "high": high, "archs": result.evaluations, "best": result.best_score,
             "seconds": result.seconds})
    return list(candidates.values()), searched


def preferred_doc(space: Space, selector: dict, stats: dict, buckets: Buckets, preferred: list[list[Candidate]],
                  **fields: Any) -> dict:
    """A `preferred.json` document (module docstring), whichever selector filled it; `fields` are added at the top
    level (a family's name, for one)."""
    entry = lambda c: {"id": c.arch.id, "arch": c.arch.to_dict(), "params": c.params, "flops": c.flops,
                       "score": c.score}
    return {
        "schema_version": SCHEMA_VERSION, "kind": "prezoo.preferred",
        "created": datetime.now(UTC).isoformat(timespec="seconds"), **fields,
        "space": space.to_dict(), "space_hash": space.hash, "selector": selector, "stats": stats,
        "buckets": [{"low": lo, "high": hi, "entries": [entry(c) for c in best]}
                    for (lo, hi), best in zip(buckets.edges(), preferred, strict=True)],
    }


def preferred_table(doc: dict) -> str:
    """A `preferred.json`'s entries as a table: bucket, id, params, score and layout."""
    family = family_of(doc)
    rows = [f"{'params bucket':<20} {'id':<20} {'params':>8} {'score':>10}  layers"]
    for b in doc["buckets"]:
        for e in b["entries"]:
            rows.append(f"{human(b['low']) + '-' + human(b['high']):<20} {e['id']:<20} {human(e['params']):>8} "
                        f"{e['score']:>10.4g}  {family.arch_from_dict(e['arch']).describe()}")
    return "\n".join(rows)


def write_preferred(doc: dict, out_dir: str | Path) -> Path:
    return write_json(Path(out_dir) / "preferred.json", doc)


def load_preferred(path: str | Path) -> tuple[Space, list[dict]]:
    """The space and the preferred entries of a `preferred.json`, checked for consistency: its optional "family"
    (absent: "vit", what PreNAS's selector writes) says how to read the space and the archs (BossNAS writes HyTra's)."""
    path = Path(path)
    doc = read_versioned_json(path, "prezoo.preferred", SCHEMA_VERSION)
    try:
        space, entries = _preferred_entries(doc)
    except (KeyError, TypeError, AttributeError) as e:  # a field missing, or of another type
        raise ValueError(f"{path} is not a valid preferred.json: {type(e).__name__} {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not entries:
        raise ValueError(f"{path} holds no preferred architectures")
    return space, entries


def _preferred_entries(doc: dict) -> tuple[Space, list[dict]]:
    family = family_of(doc)
    space = family.space_from_dict(doc["space"])
    if space.hash != doc.get("space_hash"):
        raise ValueError(f"space_hash {doc.get('space_hash')} does not match its space ({space.hash})")
    entries = [e for b in doc["buckets"] for e in b["entries"]]
    for e in entries:
        arch = space.validate(family.arch_from_dict(e["arch"]))
        if arch.id != e["id"]:
            raise ValueError(f"entry id {e['id']} does not match its arch ({arch.id})")
    return space, entries
