"""The MBConv family's modules: one path as a plain module (`MBConvNet`) and the weight-sharing supernet
(`MBConvSupernet`), both running each block through `run_block`.

Weight sharing is OFA's: a supernet slot (stage, index) holds one block per op at its largest shape (widest input
and output, largest kernel and expansion); a path's block is a slice of it, the leading channels of each tensor and
the centre of each kernel (`crop`). Ops do not share (their tensors have nothing in common). A path's BatchNorm
statistics are the slices of the slot's, which fit no path: the family recalibrates each path's
(`Family.calibrate_bn`). Activations are channels-last from the stem on: measured on this CPU, an MBConv block's
training step is 1.3-2.7x faster than in NCHW, a whole path's 1.1-1.5x. ReLU throughout, as MobileNetV2 (SiLU, as
EfficientNet, made an MBConv-heavy path's training step 8% slower).
"""

# No `from __future__ import annotations`: torch.fx copies `forward`'s annotations into the code it generates, where
# TorchScript cannot read them as strings (timm's test_model_forward_fx_torchscript).
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.families.mbconv.layers import Conv, Layer, Norm, Placed, path_blocks, slot_blocks, stem_layers
from zoo.families.mbconv.space import FUSED, MBCONV, RESIDUAL, MBConvArch, MBConvSpace
from zoo.layers import GradCheckpointing, StagedFeatures, checkpointed, drop_path

Run = Callable[[str, Tensor], Tensor]  # (layer name, input) -> output: how a block reaches its convs and norms


def act(x: Tensor) -> Tensor:
    return F.relu(x)


def block_body(p: Placed, run: Run, x: Tensor) -> Tensor:
    """The residual branch of block `p` (layers as `Placed.layers` names them)."""
    if p.block.op == MBCONV:
        h = act(run("bn1", run("conv_pw", x)))
        h = act(run("bn2", run("conv_dw", h)))
        if p.block.se:
            h = h * run("se.conv_expand", act(run("se.conv_reduce", h.mean((2, 3), keepdim=True)))).sigmoid()
        return run("bn3", run("conv_pwl", h))
    if p.block.op == FUSED:
        return run("bn2", run("conv_pwl", act(run("bn1", run("conv_exp", x)))))
    return run("bn2", run("conv2", act(run("bn1", run("conv1", x)))))


def run_block(p: Placed, run: Run, x: Tensor, rate: float = 0.0, training: bool = False,
              gate: Tensor | None = None) -> Tensor:
    """One block: its branch, plus its input when the shapes match (the branch dropped per sample at `rate` in
    training); a residual block ends with an activation after the sum, as ResNet's, the inverted ones without.
    `gate` (a differentiable search's one-hot value, 1 forward) scales the branch: the block's output where it has
    no shortcut."""
    h = block_body(p, run, x)
    if gate is not None:
        h = h * gate
    if p.residual:
        h = x + drop_path(h, rate, training)
    return act(h) if p.block.op == RESIDUAL else h


def _module(layer: Layer) -> nn.Module:
    if isinstance(layer, Norm):
        return nn.BatchNorm2d(layer.channels)
    return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.kernel // 2,
                     groups=layer.groups, bias=layer.bias)


