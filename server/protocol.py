"""`DeadlineH11Protocol`: uvicorn's HTTP/1.1 protocol with deadlines for receiving each request.

uvicorn 0.54 times out only idle keep-alive connections: a client that sends part of a request head, or a body
slower than it announced, one byte now and then, holds its connection (and a file descriptor) forever. Here a
request's head must arrive within `header_timeout` seconds of the connection (or of the previous response), and its
body within `body_timeout` seconds of the head; a late head closes the connection, a late body gets a 408 first when
the app has not answered yet.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

WAITING_FOR = {h11.IDLE: "head", h11.SEND_BODY: "body"}  # the client's h11 state -> which deadline runs


class DeadlineH11Protocol(H11Protocol):
    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = {"head": header_timeout, "body": body_timeout}
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.update_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.set_deadline(None)

    def update_deadline(self) -> None:
        """Start the deadline of what the client owes now (a head, a body, or nothing) when that changes."""
        ours = not self.transport.is_closing() and self.transport.get_protocol() is self  # not upgraded away
        self.set_deadline(WAITING_FOR.get(self.conn.their_state) if ours else None)

    def set_deadline(self, waiting_for: str | None) -> None:
        if waiting_for == self.waiting_for:
            return
        if self.deadline is not None:
            self.deadline.cancel()
        self.waiting_for = waiting_for
        self.deadline = (None if waiting_for is None else
                         self.loop.call_later(self.timeouts[waiting_for], self.deadline_passed))

    def deadline_passed(self) -> None:
        what, seconds = self.waiting_for, self.timeouts[self.waiting_for]
        self.logger.info("closing a connection from %s: the request %s did not arrive within %g s",
                         self.client, what, seconds)
        if what == "body" and self.cycle is not None and not self.cycle.response_started:
            self.answer_408(f"the request body did not arrive within {seconds:g} s")
        self.deadline, self.waiting_for = None, None
        self.transport.close()

    def answer_408(self, message: str) -> None:
        """Answer for the app, and tell it the client is gone: its own answer, if any, is dropped."""
        self.send_json_error(408, message)
        self.cycle.disconnected = True
        self.cycle.message_event.set()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (bad Content-Length, request line, headers): the API's JSON error shape, not
        uvicorn's plain text."""
        self.send_json_error(400, f"invalid HTTP request: {msg}")
        self.transport.close()

    def send_json_error(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        start = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)
        for event in (start, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
