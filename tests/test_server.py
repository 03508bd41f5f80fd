"""The server end to end on loopback: the real app (uvicorn in a thread), a real zoo, ONNX Runtime and the local Hub.

REST API (health, zoo, specialize, downloads, predict, push), upload validation, concurrency (micro-batching, exports
built once), start-up failures of `python -m server`, and a bounded schemathesis run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import schemathesis
import torch
import uvicorn
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.checks import not_a_server_error

from export.runtime import CPU, CUDA, TENSORRT, choose_providers, provider_options
from server.app import create_app
from server.inference import InferenceConfig, MicroBatcher
from server.state import PreZooServer, ServerConfig
from tests.hub_server import LocalHub
from tests.zoo_fixtures import FMNIST_CLASSES, PREPROCESSING

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-token-for-server-tests"
HUB_TOKEN = "test-admin-token"  # the local Hub's write token (conftest)
SMALL, MID, DOMINATED, LARGEST = "e64-d4-8aeab532", "e80-d4-ccfc93cf", "e96-d5-64c6ae65", "e96-d6-529fda2c"


@dataclass
class Live:
    url: str
    server: PreZooServer


@contextmanager
def serve(app) -> Iterator[str]:
    """uvicorn on an ephemeral loopback port in a thread; stopped (graceful shutdown, short: Gradio's heartbeat
    streams stay open until cut) on exit. HTTP by h11, as `python -m server` runs it (uvicorn's "auto" would take
    httptools where it is installed, e.g. by ray[serve], and it answers unknown methods with a plain-text 400)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, http="h11"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def live(zoo_dir, tmp_path_factory) -> Iterator[Live]:
    """The server as deployed with push on; only 2 ORT sessions kept, so the LRU is exercised."""
    app = create_app(zoo_dir, tmp_path_factory.mktemp("cache"),
                     ServerConfig(admin_token=ADMIN, hub_token=HUB_TOKEN, inference=InferenceConfig(sessions=2)))
    with serve(app) as url:
        yield Live(url, app.state.prezoo)



def png(size=(28, 28), mode="L", seed=0, fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


def predict(client: httpx.Client, *files: tuple[str, bytes, str], **form) -> httpx.Response:
    return client.post("/api/predict", files=[("files", f) for f in files], data=form)


def assert_ok_predict(client: httpx.Client) -> None:
    r = predict(client, ("ok.png", png(), "image/png"))
    assert r.status_code == 200, r.text


# -- health, zoo, specialize -----------------------------------------------------------------------

def test_health_reports_readiness_zoo_and_providers(client, zoo):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["ready"] and h["zoo"] == "test-zoo" and h["entries"] == 4
    assert h["providers"] == choose_providers()[0] and h["provider_note"]
    assert h["uptime_s"] > 0 and h["micro_batching"] and h["push_enabled"]


def test_zoo_lists_entries_pareto_classes_and_preprocessing(client):
    z = client.get("/api/zoo").json()
    assert [e["id"] for e in z["entries"]] == [SMALL, MID, DOMINATED, LARGEST]
    assert {"arch", "params", "flops", "top1", "top5", "latency"} <= set(z["entries"][0])
    assert z["pareto"]["params"] == [SMALL, MID, LARGEST]
    assert [e["pareto"] for e in z["entries"]] == [True, True, False, True]
    assert z["classes"] == FMNIST_CLASSES and z["preprocessing"] == PREPROCESSING and z["default_model"] == LARGEST


@pytest.mark.parametrize(("budget", "expected"), [
    ({"max_params": "0.25M"}, MID), ({"max_params": 250000}, MID), ({"max_params": "450K"}, MID),
    ({"max_flops": "8M"}, SMALL), ({"max_params": "1M", "max_flops": "40M"}, LARGEST), ({}, LARGEST)])
def test_specialize_picks_the_most_accurate_entry_within_budget(client, budget, expected):
    r = client.post("/api/specialize", json=budget)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entry"]["id"] == expected
    assert body["downloads"]["onnx"] == f"/api/models/{expected}/download/onnx"
    assert set(body["downloads"]) == {"safetensors", "config", "card", "onnx", "onnx-int8", "onnx-fp16", "hf-zip"}


def test_impossible_budget_is_422_with_the_nearest_entries(client):
    r = client.post("/api/specialize", json={"max_params": "50K"})
    assert r.status_code == 422
    body = r.json()
    assert "no entry of zoo test-zoo fits max_params=50K" in body["error"]
    assert [e["id"] for e in body["nearest"]][0] == SMALL and len(body["nearest"]) == 3


def test_latency_budget_on_an_unprofiled_zoo_is_a_clear_422(client):
    r = client.post("/api/specialize", json={"max_latency_ms": "2ms"})
    assert r.status_code == 422 and "no measured latency" in r.json()["error"]


@pytest.mark.parametrize("budget", [{"max_params": "abc"}, {"max_params": -1}, {"max_params": "0"},
                                    {"max_flops": "1X"}, {"max_params": True}, {"max_params": [1]},
                                    {"max_latency_ms": "fast"}, {"max_parms": "1M"}])
def test_bad_budget_numbers_are_422_with_a_message(client, budget):
    r = client.post("/api/specialize", json=budget)
    assert r.status_code == 422
    assert r.json()["error"]


# -- downloads -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "content_type", "filename"), [
    ("safetensors", "application/octet-stream", "prezoo-{id}.safetensors"),
    ("config", "application/json", "prezoo-{id}.config.json"),
    ("card", "text/markdown; charset=utf-8", "prezoo-{id}.README.md"),
    ("onnx", "application/octet-stream", "prezoo-{id}.onnx"),
    ("onnx-int8", "application/octet-stream", "prezoo-{id}.int8.onnx"),
    ("hf-zip", "application/zip", "prezoo-{id}.hf.zip")])
