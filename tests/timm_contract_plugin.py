"""A pytest plugin for timm's own tests/test_models.py (run by tests/test_timm_contract.py): only PreZoo's registered
names, each held to the rules that file applies to the timm family nearest to it.

timm's file picks models with `timm.list_models`: by name patterns (its EXCLUDE_*_FILTERS and NON_STD_FILTERS, each
with timm's reason) and by module (FEAT_INTER_FILTERS: models with `forward_intermediates`). A PreZoo name is matched
as its kin's would be: a ViT as one of timm's `vit_*` in `vision_transformer` (token features: "non-standard"), HyTra
as BoTNet in `byoanet` (ResNet bottlenecks with self-attention), MBConv as one of timm's EfficientNets in
`efficientnet`. So every exclusion a PreZoo name gets is timm's own, but for those in EXCLUDE: PreZoo's own, each with
its reason, as timm's file gives its own (they are skipped, with the reason, so that the report shows them).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import pytest
import timm

import zoo  # noqa: F401  registers PreZoo's names in timm

list_all_models = timm.list_models
PREZOO = list_all_models("prezoo_*")
KIN = {"prezoo_vit*": ("vit_{}", "vision_transformer"), "prezoo_hytra*": ("{}", "byoanet"),
       "prezoo_mbconv*": ("{}", "efficientnet")}  # name, module
SKIP_PREFIX = "excluded by PreZoo: "
EXCLUDE = {  # test function: [(name pattern, reason)]
    "test_model_forward_torchscript": [(
        "prezoo_*",
        "torch.jit.script (deprecated by torch: 'switch to torch.compile or torch.export') cannot compile the "
        "functional forward each family's standalone model shares with its supernet (parameters by name or modules "
        "as arguments, architecture dataclasses); scripting its torch.fx trace works "
        "(test_model_forward_fx_torchscript)")],
}


def _patterns(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def kin(name: str) -> tuple[str, str]:
    """The name and module `name` is matched as."""
    for pattern, (alias, module) in KIN.items():
        if fnmatch.fnmatch(name, pattern):
            return alias.format(name), module
    raise LookupError(f"{name}: name its nearest timm family in KIN")


def list_models(filter: str | Iterable[str] = "", module: str | Iterable[str] = "", pretrained: bool = False,
                exclude_filters: str | Iterable[str] = "", name_matches_cfg: bool = False,
                include_tags: bool | None = None) -> list[str]:
    """`timm.list_models` over PreZoo's names, each matched as its kin (tags: PreZoo's names have none)."""
    def picked(name: str) -> bool:
        alias, kin_module = kin(name)
        return ((not filter or any(fnmatch.fnmatch(alias, p) for p in _patterns(filter)))
                and not any(fnmatch.fnmatch(alias, p) for p in _patterns(exclude_filters))
                and (not module or kin_module in _patterns(module))
                and name in list_all_models(name, pretrained=pretrained, name_matches_cfg=name_matches_cfg))
    return [name for name in PREZOO if picked(name)]


timm.list_models = list_models
timm.list_pretrained = lambda *args, **kwargs: []  # timm's reference outputs exist for its own `test_*` models only


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop the tests of timm's own named models (convnext_atto, ...) and those of no model; name the model of each
    kept test in the JUnit report (a `model_name` property)."""
    keep = [i for i in items if getattr(i, "callspec", None) and i.callspec.params.get("model_name") in PREZOO]
    keep_ids = set(map(id, keep))
    config.hook.pytest_deselected(items=[i for i in items if id(i) not in keep_ids])
    for item in keep:
        name = item.callspec.params["model_name"]
        item.user_properties.append(("model_name", name))
        for pattern, reason in EXCLUDE.get(item.originalname, ()):
            if fnmatch.fnmatch(name, pattern):
                item.add_marker(pytest.mark.skip(reason=SKIP_PREFIX + reason))
    items[:] = keep
