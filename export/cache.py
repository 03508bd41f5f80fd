"""Export cache keyed by (zoo checksum, arch id, format): each export is built once, even when many
threads or processes ask for it at the same time, and appears atomically (temp folder + rename)."""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

from export.hf import write_hf_folder
from export.onnx import FORMATS, convert_fp16, export_onnx, model_metadata, quantize_int8
from zoo.io import atomic_write_text, sha256_file
from zoo.store import Zoo, ZooEntry

ALL_FORMATS = ("safetensors", *FORMATS)
FILES = {"safetensors": ("model.safetensors", "config.json", "README.md"), "onnx": ("model.onnx",),
         "onnx-int8": ("model.int8.onnx",), "onnx-fp16": ("model.fp16.onnx",)}


class ExportCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.builds: dict[str, int] = defaultdict(int)  # key -> times built by this process
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._verified: set[Path] = set()

    def get(self, zoo: Zoo, entry: ZooEntry, fmt: str) -> Path:
        """The folder holding the export's files (`FILES[fmt]`), building it if needed."""
        if fmt not in ALL_FORMATS:
            raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(ALL_FORMATS)}")
        key = f"{zoo.checksum[:16]}/{entry.id}/{fmt}"
        folder = self.root / key
        with self._guard:
            lock = self._locks[key]
        with lock:
            if not self._intact(folder, fmt):
                folder.parent.mkdir(parents=True, exist_ok=True)
                with open(folder.parent / f".{fmt}.lock", "w") as lockfile:  # other processes
                    fcntl.flock(lockfile, fcntl.LOCK_EX)
                    if not self._intact(folder, fmt):  # missing, or corrupt: (re)build
                        shutil.rmtree(folder, ignore_errors=True)
                        self._build(zoo, entry, fmt, folder)
        return folder

    def file(self, zoo: Zoo, entry: ZooEntry, fmt: str, name: str | None = None) -> Path:
        """One file of an export (the main one by default)."""
        name = name or FILES[fmt][0]
        if name not in FILES[fmt]:
            raise ValueError(f"format '{fmt}' has files {FILES[fmt]}, not '{name}'")
        return self.get(zoo, entry, fmt) / name

    def _build(self, zoo: Zoo, entry: ZooEntry, fmt: str, folder: Path) -> None:
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{fmt}."))
        try:
            if fmt == "safetensors":
                write_hf_folder(zoo, entry, tmp)
            elif fmt == "onnx":
                model = zoo.subnet(entry)
                export_onnx(model, tmp / "model.onnx", model_metadata(model, zoo.classes, zoo.preprocessing))
            elif fmt == "onnx-int8":
                quantize_int8(self.file(zoo, entry, "onnx"), tmp / FILES[fmt][0])
            else:
                convert_fp16(self.file(zoo, entry, "onnx"), tmp / FILES[fmt][0])
            atomic_write_text(tmp / "sha256.json", json.dumps({n: sha256_file(tmp / n) for n in FILES[fmt]}))
            tmp.rename(folder)
            self.builds[f"{zoo.checksum[:16]}/{entry.id}/{fmt}"] += 1
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    def _intact(self, folder: Path, fmt: str) -> bool:
        """Present and matching its recorded sha256 (checked once per process)."""
        if folder in self._verified:
            return True
        try:
            sums = json.loads((folder / "sha256.json").read_text())
            ok = all(sha256_file(folder / name) == sums.get(name) for name in FILES[fmt])
        except (OSError, ValueError):
            ok = False
        if ok:
            self._verified.add(folder)
        return ok
