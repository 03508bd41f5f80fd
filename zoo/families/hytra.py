"""The HyTra family, Micro-HyTra: BossNAS's hybrid CNN/transformer space, scaled down to Fashion-MNIST (spec bossnas
2.1, 2.2). Its space, arch, cost model, modules, supernet and Hub / timm class (`PreZooHyTra`, `prezoo_hytra`),
registered here as the family "hytra".

An architecture is a path: per layer a scale (S0 finest) and an op, "conv" (ResConv, a ResNet bottleneck) or "att"
(ResAtt, a BoT block whose position encoding is the depthwise conv of its input projection). The stem leaves the
image at S0; each layer keeps its input's scale or halves it once. Unlike the ViT space, a choice is made by index:
a supernet tensor is used whole or not at all. The supernet holds one body per (layer, scale, op), shared by the
keep and the halve input, and one input projection and shortcut per (layer, scale, op, input mode), whose input
channels differ. One forward (`hytra_forward`) runs the supernet's path and the extracted `HyTraNet` alike.
"""

# No `from __future__ import annotations`: torch.fx copies `forward`'s annotations into the code it generates, where
# TorchScript cannot read them as strings (timm's test_model_forward_fx_torchscript).
import functools
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.family import Family, Relaxation, register_family
from zoo.layers import GradCheckpointing, StagedFeatures, checkpointed, drop_path
from zoo.pretrained import PreZooHub
from zoo.records import SpaceRecord, positive_int
from zoo.usage import LIBRARY

OPS = ("conv", "att")
KEEP, HALVE = "keep", "halve"
STEM_SCALE = 0  # the stem's output is at S0: the first layer keeps it (S0) or halves it (S1)
Step = tuple[int, str]  # one layer's choice: (scale, op)


def _ceil_half(n: int) -> int:
    return -(-n // 2)


def _as_list(name: str, values: Any) -> Sequence:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"search space field '{name}' must be a list, got {values!r}")
    return values


