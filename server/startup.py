"""What every way of serving checks before it serves (`python -m server`, the Ray Serve application): the zoos load
and can be served together, the cache folder takes writes. A problem here is the operator's to fix: one line, no
traceback."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.pull import HubError

if TYPE_CHECKING:
    from zoo.catalog import Catalog
    from zoo.store import Zoo

CACHE = Path(os.environ.get("PREZOO_CACHE", Path.home() / ".cache" / "prezoo"))


class StartError(Exception):
    """A problem the operator fixes (zoo, token, port): one line, no traceback."""


def onnx_runtime() -> None:
    """ONNX Runtime comes from an extra, `cpu` (onnxruntime) or `gpu` (onnxruntime-gpu): the same module, so `serve`
    cannot bring either without clashing with the other. Without one, say which to add, before anything loads."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise StartError("ONNX Runtime is not installed: install PreZoo with an extra that brings it, "
                         "pip install 'prezoo[serve,cpu]' (or 'prezoo[serve,gpu]' for onnxruntime-gpu; never both)")


def load_zoo(source: str, what: str = "zoo") -> Zoo:
    """The zoo a flag names (zoo.store imports torch: loaded here, after parsing); `what` names the option in the
    message when it cannot be used."""
    from zoo.store import Zoo, ZooError

    try:
        return Zoo.load(source)
    except (ZooError, HubError, OSError) as e:  # ZooError: the zoo's schema names whatever is malformed
        raise StartError(f"cannot use {what} {source}: {e}") from None


def served_zoos(sources: list[str]) -> Catalog:
    """The zoos --zoo names, or every shipped zoo (`zoo.store.shipped_zoos`) when it names none, each loaded as
    `load_zoo` loads it, as one catalog: StartError when no zoo is shipped or they cannot be served together (another
    dataset or classes, an entry id two of them hold)."""
    from zoo.catalog import Catalog
    from zoo.store import CHECKOUT_ZOOS, shipped_zoos

    sources = sources or [str(folder) for folder in shipped_zoos().values()]
    if not sources:
        raise StartError(f"no shipped zoo is built yet (none in {CHECKOUT_ZOOS}): build one with `python -m training` "
                         f"(see the README) or pass --zoo DIR|org/name")
    zoos = [load_zoo(source) for source in sources]
    try:
        return Catalog(zoos)
    except ValueError as e:
        raise StartError(f"cannot serve these zoos together: {e}") from None


def writable_cache(path: str) -> Path:
    """The cache folder, created if needed: the server writes exports and samples there, so one that cannot be
    written is an operator's fix at start, not a failure on every first request."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise StartError(f"--cache {folder} cannot be written ({e.strerror}); pass a writable folder") from None
    return folder
