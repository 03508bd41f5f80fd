"""`PreZooMBConv`: the MBConv family's Hugging Face / timm class (`prezoo_mbconv`), built from an exported
config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from zoo.families.mbconv.model import MBConvNet
from zoo.families.mbconv.space import MBCONV_SMALL, MBConvArch, MBConvSpace, arch
from zoo.pretrained import PreZooHub
from zoo.usage import LIBRARY

MBCONV_TAGS = ["image-classification", "mbconv", "efficientnet", "prezoo"]  # not "timm": zoo.usage.LIBRARY


# the mixin appends its own tags to the list it is given: a copy keeps the tags ours (the cards' tags)
class PreZooMBConv(MBConvNet, PreZooHub, library_name=LIBRARY, tags=[*MBCONV_TAGS],
                   pipeline_tag="image-classification"):
    """`MBConvNet` whose constructor takes plain JSON (what config.json holds). `in_chans` other than the weights'
    adapts the stem conv (timm's `adapt_input_conv`); `global_pool=""` (with num_classes=0) gives the unpooled
    feature maps."""

    hub_tags = MBCONV_TAGS
    weights_layout = "`zoo.families.mbconv.MBConvNet`'s parameter names"
    space_from_dict, arch_from_dict = MBConvSpace.from_dict, MBConvArch.from_dict
    # `timm.create_model("prezoo_mbconv")`: the shipped zoo mbconv-fmnist's most accurate entry
    timm_default = (MBCONV_SMALL, arch((12, [["fused", 3, 2, False]]),
                                        (40, [["residual", 3, 1, False], ["mbconv", 3, 3, True]]),
                                        (96, [["residual", 3, 1, False], ["fused", 3, 2, False],
                                              ["mbconv", 5, 3, False]])))

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **timm_kwargs: Any) -> None:
        # no pooling ("") keeps what the weights mean; reset_classifier allows it only without a head
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, global_pool=global_pool or None)
        super().__init__(dataclasses.replace(source, in_chans=source.in_chans if in_chans is None else in_chans), a)
        self._configure(source, labels, preprocessing, num_classes, device, dtype)
        if global_pool == "":
            self.reset_classifier(self.num_classes, "")

    @classmethod
    def _fixed(cls, source: MBConvSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "global_pool": cls.global_pool}

    @classmethod
    def pool_size(cls, space: MBConvSpace, arch: MBConvArch) -> tuple[int, int]:
        side = space.resolution(space.num_stages - 1)
        return side, side
