"""The Open Inference Protocol v2 (KServe V2 / Triton HTTP) under /v2, so Triton and KServe clients can use the served
zoos; server/grpc_v2.py serves the same protocol over gRPC from the functions here, so both answer alike.

A model is an entry id of any served zoo with one version, "1" (its id already names its weights):
`/v2/models/{id}/versions/1/...` is the same entry, any other version a 404. Its one input is the preprocessed batch
(`pixel_values`, FP32, [-1, C, H, W] in its zoo's input shape) and its one output the logits ([-1, classes]).
Tensors come as JSON or in the binary tensor data extension (tritonclient's default): a JSON header of
`Inference-Header-Content-Length` bytes, then each input's `binary_data_size` bytes in order; the body may be gzip or
deflate compressed (`Content-Encoding`), and its limit holds for the bytes sent and for the bytes they decompress to.
Inference goes through the same micro-batcher and image count limit as /api/predict; errors are `{"error": message}`
(ApiError) with 400, 404, 413 or 415.

Config, statistics and the repository index are built once, as the protocol's protobuf messages (Triton's service
definitions, tritonclient.grpc's `service_pb2` and `model_config_pb2`): gRPC answers the messages, HTTP their JSON
form as Triton writes it (the proto's field names, every field, 64-bit numbers as numbers).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb

from export.cache import FILES
from export.onnx import INPUT, OUTPUT
from export.triton import PLATFORM, model_config
from server.api import ApiError, Server, clip, describe_problems, known_entry
from server.inference import Duration, EntryStats
from server.state import PreZooServer
from zoo import __version__
from zoo.store import Variant, ZooEntry

PREFIX = "/v2"
MODEL_PATHS = ("/models/{model}", "/models/{model}/versions/{version}")  # every model route answers under both
INFER_PATHS = tuple(f"{PREFIX}{path}/infer" for path in MODEL_PATHS)
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPE, ITEM_BYTES = "FP32", 4  # little-endian float32, as the binary extension and gRPC's raw contents send it
VERSION = "1"  # an entry has one version: its id already names its weights
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
JSON_BYTES_PER_ELEMENT = 32  # the longest JSON text of a float32 (as a double's repr) and its separator
HEADER_BYTES = 64 * 1024  # the infer request's JSON without its tensor data
MAX_ABS_VALUE = 1e4  # far beyond any preprocessed image, far below what overflows a layer's float32 sums
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # Content-Encoding -> zlib's wbits (RFC 9110)
LONG = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
router = APIRouter(prefix=PREFIX, tags=["open inference protocol v2"])


class V2Input(BaseModel):
    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class V2Output(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class V2Parameters(BaseModel):
    binary_data_output: StrictBool = False


class V2Request(BaseModel):
    id: str | None = None
    inputs: list[V2Input]
    outputs: list[V2Output] | None = None
    parameters: V2Parameters = Field(default_factory=V2Parameters)


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: StrictBool = False  # only the ready models: every entry is


# -- what HTTP and gRPC share -----------------------------------------------------------------------

def infer_body_limit(server: PreZooServer) -> int:
    """The largest infer request: the most images one request may hold (of the largest input any served zoo
    takes), as JSON numbers (binary is smaller)."""
    return server.config.limits.max_files * largest_input(server) * JSON_BYTES_PER_ELEMENT + HEADER_BYTES


def infer_message_limit(server: PreZooServer) -> int:
    """The largest gRPC infer message: the most images one request may hold as raw float32, and the rest."""
    return server.config.limits.max_files * largest_input(server) * ITEM_BYTES + HEADER_BYTES


def largest_input(server: PreZooServer) -> int:
    """Values in one image of the largest input shape a served entry takes."""
    return max(math.prod(input_shape(server, e)) for e in server.zoos.entries)


def input_shape(server: PreZooServer, entry: ZooEntry) -> tuple[int, int, int]:
    """(C, H, W) of the entry's model, as its zoo preprocesses images."""
    p = server.zoos.zoo_of(entry).preprocessing
    return p["in_chans"], p["img_size"], p["img_size"]


