"""The Ray Serve application (server/ray_serve.py) on a local one-node Ray cluster on free loopback ports, against the
single-process server (`python -m server`) on the same two zoos (a ViT test zoo and the shipped HyTra zoo, one
catalog): v2 inference for more entries than a replica holds, across both zoos (its LRU unloads and reloads them), and
/api/specialize answer alike; the cluster's processes are killed by PID at the end.

Needs the `ray` extra (requirements-dev.txt pins it); skipped where ray is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.bench_ray import APP, LOCAL_RAY_ENV, live_pids, local_ray, ray_app
from bench.bench_server import running_server
from zoo.store import shipped_zoos

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra (ray[serve])")
os.environ.update(LOCAL_RAY_ENV)  # before anything imports ray (bench_ray.ray_app)

MAX_MODELS = 2  # per replica: the 4 entries the tests cycle over do not fit


@dataclass(frozen=True)
class Servers:
    single: str  # python -m server
    ray: str  # the Ray Serve application's HTTP proxy
    entries: list[str]  # two of each zoo's, the test zoo's first


@pytest.fixture(scope="module")
def servers(zoo_dir, tmp_path_factory) -> Iterator[Servers]:
    """Both servers on the same two zoos and one export cache; Ray with one model replica of MAX_MODELS sessions. On
    exit, no process of the cluster is left."""
    cache = tmp_path_factory.mktemp("cache")
    zoos = [str(zoo_dir), str(shipped_zoos()["hytra-fmnist"])]
    options = {"zoo": ",".join(zoos), "cache": str(cache), "max_models_per_replica": MAX_MODELS, "ort_threads": 1}
    with running_server(zoos[0], cache, "--zoo", zoos[1]) as single, local_ray(cpus=2) as cluster:
        with ray_app(cluster, options) as url:
            listed = httpx.get(f"{single.url}/api/zoo", timeout=30).json()["entries"]
            entries = [e["id"] for e in listed if e["zoo"] == "test-zoo"][:2] + [
                e["id"] for e in listed if e["zoo"] == "hytra-fmnist"][:2]
            yield Servers(single.url, url, entries)
        assert live_pids(cluster.session), "the cluster runs until local_ray exits"
    assert live_pids(cluster.session) == [], "every process the cluster started is gone"
    assert serve_periodic_tasks() == [], "no Serve handle of this driver still wakes up to call the gone cluster"
    assert live_pids(parent=os.getpid()) == [], "and no process of this one (a Ray started behind our back)"


def serve_periodic_tasks() -> list[str]:
    """The periodic (metrics) tasks of this process's Serve handles: they run on Serve's router thread, which outlives
    ray.shutdown, and once the cluster is gone each wake-up logs a traceback for the rest of the session."""
    from ray.serve._private.router import SingletonThreadRouter

    async def scheduled() -> list[str]:
        return [task.get_coro().__qualname__ for task in asyncio.all_tasks()]

    loop = SingletonThreadRouter._asyncio_loop
    names = asyncio.run_coroutine_threadsafe(scheduled(), loop).result(timeout=30) if loop else []
    return [name for name in names if "metrics_task" in name]


def load_count() -> int:
    from ray import serve

    return serve.get_deployment_handle("ZooModels", app_name=APP).load_count.remote().result(timeout_s=60)


def infer(url: str, entry: str, x: np.ndarray) -> np.ndarray:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    tensor = triton.InferInput("pixel_values", list(x.shape), "FP32").set_data_from_numpy(x)  # binary extension
    try:
        return client.infer(entry, [tensor]).as_numpy("logits")
    finally:
        client.close()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


@pytest.mark.slow
def test_v2_infer_matches_the_single_process_server_while_the_lru_unloads_entries(servers):
    """Entries cycled so that every request needs a session the replica has just unloaded: each one is a load."""
    first, second, third, fourth = servers.entries
    for entry in (third, fourth):  # the replica holds these two, whatever ran before
        infer(servers.ray, entry, images(1, seed=0))
    order = [first, second, third, fourth, first, third]
    before = load_count()
    for i, entry in enumerate(order):
        x = images(1 if i % 2 else 8, seed=i)
        np.testing.assert_allclose(infer(servers.ray, entry, x), infer(servers.single, entry, x), rtol=1e-5, atol=1e-5)
    assert load_count() - before == len(order), f"with {MAX_MODELS} sessions per replica, LRU reloads every entry"
    x = images(2, seed=0)
    assert not np.allclose(infer(servers.ray, servers.entries[0], x), infer(servers.ray, servers.entries[1], x))


@pytest.mark.slow
def test_concurrent_requests_for_several_entries_each_get_their_own_entrys_logits(servers):
    """Serve batches concurrent requests per entry: every answer is its request's rows of its entry's model."""
    jobs = [(servers.entries[i % MAX_MODELS], images(1 + i % 3, seed=100 + i)) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: infer(servers.ray, *job), jobs))
    for (entry, x), logits in zip(jobs, answers, strict=True):
        np.testing.assert_allclose(logits, infer(servers.single, entry, x), rtol=1e-5, atol=1e-5)


SPECIALIZE = [{}, {"max_params": "0.3M"}, {"max_flops": "12M", "max_params": 500000}, {"max_params": 1000},
              {"max_params": "lots"}, {"max_latency_ms": 2}, {"bogus": 1}]


@pytest.mark.slow
@pytest.mark.parametrize("budget", SPECIALIZE)
def test_specialize_answers_like_the_single_process_server(servers, budget):
    ray, single = (httpx.post(f"{url}/api/specialize", json=budget, timeout=60) for url in (servers.ray,
                                                                                           servers.single))
    assert (ray.status_code, ray.json()) == (single.status_code, single.json())


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/v2", "/v2/health/ready", "/v2/models/{entry}", "/v2/models/{entry}/ready",
                                  "/v2/models/nope", "/api/zoo", "/api/nope"])
def test_v2_metadata_and_errors_answer_like_the_single_process_server(servers, path):
    path = path.format(entry=servers.entries[1])
    ray, single = (httpx.get(f"{url}{path}", timeout=60) for url in (servers.ray, servers.single))
    assert (ray.status_code, ray.json()) == (single.status_code, single.json())


@pytest.mark.slow
def test_a_malformed_infer_request_is_the_same_400(servers):
    body = {"inputs": [{"name": "pixel_values", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0] * 2352}]}
    ray, single = (httpx.post(f"{url}/v2/models/{servers.entries[0]}/infer", json=body, timeout=60)
                   for url in (servers.ray, servers.single))
    assert ray.status_code == 400
    assert ray.json() == single.json()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/specialize", "/v2/models/{entry}/infer"])
def test_bodies_over_the_route_limit_get_the_same_413(servers, path):
    """The ingress applies the server's per-route body limits: 65 KiB of JSON is over /api/specialize's 64 KiB, and a
    v2 tensor of 40,000 images of 28² is over the infer route's."""
    path = path.format(entry=servers.entries[0])
    body = b" " * (65 * 1024) + b"{}" if path == "/api/specialize" else b"0" * (40_000 * 28 * 28 * 4)
    ray, single = (httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
                   for url in (servers.ray, servers.single))
    assert ray.status_code == 413
    assert ray.json() == single.json()