@dataclass(frozen=True)
class HyTraSpace(SpaceRecord):
    """Widths per scale and the rules of the path; the block structure (4 layers each) is what block-wise
    search trains and rates one at a time. Bottleneck width b = C / bottleneck_ratio; ResAtt has b / head_dim heads.
    The input's normalisation is recorded here because the weights are only meaningful with it."""

    family: ClassVar[str] = "hytra"  # its `zoo.family` entry (not a field: no part of the dict or the hash)
    name: str
    scale_channels: tuple[int, ...] = (64, 128, 256)
    att_scales: tuple[int, ...] = (1, 2)
    num_layers: int = 8
    block_size: int = 4
    stem_channels: int = 16
    bottleneck_ratio: int = 4
    head_dim: int = 16
    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for k in ("num_layers", "block_size", "stem_channels", "bottleneck_ratio", "head_dim", "img_size",
                  "in_chans", "num_classes"):
            positive_int(f"search space field '{k}'", getattr(self, k))
        channels = tuple(positive_int("scale_channels[]", c) for c in _as_list("scale_channels", self.scale_channels))
        object.__setattr__(self, "scale_channels", channels)
        for s in _as_list("att_scales", self.att_scales):
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < len(channels):
                raise ValueError(f"att_scales holds {s!r}; scales are 0..{len(channels) - 1}")
        object.__setattr__(self, "att_scales", tuple(sorted(set(self.att_scales))))
        for k in ("mean", "std"):
            values = tuple(float(v) for v in _as_list(k, getattr(self, k)))
            if len(values) != self.in_chans:
                raise ValueError(f"search space field '{k}' needs one value per input channel ({self.in_chans})")
            object.__setattr__(self, k, values)
        if self.num_layers % self.block_size:
            raise ValueError(f"num_layers {self.num_layers} is not a multiple of block_size {self.block_size}")
        for s, c in enumerate(channels):
            if c % self.bottleneck_ratio:
                raise ValueError(f"S{s} has {c} channels, not a multiple of bottleneck_ratio {self.bottleneck_ratio}")
        for s in self.att_scales:
            if self.bottleneck(s) % self.head_dim:
                raise ValueError(f"S{s}'s bottleneck {self.bottleneck(s)} is not a multiple of head_dim "
                                 f"{self.head_dim}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.scale_channels)

    @property
    def num_blocks(self) -> int:
        return self.num_layers // self.block_size

    def channels(self, scale: int) -> int:
        return self.scale_channels[scale]

    def bottleneck(self, scale: int) -> int:
        return self.scale_channels[scale] // self.bottleneck_ratio

    def num_heads(self, scale: int) -> int:
        return self.bottleneck(scale) // self.head_dim

    def resolution(self, scale: int) -> int:
        """Side of the feature map: the stem's 3x3/2 max-pool (ceil mode, no padding: 28 -> 14) gives S0; each
        halving is a stride-2 pad-1 3x3 conv, or a 2x2 ceil-mode pool in the shortcut, both ceil(r / 2) (7 -> 4)."""
        r = _ceil_half(self.img_size - 3) + 1
        for _ in range(scale):
            r = _ceil_half(r)
        return r

    def ops_at(self, scale: int) -> tuple[str, ...]:
        return OPS if scale in self.att_scales else ("conv",)

    # -- validation ------------------------------------------------------------------------------
    def validate(self, arch: "HyTraArch") -> "HyTraArch":
        """Raise ValueError naming the layer that breaks a rule of this space; return `arch`."""
        if not isinstance(arch, HyTraArch):
            raise ValueError(f"expected a HyTraArch, got {type(arch).__name__}")
        if len(arch.layers) != self.num_layers:
            raise ValueError(f"space '{self.name}' has {self.num_layers} layers; the architecture gives "
                             f"{len(arch.layers)}")
        prev = STEM_SCALE
        for i, (scale, op) in enumerate(arch.layers):
            if scale >= self.num_scales:
                raise ValueError(f"layer {i} is at S{scale}; space '{self.name}' has S0..S{self.num_scales - 1}")
            if scale - prev not in (0, 1):
                raise ValueError(f"layer {i} goes from S{prev} to S{scale}: a layer keeps its input's scale "
                                 f"or halves it once")
            if op not in self.ops_at(scale):
                raise ValueError(f"layer {i}: '{op}' is not available at S{scale}; ResAtt exists only at "
                                 f"{', '.join(f'S{s}' for s in self.att_scales)}")
            prev = scale
        return arch


MICRO_HYTRA = HyTraSpace(
    name="micro-hytra",
    description="BossNAS's HyTra for Fashion-MNIST (28², 1 channel, 10 classes): ResConv and ResAtt over 3 scales, "
                "8 layers in 2 blocks, 3,587 paths of 0.04-0.54M parameters.")
BUILTIN_SPACES = {MICRO_HYTRA.name: MICRO_HYTRA}
DEFAULT_BUCKETS = {"micro-hytra": {"low": 4e4, "high": 5.6e5, "ratio": 2**0.5}}  # BossNAS's picks: 40k ... 453k
# stored in every zoo.json as written (its module names are from before zoo.families): never reworded
FLOPS_RULE = ("multiply-accumulates (MACs) per image over every conv (stem, 1x1s, depthwise 3x3s, 3x3s, shortcuts), "
              "the qkv 1x1, both attention matmuls (q·kᵀ, attn·v) and the head; biases, BatchNorm, ReLU, softmax, "
              "residual adds and pooling not counted (zoo.hytra)")


@dataclass(frozen=True)
class HyTraArch:
    """One path: per layer (scale index, op). Only the form is checked here; the rules are `HyTraSpace.validate`."""

    family: ClassVar[str] = "hytra"  # its `zoo.family` entry
    layers: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.layers, (list, tuple)):
            raise ValueError(f"layers must be a list of [scale, op] pairs, got {self.layers!r}")
        steps = []
        for i, step in enumerate(self.layers):
            if not isinstance(step, (list, tuple)) or len(step) != 2:
                raise ValueError(f"layers[{i}] must be a [scale, op] pair, got {step!r}")
            scale, op = step
            if isinstance(scale, bool) or not isinstance(scale, int) or scale < 0:
                raise ValueError(f"layers[{i}]: scale must be a non-negative int, got {scale!r}")
            if op not in OPS:
                raise ValueError(f"layers[{i}]: unknown op {op!r}; choose one of {list(OPS)}")
            steps.append((scale, op))
        object.__setattr__(self, "layers", tuple(steps))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [list(step) for step in self.layers]}

    @classmethod
    def from_dict(cls, d: Any) -> "HyTraArch":
        if not isinstance(d, dict) or set(d) != {"layers"}:
            raise ValueError(f"a HyTra architecture must be a mapping with exactly the field 'layers', got {d!r}")
        return cls(d["layers"])

    def to_json(self) -> str:
        """Canonical JSON: no spaces. Equal archs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """Short, stable id, e.g. 'hytra-L8-1a2b3c4d'."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"hytra-L{len(self.layers)}-{digest}"

    def describe(self) -> str:
        """Compact layout for tables, one scale+op per layer: 'S0c S1a S1c ...' (c: ResConv, a: ResAtt)."""
        return " ".join(f"S{scale}{op[0]}" for scale, op in self.layers)


# -- the rules, as generators (never as lists of paths: BossNAS quirk 2) ----------------------------------------------
def next_steps(space: HyTraSpace, scale: int) -> list[Step]:
    """A layer's choices after a feature map at `scale`: keep it or halve it once, each op available there."""
    return [(s, op) for s in (scale, scale + 1) if s < space.num_scales for op in space.ops_at(s)]


