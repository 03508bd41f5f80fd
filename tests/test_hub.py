"""Hub push/pull against the session's local Hub (tests/hub_server.py): round trip, cache, offline and errors."""

from __future__ import annotations

import json
import logging
import os
import random
import time
import traceback
import uuid
from pathlib import Path

import pytest
from huggingface_hub import constants

from export.hub import push_folder
from tests.hub_server import LocalHub
from zoo.hub import HubError, is_hub_id, pull

ADMIN = "test-admin-token"
README = "---\nlibrary_name: prenas-zoo\nlicense: mit\ntags:\n- vit\n---\n\n# A test subnet\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """What an export writes: a model card with YAML front matter, a config and ~1 MB of weights."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text(README)
    (out / "config.json").write_text(json.dumps({"depth": 3, "embed_dim": 32}))
    (out / "model.safetensors").write_bytes(random.Random(0).randbytes(1 << 20))
    return out


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache: snapshot_download reads constants.HF_HUB_CACHE at call time."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


@pytest.fixture
def repo_id() -> str:
    return f"prezoo-test/subnet-{uuid.uuid4().hex[:8]}"


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def commits_to(hub: LocalHub, repo_id: str) -> int:
    return sum(r.method == "POST" and r.path.startswith(f"/api/models/{repo_id}/commit/") for r in hub.requests_log)


def closed_port_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point huggingface_hub (both constants: see ecosystem-notes §4c) at a hub that has just been stopped."""
    hub = LocalHub()
    endpoint = hub.start()
    hub.stop()
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return endpoint


def test_session_points_at_local_hub(local_hub: LocalHub) -> None:
    assert constants.ENDPOINT == local_hub.url and local_hub.url.startswith("http://127.0.0.1:")
    assert Path(constants.HF_HOME) == Path(os.environ["HF_HOME"]) and not constants.HF_HUB_OFFLINE


def test_push_then_pull_is_byte_identical_and_works_offline(local_hub: LocalHub, folder: Path, cache: Path,
                                                            repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert push_folder(folder, repo_id, token=ADMIN) == f"{local_hub.url}/{repo_id}"
    commit = [r for r in local_hub.requests_log if r.path.startswith(f"/api/models/{repo_id}/commit/")]
    assert [r.authorization == f"Bearer {ADMIN}" for r in commit] == [True]

    snapshot = pull(repo_id)
    assert snapshot.is_relative_to(cache.resolve())
    assert files_of(snapshot) == files_of(folder)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    sent = len(local_hub.requests_log)
    assert pull(repo_id) == snapshot
    assert len(local_hub.requests_log) == sent  # served from the cache alone


def test_reupload_of_unchanged_folder_is_a_successful_noop(local_hub: LocalHub, folder: Path, repo_id: str) -> None:
    url = push_folder(folder, repo_id, token=ADMIN)
    assert push_folder(folder, repo_id, token=ADMIN) == url
    assert commits_to(local_hub, repo_id) == 1
    (folder / "config.json").write_text("{}")
    push_folder(folder, repo_id, token=ADMIN)
    assert commits_to(local_hub, repo_id) == 2


def test_pull_errors_name_the_repo_and_revision(local_hub: LocalHub, folder: Path, cache: Path, repo_id: str) -> None:
    with pytest.raises(HubError, match=f"no model repo 'prezoo-test/missing' on {local_hub.url}"):
        pull("prezoo-test/missing")
    push_folder(folder, repo_id, token=ADMIN)
    with pytest.raises(HubError, match=f"model repo '{repo_id}' .* has no revision 'v9'"):
        pull(repo_id, revision="v9")


def test_private_repo_needs_the_token_to_pull(folder: Path, cache: Path, repo_id: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(folder, repo_id, token=ADMIN, private=True)
    with pytest.raises(HubError, match=f"no model repo '{repo_id}'.*private"):
        pull(repo_id)
    monkeypatch.setenv("HF_TOKEN", ADMIN)  # huggingface_hub's own token resolution
    assert files_of(pull(repo_id)) == files_of(folder)


def test_offline_pull_of_uncached_repo_says_so(folder: Path, cache: Path, repo_id: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(folder, repo_id, token=ADMIN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=f"'{repo_id}' is not in the local Hub cache and HF_HUB_OFFLINE=1 forbids"):
        pull(repo_id)


def test_bad_token_is_rejected_and_never_leaks(local_hub: LocalHub, folder: Path, cache: Path, repo_id: str,
                                               capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"hf_secret{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubError, match=r"rejected the credentials \(HTTP 401\)") as info:
        push_folder(folder, repo_id, token=secret)
    assert any(r.authorization == f"Bearer {secret}" for r in local_hub.requests_log)  # it really was sent

    monkeypatch.setenv("HF_TOKEN", secret)  # also via the environment, on the pull side
    with pytest.raises(HubError):
        pull(repo_id)

    out = capsys.readouterr()
    texts = ["".join(traceback.format_exception(info.value)), out.out, out.err, caplog.text]
    assert all(secret not in text for text in texts)
    dumped = [p for root in (folder, cache, Path(constants.HF_HOME)) if root.exists() for p in root.rglob("*")]
    assert all(secret.encode() not in p.read_bytes() for p in dumped if p.is_file())


def test_push_without_token_is_rejected(local_hub: LocalHub, folder: Path, repo_id: str) -> None:
    with pytest.raises(HubError, match=r"HTTP 401.*HF_TOKEN"):
        push_folder(folder, repo_id)
    assert [r.authorization for r in local_hub.requests_log if r.path == "/api/repos/create"][-1] is None


def test_unreachable_endpoint_fails_fast(folder: Path, cache: Path, repo_id: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = closed_port_endpoint(monkeypatch)
    for action in (lambda: push_folder(folder, repo_id, token=ADMIN), lambda: pull(repo_id)):
        start = time.monotonic()
        with pytest.raises(HubError, match=f"cannot reach the Hugging Face Hub at {endpoint}"):
            action()
        assert time.monotonic() - start < 5


def test_push_checks_folder_and_repo_id_before_any_request(local_hub: LocalHub, folder: Path, tmp_path: Path) -> None:
    sent = len(local_hub.requests_log)
    with pytest.raises(HubError, match="no such folder"):
        push_folder(tmp_path / "missing", "prezoo-test/x", token=ADMIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="has no files"):
        push_folder(tmp_path / "empty", "prezoo-test/x", token=ADMIN)
    for bad in ("not a repo", "name-only", "a/b/c"):
        with pytest.raises(HubError, match="invalid Hub repo id"):
            push_folder(folder, bad, token=ADMIN)
    assert len(local_hub.requests_log) == sent


def test_is_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "best").mkdir(parents=True)
    assert is_hub_id("prenas/prenas_vit_c32.zoo_v1")
    assert not any(map(is_hub_id, ["runs/best", "name-only", "a/b/c", "/abs", "./x", "a b/c", ""]))
