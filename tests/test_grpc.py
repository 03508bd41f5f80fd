"""The Open Inference Protocol v2 over gRPC end to end: the real app with its gRPC server on loopback, a real zoo,
ONNX Runtime, and tritonclient.grpc, KServe's InferenceGRPCClient and InferenceRESTClient as clients; answers
compared with HTTP's, errors as gRPC status codes, the micro-batcher and statistics shared with HTTP.

The KServe test needs its clients (requirements-kserve.txt, installed --no-deps); skipped where kserve is absent. They
run in a process of their own: kserve's protos and tritonclient's register the same names in protobuf's default pool.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from bench.bench_ray import free_ports
from bench.bench_server import running_server
from server.app import create_app
from server.images import ImageLimits
from server.state import PreZooServer, ServerConfig
from tests.test_server import ROOT, SMALL, serve
from tests.test_v2 import images, onnx_logits
from tests.zoo_fixtures import FMNIST_CLASSES

MAX_IMAGES = 8
needs_kserve = pytest.mark.skipif(importlib.util.find_spec("kserve") is None,
                                  reason="needs KServe's clients: pip install --no-deps -r requirements-kserve.txt")


@dataclass
class Both:
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    server: PreZooServer


@pytest.fixture(scope="module")
def both(zoo_dir, tmp_path_factory) -> Iterator[Both]:
    config = ServerConfig(limits=ImageLimits(max_files=MAX_IMAGES), grpc_address="127.0.0.1:0")
    app = create_app(zoo_dir, tmp_path_factory.mktemp("cache"), config)
    with serve(app) as url:
        yield Both(url, f"127.0.0.1:{app.state.grpc_port}", app.state.prezoo)


@pytest.fixture(scope="module")
def client(both) -> Iterator[triton_grpc.InferenceServerClient]:
    c = triton_grpc.InferenceServerClient(both.grpc)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(both) -> Iterator[triton_http.InferenceServerClient]:
    c = triton_http.InferenceServerClient(both.http.removeprefix("http://"), network_timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(both) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """The service's own stub, for requests the clients never send (typed contents, malformed ones)."""
    with grpc.insecure_channel(both.grpc) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def grpc_input(x: np.ndarray, datatype: str = "FP32", name: str = "pixel_values") -> triton_grpc.InferInput:
    return triton_grpc.InferInput(name, list(x.shape), datatype).set_data_from_numpy(x)


def refused(client: triton_grpc.InferenceServerClient, model: str, *inputs: triton_grpc.InferInput,
            **kwargs) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, list(inputs), **kwargs)
    return e.value.status(), e.value.message()


