"""Pulling zoo folders from the Hugging Face Hub, with errors a user can act on.

huggingface_hub's own exceptions are long, generic and differ between "missing", "private", "offline" and
"unreachable"; `HubError` says which one it is, names the repo and the endpoint, and never carries a token.
The push side lives in `export.hub` and reuses `hub_errors`, so serving never imports training or export.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

AUTH_HINT = "check HF_TOKEN or `hf auth login`"


class HubError(RuntimeError):
    """A Hub operation failed; the message says why and never contains a token."""


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


def pull(repo_id: str, *, revision: str | None = None, allow_patterns: list[str] | str | None = None) -> Path:
    """Download (or find in the standard Hub cache) a snapshot of a model repo and return its folder.

    Once fetched, the same call works with HF_HUB_OFFLINE=1, and also when the endpoint is down.
    """
    check_repo_id(repo_id)
    with hub_errors(repo_id, revision):
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub/httpx errors into one HubError with a clear message."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        message = _describe(err, repo_id, revision)
        if message is None:
            raise
        raise HubError(message) from err


def _describe(err: BaseException, repo_id: str, revision: str | None) -> str | None:
    """The message for a known failure, or None to let an unexpected error through unchanged."""
    endpoint = constants.ENDPOINT
    if isinstance(err, LocalEntryNotFoundError) and _offline(err):
        return f"'{repo_id}' is not in the local Hub cache and HF_HUB_OFFLINE=1 forbids downloading it"
    if isinstance(err, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE=1 forbids contacting the Hub at {endpoint} (needed for '{repo_id}')"
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
    if isinstance(err, LocalEntryNotFoundError) and err.__cause__ is not None:
        return _describe(err.__cause__, repo_id, revision)
    if isinstance(err, HFValidationError):
        return f"invalid Hub repo id {repo_id!r}: {err}"
    return None


def _offline(err: LocalEntryNotFoundError) -> bool:
    return constants.HF_HUB_OFFLINE or isinstance(err.__cause__, OfflineModeIsEnabled)
