"""A standalone subnet as a Hugging Face / timm model, one class per family (`HUB_CLASSES`):
`PreZooViT.from_pretrained(dir_or_repo)` (or `PreZooHyTra`) and `timm.create_model("prezoo_vit" | "prezoo_hytra" |
"hf-hub:org/name" | "local-dir:DIR", pretrained=True)`.

An exported folder holds `model.safetensors`, `README.md` and one `config.json` read by both:
the mixin takes `space`, `arch`, `labels`, `preprocessing`, `num_classes` (our __init__ args); timm
takes `architecture`, `pretrained_cfg`, `model_args`. Importing `zoo` registers every class's `timm_name` in timm.
Loading needs neither `training` nor the supernet. What differs per family is the standalone module's (`family`,
`timm_name`, `first_conv`, `num_features`, `reset_classifier`) and its class's here (tags, what cannot change).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save as save_safetensors
from torch import nn

from zoo.arch import Arch
from zoo.hytra import HyTraArch, HyTraNet, HyTraSpace
from zoo.io import atomic_write_bytes, atomic_write_text
from zoo.space import SearchSpace
from zoo.vit import TIMM_POOL, ViT

# config.json keys meant for timm, which the mixin also hands to __init__
CONFIG_ONLY_KEYS = {"architecture", "num_features", "label_names", "pretrained_cfg", "model_args"}
VIT_TAGS = ["image-classification", "vision-transformer", "prenas", "timm", "prezoo"]
HYTRA_TAGS = ["image-classification", "hybrid-cnn-transformer", "bossnas", "timm", "prezoo"]


class PreZooHub(PyTorchModelHubMixin):
    """What the families' Hub classes share: a constructor fed by config.json's plain JSON (`_source`, `_configure`)
    and strict loading through timm's loader.

    Like timm's models, `num_classes` other than the weights' builds a fresh head (the loaders then skip the
    saved one); what would change the weights' meaning (`_fixed`) is refused with the value it must have.
    """

    hub_tags: ClassVar[list[str]]
    weights_layout: ClassVar[str]  # whose parameter names model.safetensors uses, for cards
    space_from_dict: ClassVar[Callable[[dict], Any]]
    arch_from_dict: ClassVar[Callable[[dict], Any]]

    @classmethod
    def _fixed(cls, source: Any) -> dict[str, Any]:
        """timm's constructor arguments that must keep the weights' values."""
        raise NotImplementedError

    @classmethod
    def _source(cls, space: dict, arch: dict, timm_kwargs: dict[str, Any], **asked: Any) -> tuple[Any, Any]:
        """config.json's space and arch, after refusing arguments that do not fit the weights."""
        unknown = sorted(set(timm_kwargs) - CONFIG_ONLY_KEYS)
        if unknown:
            raise ValueError(f"unexpected argument(s) {unknown} for {cls.timm_name}: the architecture is fixed by "
                             f"`space` and `arch`")
        source, a = cls.space_from_dict(dict(space)), cls.arch_from_dict(dict(arch))
        img_size = asked.get("img_size")
        if isinstance(img_size, (list, tuple)):
            asked["img_size"] = img_size[0] if len(set(img_size)) == 1 else tuple(img_size)
        for name, actual in cls._fixed(source).items():
            if asked.get(name) is not None and asked[name] != actual:
                raise ValueError(f"this model was trained with {name}={actual}; it cannot be built with "
                                 f"{name}={asked[name]}")
        return source, a

    def _configure(self, source: Any, labels: list[str] | None, preprocessing: dict | None,
                   num_classes: int | None) -> None:
        """The head, labels and preprocessing, once the module is built."""
        if num_classes is not None and num_classes != source.num_classes:
            self.reset_classifier(num_classes)
        self.labels = list(labels) if labels and len(labels) == self.num_classes else \
            [str(i) for i in range(self.num_classes)]
        self.preprocessing = preprocessing or {}
        # what the saved weights are, for the loaders to adapt from (timm replaces it with its resolved cfg)
        self.pretrained_cfg = source_cfg(type(self), source)

    @classmethod
    def feature_cfg(cls, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """timm's features_only adapter (None: timm's default)."""
        return None

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kwargs: Any):  # the mixin defaults to strict=False
        return super()._from_pretrained(strict=strict, **kwargs)

    @classmethod
    def _load_as_safetensor(cls, model: nn.Module, model_file: str, map_location: str, strict: bool) -> nn.Module:
        """timm's loader, so that both ways of loading adapt a head or an input conv alike."""
        from timm.models import load_pretrained

        load_pretrained(model, {**model.pretrained_cfg, "file": model_file}, num_classes=model.num_classes,
                        in_chans=model.in_chans, strict=strict)
        return model.to(map_location).eval()


