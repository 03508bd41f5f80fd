"""What every way of serving checks before it serves (`python -m server`, the Ray Serve application): the zoo loads,
the cache folder takes writes. A problem here is the operator's to fix: one line, no traceback."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.pull import HubError

if TYPE_CHECKING:
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


def load_zoo(source: str | None, what: str = "zoo") -> Zoo:
    """The zoo --zoo names, or the built-in one (zoo.store imports torch: loaded here, after parsing); `what` names
    the option in the message when it cannot be used."""
    from zoo.store import DEFAULT_ZOO, Zoo, ZooError

    if source is None and not DEFAULT_ZOO.exists():
        raise StartError(f"the default zoo {DEFAULT_ZOO} is not built yet: build it with `python -m training` "
                         f"(see the README) or pass --zoo DIR|org/name")
    source = source or str(DEFAULT_ZOO)
    try:
        return Zoo.load(source)
    except (ZooError, HubError, OSError) as e:  # ZooError: the zoo's schema names whatever is malformed
        raise StartError(f"cannot use {what} {source}: {e}") from None


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
