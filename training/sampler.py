"""Which architecture(s) a training step trains. Stateless: the choice is a function of (seed, step),
so every DDP rank draws the same arch and a resumed run draws what the killed one would have."""

from __future__ import annotations

import random
from collections import defaultdict

from zoo import Arch, SearchSpace


def _rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


class PreferredSampler:
    """PreNAS Eq. 11: uniform over (embed, depth) groups of the preferred archs, then uniform inside.
    `balanced=False` is the paper's ablation: uniform over the preferred archs themselves."""

    def __init__(self, archs: list[Arch], seed: int, balanced: bool = True) -> None:
        if not archs:
            raise ValueError("the preferred sampler needs at least one architecture")
        groups: dict[tuple[int, int], list[Arch]] = defaultdict(list)
        for a in archs:
            groups[(a.embed_dim, a.depth) if balanced else ()].append(a)
        self.groups = [groups[k] for k in sorted(groups)]
        self.seed = seed

    def __call__(self, step: int) -> Arch:
        rng = _rng(self.seed, step)
        return rng.choice(rng.choice(self.groups))


class UniformSampler:
    """AutoFormer's baseline: any architecture of the whole space, each layer's choices uniform."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space, self.seed = space, seed

    def __call__(self, step: int) -> Arch:
        rng, s = _rng(self.seed, step), self.space
        depth = rng.choice(s.depths)
        return Arch(rng.choice(s.embed_dims), depth, tuple(rng.choice(s.num_heads) for _ in range(depth)),
                    tuple(rng.choice(s.mlp_ratios) for _ in range(depth)))


def sandwich(sample, largest: Arch, smallest: Arch, k: int):
    """Largest + smallest + k sampled archs per step (BigNAS-style), as one list."""
    return lambda step: [largest, smallest, *(sample(step * 1_009 + i) for i in range(k))]
