"""Hostile HTTP input on loopback: thin and wide images, oversized and chunked bodies, echoed values, protocol details
(HEAD, odd methods and paths, auth before the body) and half-sent requests.

The app runs in a thread (tests.test_server's `serve`) where only the answers matter; as `python -m server` in a
subprocess where its memory (/proc/PID/status VmHWM) and its connection deadlines are what is tested.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFilter

from server.app import create_app
from server.images import RESAMPLING, ImageLimits, model_view, to_input
from server.state import ServerConfig
from tests.test_server import ADMIN, HUB_TOKEN, ROOT, SMALL, png, predict, serve
from tests.zoo_fixtures import PREPROCESSING

LIMITS = ImageLimits(max_bytes=200_000, max_files=4)  # small uploads, so streaming past a limit is cheap to test
PREDICT_LIMIT = LIMITS.max_files * LIMITS.max_bytes + 1024 * 1024
THIN = [(8, 2_097_152), (4, 4_194_304), (3, 5_592_405), (1, 16_777_216)]  # the images: within MAX_PIXELS
MB = 1024 * 1024


@pytest.fixture(scope="module")
def url(zoo_dir, tmp_path_factory) -> Iterator[str]:
    app = create_app(zoo_dir, tmp_path_factory.mktemp("cache"),
                     ServerConfig(admin_token=ADMIN, hub_token=HUB_TOKEN, limits=LIMITS))
    with serve(app) as u:
        yield u


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@dataclass
class Process:
    """`python -m server` in a subprocess, with short connection deadlines."""

    url: str
    port: int
    proc: subprocess.Popen

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


HEADER_TIMEOUT, BODY_TIMEOUT = 2, 3


@pytest.fixture(scope="module")
def process(zoo_dir, tmp_path_factory) -> Iterator[Process]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("log") / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "server", "--zoo", str(zoo_dir), "--port", str(port), "--cache",
                             str(tmp_path_factory.mktemp("cache")), "--log-level", "warning",
                             "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{url}/api/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield Process(url, port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def one_bit_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")
    return buf.getvalue()


# -- item 2: thin and wide images --------------------------------------------------------------------

@pytest.mark.parametrize("size", THIN, ids=lambda s: f"{s[0]}x{s[1]}")
def test_thin_images_are_a_fast_422_in_bounded_memory(process, size):
    """Were 1.7-4.3 GB and up to 23 s each (the resize to 28 x 52 million pixels), or a 500 (MemoryError)."""
    data = one_bit_png(size)
    before = process.peak_rss_mb()
    with httpx.Client(base_url=process.url, timeout=120) as c:
        start = time.monotonic()
        r = predict(c, ("thin.png", data, "image/png"))
        elapsed = time.monotonic() - start
    assert r.status_code == 422, r.text
    assert f"{size[0]}x{size[1]} is more than 20 times as long as it is wide" in r.json()["error"]
    assert elapsed < 2 and process.peak_rss_mb() - before < 100


def test_aspect_limit_is_one_to_twenty_either_way(client):
    for size, status in (((20, 400), 200), ((400, 20), 200), ((19, 400), 422), ((400, 19), 422)):
        r = predict(client, ("a.png", png(size), "image/png"))
        assert r.status_code == status, (size, r.text)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("size", THIN[2:], ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_shape_is_resized_in_bounded_memory(size):
    """Past the aspect limit too, the resize works on the source region the model sees: resizing the whole image
    first was 5.2 GB for 3 x 5,592,405 (28 x 52 million pixels) and a MemoryError for 1 x 16,777,216."""
    image = Image.open(io.BytesIO(one_bit_png(size)))
    image.load()
    before = peak_rss_mb()
    x = to_input(image, PREPROCESSING)
    # one converted copy (Pillow keeps a pointer per row: 134 MB for 16.8 million rows), never the resized whole
    assert x.shape == (1, 28, 28) and peak_rss_mb() - before < 200


def resize_then_crop(image: Image.Image, size: int, crop_pct: float, resample: Image.Resampling) -> Image.Image:
    """timm's eval transform as torchvision does it on PIL images: Resize(floor(size / crop_pct)), CenterCrop(size)."""
    scale = math.floor(size / crop_pct)
    w, h = image.size
    new = (scale, max(scale, int(scale * h / w))) if w <= h else (max(scale, int(scale * w / h)), scale)
    resized = image.resize(new, resample)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return resized.crop((left, top, left + size, top + size))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "hamming"])
