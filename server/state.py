"""What the REST API and the UI share: the served zoos (one `zoo.catalog.Catalog`), the export cache, the inference
engine, downloads and pushes. Whatever is done with one entry is done by the zoo it came from (`Catalog.zoo_of`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.cache import DEFAULT_MAX_BYTES, ExportCache
from export.download import DOWNLOADS, Download, write_zip, zip_folder
from export.hub import push_folder
from export.repo import link_or_copy, repo_folder
from server.compare import compare_problem
from server.images import ImageLimits, decode_image, to_input
from server.inference import Engine, InferenceConfig, top_k
from server.profile import LatencyProfiler
from zoo.budget import human
from zoo.catalog import Catalog
from zoo.io import remove_stale_temporaries, sha256_file, writer_gone
from zoo.pull import HubError
from zoo.store import Zoo, ZooEntry

log = logging.getLogger("server")


UI = "ui"  # the cache's subfolder of what the UI hands out (named downloads, samples): all its file route serves


@dataclass(frozen=True)
class ServerConfig:
    """How a server runs, beside its zoo and cache folder: `python -m server`'s flags, as one value."""

    admin_token: str | None = None  # enables pushing to the Hub; None: push is off
    hub_token: str | None = None  # the Hub write token (HF_TOKEN); never leaves the process except to the Hub
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    limits: ImageLimits = field(default_factory=ImageLimits)
    cache_max_bytes: int = DEFAULT_MAX_BYTES  # the export cache's size bound (least recently used go first)
    profile_latency: bool = False  # time every entry here in the background after start (`python -m server`: on)
    providers: tuple[list[str], str] | None = None  # (providers, why): skips the CUDA probe; None: probed once
    compare: Sequence[str | Path | Zoo] = ()  # zoos (folders, Hub ids) shown beside the served ones, for comparison
    grpc_address: str | None = None  # 'host:port' of the v2 protocol over gRPC (port 0: a free one); None: off
    grpc_grace_s: float = 10.0  # seconds in-flight gRPC calls get to finish when the server stops


ZooSource = str | Path | Zoo  # a zoo folder, a Hub id or a shipped zoo's name, or a loaded zoo


def loaded(source: ZooSource) -> Zoo:
    """A zoo as given, or loaded from its folder or Hub id (ZooError / HubError if it cannot be used)."""
    return source if isinstance(source, Zoo) else Zoo.load(source)


def catalog(served: ZooSource | Catalog | Sequence[ZooSource]) -> Catalog:
    """The zoos to serve as one catalog: a catalog as given, one zoo, or several (ValueError when they cannot be
    served together: `Catalog`)."""
    if isinstance(served, Catalog):
        return served
    return Catalog([loaded(s) for s in ([served] if isinstance(served, ZooSource) else served)])


