"""The REST API under /api, over every served zoo: ids are looked up across them, a budget chooses among all their
entries (`zoo.catalog.Catalog`). Every error is JSON `{"error": message, ...}` with a 4xx status that says whose fault
it is (507 when the server's disk cannot take an export); ids and kinds are looked up in tables, never joined into
file paths."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from export.cache import CacheError
from export.download import DOWNLOADS
from server.images import ImageError, check_content_type
from server.inference import NonFiniteLogits
from server.profile import MeasuredLatency, ProfilingInProgress, zoo_latency
from server.state import PreZooServer
from zoo import io as zoo_io
from zoo.catalog import Catalog
from zoo.pull import HubError, check_repo_id
from zoo.schema import FP32, VARIANT_NAME
from zoo.stats import wilson_interval
from zoo.store import BudgetError, SizesUnknownError, Variant, VariantBudgetError, Zoo, ZooEntry

ENTRY_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"  # no slashes, no leading dot: never a path
ENTRY_ID_CHARS = 96  # the longest id ENTRY_ID allows: a longer `model` is refused before a 404 could echo it
ECHO_CHARS = 64  # how much of a client's value an error message repeats
MAX_PROBLEMS = 10  # validation problems listed in one answer
Kind = Literal[tuple(DOWNLOADS)]  # the kinds export.download.DOWNLOADS knows
EntryId = Annotated[str, Path(pattern=ENTRY_ID, description="an entry id from GET /api/zoo, e.g. e96-d6-529fda2c")]
VariantName = Annotated[str, Path(pattern=VARIANT_NAME, description="a variant of the entry (GET /api/zoo's "
                                                                    "`variants`): fp32, w16, w8, w4, edmips-BYTES")]
Model = TypeVar("Model", bound=BaseModel)


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """A client's value as an error message repeats it (`zoo.io.clip` at the API's echo length)."""
    return zoo_io.clip(text, limit)


def short_budget(value: int | float | str | None) -> int | float | str | None:
    """Budgets are short ('0.3M', 300000): float() of a longer integer overflows, a long string is only echoed."""
    if isinstance(value, str) and len(value) > 32 or isinstance(value, int) and abs(value) > 10**18:
        raise ValueError("a budget is a short number such as 300000, '0.3M' or '1.4G'")
    return value


def hub_repo_id(repo_id: str) -> str:
    """A repo id the Hub accepts ('org/name'); otherwise a validation error (the client's fault, 422)."""
    try:
        check_repo_id(repo_id)
    except HubError as e:
        raise ValueError(str(e)) from None
    return repo_id


BudgetValue = Annotated[StrictInt | StrictFloat | StrictStr | None, AfterValidator(short_budget)]


class ApiError(Exception):
    """Answered as JSON {"error": message, **extra} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


class Budget(BaseModel):
    # the body /docs fills in (Swagger takes a model's first example whole); every one must be a valid request
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"max_params": "0.3M"}]})
    max_params: BudgetValue = Field(None, description="parameters, e.g. 300000 or '0.3M'", examples=["0.3M"])
    max_flops: BudgetValue = Field(None, description="FLOPs (multiply-accumulates), e.g. '20M' or '1.4G'",
                                   examples=["20M"])
    max_latency_ms: BudgetValue = Field(None, description="median latency in ms, e.g. 2 or '2ms': this server's "
                                                          "own measurement where it has one, the zoo's otherwise",
                                        examples=["2ms"])
    max_bytes: BudgetValue = Field(None, description="bytes of the ONNX file served, e.g. 120000 or '120K' (K: 1,000 "
                                                     "bytes): picks an entry's fp32 file or one of its variants (its "
                                                     "weights at fewer bytes), the answer's `variant`",
                                   examples=["120K"])


class PushRequest(Budget):
    model_config = ConfigDict(json_schema_extra={"examples": [{"repo_id": "me/my-vit", "max_params": "0.3M"},
                                                              {"repo_id": "me/my-zoo", "whole_zoo": True}]})
    repo_id: Annotated[str, Field(max_length=200), AfterValidator(hub_repo_id)] = Field(
        description="the Hub model repo to create or update, 'org/name'", examples=["me/my-vit"])
    model: str | None = Field(None, max_length=ENTRY_ID_CHARS,
                              description="an entry id; default: the entry the budget picks")
    whole_zoo: bool = Field(False, description="push a whole zoo folder (supernet + index) instead of one entry")
    zoo: str | None = Field(None, max_length=ECHO_CHARS, description="with whole_zoo: the served zoo to push, by name "
                                                                     "(GET /api/zoo's `zoos`); default: the only one")
    private: bool = False


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message, **e.extra}, status_code=e.status, headers=e.headers)

    @app.exception_handler(CacheError)
    async def cache_error(_: Request, e: CacheError) -> JSONResponse:
        """The server's disk (read-only, full, quota): 507 Insufficient Storage, the request itself was fine."""
        return JSONResponse({"error": str(e)}, status_code=507)

    @app.exception_handler(NonFiniteLogits)
    async def non_finite_logits(_: Request, e: NonFiniteLogits) -> JSONResponse:
        """Finite inputs whose logits are not (a /v2 tensor at the float32 limits): the input's fault, said in words."""
        return JSONResponse({"error": str(e)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError) -> JSONResponse:
        problems, message = describe_problems(e.errors())
        return JSONResponse({"error": f"invalid request: {message}", "problems": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """The router's own 404 and 405 (any path the UI does not own, any method) in words, else the detail."""
        path = clip(request.url.path)
        message = {404: f"no route {path}; the API is under /api/, see /docs",
                   405: f"{path} does not take this method; use {(e.headers or {}).get('Allow')}"}
        return JSONResponse({"error": message.get(e.status_code, str(e.detail))}, status_code=e.status_code,
                            headers=e.headers)


def describe_problems(errors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Validation errors as we answer them: the first MAX_PROBLEMS, and one line naming each ('where: what')."""
    problems = [problem(err) for err in errors[:MAX_PROBLEMS]]
    message = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems)
    if len(errors) > MAX_PROBLEMS:
        message += f"; and {len(errors) - MAX_PROBLEMS} more"
    return problems, message


def problem(err: dict[str, Any]) -> dict[str, Any]:
    """One validation error as we answer it: where, what, and (for a plain value) a prefix of what was sent."""
    found = {"loc": [clip(str(p)) for p in err["loc"]], "msg": clip(err["msg"], 4 * ECHO_CHARS)}
    if isinstance(err.get("input"), str | int | float | bool):
        found["input"] = clip(str(err["input"]))
    return found


def json_body(model: type[Model], body: bytes) -> Model:
    """The body as `model`, or the 422 FastAPI answers for a body parameter: for a route that reads its body only
    after checking who is asking."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def entry_json(zoo: Zoo, entry: ZooEntry, pareto: set[str], measured: MeasuredLatency | None = None
               ) -> dict[str, Any]:
    """An entry of `zoo` (named, with its family, which says how to read `arch`) with its test top-1's 95% interval
    ([lo, hi] in percent; null where the zoo records no test-set size), its validation top-1/top-5 (null where the
    zoo records none) and its latency with who measured it (`measured`: the server's lookup; default the zoo's own)."""
    interval = zoo.top1_interval(entry)
    measured = measured or zoo_latency(zoo, entry)
    return {"val_top1": None, "val_top5": None, **entry.to_dict(), "zoo": zoo.name, "family": zoo.family.name,
            "top1_interval": interval and [round(x, 3) for x in interval],
            "latency": measured and measured.numbers, "latency_ms": measured and measured.median_ms,
            "latency_source": measured and measured.origin(), "pareto": entry.id in pareto,
            "describe": entry.arch.describe(), "file_bytes": entry.file_bytes,
            "variants": {v.name: {"file_bytes": v.file_bytes, "top1": v.top1, "val_top1": v.val_top1,
                                  "latency_ms": v.latency_ms} for v in entry.variants.values()}}


def served_entry_json(server: PreZooServer, entry: ZooEntry, pareto: set[str]) -> dict[str, Any]:
    """entry_json (of the entry's own zoo) with the latency budgets read: this server's where measured, the zoo's
    otherwise."""
    return entry_json(server.zoos.zoo_of(entry), entry, pareto, server.profiler.latency(entry))


def zoo_json(zoo: Zoo, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What GET /api/zoo says of any zoo it shows: identity, family, space, `entries`, the Pareto fronts, and which
    accuracy chose them (`chosen_by`: "validation", or test where the zoo records none; `choice`: that in words;
    `validation`: the held-out split, or null)."""
    return {"name": zoo.name, "checksum": zoo.checksum, "family": zoo.family.name, "space": zoo.space.name,
            "entries": entries, "pareto": {by: [e.id for e in zoo.pareto(by)] for by in ("params", "flops")},
            "chosen_by": zoo.chosen_by, "choice": zoo.choice_text(), "validation": zoo.validation}


def common(zoos: Catalog, value: Callable[[Zoo], Any]) -> Any:
    """What every served zoo has alike (their family, space, preprocessing), else None: `zoos` says each one's."""
    values = [value(z) for z in zoos.zoos]
    return values[0] if all(v == values[0] for v in values) else None


def served_zoos_json(server: PreZooServer) -> dict[str, Any]:
    """What GET /api/zoo says of the served zoos: zoo_json's fields over all of them (one zoo: exactly its own;
    several: the names joined, a checksum of theirs, family, space, validation and preprocessing where all share one,
    else null, one Pareto front, one choice), and `zoos`, each served zoo as zoo_json says it alone, its entries by
    id, with its preprocessing."""
    zoos, pareto = server.zoos, set(server.pareto_ids())
    return {"name": zoos.name, "checksum": zoos.checksum, "family": common(zoos, lambda z: z.family.name),
            "space": common(zoos, lambda z: z.space.name),
            "entries": [served_entry_json(server, e, pareto) for e in zoos.entries],
            "pareto": {by: [e.id for e in zoos.pareto(by)] for by in ("params", "flops")},
            "chosen_by": zoos.chosen_by, "choice": zoos.choice_text(),
            "validation": common(zoos, lambda z: z.validation), "default_model": server.default_entry.id,
            "classes": zoos.classes, "preprocessing": common(zoos, lambda z: z.preprocessing),
            "zoos": [{**zoo_json(z, [e.id for e in z.entries]), "preprocessing": z.preprocessing}
                     for z in zoos.zoos]}


def compared_zoo_json(zoo: Zoo) -> dict[str, Any]:
    """A zoo shown for comparison: its entries with the numbers its own index records (latency: the zoo's, measured
    by `latency_protocol`, not on this server)."""
    pareto = {e.id for e in zoo.pareto("params")}
    return {**zoo_json(zoo, [entry_json(zoo, e, pareto) for e in zoo.entries]),
            "latency_protocol": zoo.latency_protocol_text()}


def download_links(request: Request, entry: ZooEntry) -> dict[str, str]:
    return {kind: request.url_for("download", entry_id=entry.id, kind=kind).path for kind in DOWNLOADS}


def choose(server: PreZooServer, budget: Budget) -> ZooEntry:
    """The budget's entry, or an ApiError 422 (impossible budget: with the nearest entries; or a bad number), or 409
    while a latency budget waits for the latency profiling under way (with its progress)."""
    try:
        return server.profiler.query(budget.max_params, budget.max_flops, budget.max_latency_ms)
    except ProfilingInProgress as e:
        raise ApiError(409, str(e), profiling=e.progress) from None
    except BudgetError as e:
        pareto = set(server.pareto_ids())
        raise ApiError(422, str(e), nearest=[served_entry_json(server, n, pareto) for n in e.nearest]) from None
    except ValueError as e:
        raise ApiError(422, str(e)) from None


def choose_file(server: PreZooServer, budget: Budget) -> tuple[ZooEntry, Variant | None]:
    """The budget's (entry, variant): with `max_bytes` the most accurate file that fits (`Catalog.query_variant`),
    else `choose`'s entry and no variant. An ApiError 422 for an impossible budget (with the nearest files) or for
    zoos that record no file bytes (naming the commands that do), 409 while latencies are being measured."""
    if budget.max_bytes is None:
        return choose(server, budget), None
    try:
        return server.profiler.query_variant(budget.max_bytes, budget.max_params, budget.max_flops,
                                             budget.max_latency_ms)
    except ProfilingInProgress as e:
        raise ApiError(409, str(e), profiling=e.progress) from None
    except SizesUnknownError as e:
        raise ApiError(422, str(e), unsized=e.missing[:MAX_PROBLEMS], nearest=[]) from None
    except VariantBudgetError as e:
        pareto = set(server.pareto_ids())
        raise ApiError(422, str(e), nearest=[{**served_entry_json(server, n, pareto),
                                              "variant": variant_json(server, n, v)}
                                             for n, v in e.nearest_variants]) from None
    except BudgetError as e:  # a latency limit no file has a latency for
        raise ApiError(422, str(e), nearest=[]) from None
    except ValueError as e:
        raise ApiError(422, str(e)) from None


def variant_json(server: PreZooServer, entry: ZooEntry, variant: Variant) -> dict[str, Any]:
    """One file of an entry, as a bytes budget answers it: its name and storage, its measured bytes, its validation
    top-1 (what chose it) and test top-1 (what is reported), each with its 95% Wilson interval, its latency where
    measured (the fp32 file's: the entry's, as this server reads it) and where to download it."""
    zoo = server.zoos.zoo_of(entry)
    measured = server.profiler.latency(entry) if variant.name == FP32 else None
    latency = measured.median_ms if measured else variant.latency_ms
    images = {"top1": zoo.eval_images, "val_top1": zoo.validation and zoo.validation["images"]}
    return {"name": variant.name, "file_bytes": variant.file_bytes, "origin": variant.origin,
            "storage": storage(variant), "top1": variant.top1, "top5": variant.top5, "val_top1": variant.val_top1,
            "val_top5": variant.val_top5, **{f"{k}_interval": _interval(getattr(variant, k), n)
                                              for k, n in images.items()},
            "latency_ms": latency, "download": f"/api/models/{entry.id}/variants/{variant.name}"}


def storage(variant: Variant) -> dict[str, int]:
    """How many layers store their weights at each width (fp32: none quantized)."""
    widths = list((variant.bits or {}).values())
    return {f"w{b}": widths.count(b) for b in sorted(set(widths), reverse=True)}


def _interval(top1: float | None, images: int | None) -> list[float] | None:
    return None if top1 is None or not images else [round(x, 3) for x in wilson_interval(top1, images)]


def specialized_json(server: PreZooServer, entry: ZooEntry) -> dict[str, Any]:
    """What a specialization answers of its chosen entry (POST /api/specialize and the UI's /specialize): the entry,
    the cheaper entries (by parameters, of any served zoo) whose choosing top-1 (`Catalog.choice_top1`) lies within
    its 95% interval, and the one-line `note` on them."""
    pareto = set(server.pareto_ids())
    return {"entry": served_entry_json(server, entry, pareto),
            "equivalent_cheaper": [served_entry_json(server, e, pareto)
                                   for e in server.zoos.equivalent_cheaper(entry, "params")],
            "note": server.equivalence_note(entry)}


def known_entry(server: PreZooServer, entry_id: str | None) -> ZooEntry:
    try:
        return server.entry(entry_id)
    except KeyError as e:
        raise ApiError(404, e.args[0]) from None


router = APIRouter(prefix="/api")


def served(request: Request) -> PreZooServer:
    """The server state the app serves (`add_api_routes` and `v2.add_v2_routes` put it on the app's state)."""
    return request.app.state.prezoo


def sample_files(request: Request) -> dict[str, pathlib.Path]:
    """The sample images by name: a client's name is looked up here, never made a path."""
    return request.app.state.samples


Server = Annotated[PreZooServer, Depends(served)]
Samples = Annotated[dict[str, pathlib.Path], Depends(sample_files)]


def add_api_routes(app: FastAPI, server: PreZooServer, samples: list[pathlib.Path]) -> None:
    """Serve /api from `server` and `samples`: the routes find them on the app's state."""
    app.state.prezoo, app.state.samples = server, {path.name: path for path in samples}
    app.include_router(router)


@router.get("/health", tags=["service"])
def health(server: Server) -> dict[str, Any]:
    """Liveness and readiness: the zoos are loaded (`zoo`: their names joined; `zoos`: each) and inference is set
    up. "degraded" (still ready for what is cached) while the export cache cannot be written, with the reason."""
    problem, zoo = server.exports.check(), server.zoos
    return {"status": "degraded" if problem else "ok", "ready": True, "degraded_reason": problem,
            "export_cache": {"bytes": server.exports.size(), "max_bytes": server.exports.max_bytes},
            "zoo": zoo.name, "zoos": [z.name for z in zoo.zoos], "checksum": zoo.checksum,
            "entries": len(zoo.entries), "providers": server.engine.providers,
            "provider_note": server.engine.provider_reason,
            "micro_batching": server.config.inference.micro_batching,
            "batching": server.engine.batching_stats(),
            "sessions_loaded": server.engine.sessions.keys(), "push_enabled": server.push_enabled,
            "latency_profiling": server.profiler.progress(),
            "uptime_s": round(time.monotonic() - server.started, 3)}


@router.get("/zoo", tags=["zoo"])
def zoo_index(server: Server) -> dict[str, Any]:
    """Every entry of every served zoo with its numbers (test top-1 with its 95% interval, validation top-1 where
    recorded), its zoo and its model family (vit, hytra: how to read its `arch`); one Pareto front over all of them
    and which accuracy chose it (`chosen_by`, `choice`), the class names and the preprocessing (null where the zoos
    differ); `zoos`: each served zoo. `compare`: the zoos shown beside them, for comparison only (entries, fronts, and
    how their latencies were measured: on their own machines); budgets, downloads and predictions never use those."""
    return {**served_zoos_json(server), "compare": [compared_zoo_json(other) for other in server.compare]}


@router.post("/specialize", tags=["zoo"])
def specialize(budget: Budget, request: Request, server: Server) -> dict[str, Any]:
    """The most accurate entry of any served zoo (point estimate of the top-1 that chooses: validation where every
    zoo records it, else test; GET /api/zoo's `chosen_by`) within every given limit, with links to download it, and
    the cheaper entries (by parameters) whose choosing top-1 lies within its 95% interval, with a one-line `note`
    (null when there are none). With `max_bytes`: the most accurate ONNX file (an entry's fp32 file or one of its
    variants) whose bytes fit, ties to the fewer bytes, as `variant` (null without `max_bytes`), with its download."""
    entry, variant = choose_file(server, budget)
    return {**specialized_json(server, entry), "budget": budget.model_dump(),
            "variant": variant and variant_json(server, entry, variant), "downloads": download_links(request, entry)}


@router.get("/models/{entry_id}/download/{kind}", name="download", tags=["zoo"],
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "not modified"}})
def download(entry_id: EntryId, kind: Kind, server: Server,
             if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """One file of an entry's export, built on the first request. Strong ETag = sha256 of the file."""
    entry = known_entry(server, entry_id)
    path = server.download(entry, kind)
    etag = server.etag(path)
    if if_none_match and (if_none_match.strip() == "*" or etag in _etags(if_none_match)):
        return Response(status_code=304, headers={"ETag": etag})
    d = DOWNLOADS[kind]
    return FileResponse(path, media_type=d.media_type, filename=d.filename(entry),
                        headers={"ETag": etag, "Cache-Control": "public, max-age=0, must-revalidate"})


@router.get("/models/{entry_id}/variants/{variant}", name="variant_download", tags=["zoo"],
            responses={200: {"content": {"application/octet-stream": {}}}, 304: {"description": "not modified"}})
def variant_download(entry_id: EntryId, variant: VariantName, server: Server,
                     if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """One ONNX file of an entry: `fp32` (the `onnx` download) or a variant, its weights stored at fewer bytes
    (built on the first request). Strong ETag = sha256 of the file."""
    entry = known_entry(server, entry_id)
    try:
        path = server.variant_download(entry, variant)
    except KeyError as e:
        raise ApiError(404, e.args[0]) from None
    etag = server.etag(path)
    if if_none_match and (if_none_match.strip() == "*" or etag in _etags(if_none_match)):
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, media_type=DOWNLOADS["onnx"].media_type, filename=f"prezoo-{entry.id}.{variant}.onnx",
                        headers={"ETag": etag, "Cache-Control": "public, max-age=0, must-revalidate"})


@router.post("/predict", tags=["inference"])
async def predict(files: Annotated[list[UploadFile], File(description="one or more images")], server: Server,
                  model: Annotated[str | None, Form(max_length=ENTRY_ID_CHARS,
                                                    description="entry id; default: the most accurate")] = None,
                  top_k: Annotated[int, Form(ge=1, le=1000)] = 5) -> dict[str, Any]:
    """Top-k labels with probabilities for each uploaded image."""
    limits = server.config.limits
    if len(files) > limits.max_files:
        raise ApiError(413, f"{len(files)} images in one request; the limit is {limits.max_files}")
    entry = known_entry(server, model)
    inputs = []
    for i, upload in enumerate(files):
        name = upload.filename or f"file {i + 1}"
        try:
            check_content_type(upload.content_type, name)
            data = await upload.read(limits.max_bytes + 1)
            inputs.append(await run_in_threadpool(server.decode, data, name, entry))
        except ImageError as e:
            raise ApiError(e.status, str(e), file=name) from None
    results = await server.classify(entry, inputs, top_k)
    return {"model": entry.id, "predictions": [{"file": f.filename, "top": r}
                                               for f, r in zip(files, results, strict=True)]}


@router.get("/samples", tags=["inference"])
def sample_index(request: Request, samples: Samples) -> dict[str, Any]:
    """Test images of the zoo's dataset to try /api/predict on, one per class (none when the dataset is not
    installed on the server)."""
    return {"samples": [{"name": name, "url": request.url_for("sample", name=name).path} for name in samples]}


@router.get("/samples/{name}", name="sample", tags=["inference"], responses={200: {"content": {"image/png": {}}}})
def sample(name: Annotated[str, Path(description="a name from GET /api/samples, e.g. 9-ankle-boot.png")],
           samples: Samples) -> FileResponse:
    """One sample image (PNG)."""
    if name not in samples:
        raise ApiError(404, f"no sample {clip(name)!r}; GET /api/samples lists them")
    return FileResponse(samples[name], media_type="image/png")


def require_admin(server: Server, authorization: Annotated[str | None, Header()] = None) -> None:
    if not server.push_enabled:
        raise ApiError(403, "pushing to the Hub is disabled on this server (start it with --admin-token-env NAME)")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not server.is_admin(token.strip()):
        raise ApiError(401, "pushing needs 'Authorization: Bearer <admin token>'",
                       headers={"WWW-Authenticate": "Bearer"})


# The body is read in the handler, after require_admin: FastAPI parses a body parameter before any dependency
# runs, so a stranger's malformed JSON would get a 422 about it instead of the 401.
@router.post("/push", tags=["admin"], dependencies=[Depends(require_admin)], openapi_extra={"requestBody": {
    "required": True, "content": {"application/json": {"schema": PushRequest.model_json_schema()}}}})
async def push(request: Request, server: Server) -> dict[str, Any]:
    """Push one entry (HF folder: safetensors, config, card) or a whole served zoo to the Hub."""
    body = json_body(PushRequest, await request.body())
    if body.max_bytes is not None:
        raise ApiError(422, "max_bytes picks an ONNX file, which a push does not send (it pushes an entry's HF "
                            "folder): budget the push by max_params, max_flops or max_latency_ms")
    what = pushed_zoo(server, body.zoo) if body.whole_zoo else (known_entry(server, body.model) if body.model
                                                                 else choose(server, body))
    try:
        url = await run_in_threadpool(server.push, body.repo_id, what, private=body.private)
    except HubError as e:
        raise ApiError(502, str(e)) from None
    return {"repo_id": body.repo_id, "url": url, "pushed": "zoo" if isinstance(what, Zoo) else what.id}


def pushed_zoo(server: PreZooServer, name: str | None) -> Zoo:
    """The served zoo a whole-zoo push names (default: the only one), else a 422 naming the served zoos."""
    try:
        return server.served_zoo(name)
    except KeyError as e:
        raise ApiError(422, e.args[0]) from None


def _etags(header: str) -> set[str]:
    """The ETags of an If-None-Match header (weak ones compared by value, as RFC 9110 says for GET)."""
    return {t.strip().removeprefix("W/") for t in header.split(",")}
