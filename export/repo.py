"""What a Hub push uploads, assembled in a staging folder that is gone after the push.

A model repo: the HF folder (config.json, model.safetensors) and the fp32, INT8 and fp16 ONNX files from the export
cache, held against eviction while they upload, and a card rendered for the repo id. A zoo repo: the zoo's index
and weights, a card with every entry and a Pareto plot. Files are hard links (copies across file systems), so
neither the export cache nor the zoo folder is ever changed by a push, and only what the repo should hold goes up
(not the cache's checksums and use markers). Cards and the plot are the same bytes for the same repo, so pushing
the same thing twice uploads nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from export.cache import ALL_FORMATS, FILES, STAGING, ExportCache
from export.hf import CARD, PLOT, model_card, pareto_plot, zoo_card
from zoo.io import atomic_write_text, held_folder, private_temp
from zoo.pull import check_repo_id
from zoo.store import INDEX, Zoo, ZooEntry


def repo_folder(cache: ExportCache, zoo: Zoo, entry: ZooEntry | None, repo_id: str, base_model: str | None = None):
    """`model_repo` for an entry, `zoo_repo` for None (the whole zoo): a context manager giving the folder."""
    return zoo_repo(cache, zoo, repo_id) if entry is None else model_repo(cache, zoo, entry, repo_id, base_model)


@contextmanager
def model_repo(cache: ExportCache, zoo: Zoo, entry: ZooEntry, repo_id: str,
               base_model: str | None = None) -> Iterator[Path]:
    """The folder to push as `repo_id` for one entry (exports built if needed; CacheError if they cannot be); its card
    names `base_model` (the zoo's repo, checked by the caller) or the repo the zoo was pulled from."""
    check_repo_id(repo_id)  # before any work; also: the card's code quotes it
    with ExitStack() as held:
        files = {}
        for fmt in ALL_FORMATS:
            folder = held.enter_context(cache.reading(zoo, entry, fmt))
            files.update({name: folder / name for name in FILES[fmt] if name != CARD})
        yield held.enter_context(staging(cache, files, lambda stage: atomic_write_text(
            stage / CARD, model_card(zoo, entry, repo_id, base_model))))


@contextmanager
def zoo_repo(cache: ExportCache, zoo: Zoo, repo_id: str) -> Iterator[Path]:
    """The folder to push as `repo_id` for the whole zoo."""
    check_repo_id(repo_id)
    def write(stage: Path) -> None:
        pareto_plot(zoo, stage / PLOT)
        atomic_write_text(stage / CARD, zoo_card(zoo, repo_id))

    weights = zoo.doc["weights"]["file"]  # checked at load: a file inside the zoo folder
    with staging(cache, {INDEX: zoo.root / INDEX, weights: zoo.root / weights}, write) as stage:
        yield stage


@contextmanager
def staging(cache: ExportCache, files: dict[str, Path], write: Callable[[Path], object]) -> Iterator[Path]:
    """A temporary folder in the cache's folder holding `files` (name in the folder -> source) and what `write`
    adds, removed afterwards; CacheError when it cannot be written (only its making: not what the block does)."""
    with ExitStack() as made:
        with cache.writing(cache.root):
            cache.root.mkdir(parents=True, exist_ok=True)
            stage = Path(made.enter_context(tempfile.TemporaryDirectory(dir=cache.root, prefix=STAGING)))
            made.enter_context(held_folder(stage))  # in use: another process's start leaves it alone
            for name, source in files.items():
                link_or_copy(source, stage / name)
            write(stage)
        yield stage


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes a hard link to `source` (a copy on another file system), atomically: no partial file on
    failure, and a reader sees the old target or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_temp(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it was renamed
