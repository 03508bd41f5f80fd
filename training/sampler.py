"""Which architecture(s) a training step trains. Stateless: the choice is a function of (seed, step),
so every DDP rank draws the same arch and a resumed run draws what the killed one would have. Any model family
(`zoo.family`): its archs and spaces name their family, which says how to group and draw them."""

from __future__ import annotations

import random
from collections import defaultdict

from zoo.family import Arch, Space, get_family


def _rng(seed: int, step: int) -> random.Random:
    return random.Random(seed * 1_000_003 + step)


class PreferredSampler:
    """PreNAS Eq. 11: uniform over the family's `sampling_group`s of the preferred archs ((embed, depth) for the ViT;
    one group for HyTra), then uniform inside. `balanced=False` is the paper's ablation: uniform over the preferred
    archs themselves."""

    def __init__(self, archs: list[Arch], seed: int, balanced: bool = True) -> None:
        if not archs:
            raise ValueError("the preferred sampler needs at least one architecture")
        group = get_family(archs[0].family).sampling_group
        groups: dict = defaultdict(list)
        for a in archs:
            groups[group(a) if balanced else ()].append(a)
        self.groups = [groups[k] for k in sorted(groups)]
        self.seed = seed

    def __call__(self, step: int) -> Arch:
        rng = _rng(self.seed, step)
        return rng.choice(rng.choice(self.groups))


class UniformSampler:
    """AutoFormer's baseline: any architecture of the whole space, as its family's `random_arch` draws it."""

    def __init__(self, space: Space, seed: int) -> None:
        self.space, self.seed = space, seed
        self.draw = get_family(space.family).random_arch

    def __call__(self, step: int) -> Arch:
        return self.draw(self.space, _rng(self.seed, step))


def sandwich(sample, largest: Arch, smallest: Arch, k: int):
    """Largest + smallest + k sampled archs per step (BigNAS-style), as one list."""
    return lambda step: [largest, smallest, *(sample(step * 1_009 + i) for i in range(k))]
