"""Hub push/pull against the session's local Hub (tests/hub_server.py): round trip, cache, offline and errors;
in bounded time against broken Hubs (a black hole, a trickle), in process, from `python -m server` and through
POST /api/push; and in bounded size (a zoo's pull takes only what its index names, under a cap)."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import constants

from export.hub import push_folder
from server.app import create_app
from server.state import ServerConfig
from tests.hub_server import LocalHub, StallingHub
from tests.test_server import serve
from tests.zoo_fixtures import make_zoo
from zoo import Zoo
from zoo.pull import DEADLINE_ENV, MAX_BYTES_ENV, OPERATION_HEADER, TIMEOUT_ENV, HubError, HubLimits, is_hub_id, pull

ROOT = Path(__file__).resolve().parent.parent
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


def point_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point huggingface_hub (both constants: see ecosystem-notes §4c) at another Hub."""
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return endpoint


def closed_port_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """A hub that has just been stopped."""
    hub = LocalHub()
    endpoint = hub.start()
    hub.stop()
    return point_at(endpoint, monkeypatch)


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


# -- bounded time: timeouts and deadlines ------------------------------------------------------------------------------
# Every test here hung for ever before Hub calls had limits; pytest-timeout turns such a hang into a failure.

@pytest.fixture
def black_hole(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """huggingface_hub pointed at a Hub that accepts connections and never answers."""
    hub = StallingHub()
    yield point_at(hub.start(), monkeypatch)
    hub.stop()


@pytest.fixture
def trickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """huggingface_hub pointed at a Hub that answers one byte every 0.2 s, status line and headers included."""
    hub = StallingHub(byte_every=0.2)
    yield point_at(hub.start(), monkeypatch)
    hub.stop()


def set_limits(monkeypatch: pytest.MonkeyPatch, timeout_s: float, deadline_s: float) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, str(timeout_s))
    monkeypatch.setenv(DEADLINE_ENV, str(deadline_s))


HUB_CALLS: dict[str, Callable[[str, Path], object]] = {
    "pull": lambda repo_id, folder: pull(repo_id),
    "Zoo.load": lambda repo_id, folder: Zoo.load(repo_id),
    "push_folder": lambda repo_id, folder: push_folder(folder, repo_id, token=ADMIN),
}


