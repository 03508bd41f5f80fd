"""The zoo: a trained supernet plus an index of its preferred architectures with measured numbers.

A zoo is a directory (or a Hub model repo) holding:
- `zoo.json` — schema_version, name, space (+ hash), classes, preprocessing (img_size, in_chans,
  crop_pct, interpolation, mean, std), the FLOPs rule, the evaluation and latency protocols, the
  selector and training settings, the weight files with their sha256, and one entry per preferred
  arch: id, arch, params, flops, top1, top5 (and loss), latency (median/p10/p90 ms, or null).
- the supernet weights as safetensors (fp16 or fp32; always computed in fp32).

`zoo.json` is written last and atomically, so a directory with one is complete; loading checks
every weight file against its sha256 and every entry against the space and the cost model.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from zoo.arch import Arch
from zoo.budget import human, parse_count, parse_latency_ms
from zoo.cost import flops, params
from zoo.io import atomic_write_bytes, atomic_write_text, read_versioned_json, sha256_file
from zoo.space import SearchSpace
from zoo.supernet import ViTSupernet
from zoo.vit import ViT

SCHEMA_VERSION = 1
DEFAULT_ZOO = Path(__file__).resolve().parent.parent / "zoos" / "mini-fmnist"  # the zoo shipped in this repo
INDEX = "zoo.json"
WEIGHTS = "supernet.safetensors"
FLOPS_RULE = ("multiply-accumulates (MACs) per image over every matrix product (patch conv, qkv, q·kᵀ, "
              "attn·v, proj, fc1, fc2, head; with relative position also q·r_kᵀ and attn·r_v) at all "
              "patches + 1 tokens; biases, norms, softmax, GELU, adds and pooling not counted (zoo.cost)")


class ZooError(ValueError):
    """A zoo that cannot be used as it is: the message names the file and what is wrong."""


class BudgetError(ValueError):
    """No entry fits the budget; `nearest` holds the entries closest to fitting."""

    def __init__(self, message: str, nearest: list[ZooEntry]) -> None:
        super().__init__(message)
        self.nearest = nearest


@dataclass(frozen=True)
class ZooEntry:
    arch: Arch
    params: int
    flops: int
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    latency: dict[str, float] | None = None  # {"median_ms", "p10_ms", "p90_ms"}

    @property
    def id(self) -> str:
        return self.arch.id

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency["median_ms"]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "arch": self.arch.to_dict(), "params": self.params, "flops": self.flops,
                "top1": self.top1, "top5": self.top5, "loss": self.loss, "latency": self.latency}

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: SearchSpace, where: str) -> ZooEntry:
        try:
            arch = space.validate(Arch.from_dict(d["arch"]))
        except (KeyError, ValueError) as e:
            raise ZooError(f"{where}: entry {d.get('id', '?')} has an invalid arch: {e}") from e
        entry = cls(arch, d.get("params"), d.get("flops"), d.get("top1"), d.get("top5"), d.get("loss"),
                    d.get("latency"))
        expected = (arch.id, params(space, arch), flops(space, arch))
        if (d.get("id"), entry.params, entry.flops) != expected:
            raise ZooError(f"{where}: entry {d.get('id')} says id/params/flops {d.get('id')}/{entry.params}/"
                           f"{entry.flops} but its arch gives {expected[0]}/{expected[1]}/{expected[2]}")
        return entry


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def preprocessing_problem(p: Any, space: SearchSpace) -> str | None:
    """Why a zoo's preprocessing cannot feed its models (the server and exports rely on it), or None."""
    if not isinstance(p, dict):
        return f"preprocessing must be an object, got {p!r}"
    missing = [k for k in ("img_size", "in_chans", "mean", "std") if k not in p]
    if missing:
        return f"preprocessing lacks {', '.join(missing)}"
    if (p["img_size"], p["in_chans"]) != (space.img_size, space.in_chans):
        return (f"preprocessing is for {p['img_size']}px x {p['in_chans']} channels but the space takes "
                f"{space.img_size}px x {space.in_chans}")
    for key in ("mean", "std"):
        v = p[key]
        if not (isinstance(v, list | tuple) and len(v) == space.in_chans
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
            return f"preprocessing {key} must be {space.in_chans} number(s), got {v!r}"
    if min(p["std"]) <= 0:
        return f"preprocessing std must be positive, got {p['std']!r}"
    crop = p.get("crop_pct", 1.0)
    if isinstance(crop, bool) or not isinstance(crop, int | float) or not 0 < crop <= 1:
        return f"preprocessing crop_pct must lie in (0, 1], got {crop!r}"
    if p.get("interpolation", "bicubic") not in INTERPOLATIONS:
        return f"preprocessing interpolation must be one of {', '.join(INTERPOLATIONS)}, got {p['interpolation']!r}"
    return None


def write_zoo(out: str | Path, *, name: str, space: SearchSpace, state: dict[str, torch.Tensor],
              entries: list[ZooEntry], classes: list[str], preprocessing: dict[str, Any],
              weights_dtype: torch.dtype = torch.float32, **extra: Any) -> Path:
    """Write a zoo directory: weights first, `zoo.json` (with their sha256) last, both atomically."""
    out = Path(out)
    if len(classes) != space.num_classes:
        raise ValueError(f"{len(classes)} class names for a space with {space.num_classes} classes")
    if problem := preprocessing_problem(preprocessing, space):
        raise ValueError(problem)
    tensors = {k: v.detach().to("cpu", weights_dtype).contiguous() for k, v in state.items()}
    atomic_write_bytes(out / WEIGHTS, save_safetensors(tensors))
    doc = {"schema_version": SCHEMA_VERSION, "kind": "prezoo.zoo", "name": name,
           "space": space.to_dict(), "space_hash": space.hash, "classes": list(classes),
           "preprocessing": preprocessing, "flops_rule": FLOPS_RULE, **extra,
           "weights": {"file": WEIGHTS, "sha256": sha256_file(out / WEIGHTS), "dtype": str(weights_dtype)},
           "entries": [e.to_dict() for e in entries]}
    atomic_write_text(out / INDEX, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return out


class Zoo:
    """A loaded zoo. The supernet is loaded once, on first use, and shared (thread-safe)."""

    def __init__(self, root: Path, doc: dict[str, Any], space: SearchSpace, entries: list[ZooEntry]) -> None:
        self.root, self.doc, self.space, self.entries = root, doc, space, entries
        self._supernet: ViTSupernet | None = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path) -> Zoo:
        """A zoo directory, or a Hub repo id ('org/name') pulled through the standard Hub cache."""
        path = Path(source)
        if not path.exists():
            from zoo.hub import is_hub_id, pull

            if not is_hub_id(str(source)):
                raise ZooError(f"no zoo at {source}: not a directory and not a Hub repo id like 'org/name'")
            path = pull(str(source))
        index = path / INDEX
        if not index.is_file():
            raise ZooError(f"{path} is not a zoo: {INDEX} is missing")
        doc = read_versioned_json(index, "prezoo.zoo", SCHEMA_VERSION, ZooError)
        try:
            space = SearchSpace.from_dict(doc["space"])
        except (KeyError, ValueError) as e:
            raise ZooError(f"{index}: invalid space: {e}") from e
        if space.hash != doc.get("space_hash"):
            raise ZooError(f"{index}: space_hash {doc.get('space_hash')} does not match its space ({space.hash})")
        if problem := preprocessing_problem(doc.get("preprocessing"), space):
            raise ZooError(f"{index}: {problem}")
        entries = [ZooEntry.from_dict(e, space, str(index)) for e in doc.get("entries", [])]
        if not entries:
            raise ZooError(f"{index} lists no entries")
        weights = path / doc["weights"]["file"]
        if not weights.is_file():
            raise ZooError(f"{weights} is missing (named in {index})")
        digest = sha256_file(weights)
        if digest != doc["weights"]["sha256"]:
            raise ZooError(f"{weights} does not match {index}: sha256 {digest[:16]}… but the index records "
                           f"{doc['weights']['sha256'][:16]}… (truncated, corrupt or replaced)")
        return cls(path, doc, space, entries)

    @property
    def supernet(self) -> ViTSupernet:
        with self._lock:
            if self._supernet is None:
                weights = self.root / self.doc["weights"]["file"]
                try:
                    tensors = load_safetensors(weights.read_bytes())
                except Exception as e:  # safetensors raises its own types for damaged files
                    raise ZooError(f"{weights} is not a readable safetensors file: {e}") from e
                model = ViTSupernet(self.space)
                try:
                    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
                except RuntimeError as e:
                    raise ZooError(f"{weights} does not hold the supernet of space {self.space.name}: {e}") from e
                self._supernet = model.eval()
            return self._supernet

    # -- metadata ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.doc["name"]

    @property
    def classes(self) -> list[str]:
        return self.doc["classes"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.doc["preprocessing"]

    @property
    def checksum(self) -> str:
        """Identity of this zoo's content: its weights' sha256 (the index names them)."""
        return self.doc["weights"]["sha256"]

    def entry(self, entry_id: str) -> ZooEntry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(f"no entry '{entry_id}' in zoo {self.name}; ids: {', '.join(e.id for e in self.entries)}")

    # -- queries -------------------------------------------------------------------------------
    def pareto(self, by: str = "params") -> list[ZooEntry]:
        """Entries no other entry beats on both cost (`by`: params, flops or latency) and top-1."""
        cost = _cost_fn(by)
        scored = [e for e in self.entries if e.top1 is not None and cost(e) is not None]
        front = [e for e in scored
                 if not any(cost(o) <= cost(e) and o.top1 >= e.top1 and (cost(o), o.top1) != (cost(e), e.top1)
                            for o in scored)]
        return sorted(front, key=cost)

    def query(self, max_params: str | float | None = None, max_flops: str | float | None = None,
              max_latency_ms: str | float | None = None) -> ZooEntry:
        """The most accurate entry within every given limit (ties: the smaller one)."""
        limits = {"params": parse_count(max_params, "max_params"), "flops": parse_count(max_flops, "max_flops"),
                  "latency": parse_latency_ms(max_latency_ms)}
        if limits["latency"] is not None and any(e.latency is None for e in self.entries):
            raise BudgetError(f"zoo {self.name} has no measured latency for every entry; "
                              f"run `python -m zoo profile --zoo {self.root}` first", [])

        def excess(e: ZooEntry) -> float:
            """How far over the limits (relative, summed): 0 when it fits."""
            return sum(max(0.0, _cost_fn(k)(e) / v - 1) for k, v in limits.items() if v is not None)

        fits = [e for e in self.entries if excess(e) == 0]
        if fits:
            return max(fits, key=lambda e: (e.top1 if e.top1 is not None else -1, -e.params))
        nearest = sorted(self.entries, key=excess)[:3]
        asked = ", ".join(f"max_{k}={human(v) if k != 'latency' else f'{v:g}ms'}"
                          for k, v in limits.items() if v is not None) or "no limit"
        options = "; ".join(f"{e.id} ({human(e.params)} params, {human(e.flops)} FLOPs"
                            + (f", {e.latency_ms:.2f} ms" if e.latency_ms is not None else "") + ")"
                            for e in nearest)
        raise BudgetError(f"no entry of zoo {self.name} fits {asked}; nearest: {options}", nearest)

    def subnet(self, entry_or_arch: ZooEntry | Arch | str) -> ViT:
        """The standalone model (exact weights, eval mode) of an entry, an entry id, or any arch."""
        if isinstance(entry_or_arch, str):
            arch = self.entry(entry_or_arch).arch
        elif isinstance(entry_or_arch, ZooEntry):
            arch = entry_or_arch.arch
        else:
            arch = self.space.validate(entry_or_arch)
        return self.supernet.extract(arch)

    def with_latency(self, latencies: dict[str, dict[str, float]], protocol: dict[str, Any]) -> None:
        """Record measured latencies (by entry id) in the index, rewriting `zoo.json` atomically."""
        self.entries = [ZooEntry(e.arch, e.params, e.flops, e.top1, e.top5, e.loss, latencies.get(e.id, e.latency))
                        for e in self.entries]
        self.doc = {**self.doc, "latency_protocol": protocol, "entries": [e.to_dict() for e in self.entries]}
        atomic_write_text(self.root / INDEX, json.dumps(self.doc, indent=1, ensure_ascii=False) + "\n")


def _cost_fn(by: str):
    fns = {"params": lambda e: e.params, "flops": lambda e: e.flops, "latency": lambda e: e.latency_ms}
    if by not in fns:
        raise ValueError(f"cost must be one of {sorted(fns)}, got {by!r}")
    return fns[by]