class PreZooServer:
    def __init__(self, served: Zoo | Catalog, cache_dir: str | Path, config: ServerConfig) -> None:
        """`served`: one zoo, or several as a Catalog. `config.compare`: zoos loaded and shown beside them for
        comparison only (server.compare); ValueError for one that cannot be compared with them."""
        zoos = Catalog.of(served)
        compare = tuple(loaded(source) for source in config.compare)
        for other in compare:
            if problem := compare_problem(zoos, other):
                raise ValueError(problem)
        self.zoos, self.config, self.compare = zoos, config, compare
        self.cache_dir = Path(cache_dir)
        self.ui_dir = self.cache_dir / UI
        self.exports = ExportCache(self.cache_dir / "exports", config.cache_max_bytes, zoos.zoos)  # removes leftovers
        self.remove_leftovers()
        self.exports.trim()  # over its bound: other zoos' exports go first, then the least recently used
        self.engine = Engine(zoos, self.exports, config.inference, config.providers)
        self.profiler = LatencyProfiler(zoos, self.exports, self.engine, config.profile_latency)
        self.started = time.monotonic()
        self.default_entry = zoos.query()  # no limits: the most accurate entry of all
        self._etags: dict[tuple[Path, int, int], str] = {}
        self._etag_lock = threading.Lock()

    # -- entries -------------------------------------------------------------------------------
    def entry(self, entry_id: str | None) -> ZooEntry:
        """The entry with this id in any served zoo (KeyError naming the known ids), or the most accurate one for
        None."""
        return self.default_entry if entry_id is None else self.zoos.entry(entry_id)

    def served_zoo(self, name: str | None) -> Zoo:
        """The served zoo of this name, or the only one for None (KeyError naming the served zoos)."""
        zoos = {z.name: z for z in self.zoos.zoos}
        if name is None and len(zoos) == 1:
            return self.zoos.zoos[0]
        if name not in zoos:
            asked = "name one" if name is None else f"no served zoo {name!r}"
            raise KeyError(f"{asked}: this server serves {', '.join(zoos)}")
        return zoos[name]

    def pareto_ids(self, by: str = "params") -> list[str]:
        return [e.id for e in self.zoos.pareto(by)]

    def equivalence_note(self, entry: ZooEntry) -> str | None:
        """One line naming the cheapest entry (by params, of any served zoo) whose choosing top-1 (validation where
        every zoo records it, else test: `Catalog.choice_top1`) lies within `entry`'s 95% interval: the choice is the
        best point estimate, which on a finite set of images need not be a real improvement."""
        zoos = self.zoos
        cheaper = zoos.equivalent_cheaper(entry, "params")
        if not cheaper:
            return None
        (lo, hi), (split, images), top1 = zoos.choice_interval(entry), zoos.choice_split(entry), zoos.choice_top1
        first, others = cheaper[0], len(cheaper) - 1
        also = f", as {'is' if others == 1 else 'are'} {others} other cheaper entr{'y' if others == 1 else 'ies'}"
        return (f"{human(first.params)} ({first.id}, {split} top-1 {top1(first):.2f}%) is within the 95% interval "
                f"{lo:.2f}–{hi:.2f}% of the chosen {human(entry.params)} ({entry.id}, {split} top-1 "
                f"{top1(entry):.2f}%){also if others else ''}: statistically as accurate on the {images:,} {split} "
                f"images.")

    # -- downloads -----------------------------------------------------------------------------
    def download(self, entry: ZooEntry, kind: str) -> Path:
        """The file (exported on first request, then cached on disk)."""
        d = DOWNLOADS[kind]
        if d.file is None:
            return self.zipped(entry, d)
        return self.exports.file(self.zoos.zoo_of(entry), entry, d.fmt, d.file)

    def variant_download(self, entry: ZooEntry, name: str) -> Path:
        """The ONNX file of the entry's variant `name` (FP32: its `onnx` download), exported on first request;
        KeyError naming the entry's variants."""
        from export.profile import variant_file

        return variant_file(self.exports, self.zoos.zoo_of(entry), entry, entry.variant(name))

    def zipped(self, entry: ZooEntry, d: Download) -> Path:
        """The export's files in one zip (inside a folder named like the download), written atomically beside the
        export cache and named by the files' sha256: a rebuilt export gets a new zip, the entry's old one goes."""
        with self.exports.reading(self.zoos.zoo_of(entry), entry, d.fmt) as folder:
            files = [folder / name for name in d.files]
            digest = hashlib.sha256("".join(self.etag(f) for f in files).encode()).hexdigest()[:16]
            out = self.cache_dir / "zips" / entry.id / f"{d.fmt}-{digest}.zip"
            if not out.is_file():
                with self.exports.writing(out.parent):
                    out.parent.mkdir(parents=True, exist_ok=True)
                    write_zip(files, zip_folder(entry), out)
                    for old in out.parent.glob(f"{d.fmt}-*.zip"):
                        if old != out:
                            old.unlink(missing_ok=True)
        return out

    def named_download(self, entry: ZooEntry, kind: str) -> Path:
        """The same file under the name users should get (a hard link), for UIs that name downloads by file.
        CacheError when it cannot be written."""
        return self._named(entry, self.download(entry, kind), DOWNLOADS[kind].filename(entry))

    def named_variant_download(self, entry: ZooEntry, name: str) -> Path:
        """`variant_download` as `named_download` hands it out: prezoo-ID.VARIANT.onnx."""
        return self._named(entry, self.variant_download(entry, name), f"prezoo-{entry.id}.{name}.onnx")

    def _named(self, entry: ZooEntry, src: Path, filename: str) -> Path:
        dst = self.ui_dir / "downloads" / entry.id / filename
        if not dst.exists() or dst.stat().st_ino != src.stat().st_ino:
            with self.exports.writing(dst.parent):
                link_or_copy(src, dst)
        return dst

    def remove_leftovers(self) -> list[Path]:
        """The zip and download-link temps of killed processes (never a live one's); what went."""
        return [*remove_stale_temporaries(self.cache_dir / "zips", "*/.*", writer_gone),
                *remove_stale_temporaries(self.ui_dir / "downloads", "*/.*", writer_gone)]

    def etag(self, path: Path) -> str:
        """Strong ETag: the file's sha256 (memoised per path, mtime and size)."""
        st = path.stat()
        key = (path, st.st_mtime_ns, st.st_size)
        with self._etag_lock:
            if key not in self._etags:
                self._etags[key] = sha256_file(path)
            return f'"{self._etags[key]}"'

    # -- inference -----------------------------------------------------------------------------
    def decode(self, data: bytes, name: str, entry: ZooEntry) -> np.ndarray:
        """Validated upload -> (C, H, W) input of `entry`, preprocessed as its zoo says; ImageError for anything we
        refuse."""
        return to_input(decode_image(data, name, self.config.limits), self.zoos.zoo_of(entry).preprocessing)

    async def classify(self, entry: ZooEntry, inputs: list[np.ndarray], k: int) -> list[list[dict]]:
        probabilities = await self.engine.probabilities(entry, np.stack(inputs))
        return top_k(probabilities, self.zoos.classes, min(k, len(self.zoos.classes)))

    # -- Hub push ------------------------------------------------------------------------------
    @property
    def push_enabled(self) -> bool:
        return self.config.admin_token is not None

    def is_admin(self, token: str | None) -> bool:
        admin = self.config.admin_token
        return admin is not None and token is not None and hmac.compare_digest(token.encode(), admin.encode())

    def push(self, repo_id: str, what: ZooEntry | Zoo, private: bool = False) -> str:
        """Push one entry as a model repo (its HF folder and ONNX files, held against eviction while they upload,
        and a card for `repo_id`) or a whole served zoo with its own card; returns the repo URL."""
        zoo, entry = (what, None) if isinstance(what, Zoo) else (self.zoos.zoo_of(what), what)
        label = f"the whole zoo {zoo.name}" if entry is None else entry.id
        try:
            with repo_folder(self.exports, zoo, entry, repo_id) as folder:
                url = push_folder(folder, repo_id, token=self.config.hub_token, private=private,
                                  commit_message=f"Upload {label} from the PreZoo server")
        except HubError as e:
            raise HubError(self.redact(str(e))) from None
        log.info("pushed %s to %s", label, repo_id)
        return url

    def redact(self, text: str) -> str:
        """Belt and braces: no secret of ours in anything we answer or log."""
        for secret in (self.config.hub_token, self.config.admin_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self.profiler.close()
        self.engine.close()
