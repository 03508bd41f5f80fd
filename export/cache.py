"""Export cache keyed by (zoo checksum, arch id, format): each export is built once, even when many
threads or processes ask for it at the same time, and appears atomically (temp folder + rename). An entry's variant
(its weights at a precision map's widths, `zoo.store.Variant`) is the format `variant-NAME-DIGEST`: the key names the
variant and its map, so a changed map is another export.

Bounded: after each build (and on a server's start) least-recently-used exports are evicted until the cache holds
at most `max_bytes`, other zoos' exports first. "Used" is a marker file we touch on each `get` (not the file
system's atime, which is often off). An export is in use while its lock file is held, by any process: exclusively
while it is built, shared while another build reads it (INT8 and fp16 are made from the fp32 ONNX); eviction takes
the lock without waiting and skips what it cannot take.

A failed write (read-only or full disk, quota, permissions) leaves nothing behind and becomes one `CacheError`
naming the folder and the OS error; the cache keeps it as its `problem` until a real write (a build) succeeds: a
small probe would pass on a disk too full for any export. What a kill left (build temp folders, Hub push staging
folders) goes when a cache opens the folder, unless a live process still holds it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from export.hf import write_hf_folder
from export.onnx import FORMATS, convert_fp16, export_onnx, model_metadata, provenance, quantize_int8
from zoo.io import atomic_write_text, folder_in_use, remove_stale_temporaries, sha256_file, staged_folder
from zoo.store import Variant, Zoo, ZooEntry

log = logging.getLogger("server")
ALL_FORMATS = ("safetensors", *FORMATS)
FILES = {"safetensors": ("model.safetensors", "config.json", "README.md"), "onnx": ("model.onnx",),
         "onnx-int8": ("model.int8.onnx",), "onnx-fp16": ("model.fp16.onnx",)}
VARIANT = "variant-"  # + name + "-" + digest: an entry's variant (`variant_format`)
VARIANT_FORMAT = re.compile(r"variant-([A-Za-z0-9][A-Za-z0-9_-]{0,47})-([0-9a-f]{12})")
VARIANT_FILES = ("model.onnx",)
DEFAULT_MAX_BYTES = 2 * 1024**3
LAST_USED = ".last-used"  # its mtime: when the export was last asked for
STAGING = ".push-"  # the prefix of Hub push staging folders in the cache's folder (export.repo)


def variant_format(variant: Variant) -> str:
    """The cache format of an entry's stored variant: its name and its map's digest."""
    return f"{VARIANT}{variant.name}-{variant.digest}"


def known_format(fmt: str) -> bool:
    return fmt in ALL_FORMATS or VARIANT_FORMAT.fullmatch(fmt) is not None


def files_of(fmt: str) -> tuple[str, ...]:
    """The files an export of `fmt` holds."""
    return FILES[fmt] if fmt in FILES else VARIANT_FILES


class CacheError(Exception):
    """The export cache could not be written (the OS error is the cause): the server's disk, not the request."""


@dataclass(frozen=True)
class CachedExport:
    folder: Path
    size: int
    last_used: float


