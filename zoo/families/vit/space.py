"""ViT search spaces as data: choice lists plus the fixed model options, YAML/JSON round trip; the built-in spaces;
uniform sampling, AutoFormer's mutation and crossover and the ENAS controller's decisions; what an arch looks like
in words and tables."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from zoo.families.vit.arch import ViTArch
from zoo.records import SpaceRecord

POOLS = ("avg", "cls")


def _choices(name: str, values: Any, kind: type) -> tuple:
    """Normalise a choice list to a sorted tuple of unique positive numbers of `kind`."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"search space field '{name}' must be a non-empty list, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
            raise ValueError(f"search space field '{name}' must hold {kind.__name__}s, got {v!r}")
        if v <= 0:
            raise ValueError(f"search space field '{name}' must hold positive values, got {v!r}")
        out.append(kind(v))
    if len(set(out)) != len(out):
        raise ValueError(f"search space field '{name}' has duplicate values: {values!r}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class ViTSpace(SpaceRecord):
    """A ViT search space: per-layer choices (heads, MLP ratio) and global ones (embed, depth).

    The super sizes default to the largest choices; the official AutoFormer spaces set them
    larger (e.g. Tiny's 256-wide supernet for embeds up to 240) so their checkpoints fit.
    """

    family: ClassVar[str] = "vit"  # its `zoo.family` entry (not a field: no part of the dict or the hash)
    name: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    head_dim: int = 64
    patch_size: int = 16
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    rel_pos: bool = True
    pool: str = "avg"
    norm_eps: float = 1e-6
    super_embed_dim: int | None = None
    super_depth: int | None = None
    super_num_heads: int | None = None
    super_mlp_ratio: float | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("embed_dims", _choices("embed_dims", self.embed_dims, int))
        set_("depths", _choices("depths", self.depths, int))
        set_("num_heads", _choices("num_heads", self.num_heads, int))
        set_("mlp_ratios", _choices("mlp_ratios", self.mlp_ratios, float))
        for k in ("head_dim", "patch_size", "img_size", "in_chans", "num_classes"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"search space field '{k}' must be a positive int, got {v!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if isinstance(self.norm_eps, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                object.__setattr__(self, "norm_eps", float(self.norm_eps))
            except ValueError:
                pass
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) or self.norm_eps <= 0:
            raise ValueError(f"search space field 'norm_eps' must be a positive number, got {self.norm_eps!r}")
        if self.pool not in POOLS:
            raise ValueError(f"search space field 'pool' must be one of {POOLS}, got {self.pool!r}")
        if not isinstance(self.rel_pos, bool):
            raise ValueError(f"search space field 'rel_pos' must be true or false, got {self.rel_pos!r}")
        defaults = {"super_embed_dim": max(self.embed_dims), "super_depth": max(self.depths),
                    "super_num_heads": max(self.num_heads), "super_mlp_ratio": max(self.mlp_ratios)}
        for k, largest in defaults.items():
            v = getattr(self, k)
            set_(k, largest if v is None else type(largest)(v))
            if getattr(self, k) < largest:
                raise ValueError(f"search space field '{k}' = {v} is smaller than the largest choice {largest}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Patch tokens plus the class token (which exists even with average pooling)."""
        return self.grid_size**2 + 1

    def super_arch(self) -> ViTArch:
        """The supernet's own shape: every tensor at its super size."""
        d = self.super_depth
        return ViTArch(self.super_embed_dim, d, (self.super_num_heads,) * d, (self.super_mlp_ratio,) * d)

    def largest_arch(self) -> ViTArch:
        d = max(self.depths)
        return ViTArch(max(self.embed_dims), d, (max(self.num_heads),) * d, (max(self.mlp_ratios),) * d)

    def smallest_arch(self) -> ViTArch:
        d = min(self.depths)
        return ViTArch(min(self.embed_dims), d, (min(self.num_heads),) * d, (min(self.mlp_ratios),) * d)

    # -- validation ------------------------------------------------------------------------------
    def validate(self, arch: ViTArch) -> ViTArch:
        """Raise ValueError naming the offending field and the allowed values; return `arch`."""
        if not isinstance(arch, ViTArch):
            raise ValueError(f"expected a ViTArch, got {type(arch).__name__}")
        if arch.embed_dim not in self.embed_dims:
            raise ValueError(f"embed_dim {arch.embed_dim} is not allowed in space '{self.name}'; "
                             f"choose one of {list(self.embed_dims)}")
        if arch.depth not in self.depths:
            raise ValueError(f"depth {arch.depth} is not allowed in space '{self.name}'; "
                             f"choose one of {list(self.depths)}")
        for fname, values, allowed in (("num_heads", arch.num_heads, self.num_heads),
                                       ("mlp_ratios", arch.mlp_ratios, self.mlp_ratios)):
            for i, v in enumerate(values):
                if v not in allowed:
                    raise ValueError(f"{fname}[{i}] = {v} is not allowed in space '{self.name}'; "
                                     f"choose one of {list(allowed)}")
        return arch


def random_arch(space: ViTSpace, rng: random.Random) -> ViTArch:
    """AutoFormer's uniform sampling: a depth, an embed, then each layer's heads and MLP ratio, all uniform."""
    depth = rng.choice(space.depths)
    return ViTArch(rng.choice(space.embed_dims), depth, tuple(rng.choice(space.num_heads) for _ in range(depth)),
                   tuple(rng.choice(space.mlp_ratios) for _ in range(depth)))


def build_arch(space: ViTSpace, choose: Callable[[str, tuple], Any]) -> ViTArch:
    """The arch of `choose`'s decisions (`Family.build_arch`): "depth", "embed_dim", then per layer i "heads{i}" and
    "mlp_ratio{i}"; a shallower arch never makes its deeper layers' decisions."""
    depth = choose("depth", space.depths)
    embed = choose("embed_dim", space.embed_dims)
    layers = [(choose(f"heads{i}", space.num_heads), choose(f"mlp_ratio{i}", space.mlp_ratios)) for i in range(depth)]
    return ViTArch(embed, depth, tuple(h for h, _ in layers), tuple(r for _, r in layers))


def mutate(space: ViTSpace, a: ViTArch, rng: random.Random, s_prob: float, m_prob: float) -> ViTArch:
    """AutoFormer's mutation: depth and embed redrawn with probability `s_prob`, then each layer's heads and ratio
    with `m_prob` (layers a deeper arch adds are drawn anew)."""
    depth = rng.choice(space.depths) if rng.random() < s_prob else a.depth
    embed = rng.choice(space.embed_dims) if rng.random() < s_prob else a.embed_dim
    heads = [a.num_heads[i] if i < a.depth else rng.choice(space.num_heads) for i in range(depth)]
    ratios = [a.mlp_ratios[i] if i < a.depth else rng.choice(space.mlp_ratios) for i in range(depth)]
    heads = [rng.choice(space.num_heads) if rng.random() < m_prob else h for h in heads]
    ratios = [rng.choice(space.mlp_ratios) if rng.random() < m_prob else r for r in ratios]
    return ViTArch(embed, depth, tuple(heads), tuple(ratios))


def crossover(space: ViTSpace, a: ViTArch, b: ViTArch, rng: random.Random) -> ViTArch | None:
    """Each gene (embed, every layer's heads, every layer's ratio) from either parent, as AutoFormer; parents of
    different depths give none."""
    if a.depth != b.depth:
        return None
    return ViTArch(rng.choice([a.embed_dim, b.embed_dim]), a.depth,
                   tuple(rng.choice(pair) for pair in zip(a.num_heads, b.num_heads, strict=True)),
                   tuple(rng.choice(pair) for pair in zip(a.mlp_ratios, b.mlp_ratios, strict=True)))


# -- what a ViT of a space looks like, in words and tables (model cards, the UI, `python -m zoo spaces`) ---------------
LAYER_HEADERS = ("layer", "heads", "qkv width", "MLP ratio", "MLP width")


def layer_rows(space: ViTSpace, arch: ViTArch) -> list[list]:
    """One row per layer, under LAYER_HEADERS."""
    return [[i, h, arch.qkv_dim(i, space.head_dim), r, arch.mlp_dim(i)]
            for i, (h, r) in enumerate(zip(arch.num_heads, arch.mlp_ratios, strict=True))]


def describe_arch(space: ViTSpace, arch: ViTArch) -> str:
    """The global shape of `arch` in one sentence (its layers are `layer_rows`)."""
    return (f"Embed {arch.embed_dim}, depth {arch.depth}, head dim {space.head_dim}, patch {space.patch_size}, "
            f"relative position {'on' if space.rel_pos else 'off'}, {space.pool} pooling.")


def describe_choices(space: ViTSpace) -> str:
    """The space's choices and fixed options, two indented lines."""
    ratios = ", ".join(f"{r:g}" for r in space.mlp_ratios)
    return (f"  embed {list(space.embed_dims)}  depth {list(space.depths)}  "
            f"heads {list(space.num_heads)} x {space.head_dim}  mlp ratio [{ratios}]\n"
            f"  input {space.in_chans}x{space.img_size}² patch {space.patch_size}  "
            f"classes {space.num_classes}  rel-pos {'on' if space.rel_pos else 'off'}  pool {space.pool}")


def _autoformer(name: str, embeds, depths, heads, ratios, sup: tuple[int, int, int, float]) -> ViTSpace:
    return ViTSpace(
        name=name, embed_dims=embeds, depths=depths, num_heads=heads, mlp_ratios=ratios,
        head_dim=64, patch_size=16, img_size=224, in_chans=3, num_classes=1000, rel_pos=True,
        pool="avg", norm_eps=1e-5, super_embed_dim=sup[0], super_depth=sup[1],
        super_num_heads=sup[2], super_mlp_ratio=sup[3],
        description=f"Official AutoFormer/PreNAS search space ({name}); ImageNet 224².")


BUILTIN_SPACES: dict[str, ViTSpace] = {
    s.name: s
    for s in (
        _autoformer("autoformer-tiny", (192, 216, 240), (12, 13, 14), (3, 4), (3.5, 4.0), (256, 14, 4, 4.0)),
        _autoformer("autoformer-small", (320, 384, 448), (13, 14), (5, 6, 7), (3.0, 3.5, 4.0), (448, 14, 7, 4.0)),
        _autoformer("autoformer-base", (528, 576, 624), (14, 15, 16), (9, 10), (3.0, 3.5, 4.0), (640, 16, 10, 4.0)),
        ViTSpace(
            name="mini", embed_dims=(64, 80, 96), depths=(4, 5, 6), num_heads=(2, 3, 4),
            mlp_ratios=(2.0, 3.0, 4.0), head_dim=16, patch_size=4, img_size=28, in_chans=1,
            num_classes=10, rel_pos=False, pool="avg", norm_eps=1e-6,
            description="The first CPU space for Fashion-MNIST (28², 1 channel, 10 classes): 0.15-0.60M parameters."),
        ViTSpace(
            name="ladder", embed_dims=(16, 32, 64, 96, 128), depths=(1, 2, 3, 4, 5, 6), num_heads=(1, 2, 4),
            mlp_ratios=(1.0, 2.0, 4.0), head_dim=32, patch_size=4, img_size=28, in_chans=1,
            num_classes=10, rel_pos=False, pool="avg", norm_eps=1e-6,
            description="CPU default for Fashion-MNIST (28², 1 channel, 10 classes): 4k-1.2M parameters, "
                        "from one thin layer to six wide ones, so that a budget buys accuracy."),
        ViTSpace(
            name="isomer", embed_dims=(64,), depths=(6,), num_heads=(1, 2, 3), mlp_ratios=(1.0, 2.0, 3.0),
            head_dim=32, patch_size=4, img_size=28, in_chans=1, num_classes=10, rel_pos=False, pool="avg",
            norm_eps=1e-6,
            description="A study space (PreNAS Appendix A, Case 1): one embed, one depth and evenly spaced choices, "
                        "so archs of equal params differ only in how heads and MLP width sit across the six layers."),
    )
}
# What a selector buckets each built-in space's archs by parameters into (training.preferred.Buckets): the official
# settings (spec §3, margin 1M/5M/12M), a 0.05M grid for `mini`, a geometric one for `ladder`.
DEFAULT_BUCKETS: dict[str, dict[str, float]] = {
    "autoformer-tiny": {"low": 5e6, "high": 12e6, "width": 1e6},
    "autoformer-small": {"low": 13e6, "high": 33e6, "width": 5e6},
    "autoformer-base": {"low": 30e6, "high": 70e6, "width": 12e6},
    "mini": {"low": 0.1e6, "high": 0.65e6, "width": 0.05e6},
    "ladder": {"low": 1e4, "high": 1.29e6, "ratio": 2**0.5},  # 14 buckets, two per octave: 10k, 14k, 20k ... 1.28M
}


def get_space(name_or_path: str | Path | ViTSpace) -> ViTSpace:
    """A built-in space by name, or a space file (YAML/JSON) by path."""
    if isinstance(name_or_path, ViTSpace):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN_SPACES:
        return BUILTIN_SPACES[key]
    if Path(key).is_file():
        return ViTSpace.load(key)
    raise ValueError(f"unknown search space '{key}': not a built-in ({', '.join(BUILTIN_SPACES)}) "
                     f"and not a YAML/JSON file")
