"""The Open Inference Protocol v2 routes end to end: the real app on loopback, a real zoo, ONNX Runtime, and
tritonclient (HTTP) as the client, in its default binary tensor mode and in JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from server.app import create_app
from server.images import ImageLimits
from server.inference import softmax
from server.state import PreZooServer, ServerConfig
from tests.test_server import SMALL, Live, png, serve
from tests.zoo_fixtures import FMNIST_CLASSES, make_zoo

MAX_IMAGES = 8  # JSON of 8 images (28x28) is ~120 KB: over the 64 KiB default body limit, so the v2 limit must apply


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    app = create_app(zoo_dir, tmp_path_factory.mktemp("cache"), ServerConfig(limits=ImageLimits(max_files=MAX_IMAGES)))
    with serve(app) as url:
        yield Live(url, app.state.prezoo)


@pytest.fixture(scope="module")
def client(live) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=120)
    yield c
    c.close()


def images(server: PreZooServer, n: int) -> np.ndarray:
    """n PNGs preprocessed the server's way (decode + to_input), as one (n, C, H, W) batch."""
    return np.stack([server.decode(png(seed=i), f"{i}.png") for i in range(n)])


def pixel_values(x: np.ndarray, binary: bool = True, datatype: str = "FP32") -> triton.InferInput:
    return triton.InferInput("pixel_values", list(x.shape), datatype).set_data_from_numpy(x, binary_data=binary)


def onnx_logits(server: PreZooServer, entry_id: str, x: np.ndarray) -> np.ndarray:
    """The entry's exported ONNX model run directly, outside the server's engine."""
    path = server.download(server.zoo.entry(entry_id), "onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"pixel_values": x})[0]


def rejection(client: triton.InferenceServerClient, model: str, *inputs: triton.InferInput) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, list(inputs))
    return e.value.status(), e.value.message()


