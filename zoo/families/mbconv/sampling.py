"""Drawing MBConv architectures: uniform choices (OFA's sampling), the cheapest and costliest paths, the
evolutionary search's mutation and crossover and the ENAS controller's decisions; the space's cost range."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from zoo.families.mbconv.layers import block_cost, cost, placed_blocks
from zoo.families.mbconv.space import Block, MBConvArch, MBConvSpace, Stage


def random_block(space: MBConvSpace, stage: int, rng: random.Random) -> Block:
    """An op of `stage`, then its kernel, expansion and squeeze-excite, each uniform."""
    op = rng.choice(space.ops[stage])
    kernels, expansions, se = space.block_options(op)
    return Block(op, rng.choice(kernels), rng.choice(expansions), rng.choice(se))


def random_stage(space: MBConvSpace, stage: int, rng: random.Random) -> Stage:
    depth = rng.randint(1, space.depths[stage])
    return Stage(rng.choice(space.widths[stage]), tuple(random_block(space, stage, rng) for _ in range(depth)))


def random_arch(space: MBConvSpace, rng: random.Random) -> MBConvArch:
    """Each stage's width and depth, then each block's choices, all uniform (as OFA samples): uniform over archs
    instead would nearly always draw the deepest stages of MBConv blocks, the op with the most variants."""
    return MBConvArch(tuple(random_stage(space, s, rng) for s in range(space.num_stages)))


def build_arch(space: MBConvSpace, choose: Callable[[str, tuple], Any]) -> MBConvArch:
    """The arch of `choose`'s decisions (`Family.build_arch`), in `random_arch`'s order: per stage s "stage{s}.width"
    and "stage{s}.depth", then per block i "stage{s}.block{i}.op" and that op's "stage{s}.block{i}.{op}.kernel",
    ".expansion" and ".se" (named by the op, whose options they are)."""
    stages = []
    for s in range(space.num_stages):
        width = choose(f"stage{s}.width", space.widths[s])
        blocks = []
        for i in range(choose(f"stage{s}.depth", tuple(range(1, space.depths[s] + 1)))):
            op = choose(f"stage{s}.block{i}.op", space.ops[s])
            kernels, expansions, se = space.block_options(op)
            where = f"stage{s}.block{i}.{op}"
            blocks.append(Block(op, choose(f"{where}.kernel", kernels), choose(f"{where}.expansion", expansions),
                                choose(f"{where}.se", se)))
        stages.append(Stage(width, tuple(blocks)))
    return MBConvArch(tuple(stages))


def decisions_of(space: MBConvSpace, arch: MBConvArch) -> dict[str, Any]:
    """The choice at every name `build_arch` asks while building `arch` (its inverse)."""
    del space  # every choice is in the arch itself
    taken: dict[str, Any] = {}
    for s, stage in enumerate(arch.stages):
        taken[f"stage{s}.width"], taken[f"stage{s}.depth"] = stage.width, len(stage.blocks)
        for i, block in enumerate(stage.blocks):
            where = f"stage{s}.block{i}.{block.op}"
            taken[f"stage{s}.block{i}.op"] = block.op
            taken[f"{where}.kernel"], taken[f"{where}.expansion"], taken[f"{where}.se"] = \
                block.kernel, block.expansion, block.se
    return taken


def extreme_arch(space: MBConvSpace, measure: Callable[[tuple[int, int]], int], largest: bool) -> MBConvArch:
    """The path of least (or most) `measure` over (params, MACs): every cost grows with widths and depth, so it takes
    the narrowest (widest) width and one block (every block) per stage, then per slot the block that costs least
    (most) there. Ties: the first of `space.block_choices`."""
    pick = max if largest else min
    stages: list[Stage] = []
    for s in range(space.num_stages):
        width, blocks = pick(space.widths[s]), []
        for _ in range(space.depths[s] if largest else 1):
            costs = {b: measure(block_cost(placed_blocks(space, MBConvArch((*stages, Stage(width, (*blocks, b)))))[-1]))
                     for b in space.block_choices(s)}
            blocks.append(pick(costs, key=costs.__getitem__))
        stages.append(Stage(width, tuple(blocks)))
    return MBConvArch(tuple(stages))


def extreme_archs(space: MBConvSpace) -> tuple[MBConvArch, MBConvArch]:
    """(smallest, largest) path by parameters: what sandwich training adds."""
    return extreme_arch(space, lambda c: c[0], False), extreme_arch(space, lambda c: c[0], True)


def cost_range(space: MBConvSpace) -> tuple[tuple[int, int], tuple[int, int]]:
    """((min params, max params), (min FLOPs, max FLOPs)) over the whole space, exactly (`extreme_arch`)."""
    ranges = []
    for k in (0, 1):
        lo, hi = (cost(space, extreme_arch(space, lambda c, k=k: c[k], largest))[k] for largest in (False, True))
        ranges.append((lo, hi))
    return ranges[0], ranges[1]


def mutate(space: MBConvSpace, arch: MBConvArch, rng: random.Random, s_prob: float, m_prob: float) -> MBConvArch:
    """Each stage's width and depth redrawn with probability `s_prob` (blocks a deeper stage adds are drawn anew),
    then each block with `m_prob`, as AutoFormer mutates a ViT's global and per-layer choices."""
    stages = []
    for s, stage in enumerate(arch.stages):
        width = rng.choice(space.widths[s]) if rng.random() < s_prob else stage.width
        depth = rng.randint(1, space.depths[s]) if rng.random() < s_prob else len(stage.blocks)
        blocks = [stage.blocks[i] if i < len(stage.blocks) else random_block(space, s, rng) for i in range(depth)]
        stages.append(Stage(width, tuple(random_block(space, s, rng) if rng.random() < m_prob else b for b in blocks)))
    return MBConvArch(tuple(stages))


def crossover(space: MBConvSpace, a: MBConvArch, b: MBConvArch, rng: random.Random) -> MBConvArch:
    """Each stage (width and blocks) from either parent: always an arch of the space."""
    return MBConvArch(tuple(rng.choice(pair) for pair in zip(a.stages, b.stages, strict=True)))
