"""MBConv search spaces and architectures as data: the space's choice lists and rules, an arch's stages of blocks,
their JSON and ids; the built-in spaces.

A path is a stem (3x3 conv at full resolution), stages of blocks, global average pooling and a linear head. Each
stage has one width (its blocks' output channels) and 1 .. `depths[s]` blocks: a stage's first block always runs
(with the stage's stride), the later ones are skippable, as OFA's elastic depth keeps a stage's first d blocks. Each
block picks an op, "mbconv" (inverted residual: 1x1 expand, k x k depthwise, optional squeeze-excite, 1x1 project),
"fused" (fused-MBConv, EfficientNetV2: k x k dense expand, 1x1 project) or "residual" (two dense 3x3 convs,
ResNet's basic block), and that op's kernel and expansion.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zoo.records import SpaceRecord

MBCONV, FUSED, RESIDUAL = "mbconv", "fused", "residual"
OPS = (MBCONV, FUSED, RESIDUAL)
MAX_WIDTH, MAX_KERNEL, MAX_EXPANSION, MAX_DEPTH, MAX_STAGES = 4096, 11, 16, 32, 8  # bounds of a space file's fields


def _int_choices(name: str, values: Any, high: int, odd: bool = False) -> tuple[int, ...]:
    """A choice list as a sorted tuple of unique ints in [1, high] (odd ones for kernels)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"search space field '{name}' must be a non-empty list, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high or (odd and v % 2 == 0):
            kind = "odd ints" if odd else "ints"
            raise ValueError(f"search space field '{name}' must hold {kind} in [1, {high}], got {v!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"search space field '{name}' has duplicate values: {list(values)!r}")
    return tuple(sorted(values))


def _int_field(name: str, v: Any, high: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
        raise ValueError(f"search space field '{name}' must be an int in [1, {high}], got {v!r}")
    return v


@dataclass(frozen=True)
class MBConvSpace(SpaceRecord):
    """Per stage: the width choices, the most blocks and the first block's stride; per block: the ops and each op's
    kernels and expansions. A residual block's kernel is 3 and its expansion 1 (its inner width is its output's);
    squeeze-excite is an MBConv choice (`se`), over `in // se_reduction` channels as in EfficientNet."""

    family: ClassVar[str] = "mbconv"  # its `zoo.family` entry (not a field: no part of the dict or the hash)
    name: str
    widths: tuple[tuple[int, ...], ...]
    depths: tuple[int, ...]
    strides: tuple[int, ...] | None = None  # per stage (default: 1, then 2: each later stage halves the resolution)
    stem_channels: int = 16
    ops: tuple[tuple[str, ...], ...] | None = None  # per stage (default: every op everywhere)
    kernels: tuple[int, ...] = (3, 5, 7)  # MBConv's depthwise kernels
    expansions: tuple[int, ...] = (3, 6)  # MBConv's
    fused_kernels: tuple[int, ...] = (3,)
    fused_expansions: tuple[int, ...] = (1, 3)
    se: tuple[bool, ...] = (False, True)  # MBConv's squeeze-excite choices
    se_reduction: int = 4
    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)
        if not isinstance(self.widths, (list, tuple)) or not 1 <= len(self.widths) <= MAX_STAGES:
            raise ValueError(f"search space field 'widths' must list 1 to {MAX_STAGES} stages' width choices, "
                             f"got {self.widths!r}")
        set_("widths", tuple(_int_choices(f"widths[{s}]", w, MAX_WIDTH) for s, w in enumerate(self.widths)))
        if self.strides is None:
            set_("strides", (1,) + (2,) * (self.num_stages - 1))
        for k, high in (("depths", MAX_DEPTH), ("strides", 2)):
            values = getattr(self, k)
            if not isinstance(values, (list, tuple)) or len(values) != self.num_stages:
                raise ValueError(f"search space field '{k}' needs one value per stage ({self.num_stages}), "
                                 f"got {values!r}")
            set_(k, tuple(_int_field(f"{k}[{s}]", v, high) for s, v in enumerate(values)))
        if self.ops is None:
            set_("ops", (OPS,) * self.num_stages)
        if not isinstance(self.ops, (list, tuple)) or len(self.ops) != self.num_stages:
            raise ValueError(f"search space field 'ops' needs one list of ops per stage ({self.num_stages}), "
                             f"got {self.ops!r}")
        for s, ops in enumerate(self.ops):
            if not isinstance(ops, (list, tuple)) or not ops or not set(ops) <= set(OPS) or len(set(ops)) != len(ops):
                raise ValueError(f"search space field 'ops[{s}]' must be a non-empty list of distinct ops from "
                                 f"{list(OPS)}, got {ops!r}")
        set_("ops", tuple(tuple(op for op in OPS if op in ops) for ops in self.ops))
        for k in ("kernels", "fused_kernels"):
            set_(k, _int_choices(k, getattr(self, k), MAX_KERNEL, odd=True))
        for k in ("expansions", "fused_expansions"):
            set_(k, _int_choices(k, getattr(self, k), MAX_EXPANSION))
        if not isinstance(self.se, (list, tuple)) or not self.se or any(not isinstance(v, bool) for v in self.se) \
                or len(set(self.se)) != len(self.se):
            raise ValueError(f"search space field 'se' must be a non-empty list of distinct true/false, "
                             f"got {self.se!r}")
        set_("se", tuple(sorted(self.se)))
        for k, high in (("stem_channels", MAX_WIDTH), ("se_reduction", 64), ("img_size", 4096), ("in_chans", 64),
                        ("num_classes", 100_000)):
            _int_field(k, getattr(self, k), high)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "widths": [list(w) for w in self.widths], "ops": [list(o) for o in self.ops]}

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def resolution(self, stage: int) -> int:
        """Side of a stage's output: each stride-2 first block (pad k // 2, odd k) gives ceil(r / 2)."""
        r = self.img_size
        for stride in self.strides[:stage + 1]:
            r = -(-r // stride)
        return r

    def reduction(self, stage: int) -> int:
        """How many input pixels one output pixel of a stage spans per side (timm's feature_info)."""
        out = 1
        for stride in self.strides[:stage + 1]:
            out *= stride
        return out

    def block_options(self, op: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
        """(kernels, expansions, squeeze-excite) an op may take."""
        if op == MBCONV:
            return self.kernels, self.expansions, self.se
        if op == FUSED:
            return self.fused_kernels, self.fused_expansions, (False,)
        return (3,), (1,), (False,)

    def block_choices(self, stage: int) -> tuple[Block, ...]:
        """Every block a slot of `stage` may hold."""
        out = []
        for op in self.ops[stage]:
            kernels, expansions, se = self.block_options(op)
            out += [Block(op, k, e, s) for k in kernels for e in expansions for s in se]
        return tuple(out)

    # -- validation ------------------------------------------------------------------------------
    def validate(self, arch: MBConvArch) -> MBConvArch:
        """Raise ValueError naming the stage and block that break a rule of this space; return `arch`."""
        if not isinstance(arch, MBConvArch):
            raise ValueError(f"expected an MBConvArch, got {type(arch).__name__}")
        if len(arch.stages) != self.num_stages:
            raise ValueError(f"space '{self.name}' has {self.num_stages} stages; the architecture gives "
                             f"{len(arch.stages)}")
        for s, stage in enumerate(arch.stages):
            if stage.width not in self.widths[s]:
                raise ValueError(f"stage {s}: width {stage.width} is not allowed in space '{self.name}'; choose one "
                                 f"of {list(self.widths[s])}")
            if len(stage.blocks) > self.depths[s]:
                raise ValueError(f"stage {s} has {len(stage.blocks)} blocks; space '{self.name}' allows 1 to "
                                 f"{self.depths[s]}")
            for i, b in enumerate(stage.blocks):
                if b.op not in self.ops[s]:
                    raise ValueError(f"stage {s} block {i}: op '{b.op}' is not in stage {s} of space '{self.name}' "
                                     f"(ops {list(self.ops[s])})")
                for what, value, allowed in zip(("kernel", "expansion", "squeeze-excite"),
                                                (b.kernel, b.expansion, b.se), self.block_options(b.op), strict=True):
                    if value not in allowed:
                        raise ValueError(f"stage {s} block {i}: {what} {json.dumps(value)} is not allowed for "
                                         f"'{b.op}' in space '{self.name}'; choose one of {json.dumps(allowed)}")
        return arch


@dataclass(frozen=True)
class Block:
    """One block's choices: op, kernel, expansion, squeeze-excite ([op, kernel, expansion, se] in JSON)."""

    op: str
    kernel: int = 3
    expansion: int = 1
    se: bool = False

    @classmethod
    def parse(cls, where: str, value: Any) -> Block:
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise ValueError(f"{where} must be [op, kernel, expansion, se], got {value!r}")
        op, kernel, expansion, se = value
        if op not in OPS:
            raise ValueError(f"{where}: unknown op {op!r}; choose one of {list(OPS)}")
        for name, v in (("kernel", kernel), ("expansion", expansion)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{where}: {name} must be a positive int, got {v!r}")
        if not isinstance(se, bool):
            raise ValueError(f"{where}: se must be true or false, got {se!r}")
        return cls(op, kernel, expansion, se)

    def to_list(self) -> list:
        return [self.op, self.kernel, self.expansion, self.se]

    def describe(self) -> str:
        """'M5e6s' (MBConv, kernel 5, expansion 6, squeeze-excite), 'F3e1', 'R'."""
        if self.op == RESIDUAL:
            return "R"
        return f"{self.op[0].upper()}{self.kernel}e{self.expansion}{'s' if self.se else ''}"


@dataclass(frozen=True)
class Stage:
    width: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class MBConvArch:
    """Per stage a width and its blocks in order. Only the form is checked here; the rules are
    `MBConvSpace.validate`."""

    family: ClassVar[str] = "mbconv"  # its `zoo.family` entry
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise ValueError(f"stages must be a non-empty list, got {self.stages!r}")
        for s, stage in enumerate(self.stages):
            if not isinstance(stage, Stage) or not isinstance(stage.blocks, tuple) \
                    or not all(isinstance(b, Block) for b in stage.blocks):
                raise ValueError(f"stages[{s}] must be a Stage of a tuple of Blocks, got {stage!r}")
            if not stage.blocks:
                raise ValueError(f"stages[{s}] needs at least one block (a stage's first block always runs)")
        object.__setattr__(self, "stages", tuple(self.stages))

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [{"width": st.width, "blocks": [b.to_list() for b in st.blocks]} for st in self.stages]}

    @classmethod
    def from_dict(cls, d: Any) -> MBConvArch:
        if not isinstance(d, dict) or set(d) != {"stages"} or not isinstance(d["stages"], list):
            raise ValueError(f"an MBConv architecture must be a mapping with exactly the field 'stages' (a list), "
                             f"got {d!r}")
        stages = []
        for s, st in enumerate(d["stages"]):
            if not isinstance(st, dict) or set(st) != {"width", "blocks"} or not isinstance(st["blocks"], list):
                raise ValueError(f"stages[{s}] must be a mapping with exactly 'width' and 'blocks' (a list), "
                                 f"got {st!r}")
            width = st["width"]
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise ValueError(f"stages[{s}]: width must be a positive int, got {width!r}")
            blocks = tuple(Block.parse(f"stages[{s}].blocks[{i}]", b) for i, b in enumerate(st["blocks"]))
            stages.append(Stage(width, blocks))
        return cls(tuple(stages))

    def to_json(self) -> str:
        """Canonical JSON: no spaces. Equal archs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def num_blocks(self) -> int:
        return sum(len(st.blocks) for st in self.stages)

    @property
    def id(self) -> str:
        """Short, stable id, e.g. 'mbconv-B7-1a2b3c4d' (B: blocks in all)."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"mbconv-B{self.num_blocks}-{digest}"

    def describe(self) -> str:
        """Compact layout for tables, a width and its blocks per stage: '24: M5e6s F3e1 | 48: R M3e3 | 96: M7e6'."""
        return " | ".join(f"{st.width}: {' '.join(b.describe() for b in st.blocks)}" for st in self.stages)


def arch(*stages: tuple[int, list]) -> MBConvArch:
    """An arch from (width, [[op, kernel, expansion, se], ...]) per stage: for code and tests."""
    return MBConvArch.from_dict({"stages": [{"width": w, "blocks": list(blocks)} for w, blocks in stages]})


# Measured here (bench/bench_mbconv_blocks.py, one thread): at 28², an MBConv block trains 3.6-15x slower than a dense
# 3x3 conv of the same width (4-5x per MAC), and every op 3x slower per MAC than at 7²; fused-MBConv and residual
# blocks train at about a dense conv's cost per MAC. So the 28² stage holds fused and residual blocks only, as
# EfficientNetV2's early stages do, and fused blocks keep a 3x3 kernel (a 5x5 dense expand costs 25/9 as many MACs).
MBCONV_FMNIST = MBConvSpace(
    name="mbconv-fmnist", widths=((16, 24, 32), (24, 32, 48, 64), (48, 64, 96, 128)), depths=(2, 3, 4),
    strides=(1, 2, 2), ops=((FUSED, RESIDUAL), OPS, OPS),
    description="MBConv, fused-MBConv and residual blocks for Fashion-MNIST (28², 1 channel, 10 classes): stages at "
                "28², 14², 7² of 1-2, 1-3, 1-4 blocks; 12K-2.05M parameters.")
# The space a zoo can be rebuilt from on 2 CPU cores in hours: mbconv-fmnist's sandwich step (largest + smallest +
# one random path, batch 128, one thread) took 7 s here, this one's 1.9-2.5 s on the same loaded machine; widths
# and depths sized to the reference CNN of issue 23 (16/32/64 channels at 28²/14²/7²) and about 10x past it.
MBCONV_SMALL = MBConvSpace(
    name="mbconv-small", widths=((12, 16), (24, 32, 40), (48, 64, 96)), depths=(1, 2, 3), strides=(1, 2, 2),
    ops=((FUSED, RESIDUAL), OPS, OPS), fused_expansions=(1, 2),
    description="A CPU-trainable MBConv space for Fashion-MNIST (28², 1 channel, 10 classes): stages at 28², 14², "
                "7² of 1, 1-2, 1-3 blocks; 11K-551K parameters.")
MBCONV_TINY = MBConvSpace(
    name="mbconv-tiny", widths=((8, 12), (8, 16), (16, 24)), depths=(1, 2, 2), stem_channels=8, kernels=(3, 5),
    expansions=(2, 3), fused_expansions=(1, 2),
    description="A few-thousand-parameter MBConv space for tests: every op in every stage (28², 1 channel, "
                "10 classes).")
BUILTIN_SPACES = {s.name: s for s in (MBCONV_FMNIST, MBCONV_SMALL, MBCONV_TINY)}