def timed_hub_error(call: Callable[[], object]) -> tuple[str, float]:
    """The HubError's message and the seconds it took to come."""
    start = time.monotonic()
    with pytest.raises(HubError) as info:
        call()
    text = "".join(traceback.format_exception(info.value))
    assert ADMIN not in text  # the token stays out of errors, whatever failed
    return str(info.value), time.monotonic() - start


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", HUB_CALLS)
def test_a_hub_that_never_answers_fails_after_the_timeout(name: str, black_hole: str, folder: Path, cache: Path,
                                                          repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    set_limits(monkeypatch, timeout_s=0.5, deadline_s=60)
    message, seconds = timed_hub_error(lambda: HUB_CALLS[name](repo_id, folder))
    # Zoo.load says first that no folder of that name exists either
    assert message.endswith(f"the Hub at {black_hole} did not answer within 0.5 s (ReadTimeout; {TIMEOUT_ENV})")
    assert 0.5 <= seconds < 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", HUB_CALLS)
def test_a_trickling_hub_fails_at_the_deadline(name: str, trickle: str, folder: Path, cache: Path, repo_id: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    set_limits(monkeypatch, timeout_s=5, deadline_s=1.5)  # each byte comes well within the timeout
    message, seconds = timed_hub_error(lambda: HUB_CALLS[name](repo_id, folder))
    assert message.endswith(f"the Hub at {trickle} did not finish with '{repo_id}' within 1.5 s ({DEADLINE_ENV})")
    assert 1.5 <= seconds < 4


@pytest.mark.timeout(60)
def test_limits_can_be_passed_instead_of_read_from_the_environment(black_hole: str, folder: Path, cache: Path,
                                                                   repo_id: str) -> None:
    limits = HubLimits(timeout_s=5, deadline_s=0.5)
    for call in (lambda: pull(repo_id, limits=limits), lambda: push_folder(folder, repo_id, limits=limits)):
        message, seconds = timed_hub_error(call)
        assert message.endswith(f"within 0.5 s ({DEADLINE_ENV})") and 0.5 <= seconds < 3


@pytest.mark.timeout(60)
def test_the_deadline_reaches_huggingface_hubs_download_threads(folder: Path, cache: Path, repo_id: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo listing answers at once; the files trickle, downloaded in huggingface_hub's own thread pool."""
    slow = LocalHub(token=ADMIN, download_byte_every=0.2)
    point_at(slow.start(), monkeypatch)
    try:
        push_folder(folder, repo_id, token=ADMIN)
        set_limits(monkeypatch, timeout_s=5, deadline_s=1.5)
        message, seconds = timed_hub_error(lambda: pull(repo_id))
    finally:
        slow.stop()
    assert message.endswith(f"within 1.5 s ({DEADLINE_ENV})") and 1.5 <= seconds < 4
    assert any("/resolve/" in r.path for r in slow.requests_log)


@pytest.mark.timeout(120)
def test_an_upload_that_keeps_moving_is_not_cut_off(tmp_path: Path, repo_id: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The timeout bounds each socket operation, not a request: a commit that takes several timeouts to send goes
    through, however long, while it moves and the deadline holds."""
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.safetensors").write_bytes(random.Random(1).randbytes(16 << 20))  # 22 MB once base64-encoded
    slow = LocalHub(token=ADMIN, read_pause=0.01)  # 6.5 MB/s at most, but for the last 8 MiB
    point_at(slow.start(), monkeypatch)
    set_limits(monkeypatch, timeout_s=0.5, deadline_s=60)
    try:
        start = time.monotonic()
        push_folder(big, repo_id, token=ADMIN)
        seconds = time.monotonic() - start
        assert slow.repos[repo_id].commits[slow.repos[repo_id].refs["main"]] == files_of(big)
        assert commits_to(slow, repo_id) == 1  # not one timeout, not one retry
    finally:
        slow.stop()
    assert seconds > 4 * 0.5  # a timeout per request would have cut it


def test_the_operation_header_never_reaches_the_hub(local_hub: LocalHub, folder: Path, cache: Path,
                                                    repo_id: str) -> None:
    sent = len(local_hub.requests_log)
    push_folder(folder, repo_id, token=ADMIN)
    pull(repo_id)
    names = [r.header_names for r in local_hub.requests_log[sent:]]
    assert len(names) > 4 and all("user-agent" in n for n in names)  # what huggingface_hub sends does arrive
    assert not any(OPERATION_HEADER.lower() in n for n in names)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "inf", "nan"])
def test_bad_limits_in_the_environment_are_named(value: str, folder: Path, cache: Path, repo_id: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(folder, repo_id, token=ADMIN)
    for name in (TIMEOUT_ENV, DEADLINE_ENV):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(HubError, match=re.escape(f"{name}={value!r} is not a number of seconds > 0")):
                pull(repo_id)


@pytest.mark.timeout(120)
def test_server_start_from_a_hub_that_never_answers_exits_2_naming_it(black_hole: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": black_hole, "HF_HOME": str(tmp_path / "hf"), TIMEOUT_ENV: "0.5",
           DEADLINE_ENV: "20"}
    env.pop("HF_HUB_CACHE")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "server", "--zoo", "prezoo-test/a-zoo", "--cache", str(tmp_path),
                          "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    seconds = time.monotonic() - start
    assert run.returncode == 2, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("python -m server: cannot use zoo prezoo-test/a-zoo: ")
    assert line.endswith(f"the Hub at {black_hole} did not answer within 0.5 s (ReadTimeout; {TIMEOUT_ENV})")
    assert seconds < 60  # mostly the interpreter and torch starting


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stall", ["black_hole", "trickle"])
def test_api_push_to_a_broken_hub_answers_502_in_bounded_time(stall: str, tmp_path: Path, repo_id: str,
                                                              request: pytest.FixtureRequest,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = request.getfixturevalue(stall)
    set_limits(monkeypatch, timeout_s=0.5, deadline_s=2)
    admin = f"admin-{uuid.uuid4().hex}"
    app = create_app(make_zoo(tmp_path / "zoo"), tmp_path / "cache", ServerConfig(admin_token=admin, hub_token=ADMIN))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        start = time.monotonic()
        r = client.post("/api/push", json={"repo_id": repo_id, "whole_zoo": True},
                        headers={"Authorization": f"Bearer {admin}"})
        seconds = time.monotonic() - start
    assert r.status_code == 502, r.text
    assert r.json()["error"].startswith(f"the Hub at {endpoint} did not ")
    assert ADMIN not in r.text and admin not in r.text
    assert seconds < 5


# -- bounded size ------------------------------------------------------------------------------------------------------

def zoo_repo(hub: LocalHub, tmp_path: Path, repo_id: str, **unnamed: bytes) -> Path:
    """A zoo pushed to `hub`, with `unnamed` files committed beside it that its index does not name; the zoo folder."""
    zoo_dir = make_zoo(tmp_path / "zoo")
    push_folder(zoo_dir, repo_id, token=ADMIN)
    repo = hub.repos[repo_id]
    repo.commit("main", {**repo.commits[repo.refs["main"]], **unnamed}, "files no index names")
    return zoo_dir


def downloads(hub: LocalHub, since: int) -> set[str]:
    """The files asked for (HEAD or GET) since request number `since`."""
    return {r.path.rpartition("/")[2] for r in hub.requests_log[since:] if "/resolve/" in r.path}


def test_a_zoo_pull_takes_only_what_its_index_names_and_works_offline_after(local_hub: LocalHub, tmp_path: Path,
                                                                           cache: Path, repo_id: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    zoo_repo(local_hub, tmp_path, repo_id, **{"junk.bin": bytes(64 << 20)})
    monkeypatch.setenv(MAX_BYTES_ENV, str(32 << 20))  # over the zoo, under what the repo holds
    sent = len(local_hub.requests_log)
    zoo = Zoo.load(repo_id)
    assert sorted(p.name for p in zoo.root.iterdir()) == ["supernet.safetensors", "zoo.json"]
    assert downloads(local_hub, sent) == {"supernet.safetensors", "zoo.json"}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    sent = len(local_hub.requests_log)
    assert Zoo.load(repo_id).root == zoo.root
    assert len(local_hub.requests_log) == sent  # served from the cache alone


def test_a_file_the_index_names_over_the_cap_is_refused_before_it_is_downloaded(local_hub: LocalHub, tmp_path: Path,
                                                                              cache: Path, repo_id: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    weights = (zoo_repo(local_hub, tmp_path, repo_id) / "supernet.safetensors").stat().st_size
    cap = weights // 2
    monkeypatch.setenv(MAX_BYTES_ENV, str(cap))
    sent = len(local_hub.requests_log)
    with pytest.raises(HubError) as refused:
        Zoo.load(repo_id)
    message = str(refused.value)
    assert "\n" not in message and f"'supernet.safetensors' of {weights:,}" in message
    assert message.endswith(f"over the cap of {cap:,} bytes ({MAX_BYTES_ENV})")
    assert downloads(local_hub, sent) == {"zoo.json"}


@pytest.mark.timeout(60)
def test_a_hub_that_understates_a_file_is_cut_off_at_the_cap_while_downloading(local_hub: LocalHub, folder: Path,
                                                                              cache: Path, repo_id: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(folder, repo_id, token=ADMIN)  # 1 MiB of weights
    monkeypatch.setattr(local_hub, "listed_size", 1)
    monkeypatch.setenv(MAX_BYTES_ENV, str(256 << 10))
    with pytest.raises(HubError, match=rf"the Hub at {local_hub.url} sent more than 262,144 bytes for '{repo_id}' "
                                       rf"\({MAX_BYTES_ENV}\)$"):
        pull(repo_id)
    assert not [p for p in cache.rglob("model.safetensors")]


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "2e9", "inf"])
def test_a_bad_size_cap_in_the_environment_is_named(value: str, folder: Path, cache: Path, repo_id: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(folder, repo_id, token=ADMIN)
    monkeypatch.setenv(MAX_BYTES_ENV, value)
    with pytest.raises(HubError, match=re.escape(f"{MAX_BYTES_ENV}={value!r} is not a whole number of bytes > 0")):
        pull(repo_id)
