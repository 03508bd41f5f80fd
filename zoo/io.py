"""Atomic writes and checksums: every file that matters is written via temp file + rename (and the temporaries a kill
left are found and removed); our JSON documents are read back bounded (size, nesting) with every number finite."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path, pattern: str = ".*.tmp",
                             stale: Callable[[Path], bool] = lambda _: True) -> list[Path]:
    """Delete the temporaries (files or folders named like `pattern` in `folder`) that a kill interrupted before
    their rename; what went. `stale` tells one no live process is writing; the default, any: only for a folder no
    other process is writing to at the same time. Best effort: a start must not fail on a read-only leftover."""
    removed = []
    for tmp in Path(folder).glob(pattern):
        if not stale(tmp):
            continue
        with suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def private_temp(target: Path) -> Path:
    """A temp name beside `target` that no other writer (process or thread) uses: `.{name}.{pid}.{thread}`."""
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")


def writer_gone(tmp: Path) -> bool:
    """Whether the process that named `tmp` (`private_temp`) is no longer running; False for any other name and
    when in doubt (its pid taken by some other process since: the temp stays)."""
    named = re.fullmatch(r"\..+\.([0-9]{1,9})\.[0-9]+", tmp.name)
    if not named or int(named[1]) == 0:
        return False
    try:
        os.kill(int(named[1]), 0)  # signal 0: only asks whether it exists
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


@contextmanager
def held_folder(folder: Path) -> Iterator[None]:
    """An exclusive lock (flock) on the folder itself during the block: it is being written (`folder_in_use`).
    The kernel drops it when the process dies, however it dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_folder(new: Path, old: Path) -> None:
    """Put folder `new` at `old`'s path in one step: rename if `old` does not exist, else exchange the two
    atomically (Linux renameat2 RENAME_EXCHANGE), leaving the previous content at `new`."""
    if not old.exists():
        new.rename(old)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(old), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {new} into {old}: {os.strerror(err)}")


@contextmanager
def staged_folder(target: Path, tag: str = "", swap: Callable[[Path, Path], object] = replace_folder) -> Iterator[Path]:
    """A new folder beside `target` (`.{name}.{tag}XXXXXXXX`), held (`held_folder`) while the block writes it and
    `swap` (default `replace_folder`) puts it at `target`: readers see the old folder or the new one, never a partial
    one. Whatever is left at the temp name afterwards goes: a failed new folder, or the old one after an exchange."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{tag}"))
    try:
        with held_folder(tmp):
            yield tmp
            swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_in_use(folder: Path) -> bool:
    """Whether some process holds `folder` (`held_folder`), or may be about to: an empty folder's maker may not
    have taken the lock yet. Never waits."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return True  # gone, or not a folder: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return not os.listdir(fd)
    except OSError:  # BlockingIOError: held
        return True
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_figure(path: str | Path, fig) -> Path:
    """A matplotlib figure as PNG, written atomically (the caller closes the figure)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


MAX_JSON_BYTES = 16 * 1024 * 1024  # our documents are kilobytes; a zoo index with 1000 classes is ~100 KiB
MAX_JSON_DEPTH = 32  # our documents nest 5 levels deep; json.loads itself recurses (RecursionError near 1000)


def clip(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters: error messages quote what they refuse, never all of a huge value."""
    return text if len(text) <= limit else text[:limit] + "…"


def quote(value: object, limit: int = 60) -> str:
    return clip(repr(value), limit)


def printable(text: str) -> str:
    """`text` as one line with every control character escaped (`\\x1b`, `\\n`): a message that quotes a file
    name or a library's text cannot restyle, move or rewrite the user's terminal."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)


def json_path(loc: tuple[str | int, ...]) -> str:
    """('entries', 2, 'top1') -> 'entries[2].top1', the way the messages name a field (clipped: keys are data)."""
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else f"{'.' if text else ''}{clip(str(key), 40)}"
    return clip(text, 120)


def json_problem(value: object, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why parsed JSON is not one of our documents (a number that is not finite, nesting too deep), or None."""
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{json_path(loc)} must be a finite number, got {item}"
        if isinstance(item, dict | list) and len(loc) >= max_depth:
            return f"{json_path(loc)} nests deeper than {max_depth} levels"
        children = list(item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ())
        stack.extend((child, (*loc, key)) for key, child in reversed(children))  # popped in document order
    return None


def read_versioned_json(path: str | Path, kind: str, version: int, error: type[Exception] = ValueError) -> dict:
    """A JSON document of ours: readable, bounded (size, nesting), every number finite, of the expected `kind`,
    at a `schema_version` we read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise error(f"cannot read {path}: {e} (missing, truncated or corrupt)") from e
    if len(data) > MAX_JSON_BYTES:
        raise error(f"{path} is over {MAX_JSON_BYTES // 2**20} MiB: not a PreZoo {kind} file")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise error(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a PreZoo {kind} file") from None
    except ValueError as e:
        raise error(f"cannot read {path}: {e} (missing, truncated or corrupt)") from e
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise error(f"{path} is not a PreZoo {kind} file (kind != '{kind}')")
    if doc.get("schema_version") != version:
        raise error(f"{path}: schema_version {quote(doc.get('schema_version'))} is not supported (this PreZoo "
                    f"reads {version})")
    if problem := json_problem(doc):
        raise error(f"{path}: {problem}")
    return doc
