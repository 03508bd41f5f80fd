"""The Open Inference Protocol v2 over gRPC (`python -m server --grpc-port PORT`): Triton's `GRPCInferenceService`
(ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer, ModelConfig, ModelStatistics,
RepositoryIndex), answered from the functions that answer /v2 over HTTP (server/v2.py), through the same
micro-batcher, limits and statistics.

The service definitions are tritonclient's (`tritonclient.grpc.service_pb2`, generated from Triton's
grpc_service.proto): KServe's (`kserve.protocol.grpc.grpc_predict_v2_pb2`) are the same package and service name
(`inference.GRPCInferenceService`) but lack ModelConfig, ModelStatistics and RepositoryIndex, and `kserve.ModelServer`
would replace this server's app, micro-batcher and limits rather than serve them. KServe's InferenceGRPCClient calls
the same methods, so both clients work.

It runs as a grpc.aio server on the HTTP server's event loop, started and stopped by the app's lifespan: ModelInfer
awaits the micro-batcher like the HTTP route does, with no thread hop and no second loop (a thread-pool server would
hand every call back to this loop anyway). Limits: a message up to `infer_message_limit` (the most images one
request may hold, as raw float32, and 64 KiB), at most MAX_CONCURRENT_RPCS calls at once (gRPC itself answers
RESOURCE_EXHAUSTED beyond either), then HTTP's input checks; HTTP's error statuses become gRPC codes (CODES).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from export.cache import CacheError
from export.onnx import OUTPUT
from server.api import ApiError
from server.inference import NonFiniteLogits
from server.state import PreZooServer
from server.v2 import (
    DATATYPE,
    VERSION,
    V2Input,
    V2Output,
    check_input,
    checked_values,
    infer_message_limit,
    model_metadata,
    model_statistics,
    raw_values,
    repository_index,
    requested_binary,
    server_metadata,
    triton_config,
    v2_model,
)
from zoo.store import ZooEntry

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
RAY_SERVICER_FUNCTION = "server.grpc_v2.add_to_ray_proxy"  # Ray Serve's gRPCOptions.grpc_servicer_functions entry
MAX_CONCURRENT_RPCS = 256  # calls in flight at once, RESOURCE_EXHAUSTED beyond: what may queue for the micro-batcher
Code = grpc.StatusCode
# HTTP's statuses as gRPC codes: 413 (too many images, too large) as gRPC's own message size refusal; 415 (a
# Content-Encoding) and 422 (non-finite logits) are the request's fault; 507 (the export cache's disk is full)
CODES = {400: Code.INVALID_ARGUMENT, 404: Code.NOT_FOUND, 413: Code.RESOURCE_EXHAUSTED, 415: Code.INVALID_ARGUMENT,
         422: Code.INVALID_ARGUMENT, 503: Code.UNAVAILABLE, 507: Code.RESOURCE_EXHAUSTED}
ANSWERED = (ApiError, NonFiniteLogits, CacheError)  # errors answered with a status; any other is a bug (UNKNOWN)
Fail = Callable[[grpc.StatusCode, str], Awaitable[Message]]  # how a server answers a status: abort, or set and return


def status_of(e: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status of an error HTTP answers with an HTTP status (server.api's handlers)."""
    if isinstance(e, ApiError):
        return CODES.get(e.status, Code.INTERNAL), e.message
    return (Code.INVALID_ARGUMENT if isinstance(e, NonFiniteLogits) else Code.RESOURCE_EXHAUSTED), str(e)


