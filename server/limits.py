"""Request body limits, counted on the bytes as they arrive, per route: `python -m server` and the Ray Serve ingress
(server/ray_serve.py) apply the same ones."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.state import PreZooServer
from server.v2 import INFER_PATHS, infer_body_limit

log = logging.getLogger("server")

JSON_BODY_LIMIT = 64 * 1024  # every route but the uploads: the API's JSON bodies are well under 1 KiB
MULTIPART_OVERHEAD = 1024 * 1024  # part headers and form fields around an upload's files


class BodyLimit:
    """Per-route request body limits, counted on the bytes as they arrive (chunked bodies and lying Content-Length
    included): a body over its route's limit gets a 413 the moment it passes it, and the connection is closed, so
    nothing bigger is ever spooled, parsed or validated. `limits` are keyed by route path ('/v2/models/{model}/infer'
    included), matched like the router does. A compressed body's decompressed size is the route's to bound
    (server.v2.decoded)."""

    def __init__(self, app: ASGIApp, limits: dict[str, int], default: int) -> None:
        self.app, self.default = app, default
        self.limits = [(compile_path(path)[0], limit) for path, limit in limits.items()]

    def limit(self, path: str) -> int:
        return next((limit for pattern, limit in self.limits if pattern.match(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = LimitedBody(scope, receive, send, self.limit(scope["path"]))
        if body.declared_too_large():
            await body.answer_too_large()
            return
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.cut:
                raise
            log.debug("request cut at its body limit", exc_info=True)  # the app failing to read the rest: expected


class LimitedBody:
    """One request's body against its limit. Once over, it answers 413 itself (if the app has not answered yet),
    tells the app the client is gone, and drops whatever the app still sends."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.scope, self._receive, self._send, self.limit = scope, receive, send, limit
        self.received, self.cut, self.started = 0, False, False

    def declared_too_large(self) -> bool:
        length = dict(self.scope["headers"]).get(b"content-length", b"")
        return length.isdigit() and int(length) > self.limit

    async def answer_too_large(self) -> None:
        message = f"the request body is over this route's limit of {self.limit:,} bytes"
        response = JSONResponse({"error": message}, status_code=413, headers={"Connection": "close"})
        await response(self.scope, self._receive, self._send)

    async def receive(self) -> Message:
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        self.received += len(message.get("body", b""))
        if self.received <= self.limit:
            return message
        self.cut = True
        if not self.started:
            await self.answer_too_large()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if not self.cut:
            self.started = self.started or message["type"] == "http.response.start"
            await self._send(message)


def api_body_limits(server: PreZooServer) -> dict[str, int]:
    """The API's routes with bodies above the JSON limit: image uploads and v2 tensors."""
    limits = server.config.limits
    return {"/api/predict": limits.max_files * limits.max_bytes + MULTIPART_OVERHEAD,
            **dict.fromkeys(INFER_PATHS, infer_body_limit(server))}
