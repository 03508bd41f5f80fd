"""PreZoo core: the model families (`zoo.family`, `zoo.families`: search spaces, architectures, cost models,
supernets, standalone subnets) and the zoo store.

`import zoo` is cheap: the names below load on first use (PEP 562 `__getattr__`), so the command-line tools answer
`--help` without importing torch. It still registers every family's architecture (`prezoo_vit`, `prezoo_hytra`) in
timm, which `timm.create_model("hf-hub:...")` needs: at once when timm is loaded, else the moment it is
(`zoo.timm_registration`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.timm_registration import register_with_timm

__version__ = "0.1.0"  # PreZoo's one version: pyproject.toml reads it (dynamic), exported ONNX files record it

if TYPE_CHECKING:
    from zoo.families.hytra import PreZooHyTra
    from zoo.families.mbconv import PreZooMBConv
    from zoo.families.vit.arch import ViTArch
    from zoo.families.vit.cost import cost_range, flops, params
    from zoo.families.vit.model import ViT
    from zoo.families.vit.pretrained import PreZooViT
    from zoo.families.vit.space import BUILTIN_SPACES, ViTSpace, get_space
    from zoo.families.vit.supernet import ViTSupernet, slice_state, slice_tensor
    from zoo.family import Family, get_family, register_family
    from zoo.store import BudgetError, Zoo, ZooEntry, ZooError

    Arch, SearchSpace = ViTArch, ViTSpace

_MODULE_OF = {"ViTArch": "zoo.families.vit.arch", "cost_range": "zoo.families.vit.cost",
              "flops": "zoo.families.vit.cost", "params": "zoo.families.vit.cost", "ViT": "zoo.families.vit.model",
              "PreZooViT": "zoo.families.vit.pretrained", "BUILTIN_SPACES": "zoo.families.vit.space",
              "ViTSpace": "zoo.families.vit.space", "get_space": "zoo.families.vit.space",
              "ViTSupernet": "zoo.families.vit.supernet", "slice_state": "zoo.families.vit.supernet",
              "slice_tensor": "zoo.families.vit.supernet", "PreZooHyTra": "zoo.families.hytra",
              "PreZooMBConv": "zoo.families.mbconv",
              "Family": "zoo.family", "get_family": "zoo.family", "register_family": "zoo.family",
              "BudgetError": "zoo.store", "Zoo": "zoo.store", "ZooEntry": "zoo.store", "ZooError": "zoo.store"}
# names from before the families were plug-ins (issue 22), for code written then
_RENAMED = {"Arch": "ViTArch", "SearchSpace": "ViTSpace"}

__all__ = ["BUILTIN_SPACES", "BudgetError", "Family", "PreZooHyTra", "PreZooMBConv", "PreZooViT", "ViT", "ViTArch",
           "ViTSpace", "ViTSupernet", "Zoo", "ZooEntry", "ZooError", "cost_range", "flops", "get_family", "get_space",
           "params", "register_family", "slice_state", "slice_tensor"]


def __getattr__(name: str) -> Any:
    """`zoo.Zoo`, `from zoo import ViTArch`: the name's module is imported on first use, then the name is cached."""
    new = _RENAMED.get(name, name)
    if new not in _MODULE_OF:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[new]), new)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_RENAMED})


register_with_timm()
