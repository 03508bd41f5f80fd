"""One ViT architecture: immutable, hashable, canonical JSON and a short stable id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from zoo.records import positive_int, positive_number

IsomerKey = tuple[int, int, tuple[int, ...], tuple[float, ...]]


@dataclass(frozen=True)
class ViTArch:
    """Embed width and depth (global), heads and MLP ratio (per layer).

    Only shape rules are checked here; membership in a search space is `ViTSpace.validate`.
    """

    family: ClassVar[str] = "vit"  # its `zoo.family` entry
    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        positive_int("embed_dim", self.embed_dim)
        positive_int("depth", self.depth)
        for name in ("num_heads", "mlp_ratios"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                raise ValueError(f"{name} must be a list with one value per layer, got {values!r}")
            if len(values) != self.depth:
                raise ValueError(f"{name} has {len(values)} values but depth is {self.depth}: "
                                 f"give one value per layer")
        heads = tuple(positive_int(f"num_heads[{i}]", h) for i, h in enumerate(self.num_heads))
        ratios = tuple(positive_number(f"mlp_ratios[{i}]", r) for i, r in enumerate(self.mlp_ratios))
        object.__setattr__(self, "num_heads", heads)
        object.__setattr__(self, "mlp_ratios", ratios)

    # -- derived per-layer widths (the one place that defines them) ---------------------------
    def qkv_dim(self, layer: int, head_dim: int) -> int:
        """Width of q (and of k, v) in a layer: heads x head dim."""
        return self.num_heads[layer] * head_dim

    def mlp_dim(self, layer: int) -> int:
        """Hidden width of a layer's MLP: floor(embed x ratio), as AutoFormer and timm compute it."""
        return int(self.embed_dim * self.mlp_ratios[layer])

    # -- isomers -------------------------------------------------------------------------------
    @property
    def isomer_key(self) -> IsomerKey:
        """Archs with the same key have the same embed, depth and the same multisets of per-layer
        heads and ratios, hence the same parameter count and FLOPs: they differ only in layout."""
        return (self.embed_dim, self.depth, tuple(sorted(self.num_heads)), tuple(sorted(self.mlp_ratios)))

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "depth": self.depth,
                "num_heads": list(self.num_heads), "mlp_ratios": list(self.mlp_ratios)}

    @classmethod
    def from_dict(cls, d: Any) -> ViTArch:
        if not isinstance(d, dict):
            raise ValueError(f"an architecture must be a mapping, got {type(d).__name__}")
        fields = ("embed_dim", "depth", "num_heads", "mlp_ratios")
        unknown = sorted(set(d) - set(fields))
        missing = [f for f in fields if f not in d]
        if unknown or missing:
            raise ValueError(f"architecture fields must be exactly {list(fields)}; "
                             f"missing {missing}, unknown {unknown}")
        return cls(**{f: d[f] for f in fields})

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, ratios as floats. Equal archs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ViTArch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"architecture JSON is not valid JSON: {e}") from e
        return cls.from_dict(data)

    @property
    def id(self) -> str:
        """Short, stable, human-readable id, e.g. 'e192-d12-1a2b3c4d'."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"e{self.embed_dim}-d{self.depth}-{digest}"

    def describe(self) -> str:
        """Compact layout for tables: heads and ratios per layer."""
        ratios = ",".join(f"{r:g}" for r in self.mlp_ratios)
        return f"E{self.embed_dim} L{self.depth} h[{','.join(map(str, self.num_heads))}] r[{ratios}]"
