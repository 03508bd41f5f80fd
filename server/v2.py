"""The Open Inference Protocol v2 (KServe V2 / Triton HTTP) under /v2, so Triton and KServe clients can use the zoo.

A model is an entry id; its one input is the preprocessed batch (`pixel_values`, FP32, [-1, C, H, W] in the zoo's
input shape) and its one output the logits ([-1, classes]). Tensors come as JSON or in the binary tensor data
extension (tritonclient's default): a JSON header of `Inference-Header-Content-Length` bytes, then each input's
`binary_data_size` bytes in order. Inference goes through the same micro-batcher and image count limit as
/api/predict; errors are `{"error": message}` (ApiError) with 400, 404 or 413.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt, ValidationError

from export.onnx import INPUT, OUTPUT
from server.api import ApiError, Server, clip, describe_problems, known_entry
from server.state import PreZooServer
from zoo.store import ZooEntry

PREFIX = "/v2"
INFER_PATH = f"{PREFIX}/models/{{model}}/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPE, ITEM_BYTES = "FP32", 4  # little-endian float32, as the binary extension sends it
VERSION = "1"  # an entry has one version: its id already names its weights
JSON_BYTES_PER_ELEMENT = 32  # the longest JSON text of a float32 (as a double's repr) and its separator
HEADER_BYTES = 64 * 1024  # the infer request's JSON without its tensor data
MAX_ABS_VALUE = 1e4  # far beyond any preprocessed image, far below what overflows a layer's float32 sums
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


def infer_body_limit(server: PreZooServer) -> int:
    """The largest infer request: the most images one request may hold, as JSON numbers (binary is smaller)."""
    return server.config.limits.max_files * math.prod(input_shape(server)) * JSON_BYTES_PER_ELEMENT + HEADER_BYTES


def input_shape(server: PreZooServer) -> tuple[int, int, int]:
    """(C, H, W) of the zoo's models."""
    p = server.zoo.preprocessing
    return p["in_chans"], p["img_size"], p["img_size"]


def model_metadata(server: PreZooServer, entry: ZooEntry) -> dict[str, Any]:
    return {"name": entry.id, "versions": [VERSION], "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT, "datatype": DATATYPE, "shape": [-1, *input_shape(server)]}],
            "outputs": [{"name": OUTPUT, "datatype": DATATYPE, "shape": [-1, len(server.zoo.classes)]}]}


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


def check_input(server: PreZooServer, request: V2Request) -> V2Input:
    """The request's one input, with the datatype and shape the models take (images within the server's limit)."""
    if [i.name for i in request.inputs] != [INPUT]:
        raise ApiError(400, f"expected one input named {INPUT!r}, got {[clip(i.name) for i in request.inputs][:4]}")
    tensor, chw, max_images = request.inputs[0], list(input_shape(server)), server.config.limits.max_files
    if tensor.datatype != DATATYPE:
        raise ApiError(400, f"{INPUT} must be {DATATYPE}, got {clip(tensor.datatype)!r}")
    if len(tensor.shape) != 4 or tensor.shape[1:] != chw or tensor.shape[0] < 1:
        raise ApiError(400, f"{INPUT} must have shape [N, {', '.join(map(str, chw))}] with N >= 1, "
                            f"got {tensor.shape[:8]}")
    if tensor.shape[0] > max_images:
        raise ApiError(413, f"{tensor.shape[0]} images in one request; the limit is {max_images}")
    return tensor


def input_array(tensor: V2Input, binary: bytes) -> np.ndarray:
    """The input's values as float32 in its shape, from the binary data or from JSON; finite, as images give."""
    size = math.prod(tensor.shape)
    if "binary_data_size" in tensor.parameters:
        expected = size * ITEM_BYTES
        if tensor.parameters["binary_data_size"] != expected or len(binary) != expected:
            raise ApiError(400, f"{INPUT} of shape {tensor.shape} takes {expected:,} bytes of {DATATYPE}; "
                                f"binary_data_size says {clip(str(tensor.parameters['binary_data_size']))} and "
                                f"{len(binary):,} bytes follow the JSON header")
        x = np.frombuffer(binary, dtype="<f4")
    else:
        x = json_values(tensor.data, binary)
    if x.size != size:
        raise ApiError(400, f"{INPUT} of shape {tensor.shape} takes {size:,} values, got {x.size:,}")
    if not np.isfinite(x).all():
        raise ApiError(400, f"{INPUT} holds NaN or infinite values")
    if np.abs(x).max() > MAX_ABS_VALUE:
        raise ApiError(400, f"{INPUT} holds values beyond ±{MAX_ABS_VALUE:g}: preprocessed images lie within a few "
                            f"units of 0 ((x - mean) / std), and values near float32's limit overflow the model")
    return x.astype(np.float32, copy=False).reshape(tensor.shape)


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


def binary_outputs(request: V2Request) -> bool:
    """Whether the logits go back as binary data: per requested output, else the request's binary_data_output."""
    if request.outputs is None:
        return request.parameters.binary_data_output
    if [o.name for o in request.outputs] != [OUTPUT]:
        raise ApiError(400, f"the only output is {OUTPUT!r}, got {[clip(o.name) for o in request.outputs][:4]}")
    unsupported = set(request.outputs[0].parameters) - {"binary_data"}
    if unsupported:
        raise ApiError(400, f"output parameters {sorted(map(clip, unsupported))[:4]} are not supported here")
    binary = request.outputs[0].parameters.get("binary_data", False)
    if not isinstance(binary, bool):
        raise ApiError(400, "output parameter binary_data must be true or false")
    return binary


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


def add_v2_routes(app: FastAPI, server: PreZooServer) -> None:
    """Serve /v2 from `server`: the routes find it on the app's state."""
    app.state.prezoo = server
    app.include_router(router)


def v2_entry(model: str, server: Server) -> ZooEntry:
    """The entry a model name names: a long id is no entry either, and the 404 echoes only a prefix."""
    return known_entry(server, clip(model))


Entry = Annotated[ZooEntry, Depends(v2_entry)]


@router.get("")
def server_metadata(request: Request) -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return {"name": "prezoo", "version": request.app.version, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def ready() -> dict[str, bool]:
    """Ready once the app answers: the zoo is loaded and every entry's session is built on its first request."""
    return {"ready": True}


@router.get("/models/{model}")
def metadata(entry: Entry, server: Server) -> dict[str, Any]:
    """The entry's input (preprocessed images) and output (logits)."""
    return model_metadata(server, entry)


@router.get("/models/{model}/ready")
def model_ready(entry: Entry) -> dict[str, Any]:
    return {"name": entry.id, "ready": True}


@router.post(INFER_PATH.removeprefix(PREFIX))
async def infer(entry: Entry, request: Request, server: Server) -> Response:
    """Logits for a batch of preprocessed images (JSON tensors or the binary tensor data extension)."""
    header, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    body = parse_request(header)
    x = input_array(check_input(server, body), binary)
    wants_binary = binary_outputs(body)
    return infer_response(entry, body, await server.engine.batched_logits(entry, x), wants_binary)