def test_download_types_names_and_etag(client, live, kind, content_type, filename):
    url = f"/api/models/{MID}/download/{kind}"
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert r.headers["content-disposition"] == f'attachment; filename="{filename.format(id=MID)}"'
    assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
    again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == r.headers["etag"]
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    if kind == "config":
        assert json.loads(r.content)["num_classes"] == 10


def test_onnx_download_runs_in_onnxruntime_like_the_subnet(client, zoo):
    r = client.get(f"/api/models/{LARGEST}/download/onnx")
    sess = ort.InferenceSession(r.content, providers=[CPU])
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = zoo.subnet(LARGEST)(x).numpy()
    got = sess.run(["logits"], {"pixel_values": x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize("path", [
    "/api/models/..%2F..%2Fzoo.json/download/onnx", "/api/models/..%2Fx/download/onnx",
    "/api/models/%2e%2e/download/onnx", "/api/models/.hidden/download/onnx", "/api/models/e80-d4-nope/download/onnx",
    f"/api/models/{MID}/download/..%2Fsha256.json", f"/api/models/{MID}/download/model.onnx",
    "/api/models/%2Fetc%2Fpasswd/download/config"])
def test_bad_ids_and_kinds_are_json_errors_never_files(client, path):
    r = client.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert r.headers["content-type"] == "application/json" and r.json()["error"]
    assert "root:" not in r.text and len(r.content) < 1000


def test_the_same_export_requested_concurrently_is_built_once(client, live, zoo):
    url = f"/api/models/{SMALL}/download/onnx-fp16"
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(8)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["etag"] for r in responses}) == 1
    builds = live.server.exports.builds
    assert builds[f"{zoo.checksum[:16]}/{SMALL}/onnx-fp16"] == 1 and builds[f"{zoo.checksum[:16]}/{SMALL}/onnx"] == 1


# -- predict ---------------------------------------------------------------------------------------

def test_predict_png_and_jpeg_top_k_from_the_zoo(client):
    r = predict(client, ("a.png", png(), "image/png"), ("b.jpg", png((64, 48), "RGB", fmt="JPEG"), "image/jpeg"),
                top_k="10")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == LARGEST and [p["file"] for p in body["predictions"]] == ["a.png", "b.jpg"]
    for p in body["predictions"]:
        probs = [t["probability"] for t in p["top"]]
        assert sorted(t["label"] for t in p["top"]) == sorted(FMNIST_CLASSES)
        assert abs(sum(probs) - 1) < 1e-4 and probs == sorted(probs, reverse=True)
    three = predict(client, ("a.png", png(), "image/png"), model=SMALL, top_k="3").json()
    assert three["model"] == SMALL and len(three["predictions"][0]["top"]) == 3


def test_predict_preprocesses_like_the_zoo_was_evaluated(client, zoo):
    """A 28x28 gray PNG -> /255, normalised: the server's probabilities equal the subnet's."""
    data = png(seed=3)
    pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255
    x = torch.from_numpy((pixels - PREPROCESSING["mean"][0]) / PREPROCESSING["std"][0])[None, None]
    with torch.inference_mode():
        expected = torch.softmax(zoo.subnet(MID)(x), -1)[0].numpy()
    top = predict(client, ("x.png", data, "image/png"), model=MID, top_k="10").json()["predictions"][0]["top"]
    got = {t["label"]: t["probability"] for t in top}
    assert np.allclose([got[c] for c in FMNIST_CLASSES], expected, atol=1e-5)


def bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, "PNG")  # 25 Mpx in about 3 KB
    return buf.getvalue()