def _extend(space: HyTraSpace, paths: list[tuple[Step, ...]], start: int, layers: int) -> list[tuple[Step, ...]]:
    for _ in range(layers):
        paths = [p + (step,) for p in paths for step in next_steps(space, p[-1][0] if p else start)]
    return paths


def block_paths(space: HyTraSpace, in_scale: int) -> list[tuple[Step, ...]]:
    """Every path through one block whose input is at `in_scale` (what block-wise search rates)."""
    return _extend(space, [()], in_scale, space.block_size)


def enumerate_archs(space: HyTraSpace) -> list[HyTraArch]:
    """The whole space, block by block."""
    paths: list[tuple[Step, ...]] = [()]
    for _ in range(space.num_blocks):
        paths = [p + q for p in paths for q in block_paths(space, p[-1][0] if p else STEM_SCALE)]
    return [HyTraArch(p) for p in paths]


@functools.cache
def all_archs(space: HyTraSpace) -> tuple[HyTraArch, ...]:
    """`enumerate_archs`, once per space: what uniform sampling draws from at every training step, and what the
    space's descriptions count and cost."""
    return tuple(enumerate_archs(space))


def random_arch(space: HyTraSpace, rng: random.Random) -> HyTraArch:
    """Uniform over the space's paths (not layer by layer: the rules make per-layer draws uneven over paths)."""
    return rng.choice(all_archs(space))


def decision_name(layer: int, in_scale: int) -> str:
    """A layer's decision, named by its input's scale too, so that a name fixes its options (`next_steps`)."""
    return f"layer{layer}@S{in_scale}"


def build_arch(space: HyTraSpace, choose: Callable[[str, tuple], Any]) -> HyTraArch:
    """The path of `choose`'s decisions (`Family.build_arch`): per layer a step among those its input's scale
    allows (`decision_name`)."""
    steps: list[Step] = []
    for i in range(space.num_layers):
        scale = steps[-1][0] if steps else STEM_SCALE
        steps.append(choose(decision_name(i, scale), tuple(next_steps(space, scale))))
    return HyTraArch(tuple(steps))


def decisions_of(space: HyTraSpace, arch: HyTraArch) -> dict[str, Step]:
    """The step taken at each decision that builds `arch` (`Family.decisions_of`)."""
    steps = space.validate(arch).layers
    ins = (STEM_SCALE, *(s for s, _ in steps[:-1]))
    return {decision_name(i, prev): step for i, (prev, step) in enumerate(zip(ins, steps, strict=True))}


def extreme_archs(space: HyTraSpace) -> tuple[HyTraArch, HyTraArch]:
    """(smallest, largest) path by parameters (ties: the first enumerated): what sandwich training adds."""
    archs = all_archs(space)
    return min(archs, key=lambda a: params(space, a)), max(archs, key=lambda a: params(space, a))


def mutate(space: HyTraSpace, arch: HyTraArch, rng: random.Random, s_prob: float, m_prob: float) -> HyTraArch:
    """Each layer redrawn with probability `m_prob` among the steps its input's scale allows, and whenever a change
    before it left its step out of reach (a path has no global choices: `s_prob` is unused)."""
    steps: list[Step] = []
    for step in arch.layers:
        options = next_steps(space, steps[-1][0] if steps else STEM_SCALE)
        steps.append(rng.choice(options) if rng.random() < m_prob or step not in options else step)
    return HyTraArch(tuple(steps))


def crossover(space: HyTraSpace, a: HyTraArch, b: HyTraArch, rng: random.Random) -> HyTraArch | None:
    """Each layer's step from either parent; None when the child breaks the space's rules."""
    child = HyTraArch(tuple(rng.choice(pair) for pair in zip(a.layers, b.layers, strict=True)))
    try:
        return space.validate(child)
    except ValueError:
        return None


@dataclass(frozen=True)
class Choice:
    """One layer's candidate with its input: what picks its modules and fixes their shapes."""

    layer: int
    scale: int
    op: str
    mode: str  # KEEP or HALVE
    in_channels: int
    in_resolution: int

    @property
    def body_key(self) -> str:
        return f"l{self.layer}_s{self.scale}_{self.op}"

    @property
    def input_key(self) -> str:
        return f"{self.body_key}_{self.mode}"


def _choice(space: HyTraSpace, layer: int, prev: int, scale: int, op: str) -> Choice:
    in_channels = space.stem_channels if layer == 0 else space.channels(prev)
    return Choice(layer, scale, op, HALVE if scale > prev else KEEP, in_channels, space.resolution(prev))


