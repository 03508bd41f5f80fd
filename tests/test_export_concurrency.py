"""Exports under concurrency and disk faults, end to end: the real server on loopback (REST and the UI's own event
protocol), ONNX Runtime, and a small tmpfs of our own that we fill or remount read-only.

Concurrent exports of every entry and format (and cold predicts) give the bytes of a sequential export; a cache that
cannot be written is a JSON 507 (a gr.Error in the UI) and a degraded health until a write works again, and stops
`python -m server` at start; the cache keeps to its size bound, least recently used first, older zoos before.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from export.cache import ALL_FORMATS, FILES, LAST_USED, ExportCache
from export.download import DOWNLOADS, write_zip, zip_folder
from export.onnx import export_onnx, model_metadata, provenance
from export.runtime import CPU
from server.__main__ import parse_args
from server.app import create_app
from server.state import ServerConfig
from server.ui import DOWNLOAD_BUTTONS, SliderScale
from tests.test_server import LARGEST, MID, SMALL, png, predict, run_server, serve
from tests.zoo_fixtures import make_zoo
from zoo import Zoo, ZooEntry

CPU_ONLY = ([CPU], "test: CPU")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def failure(r: httpx.Response) -> str:
    return f"HTTP {r.status_code}: {r.text[:300]}"


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory) -> ExportCache:
    """Every export of every entry, made one after the other in a cache of its own."""
    cache = ExportCache(tmp_path_factory.mktemp("sequential"))
    for entry in zoo.entries:
        for fmt in ALL_FORMATS:
            cache.get(zoo, entry, fmt)
    return cache


@pytest.fixture(scope="module")
def sequential(zoo, reference, tmp_path_factory) -> dict[tuple[str, str], str]:
    """sha256 of each (entry id, download kind) of the sequential export (a zipped kind: its files, zipped here)."""
    zips = tmp_path_factory.mktemp("zips")

    def file(e: ZooEntry, kind: str) -> Path:
        d = DOWNLOADS[kind]
        if d.file is None:
            folder = reference.get(zoo, e, d.fmt)
            return write_zip([folder / name for name in FILES[d.fmt]], zip_folder(e), zips / f"{e.id}-{kind}.zip")
        return reference.file(zoo, e, d.fmt, d.file)

    return {(e.id, kind): sha(file(e, kind).read_bytes()) for e in zoo.entries for kind in DOWNLOADS}


# -- the UI as the browser drives it ----------------------------------------------------------------

def ui_event(client: httpx.Client, session: str, fn_index: int, data: list) -> dict:
    """One UI event as the browser sends it (join Gradio's queue, read the session's stream): its completion."""
    join = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                       "event_data": None, "trigger_id": None})
    assert join.status_code == 200, join.text
    event_id = join.json()["event_id"]
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line.removeprefix("data:")) if line.startswith("data:") else {}
            if message.get("event_id") == event_id and message["msg"] == "process_completed":
                return message
    raise AssertionError(f"the event stream ended before event {event_id} completed")


def ui_specialize_and_prepare(url: str, budget: list) -> tuple[str, dict]:
    """The Specialize button in a fresh browser session: its summary, and the completion of the download
    preparation it chains (`PreZooUI.prepare_downloads`, private: not reachable by gradio_client)."""
    with httpx.Client(base_url=url, timeout=300) as client:
        dependencies = client.get("/config").json()["dependencies"]
        click = next(d["id"] for d in dependencies if d.get("api_name") == "apply_budget")
        prepare = next(d["id"] for d in dependencies if d.get("trigger_after") == click)
        session = uuid.uuid4().hex
        chosen = ui_event(client, session, click, budget)
        assert chosen["success"], chosen
        return chosen["output"]["data"][0], ui_event(client, session, prepare, [None])


def ui_budgets(zoo: Zoo) -> dict[str, list]:
    """Slider values (parameters, FLOPs, latency, plot axis) and no bytes limit that choose each entry of the params
    Pareto front."""
    params = SliderScale.of("parameters", [e.params for e in zoo.entries])
    flops = SliderScale.of("FLOPs", [e.flops for e in zoo.entries])
    budgets = {}
    for entry in zoo.pareto("params"):
        max_params = round(math.ceil(entry.params / params.factor / params.step) * params.step, 6)
        assert zoo.query(max_params * params.factor, flops.maximum * flops.factor) == entry
        budgets[entry.id] = [max_params, flops.maximum, None, "params", ""]
    return budgets


# -- item 1: concurrent exports -------------------------------------------------------------------

def test_export_onnx_from_many_threads_gives_the_sequential_bytes(zoo, sequential, tmp_path):
    """torch.onnx.export keeps process-wide state: export_onnx itself must make concurrent calls take turns."""
    filters = list(warnings.filters)
    barrier = threading.Barrier(2 * len(zoo.entries))

    def export(job: tuple[int, int]) -> str:
        copy, i = job
        model = zoo.subnet(zoo.entries[i])
        barrier.wait()
        path = export_onnx(model, tmp_path / f"{copy}-{i}.onnx", model_metadata(model, zoo.classes, zoo.preprocessing),
                           about=provenance(zoo, zoo.entries[i]))
        return sha(path.read_bytes())

    jobs = [(copy, i) for copy in range(2) for i in range(len(zoo.entries))]
    with ThreadPoolExecutor(len(jobs)) as pool:
        digests = list(pool.map(export, jobs))
    assert digests == [sequential[zoo.entries[i].id, "onnx"] for _, i in jobs]
    assert warnings.filters == filters  # catch_warnings in threads can leave the process's filters swapped


def test_every_download_predict_and_ui_download_at_once_on_a_cold_cache(zoo, zoo_dir, sequential, tmp_path):
    """Every entry x every download kind and a predict per entry over REST, and the UI's download preparation for
    each budget-reachable entry, all at once on a cold cache: all succeed, with the bytes of a sequential export,
    and each export is built once."""
    app = create_app(zoo_dir, tmp_path / "cache", ServerConfig(providers=CPU_ONLY))
    budgets = ui_budgets(zoo)
    with serve(app) as url:
        def rest_download(entry_id: str, kind: str) -> dict:
            with httpx.Client(base_url=url, timeout=300) as c:
                r = c.get(f"/api/models/{entry_id}/download/{kind}")
            return {("rest", entry_id, kind): sha(r.content) if r.status_code == 200 else failure(r)}

        def rest_predict(entry_id: str) -> dict:
            with httpx.Client(base_url=url, timeout=300) as c:
                r = predict(c, ("x.png", png(), "image/png"), model=entry_id)
            return {("predict", entry_id): r.json()["model"] if r.status_code == 200 else failure(r)}

        def ui_downloads(entry_id: str) -> dict:
            summary, prepared = ui_specialize_and_prepare(url, budgets[entry_id])
            assert f"Chosen: `{entry_id}`" in summary and prepared["success"], prepared
            with httpx.Client(timeout=300) as c:
                return {("ui", entry_id, kind): sha(c.get(button["value"]["url"]).content)
                        for kind, button in zip(DOWNLOAD_BUTTONS, prepared["output"]["data"], strict=True)}

        jobs: list[Callable[[], dict]] = [
            *(lambda e=e.id, k=kind: rest_download(e, k) for e in zoo.entries for kind in DOWNLOADS),
            *(lambda e=e.id: rest_predict(e) for e in zoo.entries),
            *(lambda e=entry_id: ui_downloads(e) for entry_id in budgets)]
        barrier = threading.Barrier(len(jobs))

        def at_once(job: Callable[[], dict]) -> dict:
            barrier.wait()
            return job()

        with ThreadPoolExecutor(len(jobs)) as pool:
            got = {k: v for result in pool.map(at_once, jobs) for k, v in result.items()}
    expected = {**{("rest", e, k): digest for (e, k), digest in sequential.items()},
                **{("predict", e.id): e.id for e in zoo.entries},
                **{("ui", e, k): sequential[e, k] for e in budgets for k in DOWNLOAD_BUTTONS}}
    assert got == expected
    prefix = zoo.checksum[:16]
    assert dict(app.state.prezoo.exports.builds) == {f"{prefix}/{e.id}/{fmt}": 1 for e in zoo.entries
                                                     for fmt in ALL_FORMATS}


# -- item 7: a cache that cannot be written -----------------------------------------------------------

def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs of our own (to fill, or to remount read-only: root ignores permission bits); always
    unmounted."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder))
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)]).returncode:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def read_only(folder: Path, on: bool = True) -> None:
    remounted = mount("-o", f"remount,{'ro' if on else 'rw'}", str(folder))
    assert remounted.returncode == 0, remounted.stderr


def fill(folder: Path) -> None:
    """Write a ballast file until the file system is full."""
    with open(folder / "ballast", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(1 << 16))
        except OSError as e:
            assert e.errno == errno.ENOSPC


FAULTS = {  # name: (make it, undo it, the OS error the server must name)
    "full": (fill, lambda folder: (folder / "ballast").unlink(), "No space left on device"),
    "read-only": (read_only, lambda folder: read_only(folder, on=False), "Read-only file system"),
}


@pytest.mark.parametrize("where", ["", "new/cache"])
def test_a_read_only_cache_stops_the_start_with_one_line(zoo_dir, tmpfs, where):
    read_only(tmpfs)
    cache = tmpfs / where
    out = run_server("--zoo", str(zoo_dir), "--cache", str(cache), "--port", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines() == [f"python -m server: --cache {cache} cannot be written (Read-only file system); "
                                       f"pass a writable folder"]


def export_files(folder: Path) -> set[Path]:
    """The files under `folder` but the (empty, never deleted) lock files."""
    return {p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_cache_that_cannot_be_written_is_a_507_degraded_health_and_recovers(zoo, zoo_dir, sequential, tmpfs, fault):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    make, undo, reason = FAULTS[fault]
    (image := tmpfs.parent / "x.png").write_bytes(png())
    app = create_app(zoo_dir, tmpfs, ServerConfig(providers=CPU_ONLY))
    exports = tmpfs / "exports"
    with serve(app) as url, httpx.Client(base_url=url, timeout=300) as c:
        assert c.get(f"/api/models/{SMALL}/download/onnx").status_code == 200  # warm: SMALL's fp32 ONNX
        before = export_files(exports)
        make(tmpfs)
        try:
            cached = c.get(f"/api/models/{SMALL}/download/onnx")
            assert cached.status_code == 200 and sha(cached.content) == sequential[SMALL, "onnx"]
            assert predict(c, ("x.png", png(), "image/png"), model=SMALL).json()["model"] == SMALL
            for r in (c.get(f"/api/models/{MID}/download/onnx-int8"),
                      predict(c, ("x.png", png(), "image/png"), model=LARGEST)):
                assert r.status_code == 507 and r.headers["content-type"] == "application/json"
                assert r.json()["error"].startswith(f"cannot write to {exports}: ") and reason in r.json()["error"]
            health = c.get("/api/health").json()
            assert health["status"] == "degraded" and health["ready"] and reason in health["degraded_reason"]
            client = Client(f"{url}/", verbose=False)
            try:
                with pytest.raises(AppError, match=reason):
                    client.predict(handle_file(str(image)), LARGEST, api_name="/classify")
            finally:
                client.close()
            _, prepared = ui_specialize_and_prepare(url, ui_budgets(zoo)[MID])
            assert not prepared["success"] and reason in prepared["output"]["error"], prepared
            assert export_files(exports) == before  # the failed builds left nothing behind
            assert not (tmpfs / "ui" / "downloads").exists()
        finally:
            undo(tmpfs)
        assert c.get("/api/health").json()["status"] == "degraded"  # until a real write works: no probe clears it
        recovered = c.get(f"/api/models/{MID}/download/onnx-int8")
        assert recovered.status_code == 200 and sha(recovered.content) == sequential[MID, "onnx-int8"]
        health = c.get("/api/health").json()
        assert health["status"] == "ok" and health["degraded_reason"] is None
        assert predict(c, ("x.png", png(), "image/png"), model=LARGEST).status_code == 200


# -- item 7: the size bound ---------------------------------------------------------------------------

def test_least_recently_used_exports_go_first_but_never_one_in_use(zoo, reference, tmp_path):
    a, b, c = zoo.entries[:3]
    sizes = {e.id: size(reference.get(zoo, e, "onnx")) for e in (a, b, c)}
    cache = ExportCache(tmp_path, max_bytes=sizes[a.id] + sizes[c.id])
    for entry in (a, b, a):  # a is used after b
        cache.get(zoo, entry, "onnx")
    cache.get(zoo, c, "onnx")  # over the bound: b goes
    present = {e.id for e in (a, b, c) if (tmp_path / zoo.checksum[:16] / e.id / "onnx").is_dir()}
    assert present == {a.id, c.id} and cache.size() <= cache.max_bytes
    a_folder = tmp_path / zoo.checksum[:16] / a.id / "onnx"
    with open(a_folder.parent / ".onnx.lock") as held:  # a build (of any process) reads a's export...
        fcntl.flock(held, fcntl.LOCK_SH)
        cache.get(zoo, b, "onnx")  # ...so over the bound again, c goes instead of a, the least recently used
    assert a_folder.is_dir() and not (tmp_path / zoo.checksum[:16] / c.id / "onnx").exists()
    assert cache.evictions == {f"{zoo.checksum[:16]}/{b.id}/onnx": 1, f"{zoo.checksum[:16]}/{c.id}/onnx": 1}


def test_an_export_evicted_by_another_process_is_rebuilt_not_served_missing(zoo, sequential, tmp_path):
    mine, other = ExportCache(tmp_path), ExportCache(tmp_path, max_bytes=1)  # two processes' caches, one folder
    entry = zoo.entries[0]
    first = mine.file(zoo, entry, "onnx")  # verified once: memoised by this process
    other.trim(zoo)
    assert not first.exists()
    again = mine.file(zoo, entry, "onnx")
    assert sha(again.read_bytes()) == sequential[entry.id, "onnx"]
    assert mine.builds[f"{zoo.checksum[:16]}/{entry.id}/onnx"] == 2


def test_the_server_start_evicts_older_zoos_exports_first(zoo, zoo_dir, tmp_path):
    old = Zoo.load(make_zoo(tmp_path / "old-zoo", seed=1))
    assert old.checksum != zoo.checksum
    warm = ExportCache(tmp_path / "cache" / "exports")
    current = warm.get(zoo, zoo.entries[0], "onnx")
    older = [warm.get(old, e, "onnx") for e in old.entries[:2]]  # used after the current zoo's export
    app = create_app(zoo_dir, tmp_path / "cache", ServerConfig(cache_max_bytes=size(current) + 1, providers=CPU_ONLY))
    assert current.is_dir() and (current / LAST_USED).is_file() and not any(f.exists() for f in older)
    assert app.state.prezoo.exports.size() == size(current)


def test_the_cache_bound_is_a_command_line_option_in_mib():
    assert parse_args([]).cache_max_mb == 2048 and parse_args(["--cache-max-mb", "64"]).cache_max_mb == 64
    with pytest.raises(SystemExit):
        parse_args(["--cache-max-mb", "0"])


def test_a_cache_serving_several_zoos_evicts_another_zoos_exports_before_any_served_ones(zoo, tmp_path):
    served, old = (Zoo.load(make_zoo(tmp_path / name, seed=seed)) for name, seed in (("served", 2), ("old", 3)))
    cache = ExportCache(tmp_path / "exports", serving=[zoo, served])
    first, second, stale = (cache.get(z, z.entries[0], "onnx") for z in (zoo, served, old))
    for age, folder in ((7200, first), (3600, second)):  # the served exports are the least recently used
        os.utime(folder / LAST_USED, (time.time() - age,) * 2)
    cache.max_bytes = size(first) + size(second) + 1
    cache.trim()
    assert first.is_dir() and second.is_dir() and not stale.exists()
    assert cache.evictions == {f"{old.checksum[:16]}/{old.entries[0].id}/onnx": 1}
