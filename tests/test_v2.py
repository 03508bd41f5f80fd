"""The Open Inference Protocol v2 routes end to end: the real app on loopback, a real zoo, ONNX Runtime, and
tritonclient (HTTP) as the client, in its default binary tensor mode and in JSON."""

from __future__ import annotations

import gzip
import json
import zlib
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
from zoo.store import ZooEntry

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


def images(server: PreZooServer, n: int, entry: ZooEntry | None = None) -> np.ndarray:
    """n PNGs preprocessed the server's way for `entry` (decode + to_input; default: the default entry), as one
    (n, C, H, W) batch."""
    return np.stack([server.decode(png(seed=i), f"{i}.png", entry or server.default_entry) for i in range(n)])


def pixel_values(x: np.ndarray, binary: bool = True, datatype: str = "FP32") -> triton.InferInput:
    return triton.InferInput("pixel_values", list(x.shape), datatype).set_data_from_numpy(x, binary_data=binary)


def onnx_logits(server: PreZooServer, entry_id: str, x: np.ndarray) -> np.ndarray:
    """The entry's exported ONNX model run directly, outside the server's engine."""
    path = server.download(server.zoos.entry(entry_id), "onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"pixel_values": x})[0]


def rejection(client: triton.InferenceServerClient, model: str, *inputs: triton.InferInput) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, list(inputs))
    return e.value.status(), e.value.message()


def test_server_and_model_metadata_liveness_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {"name": "prezoo", "version": "0.1.0", "extensions": [
        "binary_tensor_data", "model_configuration", "statistics"]}
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


def test_unknown_v2_paths_are_json_404s_in_the_protocols_words(live):
    for path in ("/v2/nothing-here", "//v2/models/x/y/z", "/v2/models/x/versions"):
        r = httpx.get(f"{live.url}{path}", timeout=30)
        error = r.json()["error"]
        assert r.status_code == 404 and f"no route {path}" in error and "Open Inference Protocol v2" in error, error
        assert "/api/" not in error
    r = httpx.get(f"{live.url}/api/nothing-here", timeout=30)
    assert r.status_code == 404 and "the API is under /api/" in r.json()["error"]
    r = httpx.get(f"{live.url}/v2/models/{SMALL}/infer", timeout=30)
    assert r.status_code == 405 and "use POST" in r.json()["error"]


def test_version_1_paths_answer_as_the_entry_and_others_are_404s(client, live):
    x = images(live.server, 2)
    assert client.get_model_metadata(SMALL, model_version="1") == client.get_model_metadata(SMALL)
    assert client.is_model_ready(SMALL, model_version="1") and not client.is_model_ready(SMALL, model_version="2")
    assert client.get_model_config(SMALL, model_version="1") == client.get_model_config(SMALL)
    result = client.infer(SMALL, [pixel_values(x)], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("logits"), client.infer(SMALL, [pixel_values(x)]).as_numpy("logits"))
    assert result.get_response()["model_version"] == "1"
    assert client.get_inference_statistics(SMALL, model_version="1")["model_stats"][0]["name"] == SMALL
    for path in ("versions/2", "versions/2/ready", "versions/0/config", "versions/latest/stats"):
        r = httpx.get(f"{live.url}/v2/models/{SMALL}/{path}", timeout=30)
        assert r.status_code == 404 and "an entry has one version, '1'" in r.json()["error"], r.text
    with pytest.raises(InferenceServerException) as e:
        client.infer(SMALL, [pixel_values(x)], model_version="2")
    assert e.value.status() == "404"
    r = httpx.post(f"{live.url}/v2/models/{SMALL}/versions/1/infer", content=b" " * (MAX_IMAGES * 784 * 32 + 2**16 + 1),
                   timeout=120)
    assert r.status_code == 413, "the versioned path has the infer route's body limit"