def test_the_crop_box_resize_sees_what_resize_then_crop_sees(interpolation):
    """Equal up to floating-point rounding (at most one level, on a few values) for the smooth filters."""
    rng = np.random.default_rng(0)
    sizes, crops, modes = [(64, 48), (48, 64), (300, 301), (1000, 50), (29, 28), (640, 480)], [1.0, 0.875], "LR"
    differing, values = 0, 0
    for (w, h), crop_pct, mode in itertools.product(sizes, crops, modes):
        channels = {"L": 1, "R": 3}[mode]
        coarse = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, channels), dtype=np.uint8).squeeze()
        photo = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        pre = {**PREPROCESSING, "img_size": 28, "in_chans": channels, "crop_pct": crop_pct,
               "interpolation": interpolation}
        got = np.asarray(model_view(photo, pre), dtype=int)
        want = np.asarray(resize_then_crop(photo, 28, crop_pct, RESAMPLING[interpolation]), dtype=int)
        assert np.abs(got - want).max() <= 1, ((w, h), crop_pct, mode)
        differing, values = differing + int((got != want).sum()), values + want.size
    assert differing <= 0.01 * values


def test_the_ui_refuses_a_thin_image_with_its_reason(url, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    path = tmp_path / "thin.png"
    path.write_bytes(one_bit_png(THIN[2]))
    client = Client(f"{url}/", verbose=False)
    try:
        with pytest.raises(AppError, match="is more than 20 times as long as it is wide"):
            client.predict(handle_file(str(path)), SMALL, api_name="/classify")
    finally:
        client.close()


# -- item 3: body limits, echoed values --------------------------------------------------------------

class Counted:
    """A request body streamed in chunks (chunked transfer encoding), counting what the client got to send."""

    def __init__(self, total: int, head: bytes = b"", chunk: int = 64 * 1024) -> None:
        self.total, self.head, self.chunk, self.sent = total, head, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"x" * self.chunk


def test_a_chunked_json_body_is_cut_at_64_kib(client):
    """Was read to the end (300 MB: 47 s, 2.8 GB) and then validated, its value echoed back in full."""
    body = Counted(300 * MB, b'{"max_params": "')
    start = time.monotonic()
    r = client.post("/api/specialize", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json() == {"error": "the request body is over this route's limit of 65,536 bytes"}
    assert body.sent < 16 * MB and time.monotonic() - start < 10


def test_a_chunked_upload_is_cut_at_the_predict_limit(client):
    """Was spooled to disk to the end (the old check read only a declared Content-Length)."""
    head = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    body = Counted(100 * MB, head)
    r = client.post("/api/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and f"limit of {PREDICT_LIMIT:,} bytes" in r.json()["error"]
    assert body.sent < PREDICT_LIMIT + 16 * MB


def test_gradio_uploads_are_limited_to_one_image(client):
    """Gradio checks each file against max_file_size but takes up to 1000 of them per request."""
    files = [("files", (f"{i}.png", b"x" * (LIMITS.max_bytes // 2), "image/png")) for i in range(20)]
    r = client.post("/gradio_api/upload", files=files)
    assert r.status_code == 413 and "limit of" in r.json()["error"]
    assert client.post("/gradio_api/upload", files=[files[0]]).status_code == 200


def raw_exchange(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or `timeout`)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def test_a_declared_oversized_body_is_refused_before_it_is_sent(url):
    """A Content-Length of 300 MB to a JSON route: a 413 at once, connection closed (was: waited for it)."""
    start = time.monotonic()
    answer = raw_exchange(url, b"POST /api/specialize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 300000000\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()
    assert answer.endswith(b'{"error":"the request body is over this route\'s limit of 65,536 bytes"}')
    assert time.monotonic() - start < 5


def test_a_json_body_over_the_limit_costs_no_memory(process):
    before = process.peak_rss_mb()
    body = Counted(300 * MB, b'{"max_params": "')
    r = httpx.post(f"{process.url}/api/specialize", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and body.sent < 16 * MB
    assert process.peak_rss_mb() - before < 50


LONG = "x" * 100_000


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("POST", "/api/predict", {"files": [("files", ("a.png", png(), "image/png"))], "data": {"model": LONG}}, 422),
    ("POST", "/api/specialize", {"json": {"max_params": LONG[:60_000]}}, 422),
    ("POST", "/api/push", {"json": {"repo_id": LONG[:60_000]}, "headers": {"Authorization": f"Bearer {ADMIN}"}}, 422),
    ("GET", f"/api/{LONG[:8000]}", {}, 404),
    ("GET", f"/api/models/{SMALL}/download/{LONG[:8000]}", {}, 422),
])
def test_echoed_values_are_clipped(client, method, path, kwargs, status):
    """A 100,000-character id was echoed whole in the 404 (and a budget string in the 422)."""
    r = client.request(method, path, **kwargs)
    assert r.status_code == status and r.json()["error"]
    assert len(r.content) < 2000 and "x" * 65 not in r.text


def test_many_validation_problems_are_summed_up(client):
    """5,000 unknown keys were 5,000 problems: a 537 KB answer to a 64 KB request."""
    r = client.post("/api/specialize", json={f"k{i}": 1 for i in range(5000)})
    assert r.status_code == 422 and r.json()["error"].endswith("; and 4990 more")
    assert len(r.json()["problems"]) == 10 and len(r.content) < 4000


@pytest.mark.parametrize("body", [b'{"max_params": 1' + b"0" * 400 + b"}", b'{"max_params": -1' + b"0" * 4000 + b"}",
                                  b"[" * 60_000, b'{"max_params": ' * 5000])
def test_hostile_json_is_a_fast_4xx(client, body):
    """An integer too big for float() was a 500 (OverflowError in the budget parser)."""
    start = time.monotonic()
    r = client.post("/api/specialize", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["error"] and time.monotonic() - start < 5


# -- item 8: protocol details -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/health", "/api/zoo", f"/api/models/{SMALL}/download/card",
                                  f"/api/models/{SMALL}/download/config", "/docs", "/openapi.json"])
def test_head_answers_like_get_without_a_body(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if path != "/api/health":  # its uptime changes between the two
        assert int(head.headers["content-length"]) == len(get.content)


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("TRACE", "/api/health", 405, "GET"), ("FOO", "/api/zoo", 405, "GET"), ("HEAD", "/api/predict", 405, "POST"),
    ("DELETE", "/api/specialize", 405, "POST"), ("POST", "/docs", 405, "GET"), ("PUT", "/openapi.json", 405, None),
    ("GET", "//api/health", 404, None), ("GET", "/api", 404, None), ("GET", "/api/nothing", 404, None),
    ("GET", "/docs-assets/nothing.js", 404, None), ("TRACE", "//api//zoo", 404, None)])
def test_every_api_error_is_json_with_error(client, url, method, path, status, allow):
    r = client.request(method, url + path)  # absolute: httpx would merge //api/health into /api/health
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.content == b"" if method == "HEAD" else r.json()["error"]
    if allow:
        assert r.headers["allow"] == allow


def test_the_ui_keeps_its_own_paths(client):
    assert client.get("/").status_code == 200 and "text/html" in client.get("/").headers["content-type"]
    assert client.head("/").status_code == 200
    assert client.get("/config").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
@pytest.mark.parametrize("body", [b"{not json", b'{"repo_id": 5}', b""])
def test_push_authenticates_before_reading_the_body(client, headers, body):
    r = client.post("/api/push", content=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("body", "problem"), [
    ({"repo_id": "not a repo id"}, "invalid Hub repo id"), ({"repo_id": "no-org"}, "expected 'org/name'"),
    ({"repo_id": "a/b", "max_params": "lots"}, None), ({}, "Field required"), ("{not json", "Invalid JSON")])
def test_push_with_a_bad_body_is_a_422(client, local_hub, body, problem):
    """An invalid repo id was a 502, as if the Hub had failed."""
    commits = len(local_hub.requests_log)
    content = body if isinstance(body, str) else None
    r = client.post("/api/push", content=content, json=None if content else body,
                    headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert problem is None or problem in r.json()["error"]
    assert len(local_hub.requests_log) == commits  # nothing reached the Hub


def half_sent(port: int, request: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    return s


def wait_closed(sockets: list[socket.socket], within: float) -> tuple[float, dict[socket.socket, bytes]]:
    """Seconds until the server had closed every socket (at most `within`), and what it answered on each."""
    start, answers, pending = time.monotonic(), {s: b"" for s in sockets}, set(sockets)
    while pending and time.monotonic() - start < within:
        for s in select.select(list(pending), [], [], 0.2)[0]:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            answers[s] += data
            if not data:
                pending.discard(s)
    return time.monotonic() - start, answers


def test_half_sent_requests_are_closed_within_seconds(process):
    """300 half-sent heads and 30 half-sent bodies stayed open for over a minute; the server answers others."""
    heads = [half_sent(process.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(300)]
    bodies = [half_sent(process.port, b"POST /api/specialize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                      b"\r\nContent-Length: 100\r\n\r\n{") for _ in range(30)]
    try:
        with httpx.Client(base_url=process.url, timeout=5) as c:
            start = time.monotonic()
            assert c.get("/api/health").status_code == 200 and time.monotonic() - start < 1
        took, answers = wait_closed(heads + bodies, within=BODY_TIMEOUT + 10)
        assert took < BODY_TIMEOUT + 3, f"connections still open after {took:.1f} s"
        assert all(answers[s] == b"" for s in heads)
        for s in bodies:
            assert answers[s].startswith(b"HTTP/1.1 408 Request Timeout")
            assert answers[s].endswith(b'{"error": "the request body did not arrive within 3 s"}')
    finally:
        for s in heads + bodies:
            s.close()


def test_slow_but_timely_clients_and_keep_alive_are_served(process):
    """The deadlines cut only what is late: a head sent in pieces, a body in pieces and a keep-alive connection
    idle between requests (within the deadlines) all get their answers."""
    body = b'{"max_params": "0.25M"}'
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as s:
        for piece in (b"POST /api/specialize HTTP/1.1\r\nHost: x\r\n", b"Content-Type: application/json\r\n",
                      b"Content-Length: %d\r\n\r\n" % len(body), body[:5], body[5:]):
            s.sendall(piece)
            time.sleep(HEADER_TIMEOUT / 5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
    with httpx.Client(base_url=process.url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/api/health").status_code == 200
            time.sleep(HEADER_TIMEOUT / 2)
