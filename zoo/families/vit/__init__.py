"""The ViT family (PreNAS / AutoFormer): a weight-sharing vision transformer sliced by prefix.

`arch` (`ViTArch`), `space` (`ViTSpace`, the built-in spaces, sampling, mutation), `cost` (closed-form params and
MACs), `model` (`ViT`, the one forward pass), `supernet` (`ViTSupernet`, the slicing rules) and `pretrained`
(`PreZooViT`, `prezoo_vit` in timm); registered here as the family "vit". (`zoo.official` imports AutoFormer/PreNAS
checkpoints and preferred sets into it.)
"""

from __future__ import annotations

from zoo.families.vit import cost, space
from zoo.families.vit.arch import ViTArch
from zoo.families.vit.pretrained import PreZooViT
from zoo.families.vit.space import ViTSpace
from zoo.families.vit.supernet import ViTSupernet
from zoo.family import Family, register_family

FAMILY = register_family(Family(
    "vit", ViTSpace.from_dict, ViTArch.from_dict, space.BUILTIN_SPACES, cost.params, cost.flops, ViTSupernet,
    cost.FLOPS_RULE, title="ViT", noun="vision transformer", origin="PreNAS preferred architecture",
    describe_arch=space.describe_arch, layer_headers=space.LAYER_HEADERS, layer_rows=space.layer_rows,
    describe_choices=space.describe_choices, cost_range=cost.cost_range, pretrained=PreZooViT,
    sampling_group=lambda a: (a.embed_dim, a.depth), random_arch=space.random_arch,
    extreme_archs=lambda s: (s.smallest_arch(), s.largest_arch()), selectors=("select",),
    default_buckets=space.DEFAULT_BUCKETS, mutate=space.mutate, crossover=space.crossover,
    build_arch=space.build_arch))