class ExportCache:
    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, serving: Iterable[Zoo] = ()) -> None:
        """`serving`: the zoos a server serves, whose exports are evicted last."""
        if max_bytes < 1:
            raise ValueError(f"the export cache needs a positive size bound, got {max_bytes} bytes")
        self.root, self.max_bytes = Path(root), max_bytes
        self.builds: dict[str, int] = defaultdict(int)  # key -> times built by this process
        self.evictions: dict[str, int] = defaultdict(int)  # key -> times evicted by this process
        self.problem: str | None = None  # the last write failure, until a write works again
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._trimming = threading.Lock()
        self._verified: dict[Path, tuple[int, ...]] = {}  # folder -> identity it had when its sha256 matched
        self.serving = frozenset(_prefix(z) for z in serving)
        self.remove_leftovers()

    def get(self, zoo: Zoo, entry: ZooEntry, fmt: str) -> Path:
        """The folder holding the export's files (`FILES[fmt]`), building it if needed (CacheError if it cannot)."""
        if not known_format(fmt):
            raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(ALL_FORMATS)}, or a variant's")
        key = f"{_prefix(zoo)}/{entry.id}/{fmt}"
        folder = self.root / key
        with self._guard:
            lock = self._locks[key]
        with lock:
            if not self._intact(folder, fmt):
                with self.writing(self.root), _locked(folder, fcntl.LOCK_EX):  # other processes
                    if not self._intact(folder, fmt):  # missing, or corrupt: (re)build
                        shutil.rmtree(folder, ignore_errors=True)
                        self._build(zoo, entry, fmt, folder)
                        self.builds[key] += 1
                self.trim(zoo, keep=folder)
        _touch(folder / LAST_USED)
        return folder

    def file(self, zoo: Zoo, entry: ZooEntry, fmt: str, name: str | None = None) -> Path:
        """One file of an export (the main one by default)."""
        name = name or files_of(fmt)[0]
        if name not in files_of(fmt):
            raise ValueError(f"format '{fmt}' has files {files_of(fmt)}, not '{name}'")
        return self.get(zoo, entry, fmt) / name

    @contextmanager
    def writing(self, folder: Path) -> Iterator[None]:
        """Turn an OSError of the block into a CacheError naming `folder`, kept as `problem`; success clears it."""
        try:
            yield
        except OSError as e:
            self.problem = f"cannot write to {folder}: {e}"
            raise CacheError(self.problem) from e
        self.problem = None

    def check(self) -> str | None:
        """The last write's problem, if it failed: cleared by the next write that works, not by a probe (a few KiB
        fit on a disk too full for any export)."""
        return self.problem

    def remove_leftovers(self) -> list[Path]:
        """Remove what killed processes left: build temp folders whose export no build holds, staging folders no
        push holds (other live processes' are kept); what went."""
        return [*remove_stale_temporaries(self.root, "*/*/.*.*", self._build_gone),
                *remove_stale_temporaries(self.root, f"{STAGING}*", lambda stage: not folder_in_use(stage))]

    def _build_gone(self, tmp: Path) -> bool:
        """Whether `tmp` is a build temp folder (`_build`) and no build of its export runs: its lock is free."""
        fmt = tmp.name[1:].split(".")[0]
        if not known_format(fmt) or not tmp.is_dir() or tmp.is_symlink():
            return False
        try:
            with _locked(tmp.parent / fmt, fcntl.LOCK_EX | fcntl.LOCK_NB):
                return True
        except OSError:  # BlockingIOError: a build (or a reader) holds it
            return False

    # -- size bound ------------------------------------------------------------------------------
    def exports(self) -> list[CachedExport]:
        """Every finished export in the cache (any zoo), with its size and when it was last used."""
        found = []
        for folder in self.root.glob("*/*/*"):
            if known_format(folder.name):
                try:
                    found.append(CachedExport(folder, _size(folder), _last_used(folder)))
                except FileNotFoundError:  # evicted meanwhile
                    pass
        return found

    def size(self) -> int:
        return sum(e.size for e in self.exports())

    def trim(self, *zoos: Zoo, keep: Path | None = None) -> None:
        """Evict exports until the cache holds at most `max_bytes`: first those of zoos other than `zoos` and the
        served ones, then the least recently used; never `keep` or an export in use. An eviction that fails is kept
        as `problem` (the bound is not held)."""
        with self._trimming:
            exports = self.exports()
            total = sum(e.size for e in exports)
            current = self.serving | {_prefix(z) for z in zoos}
            for export in sorted(exports, key=lambda e: (e.folder.parts[-3] in current, e.last_used)):
                if total <= self.max_bytes:
                    return
                if export.folder == keep:
                    continue
                try:
                    if self._evict(export.folder):
                        total -= export.size
                except OSError as e:
                    self.problem = f"cannot evict from {self.root}: {e}"
                    log.warning("export cache: %s", self.problem)
                    return
            if total > self.max_bytes:
                log.info("export cache: %d bytes, over the bound of %d: what is left is in use or just built",
                         total, self.max_bytes)

    def _evict(self, folder: Path) -> bool:
        """Remove one export unless some build (of any process) holds its lock file; whether it went."""
        try:
            with _locked(folder, fcntl.LOCK_EX | fcntl.LOCK_NB):
                if not folder.exists():  # another process evicted it first
                    return False
                self._verified.pop(folder, None)
                shutil.rmtree(folder)
        except BlockingIOError:
            return False
        self.evictions[str(folder.relative_to(self.root))] += 1
        log.info("export cache: evicted %s", folder)
        return True

    # -- building ----------------------------------------------------------------------------------
    def _build(self, zoo: Zoo, entry: ZooEntry, fmt: str, folder: Path) -> None:
        """Write the export beside `folder` and rename it there (`get` removed any old one under the lock): a failed
        build leaves no partial files behind."""
        with staged_folder(folder, swap=Path.rename) as tmp:
            if fmt == "safetensors":
                write_hf_folder(zoo, entry, tmp)
            elif fmt == "onnx":
                model = zoo.subnet(entry)
                export_onnx(model, tmp / "model.onnx", model_metadata(model, zoo.classes, zoo.preprocessing),
                            about=provenance(zoo, entry))
            elif fmt.startswith(VARIANT):
                write_variant(zoo, entry, fmt, tmp / VARIANT_FILES[0])
            else:
                convert = quantize_int8 if fmt == "onnx-int8" else convert_fp16
                with self.reading(zoo, entry, "onnx") as onnx_folder:
                    convert(onnx_folder / FILES["onnx"][0], tmp / FILES[fmt][0])
            atomic_write_text(tmp / "sha256.json", json.dumps({n: sha256_file(tmp / n) for n in files_of(fmt)}))
            (tmp / LAST_USED).touch()

    @contextmanager
    def reading(self, zoo: Zoo, entry: ZooEntry, fmt: str) -> Iterator[Path]:
        """The export's folder (built if needed), held with a shared lock: no process evicts it during the block."""
        while True:
            folder = self.get(zoo, entry, fmt)
            with _locked(folder, fcntl.LOCK_SH):
                if folder.is_dir():  # not evicted between `get` and the lock
                    yield folder
                    return

    def _intact(self, folder: Path, fmt: str) -> bool:
        """Present and matching its recorded sha256 (hashed once per process while the folder stays the same one:
        another process may evict or rebuild it)."""
        try:
            identity = _identity(folder)
        except OSError:
            return False
        if self._verified.get(folder) == identity:
            return True
        try:
            sums = json.loads((folder / "sha256.json").read_text())
            ok = all(sha256_file(folder / name) == sums.get(name) for name in files_of(fmt))
        except (OSError, ValueError):
            ok = False
        if ok:
            self._verified[folder] = identity
        return ok


