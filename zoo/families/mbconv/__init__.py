"""The MBConv family: a convolutional weight-sharing supernet of inverted-residual (MBConv), fused-MBConv and
residual blocks, OFA-style (per-stage widths and depths, per-block op, kernel, expansion, squeeze-excite).

`space` (`MBConvSpace`, `MBConvArch`, the built-in spaces), `layers` (every shape of a path, the closed-form cost),
`model` (`MBConvNet`, `MBConvSupernet`, the one block forward), `sampling` (draws, extremes, mutation, crossover),
`relaxation` (what DARTS's search needs: decisions, E[params], the skip share),
`describe` (words and tables) and `pretrained` (`PreZooMBConv`, `prezoo_mbconv` in timm); registered here as the
family "mbconv".
"""

from __future__ import annotations

from zoo.families.mbconv import describe, relaxation, sampling
from zoo.families.mbconv.layers import FLOPS_RULE, flops, params
from zoo.families.mbconv.model import MBConvNet, MBConvSupernet
from zoo.families.mbconv.pretrained import PreZooMBConv
from zoo.families.mbconv.space import BUILTIN_SPACES, MBConvArch, MBConvSpace
from zoo.family import Family, Relaxation, register_family

__all__ = ["FAMILY", "MBConvArch", "MBConvNet", "MBConvSpace", "MBConvSupernet", "PreZooMBConv"]

DEFAULT_BUCKETS = {"mbconv-fmnist": {"low": 1e4, "high": 2.56e6, "ratio": 2.0},
                   "mbconv-small": {"low": 1e4, "high": 6.4e5, "ratio": 2.0}}

FAMILY = register_family(Family(
    "mbconv", MBConvSpace.from_dict, MBConvArch.from_dict, BUILTIN_SPACES, params, flops, MBConvSupernet,
    FLOPS_RULE, title="MBConv", noun="convolutional network", origin="path of the MBConv space",
    describe_arch=describe.describe_arch, layer_headers=describe.LAYER_HEADERS, layer_rows=describe.layer_rows,
    describe_choices=describe.describe_choices, cost_range=sampling.cost_range, pretrained=PreZooMBConv,
    sampling_group=lambda a: (), random_arch=sampling.random_arch, extreme_archs=sampling.extreme_archs,
    calibrate_bn=True, selectors=("select", "bossnas"), default_buckets=DEFAULT_BUCKETS, mutate=sampling.mutate,
    crossover=sampling.crossover, build_arch=sampling.build_arch, decisions_of=sampling.decisions_of,
    relaxation=Relaxation(relaxation.decisions, relaxation.ExpectedParams, relaxation.skip_share)))
