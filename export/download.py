"""What a user downloads of an entry: each kind is one file of an export format (the cache's `FILES`), or all of a
format's files zipped in one folder; with the media type and the name the file gets, and the zip writer."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from export.cache import FILES
from zoo.io import private_temp
from zoo.store import ZooEntry

BINARY = "application/octet-stream"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: a zip of the same files is the same bytes (stable ETag)


@dataclass(frozen=True)
class Download:
    """One downloadable file of an entry: which export holds it (`file` None: all of that export's files, zipped
    in one folder), its media type and the name users get."""

    fmt: str
    file: str | None
    media_type: str
    suffix: str

    @property
    def files(self) -> tuple[str, ...]:
        """The export's files this download holds."""
        return FILES[self.fmt] if self.file is None else (self.file,)

    def filename(self, entry: ZooEntry) -> str:
        return f"prezoo-{entry.id}{self.suffix}"


DOWNLOADS = {
    "safetensors": Download("safetensors", "model.safetensors", BINARY, ".safetensors"),
    "config": Download("safetensors", "config.json", "application/json", ".config.json"),
    "card": Download("safetensors", "README.md", "text/markdown; charset=utf-8", ".README.md"),
    "onnx": Download("onnx", "model.onnx", BINARY, ".onnx"),
    "onnx-int8": Download("onnx-int8", "model.int8.onnx", BINARY, ".int8.onnx"),
    "onnx-fp16": Download("onnx-fp16", "model.fp16.onnx", BINARY, ".fp16.onnx"),
    "hf-zip": Download("safetensors", None, "application/zip", ".hf.zip"),
}


def zip_folder(entry: ZooEntry) -> str:
    """The folder a zipped download unpacks to."""
    return f"prezoo-{entry.id}"


def write_zip(files: list[Path], folder: str, out: Path) -> Path:
    """`files` under `folder/` in a zip at `out`, atomically; fixed dates and modes, stored uncompressed (weights do
    not compress): the same files give the same bytes."""
    tmp = private_temp(out)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for f in files:
                info = zipfile.ZipInfo(f"{folder}/{f.name}", date_time=ZIP_TIME)
                info.external_attr = 0o644 << 16
                with z.open(info, "w") as dst, open(f, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when it was renamed
    return out
