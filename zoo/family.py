"""Model families as plug-ins: what every layer needs of one kind of weight-sharing supernet (`Family` and the
protocols of its space, arch, supernet and standalone model), and the lookups. Nothing family-specific lives here.

A family is one module or package that builds its `Family` and calls `register_family` where it is defined, as timm's
models register themselves: the built-in ones are the modules of `zoo.families` (the ViT, HyTra), imported on the
first lookup, so `import zoo` stays cheap and a new built-in family is one new module there; any other module may
register one too (tests/test_plugin_family.py does). A zoo holds the supernet of one family, named by zoo.json's
optional top-level "family" (absent: "vit", so every zoo written before families existed loads unchanged); its
archs and spaces name their family (`Arch.family`, `Space.family`), and an exported folder by its timm name.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
import sys
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from zoo.io import quote
from zoo.records import read_space_file

if TYPE_CHECKING:  # importing zoo.family loads no torch: the families do
    from torch import Tensor, nn

    from zoo.pretrained import PreZooHub

DEFAULT_FAMILY = "vit"  # what a zoo.json without "family" holds
BUILTIN = "zoo.families"  # every module of this package is a family, imported on the first lookup
Chooser = Callable[[str, tuple], Any]  # (decision name, its options) -> one of the options


class Arch(Protocol):
    """One architecture of a family: immutable and hashable, with a canonical JSON and an id derived from it. The id
    names entries in URLs and files: `[A-Za-z0-9][A-Za-z0-9._-]{0,95}`."""

    family: ClassVar[str]  # its family's name

    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...

    def describe(self) -> str:
        """Its layers in a few words, for tables."""
        ...


class Space(Protocol):
    """A family's search space: the fields the store checks a zoo's classes and preprocessing against, the input an
    export traces, and the hash that ties weights, preferred sets and zoos to it."""

    family: ClassVar[str]  # its family's name (no part of the space's dict or hash)
    name: str
    description: str
    img_size: int
    in_chans: int
    num_classes: int

    @property
    def hash(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...

    def validate(self, arch: Any) -> Any:
        """`arch` if it belongs to the space, else ValueError naming what breaks which rule."""
        ...


class Model(Protocol):
    """A standalone path (`Supernet.extract`, or its family's Hub class loading an export): what is trained, exported
    (ONNX, safetensors with config.json: `zoo.pretrained`), served and fine-tuned. timm's classifier attributes, and
    what it is to timm (`timm_name`, `first_conv`) and in its self-description (`family`, `space`, `arch`)."""

    family: ClassVar[str]
    timm_name: ClassVar[str]
    first_conv: ClassVar[str]
    space: Any  # its Space, with this model's class count
    arch: Any
    num_classes: int
    num_features: int
    in_chans: int
    global_pool: str

    def __call__(self, x: Tensor) -> Tensor: ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None: ...


class Supernet(Protocol):
    """`supernet(x, arch)` runs one path with no hidden state; `extract(arch)` copies it out as a standalone `Model`
    (eval mode). Trained, saved and loaded as a plain module (`state_dict`)."""

    space: Any  # its Space

    def __call__(self, x: Tensor, arch: Any) -> Tensor: ...

    def extract(self, arch: Any) -> nn.Module: ...

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> Any: ...

    def eval(self) -> Supernet: ...


class ExpectedParams(Protocol):
    """E[params] of the arch drawn from a family's decisions taken independently with these probabilities, exact and
    differentiable in them (a 0-dim float64 tensor), and each decision's cheapest option (its index)."""

    def __call__(self, probs: Mapping[str, Tensor]) -> Tensor: ...

    def cheapest(self, names: Mapping[str, tuple]) -> dict[str, int]: ...


@dataclass(frozen=True)
class Relaxation:
    """What a differentiable search (`python -m training darts`) needs of a family whose archs are built from named
    decisions (`Family.build_arch`): `decisions` (space) every name with more than one option, with its options;
    `expected_params` (space) its `ExpectedParams`; `free_share` (space, probs) the probability of the
    parameter-free choices DARTS collapses towards (None: the family has none). Its supernet takes the drawn
    decisions' one-hot values, `supernet(x, arch, gates)`, and multiplies each into the part its decision chose."""

    decisions: Callable[[Any], dict[str, tuple]]
    expected_params: Callable[[Any], ExpectedParams]
    free_share: Callable[[Any, Mapping[str, Tensor]], float] | None = None


@dataclass(frozen=True)
class Family:
    """One kind of supernet, as plain functions. `params` equals the extracted module's numel and `flops` its
    multiply-accumulates as FlopCounterMode counts them (halved), in closed form: the index is checked against them
    without building a model. `flops_rule` says in words what `flops` counts (zoo.json's flops_rule).

    What exports, the server and the UI show of a model comes from here too: `title` and `noun` name its kind,
    `origin` where its architectures come from, `describe_arch` its global shape in a sentence, `layer_rows` one row
    per layer under `layer_headers`, `describe_choices` and `cost_range` a space; `pretrained` is its Hugging Face /
    timm class (a `Model` and a `zoo.pretrained.PreZooHub`), which loads an exported folder back and fine-tunes.

    Training (`training`) differs where the families do: `sampling_group` is what PreNAS Eq. 11 balances the
    preferred sampler over (the ViT's (embed, depth) groups; HyTra's preferred paths are one group, spec 7 item 2),
    `random_arch` a uniform draw from the whole space, `extreme_archs` the (smallest, largest) arch that sandwich
    training adds. `calibrate_bn` says that a path's BatchNorm needs its own statistics (spec 7, "BatchNorm"): the
    supernet's are shared by every path and fit none, so evaluation recalibrates each extracted path on training
    images and a zoo stores each entry's statistics beside the supernet (`zoo.store`). A ViT path (LayerNorm only)
    is the supernet's slice as it is. `selectors` are the `python -m training` commands that pick its preferred
    archs ("select": PreNAS's zero-cost selector; "bossnas"), bucketing a built-in space by params as
    `default_buckets` says (`training.preferred.Buckets` arguments, by space name; other spaces get a grid over the
    cost range). `mutate` (space, arch, rng, s_prob, m_prob: global and per-layer probabilities) and `crossover`
    (space, a, b, rng: None when the parents do not combine) serve the evolutionary searches (`training.search`);
    a family without them is searched at random only. `build_arch` (space, choose) makes an arch from its choices as
    a sequence of named categorical decisions, each `choose(name, options)` returning one of `options`, in order, so
    that later decisions may depend on earlier ones (a depth decides how many layers choose); a name always comes
    with the same options. It serves the ENAS-style controller (one learned categorical per name); a family without
    it is not searched by it. `decisions_of` (space, arch) is its inverse, the choice made at every name that builds
    `arch`: what a learned policy's (ENAS's, DARTS's) probability of an arch is read from. `relaxation` is what the
    differentiable search needs (None: it cannot search the family)."""

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
    calibrate_bn: bool = False
    selectors: tuple[str, ...] = ()
    default_buckets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    mutate: Callable[[Any, Any, random.Random, float, float], Any] | None = None
    crossover: Callable[[Any, Any, Any, random.Random], Any | None] | None = None
    build_arch: Callable[[Any, Chooser], Any] | None = None
    decisions_of: Callable[[Any, Any], dict[str, Any]] | None = None
    relaxation: Relaxation | None = None


class Registry(Mapping[str, Family]):
    """Every registered family by name, the built-in ones imported on the first read; the default family comes first,
    then the others as they registered."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._loaded = False

    def _load_builtins(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: a family whose import reads the registry gets what is registered so far
        try:
            for module in pkgutil.iter_modules(importlib.import_module(BUILTIN).__path__, BUILTIN + "."):
                importlib.import_module(module.name)
        except BaseException:
            self._loaded = False
            raise

    def __getitem__(self, name: str) -> Family:
        self._load_builtins()
        return self._families[name]

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(sorted(self._families, key=lambda name: name != DEFAULT_FAMILY))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._families)

    def add(self, family: Family) -> None:
        if family.name in self._families:
            raise ValueError(f"a model family named {family.name!r} is already registered")
        self._families[family.name] = family


FAMILIES = Registry()


def register_family(family: Family) -> Family:
    """Make `family` known by its name (once), and its Hub class a timm architecture when timm is loaded (else
    `zoo.timm_registration` does it when timm is). Call it where the family is defined."""
    strangers = [n for n, s in family.spaces.items() if s.family != family.name]
    if strangers or family.pretrained.family != family.name:
        raise ValueError(f"family {family.name!r}: its spaces ({', '.join(strangers) or 'all fine'}) and its Hub "
                         f"class ({family.pretrained.family!r}) must name it as their family")
    FAMILIES.add(family)
    if "timm" in sys.modules:
        from zoo.pretrained import register_in_timm

        register_in_timm(family.pretrained)
    return family


def get_family(name: Any) -> Family:
    """The family called `name`, or ValueError naming the known ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"unknown model family {quote(name)}; known families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(doc: Mapping[str, Any]) -> Family:
    """The family of a parsed zoo.json (or preferred.json): its "family" field, "vit" when it has none."""
    return get_family(doc.get("family", DEFAULT_FAMILY))


def family_of_config(config: Mapping[str, Any]) -> Family:
    """The family of an exported folder's config.json, by its timm `architecture`; ValueError naming the known ones."""
    name = config.get("architecture")
    found = [f for f in FAMILIES.values() if f.pretrained.timm_name == name]
    if not found:
        known = ", ".join(f.pretrained.timm_name for f in FAMILIES.values())
        raise ValueError(f"architecture {quote(name)} is no PreZoo family's; known: {known}")
    return found[0]


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
