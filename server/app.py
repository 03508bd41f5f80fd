"""`create_app`: the ASGI app — REST API under /api (OpenAPI at /docs), Gradio UI at /."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
import gradio as gr
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from export.cache import DEFAULT_MAX_BYTES
from server.api import add_api_routes, install_error_handlers
from server.images import ImageLimits
from server.inference import InferenceConfig
from server.samples import write_samples
from server.state import PreZooServer, ServerConfig
from server.ui import PreZooUI
from zoo.store import Zoo

log = logging.getLogger("server")


class RequestSizeLimit:
    """Refuse an /api request whose declared body is bigger than any valid one, before reading it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                message = f"request body of {int(length):,} bytes is over the limit of {self.max_bytes:,} bytes"
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def create_app(zoo_source: str | Path | Zoo, *, cache_dir: str | Path, admin_token: str | None = None,
               hub_token: str | None = None, max_batch: int = 16, max_wait_ms: float = 5.0,
               micro_batching: bool = True, sessions: int = 4, ort_threads: int | None = None,
               ort_spinning: bool = True, limits: ImageLimits | None = None,
               providers: tuple[list[str], str] | None = None, cache_max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    """Load the zoo (ZooError / HubError if it cannot be used) and wire the API and the UI to one server state.

    `providers` (list, reason) skips the CUDA probe; by default it runs once here. `cache_max_bytes` bounds the
    export cache (least recently used exports are evicted).
    """
    limits = limits or ImageLimits()
    zoo = zoo_source if isinstance(zoo_source, Zoo) else Zoo.load(zoo_source)
    inference = InferenceConfig(micro_batching, max_batch, max_wait_ms, sessions, ort_threads, ort_spinning)
    server = PreZooServer(zoo, cache_dir, ServerConfig(admin_token, hub_token, inference, limits, cache_max_bytes),
                          providers)
    samples = write_samples(zoo, server.cache_dir / "samples")
    log.info("zoo %s: %d entries; inference on %s (%s)", zoo.name, len(zoo.entries),
             ", ".join(server.engine.providers), server.engine.provider_reason)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    app = FastAPI(title="PreZoo", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Budget-to-model specialization and inference for the zoo **{zoo.name}**.")
    app.state.prezoo = server
    install_error_handlers(app)
    add_api_routes(app, server)
    add_offline_docs(app)
    app.add_middleware(RequestSizeLimit, max_bytes=limits.max_files * limits.max_bytes + 1024 * 1024)
    ui = PreZooUI(server, samples).build()
    ui.queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, ui, path="/", allowed_paths=[str(server.cache_dir)],
                               max_file_size=limits.max_bytes, footer_links=["api"])
