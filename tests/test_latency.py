"""Latency measured where it is served: the server times every entry on its own provider in the background (yielding
to requests), budgets read its numbers once present (the zoo's otherwise), every latency says who measured it; and
`python -m export profile --provider` records host and provider in the zoo."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from export.profile import host_description
from export.runtime import CPU, choose_providers
from server.app import create_app
from server.state import PreZooServer, ServerConfig
from server.ui import ENTRY_HEADERS, entry_rows, latency_sources, summary_markdown
from tests.test_server import serve
from tests.zoo_fixtures import make_zoo
from zoo import Zoo

ABSURD_MS = 1e6  # what the "build machine" recorded: no budget a test asks for can be met with these
BUILD_PROTOCOL = {"engine": "onnxruntime CPUExecutionProvider, fp32", "provider": "CPUExecutionProvider",
                  "host": "build-box (a fixture, not this host)", "threads": 1, "batch": 1, "warmup": 1, "runs": 1,
                  "statistic": "median, p10, p90"}
DEADLINE_S = 180  # a busy 2-core machine exports and times 4 small models in well under this


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One export cache for the module: every zoo here has the same weights, so their exports are shared."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def absurd_zoo(tmp_path_factory) -> Path:
    """The test zoo with latencies recorded elsewhere, absurdly slow: only numbers measured here fit a budget."""
    folder = make_zoo(tmp_path_factory.mktemp("absurd") / "zoo")
    zoo = Zoo.load(folder)
    zoo.with_latency({e.id: {"median_ms": ABSURD_MS, "p10_ms": ABSURD_MS, "p90_ms": ABSURD_MS} for e in zoo.entries},
                     BUILD_PROTOCOL)
    return folder


@contextmanager
def profiling_server(zoo_dir: Path, cache_dir: Path) -> Iterator[tuple[httpx.Client, PreZooServer, ExitStack]]:
    """The real app with background profiling on, served on loopback, and a client for it; it starts with an
    inference call in flight (`busy`): profiling waits until the test closes it, so what it sees first is fixed."""
    app = create_app(zoo_dir, cache_dir, ServerConfig(providers=([CPU], "tests: CPU"), profile_latency=True))
    server = app.state.prezoo
    with ExitStack() as busy:
        busy.enter_context(server.engine.traffic.call())
        with serve(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            yield client, server, busy


def wait_profiled(client: httpx.Client) -> dict:
    """/api/health's profiling progress once done (polled, with a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while (progress := client.get("/api/health").json()["latency_profiling"])["state"] != "done":
        assert time.monotonic() < deadline, f"profiling did not finish in {DEADLINE_S} s: {progress}"
        time.sleep(0.2)
    return progress


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 128).save(buf, "PNG")
    return buf.getvalue()


def test_budgets_use_the_served_numbers_once_profiled(absurd_zoo, cache_dir):
    with profiling_server(absurd_zoo, cache_dir) as (client, server, busy):
        assert client.get("/api/health").json()["latency_profiling"]["state"] == "running"
        early = client.post("/api/specialize", json={"max_latency_ms": "1s"})  # nothing served yet: the zoo's rule
        assert early.status_code == 422 and "no entry of zoo test-zoo fits max_latency=1000ms" in early.json()["error"]
        assert {e["latency_source"]["source"] for e in early.json()["nearest"]} == {"zoo"}
        busy.close()
        progress = wait_profiled(client)
        assert progress["profiled"] == progress["entries"] == 4 and progress["failed"] == {}
        assert progress["provider"] == CPU and progress["host"] == host_description(CPU)
        entries = client.get("/api/zoo").json()["entries"]
        for e in entries:
            assert e["latency_source"] == {"source": "served", "host": host_description(CPU), "provider": CPU}
            assert 0 < e["latency"]["p10_ms"] <= e["latency_ms"] == e["latency"]["median_ms"] <= e["latency"]["p90_ms"]
            assert e["latency_ms"] < 1000
        chosen = client.post("/api/specialize", json={"max_latency_ms": "1s"})
        assert chosen.status_code == 200, chosen.text
        assert chosen.json()["entry"]["latency_source"]["source"] == "served"
        assert chosen.json()["entry"]["id"] == server.default_entry.id  # every entry fits: the most accurate
        fastest = min(entries, key=lambda e: e["latency_ms"])
        tight = client.post("/api/specialize", json={"max_latency_ms": fastest["latency_ms"]})
        assert tight.status_code == 200 and tight.json()["entry"]["latency_ms"] <= fastest["latency_ms"]
        entry = server.zoos.entry(fastest["id"])
        summary = summary_markdown(server, entry, "")
        assert f"{fastest['latency_ms']:.3f} ms (on this server: {host_description(CPU)}, {CPU})" in summary
        assert f"measured on this server ({CPU})" in summary
        row = next(r for r in entry_rows(server) if r[0] == entry.id)
        assert row[ENTRY_HEADERS.index("latency ms")] == round(fastest["latency_ms"], 3)
        assert f"on this server: {host_description(CPU)}, {CPU} (all 4 entries)" in latency_sources(server)
        assert Zoo.load(absurd_zoo).entries[0].latency_ms == ABSURD_MS, "the zoo folder is never written"