def test_server_and_model_metadata_liveness_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {"name": "prezoo", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    meta = client.get_model_metadata(SMALL)
    assert meta["name"] == SMALL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, len(FMNIST_CLASSES)]}]
    assert client.is_model_ready(SMALL) and not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_gives_the_onnx_models_logits_through_the_micro_batcher(client, live, binary):
    x = images(live.server, MAX_IMAGES)
    before = live.server.engine.batching_stats()["images"]
    result = client.infer(SMALL, [pixel_values(x, binary)], request_id="req-7",
                          outputs=[triton.InferRequestedOutput("logits", binary_data=binary)])
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (MAX_IMAGES, len(FMNIST_CLASSES))
    np.testing.assert_allclose(logits, onnx_logits(live.server, SMALL, x), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == SMALL and response["id"] == "req-7"
    assert ("data" in response["outputs"][0]) is not binary
    assert live.server.engine.batching_stats()["images"] == before + MAX_IMAGES


def test_infer_without_requested_outputs_answers_binary_like_triton(client, live):
    x = images(live.server, 1)
    result = client.infer(SMALL, [pixel_values(x)])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == len(FMNIST_CLASSES) * 4
    np.testing.assert_allclose(result.as_numpy("logits"), onnx_logits(live.server, SMALL, x), rtol=1e-5, atol=1e-5)


def test_infer_logits_agree_with_api_predict_probabilities(client, live):
    """The same image, sent to /api/predict as a PNG and to /v2 preprocessed the server's way: softmax of the v2
    logits is /api/predict's probabilities."""
    x = images(live.server, 1)
    probabilities = softmax(client.infer(SMALL, [pixel_values(x)]).as_numpy("logits"))[0]
    r = httpx.post(f"{live.url}/api/predict", files=[("files", ("0.png", png(seed=0), "image/png"))],
                   data={"model": SMALL, "top_k": 3}, timeout=120)
    assert r.status_code == 200, r.text
    for top in r.json()["predictions"][0]["top"]:
        assert top["probability"] == pytest.approx(probabilities[FMNIST_CLASSES.index(top["label"])], rel=1e-5)


def test_unknown_model_is_a_404_with_the_known_ids(client, live):
    status, message = rejection(client, "no-such-model", pixel_values(images(live.server, 1)))
    assert status == "404" and "no entry 'no-such-model'" in message and SMALL in message
    with pytest.raises(InferenceServerException, match="no entry") as e:
        client.get_model_metadata("x" * 500)
    assert e.value.status() == "404" and len(e.value.message()) < 300  # the long id is echoed only in part


def test_wrong_shape_dtype_and_batch_are_refused(client, live):
    x = images(live.server, 1)
    status, message = rejection(client, SMALL, pixel_values(x[:, :, :14]))
    assert status == "400" and "[N, 1, 28, 28]" in message and "[1, 1, 14, 28]" in message
    status, message = rejection(client, SMALL, pixel_values(x.astype(np.float64), datatype="FP64"))
    assert status == "400" and "must be FP32" in message
    status, message = rejection(client, SMALL, pixel_values(images(live.server, MAX_IMAGES + 1)))
    assert status == "413" and f"the limit is {MAX_IMAGES}" in message
    wrong_name = triton.InferInput("image", list(x.shape), "FP32").set_data_from_numpy(x)
    assert rejection(client, SMALL, wrong_name)[0] == "400"
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    assert rejection(client, SMALL, pixel_values(nan, binary=False)) == ("400", "pixel_values holds NaN or infinite "
                                                                                "values")


def infer_raw(live: Live, header: dict, binary: bytes = b"", header_length: str | None = None) -> httpx.Response:
    text = json.dumps(header).encode()
    length = {"Inference-Header-Content-Length": (header_length or str(len(text))).encode("latin-1")
              } if binary or header_length else {}
    return httpx.post(f"{live.url}/v2/models/{SMALL}/infer", content=text + binary, headers=length, timeout=120)


def pixel_header(n: int, **tensor) -> dict:
    return {"inputs": [{"name": "pixel_values", "shape": [n, 1, 28, 28], "datatype": "FP32", **tensor}]}


@pytest.mark.parametrize(("header", "binary", "header_length", "expected"), [
    (pixel_header(1, parameters={"binary_data_size": 784 * 4}), bytes(784 * 4 - 4), None, "takes 3,136 bytes"),
    (pixel_header(1, parameters={"binary_data_size": 100}), bytes(100), None, "binary_data_size says 100"),
    (pixel_header(1, data=[0.0] * 783), b"", None, "takes 784 values, got 783"),
    (pixel_header(1, data=["a"] * 784), b"", None, "must be numbers"),
    (pixel_header(1, data=[[0.0] * 3, [0.0]]), b"", None, "ragged"),
    (pixel_header(1), b"", None, "needs its values"),
    ({"inputs": "nope"}, b"", None, "invalid inference request: inputs"),
    (pixel_header(1, data=[0.0] * 784), b"", "99999999", "Inference-Header-Content-Length must be a byte count"),
    (pixel_header(1, data=[0.0] * 784), b"", "\u00b2", "Inference-Header-Content-Length must be a byte count"),
    (pixel_header(1, data=[0.0] * 784), b"", "9" * 5000, "Inference-Header-Content-Length must be a byte count"),
    (pixel_header(1, data=[3.4e38, -3.4e38] * 392), b"", None, "values beyond"),
    (pixel_header(1, parameters={"binary_data_size": 784 * 4}), np.full(784, -3.4e38, "<f4").tobytes(), None,
     "values beyond"),
    ({**pixel_header(1, data=[0.0] * 784), "outputs": [{"name": "probs"}]}, b"", None, "the only output is 'logits'"),
    ({**pixel_header(1, data=[0.0] * 784), "outputs": [{"name": "logits", "parameters": {"classification": 3}}]},
     b"", None, "not supported"),
], ids=["short-binary", "wrong-size", "few-values", "strings", "ragged", "no-data", "bad-json", "bad-header-length",
        "superscript-header-length", "5000-digit-header-length", "float32-limit-json", "float32-limit-binary",
        "unknown-output", "classification"])
def test_malformed_requests_are_400s_in_the_protocols_error_shape(live, header, binary, header_length, expected):
    r = infer_raw(live, header, binary, header_length)
    assert r.status_code == 400 and list(r.json()) == ["error"] and expected in r.json()["error"], r.text


@pytest.mark.parametrize("binary", [False, True])
def test_non_finite_logits_are_a_json_422_never_nan_in_a_200(live, monkeypatch, binary):
    """Finite inputs within the bound whose logits still overflow (here a model made to answer inf for images whose
    first pixel is over 1) get a reason, in JSON or binary mode alike; the next request is answered as usual."""
    engine, real = live.server.engine, live.server.engine.logits
    overflow = lambda x: np.where(x.reshape(len(x), -1)[:, :1] > 1, np.inf, 1.0)
    monkeypatch.setattr(engine, "logits", lambda entry, x: real(entry, x) * overflow(x))
    poisoned = np.full((1, 1, 28, 28), 2.0, np.float32)
    r = infer_raw(live, pixel_header(1, parameters={"binary_data_size": 784 * 4}), poisoned.tobytes()) if binary \
        else infer_raw(live, pixel_header(1, data=poisoned.ravel().tolist()))
    assert r.status_code == 422 and "NaN or infinite logits" in r.json()["error"], r.text
    assert infer_raw(live, pixel_header(1, data=[0.0] * 784)).status_code == 200


def test_infer_body_limit_is_sized_for_the_most_images_as_json(live):
    """Just over the route's limit is refused before any parsing; the JSON of MAX_IMAGES images (over the default
    limit for other routes) passed in test_infer_gives_the_onnx_models_logits_through_the_micro_batcher."""
    limit = MAX_IMAGES * 784 * 32 + 64 * 1024
    r = httpx.post(f"{live.url}/v2/models/{SMALL}/infer", content=b" " * (limit + 1), timeout=120)
    assert r.status_code == 413 and f"{limit:,} bytes" in r.json()["error"]
    assert infer_raw(live, pixel_header(1, data=[0.0] * 784)).status_code == 200


def test_unknown_v2_paths_are_json_404s_not_the_ui(live):
    r = httpx.get(f"{live.url}/v2/nothing-here", timeout=30)
    assert r.status_code == 404 and "no route /v2/nothing-here" in r.json()["error"]
