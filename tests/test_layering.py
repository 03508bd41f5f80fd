"""Imports point inward (issue 22): `zoo` is the core and imports none of the other packages; `export` may import
`zoo`; `server` may import `zoo` and `export`; `training` may import `zoo`. So nothing imports `training` at serving
time, and no module imports an entry point (`PACKAGE.__main__`) or `prezoo`, the one command above them all.

Every import counts: at module level, inside functions (lazy), and under `if TYPE_CHECKING:` too (no exemption: a
type from an outer package is a dependency on it all the same, and none is needed), plus `importlib.import_module`
and `__import__` with a literal name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the packages its modules may import (itself included)
MAY_IMPORT = {"zoo": {"zoo"}, "export": {"zoo", "export"}, "server": {"zoo", "export", "server"},
              "training": {"zoo", "training"}, "prezoo": {"zoo", "export", "server", "training", "prezoo"}}
DYNAMIC = {"import_module", "__import__"}


def module_parts(path: Path) -> list[str]:
    """['server', 'inference'] for server/inference.py, ['server'] for server/__init__.py."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(source: str, parts: list[str], is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import in a module's source: `from a import b` gives 'a.b' (b may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts if is_package else parts[:-1]
            prefix = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join([*prefix, *([node.module] if node.module else [])])
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in DYNAMIC):
            yield node.lineno, node.args[0].value


def back_arrows(package: str, source: str, parts: list[str], is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, why) of each import of `source` (a module of `package`) that points outward."""
    for line, name in imports(source, parts, is_package):
        top = name.split(".")[0]
        if top in MAY_IMPORT and top not in MAY_IMPORT[package]:
            yield line, f"imports {name}: {package} may import only {', '.join(sorted(MAY_IMPORT[package]))}"
        elif package != "prezoo" and "__main__" in name.split("."):
            yield line, f"imports {name}: an entry point is run, never imported (move what it shares to a module)"


def modules() -> list[Path]:
    return sorted(p for package in MAY_IMPORT for p in (ROOT / package).rglob("*.py"))


def test_no_module_of_the_packages_imports_outward():
    found = [f"{path.relative_to(ROOT)}:{line}: {why}" for path in modules()
             for line, why in back_arrows(path.relative_to(ROOT).parts[0], path.read_text(), module_parts(path),
                                          path.name == "__init__.py")]
    assert not found, "back-arrows:\n" + "\n".join(found)


def test_every_package_is_read():
    read = {path.relative_to(ROOT).parts[0] for path in modules()}
    assert read == set(MAY_IMPORT) and len(modules()) > 40


LAZY = '''
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from server.state import PreZooServer
def get():
    from export.cache import ExportCache
    import importlib
    return importlib.import_module("training.train")
def run():
    from . import __main__, store
'''


@pytest.mark.parametrize(("package", "expected"), [
    ("zoo", ["server.state.PreZooServer", "export.cache.ExportCache", "training.train", "zoo.__main__"]),
    ("server", ["training.train", "server.__main__"]),
    ("prezoo", []),
])
def test_lazy_type_checking_dynamic_and_relative_imports_all_count(package, expected):
    found = [why for _, why in sorted(back_arrows(package, LAZY, [package, "x"]))]
    assert len(found) == len(expected), found
    assert all(why.startswith(f"imports {name}:") for name, why in zip(expected, found, strict=True)), found


def test_relative_imports_resolve_inside_their_package():
    assert [name for _, name in imports("from . import store\nfrom .io import x", ["zoo", "hub"])] == [
        "zoo.store", "zoo.io.x"]
    assert [name for _, name in imports("from . import store", ["zoo"], is_package=True)] == ["zoo.store"]
