"""The UI's Gradio API through `gradio_client` against `python -m server` on loopback: only the named endpoints
(/specialize, /download, /classify) with named inputs and outputs; a budget written as REST takes it ("0.3M") gets the
answer POST /api/specialize gives, and an impossible one ("1K") the same nearest entries as REST's 422; downloads
come back as local files (the bytes REST serves, and they load); an image is classified as /api/predict does it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from safetensors.numpy import load_file

from tests.test_server_browser import IDS, MID, SMALL, python_m_server, ui_zoo
from tests.zoo_fixtures import FMNIST_CLASSES

ENDPOINTS = {"/specialize": (["max_params", "max_flops", "max_latency_ms", "max_bytes"],
                             ["model", "summary", "answer"]),
             "/download": (["model", "kind"], ["file"]),
             "/classify": (["image", "model"], ["predictions", "model_view"])}
HEARTBEAT_S = "1"  # Gradio's session heartbeat: a closed client's stream ends within it, before the server stops


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(url, cache dir) of `python -m server` on the browser tests' zoo."""
    tmp = tmp_path_factory.mktemp("gradio-api")
    with python_m_server(tmp, "--zoo", str(ui_zoo(tmp / "zoo")), "--no-profile",
                         env={"GRADIO_HEARTBEAT_INTERVAL": HEARTBEAT_S}) as url:
        yield url, tmp / "cache"


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> Iterator[Client]:
    c = Client(f"{server[0]}/", verbose=False, analytics_enabled=False,
               download_files=tmp_path_factory.mktemp("gradio-client-files"))
    yield c
    c.close()
    c.heartbeat.join(timeout=10)  # its stream open at SIGTERM would hold the server's graceful shutdown
    assert not c.heartbeat.is_alive()


def test_the_api_is_the_named_endpoints_with_named_inputs_and_outputs(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert info["unnamed_endpoints"] == {}
    assert {name: ([p["parameter_name"] for p in e["parameters"]], [r["label"] for r in e["returns"]])
            for name, e in info["named_endpoints"].items()} == ENDPOINTS
    budget = info["named_endpoints"]["/specialize"]["parameters"]
    assert all(p["python_type"]["type"] == "str" and p["parameter_has_default"] for p in budget)  # no limit: ""
    kinds = info["named_endpoints"]["/download"]["parameters"][1]["type"]["enum"]
    assert {"onnx", "onnx-int8", "onnx-fp16", "safetensors", "hf-zip"} <= set(kinds)


@pytest.mark.parametrize("budget", [{"max_params": "0.3M"}, {"max_params": "300K", "max_flops": "12M"},
                                    {"max_flops": "8M"}, {}])
def test_specialize_takes_rest_budgets_and_answers_what_rest_answers(client, server, budget):
    model, summary, answer = client.predict(**budget, api_name="/specialize")
    rest = httpx.post(f"{server[0]}/api/specialize", json=budget, timeout=60).json()
    assert model == rest["entry"]["id"] and f"### Chosen: `{model}`" in summary
    assert answer == {k: v for k, v in rest.items() if k != "downloads"}
    if budget == {"max_params": "0.3M"}:
        assert model == MID and answer["equivalent_cheaper"][0]["id"] == SMALL and SMALL in answer["note"]


def test_an_impossible_budget_names_the_nearest_entries_as_rest_does(client, server):
    model, summary, answer = client.predict("1K", api_name="/specialize")
    rest = httpx.post(f"{server[0]}/api/specialize", json={"max_params": "1K"}, timeout=60)
    assert rest.status_code == 422 and answer == rest.json()
    assert model is None and [e["id"] for e in answer["nearest"]] == IDS[:3]
    assert "No model fits this budget" in summary and all(i in summary for i in IDS[:3])
    for bad, message in [("abc", "must be a number such as 6M"), ("300", "did you mean 300M?"),
                         ("9" * 40, "a budget is a short number")]:
        model, summary, answer = client.predict(bad, api_name="/specialize")
        assert model is None and message in answer["error"] and "Invalid budget" in summary, (bad, answer)


def test_downloads_are_files_that_load_and_match_rest(client, server):
    url, cache = server
    onnx = Path(client.predict(MID, "onnx", api_name="/download"))
    weights = Path(client.predict(model=MID, kind="safetensors", api_name="/download"))
    assert (onnx.name, weights.name) == (f"prezoo-{MID}.onnx", f"prezoo-{MID}.safetensors")
    for path, kind in [(onnx, "onnx"), (weights, "safetensors")]:
        assert path.is_file() and cache not in path.parents  # the client's own copy
        assert path.read_bytes() == httpx.get(f"{url}/api/models/{MID}/download/{kind}", timeout=300).content
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pixel_values": np.zeros((2, 1, 28, 28), np.float32)})[0]
    assert logits.shape == (2, len(FMNIST_CLASSES)) and np.isfinite(logits).all()
    assert load_file(weights) and all(np.isfinite(t).all() for t in load_file(weights).values())
    with pytest.raises(AppError, match=f"no entry 'no-such-entry' in zoo test-zoo; ids: {SMALL}"):
        client.predict("no-such-entry", "onnx", api_name="/download")
    with pytest.raises(AppError, match="no download kind 'exe'; kinds: safetensors"):
        client.predict(MID, "exe", api_name="/download")


def test_classify_a_fashion_mnist_image_as_rest_predicts_it(client, server, tmp_path):
    url, cache = server
    sample = cache / "ui" / "samples" / "9-ankle-boot.png"
    assert sample.is_file(), "the server writes Fashion-MNIST samples (dataset-fashion-mnist is installed)"
    predictions, view = client.predict(handle_file(str(sample)), SMALL, api_name="/classify")
    rest = httpx.post(f"{url}/api/predict", files=[("files", (sample.name, sample.read_bytes(), "image/png"))],
                      data={"model": SMALL, "top_k": "5"}, timeout=300).json()["predictions"][0]["top"]
    assert [c["label"] for c in predictions["confidences"]] == [r["label"] for r in rest]
    assert [c["confidence"] for c in predictions["confidences"]] == pytest.approx([r["probability"] for r in rest],
                                                                                   abs=1e-5)
    assert predictions["label"] in FMNIST_CLASSES and view.startswith('<img alt="the image as the model sees it"')
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(AppError, match="fake.png: not an image this server can read"):
        client.predict(handle_file(str(tmp_path / "fake.png")), SMALL, api_name="/classify")
