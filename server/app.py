"""`create_app`: the ASGI app serving one zoo or several as one (`zoo.catalog.Catalog`) — REST API under /api (OpenAPI
at /docs), Open Inference Protocol v2 under /v2 (and over gRPC when `config.grpc_address` is set: server/grpc_v2.py),
Gradio UI at /."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
import gradio as gr
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from gradio import utils as gr_utils
from gradio.data_classes import _StaticFiles
from gradio.route_utils import API_PREFIX as GRADIO_API
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import add_api_routes, install_error_handlers
from server.grpc_v2 import start_grpc
from server.limits import JSON_BODY_LIMIT, MULTIPART_OVERHEAD, BodyLimit, api_body_limits
from server.samples import write_samples
from server.state import PreZooServer, ServerConfig, ZooSource, catalog
from server.ui import PreZooUI
from server.v2 import add_v2_routes
from zoo.catalog import Catalog, named

log = logging.getLogger("server")
API_PATHS = ("/api", "/v2", "/docs", "/docs-assets", "/openapi.json")  # everything else under / is the UI's


class HeadAsGet:
    """HEAD answers like GET without the body (RFC 9110), on every GET route: FastAPI routes only the methods a
    route names, so HEAD /api/health would be a 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def is_api_path(path: str) -> bool:
    """Paths the API answers, however many slashes a client doubles (//api/health is not the UI's either)."""
    path = re.sub("/{2,}", "/", path)
    return any(path == p or path.startswith(f"{p}/") for p in API_PATHS)


class UiMount(Mount):
    """The Gradio UI at /, except the API's paths: a wrong method or a typo there gets the API's JSON 405/404
    (Starlette's router, our handler) instead of the UI app's {"detail": ...}."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and is_api_path(scope["path"]):
            return Match.NONE, {}
        return super().matches(scope)


def keep_api_paths_from_the_ui(app: FastAPI) -> None:
    """Swap the Mount that gr.mount_gradio_app added at / for a UiMount of the same app."""
    app.router.routes[:] = [UiMount("/", app=r.app, name=r.name) if isinstance(r, Mount) and r.path == "" else r
                            for r in app.router.routes]


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files fastapi-offline ships: FastAPI's own /docs loads them from a CDN, which
    leaves the page blank on a machine without internet."""
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def folder_serving(cache: Path) -> str | None:
    """The folder holding `cache` that Gradio's file route serves whole to anyone (its upload folder, its examples
    cache, static paths), if any: every export there, and whatever else the folder holds, would be public."""
    served = (gr_utils.get_upload_folder(), gr_utils.get_cache_folder(), *_StaticFiles.all_paths)
    return next((str(folder) for folder in served if gr_utils.is_in_or_equal(cache, folder)), None)


def create_app(served: ZooSource | Catalog | Sequence[ZooSource], cache_dir: str | Path,
               config: ServerConfig | None = None) -> FastAPI:
    """Load the zoo, or each of several zoos served together (ZooError / HubError if one cannot be used), and wire
    the API and the UI to one server state (PreZooServer, run as `config` says; default: ServerConfig()). ValueError
    for zoos that cannot be served together (`zoo.catalog.Catalog`) or a `cache_dir` inside a folder Gradio serves
    whole."""
    if exposed := folder_serving(Path(cache_dir)):
        raise ValueError(f"the cache {cache_dir} is inside {exposed}, which the UI's file route serves to anyone: "
                         f"choose a cache folder outside it")
    config = config or ServerConfig()
    zoos, limits = catalog(served), config.limits
    server = PreZooServer(zoos, cache_dir, config)
    samples = write_samples(zoos.zoos[0], server.ui_dir / "samples")  # the zoos share dataset and classes
    log.info("zoo %s: %d entries, %s; inference on %s (%s)", zoos.name, len(zoos.entries), zoos.choice_text(),
             ", ".join(server.engine.providers), server.engine.provider_reason)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """The gRPC server (when asked for) on the HTTP server's event loop: it starts and stops with it."""
        grpc = None
        if config.grpc_address is not None:
            grpc, app.state.grpc_port = await start_grpc(server, config.grpc_address)
            log.info("Open Inference Protocol v2 over gRPC on port %d", app.state.grpc_port)
        server.profiler.start()
        try:
            yield
        finally:
            if grpc is not None:
                await grpc.stop(config.grpc_grace_s)
            server.close()

    app = FastAPI(title="PreZoo", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Budget-to-model specialization and inference for {named(zoos.zoos)}.")
    install_error_handlers(app)
    add_api_routes(app, server, samples)
    add_v2_routes(app, server)
    add_offline_docs(app)
    ui_upload = {f"{GRADIO_API}/upload": limits.max_bytes + MULTIPART_OVERHEAD}  # the UI uploads one file at a time
    app.add_middleware(BodyLimit, limits=api_body_limits(server) | ui_upload, default=JSON_BODY_LIMIT)
    app.add_middleware(HeadAsGet)
    ui = PreZooUI(server, samples).build()
    ui.queue(default_concurrency_limit=8)
    # the file route serves the UI's own subfolder of the cache, never the cache (exports, locks, an operator's files)
    gr.mount_gradio_app(app, ui, path="/", allowed_paths=[str(server.ui_dir)], max_file_size=limits.max_bytes,
                        footer_links=["api"])
    keep_api_paths_from_the_ui(app)
    return app