def server_metadata() -> dict[str, Any]:
    return {"name": "prezoo", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(server: PreZooServer, entry: ZooEntry) -> dict[str, Any]:
    return {"name": entry.id, "versions": [VERSION], "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": DATATYPE, "shape": [-1, *input_shape(server, entry)]}],
            "outputs": [{"name": OUTPUT, "datatype": DATATYPE, "shape": [-1, len(server.zoos.classes)]}]}


def v2_model(server: PreZooServer, model: str, version: str = "") -> ZooEntry:
    """The entry a model name and version name ("" or "1"): a long id is no entry either, and the 404 echoes only a
    prefix."""
    entry = known_entry(server, clip(model))
    if version not in ("", VERSION):
        raise ApiError(404, f"no version {clip(version)!r} of model {entry.id}: an entry has one version, {VERSION!r}")
    return entry


def triton_config(server: PreZooServer, entry: ZooEntry) -> model_config_pb2.ModelConfig:
    """The entry's Triton model config as `python -m export triton` writes it (inputs and outputs read from its fp32
    ONNX file), with this server's batching: at most the images one request may hold, and the micro-batcher as
    Triton's dynamic batching (its wait as the queue delay), or none when it is off. Blocking: exports the entry's
    ONNX file on first use, as its first inference would."""
    with server.exports.reading(server.zoos.zoo_of(entry), entry, "onnx") as folder:
        config = model_config(entry.id, folder / FILES["onnx"][0], server.config.limits.max_files, "fp32", False)
    inference = server.config.inference
    if inference.micro_batching:
        config.dynamic_batching.max_queue_delay_microseconds = round(inference.max_wait_ms * 1000)
    else:
        config.ClearField("dynamic_batching")
    return config


def model_statistics(server: PreZooServer, entries: list[ZooEntry]) -> pb.ModelStatisticsResponse:
    """Triton's statistics of `entries` (server.inference.Statistics). Input decoding and answer encoding are not
    timed apart: they are in each request's success or fail time, and compute_input/compute_output stay zero."""
    return pb.ModelStatisticsResponse(model_stats=[entry_statistics(e.id, server.engine.stats.of(e.id))
                                                   for e in entries])


def entry_statistics(entry_id: str, stats: EntryStats) -> pb.ModelStatistics:
    def duration(d: Duration | None = None) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns) if d else pb.StatisticDuration()

    return pb.ModelStatistics(
        name=entry_id, version=VERSION, last_inference=stats.last_inference_ms, inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(success=duration(stats.success), fail=duration(stats.fail),
                                           queue=duration(stats.queue), compute_input=duration(),
                                           compute_infer=duration(stats.compute_infer), compute_output=duration(),
                                           cache_hit=duration(), cache_miss=duration()),
        batch_stats=[pb.InferBatchStatistics(batch_size=size, compute_input=duration(), compute_infer=duration(d),
                                             compute_output=duration()) for size, d in sorted(stats.batches.items())])


def repository_index(server: PreZooServer) -> pb.RepositoryIndexResponse:
    """Every entry of every served zoo, ready: a session is built on an entry's first request (as /v2/health/ready
    says)."""
    return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(name=e.id, version=VERSION,
                                                                                    state="READY")
                                              for e in server.zoos.entries])


def triton_json(message: Message) -> dict[str, Any]:
    """A message as Triton's HTTP API writes it: the proto's field names, every field, 64-bit numbers as numbers
    (protobuf's JSON writes those as strings)."""
    as_dict = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return _numbers(as_dict, message.DESCRIPTOR)


