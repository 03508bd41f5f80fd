"""What an MBConv path and space look like in words and tables (model cards, the UI, `python -m zoo spaces`)."""

from __future__ import annotations

from zoo.families.mbconv.layers import path_blocks
from zoo.families.mbconv.space import FUSED, MBCONV, RESIDUAL, MBConvArch, MBConvSpace

OP_NAMES = {MBCONV: "MBConv", FUSED: "fused-MBConv", RESIDUAL: "residual"}
LAYER_HEADERS = ("stage", "block", "op", "kernel", "expansion", "squeeze-excite", "channels", "resolution", "stride",
                 "shortcut")


def layer_rows(space: MBConvSpace, arch: MBConvArch) -> list[list]:
    """One row per block, under LAYER_HEADERS: channels in -> out; a shortcut where the shapes match."""
    return [[p.stage, p.index, OP_NAMES[p.block.op], p.block.kernel, p.block.expansion, "yes" if p.block.se else "–",
             f"{p.in_channels} -> {p.out_channels}", p.resolution, p.stride, "yes" if p.residual else "–"]
            for p in path_blocks(space, arch)]


def describe_arch(space: MBConvSpace, arch: MBConvArch) -> str:
    """The global shape of `arch` in one sentence (its blocks are `layer_rows`)."""
    blocks = [b for st in arch.stages for b in st.blocks]
    ops = ", ".join(f"{n} {OP_NAMES[op]}" for op in OP_NAMES if (n := sum(b.op == op for b in blocks)))
    se = sum(b.se for b in blocks)
    return (f"Stem {space.stem_channels} channels, {len(arch.stages)} stages of "
            f"{', '.join(str(len(st.blocks)) for st in arch.stages)} blocks ({ops}"
            f"{f'; {se} with squeeze-excite' if se else ''}) at widths {', '.join(str(st.width) for st in arch.stages)}"
            f" and resolutions {', '.join(f'{space.resolution(s)}²' for s in range(space.num_stages))}, average "
            f"pooling.")


def describe_choices(space: MBConvSpace) -> str:
    """The space's choices and fixed options, two indented lines."""
    widths = " ".join(f"{list(w)}" for w in space.widths)
    return (f"  widths per stage {widths}  blocks per stage 1-{list(space.depths)}  strides {list(space.strides)}  "
            f"ops per stage {' '.join('[' + ', '.join(OP_NAMES[op] for op in ops) + ']' for ops in space.ops)}\n"
            f"  MBConv kernels {list(space.kernels)} expansions {list(space.expansions)} squeeze-excite "
            f"{'/'.join(str(v).lower() for v in space.se)}  fused kernels {list(space.fused_kernels)} expansions "
            f"{list(space.fused_expansions)}  input {space.in_chans}x{space.img_size}² stem {space.stem_channels}  "
            f"classes {space.num_classes}")