def _init_conv(conv: nn.Conv2d) -> None:
    """EfficientNet's init (timm's `_init_weight_goog`): N(0, 2 / fan-out), the fan-out per group."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class MBBlock(nn.Module):
    """One block as modules named as `Placed.layers` names them (timm's InvertedResidual, EdgeResidual and
    BasicBlock names: conv_pw, conv_dw, se.conv_reduce, conv_exp, conv_pwl, conv1, bn1 ...)."""

    def __init__(self, placed: Placed) -> None:
        super().__init__()
        self.placed = placed
        for layer in placed.layers():
            parent, _, name = layer.name.rpartition(".")
            if parent and not hasattr(self, parent):
                self.add_module(parent, nn.Module())
            (self.get_submodule(parent) if parent else self).add_module(name, _module(layer))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m)
        if placed.index:  # a stage's later blocks always add their input: their branch starts at 0 (ResNet practice)
            nn.init.zeros_(self.get_submodule(placed.last_norm).weight)

    def run(self, name: str, x: Tensor) -> Tensor:
        return self.get_submodule(name)(x)

    def forward(self, x: Tensor) -> Tensor:
        return run_block(self.placed, self.run, x)


def make_stem(space: MBConvSpace) -> nn.Sequential:
    conv, norm = (_module(layer) for layer in stem_layers(space))
    _init_conv(conv)
    return nn.Sequential(OrderedDict(conv=conv, bn=norm, act=nn.ReLU()))


def channels_last(x: Tensor) -> Tensor:
    """The stem's output in channels-last memory, which every later op keeps. (Not the input: with one channel, NCHW
    and channels-last are the same strides, and convs then keep NCHW throughout.)"""
    return x.contiguous(memory_format=torch.channels_last)


def pool(x: Tensor, global_pool: str = "avg") -> Tensor:
    """One vector per image, the mean over positions; the maps themselves with `global_pool` "" (no head)."""
    return x.mean((2, 3)) if global_pool else x


class MBConvNet(StagedFeatures, GradCheckpointing, nn.Module):
    """One path as a plain module (no dependency on the supernet): what is exported, packaged and served.

    timm's model API (`num_classes`, `in_chans`, `num_features`, `head_hidden_size`, `global_pool`,
    `reset_classifier`, `forward_features`, `forward_head`, `forward_intermediates` and `prune_intermediate_layers`
    over the stages, `feature_info`, `set_grad_checkpointing`), and what it is to timm and in its self-description
    (`family`, `timm_name`, `first_conv`: zoo.pretrained). `space` always describes this model's input and head: a
    new head of N classes gives a space with N."""

    family: ClassVar[str] = "mbconv"
    timm_name: ClassVar[str] = "prezoo_mbconv"
    first_conv: ClassVar[str] = "stem.conv"
    global_pool = "avg"  # the global average pool before the head, as timm names it ("": none, without a head only)

    def __init__(self, space: MBConvSpace, arch: MBConvArch) -> None:
        super().__init__()
        self.space, self.arch = space, arch
        placed = path_blocks(space, arch)
        self.stem = make_stem(space)
        self.stages = nn.ModuleList(nn.Sequential(*(MBBlock(p) for p in placed if p.stage == s))
                                    for s in range(space.num_stages))
        self.num_classes, self.in_chans = space.num_classes, space.in_chans
        self.num_features = self.head_hidden_size = arch.stages[-1].width
        self.head = nn.Linear(self.num_features, space.num_classes)
        self.feature_info = [dict(module=f"stages.{s}", num_chs=st.width, reduction=space.reduction(s))
                             for s, st in enumerate(arch.stages)]

    def blocks(self) -> list[MBBlock]:
        return [block for stage in self.stages for block in stage]

    def _stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        for block in stage:
            x = checkpointed(block, x, self.grad_checkpointing)
        return x

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature maps (B, C, H, W) after the last stage (channels-last in memory)."""
        x = channels_last(self.stem(x))
        for stage in self.stages:
            x = self._stage(stage, x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the maps of `forward_features`; the logits, or the pooled features with `pre_logits`."""
        pooled = pool(x, self.global_pool)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def feature_stem(self, x: Tensor) -> Tensor:
        return channels_last(self.stem(x))

    def feature_stages(self) -> list[nn.Sequential]:
        return list(self.stages)

    run_feature_stage = _stage

    def keep_stages(self, depth: int) -> None:
        self.arch = MBConvArch(self.arch.stages[:depth])
        self.stages = self.stages[:depth]


def crop(t: Tensor, shape: Sequence[int]) -> Tensor:
    """The slice of a supernet tensor a path uses: its leading channels (every dim), the centre of a kernel
    (dims 2 and 3 of a conv weight, odd sizes). A view: gradients and BatchNorm updates reach the supernet."""
    index = []
    for dim, (have, want) in enumerate(zip(t.shape, shape, strict=True)):
        start = (have - want) // 2 if dim >= 2 else 0
        index.append(slice(start, start + want))
    return t[tuple(index)]


def sliced(block: MBBlock, p: Placed, training: bool) -> Run:
    """How path block `p` runs its layers on the slices of supernet slot `block`."""
    specs = {layer.name: layer for layer in p.layers()}

    def run(name: str, x: Tensor) -> Tensor:
        spec, m = specs[name], block.get_submodule(name)
        if isinstance(spec, Conv):
            bias = None if m.bias is None else m.bias[:spec.out_channels]
            return F.conv2d(x, crop(m.weight, spec.weight_shape), bias, spec.stride, spec.kernel // 2, 1, spec.groups)
        c = spec.channels
        return F.batch_norm(x, m.running_mean[:c], m.running_var[:c], m.weight[:c], m.bias[:c], training,
                            m.momentum, m.eps)

    return run


Gates = Mapping[str, Tensor]  # decision name (`sampling.build_arch`'s) -> its selected one-hot value, a 0-dim tensor


def gate_product(gates: Gates, names: Sequence[str]) -> Tensor | None:
    """The product of the gates of `names` that `gates` holds (a decision with one option has none); None if none."""
    out = None
    for name in names:
        if name in gates:
            out = gates[name] if out is None else out * gates[name]
    return out


def block_gate(gates: Gates, p: Placed) -> Tensor | None:
    """A block's gate: its op's and that op's kernel, expansion and squeeze-excite decisions'."""
    where = f"stage{p.stage}.block{p.index}"
    return gate_product(gates, [f"{where}.op", *(f"{where}.{p.block.op}.{k}" for k in ("kernel", "expansion", "se"))])


class MBConvSupernet(nn.Module):
    """Every slot of `space` once, one block per op at its largest shape; `supernet(x, arch)` runs exactly `arch`'s
    slices. No active-path state: the architecture is an argument. The stem and head are shared by all paths (the
    head's leading input columns per last width). `drop_path_rate` is the last slot's stochastic-depth rate in
    training (linear from 0 at the first slot, as timm's EfficientNets); extracted models never drop."""

    def __init__(self, space: MBConvSpace, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.space = space
        slots = slot_blocks(space)
        self.stem = make_stem(space)
        self.stages = nn.ModuleList(
            nn.ModuleList(nn.ModuleDict({p.block.op: MBBlock(p) for p in slots if (p.stage, p.index) == (s, i)})
                          for i in range(depth))
            for s, depth in enumerate(space.depths))
        self.head = nn.Linear(max(space.widths[-1]), space.num_classes)
        order = [(s, i) for s, depth in enumerate(space.depths) for i in range(depth)]
        self.drop_rates = {slot: drop_path_rate * n / max(len(order) - 1, 1) for n, slot in enumerate(order)}

    def slot(self, p: Placed) -> MBBlock:
        return self.stages[p.stage][p.index][p.block.op]

    def forward(self, x: Tensor, arch: MBConvArch, gates: Gates | None = None) -> Tensor:
        x = channels_last(self.stem(x))
        for p in path_blocks(self.space, arch):
            x = run_block(p, sliced(self.slot(p), p, self.training), x, self.drop_rates[p.stage, p.index],
                          self.training, None if gates is None else block_gate(gates, p))
            if gates is not None and p.index == len(arch.stages[p.stage].blocks) - 1:
                stage_gate = gate_product(gates, [f"stage{p.stage}.depth", f"stage{p.stage}.width"])
                x = x if stage_gate is None else x * stage_gate
        width = arch.stages[-1].width
        return F.linear(pool(x), self.head.weight[:, :width], self.head.bias)

    @torch.no_grad()
    def extract(self, arch: MBConvArch) -> MBConvNet:
        """A standalone `MBConvNet` with copies of `arch`'s slices (weights and BN statistics), in eval mode."""
        net = MBConvNet(self.space, arch).to(self.head.weight.device)
        pairs = [(net.stem, self.stem), (net.head, self.head)]
        pairs += [(block, self.slot(block.placed)) for block in net.blocks()]
        for target, source in pairs:
            state = source.state_dict()
            for name, t in target.state_dict().items():
                t.copy_(crop(state[name], t.shape))
        return net.eval()