def layer_choices(space: HyTraSpace, first_layer: int, in_scale: int, steps: Sequence[Step]) -> list[Choice]:
    """The candidates of `steps` run from layer `first_layer` on a feature map at `in_scale` (a whole path from the
    stem, or one block alone in block-wise search). The steps are not checked against the rules here."""
    scales = (in_scale, *(s for s, _ in steps))
    return [_choice(space, first_layer + i, prev, s, op)
            for i, (prev, (s, op)) in enumerate(zip(scales[:-1], steps, strict=True))]


def path_choices(space: HyTraSpace, arch: HyTraArch) -> list[Choice]:
    """`arch`'s candidates, after checking it against the rules."""
    return layer_choices(space, 0, STEM_SCALE, space.validate(arch).layers)


def supernet_choices(space: HyTraSpace) -> list[Choice]:
    """Every candidate some path runs, found by sweeping the reachable scales layer by layer."""
    out: list[Choice] = []
    scales = {STEM_SCALE}
    for i in range(space.num_layers):
        here = [_choice(space, i, prev, s, op) for prev in sorted(scales) for s, op in next_steps(space, prev)]
        out += here
        scales = {c.scale for c in here}
    return out


def end_scales(space: HyTraSpace) -> list[int]:
    """Scales a path can end at (one head each): the last layer's reachable scales."""
    return sorted({c.scale for c in supernet_choices(space) if c.layer == space.num_layers - 1})


# -- what a path looks like, in words and tables (model cards, the UI, `python -m zoo spaces`) ------------------------
OP_NAMES = {"conv": "ResConv", "att": "ResAtt"}
LAYER_HEADERS = ("layer", "scale", "op", "input", "resolution", "channels", "bottleneck", "heads")


def layer_rows(space: HyTraSpace, arch: HyTraArch) -> list[list]:
    """One row per layer, under LAYER_HEADERS: the input is kept or halved; heads only for ResAtt."""
    return [[c.layer, f"S{c.scale}", OP_NAMES[c.op], c.mode, space.resolution(c.scale), space.channels(c.scale),
             space.bottleneck(c.scale), space.num_heads(c.scale) if c.op == "att" else "–"]
            for c in path_choices(space, arch)]


def _scales(scales: Iterable[int]) -> str:
    return ", ".join(f"S{s}" for s in scales)


def describe_arch(space: HyTraSpace, arch: HyTraArch) -> str:
    """The global shape of `arch` in one sentence (its layers are `layer_rows`)."""
    ops = [op for _, op in arch.layers]
    return (f"Stem {space.stem_channels} channels, {len(ops)} layers ({ops.count('conv')} ResConv, "
            f"{ops.count('att')} ResAtt) ending at S{arch.layers[-1][0]} ({space.channels(arch.layers[-1][0])} "
            f"channels), bottleneck ratio {space.bottleneck_ratio}, head dim {space.head_dim}, average pooling.")


def describe_choices(space: HyTraSpace) -> str:
    """The space's choices and fixed options, two indented lines."""
    return (f"  channels per scale {list(space.scale_channels)}  ResAtt at {_scales(space.att_scales)}  "
            f"layers {space.num_layers} in blocks of {space.block_size}  bottleneck ratio {space.bottleneck_ratio}  "
            f"head dim {space.head_dim}\n"
            f"  input {space.in_chans}x{space.img_size}² stem {space.stem_channels}  classes {space.num_classes}  "
            f"paths {len(all_archs(space)):,}")


def cost_range(space: HyTraSpace) -> tuple[tuple[int, int], tuple[int, int]]:
    """((min params, max params), (min FLOPs, max FLOPs)) over every path (neither grows with every choice)."""
    costs = [_cost(space, a) for a in all_archs(space)]
    return (min(p for p, _ in costs), max(p for p, _ in costs)), (min(f for _, f in costs), max(f for _, f in costs))


# -- closed-form cost -------------------------------------------------------------------------------------------------
def _has_shortcut_conv(space: HyTraSpace, c: Choice) -> bool:
    return c.mode == HALVE or c.in_channels != space.channels(c.scale)


def _choice_cost(space: HyTraSpace, c: Choice) -> tuple[int, int]:
    """(params, MACs) of one candidate: input projection, body, shortcut. BN holds 2 parameters per channel."""
    C, b, n = space.channels(c.scale), space.bottleneck(c.scale), space.resolution(c.scale) ** 2
    params = c.in_channels * b + 9 * b + b + 2 * b  # 1x1, depthwise 3x3 with bias, BN
    macs = c.in_resolution**2 * c.in_channels * b + n * 9 * b  # the 1x1 runs before the stride
    mixer = 9 * b * b if c.op == "conv" else 3 * b * b  # 3x3 conv, or the qkv 1x1
    params += mixer + 2 * b + b * C + 2 * C  # mixer, BN, 1x1 out, BN
    macs += n * (mixer + b * C) + (2 * n * n * b if c.op == "att" else 0)  # + q·kᵀ and attn·v over n tokens
    if _has_shortcut_conv(space, c):
        params += c.in_channels * C + 2 * C
        macs += n * c.in_channels * C  # after the pooling when halving
    return params, macs


