"""Register every model family's Hub class (`prezoo_vit`, `prezoo_hytra`, ...: `Family.pretrained`) in timm whenever
timm is loaded, without importing timm (or torch) before someone does.

timm finds architectures only in its registry; `import zoo` promises that `timm.create_model("hf-hub:org/name")` then
works. Importing timm eagerly would cost every `--help` seconds, so `import zoo` registers the families at once only
when timm is already loaded, and otherwise installs a finder that does it right after timm's own import. A family
registered while timm is loaded registers itself (`zoo.family.register_family`): so does one whose own import is
what loads timm, at its end, since it is not yet registered when timm's import ends.
"""

from __future__ import annotations

import importlib.abc
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def register_with_timm() -> None:
    if "timm" in sys.modules:
        register_families()
    elif not any(isinstance(f, RegisterAfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, RegisterAfterTimm())


def register_families() -> None:
    """Every family registered so far (the built-in ones imported first) as a timm architecture."""
    from zoo.family import FAMILIES
    from zoo.pretrained import register_in_timm

    for family in FAMILIES.values():
        register_in_timm(family.pretrained)


class RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds no module itself: for timm it asks the other finders and wraps the loader they return, so that the
    families are registered once timm's code has run."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "timm":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = ThenRegister(spec.loader)
                return spec
        return None


class ThenRegister(importlib.abc.Loader):
    """The real loader, then the registration."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package ...: the real loader's
        if name == "loader":  # asked before __init__ set it (a copy being made): no endless recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, RegisterAfterTimm)]
        register_families()
