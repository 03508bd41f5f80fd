"""A minimal Hugging Face Hub look-alike (standard library only) so hub tests never leave 127.0.0.1.

It serves exactly what huggingface_hub 2.4.0 calls for create_repo, upload_folder, model_info and
snapshot_download (see docs/ecosystem-notes.md §4c): every upload is answered `uploadMode: regular`, so files
arrive base64-inlined in the NDJSON commit and neither Xet nor LFS is involved. Model repos only.
It can also play a slow link (file downloads trickling, request bodies read slowly) or a Hub whose listing
understates file sizes; `StallingHub` is a broken one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import unquote, urlsplit


class LoggedRequest(NamedTuple):
    method: str
    path: str
    authorization: str | None
    header_names: frozenset[str]  # lower case


class HubHTTPError(Exception):
    """An HTTP error answer; `code` goes into X-Error-Code so the client raises its typed exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 the client computes locally to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit sha

    def commit(self, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self.refs.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{summary}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {git_blob_oid(files[path])}\n".encode())
        sha = digest.hexdigest()
        self.commits[sha] = files
        self.refs[branch] = sha
        return sha

    def resolve(self, rev: str) -> str:
        sha = self.refs.get(rev, rev)
        if sha not in self.commits:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha


class LocalHub:
    """In-memory Hub on 127.0.0.1; with `token` set, writes and private reads need `Bearer <token>`.

    A slow link: with `download_byte_every` set, file downloads send their headers, then one byte every that many
    seconds; with `read_pause` set, request bodies are read 64 KiB at a time with that pause in between (all but
    their last 8 MiB). With `listed_size` set, the listings (model info, tree) give every file that size, whatever it
    holds.
    """

    def __init__(self, token: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 download_byte_every: float | None = None, read_pause: float = 0.0, listed_size: int | None = None):
        self.token, self.host, self.port = token, host, port
        self.download_byte_every, self.read_pause, self.listed_size = download_byte_every, read_pause, listed_size
        self.repos: dict[str, Repo] = {}
        self.requests_log: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self.url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler, bind_and_activate=False)
        if self.read_pause:  # a small receive buffer (no autotuning), so the sender really waits on the slow reads
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self._server.server_bind()
        self._server.server_activate()
        self.url = f"http://{self.host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def authorized(self, authorization: str | None) -> bool:
        return self.token is None or authorization == f"Bearer {self.token}"

    def require_auth(self, authorization: str | None) -> None:
        if not self.authorized(authorization):
            reason = "Invalid credentials in Authorization header" if authorization else "Authentication required"
            raise HubHTTPError(401, reason)

    def repo(self, repo_id: str, authorization: str | None) -> Repo:
        """A readable repo; private ones look missing (401) without the token, as on the real Hub."""
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubHTTPError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        if repo.private and not self.authorized(authorization):
            raise HubHTTPError(401, "Invalid username or password.", "RepoNotFound")
        return repo