def test_an_unprofiled_zoo_gets_latency_budgets_once_served_profiling_covers_it(zoo_dir, cache_dir):
    with profiling_server(zoo_dir, cache_dir) as (client, _, busy):
        waiting = client.post("/api/specialize", json={"max_latency_ms": "1s"})
        assert waiting.status_code == 409, waiting.text
        body = waiting.json()
        assert "measuring them now (0 of 4 entries done)" in body["error"]
        assert body["profiling"]["state"] == "running" and body["profiling"]["entries"] == 4
        busy.close()
        wait_profiled(client)
        chosen = client.post("/api/specialize", json={"max_latency_ms": "1s"})
        assert chosen.status_code == 200, chosen.text
        assert chosen.json()["entry"]["latency_source"] == {"source": "served", "host": host_description(CPU),
                                                            "provider": CPU}


def test_requests_are_answered_while_profiling_runs(zoo_dir, tmp_path):
    """A cold cache: profiling exports and times the entries while a client predicts (and then finishes)."""
    with profiling_server(zoo_dir, tmp_path) as (client, _, busy):
        busy.close()
        answered = 0  # the first export alone takes longer than a predict: at least one is answered meanwhile
        while answered < 10 and client.get("/api/health").json()["latency_profiling"]["state"] == "running":
            r = client.post("/api/predict", files=[("files", ("x.png", png(), "image/png"))])
            assert r.status_code == 200, r.text
            answered += 1
        assert answered > 0 and wait_profiled(client)["profiled"] == 4


def test_profiling_off_keeps_the_zoo_numbers(absurd_zoo, cache_dir):
    app = create_app(absurd_zoo, cache_dir, ServerConfig(providers=([CPU], "tests: CPU")))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/api/health").json()["latency_profiling"]["state"] == "off"
        e = client.get("/api/zoo").json()["entries"][0]
        assert e["latency_ms"] == ABSURD_MS
        assert e["latency_source"] == {"source": "zoo", "host": BUILD_PROTOCOL["host"], "provider": CPU}


def profile_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", "profile", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_profile_records_host_and_provider(zoo_dir, cache_dir, tmp_path):
    z = shutil.copytree(zoo_dir, tmp_path / "z")
    done = profile_cli("--zoo", str(z), "--cache", str(cache_dir), "--provider", "cpu", "--runs", "5", "--warmup", "1")
    assert done.returncode == 0, done.stderr
    zoo = Zoo.load(z)
    protocol = zoo.doc["latency_protocol"]
    assert protocol["provider"] == CPU and protocol["host"] == host_description(CPU)
    assert protocol["measured_at"] and protocol["threads"] == 2
    assert f"{CPU}, fp32 on {socket.gethostname()} (" in zoo.latency_protocol_text()
    assert zoo.latency_protocol_text() in done.stdout
    assert all(e.latency is not None for e in zoo.entries)


def test_cli_profile_refuses_an_unknown_provider(zoo_dir, tmp_path):
    bad = profile_cli("--zoo", str(zoo_dir), "--cache", str(tmp_path), "--provider", "tpu")
    assert bad.returncode == 2 and "unknown provider 'tpu'; choose one of cpu, cuda" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.skipif(choose_providers()[0] != [CPU], reason="CUDA runs on this host")
def test_cli_profile_says_cuda_does_not_run_here(zoo_dir, tmp_path):
    bad = profile_cli("--zoo", str(zoo_dir), "--cache", str(tmp_path), "--provider", "cuda")
    assert bad.returncode == 2 and "--provider cuda: CUDA does not run on this host" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_server_without_sessions_has_nothing_to_profile(tmp_path):
    """The Ray Serve ingress runs no ONNX Runtime session (its providers are []): asking it to profile builds a
    server whose profiler is simply off, instead of failing to start."""
    from zoo import Zoo

    server = PreZooServer(Zoo.load(make_zoo(tmp_path / "zoo")), tmp_path / "cache",
                          ServerConfig(profile_latency=True, providers=([], "inference runs elsewhere")))
    progress = server.profiler.progress()
    assert progress["state"] == "off" and progress["provider"] is None and progress["protocol"] is None
    server.profiler.start()  # a no-op, not a thread that fails
    assert not server.profiler._thread.is_alive()
