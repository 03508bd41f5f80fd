"""`PreZooViT`: the ViT family's Hugging Face / timm class (`prezoo_vit`), built from an exported config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from zoo.families.vit.arch import ViTArch
from zoo.families.vit.model import TIMM_POOL, ViT
from zoo.families.vit.space import BUILTIN_SPACES, ViTSpace
from zoo.pretrained import PreZooHub
from zoo.usage import LIBRARY

VIT_TAGS = ["image-classification", "vision-transformer", "prenas", "prezoo"]  # not "timm": zoo.usage.LIBRARY


# the mixin appends its own tags to the list it is given: a copy keeps the tags ours (the cards' tags)
class PreZooViT(ViT, PreZooHub, library_name=LIBRARY, tags=[*VIT_TAGS], pipeline_tag="image-classification"):
    """`ViT` whose constructor takes plain JSON (what config.json holds). `in_chans` other than the weights' adapts
    the patch-embedding conv (timm's `adapt_input_conv`)."""

    hub_tags = VIT_TAGS
    weights_layout = "timm's `VisionTransformer` parameter names"
    space_from_dict, arch_from_dict = ViTSpace.from_dict, ViTArch.from_dict
    # `timm.create_model("prezoo_vit")`: the shipped ladder-fmnist zoo's most accurate entry, e128-d5-84dfd839
    # (tests/test_timm_contract.py keeps them in step)
    timm_default = (BUILTIN_SPACES["ladder"], ViTArch(128, 5, (4, 4, 4, 1, 1), (2.0, 4.0, 4.0, 1.0, 1.0)))

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **timm_kwargs: Any) -> None:
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, global_pool=global_pool)
        super().__init__(dataclasses.replace(source, in_chans=source.in_chans if in_chans is None else in_chans), a)
        self._configure(source, labels, preprocessing, num_classes, device, dtype)

    @classmethod
    def _fixed(cls, source: ViTSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "global_pool": TIMM_POOL[source.pool]}