@pytest.mark.parametrize(("files", "status", "message"), [
    ([("a.txt", b"hello", "text/plain")], 415, "content type 'text/plain' is not an image"),
    ([("a.json", b"{}", "application/json")], 415, "not an image"),
    ([("empty.png", b"", "image/png")], 400, "empty"),
    ([("fake.png", b"this is not a png at all", "image/png")], 415, "not an image this server can read"),
    ([("cut.png", png((200, 200), "RGB")[:400], "image/png")], 422, "truncated or corrupt"),
    ([("bomb.png", bomb_png(), "image/png")], 413, "25,000,000 pixels is over the limit"),
    ([("big.png", b"\x89PNG" + bytes(10 * 1024 * 1024), "image/png")], 413, "over the limit of 10,485,760 bytes"),
    ([(f"{i}.png", png(), "image/png") for i in range(33)], 413, "33 images in one request; the limit is 32"),
])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_uploads_get_a_4xx_json_message_and_the_server_stays_up(client, files, status, message):
    r = predict(client, *files)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert_ok_predict(client)


@pytest.mark.parametrize(("form", "status"), [({"model": "../zoo.json"}, 404), ({"model": "nope"}, 404),
                                              ({"top_k": "0"}, 422), ({"top_k": "many"}, 422)])
def test_bad_predict_parameters(client, form, status):
    r = predict(client, ("a.png", png(), "image/png"), **form)
    assert r.status_code == status and r.json()["error"]


def test_predict_without_files_and_wrong_methods(client):
    r = client.post("/api/predict", data={"top_k": "3"})
    assert r.status_code == 422 and "files" in r.json()["error"]
    r = client.get("/api/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert client.get("/api/nothing-here").status_code == 404


def test_64_parallel_mixed_requests_all_succeed_and_get_micro_batched(live, zoo):
    """Predicts on every model (the 2-session LRU churns), specializes, downloads and reads, all at once."""
    batchers_before = {e.id: (live.server.engine.batcher(e).batches, live.server.engine.batcher(e).images)
                       for e in zoo.entries}

    def one(i: int) -> int:
        with httpx.Client(base_url=live.url, timeout=120) as c:
            if i % 4 == 3:
                return c.post("/api/specialize", json={"max_params": f"{110 + 20 * i}K"}).status_code
            if i % 8 == 2:
                return c.get(f"/api/models/{zoo.entries[i % 4].id}/download/card").status_code
            if i % 16 == 6:
                return c.get("/api/zoo").status_code
            model = zoo.entries[i % 4].id if i % 2 else LARGEST
            return predict(c, ("p.png", png(seed=i), "image/png"), model=model).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    engine = live.server.engine
    assert len(engine.sessions.keys()) == 2 and engine.sessions.loads >= 4
    b = engine.batcher(zoo.entry(LARGEST))
    batches, images = b.batches - batchers_before[LARGEST][0], b.images - batchers_before[LARGEST][1]
    assert images >= 16 and batches < images, "concurrent requests for one model were not batched together"


def test_micro_batcher_scatters_rows_back_to_their_requests():
    sizes: list[int] = []

    def double(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        time.sleep(0.01)
        return x * 2

    batcher = MicroBatcher(double, max_batch=8, max_wait_ms=20, name="test")
    jobs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda x: batcher.submit(x).result(timeout=30), jobs))
    batcher.close()
    assert all(np.array_equal(r, x * 2) for r, x in zip(results, jobs, strict=True))
    assert max(sizes) <= 8 and len(sizes) < len(jobs) and sum(sizes) == sum(len(x) for x in jobs)


def test_cuda_listed_but_unusable_falls_back_to_cpu_with_a_logged_reason(caplog):
    with caplog.at_level(logging.WARNING, logger="server"):
        providers, reason = choose_providers([CUDA, CPU])
    assert providers == [CPU] and "falling back to CPU" in reason and reason in caplog.text


def test_tensorrt_is_tried_before_cuda_and_both_failures_are_named():
    # this CPU build of onnxruntime runs neither: each probe session lands on CPU
    providers, reason = choose_providers([TENSORRT, CUDA, CPU])
    assert providers == [CPU]
    assert reason.index(TENSORRT) < reason.index(CUDA) and reason.endswith("falling back to CPU")


def test_tensorrt_sessions_get_an_engine_cache_in_the_server_cache(tmp_path):
    opts = provider_options([TENSORRT, CUDA, CPU], tmp_path)
    assert opts[1:] == [CUDA, CPU] and opts[0][0] == TENSORRT
    assert opts[0][1]["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert provider_options([CPU], tmp_path) == [CPU]


# -- push ------------------------------------------------------------------------------------------

def test_push_is_off_without_an_admin_token(zoo, tmp_path):
    app = create_app(zoo, tmp_path, ServerConfig(providers=([CPU], "test")))
    with serve(app) as url, httpx.Client(base_url=url) as c:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN}"}):
            r = c.post("/api/push", json={"repo_id": "prezoo-test/x"}, headers=headers)
            assert r.status_code == 403 and "disabled" in r.json()["error"]
        assert c.get("/api/health").json()["push_enabled"] is False


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN},
                                     {"Authorization": f"Basic {ADMIN}"}])
