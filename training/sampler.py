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


class OptionBalancedSampler:
    """Every decision's every option trained about equally often, whatever share of the space's paths runs it: each
    step draws one (decision, option) uniformly, then a path that takes it, the other decisions drawn uniformly
    (rejection until the path reaches the decision: in HyTra a decision exists only at the scale it is named by).
    Under uniform sampling a module that few paths run is trained in almost no step, and those paths score near
    chance (bench_coverage); here each of a space's U options is the target of 1/U of the steps. Needs the family's
    `build_arch` and `relaxation` (its decisions and their options)."""

    MAX_TRIES = 100_000

    def __init__(self, space: Space, seed: int) -> None:
        family = get_family(space.family)
        if family.build_arch is None or family.relaxation is None:
            raise ValueError(f"the option-balanced sampler needs a family built from named decisions ({family.name} "
                             "is not)")
        self.space, self.seed, self.build = space, seed, family.build_arch
        self.targets = [(name, option) for name, options in family.relaxation.decisions(space).items()
                        for option in options]

    def __call__(self, step: int) -> Arch:
        rng = _rng(self.seed, step)
        target, option = rng.choice(self.targets)
        for _ in range(self.MAX_TRIES):
            reached = False

            def choose(name: str, options: tuple):
                nonlocal reached
                reached |= name == target
                return option if name == target else rng.choice(options)
            arch = self.build(self.space, choose)
            if reached:
                return arch
        raise RuntimeError(f"no path of {self.space.name} reached {target} in {self.MAX_TRIES} draws")


def sandwich(sample, largest: Arch, smallest: Arch, k: int):
    """Largest + smallest + k sampled archs per step (BigNAS-style), as one list."""
    return lambda step: [largest, smallest, *(sample(step * 1_009 + i) for i in range(k))]