class InferenceService:
    """The service's calls, a request message in, a response message out, errors raised as HTTP's (ApiError ...):
    the grpc.aio server here and Ray Serve's gRPC proxy (server/ray_serve.py) each turn them into a status."""

    METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
               "ModelConfig", "ModelStatistics", "RepositoryIndex")

    def __init__(self, server: PreZooServer) -> None:
        self.server = server

    async def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        """Not ready (no error) for a model or version that does not exist, as Triton answers."""
        try:
            v2_model(self.server, request.name, request.version)
        except ApiError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return json_format.ParseDict(server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        entry = v2_model(self.server, request.name, request.version)
        return json_format.ParseDict(model_metadata(self.server, entry), pb.ModelMetadataResponse())

    async def ModelConfig(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        entry = v2_model(self.server, request.name, request.version)
        return pb.ModelConfigResponse(config=await asyncio.to_thread(triton_config, self.server, entry))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        """One entry's, or every entry's for an empty name."""
        entries = [v2_model(self.server, request.name, request.version)] if request.name else self.server.zoos.entries
        return model_statistics(self.server, entries)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        return repository_index(self.server)

    async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        entry = v2_model(self.server, request.model_name, request.model_version)
        with self.server.engine.stats.request(entry.id):
            x = infer_input(self.server, entry, request)
            requested_binary([V2Output(name=o.name, parameters={k: value(p) for k, p in o.parameters.items()})
                              for o in request.outputs] or None, True)  # checked like HTTP's; always raw here
            return infer_reply(entry, request.id, await self.server.engine.batched_logits(entry, x))


def value(parameter: pb.InferParameter) -> object:
    choice = parameter.WhichOneof("parameter_choice")
    return choice and getattr(parameter, choice)


def infer_input(server: PreZooServer, entry: ZooEntry, request: pb.ModelInferRequest) -> np.ndarray:
    """The input's values from its raw contents (tritonclient's and KServe's way) or its typed fp32_contents,
    checked as HTTP checks them (in the shape `entry` takes)."""
    tensor = check_input(server, entry, [V2Input(name=t.name, shape=list(t.shape), datatype=t.datatype)
                                  for t in request.inputs])
    if not request.raw_input_contents:
        return checked_values(tensor, np.asarray(request.inputs[0].contents.fp32_contents, dtype=np.float32))
    if len(request.raw_input_contents) != 1 or request.inputs[0].HasField("contents"):
        raise ApiError(400, f"raw_input_contents must hold one entry per input ({len(request.inputs)}), and then no "
                            f"input may have contents too; got {len(request.raw_input_contents)}")
    raw = request.raw_input_contents[0]
    return checked_values(tensor, raw_values(tensor, raw, f"raw_input_contents holds {len(raw):,}"))


def infer_reply(entry: ZooEntry, request_id: str, logits: np.ndarray) -> pb.ModelInferResponse:
    """The logits as raw contents (what Triton answers over gRPC)."""
    output = pb.ModelInferResponse.InferOutputTensor(name=OUTPUT, datatype=DATATYPE, shape=list(logits.shape))
    return pb.ModelInferResponse(model_name=entry.id, model_version=VERSION, id=request_id, outputs=[output],
                                 raw_output_contents=[logits.astype("<f4").tobytes()])


async def answer(service: InferenceService, name: str, request: Message, fail: Fail) -> Message:
    """The call's response, or what `fail` makes of its error's status."""
    try:
        return await getattr(service, name)(request)
    except ANSWERED as e:
        return await fail(*status_of(e))


def empty_response(name: str) -> Message:
    """An empty response of the method `name` (for a status set beside it)."""
    return getattr(pb, SERVICE.methods_by_name[name].output_type.name)()


def request_message(name: str, data: bytes) -> Message:
    """The request message of the method `name` from its bytes (DecodeError if they are none)."""
    return getattr(pb, SERVICE.methods_by_name[name].input_type.name).FromString(data)


def add_to_ray_proxy(servicer: object, server: grpc.aio.Server) -> None:
    """Register InferenceService's calls on Ray Serve's gRPC proxy (RAY_SERVICER_FUNCTION; server/ray_serve.py),
    with requests left as bytes: the proxy pickles each request to the ingress replica, and tritonclient's generated
    classes cannot be pickled (they name their module 'grpc_service_pb2', which does not exist); the ingress parses
    them (request_message). The proxy replaces the calls' handlers with its own routing."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name)) for name in InferenceService.METHODS}),))


def servicer(service: InferenceService) -> pb_grpc.GRPCInferenceServiceServicer:
    """The grpc.aio servicer: each call answered by `service`, an error as an abort; the service's other methods
    (streaming, model loading, shared memory, trace and log settings) are UNIMPLEMENTED."""
    calls = pb_grpc.GRPCInferenceServiceServicer()
    for method in SERVICE.methods:
        setattr(calls, method.name, aio_call(service, method.name) if method.name in service.METHODS
                else unimplemented(method.name))
    return calls


def aio_call(service: InferenceService, name: str) -> Callable:
    async def call(request: Message, context: grpc.aio.ServicerContext) -> Message:
        return await answer(service, name, request, context.abort)

    return call


def unimplemented(name: str) -> Callable:
    async def call(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(Code.UNIMPLEMENTED, f"PreZoo does not implement {name}")

    return call


async def start_grpc(server: PreZooServer, address: str) -> tuple[grpc.aio.Server, int]:
    """The gRPC server listening on `address` ('host:port'; port 0 picks a free one) on this event loop, and its
    port. RuntimeError when it cannot listen there (a port in use: SO_REUSEPORT is off, so a second server on the
    same port is refused rather than sharing the traffic)."""
    limit = infer_message_limit(server)
    grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                           ("grpc.so_reuseport", 0)],
                                  maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer(InferenceService(server)), grpc_server)
    port = grpc_server.add_insecure_port(address)
    if not port:  # older grpcio answered 0 instead of raising
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    await grpc_server.start()
    return grpc_server, port