def test_push_needs_the_admin_bearer_token(client, headers):
    r = client.post("/api/push", json={"repo_id": "prezoo-test/x"}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_push_to_the_local_hub_and_the_hub_token_never_leaks(client, local_hub: LocalHub, caplog, capfd):
    auth = {"Authorization": f"Bearer {ADMIN}"}
    caplog.set_level("DEBUG")
    one = client.post("/api/push", json={"repo_id": "prezoo-test/server-mid", "max_params": "0.25M"}, headers=auth)
    whole = client.post("/api/push", json={"repo_id": "prezoo-test/server-zoo", "whole_zoo": True}, headers=auth)
    bad = client.post("/api/push", json={"repo_id": "not a repo id", "model": SMALL}, headers=auth)
    assert one.status_code == 200, one.text
    assert one.json() == {"repo_id": "prezoo-test/server-mid", "url": f"{local_hub.url}/prezoo-test/server-mid",
                          "pushed": MID}
    assert whole.status_code == 200 and whole.json()["pushed"] == "zoo"
    assert bad.status_code == 422 and "invalid Hub repo id" in bad.json()["error"]
    assert set(local_hub.repos["prezoo-test/server-mid"].commits[local_hub.repos["prezoo-test/server-mid"]
                                                                 .refs["main"]]) >= {"model.safetensors", "config.json",
                                                                                     "README.md"}
    assert "zoo.json" in local_hub.repos["prezoo-test/server-zoo"].commits[
        local_hub.repos["prezoo-test/server-zoo"].refs["main"]]
    commits = [r for r in local_hub.requests_log if "/commit/" in r.path and "server-" in r.path]
    assert commits and all(r.authorization == f"Bearer {HUB_TOKEN}" for r in commits)  # the server's Hub token
    out, err = capfd.readouterr()
    for text in (one.text, whole.text, bad.text, caplog.text, out, err):
        assert HUB_TOKEN not in text and ADMIN not in text


# -- start-up --------------------------------------------------------------------------------------

def run_server(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)


def test_startup_with_a_missing_or_corrupt_zoo_exits_2_with_one_line(zoo_dir, tmp_path):
    truncated_index, truncated_weights = tmp_path / "index", tmp_path / "weights"
    for broken in (truncated_index, truncated_weights):
        shutil.copytree(zoo_dir, broken)
    (truncated_index / "zoo.json").write_text((zoo_dir / "zoo.json").read_text()[:500])
    weights = truncated_weights / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cases = {tmp_path / "missing": "no zoo at", truncated_index: "cannot read", truncated_weights: "sha256"}
    for zoo, message in cases.items():
        out = run_server("--zoo", str(zoo), "--port", "0")
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("python -m server: cannot use zoo")


def test_startup_without_the_named_admin_token_exits_2(zoo_dir):
    out = run_server("--zoo", str(zoo_dir), "--admin-token-env", "PREZOO_NO_SUCH_VARIABLE")
    assert out.returncode == 2 and "PREZOO_NO_SUCH_VARIABLE" in out.stderr and "Traceback" not in out.stderr


def test_host_and_port_default_to_the_environment(monkeypatch):
    from server.__main__ import parse_args

    monkeypatch.setenv("PREZOO_HOST", "0.0.0.0")
    monkeypatch.setenv("PREZOO_PORT", "8080")
    assert (parse_args([]).host, parse_args([]).port) == ("0.0.0.0", 8080)
    assert parse_args(["--port", "9000", "--host", "::1"]).port == 9000


def test_a_bad_port_exits_2_naming_it(zoo_dir):
    for args, env in ((["--port", "70000"], None), ([], {**os.environ, "PREZOO_PORT": "http"})):
        out = run_server("--zoo", str(zoo_dir), *args, env=env)
        assert out.returncode == 2 and "is not a TCP port" in out.stderr and "Traceback" not in out.stderr


# -- OpenAPI fuzzing -------------------------------------------------------------------------------

def test_openapi_operations_never_answer_5xx(live):
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/health", "/api/zoo", "/api/specialize", "/api/predict",
                                              "/api/models/{entry_id}/download/{kind}", "/api/push"}
    for op in operations:
        if op.path == "/api/push":
            continue

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def no_server_error(case) -> None:
            case.call_and_validate(base_url=live.url, checks=[not_a_server_error], timeout=60)

        no_server_error()
