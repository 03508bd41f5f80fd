"""Pulling zoo folders from the Hugging Face Hub, with errors a user can act on and in bounded time.

huggingface_hub's own exceptions are long, generic and differ between "missing", "private", "offline" and
"unreachable"; `HubError` says which one it is, names the repo and the endpoint, and never carries a token.
The push side lives in `export.hub` and reuses `hub_operation`, so serving never imports training or export.

A pull takes at most `HubLimits.max_bytes` (2 GiB unless $PREZOO_HUB_MAX_BYTES says otherwise): the files it would
take are summed from the Hub's own listing before any download, and every byte read off the operation's connections
(files, listings and headers together) counts against the same cap, so a Hub whose listing understates a file is cut
off there too (Xet transfers aside, as below).

huggingface_hub sends most API calls with no timeout at all, so an endpoint that accepts TCP and never answers (or
answers a byte every few seconds) used to hang a pull, a push or the server's start for ever. Every Hub call now runs
within `HubLimits`: a timeout on each socket operation, and a deadline on the whole pull or push, enforced on every
socket read and write of the operation's requests, in whichever thread huggingface_hub makes them. (Transfers that
huggingface_hub hands to hf_xet, its own Rust client for Xet storage, bypass httpx2 and so these limits; and uploads to
LFS storage URLs, which carry no Hub headers, get the timeout but not the deadline.)
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpcore2
import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects, set_client_factory, validate_repo_id
from huggingface_hub.utils._http import default_client_factory

from zoo.io import quote

AUTH_HINT = "check HF_TOKEN or `hf auth login`"
TIMEOUT_ENV, DEADLINE_ENV, MAX_BYTES_ENV = "PREZOO_HUB_TIMEOUT_S", "PREZOO_HUB_DEADLINE_S", "PREZOO_HUB_MAX_BYTES"
OPERATION_HEADER = "X-PreZoo-Hub-Operation"  # ties a request to its operation; httpx2 never sends it (_bind_request)
_T = TypeVar("_T")


class HubError(RuntimeError):
    """A Hub operation failed; the message says why and never contains a token."""


@dataclass(frozen=True)
class HubLimits:
    """How long Hub calls may take and how much a pull may take; from $PREZOO_HUB_TIMEOUT_S, $PREZOO_HUB_DEADLINE_S
    and $PREZOO_HUB_MAX_BYTES, or passed in.

    `timeout_s` bounds each socket operation (connect, one read, one write): it catches a Hub that stops answering,
    yet never cuts a transfer that keeps moving. 10 s, huggingface_hub's own download timeout, is far longer than any
    pause of a working link. `deadline_s` bounds a whole pull or push, which is what stops a peer that keeps a
    connection alive with a byte every few seconds. 600 s lets a slow link (1 MB/s) fetch the largest zoo we know
    (an AutoFormer-base supernet, ~0.4 GB) while a hung Hub is still caught by the timeout within seconds.
    `max_bytes` bounds what one pull reads, whatever the repo holds: 2 GiB is five times that largest zoo, yet a
    repo cannot fill a disk or hold a start for the whole deadline on a fast link.
    """

    timeout_s: float = 10.0
    deadline_s: float = 600.0
    max_bytes: int = 2 << 30

    @classmethod
    def from_env(cls) -> HubLimits:
        return cls(_from_env(TIMEOUT_ENV, cls.timeout_s, float, "a number of seconds > 0"),
                   _from_env(DEADLINE_ENV, cls.deadline_s, float, "a number of seconds > 0"),
                   _from_env(MAX_BYTES_ENV, cls.max_bytes, int, "a whole number of bytes > 0"))


def _from_env(name: str, default: _T, parse: Callable[[str], _T], what: str) -> _T:
    """The positive, finite number in $`name` (`default` when unset or blank), or a HubError saying it is not `what`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise HubError(f"{name}={raw!r} is not {what}")
    return value


class _Counter:
    """A total that threads add to."""

    def __init__(self) -> None:
        self.total, self._lock = 0, threading.Lock()

    def add(self, n: int) -> int:
        with self._lock:
            self.total += n
            return self.total


