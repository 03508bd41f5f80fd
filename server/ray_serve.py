"""The zoo as a Ray Serve application, for more than one machine: the /api routes and the Open Inference Protocol v2
routes in an ingress deployment, inference in a model deployment that multiplexes the entries of the served zoos.

    serve run --app-dir . server.ray_serve:app_builder zoo=DIR|org/name[,DIR|org/name...] max_models_per_replica=4

`zoo` names the zoos to serve as one catalog, comma-separated, as `python -m server --zoo A --zoo B` serves them
(zoo.catalog: one front, an entry id looked up in whichever zoo holds it); without it, every shipped zoo. The model id
is the entry id: Serve routes a request to a replica that already holds its entry when it can; a replica
keeps at most `max_models_per_replica` ONNX Runtime sessions (the least recently used is unloaded first) and
micro-batches concurrent requests for one entry (Serve's batches are split by model id). The model deployment
autoscales between `min_replicas` and `max_replicas` on ongoing requests per replica. The ingress runs the same route
code as `python -m server` (same JSON, errors as data, downloads from its own export cache, the same per-route body
limits); it has no UI, and not the server's client timeouts (Serve's proxy handles the connections): put it behind a
proxy that has them. Needs the `ray` extra (README "Ray Serve").

The Open Inference Protocol v2 over gRPC goes through Serve's gRPC proxy, which is the cluster's (one per Serve
instance, not the application's): start Serve with it before `serve run`,

    serve start --grpc-port 8001 --grpc-servicer-functions server.grpc_v2.add_to_ray_proxy

and the ingress answers its calls (server.grpc_v2.InferenceService; with more than one application on the cluster,
clients name this one in the `application` metadata). Inference statistics count the requests at the ingress; the
model executions happen on ZooModels and are not counted there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle

from export.cache import ExportCache
from export.onnx import run
from export.runtime import choose_providers, serving_session
from server.api import add_api_routes, install_error_handlers
from server.grpc_v2 import InferenceService, answer, empty_response, request_message
from server.inference import Engine, InferenceConfig
from server.limits import JSON_BODY_LIMIT, BodyLimit, api_body_limits
from server.startup import CACHE, served_zoos, writable_cache
from server.state import PreZooServer, ServerConfig
from server.v2 import add_v2_routes
from zoo.store import ZooEntry

DEFAULTS = InferenceConfig()  # the single-process server's batching settings
REMOTE = ([], "inference runs on the replicas of the Ray Serve deployment ZooModels")  # the ingress's providers
INGRESS_ONGOING_REQUESTS = 256  # the ingress only parses and forwards: its replica takes many requests at once


class RayOptions(BaseModel):
    """The application's settings: `serve run ... key=value` arguments (strings there, validated here)."""

    model_config = ConfigDict(extra="forbid")
    zoo: list[str] = Field([], description="zoo directories or Hub repo ids, reachable from every node, comma-"
                           "separated; none: every shipped zoo")
    cache: str = Field(str(CACHE), description="exports, per node (shared by the replicas of one node)")
    max_models_per_replica: int = Field(4, ge=1, description="ONNX Runtime sessions a model replica keeps (LRU)")
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0, description="per model replica, the autoscaler's target")
    max_ongoing_requests: int = Field(2 * DEFAULTS.max_batch, ge=1, description="per model replica")
    cpus_per_replica: float = Field(1.0, ge=0, description="Ray CPUs each model replica reserves")
    ort_threads: int | None = Field(None, ge=1, description="ONNX Runtime intra-op threads per session")

    @field_validator("zoo", mode="before")
    @classmethod
    def comma_separated(cls, value: Any) -> Any:
        """`serve run` passes `zoo=A,B` as one string: its zoos, none of them empty."""
        if not isinstance(value, str):
            return value
        sources = [source.strip() for source in value.split(",")]
        if not all(sources):
            raise ValueError(f"an empty zoo name in {value!r}: name zoos as zoo=DIR|org/name[,DIR|org/name...]")
        return sources


