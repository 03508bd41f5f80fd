"""What every family's Hugging Face / timm class shares (`PreZooHub`), and the exported folder they all read:
`<Family.pretrained>.from_pretrained(dir_or_repo)` (`PreZooViT`, `PreZooHyTra`) and `timm.create_model(<timm_name> |
"hf-hub:org/name" | "local-dir:DIR", pretrained=True)`.

An exported folder holds `model.safetensors`, `README.md` and one `config.json` read by both:
the mixin takes `space`, `arch`, `labels`, `preprocessing`, `num_classes` (our __init__ args); timm
takes `architecture`, `pretrained_cfg`, `model_args`. Every registered family's class is a timm architecture under
its `timm_name` once timm is loaded (`register_in_timm`, called by `zoo.family` and `zoo.timm_registration`).
Loading needs neither `training` nor the supernet. What differs per family is the standalone module's (`family`,
`timm_name`, `first_conv`, `num_features`, `reset_classifier`) and its Hub class's (tags, what cannot change, the
default model of its timm name, the size of its feature maps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save as save_safetensors
from torch import nn

from zoo.io import atomic_write_bytes, atomic_write_text

# config.json keys meant for timm, which the mixin also hands to __init__
CONFIG_ONLY_KEYS = {"architecture", "num_features", "label_names", "pretrained_cfg", "model_args"}


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
    timm_default: ClassVar[tuple[Any, Any]]  # (space, arch) that `timm.create_model(timm_name)` builds

    @classmethod
    def _fixed(cls, source: Any) -> dict[str, Any]:
        """timm's constructor arguments that must keep the weights' values."""
        raise NotImplementedError

    @classmethod
    def _source(cls, space: dict, arch: dict, timm_kwargs: dict[str, Any], **asked: Any) -> tuple[Any, Any]:
        """config.json's space and arch, after refusing arguments that do not fit the weights."""
        unknown = sorted(set(timm_kwargs) - CONFIG_ONLY_KEYS)
        if unknown:  # a TypeError, as any constructor's (timm's tests expect it)
            raise TypeError(f"unexpected argument(s) {unknown} for {cls.timm_name}: the architecture is fixed by "
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
                   num_classes: int | None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> None:
        """The head, labels and preprocessing once the module is built, then the device and dtype asked for (timm's
        `create_model(device=, dtype=)`)."""
        if num_classes is not None and num_classes != source.num_classes:
            self.reset_classifier(num_classes)
        self.labels = list(labels) if labels and len(labels) == self.num_classes else \
            [str(i) for i in range(self.num_classes)]
        self.preprocessing = preprocessing or {}
        # what the saved weights are, for the loaders to adapt from (timm replaces it with its resolved cfg)
        self.pretrained_cfg = source_cfg(type(self), source)
        self.to(device=device, dtype=dtype)

    @classmethod
    def feature_cfg(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """features_only=True: timm's FeatureGetterNet over forward_intermediates, the last 3 layers by default."""
        return {"out_indices": kwargs.pop("out_indices", 3), "feature_cls": "getter"}

    @classmethod
    def pool_size(cls, space: Any, arch: Any) -> tuple[int, int] | None:
        """The (H, W) of forward_features' maps, for timm's cfg; None: tokens, as for timm's ViTs."""
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


# timm's default cfg per registered class (timm reads this module's `default_cfgs` when registering the entrypoints
# made here): its default model's (`timm_default`), with the shipped zoos' preprocessing (Fashion-MNIST,
# zoos/*/zoo.json; tests/test_timm_contract.py keeps them in step).
default_cfgs: dict[str, dict[str, Any]] = {}
SHIPPED_PREPROCESSING = {"mean": (0.286,), "std": (0.353,), "interpolation": "bicubic", "crop_pct": 1.0}


def timm_cfg(cls: type[PreZooHub], space: Any, arch: Any) -> dict[str, Any]:
    """What timm's cfg says of `arch` in `space`: `source_cfg`, and the size of the feature maps."""
    return {**source_cfg(cls, space), "pool_size": cls.pool_size(space, arch)}


def timm_entrypoint(cls: type[PreZooHub]) -> Callable[..., nn.Module]:
    """timm's constructor for `cls`, named `cls.timm_name` (timm registers a function under its name)."""
    from timm.models import build_model_with_cfg

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if ("space" in kwargs) != ("arch" in kwargs):
            raise TypeError(f"{cls.timm_name} takes space= and arch= together (an exported config.json's model_args) "
                            f"or neither (its default model)")
        if "space" in kwargs:
            space, arch = cls.space_from_dict(dict(kwargs["space"])), cls.arch_from_dict(dict(kwargs["arch"]))
        else:
            space, arch = cls.timm_default
            kwargs.update(space=space.to_dict(), arch=arch.to_dict())
        # the weights' own class count and input size, so timm never "adapts" (drops) the head
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        kwargs["pretrained_cfg_overlay"] = {**timm_cfg(cls, space, arch), **overlay}
        return build_model_with_cfg(cls, cls.timm_name, pretrained, pretrained_strict=True,
                                    feature_cfg=cls.feature_cfg(kwargs), **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = cls.timm_name
    entrypoint.__doc__ = (f"A PreZoo {cls.family} subnet; `space` and `arch` come from config.json's model_args "
                          f"(hf-hub:, local-dir:) or are passed to `timm.create_model` directly; without them, "
                          f"{cls.timm_default[1].id} of {cls.timm_default[0].name}.")
    return entrypoint


def register_in_timm(cls: type[PreZooHub]) -> None:
    """`cls` as the timm architecture `cls.timm_name` (once: a family registered again keeps the first)."""
    from timm.models import register_model
    from timm.models._registry import is_model

    if not is_model(cls.timm_name):
        default_cfgs[cls.timm_name] = {**timm_cfg(cls, *cls.timm_default), **SHIPPED_PREPROCESSING,
                                       "license": "apache-2.0"}
        register_model(timm_entrypoint(cls))