@pytest.mark.slow
def test_predict_classifies_an_upload_like_the_single_process_server(servers):
    """/api/predict decodes in the ingress and takes its logits from the model deployment."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, "PNG")
    form = {"model": servers.entries[3], "top_k": "3"}
    ray, single = (httpx.post(f"{url}/api/predict", data=form, files={"files": ("x.png", buf.getvalue(), "image/png")},
                              timeout=60).json() for url in (servers.ray, servers.single))
    assert [p["label"] for p in ray["predictions"][0]["top"]] == [p["label"] for p in single["predictions"][0]["top"]]
    assert ray["predictions"][0]["top"][0]["probability"] == pytest.approx(
        single["predictions"][0]["top"][0]["probability"], rel=1e-5)


def test_the_builder_refuses_bad_options_before_anything_is_deployed(zoo_dir):
    from pydantic import ValidationError

    from server.ray_serve import app_builder
    from server.startup import StartError

    with pytest.raises(ValidationError, match="max_models_per_replica"):
        app_builder({"zoo": str(zoo_dir), "max_models_per_replica": "0"})
    with pytest.raises(ValidationError, match="replicas"):
        app_builder({"zoo": str(zoo_dir), "replicas": "2"})
    with pytest.raises(StartError, match="cannot use zoo"):
        app_builder({"zoo": str(zoo_dir / "missing")})
    with pytest.raises(StartError, match="cannot serve these zoos together"):
        app_builder({"zoo": f"{zoo_dir},{zoo_dir}"})  # every entry id twice
    with pytest.raises(ValidationError, match="an empty zoo name"):
        app_builder({"zoo": f"{zoo_dir},"})


def test_without_a_zoo_the_application_serves_every_shipped_zoo():
    from server.ray_serve import RayOptions
    from server.startup import served_zoos

    options = RayOptions.model_validate({})
    assert [z.root for z in served_zoos(options.zoo).zoos] == list(shipped_zoos().values())
    assert RayOptions.model_validate({"zoo": " a , org/b"}).zoo == ["a", "org/b"]