@dataclass(frozen=True)
class _Operation:
    """One pull or push: what the error messages name, and the limits its requests run under."""

    repo_id: str
    revision: str | None
    endpoint: str
    limits: HubLimits
    deadline: float  # time.monotonic()
    received: _Counter = field(default_factory=_Counter)  # bytes read off its connections, by any thread

    def check_deadline(self) -> float:
        """Seconds left, or the HubError that ends the operation."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HubError(f"the Hub at {self.endpoint} did not finish with '{self.repo_id}' within "
                           f"{self.limits.deadline_s:g} s ({DEADLINE_ENV})")
        return left

    def count(self, received: int) -> None:
        """Count bytes read for the operation, or the HubError that ends it past its cap."""
        if self.received.add(received) > self.limits.max_bytes:
            raise HubError(f"the Hub at {self.endpoint} sent more than {self.limits.max_bytes:,} bytes for "
                           f"'{self.repo_id}' ({MAX_BYTES_ENV})")


_OPERATIONS: dict[str, _Operation] = {}  # the operations under way, by the id their requests carry
_ENDED = _Operation("(ended)", None, "(ended)", HubLimits(), -math.inf)  # for threads left over from an operation
_CURRENT: ContextVar[_Operation | None] = ContextVar("prezoo_hub_operation", default=None)


def is_hub_id(s: str) -> bool:
    """True for an `org/name` repo id that is not also an existing local path (a local folder wins)."""
    if s.count("/") != 1 or os.path.exists(s):
        return False
    try:
        validate_repo_id(s)
    except HFValidationError:
        return False
    return True


def check_repo_id(repo_id: str) -> None:
    """Reject ids the Hub would refuse before any request is made; zoo repos always live under an org."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"invalid Hub repo id {repo_id!r}: {err}") from None
    if repo_id.count("/") != 1:
        raise HubError(f"invalid Hub repo id {repo_id!r}: expected 'org/name'")


def pull(repo_id: str, *, revision: str | None = None, allow_patterns: list[str] | str | None = None,
         limits: HubLimits | None = None) -> Path:
    """Download (or find in the standard Hub cache) a snapshot of a model repo and return its folder: the files that
    match `allow_patterns` (all without), refused before any download when they total more than the cap.

    Once fetched, the same call works with HF_HUB_OFFLINE=1, and also when the endpoint is down.
    """
    check_repo_id(repo_id)
    limits = limits or HubLimits.from_env()
    with hub_operation(repo_id, revision, limits) as headers:
        _check_size(repo_id, revision, allow_patterns, headers, limits.max_bytes)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, headers=headers))


def _check_size(repo_id: str, revision: str | None, allow_patterns: list[str] | str | None, headers: dict[str, str],
                max_bytes: int) -> None:
    """HubError when the files a pull would take total more than `max_bytes` by the sizes the Hub lists (a file
    listed without one counts only as it downloads). Without a listing (offline, Hub down) there is nothing to check:
    snapshot_download then downloads nothing either, and says why."""
    try:
        info = HfApi(headers=headers).model_info(repo_id, revision=revision, files_metadata=True)
    except (httpx2.TransportError, HfHubHTTPError, OfflineModeIsEnabled):
        return
    files = list(filter_repo_objects(info.siblings or [], allow_patterns=allow_patterns, key=lambda f: f.rfilename))
    total = sum(f.size or 0 for f in files)
    if total > max_bytes:
        biggest = max(files, key=lambda f: f.size or 0)
        raise HubError(f"'{repo_id}' would take {total:,} bytes ({len(files)} file(s), the largest "
                       f"{quote(biggest.rfilename)} of {biggest.size:,}): over the cap of {max_bytes:,} bytes "
                       f"({MAX_BYTES_ENV})")


@contextmanager
def hub_operation(repo_id: str, revision: str | None = None,
                  limits: HubLimits | None = None) -> Iterator[dict[str, str]]:
    """Run one pull or push within `limits` (default: from the environment) and turn huggingface_hub/httpx errors
    into one HubError with a clear message.

    Yields the headers to hand to huggingface_hub for every request: they tie each request to this operation even
    from huggingface_hub's worker threads, which do not inherit context variables.
    """
    limits = limits or HubLimits.from_env()
    operation = _Operation(repo_id, revision, constants.ENDPOINT, limits, time.monotonic() + limits.deadline_s)
    operation_id = uuid.uuid4().hex
    _OPERATIONS[operation_id] = operation
    try:
        yield {OPERATION_HEADER: operation_id}
    except HubError:
        raise
    except Exception as err:
        message = _describe(err, operation)
        if message is None:
            raise
        raise HubError(message) from err
    finally:
        del _OPERATIONS[operation_id]


