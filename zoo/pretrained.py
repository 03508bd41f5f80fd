"""A standalone subnet as a Hugging Face / timm model: `PreZooViT.from_pretrained(dir_or_repo)` and
`timm.create_model("prezoo_vit" | "hf-hub:org/name" | "local-dir:DIR", pretrained=True)`.

An exported folder holds `model.safetensors`, `README.md` and one `config.json` read by both:
the mixin takes `space`, `arch`, `labels`, `preprocessing`, `num_classes` (our __init__ args); timm
takes `architecture`, `pretrained_cfg`, `model_args`. Importing `zoo` registers `prezoo_vit` in timm.
Loading needs neither `training` nor the supernet.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save as save_safetensors

from zoo.arch import Arch
from zoo.io import atomic_write_bytes, atomic_write_text
from zoo.space import SearchSpace
from zoo.vit import TIMM_POOL, ViT

TIMM_NAME = "prezoo_vit"
# config.json keys meant for timm, which the mixin also hands to __init__
CONFIG_ONLY_KEYS = {"architecture", "num_features", "label_names", "pretrained_cfg", "model_args"}
HUB_TAGS = ["image-classification", "vision-transformer", "prenas", "timm", "prezoo"]


# the mixin appends its own tags to the list it is given: a copy keeps HUB_TAGS ours (the cards' tags)
class PreZooViT(ViT, PyTorchModelHubMixin, library_name="timm", tags=[*HUB_TAGS], pipeline_tag="image-classification"):
    """`ViT` whose constructor takes plain JSON (what config.json holds).

    Like timm's models, `num_classes` other than the weights' builds a fresh head (the loaders then skip the
    saved one) and `in_chans` other than theirs adapts the patch-embedding conv (timm's `adapt_input_conv`).
    """

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 **timm_kwargs: Any) -> None:
        unknown = sorted(set(timm_kwargs) - CONFIG_ONLY_KEYS)
        if unknown:
            raise ValueError(f"unexpected argument(s) {unknown} for {TIMM_NAME}: the architecture is fixed by "
                             f"`space` and `arch`")
        source, a = SearchSpace.from_dict(dict(space)), Arch.from_dict(dict(arch))
        if isinstance(img_size, (list, tuple)):
            img_size = img_size[0] if len(set(img_size)) == 1 else tuple(img_size)
        for name, asked, actual in (("img_size", img_size, source.img_size),
                                    ("global_pool", global_pool, TIMM_POOL[source.pool])):
            if asked is not None and asked != actual:
                raise ValueError(f"this model was trained with {name}={actual}; it cannot be built with "
                                 f"{name}={asked}")
        super().__init__(dataclasses.replace(source, in_chans=source.in_chans if in_chans is None else in_chans), a)
        if num_classes is not None and num_classes != source.num_classes:
            self.reset_classifier(num_classes)
        self.labels = list(labels) if labels and len(labels) == self.num_classes else \
            [str(i) for i in range(self.num_classes)]
        self.preprocessing = preprocessing or {}
        # what the saved weights are, for the loaders to adapt from (timm replaces it with its resolved cfg)
        self.pretrained_cfg = source_cfg(source)

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kwargs: Any):  # the mixin defaults to strict=False
        return super()._from_pretrained(strict=strict, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model: PreZooViT, model_file: str, map_location: str, strict: bool) -> PreZooViT:
        """timm's loader, so that both ways of loading adapt a head or an input conv alike."""
        from timm.models import load_pretrained

        load_pretrained(model, {**model.pretrained_cfg, "file": model_file}, num_classes=model.num_classes,
                        in_chans=model.in_chans, strict=strict)
        return model.to(map_location).eval()


def source_cfg(space: SearchSpace) -> dict[str, Any]:
    """The pretrained_cfg keys timm adapts a model by: the weights' class count, input, first conv and head."""
    return {"num_classes": space.num_classes, "input_size": [space.in_chans, space.img_size, space.img_size],
            "fixed_input_size": True, "first_conv": "patch_embed.proj", "classifier": "head"}


def hf_config(space: SearchSpace, arch: Arch, labels: list[str], preprocessing: dict) -> dict[str, Any]:
    """The config.json of an exported subnet (see the module docstring)."""
    model_args = {"space": space.to_dict(), "arch": arch.to_dict()}
    pretrained_cfg = {
        **source_cfg(space),
        "interpolation": preprocessing.get("interpolation", "bicubic"), "crop_pct": preprocessing.get("crop_pct", 1.0),
        "mean": list(preprocessing.get("mean", [0.5] * space.in_chans)),
        "std": list(preprocessing.get("std", [0.5] * space.in_chans)),
    }
    return {"architecture": TIMM_NAME, "num_classes": space.num_classes, "num_features": arch.embed_dim,
            "label_names": labels, "pretrained_cfg": pretrained_cfg, "model_args": model_args,
            **model_args, "labels": labels, "preprocessing": preprocessing}


def self_description(model: ViT, labels: list[str], preprocessing: dict) -> dict[str, str]:
    """What a lone weights file says about itself (safetensors and ONNX metadata, JSON strings): enough to rebuild
    the model, name its outputs and prepare its inputs without config.json or our index."""
    return {"prezoo.arch": model.arch.to_json(), "prezoo.arch_id": model.arch.id,
            "prezoo.space": model.space.to_json(), "prezoo.labels": json.dumps(labels),
            "prezoo.preprocessing": json.dumps(preprocessing)}


def write_pretrained(out: str | Path, model: ViT, labels: list[str], preprocessing: dict, card: str) -> Path:
    """model.safetensors, config.json and README.md (the folder every loader above reads), each written
    atomically; the caller makes the folder itself appear atomically if it needs to."""
    if not model.num_classes:
        raise ValueError("a model without a head (num_classes=0) is a feature extractor; give it a head to save it")
    out = Path(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", **self_description(model, labels, preprocessing)}
    atomic_write_bytes(out / "model.safetensors", stable_safetensors(state, metadata))
    config = hf_config(model.space, model.arch, labels, preprocessing)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / "README.md", card)
    return out


def stable_safetensors(state: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """safetensors' bytes with the header's metadata in sorted key order. safetensors writes the metadata from a hash
    map, in an order that changes from call to call; the same model must be the same bytes (checksums agree, pushing
    it again uploads nothing). Offsets count from the end of the header, so only the header is rewritten."""
    data = save_safetensors(state, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the tensor data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


# timm's default cfg for `prezoo_vit`: no class count or input size of its own (-1: timm passes
# nothing), so a model built from its config alone is never silently given 1000 classes.
default_cfgs = {TIMM_NAME: {"num_classes": -1, "input_size": None, "first_conv": "patch_embed.proj",
                            "classifier": "head", "license": "apache-2.0"}}


def _register_timm() -> None:
    from timm.models import build_model_with_cfg, register_model
    from timm.models._registry import is_model

    if is_model(TIMM_NAME):
        return

    @register_model
    def prezoo_vit(pretrained: bool = False, **kwargs: Any) -> PreZooViT:
        """A PreZoo subnet; `space` and `arch` come from config.json's model_args (hf-hub:, local-dir:)
        or are passed to `timm.create_model` directly."""
        if "space" not in kwargs or "arch" not in kwargs:
            raise ValueError("prezoo_vit needs space= and arch= (they are in an exported config.json's "
                             "model_args); or load with timm.create_model('hf-hub:org/name') / 'local-dir:DIR'")
        # the weights' own class count and input size, so timm never "adapts" (drops) the head
        own = source_cfg(SearchSpace.from_dict(dict(kwargs["space"])))
        kwargs["pretrained_cfg_overlay"] = {**own, **(kwargs.get("pretrained_cfg_overlay") or {})}
        # features_only=True: timm's FeatureGetterNet over forward_intermediates, last 3 blocks by default
        feature_cfg = {"out_indices": kwargs.pop("out_indices", 3), "feature_cls": "getter"}
        return build_model_with_cfg(PreZooViT, TIMM_NAME, pretrained, pretrained_strict=True,
                                    feature_cfg=feature_cfg, **kwargs)

    del prezoo_vit


_register_timm()