@serve.deployment
class ZooModels:
    """Logits of any entry of the zoo; the request's multiplexed model id names the entry."""

    def __init__(self, zoo_sources: list[str], cache: str, max_models: int, ort_threads: int | None) -> None:
        self.zoos = served_zoos(zoo_sources)
        self.exports = ExportCache(writable_cache(cache) / "exports")
        self.threads = ort_threads
        self.providers, _ = choose_providers()
        self.loads = 0

        async def load(entry_id: str) -> Any:
            entry = self.zoos.entry(entry_id)
            session = await asyncio.to_thread(serving_session, self.exports, self.zoos.zoo_of(entry), entry,
                                              self.providers, self.threads)
            self.loads += 1
            return session

        # wired here, not as a decorated method: the bound comes from the options
        self.session = serve.multiplexed(max_num_models_per_replica=max_models)(load)

    @serve.batch(max_batch_size=DEFAULTS.max_batch, batch_wait_timeout_s=DEFAULTS.max_wait_ms / 1e3)
    async def logits(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """One ONNX Runtime call for the concurrent requests of one entry, split back per request."""
        session = await self.session(serve.get_multiplexed_model_id())
        out = await asyncio.to_thread(run, session, np.concatenate(batch))
        return np.split(out, np.cumsum([len(x) for x in batch[:-1]]))

    def load_count(self) -> int:
        """Sessions this replica has built: an entry unloaded by the LRU and asked for again counts again."""
        return self.loads


class RemoteEngine(Engine):
    """The ingress's engine: logits come from ZooModels, routed by entry id (no sessions in this process)."""

    def __init__(self, server: PreZooServer, models: DeploymentHandle) -> None:
        super().__init__(server.zoos, server.exports, server.config.inference, REMOTE)
        self.models = models

    async def batched_logits(self, entry: ZooEntry, x: np.ndarray) -> np.ndarray:
        return await self.models.options(multiplexed_model_id=entry.id).logits.remote(x)


def grpc_method(name: str) -> Callable:
    """The ingress's method for the v2 gRPC call `name`: Serve's gRPC proxy calls the method named like the RPC with
    the request's bytes (server.grpc_v2.add_to_ray_proxy), and a `grpc_context` it sends back with the answer (an
    error's code and details on it)."""
    async def method(self: PreZooIngress, request: bytes, grpc_context: RayServegRPCContext) -> Message:
        async def fail(code: grpc.StatusCode, details: str) -> Message:
            grpc_context.set_code(code)
            grpc_context.set_details(details)
            return empty_response(name)

        try:
            message = request_message(name, request)
        except DecodeError:
            return await fail(grpc.StatusCode.INVALID_ARGUMENT, f"the {name} request is not a valid message")
        return await answer(self.grpc, name, message, fail)

    method.__name__ = method.__qualname__ = name
    return method


# The v2 gRPC service's calls as ingress methods, answered by server.grpc_v2's InferenceService
GrpcMethods = type("GrpcMethods", (), {name: grpc_method(name) for name in InferenceService.METHODS})


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=INGRESS_ONGOING_REQUESTS)
@serve.ingress()
class PreZooIngress(GrpcMethods):
    """/api and /v2 as `python -m server` answers them, and the v2 gRPC service where Serve's gRPC proxy is on, with
    inference on ZooModels."""

    def __init__(self, models: DeploymentHandle, zoo_sources: list[str], cache: str) -> None:
        self.server = PreZooServer(served_zoos(zoo_sources), writable_cache(cache), ServerConfig(providers=REMOTE))
        self.server.engine = RemoteEngine(self.server, models)
        self.grpc = InferenceService(self.server)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = FastAPI(title="PreZoo on Ray Serve", docs_url=None, redoc_url=None)
        app.add_middleware(BodyLimit, limits=api_body_limits(self.server), default=JSON_BODY_LIMIT)
        install_error_handlers(app)
        add_api_routes(app, self.server, samples=[])
        add_v2_routes(app, self.server)
        return app


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The application for `serve run server.ray_serve:app_builder key=value ...` (or `serve.run(app_builder({...}))`):
    RayOptions' fields as keys. The zoos are loaded here once, so a bad one (or two that cannot be served together)
    fails the start, not every replica."""
    options = RayOptions.model_validate(args)
    served_zoos(options.zoo)
    autoscaling = {"min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                   "target_ongoing_requests": options.target_ongoing_requests}
    models = ZooModels.options(autoscaling_config=autoscaling, max_ongoing_requests=options.max_ongoing_requests,
                               ray_actor_options={"num_cpus": options.cpus_per_replica})
    return PreZooIngress.bind(models.bind(options.zoo, options.cache, options.max_models_per_replica,
                                          options.ort_threads), options.zoo, options.cache)