def _stem_cost(space: HyTraSpace) -> tuple[int, int]:
    """(params, MACs) of the stem: 3x3 conv and BN."""
    sc = space.stem_channels
    return 9 * space.in_chans * sc + 2 * sc, space.img_size**2 * 9 * space.in_chans * sc


def _head_cost(space: HyTraSpace, end_scale: int) -> tuple[int, int]:
    """(params, MACs) of the linear head after a path ending at `end_scale`."""
    C, k = space.channels(end_scale), space.num_classes
    return C * k + k, C * k


def _cost(space: HyTraSpace, arch: HyTraArch) -> tuple[int, int]:
    parts = [_stem_cost(space), _head_cost(space, arch.layers[-1][0]),
             *(_choice_cost(space, c) for c in path_choices(space, arch))]
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def params(space: HyTraSpace, arch: HyTraArch) -> int:
    """Parameters of the extracted path (equals its numel exactly)."""
    return _cost(space, arch)[0]


def flops(space: HyTraSpace, arch: HyTraArch) -> int:
    """Multiply-accumulates for one image, the zoo's convention (torch's FlopCounterMode / 2 on `HyTraNet`).

    Counted: every conv (stem, 1x1s, depthwise, 3x3s, shortcut), the qkv 1x1, both attention matmuls and the head.
    Not counted: biases, BatchNorm, ReLU, softmax and its scaling, residual adds, max/avg pooling and the global
    average pool (element-wise work, about 1% of the total).
    """
    return _cost(space, arch)[1]


# -- what DARTS's relaxation needs (`zoo.family.Relaxation`) ---------------------------------------------------------
def _layer_inputs(space: HyTraSpace) -> list[list[int]]:
    """Per layer, the scales its input can be at."""
    scales, out = {STEM_SCALE}, []
    for _ in range(space.num_layers):
        out.append(sorted(scales))
        scales = {s for prev in scales for s, _ in next_steps(space, prev)}
    return out


def decisions(space: HyTraSpace) -> dict[str, tuple]:
    """Every decision `build_arch` can ask that has more than one option, with its options."""
    found = {decision_name(i, prev): tuple(next_steps(space, prev))
             for i, scales in enumerate(_layer_inputs(space)) for prev in scales}
    return {name: options for name, options in found.items() if len(options) > 1}


class ExpectedParams:
    """E[params] of the path drawn layer by layer from independent per-decision probabilities, exactly: the scales
    along a path are a Markov chain, so it is the stem, plus per layer the sum over its input scale s of P(s) x the
    params of each step weighted by its probability, plus the head averaged over the end scale."""

    def __init__(self, space: HyTraSpace) -> None:
        self.space = space
        steps = {(i, prev): next_steps(space, prev) for i, scales in enumerate(_layer_inputs(space)) for prev in scales}
        self.options = {decision_name(i, prev): torch.tensor(
            [float(_choice_cost(space, _choice(space, i, prev, s, op))[0]) for s, op in step],
            dtype=torch.float64) for (i, prev), step in steps.items()}
        self.next_scales = {decision_name(i, prev): [s for s, _ in step] for (i, prev), step in steps.items()}

    def __call__(self, probs: Mapping[str, Tensor]) -> Tensor:
        space = self.space
        at = {STEM_SCALE: torch.ones((), dtype=torch.float64)}  # P(the next layer's input is at scale s)
        total = torch.tensor(float(_stem_cost(space)[0]), dtype=torch.float64)
        for i in range(space.num_layers):
            reached: dict[int, Tensor] = {}
            for prev, p_in in at.items():
                name = decision_name(i, prev)
                costs = self.options[name]
                p = probs[name].double() if name in probs else torch.ones_like(costs) / len(costs)
                total = total + p_in * (p * costs).sum()
                for s, q in zip(self.next_scales[name], p, strict=True):
                    reached[s] = reached[s] + p_in * q if s in reached else p_in * q
            at = reached
        return total + sum(p * _head_cost(space, s)[0] for s, p in at.items())

    def cheapest(self, names: Mapping[str, tuple]) -> dict[str, int]:
        """Each decision's step of fewest params."""
        return {name: int(self.options[name].argmin()) for name in names}


# -- modules --------------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention over all h·w positions, no position term (the depthwise conv before it is one).

    Standard attention, softmax(q·kᵀ/√d) over keys applied to v: BossNAS's search code computed the transposed
    `v @ attn` (quirk 1). Written as explicit matmuls so that ONNX gets MatMul + Softmax.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.qkv = nn.Conv2d(dim, 3 * num_heads * head_dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).flatten(2).unflatten(1, (3, self.num_heads, self.head_dim)).unbind(1)  # (B, h, d, n)
        attn = (q.transpose(-2, -1) @ k * self.head_dim**-0.5).softmax(dim=-1)  # (B, h, n queries, n keys)
        return (v @ attn.transpose(-2, -1)).flatten(1, 2).view_as(x)


