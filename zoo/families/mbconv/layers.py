"""The layers of a path as data: each block where a path runs it (`Placed`: its input and output channels, stride
and resolution), each block's convolutions and BatchNorms (`Conv`, `Norm`) with their shapes. The standalone
modules are built from these specs, the supernet slices its tensors to them, and the closed-form cost sums them:
one definition of every shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.families.mbconv.space import FUSED, MBCONV, RESIDUAL, Block, MBConvArch, MBConvSpace


@dataclass(frozen=True)
class Conv:
    """A conv (bias only in squeeze-excite) run at `resolution`² output positions."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False
    resolution: int = 1

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel

    @property
    def params(self) -> int:
        o, i, k, _ = self.weight_shape
        return o * i * k * k + (self.out_channels if self.bias else 0)

    @property
    def macs(self) -> int:
        o, i, k, _ = self.weight_shape
        return self.resolution**2 * o * i * k * k


@dataclass(frozen=True)
class Norm:
    """A BatchNorm of `channels` (weight and bias: 2 parameters per channel)."""

    name: str
    channels: int

    @property
    def params(self) -> int:
        return 2 * self.channels

    macs = 0


Layer = Conv | Norm


@dataclass(frozen=True)
class Placed:
    """A block where a path runs it: stage `stage`, position `index` (its supernet slot), channels in and out."""

    stage: int
    index: int
    block: Block
    in_channels: int
    out_channels: int
    stride: int
    in_resolution: int
    resolution: int  # of its output
    se_reduction: int

    @property
    def mid(self) -> int:
        """The inner width: input x expansion (MBConv, fused), the output's (residual)."""
        return self.out_channels if self.block.op == RESIDUAL else self.in_channels * self.block.expansion

    @property
    def se_channels(self) -> int:
        return max(1, self.in_channels // self.se_reduction)

    @property
    def residual(self) -> bool:
        """A shortcut when the shapes match (stride 1, as many channels out as in), as in MobileNetV2."""
        return self.stride == 1 and self.in_channels == self.out_channels

    def layers(self) -> list[Layer]:
        """Its convs and norms in the order they run, named as in the standalone block."""
        b, r, c_in, c_out, mid = self.block, self.resolution, self.in_channels, self.out_channels, self.mid
        if b.op == MBCONV:
            se = [Conv("se.conv_reduce", mid, self.se_channels, bias=True),
                  Conv("se.conv_expand", self.se_channels, mid, bias=True)] if b.se else []
            return [Conv("conv_pw", c_in, mid, resolution=self.in_resolution), Norm("bn1", mid),
                    Conv("conv_dw", mid, mid, b.kernel, self.stride, groups=mid, resolution=r), Norm("bn2", mid),
                    *se, Conv("conv_pwl", mid, c_out, resolution=r), Norm("bn3", c_out)]
        if b.op == FUSED:
            return [Conv("conv_exp", c_in, mid, b.kernel, self.stride, resolution=r), Norm("bn1", mid),
                    Conv("conv_pwl", mid, c_out, resolution=r), Norm("bn2", c_out)]
        return [Conv("conv1", c_in, c_out, 3, self.stride, resolution=r), Norm("bn1", c_out),
                Conv("conv2", c_out, c_out, 3, resolution=r), Norm("bn2", c_out)]

    @property
    def last_norm(self) -> str:
        """The norm closing the residual branch (γ starts at 0 where the block always adds its input)."""
        return {MBCONV: "bn3", FUSED: "bn2", RESIDUAL: "bn2"}[self.block.op]


def stem_layers(space: MBConvSpace) -> list[Layer]:
    return [Conv("conv", space.in_chans, space.stem_channels, 3, resolution=space.img_size),
            Norm("bn", space.stem_channels)]


def placed_blocks(space: MBConvSpace, arch: MBConvArch) -> list[Placed]:
    """`arch`'s blocks where it runs them (not checked against the space's rules: `path_blocks` is)."""
    out, channels, side = [], space.stem_channels, space.img_size
    for s, stage in enumerate(arch.stages):
        for i, block in enumerate(stage.blocks):
            out.append(Placed(s, i, block, channels, stage.width, space.strides[s] if i == 0 else 1, side,
                              space.resolution(s), space.se_reduction))
            channels, side = stage.width, space.resolution(s)
    return out


def path_blocks(space: MBConvSpace, arch: MBConvArch) -> list[Placed]:
    """`arch`'s blocks, after checking it against the space's rules."""
    return placed_blocks(space, space.validate(arch))


def slot_blocks(space: MBConvSpace) -> list[Placed]:
    """Per supernet slot (stage, index) and op, the largest block it holds: the widest input and output, the largest
    kernel and expansion, squeeze-excite if any path has it. Every path's block there is a slice of it."""
    out = []
    for s, depth in enumerate(space.depths):
        for i in range(depth):
            c_in = max(space.widths[s]) if i else max(space.widths[s - 1]) if s else space.stem_channels
            side = space.resolution(s) if i else space.resolution(s - 1) if s else space.img_size
            for op in space.ops[s]:
                kernels, expansions, se = space.block_options(op)
                out.append(Placed(s, i, Block(op, max(kernels), max(expansions), max(se)), c_in,
                                  max(space.widths[s]), space.strides[s] if i == 0 else 1, side, space.resolution(s),
                                  space.se_reduction))
    return out


# -- closed-form cost -------------------------------------------------------------------------------------------------
def layers_cost(layers: list[Layer]) -> tuple[int, int]:
    return sum(layer.params for layer in layers), sum(layer.macs for layer in layers)


def block_cost(p: Placed) -> tuple[int, int]:
    """(params, MACs) of one block where it runs."""
    return layers_cost(p.layers())


def head_cost(space: MBConvSpace, width: int) -> tuple[int, int]:
    return width * space.num_classes + space.num_classes, width * space.num_classes


def cost(space: MBConvSpace, arch: MBConvArch) -> tuple[int, int]:
    """(params, MACs): stem, blocks, head (the global average pool, activations, BN and residual adds count none)."""
    parts = [layers_cost(stem_layers(space)), head_cost(space, arch.stages[-1].width),
             *(block_cost(p) for p in path_blocks(space, arch))]
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def params(space: MBConvSpace, arch: MBConvArch) -> int:
    """Parameters of the extracted path (equals its numel exactly)."""
    return cost(space, arch)[0]


def flops(space: MBConvSpace, arch: MBConvArch) -> int:
    """Multiply-accumulates for one image, the zoo's convention (torch's FlopCounterMode / 2 on `MBConvNet`): every
    conv (stem, 1x1s, depthwise, dense k x k, squeeze-excite's two 1x1s) and the head; not biases, BatchNorm,
    activations, the squeeze-excite gate's product, residual adds or pooling."""
    return cost(space, arch)[1]


FLOPS_RULE = ("multiply-accumulates (MACs) per image over every conv (stem, 1x1 expand and project, depthwise and "
              "dense kxk, squeeze-excite's two 1x1s on the pooled vector) and the head; biases, BatchNorm, "
              "activations, the squeeze-excite gate's product, residual adds and pooling not counted "
              "(zoo.families.mbconv)")