def test_config_is_the_triton_config_export_writes_with_this_servers_batching(client, live):
    config = client.get_model_config(SMALL)
    assert (config["name"], config["platform"], config["max_batch_size"]) == (SMALL, "onnxruntime_onnx", MAX_IMAGES)
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("pixel_values", "TYPE_FP32",
                                                                                  [1, 28, 28])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("logits", "TYPE_FP32",
                                                                                   [len(FMNIST_CLASSES)])]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000  # numbers, as Triton writes them
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("no-such-model")
    assert e.value.status() == "404"


def test_stats_count_requests_images_and_times_as_triton_reports_them(client, live):
    def stats() -> dict:
        return client.get_inference_statistics(SMALL)["model_stats"][0]

    before, x = stats(), images(live.server, 3)
    client.infer(SMALL, [pixel_values(x)])
    with pytest.raises(InferenceServerException):
        client.infer(SMALL, [pixel_values(x[:, :, :14])])
    after = stats()
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1
    assert fail["count"] == before["inference_stats"]["fail"]["count"] + 1 and fail["ns"] > 0
    assert after["inference_count"] == before["inference_count"] + 3
    assert after["execution_count"] == before["execution_count"] + 1
    for kind in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][kind]["ns"] > before["inference_stats"][kind]["ns"], kind
    assert after["inference_stats"]["compute_infer"]["count"] == after["inference_stats"]["queue"]["count"]
    assert {b["batch_size"] for b in after["batch_stats"]} >= {3}
    assert (after["version"], after["last_inference"] > 0) == ("1", True)
    every = client.get_inference_statistics()["model_stats"]
    assert [s["name"] for s in every] == [e.id for e in live.server.zoos.entries]
    assert httpx.get(f"{live.url}/v2/models/stats", timeout=30).json() == {"model_stats": every}


def test_repository_index_lists_every_entry_ready(client, live):
    expected = [{"name": e.id, "version": "1", "state": "READY", "reason": ""} for e in live.server.zoos.entries]
    assert client.get_model_repository_index() == expected
    r = httpx.post(f"{live.url}/v2/repository/index", json={"ready": True}, timeout=30)
    assert r.status_code == 200 and r.json() == expected
    r = httpx.post(f"{live.url}/v2/repository/index", json={"ready": "yes"}, timeout=30)
    assert r.status_code == 400 and "invalid index request" in r.json()["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_give_the_same_logits(client, live, algorithm):
    x = images(live.server, MAX_IMAGES)
    for binary in (True, False):
        result = client.infer(SMALL, [pixel_values(x, binary)], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("logits"),
                                      client.infer(SMALL, [pixel_values(x, binary)]).as_numpy("logits"))


@pytest.mark.parametrize(("encoding", "body", "status", "expected"), [
    ("gzip", gzip.compress(b" " * (MAX_IMAGES * 784 * 32 + 2**16 + 1)), 413, "decompresses to over this route's limit"),
    ("deflate", zlib.compress(b"[" * 10**7), 413, "decompresses to over"),
    ("gzip", b"not gzip at all", 400, "not valid gzip data"),
    ("gzip", gzip.compress(b'{"inputs": []}')[:-6], 400, "truncated"),
    ("gzip", gzip.compress(b'{"inputs": []}') + b"more", 400, "followed by other bytes"),
    ("br", b"{}", 415, "Content-Encoding 'br' is not supported"),
], ids=["gzip-bomb", "deflate-bomb", "not-gzip", "truncated", "trailing-bytes", "brotli"])
def test_compressed_bodies_are_bounded_after_decompression_too(live, encoding, body, status, expected):
    r = httpx.post(f"{live.url}/v2/models/{SMALL}/infer", content=body, headers={"Content-Encoding": encoding},
                   timeout=120)
    assert r.status_code == status and expected in r.json()["error"], r.text
    assert len(body) < MAX_IMAGES * 784 * 32, "each is small on the wire: only the decompressed size is over"