def _bn(channels: int, zero: bool = False) -> nn.BatchNorm2d:
    """BatchNorm; `zero` starts it at γ = 0, so that a fresh residual body adds nothing (ResNet practice)."""
    bn = nn.BatchNorm2d(channels)
    if zero:
        nn.init.zeros_(bn.weight)
    return bn


def _projection(space: HyTraSpace, c: Choice) -> nn.Module:
    """1x1 to the bottleneck, then the depthwise 3x3 (with bias; stride 2 when halving) that both downsamples and
    encodes position, then BN. No residual around the depthwise conv (BossNAS quirk 9)."""
    b = space.bottleneck(c.scale)
    stride = 2 if c.mode == HALVE else 1
    return nn.Sequential(nn.Conv2d(c.in_channels, b, 1, bias=False),
                         nn.Conv2d(b, b, 3, stride, 1, groups=b), nn.BatchNorm2d(b))


def _body(space: HyTraSpace, scale: int, op: str) -> nn.Module:
    b, C = space.bottleneck(scale), space.channels(scale)
    mixer = nn.Conv2d(b, b, 3, 1, 1, bias=False) if op == "conv" else \
        SelfAttention(b, space.num_heads(scale), space.head_dim)
    return nn.Sequential(nn.ReLU(), mixer, nn.BatchNorm2d(b), nn.ReLU(),
                         nn.Conv2d(b, C, 1, bias=False), _bn(C, zero=True))


def _shortcut(space: HyTraSpace, c: Choice) -> nn.Module:
    """Identity, 1x1 + BN + ReLU when only the channels change, avg-pool 2x2 + 1x1 + BN when halving (BossNAS
    retraining; the search code's 3x3/2 conv would be the costliest op of a layer)."""
    if not _has_shortcut_conv(space, c):
        return nn.Identity()
    conv = nn.Conv2d(c.in_channels, space.channels(c.scale), 1, bias=False)
    if c.mode == KEEP:
        return nn.Sequential(conv, nn.BatchNorm2d(space.channels(c.scale)), nn.ReLU())
    pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, conv, nn.BatchNorm2d(space.channels(c.scale)))


def _stem(space: HyTraSpace) -> nn.Module:
    return nn.Sequential(nn.Conv2d(space.in_chans, space.stem_channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(space.stem_channels), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True))