class _Handler(BaseHTTPRequestHandler):
    """Routes requests by path; HTTP/1.1 keep-alive, so every answer has a Content-Length and HEAD never a body."""

    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the Authorization header must never reach a log."""

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        auth = self.headers.get("Authorization")
        names = frozenset(name.lower() for name in self.headers)
        self.hub.requests_log.append(LoggedRequest(self.command, path, auth, names))
        body = self._read_body(int(self.headers.get("Content-Length") or 0))
        try:
            with self.hub.lock:
                status, payload, headers = self._route(path, body, auth)
        except (KeyError, ValueError) as err:  # malformed request: answer rather than drop the connection
            status, payload, headers = 400, {"error": f"bad request: {err!r}"}, {}
        except HubHTTPError as err:
            error_headers = {"X-Error-Message": err.message} | ({"X-Error-Code": err.code} if err.code else {})
            status, payload, headers = err.status, {"error": err.message}, error_headers
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self._answer(status, payload, headers)

    def _read_body(self, size: int) -> bytes:
        """With `hub.read_pause`, slowly but for the last 8 MiB: those may already sit in the client's socket buffers,
        and reading them slowly would hold up the answer, not the upload."""
        chunks = []
        while self.hub.read_pause and size > 8 << 20:
            chunks.append(self.rfile.read(1 << 16))
            size -= len(chunks[-1])
            time.sleep(self.hub.read_pause)
        chunks.append(self.rfile.read(size))
        return b"".join(chunks)

    def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(payload, trickle=status == 200 and "/resolve/" in self.path)

    def _write_body(self, payload: bytes, trickle: bool) -> None:
        """The body, a byte at a time for a file download when the hub trickles them (until the client gives up)."""
        pause = self.hub.download_byte_every
        if not (trickle and pause):
            self.wfile.write(payload)
            return
        for i in range(len(payload)):
            time.sleep(pause)
            try:
                self.wfile.write(payload[i:i + 1])
                self.wfile.flush()
            except OSError:
                return

    def _route(self, path: str, body: bytes, auth: str | None) -> tuple[int, object, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if self.command == "POST" and parts == ["api", "repos", "create"]:
            return self._create(json.loads(body), auth)
        if self.command == "POST" and parts == ["api", "validate-yaml"]:
            return 200, {}, {}
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(f"{parts[2]}/{parts[3]}", parts[4:], body, auth)
        if self.command in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), auth)
        raise HubHTTPError(404, f"no route for {self.command} {path}")

    def _create(self, request: dict, auth: str | None) -> tuple[int, object, dict[str, str]]:
        self.hub.require_auth(auth)
        repo_id = f"{request['organization']}/{request['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return 409, {"error": "You already created this model repo", "url": url}, {}
        repo = Repo(private=request.get("visibility") == "private" or bool(request.get("private")))
        repo.commit("main", {}, "initial commit")
        self.hub.repos[repo_id] = repo
        return 200, {"url": url}, {}

    def _api(self, repo_id: str, rest: list[str], body: bytes, auth: str | None) -> tuple[int, object, dict[str, str]]:
        action = rest[0] if rest else "info"
        if self.command == "POST" and action in ("preupload", "commit") and len(rest) == 2:
            self.hub.require_auth(auth)
            repo = self.hub.repo(repo_id, auth)
            if action == "preupload":
                return 200, _preupload(repo, rest[1], body), {}
            sha = _commit(repo, rest[1], body)
            return 200, {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha}, {}
        if self.command == "GET" and (action == "info" or (action in ("revision", "tree") and len(rest) >= 2)):
            repo = self.hub.repo(repo_id, auth)
            sha = repo.resolve(rest[1] if rest else "main")
            if action == "tree":
                return 200, _tree(repo.commits[sha], self.hub.listed_size), {}
            siblings = [{"rfilename": p, "size": size} for p, size in _sizes(repo.commits[sha], self.hub.listed_size)]
            return 200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings}, {}
        raise HubHTTPError(404, f"no route for {self.command} /api/models/{repo_id}/{'/'.join(rest)}")

    def _resolve(self, repo_id: str, rev: str, path: str, auth: str | None) -> tuple[int, object, dict[str, str]]:
        repo = self.hub.repo(repo_id, auth)
        sha = repo.resolve(rev)
        content = repo.commits[sha].get(path)
        if content is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound")
        return 200, content, {"ETag": f'"{git_blob_oid(content)}"', "X-Repo-Commit": sha,
                              "Content-Type": "application/octet-stream"}


def _sizes(files: dict[str, bytes], listed_size: int | None) -> list[tuple[str, int]]:
    """(path, size) of each file as the Hub lists it (model_info with files_metadata, the tree): true or understated."""
    return [(p, len(c) if listed_size is None else listed_size) for p, c in sorted(files.items())]


def _tree(files: dict[str, bytes], listed_size: int | None) -> list[dict]:
    """Recursive listing of files only: enough for snapshot_download, which ignores folder entries."""
    return [{"type": "file", "path": p, "size": size, "oid": git_blob_oid(files[p])}
            for p, size in _sizes(files, listed_size)]


def _preupload(repo: Repo, rev: str, body: bytes) -> dict:
    stored = repo.commits[repo.resolve(rev)]
    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
              "oid": git_blob_oid(stored[f["path"]]) if f["path"] in stored else None}
             for f in json.loads(body)["files"]]
    return {"files": files}


def _commit(repo: Repo, rev: str, body: bytes) -> str:
    files = dict(repo.commits[repo.resolve(rev)])
    summary = ""
    for line in body.splitlines():
        item = json.loads(line)
        key, value = item["key"], item["value"]
        if key == "header":
            summary = value.get("summary", "")
        elif key == "file":
            files[value["path"]] = base64.b64decode(value["content"])
        elif key == "deletedFile":
            files.pop(value["path"], None)
        elif key == "deletedFolder":
            prefix = value["path"].rstrip("/") + "/"
            files = {p: c for p, c in files.items() if not p.startswith(prefix)}
        else:
            raise HubHTTPError(400, f"unsupported commit operation {key!r} (this server only takes inline files)")
    return repo.commit(rev, files, summary)


class StallingHub:
    """A broken Hub on 127.0.0.1 that accepts TCP connections and then never answers (`byte_every=None`: a black
    hole), or answers every request one byte every `byte_every` seconds, status line and headers included (a trickle
    that never finishes)."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{" + b" " * 999_999

    def __init__(self, byte_every: float | None = None):
        self.byte_every = byte_every
        self.stopped = threading.Event()
        self.url = ""
        self._server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> str:
        handler = type("StallHandler", (_StallHandler,), {"hub": self})
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="stalling-hub", daemon=True).start()
        return self.url

    def stop(self) -> None:
        self.stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _StallHandler(socketserver.BaseRequestHandler):
    hub: StallingHub

    def handle(self) -> None:
        pause = self.hub.byte_every
        if pause is None:
            self.hub.stopped.wait()
            return
        for i in range(len(StallingHub.RESPONSE)):
            if self.hub.stopped.wait(pause):
                return
            try:
                self.request.sendall(StallingHub.RESPONSE[i:i + 1])
            except OSError:  # the client gave up
                return
