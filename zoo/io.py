"""Atomic writes and checksums: every file that matters is written via temp file + rename."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
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


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the temp files of atomic writes that a kill interrupted before their rename (names as above).
    Only for a folder no other process is writing to at the same time."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


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


def read_versioned_json(path: str | Path, kind: str, version: int, error: type[Exception] = ValueError) -> dict:
    """A JSON document of ours: readable, of the expected `kind`, at a `schema_version` we read."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"cannot read {path}: {e} (missing, truncated or corrupt)") from e
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise error(f"{path} is not a PreZoo {kind} file (kind != '{kind}')")
    if doc.get("schema_version") != version:
        raise error(f"{path}: schema_version {doc.get('schema_version')!r} is not supported (this PreZoo reads "
                    f"{version})")
    return doc