def _describe(err: BaseException, operation: _Operation) -> str | None:
    """The message for a known failure, or None to let an unexpected error through unchanged."""
    repo_id, revision, endpoint = operation.repo_id, operation.revision, operation.endpoint
    if isinstance(err, HubError):  # wrapped by huggingface_hub (an LFS upload, say)
        return str(err)
    if isinstance(err, LocalEntryNotFoundError) and _offline(err):
        return f"'{repo_id}' is not in the local Hub cache and HF_HUB_OFFLINE=1 forbids downloading it"
    if isinstance(err, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE=1 forbids contacting the Hub at {endpoint} (needed for '{repo_id}')"
    if isinstance(err, httpx2.TimeoutException):
        return (f"the Hub at {endpoint} did not answer within {operation.limits.timeout_s:g} s "
                f"({type(err).__name__}; {TIMEOUT_ENV})")
    if isinstance(err, httpx2.TransportError):
        return f"cannot reach the Hugging Face Hub at {endpoint}: {type(err).__name__}: {err}"
    if isinstance(err, RevisionNotFoundError):
        return f"model repo '{repo_id}' on {endpoint} has no revision '{revision or constants.DEFAULT_REVISION}'"
    if isinstance(err, RepositoryNotFoundError):
        return f"no model repo '{repo_id}' on {endpoint} (or it is private and the token cannot read it: {AUTH_HINT})"
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        if status in (401, 403):
            return f"the Hub rejected the credentials (HTTP {status}): {AUTH_HINT}"
        return f"the Hub at {endpoint} answered HTTP {status} for '{repo_id}': {err.server_message or err}"
    if isinstance(err, HFValidationError):
        return f"invalid Hub repo id {repo_id!r}: {err}"
    if err.__cause__ is not None:  # e.g. "not in the cache" after the Hub failed, or an LFS upload's RuntimeError
        return _describe(err.__cause__, operation)
    return None


def _offline(err: LocalEntryNotFoundError) -> bool:
    return constants.HF_HUB_OFFLINE or isinstance(err.__cause__, OfflineModeIsEnabled)


# -- bounded transport -----------------------------------------------------------------------------------------------
# huggingface_hub makes all its requests through one shared httpx2 client; ours is its default client (offline check,
# redirects, proxies from the environment) with two additions, installed by `set_client_factory` below.


def _bind_request(request: httpx2.Request) -> None:
    """Request hook: find the request's operation (none: limits from the environment and no deadline), give the
    request its timeouts, replacing huggingface_hub's (mostly none), and bind this thread's socket operations to the
    operation's deadline (they run in the thread that sends the request or reads its response).

    The operation header never leaves the process; a redirect keeps the id through the extensions httpx2 copies.
    """
    operation_id = request.headers.pop(OPERATION_HEADER, None) or request.extensions.get(OPERATION_HEADER)
    if operation_id is None:
        operation, limits = None, HubLimits.from_env()
    else:
        request.extensions[OPERATION_HEADER] = operation_id
        operation = _OPERATIONS.get(operation_id, _ENDED)
        limits = operation.limits
    request.extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"), limits.timeout_s)
    _CURRENT.set(operation)


def _within_deadline(io: Callable[[float | None], _T], timeout: float | None) -> _T:
    """One socket operation of this thread's current request, cut short at its operation's deadline."""
    operation = _CURRENT.get()
    if operation is None:
        return io(timeout)
    left = operation.check_deadline()
    try:
        return io(left if timeout is None else min(timeout, left))
    except httpcore2.TimeoutException:
        operation.check_deadline()
        raise


class _DeadlineStream(httpcore2.NetworkStream):
    """A connection whose every read and write (in chunks, so a slow reader cannot stretch one) meets the deadline."""

    WRITE_CHUNK = 1 << 16

    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = _within_deadline(lambda t: self._stream.read(max_bytes, t), timeout)
        if (operation := _CURRENT.get()) is not None:
            operation.count(len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        for start in range(0, len(view), self.WRITE_CHUNK):
            chunk = view[start:start + self.WRITE_CHUNK]
            _within_deadline(lambda t, chunk=chunk: self._stream.write(chunk, t), timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(_within_deadline(
            lambda t: self._stream.start_tls(ssl_context, server_hostname, t), timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """Opens `_DeadlineStream`s, and connects within the deadline too."""

    def __init__(self, backend: httpcore2.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(_within_deadline(
            lambda t: self._backend.connect_tcp(host, port, t, local_address, socket_options), timeout))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(_within_deadline(
            lambda t: self._backend.connect_unix_socket(path, t, socket_options), timeout))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _bounded_client() -> httpx2.Client:
    """huggingface_hub's default client, with `_bind_request` first among its request hooks and `_DeadlineBackend`
    under every transport (the direct one and those for proxies).

    A read timeout alone cannot stop a peer that sends a byte every few seconds, and the response-stream level sees
    nothing while the status line and headers trickle in: only the network backend sees every read. httpx2 has no
    public way to set it, hence the private attributes (httpx2 is pinned; tests/test_hub.py fails if they move).
    """
    client = default_client_factory()
    client.event_hooks = {**client.event_hooks, "request": [_bind_request, *client.event_hooks["request"]]}
    for transport in [client._transport, *client._mounts.values()]:
        if transport is not None:
            pool = transport._pool
            pool._network_backend = _DeadlineBackend(pool._network_backend)
    return client


set_client_factory(_bounded_client)
