"""PreZoo core: search spaces, architectures, cost model, supernet, standalone subnets, the zoo store.

`import zoo` is cheap: the names below load on first use (PEP 562 `__getattr__`), so the command-line tools answer
`--help` without importing torch. It still registers PreZoo's architectures (`prezoo_vit`, `prezoo_hytra`) in timm,
which `timm.create_model("hf-hub:...")` needs: at once when timm is loaded, else the moment it is
(`zoo.timm_registration`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.timm_registration import register_with_timm

if TYPE_CHECKING:
    from zoo.arch import Arch
    from zoo.cost import cost_range, flops, params
    from zoo.pretrained import PreZooHyTra, PreZooViT
    from zoo.space import BUILTIN_SPACES, SearchSpace, get_space
    from zoo.store import BudgetError, Zoo, ZooEntry, ZooError
    from zoo.supernet import ViTSupernet, slice_state, slice_tensor
    from zoo.vit import ViT

_MODULE_OF = {"Arch": "zoo.arch", "cost_range": "zoo.cost", "flops": "zoo.cost", "params": "zoo.cost",
              "PreZooHyTra": "zoo.pretrained", "PreZooViT": "zoo.pretrained", "BUILTIN_SPACES": "zoo.space",
              "SearchSpace": "zoo.space", "get_space": "zoo.space", "BudgetError": "zoo.store", "Zoo": "zoo.store",
              "ZooEntry": "zoo.store", "ZooError": "zoo.store", "ViTSupernet": "zoo.supernet",
              "slice_state": "zoo.supernet", "slice_tensor": "zoo.supernet", "ViT": "zoo.vit"}

__all__ = ["Arch", "BUILTIN_SPACES", "BudgetError", "PreZooHyTra", "PreZooViT", "SearchSpace", "ViT", "ViTSupernet",
           "Zoo", "ZooEntry", "ZooError", "cost_range", "flops", "get_space", "params", "slice_state", "slice_tensor"]


def __getattr__(name: str) -> Any:
    """`zoo.Zoo`, `from zoo import Arch`: the name's module is imported on first use, then the name is cached."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


register_with_timm()