def http_logits(http: triton_http.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    tensor = triton_http.InferInput("pixel_values", list(x.shape), "FP32").set_data_from_numpy(x)
    return http.infer(SMALL, [tensor]).as_numpy("logits")


def test_liveness_readiness_and_metadata_answer_like_http(client, http):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta == http.get_server_metadata() and meta["name"] == "prezoo"
    assert "statistics" in meta["extensions"] and "model_configuration" in meta["extensions"]
    for version in ("", "1"):
        model = client.get_model_metadata(SMALL, model_version=version, as_json=True)
        assert json_format.ParseDict(model, pb.ModelMetadataResponse()) == json_format.ParseDict(
            http.get_model_metadata(SMALL), pb.ModelMetadataResponse(), ignore_unknown_fields=True)  # HTTP: +variants
        assert model["inputs"] == [{"name": "pixel_values", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}]
    assert client.is_model_ready(SMALL) and client.is_model_ready(SMALL, model_version="1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(SMALL, model_version="2")


@pytest.mark.parametrize("n", [1, MAX_IMAGES])
def test_infer_gives_https_logits_through_the_same_micro_batcher(client, http, both, n):
    x = images(both.server, n)
    before = both.server.engine.batching_stats()["images"]
    result = client.infer(SMALL, [grpc_input(x)], request_id=f"req-{n}",
                          outputs=[triton_grpc.InferRequestedOutput("logits")])
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (n, len(FMNIST_CLASSES))
    assert both.server.engine.batching_stats()["images"] == before + n
    np.testing.assert_array_equal(logits, http_logits(http, x))
    np.testing.assert_allclose(logits, onnx_logits(both.server, SMALL, x), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (SMALL, "1", f"req-{n}")


def test_typed_fp32_contents_are_taken_like_raw_contents(client, stub, both):
    x = images(both.server, 2)
    tensor = pb.ModelInferRequest.InferInputTensor(name="pixel_values", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = stub.ModelInfer(pb.ModelInferRequest(model_name=SMALL, inputs=[tensor]), timeout=120)
    logits = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(response.outputs[0].shape))
    np.testing.assert_array_equal(logits, client.infer(SMALL, [grpc_input(x)]).as_numpy("logits"))


def test_config_is_the_triton_config_http_answers(client, http):
    config = client.get_model_config(SMALL, model_version="1").config
    assert config == json_format.ParseDict(http.get_model_config(SMALL), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == (SMALL, "onnxruntime_onnx", MAX_IMAGES)
    assert [(i.name, list(i.dims)) for i in config.input] == [("pixel_values", [1, 28, 28])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [len(FMNIST_CLASSES)])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000  # the micro-batcher's default wait


def test_statistics_count_grpc_and_http_requests_alike(client, http, both):
    def stats() -> pb.ModelStatistics:
        return client.get_inference_statistics(SMALL).model_stats[0]

    x, before = images(both.server, 3), stats()
    client.infer(SMALL, [grpc_input(x)])
    http_logits(http, x)
    refused(client, SMALL, grpc_input(x[:, :, :14]))
    after = stats()
    assert after.inference_stats.success.count == before.inference_stats.success.count + 2
    assert after.inference_stats.fail.count == before.inference_stats.fail.count + 1
    assert after.inference_count == before.inference_count + 6
    assert after.execution_count in (before.execution_count + 1, before.execution_count + 2)  # batched together?
    for kind in ("success", "queue", "compute_infer"):
        assert getattr(after.inference_stats, kind).ns > getattr(before.inference_stats, kind).ns, kind
    assert after.last_inference >= before.last_inference > 0
    assert json_format.ParseDict(http.get_inference_statistics(SMALL), pb.ModelStatisticsResponse()) == \
        client.get_inference_statistics(SMALL)
    every = client.get_inference_statistics().model_stats
    assert sorted(s.name for s in every) == sorted(e.id for e in both.server.zoos.entries)


def test_repository_index_lists_every_entry_ready(client, http, both):
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state) for m in index] == [(e.id, "1", "READY") for e in both.server.zoos.entries]
    assert http.get_model_repository_index() == [json_format.MessageToDict(m) | {"reason": ""} for m in index]


def test_unknown_model_or_version_is_not_found(client, both):
    x = images(both.server, 1)
    status, message = refused(client, "no-such-model", grpc_input(x))
    assert status == "StatusCode.NOT_FOUND" and "no entry 'no-such-model'" in message and SMALL in message
    assert refused(client, SMALL, grpc_input(x), model_version="2")[0] == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("x" * 500)
    assert e.value.status() == "StatusCode.NOT_FOUND" and len(e.value.message()) < 300
    with pytest.raises(InferenceServerException) as e:
        client.get_model_config("no-such-model")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_wrong_shape_dtype_name_and_values_are_invalid_arguments(client, both):
    x = images(both.server, 1)
    status, message = refused(client, SMALL, grpc_input(x[:, :, :14]))
    assert status == "StatusCode.INVALID_ARGUMENT" and "[N, 1, 28, 28]" in message and "[1, 1, 14, 28]" in message
    status, message = refused(client, SMALL, grpc_input(x.astype(np.float64), "FP64"))
    assert status == "StatusCode.INVALID_ARGUMENT" and "must be FP32" in message
    assert refused(client, SMALL, grpc_input(x, name="image"))[0] == "StatusCode.INVALID_ARGUMENT"
    status, message = refused(client, SMALL, grpc_input(np.full_like(x, 3.4e38)))
    assert status == "StatusCode.INVALID_ARGUMENT" and "values beyond ±10000" in message
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    assert refused(client, SMALL, grpc_input(nan)) == ("StatusCode.INVALID_ARGUMENT",
                                                       "pixel_values holds NaN or infinite values")
    status, message = refused(client, SMALL, grpc_input(x), outputs=[triton_grpc.InferRequestedOutput("probs")])
    assert status == "StatusCode.INVALID_ARGUMENT" and "the only output is 'logits'" in message


def test_raw_contents_of_the_wrong_size_are_invalid_arguments(stub, both):
    tensor = pb.ModelInferRequest.InferInputTensor(name="pixel_values", datatype="FP32", shape=[1, 1, 28, 28])
    for raw, expected in (([bytes(784 * 4 - 4)], "takes 3,136 bytes of FP32; raw_input_contents holds 3,132"),
                          ([bytes(784 * 4)] * 2, "one entry per input (1)")):
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(pb.ModelInferRequest(model_name=SMALL, inputs=[tensor], raw_input_contents=raw),
                            timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in e.value.details()


def test_too_many_images_and_oversize_messages_are_resource_exhausted(client, stub, both):
    status, message = refused(client, SMALL, grpc_input(images(both.server, MAX_IMAGES + 1)))
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and f"the limit is {MAX_IMAGES}" in message
    too_big = np.zeros((4 * MAX_IMAGES, 1, 28, 28), np.float32)  # over the message cap: gRPC refuses it unread
    status, message = refused(client, SMALL, grpc_input(too_big))
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" in message
    assert client.infer(SMALL, [grpc_input(images(both.server, 1))]).as_numpy("logits").shape == (1, 10)


def test_non_finite_logits_fail_that_request_only(client, both, monkeypatch):
    engine, real = both.server.engine, both.server.engine.logits
    overflow = lambda x: np.where(x.reshape(len(x), -1)[:, :1] > 1, np.inf, 1.0)
    monkeypatch.setattr(engine, "logits", lambda entry, x: real(entry, x) * overflow(x))
    status, message = refused(client, SMALL, grpc_input(np.full((1, 1, 28, 28), 2.0, np.float32)))
    assert status == "StatusCode.INVALID_ARGUMENT" and "NaN or infinite logits" in message
    assert client.infer(SMALL, [grpc_input(np.zeros((1, 1, 28, 28), np.float32))]).as_numpy("logits").shape == (1, 10)


def test_methods_prezoo_does_not_serve_are_unimplemented(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=SMALL), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "RepositoryModelLoad" in e.value.details()


@needs_kserve
def test_kserve_grpc_and_rest_clients_infer_like_tritonclient(client, both, tmp_path):
    """KServe's clients in a process of their own (bench/kserve_client.py: their protos and tritonclient's cannot
    share one): every call they have answers, raw and typed contents give tritonclient's logits, an unknown model is
    NOT_FOUND / 404."""
    x = images(both.server, MAX_IMAGES)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-m", "bench.kserve_client", "--grpc", both.grpc, "--http", both.http,
                           "--model", SMALL, "--input", str(tmp_path / "x.npy")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    expected = client.infer(SMALL, [grpc_input(x)]).as_numpy("logits")
    for name, calls in results.items():
        assert {call: answer for call, answer in calls.items() if call not in ("logits", "unknown_model")
                and not answer["ok"]} == {}, name
        np.testing.assert_array_equal(np.asarray(calls["logits"], np.float32), expected)
    assert (results["grpc"]["unknown_model"], results["rest"]["unknown_model"]) == ("NOT_FOUND", "404")
    assert set(results["grpc"]) >= {"live", "ready", "model_ready", "infer", "infer_typed"}


def test_python_m_server_serves_grpc_on_the_flag_and_stops_it_with_http(zoo_dir, tmp_path):
    (port,) = free_ports(1)
    with running_server(str(zoo_dir), tmp_path / "cache", "--grpc-port", str(port)):
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{port}") as c:
            assert c.is_server_live() and c.get_model_metadata(SMALL).name == SMALL
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as e:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra (ray[serve])")
def test_ray_serve_answers_the_grpc_service_like_the_single_process_server(zoo_dir, tmp_path, client, both):
    """The Ray Serve application behind Serve's gRPC proxy (server.grpc_v2.add_to_ray_proxy): metadata, logits and
    errors as the single-process server's gRPC answers them."""
    from bench.bench_ray import LOCAL_RAY_ENV, local_ray, ray_app

    os.environ.update(LOCAL_RAY_ENV)
    x, (port,) = images(both.server, 3), free_ports(1)
    options = {"zoo": str(zoo_dir), "cache": str(tmp_path / "cache"), "ort_threads": 1}
    with local_ray(cpus=2) as cluster, ray_app(cluster, options, grpc_port=port):
        ray = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        assert ray.is_server_live() and ray.is_model_ready(SMALL) and not ray.is_model_ready("no-such-model")
        assert ray.get_model_metadata(SMALL) == client.get_model_metadata(SMALL)
        assert ray.get_model_repository_index() == client.get_model_repository_index()
        np.testing.assert_array_equal(ray.infer(SMALL, [grpc_input(x)]).as_numpy("logits"),
                                      client.infer(SMALL, [grpc_input(x)]).as_numpy("logits"))
        for model, tensor in (("no-such-model", grpc_input(x)), (SMALL, grpc_input(x[:, :, :14]))):
            assert refused(ray, model, tensor) == refused(client, model, tensor)
        ray.close()


def test_kserve_manifest_routes_the_grpc_port_as_h2c_and_the_server_listens_there(monkeypatch):
    """deploy/kserve-prezoo-grpc.yaml: the one routed port is named h2c (KServe's gRPC) and is the port the server
    takes --grpc-port from (PREZOO_GRPC_PORT), on a container running the image's `prezoo serve`."""
    from server.__main__ import parse_args

    manifest = yaml.safe_load((ROOT / "deploy" / "kserve-prezoo-grpc.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    (container,) = manifest["spec"]["predictor"]["containers"]
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"], port["protocol"]) == ("h2c", 8081, "TCP")
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    args = parse_args([])
    assert (args.grpc_port, args.port) == (8081, 8080) and container["readinessProbe"]["tcpSocket"]["port"] == 8081
    assert '".venv/bin/prezoo", "serve"' in (ROOT / "Dockerfile").read_text(), "the image runs the server"
