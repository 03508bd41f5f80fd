"""The server's cache folder against a hostile user and a killed process (issue 21): the UI's file route serves the
cache's ui/ subfolder (named downloads, samples) and nothing else of it; a start removes the temporaries that killed
processes left, never what a live process is writing; /api/health stays degraded from a failed write until a real
write works again."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from export.cache import ExportCache
from export.runtime import CPU
from server.app import create_app
from server.state import PreZooServer, ServerConfig
from tests.test_server import serve
from zoo.io import held_folder

CPU_ONLY = ([CPU], "test: CPU")
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- planted by the test"
PLANTED = [".ssh/id_rsa", "exports/planted.onnx", "zips/planted.zip", "notes.txt"]  # an operator's files, say


@pytest.fixture(scope="module")
def planted(zoo_dir, tmp_path_factory) -> Iterator[tuple[httpx.Client, PreZooServer]]:
    """The app on a cache folder that also holds secrets, and a client."""
    cache = tmp_path_factory.mktemp("cache")
    for name in PLANTED:
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(SECRET)
    app = create_app(zoo_dir, cache, ServerConfig(providers=CPU_ONLY))
    with serve(app) as url, httpx.Client(base_url=url, timeout=300) as client:
        yield client, app.state.prezoo


def test_the_ui_file_route_serves_nothing_of_the_cache_outside_its_ui_folder(planted, zoo):
    """Issue 21: `/gradio_api/file=CACHE/.ssh/id_rsa` answered the key, and every export, zip and lock file."""
    client, server = planted
    assert client.get(f"/api/models/{zoo.entries[0].id}/download/hf-zip").status_code == 200  # exports, zip, locks
    cache, ui = server.cache_dir, server.ui_dir
    (ui / "key").symlink_to(cache / PLANTED[0])  # a link out of the folder is followed to where it leads
    private = [p for p in cache.rglob("*") if p.is_file() and ui not in p.parents]
    names = {str(p.relative_to(cache)) for p in private}
    assert set(PLANTED) <= names and {".safetensors.lock", "model.safetensors", "sha256.json", ".last-used"} <= {
        p.name for p in private} and any(n.startswith("zips/") and n.endswith(".zip") for n in names - set(PLANTED))
    for path in [*private, ui / "key", ui / ".." / PLANTED[0]]:
        for route in (f"/gradio_api/file={path}", f"/gradio_api/file/{path}"):
            r = client.get(route)
            assert r.status_code == 403 and SECRET not in r.content, (route, r.status_code)


def test_the_ui_downloads_and_samples_are_still_served(planted, zoo):
    client, server = planted
    served = [server.named_download(zoo.entries[1], kind) for kind in ("onnx", "hf-zip")]
    for path in [*served, *server.ui_dir.glob("samples/*.png")]:
        assert server.ui_dir in path.parents
        r = client.get(f"/gradio_api/file={path}")
        assert r.status_code == 200 and r.content == path.read_bytes(), path


def test_a_cache_inside_a_folder_gradio_serves_whole_is_refused(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # where Gradio keeps (and serves) uploads
    with pytest.raises(ValueError, match=f"the cache {tmp_path}/gradio/cache is inside {tmp_path}/gradio, which"):
        create_app(zoo, tmp_path / "gradio" / "cache", ServerConfig(providers=CPU_ONLY))
    assert not (tmp_path / "gradio").exists()


def test_health_is_degraded_from_a_failed_write_until_a_real_write_works(planted, zoo, monkeypatch):
    """Issue 21: a 4 KiB probe cleared the problem while every export failed with 507 for want of space."""
    client, _ = planted
    cached, cold = (f"/api/models/{e.id}/download/onnx" for e in zoo.entries[2:4])
    assert client.get(cached).status_code == 200

    def disk_full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ExportCache, "_build", disk_full)
    assert client.get(cold).status_code == 507
    for _ in range(2):  # neither asking for health nor serving what is cached (no write) clears it
        health = client.get("/api/health").json()
        assert health["status"] == "degraded" and "No space left on device" in health["degraded_reason"]
        assert client.get(cached).status_code == 200
    monkeypatch.undo()
    assert client.get(cold).status_code == 200
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["degraded_reason"] is None


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_start_removes_what_killed_processes_left_but_not_what_live_ones_write(zoo, tmp_path):
    """Issue 21: build, zip, download-link and push temps of a kill -9 stayed for good, outside the size bound."""
    cache, entry, dead, alive = tmp_path / "cache", zoo.entries[0].id, dead_pid(), os.getpid()
    export = f"exports/{zoo.checksum[:16]}/{entry}"
    left = [f"{export}/.onnx.k1ll3d00/model.onnx", "exports/.push-k1ll3d00/model.onnx",
            f"zips/{entry}/.onnx-0123456789abcdef.zip.{dead}.1", f"ui/downloads/{entry}/.prezoo-{entry}.onnx.{dead}.2"]
    kept = [f"{export}/.onnx-int8.bu1ld1ng/model.int8.onnx", "exports/.push-pu5h1ng0/model.onnx",
            f"zips/{entry}/.onnx-0123456789abcdef.zip.{alive}.1", f"zips/{entry}/.notes", f"{export}/.onnx.lock",
            f"ui/downloads/{entry}/.prezoo-{entry}.onnx.{alive}.2"]
    for name in left + kept:
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(b"partial")
    with open(cache / export / ".onnx-int8.lock", "w") as lock, held_folder(cache / "exports/.push-pu5h1ng0"):
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process builds the INT8 export and another pushes
        PreZooServer(zoo, cache, ServerConfig(providers=CPU_ONLY)).close()
    assert [n for n in left if (cache / n).exists()] == []
    assert [n for n in kept if not (cache / n).exists()] == []
    assert not (cache / export / ".onnx.k1ll3d00").exists() and not (cache / "exports/.push-k1ll3d00").exists()