def write_variant(zoo: Zoo, entry: ZooEntry, fmt: str, path: Path) -> Path:
    """The ONNX file of the entry's variant that `fmt` names (`export.mixed`: its weights at its map's widths, the
    variant named in the metadata); ValueError when the entry's variant of that name has another map now."""
    from export.mixed import export_mixed

    name, digest = VARIANT_FORMAT.fullmatch(fmt).groups()
    variant = entry.variant(name) if name in entry.variants else None
    if variant is None or variant.digest != digest:
        raise ValueError(f"entry {entry.id} of zoo {zoo.name} has no variant {name} with map {digest}")
    model = zoo.subnet(entry)
    metadata = {**model_metadata(model, zoo.classes, zoo.preprocessing), "prezoo.variant": name}
    return export_mixed(model, dict(variant.bits), path, metadata, about=provenance(zoo, entry)).path


def _prefix(zoo: Zoo) -> str:
    return zoo.checksum[:16]


def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def _locked(folder: Path, operation: int) -> Iterator[None]:
    """Hold the export's lock file (next to its folder; never deleted, so every process locks the same one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(_lock_path(folder), os.O_RDONLY | os.O_CREAT, 0o644)  # read-only: opens on a read-only cache
    try:
        fcntl.flock(lock, operation)
        yield
    finally:
        os.close(lock)


def _identity(folder: Path) -> tuple[int, ...]:
    """Changes when the folder is replaced (evicted and rebuilt), even by another process."""
    sums = (folder / "sha256.json").stat()
    return folder.stat().st_ino, sums.st_ino, sums.st_mtime_ns


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def _last_used(folder: Path) -> float:
    """The marker's mtime; 0 (the oldest) for a folder without one."""
    try:
        return (folder / LAST_USED).stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _touch(marker: Path) -> None:
    """Record a use, to the clock's full resolution (the kernel's own file times can tie within a few ms); a
    read-only cache still serves what it holds, only without recording."""
    now = time.time_ns()
    try:
        marker.touch()
        os.utime(marker, ns=(now, now))
    except OSError as e:
        log.debug("export cache: cannot record the use of %s: %s", marker.parent, e)
