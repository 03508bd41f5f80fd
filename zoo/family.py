"""Model families: what the zoo needs to know about one kind of weight-sharing supernet, in one small interface.

A zoo holds the supernet of one family, named by zoo.json's optional top-level "family" (absent: "vit", so every
zoo written before families existed loads unchanged). The store, its index checks, queries and ONNX export reach a
family's space, archs, cost model and modules only through `Family`; each family keeps its own code where it is
(`zoo.space`, `zoo.arch`, `zoo.cost`, `zoo.supernet` for the ViT; `zoo.hytra` for HyTra; each one's Hugging Face / timm
class in `zoo.pretrained`) and is listed here once. Exports, the server, the UI and `python -m zoo spaces` describe a
model through its `Family` as well.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from zoo import cost, hytra, space
from zoo.arch import Arch as ViTArch
from zoo.io import quote
from zoo.pretrained import PreZooHub, PreZooHyTra, PreZooViT
from zoo.space import BUILTIN_SPACES, SearchSpace, read_space_file
from zoo.supernet import ViTSupernet

DEFAULT_FAMILY = "vit"  # what a zoo.json without "family" holds


class Arch(Protocol):
    """One architecture of a family: immutable and hashable, with a canonical JSON and an id derived from it."""

    family: str  # its family's name (a class attribute)

    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...

    def describe(self) -> str:
        """Its layers in a few words, for tables."""
        ...


class Space(Protocol):
    """A family's search space: the fields the store checks a zoo's classes and preprocessing against."""

    family: str  # its family's name (a class attribute: no part of the space's dict or hash)
    name: str
    img_size: int
    in_chans: int
    num_classes: int

    @property
    def hash(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def validate(self, arch: Any) -> Any:
        """`arch` if it belongs to the space, else ValueError naming what breaks which rule."""
        ...


class Supernet(Protocol):
    """`supernet(x, arch)` runs one path with no hidden state; `extract(arch)` copies it out as a standalone module
    (eval mode) that exports on its own (`.space`, `.arch` and `forward(x)`)."""

    space: Any  # its Space

    def __call__(self, x: Tensor, arch: Any) -> Tensor: ...

    def extract(self, arch: Any) -> nn.Module: ...

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> Any: ...

    def eval(self) -> Supernet: ...


@dataclass(frozen=True)
class Family:
    """One kind of supernet, as plain functions. `params` equals the extracted module's numel and `flops` its
    multiply-accumulates as FlopCounterMode counts them (halved), in closed form: the index is checked against them
    without building a model. `flops_rule` says in words what `flops` counts (zoo.json's flops_rule).

    What exports, the server and the UI show of a model comes from here too: `title` and `noun` name its kind,
    `origin` where its architectures come from, `describe_arch` its global shape in a sentence, `layer_rows` one row
    per layer under `layer_headers`, `describe_choices` and `cost_range` a built-in space; `pretrained` is its Hugging
    Face / timm class (zoo.pretrained), which loads an exported folder back.

    Training (`training`) differs where the families do: `sampling_group` is what PreNAS Eq. 11 balances the
    preferred sampler over (the ViT's (embed, depth) groups; HyTra's preferred paths are one group, spec 7 item 2),
    `random_arch` a uniform draw from the whole space, `extreme_archs` the (smallest, largest) arch that sandwich
    training adds. `calibrate_bn` says that a path's BatchNorm needs its own statistics (spec 7, "BatchNorm"): the
    supernet's are shared by every path and fit none, so evaluation recalibrates each extracted path on training
    images and a zoo stores each entry's statistics beside the supernet (`zoo.store`). A ViT path (LayerNorm only)
    is the supernet's slice as it is."""

    name: str
    space_from_dict: Callable[[Any], Space]  # ValueError (or TypeError) naming the field
    arch_from_dict: Callable[[Any], Arch]  # ValueError naming the field; the space's rules are `Space.validate`
    spaces: Mapping[str, Space]  # the built-in spaces, by name
    params: Callable[[Any, Any], int]  # (space, arch)
    flops: Callable[[Any, Any], int]  # (space, arch)
    supernet: Callable[..., Supernet]  # (space, drop_path_rate=0.0): freshly initialised; the zoo loads its weights
    flops_rule: str
    title: str  # "PreZoo <title> `<id>`"
    noun: str  # what one model is, in words (plural: + "s")
    origin: str  # what an entry's architecture is, for cards (plural: + "s")
    describe_arch: Callable[[Any, Any], str]  # (space, arch): one sentence
    layer_headers: tuple[str, ...]
    layer_rows: Callable[[Any, Any], list[list]]  # (space, arch): one row per layer, under layer_headers
    describe_choices: Callable[[Any], str]  # (space): its choices and fixed options, indented lines
    cost_range: Callable[[Any], tuple[tuple[int, int], tuple[int, int]]]  # (space): (params lo, hi), (FLOPs lo, hi)
    pretrained: type[PreZooHub]
    sampling_group: Callable[[Any], Hashable]  # (arch): sortable
    random_arch: Callable[[Any, random.Random], Any]  # (space, rng)
    extreme_archs: Callable[[Any], tuple[Any, Any]]  # (space): (smallest, largest) by params
    calibrate_bn: bool


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("vit", SearchSpace.from_dict, ViTArch.from_dict, BUILTIN_SPACES, cost.params, cost.flops, ViTSupernet,
           cost.FLOPS_RULE, title="ViT", noun="vision transformer", origin="PreNAS preferred architecture",
           describe_arch=space.describe_arch, layer_headers=space.LAYER_HEADERS, layer_rows=space.layer_rows,
           describe_choices=space.describe_choices, cost_range=cost.cost_range, pretrained=PreZooViT,
           sampling_group=lambda a: (a.embed_dim, a.depth), random_arch=space.random_arch,
           extreme_archs=lambda s: (s.smallest_arch(), s.largest_arch()), calibrate_bn=False),
    Family("hytra", hytra.HyTraSpace.from_dict, hytra.HyTraArch.from_dict, hytra.BUILTIN_SPACES, hytra.params,
           hytra.flops, hytra.HyTraSupernet, hytra.FLOPS_RULE, title="HyTra", noun="hybrid CNN/transformer",
           origin="path of BossNAS's hybrid space", describe_arch=hytra.describe_arch,
           layer_headers=hytra.LAYER_HEADERS, layer_rows=hytra.layer_rows, describe_choices=hytra.describe_choices,
           cost_range=hytra.cost_range, pretrained=PreZooHyTra, sampling_group=lambda a: (),
           random_arch=hytra.random_arch, extreme_archs=hytra.extreme_archs, calibrate_bn=True),
)}


def get_family(name: Any) -> Family:
    """The family called `name`, or ValueError naming the known ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"unknown model family {quote(name)}; known families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(doc: Mapping[str, Any]) -> Family:
    """The family of a parsed zoo.json: its "family" field, "vit" when it has none."""
    return get_family(doc.get("family", DEFAULT_FAMILY))


def space_by_name(name: str) -> tuple[Family, Space]:
    """A built-in space of any family by name, or a space file (YAML/JSON) whose optional "family" field names its
    family (absent: "vit", so every ViT space file reads as before)."""
    builtin = {n: (f, s) for f in FAMILIES.values() for n, s in f.spaces.items()}
    if name in builtin:
        return builtin[name]
    if Path(name).is_file():
        doc = read_space_file(name)
        if not isinstance(doc, dict):
            raise ValueError(f"search space file {name} must hold a mapping, got {type(doc).__name__}")
        family = family_of(doc)
        return family, family.space_from_dict({k: v for k, v in doc.items() if k != "family"})
    raise ValueError(f"unknown search space '{name}': not a built-in ({', '.join(builtin)}) and not a YAML/JSON file")