def _init(module: nn.Module) -> None:
    """ResNet's init for convs (Kaiming, fan-out); BN and linear layers keep theirs (γ = 0 where `_bn` set it)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


Layer = tuple[nn.Module, nn.Module, nn.Module]  # (input projection, body, shortcut)


def run_layer(projection: nn.Module, body: nn.Module, shortcut: nn.Module, rate: float, training: bool,
              x: Tensor) -> Tensor:
    """One layer, ReLU(body(proj(x)) + shortcut(x)), its body dropped per sample at `rate` in training."""
    return F.relu(drop_path(body(projection(x)), rate, training) + shortcut(x))


def run_layers(x: Tensor, layers: Iterable[Layer], drop_rates: Sequence[float] = (), training: bool = False,
               checkpoint: bool = False) -> Tensor:
    """Each layer in turn. `drop_rates` (one per layer, training only) drop a layer's whole body per sample
    (stochastic depth): block-wise search runs a block's layers alone through this too. `checkpoint`: each layer's
    activations are recomputed in the backward pass (timm's grad checkpointing)."""
    for i, layer in enumerate(layers):
        rate = drop_rates[i] if drop_rates else 0.0
        x = checkpointed(functools.partial(run_layer, *layer, rate, training), x, checkpoint)
    return x


def hytra_pool(x: Tensor, pool: str = "avg") -> Tensor:
    """One vector per image, the mean over positions; the maps themselves with `pool` "" (a model without a head)."""
    return x.mean(dim=(2, 3)) if pool else x


def hytra_forward(x: Tensor, stem: nn.Module, layers: Sequence[Layer], head: nn.Module,
                  drop_rates: Sequence[float] = (), training: bool = False, pool: str = "avg",
                  checkpoint: bool = False) -> Tensor:
    """Logits of one path: stem, layers, global average pool, head."""
    return head(hytra_pool(run_layers(stem(x), layers, drop_rates, training, checkpoint), pool))


PathModules = tuple[nn.Module, Sequence[Layer], nn.Module]  # stem, layers, head


class Candidate(nn.Module):
    """One layer of a path: a container, run by `hytra_forward`."""

    def __init__(self, projection: nn.Module, body: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.projection, self.body, self.shortcut = projection, body, shortcut


class HyTraNet(StagedFeatures, GradCheckpointing, nn.Module):
    """One path as a plain module (no dependency on the supernet): what is exported, packaged and served.

    It has timm's model API (`num_classes`, `in_chans`, `num_features`, `head_hidden_size`, `global_pool`,
    `reset_classifier`, `forward_features`, `forward_head`, `forward_intermediates`, `prune_intermediate_layers`,
    `feature_info`, `set_grad_checkpointing`), each a piece of `hytra_forward`, and says what it is to timm and in its
    self-description (`family`, `timm_name`, `first_conv`: zoo.pretrained). `space` always describes this model's
    input and head: a new head of N classes gives a space with N."""

    family: ClassVar[str] = "hytra"
    timm_name: ClassVar[str] = "prezoo_hytra"
    first_conv: ClassVar[str] = "stem.0"
    global_pool = "avg"  # the global average pool before the head, as timm names it ("": none, without a head only)

    def __init__(self, space: HyTraSpace, arch: HyTraArch) -> None:
        super().__init__()
        self.space, self.arch = space, arch
        self.stem = _stem(space)
        self.layers = nn.ModuleList(Candidate(_projection(space, c), _body(space, c.scale, c.op), _shortcut(space, c))
                                    for c in path_choices(space, arch))
        self.num_classes, self.in_chans = space.num_classes, space.in_chans
        self.num_features = self.head_hidden_size = space.channels(arch.layers[-1][0])
        self.head = nn.Linear(self.num_features, space.num_classes)
        # each layer's output; the stem's max-pool halves the image (S0), and each scale halves it again
        self.feature_info = [dict(module=f"layers.{i}", num_chs=space.channels(s), reduction=2 ** (s + 1))
                             for i, (s, _) in enumerate(arch.layers)]
        _init(self)

    def path(self) -> PathModules:
        return self.stem, [(c.projection, c.body, c.shortcut) for c in self.layers], self.head

    def forward(self, x: Tensor) -> Tensor:
        return hytra_forward(x, *self.path(), pool=self.global_pool, checkpoint=self.grad_checkpointing)

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature maps (B, C, H, W) after the last layer."""
        return run_layers(self.stem(x), self.path()[1], checkpoint=self.grad_checkpointing)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the maps of `forward_features`; the logits, or the pooled features with `pre_logits`."""
        pooled = hytra_pool(x, self.global_pool)
        return pooled if pre_logits else self.head(pooled)

    def feature_stem(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def feature_stages(self) -> list:
        return self.path()[1]

    def run_feature_stage(self, layer, x: Tensor) -> Tensor:
        return run_layers(x, [layer], checkpoint=self.grad_checkpointing)

    def keep_stages(self, depth: int) -> None:
        self.arch = HyTraArch(self.arch.layers[:depth])
        self.layers = self.layers[:depth]


class HyTraSupernet(nn.Module):
    """Every candidate of `space` once; `supernet(x, arch)` runs exactly `arch`'s modules.

    No active-path state: the architecture is an argument. The stem and the per-end-scale heads are shared by all
    paths; bodies by the keep and halve inputs of a (layer, scale, op); projections and shortcuts are per input mode.
    `drop_path_rate` is the last layer's stochastic-depth rate in training (linear from 0 at the first, as timm's
    ResNets); extracted models never drop.
    """

    def __init__(self, space: HyTraSpace, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.space = space
        L = space.num_layers
        self.drop_rates = tuple(drop_path_rate * i / max(L - 1, 1) for i in range(L)) if drop_path_rate else ()
        choices = supernet_choices(space)
        self.stem = _stem(space)
        self.bodies = nn.ModuleDict({c.body_key: _body(space, c.scale, c.op) for c in choices})
        self.projections = nn.ModuleDict({c.input_key: _projection(space, c) for c in choices})
        self.shortcuts = nn.ModuleDict({c.input_key: _shortcut(space, c) for c in choices})
        self.heads = nn.ModuleDict({f"s{s}": nn.Linear(space.channels(s), space.num_classes)
                                    for s in end_scales(space)})
        _init(self)

    def layers(self, choices: Iterable[Choice]) -> list[Layer]:
        """The shared modules of these candidates, in order."""
        return [(self.projections[c.input_key], self.bodies[c.body_key], self.shortcuts[c.input_key])
                for c in choices]

    def path(self, arch: HyTraArch) -> PathModules:
        """The shared modules that `arch` runs, in order."""
        return self.stem, self.layers(path_choices(self.space, arch)), self.heads[f"s{arch.layers[-1][0]}"]

    def forward(self, x: Tensor, arch: HyTraArch, gates: Mapping[str, Tensor] | None = None) -> Tensor:
        """`arch`'s logits; with `gates` (decision name -> its drawn one-hot value, DARTS) each layer's output is
        multiplied by its decision's gate, so that the loss reaches the logits the decision was drawn from."""
        if gates is None:
            return hytra_forward(x, *self.path(arch), self.drop_rates, self.training)
        stem, layers, head = self.path(arch)
        x = stem(x)
        for i, (layer, name) in enumerate(zip(layers, decisions_of(self.space, arch), strict=True)):
            x = run_layers(x, [layer], self.drop_rates[i:i + 1], self.training)
            x = x * gates[name] if name in gates else x
        return head(hytra_pool(x))

    def extract(self, arch: HyTraArch) -> HyTraNet:
        """A standalone `HyTraNet` with copies of `arch`'s weights and BN statistics, in eval mode."""
        net = HyTraNet(self.space, arch).to(next(self.parameters()).device)
        (stem, layers, head), (my_stem, my_layers, my_head) = net.path(), self.path(arch)
        pairs = [(stem, my_stem), (head, my_head)] + [pair for mine, theirs in zip(layers, my_layers, strict=True)
                                                      for pair in zip(mine, theirs, strict=True)]
        for target, source in pairs:
            target.load_state_dict(source.state_dict())
        return net.eval()


# -- the family's Hugging Face / timm class, and the family ----------------------------------------------------------
HYTRA_TAGS = ["image-classification", "hybrid-cnn-transformer", "bossnas", "prezoo"]  # not "timm": zoo.usage.LIBRARY


# the mixin appends its own tags to the list it is given: a copy keeps the tags ours (the cards' tags)
def with_in_chans(space: HyTraSpace, in_chans: int | None) -> HyTraSpace:
    """`space` for `in_chans` input channels (None: its own), each normalised by the mean of the recorded means and
    of the stds: a gray image repeated over RGB is normalised as before."""
    if in_chans is None or in_chans == space.in_chans:
        return space
    mean, std = sum(space.mean) / space.in_chans, sum(space.std) / space.in_chans
    return replace(space, in_chans=in_chans, mean=(mean,) * in_chans, std=(std,) * in_chans)


class PreZooHyTra(HyTraNet, PreZooHub, library_name=LIBRARY, tags=[*HYTRA_TAGS], pipeline_tag="image-classification"):
    """`HyTraNet` whose constructor takes plain JSON (what config.json holds). `in_chans` other than the weights'
    adapts the stem conv (timm's `adapt_input_conv`; the normalisation: `with_in_chans`); `global_pool=""` (with
    num_classes=0) gives the unpooled feature maps."""

    hub_tags = HYTRA_TAGS
    weights_layout = "`zoo.families.hytra.HyTraNet`'s parameter names"
    space_from_dict, arch_from_dict = HyTraSpace.from_dict, HyTraArch.from_dict
    # `timm.create_model("prezoo_hytra")`: the shipped hytra-fmnist zoo's most accurate entry, hytra-L8-c97acf72
    # (tests/test_timm_contract.py keeps them in step)
    timm_default = (MICRO_HYTRA, HyTraArch(((1, "conv"), (1, "att"), (1, "conv"), (1, "att"), (1, "conv"), (1, "att"),
                                            (1, "att"), (1, "att"))))

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **timm_kwargs: Any) -> None:
        # no pooling ("") keeps what the weights mean; reset_classifier allows it only without a head
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, global_pool=global_pool or None)
        super().__init__(with_in_chans(source, in_chans), a)
        self._configure(source, labels, preprocessing, num_classes, device, dtype)
        if global_pool == "":
            self.reset_classifier(self.num_classes, "")

    @classmethod
    def _fixed(cls, source: HyTraSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "global_pool": cls.global_pool}

    @classmethod
    def pool_size(cls, space: HyTraSpace, arch: HyTraArch) -> tuple[int, int]:
        side = space.resolution(arch.layers[-1][0])
        return side, side


FAMILY = register_family(Family(
    "hytra", HyTraSpace.from_dict, HyTraArch.from_dict, BUILTIN_SPACES, params, flops, HyTraSupernet, FLOPS_RULE,
    title="HyTra", noun="hybrid CNN/transformer", origin="path of BossNAS's hybrid space", describe_arch=describe_arch,
    layer_headers=LAYER_HEADERS, layer_rows=layer_rows, describe_choices=describe_choices, cost_range=cost_range,
    pretrained=PreZooHyTra, sampling_group=lambda a: (), random_arch=random_arch, extreme_archs=extreme_archs,
    calibrate_bn=True, selectors=("bossnas",), default_buckets=DEFAULT_BUCKETS, mutate=mutate, crossover=crossover,
    build_arch=build_arch, decisions_of=decisions_of, relaxation=Relaxation(decisions, ExpectedParams)))