def _numbers(message: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    return {name: _field(value, descriptor.fields_by_name[name]) for name, value in message.items()}


def _field(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        inner = field.message_type.fields_by_name["value"]
        return {key: _one(v, inner) for key, v in value.items()}
    return [_one(v, field) for v in value] if isinstance(value, list) else _one(value, field)


def _one(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        return _numbers(value, field.message_type)
    return int(value) if field.type in LONG else value


def check_input(server: PreZooServer, entry: ZooEntry, inputs: list[V2Input]) -> V2Input:
    """The request's one input, with the datatype and shape the entry's model takes (images within the server's
    limit)."""
    if [i.name for i in inputs] != [INPUT]:
        raise ApiError(400, f"expected one input named {INPUT!r}, got {[clip(i.name) for i in inputs][:4]}")
    tensor, chw, max_images = inputs[0], list(input_shape(server, entry)), server.config.limits.max_files
    if tensor.datatype != DATATYPE:
        raise ApiError(400, f"{INPUT} must be {DATATYPE}, got {clip(tensor.datatype)!r}")
    if len(tensor.shape) != 4 or tensor.shape[1:] != chw or tensor.shape[0] < 1:
        raise ApiError(400, f"{INPUT} must have shape [N, {', '.join(map(str, chw))}] with N >= 1, "
                            f"got {tensor.shape[:8]}")
    if tensor.shape[0] > max_images:
        raise ApiError(413, f"{tensor.shape[0]} images in one request; the limit is {max_images}")
    return tensor


def raw_values(tensor: V2Input, data: bytes, found: str, declared: object = None) -> np.ndarray:
    """The input's values from little-endian float32 bytes (the binary extension's, gRPC's raw contents); `found`
    says, for the error, what came instead; `declared`, a size the request states besides."""
    expected = math.prod(tensor.shape) * ITEM_BYTES
    if len(data) != expected or declared not in (None, expected):
        raise ApiError(400, f"{INPUT} of shape {tensor.shape} takes {expected:,} bytes of {DATATYPE}; {found}")
    return np.frombuffer(data, dtype="<f4")


def checked_values(tensor: V2Input, x: np.ndarray) -> np.ndarray:
    """The values as float32 in the input's shape: as many as it takes, finite and within ±MAX_ABS_VALUE, as
    preprocessed images are."""
    size = math.prod(tensor.shape)
    if x.size != size:
        raise ApiError(400, f"{INPUT} of shape {tensor.shape} takes {size:,} values, got {x.size:,}")
    if not np.isfinite(x).all():
        raise ApiError(400, f"{INPUT} holds NaN or infinite values")
    if np.abs(x).max() > MAX_ABS_VALUE:
        raise ApiError(400, f"{INPUT} holds values beyond ±{MAX_ABS_VALUE:g}: preprocessed images lie within a few "
                            f"units of 0 ((x - mean) / std), and values near float32's limit overflow the model")
    return x.astype(np.float32, copy=False).reshape(tensor.shape)


def requested_binary(outputs: list[V2Output] | None, default: bool) -> bool:
    """Whether the logits go back as binary data: per requested output, else `default` (the request's)."""
    if outputs is None:
        return default
    if [o.name for o in outputs] != [OUTPUT]:
        raise ApiError(400, f"the only output is {OUTPUT!r}, got {[clip(o.name) for o in outputs][:4]}")
    unsupported = set(outputs[0].parameters) - {"binary_data"}
    if unsupported:
        raise ApiError(400, f"output parameters {sorted(map(clip, unsupported))[:4]} are not supported here")
    binary = outputs[0].parameters.get("binary_data", default)
    if not isinstance(binary, bool):
        raise ApiError(400, "output parameter binary_data must be true or false")
    return binary


# -- HTTP only --------------------------------------------------------------------------------------

def decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as its Content-Encoding says (gzip, deflate, identity), at most `limit` bytes decompressed: the
    body limit counts only the bytes sent, and a few KiB of gzip can hold gigabytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ENCODINGS:
        raise ApiError(415, f"Content-Encoding {clip(encoding)!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(ENCODINGS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ApiError(400, f"the body is not valid {encoding} data: {e}") from None
    if len(data) > limit:
        raise ApiError(413, f"the body decompresses to over this route's limit of {limit:,} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ApiError(400, f"the body's {encoding} data is truncated or followed by other bytes")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data): the whole body is JSON unless the header says how much of it is. ASCII
    digits only, a body's worth of them (str.isdigit takes '²', and int() refuses past 4,300 digits)."""
    if header_length is None:
        return body, b""
    if not re.fullmatch(r"[0-9]{1,12}", header_length) or int(header_length) > len(body):
        raise ApiError(400, f"{HEADER_LENGTH} must be a byte count within the body's {len(body):,} bytes, got "
                            f"{clip(header_length)!r}")
    return body[:int(header_length)], body[int(header_length):]


def parse_request(header: bytes) -> V2Request:
    """The JSON header, or a 400 listing what is wrong (the protocol's status for a bad request, not FastAPI's 422)."""
    try:
        return V2Request.model_validate_json(header)
    except ValidationError as e:
        _, message = describe_problems(e.errors())
        raise ApiError(400, f"invalid inference request: {clip(message, 512)}") from None


def input_array(tensor: V2Input, binary: bytes) -> np.ndarray:
    """The input's values from the binary data or from JSON."""
    if "binary_data_size" in tensor.parameters:
        declared = tensor.parameters["binary_data_size"]
        found = f"binary_data_size says {clip(str(declared))} and {len(binary):,} bytes follow the JSON header"
        return checked_values(tensor, raw_values(tensor, binary, found, declared))
    return checked_values(tensor, json_values(tensor.data, binary))


def json_values(data: list[Any] | None, binary: bytes) -> np.ndarray:
    """Numbers of the JSON `data` (flat or nested row-major); no binary data may follow then."""
    if data is None or binary:
        raise ApiError(400, f"{INPUT} needs its values as JSON `data` or as binary data with "
                            f"parameters.binary_data_size (and {HEADER_LENGTH})")
    try:
        x = np.asarray(data)
    except ValueError:
        raise ApiError(400, f"{INPUT}'s data is a ragged nested list") from None
    if x.dtype.kind not in "iuf":
        raise ApiError(400, f"{INPUT}'s data must be numbers")
    return x.astype(np.float32).ravel()


def infer_response(entry: ZooEntry, request: V2Request, logits: np.ndarray, binary: bool) -> Response:
    output = {"name": OUTPUT, "datatype": DATATYPE, "shape": list(logits.shape)}
    answer = {"model_name": entry.id, "model_version": VERSION, "id": request.id or "", "outputs": [output]}
    if not binary:
        output["data"] = logits.ravel().tolist()
        return JSONResponse(answer)
    data = logits.astype("<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps(answer).encode()
    return Response(header + data, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})


Handler = Callable[[Request, Exception], Awaitable[Response]]


def v2_not_found(fallback: Handler) -> Handler:
    """The router's 404 on a /v2 path in the protocol's words (the routes there); `fallback` answers the rest."""
    async def answer(request: Request, e: Exception) -> Response:
        path = re.sub("/{2,}", "/", request.url.path)
        if not (isinstance(e, StarletteHTTPException) and e.status_code == 404
                and (path == PREFIX or path.startswith(f"{PREFIX}/"))):
            return await fallback(request, e)
        return JSONResponse({"error": f"no route {clip(request.url.path)} in the Open Inference Protocol v2: GET /v2, "
                                      f"/v2/health/live, /v2/health/ready, /v2/models/stats, /v2/models/MODEL with "
                                      f"/ready, /config, /stats (also under /versions/1), POST .../infer, "
                                      f"POST /v2/repository/index"}, status_code=404)

    return answer


def add_v2_routes(app: FastAPI, server: PreZooServer) -> None:
    """Serve /v2 from `server`: the routes find it on the app's state. After the app's own error handlers: the
    router's 404 under /v2 gets the protocol's words, the app's handler answers every other."""
    app.state.prezoo = server
    app.include_router(router)
    fallback = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(StarletteHTTPException, v2_not_found(fallback))


def v2_entry(model: str, server: Server) -> ZooEntry:
    return v2_model(server, model)


def known_version(version: Annotated[str, Path(description=f"the entry's one version, {VERSION!r}")],
                  model: str, server: Server) -> None:
    v2_model(server, model, version)


Entry = Annotated[ZooEntry, Depends(v2_entry)]


def model_route(method: str, path: str) -> Callable[[Callable], Callable]:
    """Register an endpoint at /models/{model}{path} and at /models/{model}/versions/{version}{path}."""
    def register(endpoint: Callable) -> Callable:
        for prefix in MODEL_PATHS:
            router.add_api_route(f"{prefix}{path}", endpoint, methods=[method],
                                 dependencies=[Depends(known_version)] if "{version}" in prefix else None)
        return endpoint

    return register


@router.get("")
def server_metadata_route() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return server_metadata()


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def ready() -> dict[str, bool]:
    """Ready once the app answers: the zoo is loaded and every entry's session is built on its first request."""
    return {"ready": True}


@router.get("/models/stats")
def all_statistics(server: Server) -> dict[str, Any]:
    """Every entry's statistics (of every served zoo), as Triton reports its models' (counts, and cumulative times in
    ns)."""
    return triton_json(model_statistics(server, server.zoos.entries))


@router.post("/repository/index")
async def index(request: Request, server: Server) -> list[dict[str, Any]]:
    """Every entry of every served zoo, with its version and state (all READY); the body, if any:
    {"ready": true|false}."""
    body = decoded(await request.body(), request.headers.get("content-encoding"), HEADER_BYTES)
    try:
        IndexRequest.model_validate_json(body or b"{}")
    except ValidationError as e:
        raise ApiError(400, f"invalid index request: {clip(describe_problems(e.errors())[1], 512)}") from None
    return triton_json(repository_index(server))["models"]


@model_route("GET", "")
def metadata(entry: Entry, server: Server) -> dict[str, Any]:
    """The entry's input (preprocessed images) and output (logits), and (beyond the protocol's fields, over HTTP
    only: gRPC's message has no place for them) `variants`, every ONNX file the entry is served as (its fp32 file and
    its weights at fewer bytes) with its measured bytes, top-1 and download path (REST's `/api/models/...`)."""
    return {**model_metadata(server, entry), "variants": [served_variant(entry, v) for v in entry.all_variants()]}


def served_variant(entry: ZooEntry, variant: Variant) -> dict[str, Any]:
    return {"name": variant.name, "file_bytes": variant.file_bytes, "top1": variant.top1,
            "val_top1": variant.val_top1, "download": f"/api/models/{entry.id}/variants/{variant.name}"}


@model_route("GET", "/ready")
def model_ready(entry: Entry) -> dict[str, Any]:
    return {"name": entry.id, "ready": True}


@model_route("GET", "/config")
async def config(entry: Entry, server: Server) -> dict[str, Any]:
    """The entry's Triton model config (config.pbtxt's ModelConfig) as JSON."""
    return triton_json(await run_in_threadpool(triton_config, server, entry))


@model_route("GET", "/stats")
def statistics(entry: Entry, server: Server) -> dict[str, Any]:
    """The entry's statistics, as Triton reports a model's."""
    return triton_json(model_statistics(server, [entry]))


@model_route("POST", "/infer")
async def infer(entry: Entry, request: Request, server: Server) -> Response:
    """Logits for a batch of preprocessed images (JSON tensors or the binary tensor data extension)."""
    body = await request.body()
    with server.engine.stats.request(entry.id):
        body = decoded(body, request.headers.get("content-encoding"), infer_body_limit(server))
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        parsed = parse_request(header)
        x = input_array(check_input(server, entry, parsed.inputs), binary)
        wants_binary = requested_binary(parsed.outputs, parsed.parameters.binary_data_output)
        return infer_response(entry, parsed, await server.engine.batched_logits(entry, x), wants_binary)
