"""Register PreZoo's architectures (`prezoo_vit`, `prezoo_hytra`: `zoo.pretrained.HUB_CLASSES`) in timm whenever timm
is loaded, without importing timm (or torch) before someone does.

timm finds architectures only in its registry, which `zoo.pretrained` fills when imported; `import zoo` promises
that `timm.create_model("hf-hub:org/name")` then works. Importing timm eagerly would cost every `--help` seconds,
so `import zoo` imports `zoo.pretrained` at once only when timm is already loaded, and otherwise installs a finder
that runs the import right after timm's own. `zoo.vit` imports timm half-way through its own import, when
`zoo.pretrained` (which needs `zoo.vit` whole) cannot be imported yet: then the registration waits for `zoo.vit`'s
end.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

WATCHED = ("timm", "zoo.vit")  # registering needs both loaded (zoo.pretrained imports zoo.vit, which imports timm)
_executing: set[str] = set()


def register_with_timm() -> None:
    if "timm" in sys.modules:
        importlib.import_module("zoo.pretrained")
    elif not any(isinstance(f, RegisterAfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, RegisterAfterTimm())


class RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds no module itself: for the WATCHED modules it asks the other finders and wraps the loader they return,
    so that `zoo.pretrained` is imported once the module's code has run."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name not in WATCHED:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = ThenRegister(spec.loader)
                return spec
        return None


class ThenRegister(importlib.abc.Loader):
    """The real loader, then the registration (unless zoo.vit is still mid-import: its own end registers)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package ...: the real loader's
        if name == "loader":  # asked before __init__ set it (a copy being made): no endless recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        _executing.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            _executing.discard(module.__name__)
        if "zoo.vit" not in _executing:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, RegisterAfterTimm)]
            importlib.import_module("zoo.pretrained")