# the mixin appends its own tags to the list it is given: a copy keeps the tags ours (the cards' tags)
class PreZooViT(ViT, PreZooHub, library_name="timm", tags=[*VIT_TAGS], pipeline_tag="image-classification"):
    """`ViT` whose constructor takes plain JSON (what config.json holds). `in_chans` other than the weights' adapts
    the patch-embedding conv (timm's `adapt_input_conv`)."""

    hub_tags = VIT_TAGS
    weights_layout = "timm's `VisionTransformer` parameter names"
    space_from_dict, arch_from_dict = SearchSpace.from_dict, Arch.from_dict

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 **timm_kwargs: Any) -> None:
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, global_pool=global_pool)
        super().__init__(dataclasses.replace(source, in_chans=source.in_chans if in_chans is None else in_chans), a)
        self._configure(source, labels, preprocessing, num_classes)

    @classmethod
    def _fixed(cls, source: SearchSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "global_pool": TIMM_POOL[source.pool]}

    @classmethod
    def feature_cfg(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """features_only=True: timm's FeatureGetterNet over forward_intermediates, last 3 blocks by default."""
        return {"out_indices": kwargs.pop("out_indices", 3), "feature_cls": "getter"}


class PreZooHyTra(HyTraNet, PreZooHub, library_name="timm", tags=[*HYTRA_TAGS], pipeline_tag="image-classification"):
    """`HyTraNet` whose constructor takes plain JSON (what config.json holds). Its input channels are fixed: the
    space records a mean and std per channel."""

    hub_tags = HYTRA_TAGS
    weights_layout = "`zoo.hytra.HyTraNet`'s parameter names"
    space_from_dict, arch_from_dict = HyTraSpace.from_dict, HyTraArch.from_dict

    def __init__(self, space: dict, arch: dict, labels: list[str] | None = None,
                 preprocessing: dict | None = None, num_classes: int | None = None, in_chans: int | None = None,
                 img_size: int | list[int] | None = None, global_pool: str | None = None,
                 **timm_kwargs: Any) -> None:
        source, a = self._source(space, arch, timm_kwargs, img_size=img_size, global_pool=global_pool,
                                 in_chans=in_chans)
        super().__init__(source, a)
        self._configure(source, labels, preprocessing, num_classes)

    @classmethod
    def _fixed(cls, source: HyTraSpace) -> dict[str, Any]:
        return {"img_size": source.img_size, "global_pool": cls.global_pool, "in_chans": source.in_chans}


HUB_CLASSES: tuple[type[PreZooHub], ...] = (PreZooViT, PreZooHyTra)  # what timm learns when zoo.pretrained loads


def source_cfg(model: type[nn.Module] | nn.Module, space: Any) -> dict[str, Any]:
    """The pretrained_cfg keys timm adapts a model by: the weights' class count, input, first conv and head."""
    return {"num_classes": space.num_classes, "input_size": [space.in_chans, space.img_size, space.img_size],
            "fixed_input_size": True, "first_conv": model.first_conv, "classifier": "head"}


def hf_config(model: nn.Module, labels: list[str], preprocessing: dict) -> dict[str, Any]:
    """The config.json of an exported subnet (see the module docstring)."""
    space = model.space
    model_args = {"space": space.to_dict(), "arch": model.arch.to_dict()}
    pretrained_cfg = {
        **source_cfg(model, space),
        "interpolation": preprocessing.get("interpolation", "bicubic"), "crop_pct": preprocessing.get("crop_pct", 1.0),
        "mean": list(preprocessing.get("mean", [0.5] * space.in_chans)),
        "std": list(preprocessing.get("std", [0.5] * space.in_chans)),
    }
    return {"architecture": model.timm_name, "num_classes": space.num_classes, "num_features": model.num_features,
            "label_names": labels, "pretrained_cfg": pretrained_cfg, "model_args": model_args,
            **model_args, "labels": labels, "preprocessing": preprocessing}


def self_description(model: nn.Module, labels: list[str], preprocessing: dict) -> dict[str, str]:
    """What a lone weights file says about itself (safetensors and ONNX metadata, JSON strings): enough to rebuild
    the model (its family reads the space and arch), name its outputs and prepare its inputs without config.json or
    our index."""
    return {"prezoo.family": model.family, "prezoo.arch": model.arch.to_json(), "prezoo.arch_id": model.arch.id,
            "prezoo.space": model.space.to_json(), "prezoo.labels": json.dumps(labels),
            "prezoo.preprocessing": json.dumps(preprocessing)}


def write_pretrained(out: str | Path, model: nn.Module, labels: list[str], preprocessing: dict, card: str) -> Path:
    """model.safetensors, config.json and README.md (the folder every loader above reads), each written
    atomically; the caller makes the folder itself appear atomically if it needs to."""
    if not model.num_classes:
        raise ValueError("a model without a head (num_classes=0) is a feature extractor; give it a head to save it")
    out = Path(out)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", **self_description(model, labels, preprocessing)}
    atomic_write_bytes(out / "model.safetensors", stable_safetensors(state, metadata))
    config = hf_config(model, labels, preprocessing)
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


# timm's default cfg per class: no class count or input size of its own (-1: timm passes nothing), so a model
# built from its config alone is never silently given 1000 classes.
default_cfgs = {cls.timm_name: {"num_classes": -1, "input_size": None, "first_conv": cls.first_conv,
                                "classifier": "head", "license": "apache-2.0"} for cls in HUB_CLASSES}


def timm_entrypoint(cls: type[PreZooHub]) -> Callable[..., nn.Module]:
    """timm's constructor for `cls`, named `cls.timm_name` (timm registers a function under its name)."""
    from timm.models import build_model_with_cfg

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if "space" not in kwargs or "arch" not in kwargs:
            raise ValueError(f"{cls.timm_name} needs space= and arch= (they are in an exported config.json's "
                             f"model_args); or load with timm.create_model('hf-hub:org/name') / 'local-dir:DIR'")
        # the weights' own class count and input size, so timm never "adapts" (drops) the head
        own = source_cfg(cls, cls.space_from_dict(dict(kwargs["space"])))
        kwargs["pretrained_cfg_overlay"] = {**own, **(kwargs.get("pretrained_cfg_overlay") or {})}
        return build_model_with_cfg(cls, cls.timm_name, pretrained, pretrained_strict=True,
                                    feature_cfg=cls.feature_cfg(kwargs), **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = cls.timm_name
    entrypoint.__doc__ = (f"A PreZoo {cls.family} subnet; `space` and `arch` come from config.json's model_args "
                          f"(hf-hub:, local-dir:) or are passed to `timm.create_model` directly.")
    return entrypoint


def _register_timm() -> None:
    from timm.models import register_model
    from timm.models._registry import is_model

    for cls in HUB_CLASSES:
        if not is_model(cls.timm_name):
            register_model(timm_entrypoint(cls))


_register_timm()
