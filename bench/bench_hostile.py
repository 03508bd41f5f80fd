"""A battery of bad input against every route of the server: no 5xx, bounded time, bounded memory, healthy after.

    .venv/bin/python -m bench.bench_hostile [--zoo DIR]

Starts `python -m server` on a free loopback port with a fresh cache, warms it (one predict per entry), reads its
RSS, then sends every case of `cases()` (every route of /openapi.json with wrong methods, hostile ids, malformed,
oversized, deeply nested and mistyped bodies, thin/wide/bomb/corrupt images, lying or missing lengths, plus the
UI's upload route) one after another. A case passes when the answer is not a 5xx, comes within its time bound and,
under /api/, is JSON `{"error": ...}` when it is an error. Prints one row per kind of case and the RSS before, after
and at its peak (VmHWM); `tests/test_hostile.py` runs the same battery and asserts on it.
"""

from __future__ import annotations

import argparse
import gzip
import io
import math
import re
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.bench_server import running_server, sample_png
from zoo.store import DEFAULT_ZOO

GET_ROUTES = ("/api/health", "/api/zoo", "/api/models/{id}/download/onnx", "/api/samples", "/v2", "/v2/health/live",
              "/v2/health/ready", "/v2/models/{id}", "/v2/models/{id}/ready", "/v2/models/stats",
              "/v2/models/{id}/config", "/v2/models/{id}/stats", "/v2/models/{id}/versions/1",
              "/v2/models/{id}/versions/1/ready", "/v2/models/{id}/versions/1/config",
              "/v2/models/{id}/versions/1/stats")
GRADIO_FILE = "/gradio_api/file="
POST_ROUTES = ("/api/specialize", "/api/predict", "/api/push", "/v2/models/{id}/infer", "/v2/repository/index",
               "/v2/models/{id}/versions/1/infer")
HOSTILE_VERSIONS = ("2", "0", "01", "..", "%00", "v" * 5000, "1%2f..", "-1")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
HOSTILE_IDS = ("..", "...", ".hidden", "%2e%2e%2fetc%2fpasswd", "..%2f..%2fzoo.json", "a" * 97, "x" * 5000,
               "e96-d6-529fda2c%00", "%00", "e96;rm -rf", "名前", "%ff%fe", "CON", "e96-d6-529fda2c/../..", " ", "-",
               "e" * 96)
HOSTILE_KINDS = ("onnx2", "../onnx", "ONNX", "safetensors.json", "%2e%2e", "k" * 3000, "", "config%00")


@dataclass(frozen=True)
class Case:
    kind: str  # the row it is counted in
    method: str
    path: str
    request: dict = field(default_factory=dict)  # httpx.Client.request keyword arguments
    seconds: float = 10.0  # the answer must come within this
    expect: tuple[int, ...] = ()  # when given, the statuses that count as right


@dataclass
class Outcome:
    case: Case
    status: int | None
    seconds: float
    problem: str | None  # None: the case passed


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height (CRC fixed), so only the header check can stop it."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def image_bytes(size: tuple[int, int], mode: str = "1", fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt, **save)
    return buf.getvalue()


def images(sample: bytes) -> Iterator[tuple[str, bytes, str]]:
    """(name, bytes, content type) of uploads a server must refuse (or answer) cheaply."""
    for w, h in ((8, 2_097_152), (4, 4_194_304), (3, 5_592_405), (1, 16_777_216), (2_097_152, 8), (16_777_216, 1),
                 (4096, 1), (1, 4096), (10_000, 2)):
        yield f"thin-{w}x{h}.png", image_bytes((w, h)), "image/png"
    for w, h in ((60_000, 60_000), (100_000, 1), (1, 100_000), (2**31 - 1, 2**31 - 1)):
        yield f"header-bomb-{w}x{h}.png", png_header_bomb(w, h), "image/png"
    yield "gif-thin.gif", image_bytes((2, 65_535), "L", "GIF"), "image/gif"
    yield "tiff-wide.tiff", image_bytes((1_000_000, 4), "1", "TIFF", compression="group4"), "image/tiff"
    yield "empty.png", b"", "image/png"
    yield "text.png", b"hello, not an image", "image/png"
    yield "truncated.png", sample[: len(sample) // 2], "image/png"
    yield "flipped.png", sample[:40] + bytes(b ^ 0xFF for b in sample[40:80]) + sample[80:], "image/png"
    yield "html.txt", b"<html></html>", "text/html"
    yield "svg.svg", b"<svg xmlns='http://www.w3.org/2000/svg' width='9e9' height='9e9'/>", "image/svg+xml"
    yield "big.png", b"\x89PNG" + b"\0" * (11 * 1024 * 1024), "image/png"
    yield "ok-but-16bit.png", image_bytes((28, 28), "I;16"), "image/png"
    yield "cmyk.jpg", image_bytes((28, 28), "CMYK", "JPEG"), "image/jpeg"
    yield "x" * 5000 + ".png", sample, "image/png"


def json_bodies() -> Iterator[tuple[str, dict]]:
    """(kind, request kwargs) of bad JSON bodies for the JSON routes."""
    deep = "[" * 100_000 + "]" * 100_000
    for name, raw in (("empty", b""), ("not json", b"{max_params:"), ("array", b"[1, 2]"), ("string", b'"0.3M"'),
                      ("null", b"null"), ("number", b"300000"), ("deeply nested", deep.encode()),
                      ("nested object", b'{"max_params": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"),
                      ("NaN", b'{"max_params": NaN}'), ("Infinity", b'{"max_params": -Infinity}'),
                      ("1e400", b'{"max_params": 1e400}'), ("huge int", b'{"max_params": ' + b"9" * 5000 + b"}"),
                      ("bad utf-8", b'{"max_params": "\xff\xfe"}'), ("bom", b'\xef\xbb\xbf{"max_params": "1M"}'),
                      ("duplicate keys", b'{"max_params": "1M", "max_params": "x"}'),
                      ("1 MB string", b'{"max_params": "' + b"9" * 1_000_000 + b'"}'),
                      ("10 MB body", b'{"max_params": "' + b"9" * 10_000_000 + b'"}'),
                      ("many keys", ("{" + ",".join(f'"k{i}": {i}' for i in range(50_000)) + "}").encode()),
                      ("utf-16", '{"max_params": "1M"}'.encode("utf-16"))):
        yield f"JSON body: {name}", {"content": raw, "headers": {"content-type": "application/json"}}
    for value in (-1, 0, "0", "-5M", "abc", "1e309", "nanM", "infG", "1.5.5M", True, [], {}, "1" * 300, "١٢٣",
                  "0x10", "3 M", "1e-400", 1e308):
        yield "JSON budget value", {"json": {"max_params": value}}
    for key in ("max_flops", "max_latency_ms", "unknown", "", "__proto__"):
        yield "JSON budget key", {"json": {key: "x" * 200}}
    yield "wrong content type", {"content": b'{"max_params": "1M"}', "headers": {"content-type": "text/plain"}}
    yield "form to a JSON route", {"data": {"max_params": "1M"}}


def v2_bodies() -> Iterator[dict]:
    """Request kwargs of bad Open Inference Protocol v2 infer requests: JSON tensors and the binary extension."""
    def tensor(**fields) -> dict:
        return {"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", **fields}]}

    for body in ({}, {"inputs": []}, {"inputs": "x"}, tensor(data=[0.0]), tensor(datatype="FP64", data=[0.0] * 784),
                 tensor(datatype="BYTES", data=["a"]), tensor(shape=[-1, 1, 28, 28], data=[0.0] * 784),
                 tensor(shape=[10**12, 1, 28, 28], data=[0.0]), tensor(shape=[1, 1, 28], data=[0.0] * 784),
                 tensor(shape="1x1", data=[]), tensor(data=["NaN"] * 784), tensor(data=[[[[0.0]]]] * 784),
                 tensor(name="nope", data=[0.0] * 784), tensor(shape=[33, 1, 28, 28], data=[0.0] * 33 * 784),
                 {**tensor(data=[0.0] * 784), "outputs": [{"name": "nope"}]},
                 {**tensor(data=[0.0] * 784), "parameters": {"binary_data_output": "yes"}}):
        yield {"json": body}
    header = b'{"inputs": [{"name": "pixel_values", "shape": [1, 1, 28, 28], "datatype": "FP32", ' \
             b'"parameters": {"binary_data_size": 3136}}]}'
    extreme = struct.pack("<f", -3.4e38) * 784
    for length, payload in (("99999999999", b""), ("-5", b""), (str(len(header) + 100), b""),
                            (str(len(header)), b"\0" * 100), ("abc", b"\0" * 3136), ("\u00b2", b"\0" * 3136),
                            ("9" * 5000, b"\0" * 3136), ("+" + str(len(header)), b"\0" * 3136),
                            (f"0x{len(header):x}", b"\0" * 3136), (str(len(header)), extreme),
                            (str(len(header)), struct.pack("<f", float("nan")) * 784)):
        yield {"content": header + payload, "headers": {"inference-header-content-length": length.encode("latin-1"),
                                                        "content-type": "application/octet-stream"}}
    for value in (3.4e38, -3.4e38, 1e39, 1e4 + 1):  # finite JSON at and past float32's limit
        yield {"json": tensor(data=[value] * 784)}
        yield {"json": {**tensor(data=[value] * 784), "parameters": {"binary_data_output": True}}}


def encoded_bodies() -> Iterator[dict]:
    """Request kwargs of compressed infer bodies: a gzip bomb past the body limit once inflated, broken streams,
    encodings the server does not take."""
    bomb = gzip.compress(b"\0" * 64_000_000, compresslevel=9)  # 64 MB of zeros in about 62 KB
    for encoding, body in (("gzip", bomb), ("deflate", zlib.compress(b"\0" * 64_000_000, 9)),
                           ("gzip", b"\x1f\x8b\x08\x00garbage"), ("deflate", b"not deflate"), ("gzip", b""),
                           ("br", b"\0" * 10), ("gzip, gzip", gzip.compress(gzip.compress(b"{}"))),
                           ("identity;q=x", b"{}")):
        yield {"content": body, "headers": {"content-encoding": encoding, "content-type": "application/json"}}


SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- planted by bench_hostile"


def plant_secrets(cache: Path) -> list[Path]:
    """Files a careless operator keeps beside (or in) the --cache folder; the UI's file route must serve none."""
    planted = [cache / ".ssh" / "id_rsa", cache / "exports" / "secret.txt", cache / "secret.txt"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SECRET)
    return planted


def file_route_cases(cache: Path, zoo: str) -> list[Case]:
    """Gradio's /gradio_api/file= route asked for what the UI never produced: planted secrets, the export cache,
    the zoo, system files; absolute, relative and encoded. Refused (no 200) and no secret byte in the answer."""
    paths = [str(p) for p in plant_secrets(cache)]
    paths += [str(p) for p in sorted((cache / "exports").rglob("*"))[:6] if p.is_file()]
    paths += [str(Path(zoo).resolve() / "zoo.json"), "/etc/passwd", "/proc/self/environ",
              f"{cache}/ui/../secret.txt", f"{cache}/ui/%2e%2e/secret.txt", f"{cache}//secret.txt",
              str(cache / "ui" / ".." / ".ssh" / "id_rsa")]
    return [Case("UI file route", method, f"{GRADIO_FILE}{p}", expect=(403, 404)) for p in paths
            for method in ("GET", "HEAD")]


def chunked(total: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """A body of `total` bytes sent with no Content-Length (chunked transfer encoding)."""
    for _ in range(total // piece):
        yield b"\0" * piece


def cases(entry_id: str, sample: bytes) -> list[Case]:
    out: list[Case] = []
    for route in (*GET_ROUTES, *POST_ROUTES):
        path = route.replace("{id}", entry_id)
        out += [Case("wrong or odd method", m, path) for m in METHODS if not (m == "HEAD" and route in GET_ROUTES)]
    out += [Case("HEAD on a GET route", "HEAD", route.replace("{id}", entry_id), expect=(200,)) for route in GET_ROUTES]
    for i in HOSTILE_IDS:
        out.append(Case("hostile entry id", "GET", f"/api/models/{i}/download/onnx"))
    for i in HOSTILE_IDS:
        out += [Case("hostile v2 model", "GET", f"/v2/models/{i}"),
                Case("hostile sample name", "GET", f"/api/samples/{i}")]
    out += [Case("v2 infer body", "POST", f"/v2/models/{entry_id}/infer", request) for request in v2_bodies()]
    out += [Case("hostile v2 version", "GET", f"/v2/models/{entry_id}/versions/{v}{tail}")
            for v in HOSTILE_VERSIONS for tail in ("", "/ready", "/config", "/stats")]
    out += [Case("encoded v2 body", "POST", f"/v2/models/{entry_id}/infer", request) for request in encoded_bodies()]
    for k in HOSTILE_KINDS:
        out.append(Case("hostile download kind", "GET", f"/api/models/{entry_id}/download/{k}"))
    out += [Case("hostile variant name", "GET", f"/api/models/{entry_id}/variants/{v}", expect=(404, 422))
            for v in (*HOSTILE_KINDS, "w3", "W8", "w8%2f..%2ffp32", "edmips-", "edmips-1e400")]
    out += [Case("hostile variant name", "GET", f"/api/models/{i}/variants/w8", expect=(404, 422))
            for i in HOSTILE_IDS]
    raw_get = lambda p: {"raw": f"GET {p} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()}
    out += [Case("odd path", "GET", p, raw_get(p), expect=(404,))  # raw: HTTP clients read // as a host name
            for p in ("//api/health", "//api//zoo", "///docs-assets/x")]
    out += [Case("odd path", "GET", p) for p in ("/api//zoo", "/api/health/", "/api/%2e%2e/zoo",
                                                 "/api/" + "a" * 8000, "/api/models", "/api/models/x/download",
                                                 "/api/nope", "/api/zoo?x=" + "y" * 5000)]
    out += [Case("bad header", "GET", "/api/zoo", {"headers": h}) for h in (
        {"if-none-match": "x" * 8000}, {"if-none-match": ", , ,"}, {"accept": "application/xml"},
        {"content-type": "multipart/form-data"}, {"range": "bytes=999999999-"}, {"host": "evil.example"})]
    for route in ("/api/specialize", "/api/push"):
        out += [Case(kind, "POST", route, request) for kind, request in json_bodies()]
    refused = (401, 403)  # 403: pushing is off on this server; 401: on, but no admin token. Never a body error first
    out += [Case("push without a token", "POST", "/api/push", {"json": {"repo_id": r}}, expect=refused)
            for r in ("../../x", "a/b/c", "", "x" * 500, "org/name")]
    out += [Case("push without a token", "POST", "/api/push", {"content": b"{not json", "headers": {
        "content-type": "application/json"}}, expect=refused)]
    out += [Case("push with a wrong token", "POST", "/api/push",
                 {"json": {"repo_id": "org/name"}, "headers": {"authorization": a}}, expect=refused)
            for a in ("Bearer nope", "Basic YTpi", "Bearer " + "x" * 10_000, "bearer", "")]
    for name, data, ctype in images(sample):
        out.append(Case("hostile image", "POST", "/api/predict", {"files": {"files": (name, data, ctype)}}, 15))
    out.append(Case("too many images", "POST", "/api/predict",
                    {"files": [("files", (f"{i}.png", sample, "image/png")) for i in range(33)]}))
    for form in ({"top_k": "0"}, {"top_k": "-1"}, {"top_k": "1001"}, {"top_k": "abc"}, {"top_k": "1e9"},
                 {"model": "x" * 10_000}, {"model": "../../zoo"}, {"model": ""}, {"unknown": "1"}):
        out.append(Case("bad predict form", "POST", "/api/predict",
                        {"files": {"files": ("ok.png", sample, "image/png")}, "data": form}))
    for body, ctype in ((b"--x\r\n", "multipart/form-data; boundary=x"), (b"garbage", "multipart/form-data"),
                        (b"", "multipart/form-data; boundary=" + "b" * 200), (sample, "image/png"),
                        (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n" + sample,
                         "multipart/form-data; boundary=x")):
        out.append(Case("malformed multipart", "POST", "/api/predict", {"content": body,
                                                                         "headers": {"content-type": ctype}}))
    out.append(Case("2 GB chunked upload", "POST", "/api/predict",
                    {"content": chunked(2 << 30), "headers": {"content-type": "multipart/form-data; boundary=x"}},
                    30))
    out.append(Case("300 MB chunked JSON", "POST", "/api/specialize",
                    {"content": chunked(300 << 20), "headers": {"content-type": "application/json"}}, 30))
    for length in ("99999999999", "-1", "1e3", "20, 30"):  # sent raw: HTTP clients refuse to lie
        head = (f"POST /api/specialize HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n")
        out.append(Case("lying content-length", "POST", "/api/specialize", {"raw": head.encode() + b"{}" * 10}, 30))
    out += [Case("UI upload", "POST", "/gradio_api/upload", {"files": {"files": (name, data, ctype)}}, 15)
            for name, data, ctype in (("big.png", b"\0" * (11 * 1024 * 1024), "image/png"),
                                      ("thin.png", image_bytes((8, 2_097_152)), "image/png"))]
    return out


def send(client: httpx.Client, case: Case) -> Outcome:
    t = time.perf_counter()
    try:
        if "raw" in case.request:
            r = send_raw(client.base_url, case.request["raw"], case.seconds)
        else:
            r = client.request(case.method, case.path, timeout=case.seconds, **case.request)
    except (httpx.RemoteProtocolError, ConnectionResetError):  # closed on a body it refused: acceptable
        return Outcome(case, None, time.perf_counter() - t, None)
    except (httpx.HTTPError, OSError) as e:
        return Outcome(case, None, time.perf_counter() - t, f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t
    return Outcome(case, r.status_code, seconds, _problem(case, r, seconds))


def send_raw(url: httpx.URL, data: bytes, seconds: float) -> httpx.Response:
    """Bytes straight onto a socket (for requests HTTP clients will not send); the answer, read until the server
    closes the connection (each raw request asks it to, or is one it must refuse)."""
    with socket.create_connection((url.host, url.port), timeout=seconds) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head:
        raise httpx.RemoteProtocolError("closed without an answer")
    return httpx.Response(int(head.split()[1]), content=body)


def _problem(case: Case, r: httpx.Response, seconds: float) -> str | None:
    if r.status_code >= 500:
        return f"HTTP {r.status_code}: {r.text[:200]}"
    if seconds > case.seconds:
        return f"took {seconds:.1f} s (bound {case.seconds:g} s)"
    if SECRET in r.content:
        return f"HTTP {r.status_code} answered a planted secret"
    if r.status_code == 200 and case.path.endswith("/infer") and not finite_logits(r):
        return "HTTP 200 carrying NaN or infinite logits"
    if case.expect and r.status_code not in case.expect:
        return f"HTTP {r.status_code}, expected {' or '.join(map(str, case.expect))}: {r.text[:120]!r}"
    api = case.path.lstrip("/").startswith(("api/", "v2"))
    if api and r.status_code >= 400 and case.method != "HEAD":
        try:
            ok = "error" in r.json()
        except ValueError:
            ok = False
        if not ok:
            return f"HTTP {r.status_code} without a JSON error: {r.text[:120]!r}"
    return None


def finite_logits(r: httpx.Response) -> bool:
    """Whether a v2 infer answer's logits are all finite numbers, in JSON or after a binary header."""
    length = r.headers.get("inference-header-content-length")
    if length is not None:
        return bool(np.isfinite(np.frombuffer(r.content[int(length):], "<f4")).all())
    data = [x for out in r.json()["outputs"] for x in out["data"]]
    return all(isinstance(x, int | float) and math.isfinite(x) for x in data)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


@dataclass
class BatteryResult:
    outcomes: list[Outcome]
    rss_before: dict[str, int]
    rss_after: dict[str, int]
    healthy_after: bool
    uncovered: list[str]  # routes of /openapi.json no case reached

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem]


def battery(url: str, pid: int, cache: Path, zoo: str) -> BatteryResult:
    """Every case against the server at `url` (process `pid`), which serves `zoo` with `cache` as its --cache."""
    with httpx.Client(base_url=url, timeout=60) as client:
        index = client.get("/api/zoo").json()
        sample = sample_png(index["preprocessing"])
        for entry in index["entries"]:  # warm: every model exported and loaded once
            r = client.post("/api/predict", files={"files": ("ok.png", sample, "image/png")},
                            data={"model": entry["id"]})
            r.raise_for_status()
        before = rss_kib(pid)
        battery_cases = cases(index["default_model"], sample) + file_route_cases(cache, zoo)
        missed = uncovered(client.get("/openapi.json").json(), battery_cases)
        outcomes = [send(client, c) for c in battery_cases]
        after = rss_kib(pid)
        healthy = client.get("/api/health").status_code == 200 and client.post(
            "/api/predict", files={"files": ("ok.png", sample, "image/png")}).status_code == 200
    return BatteryResult(outcomes, before, after, healthy, missed)


def uncovered(openapi: dict, battery_cases: list[Case]) -> list[str]:
    """The routes of the server's OpenAPI document that no case of the battery reaches."""
    paths = {c.path.split("?")[0] for c in battery_cases}
    return [route for route in openapi["paths"]
            if not any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", route), p) for p in paths)]


def report(result: BatteryResult) -> str:
    rows = Counter(o.case.kind for o in result.outcomes)
    statuses: dict[str, Counter] = {k: Counter() for k in rows}
    worst: dict[str, float] = dict.fromkeys(rows, 0.0)
    for o in result.outcomes:
        statuses[o.case.kind][o.status or "closed"] += 1
        worst[o.case.kind] = max(worst[o.case.kind], o.seconds)
    lines = ["| kind of case | cases | answers | slowest s | failures |", "|---|---|---|---|---|"]
    for kind, n in rows.items():
        answers = ", ".join(f"{s}×{c}" for s, c in sorted(statuses[kind].items(), key=str))
        failed = sum(1 for o in result.outcomes if o.case.kind == kind and o.problem)
        lines.append(f"| {kind} | {n} | {answers} | {worst[kind]:.2f} | {failed} |")
    mib = lambda kib: f"{kib / 1024:.0f} MiB"
    lines += ["", f"{len(result.outcomes)} cases, {len(result.failures)} failures; server RSS "
                  f"{mib(result.rss_before['VmRSS'])} before, {mib(result.rss_after['VmRSS'])} after, peak "
                  f"{mib(result.rss_after['VmHWM'])} (peak before the battery {mib(result.rss_before['VmHWM'])}); "
                  f"healthy after: {result.healthy_after}; routes of /openapi.json not reached: "
                  f"{', '.join(result.uncovered) or 'none'}"]
    lines += [f"- FAILED {o.case.kind} {o.case.method} {o.case.path[:80]}: {o.problem}" for o in result.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import tempfile

    p = argparse.ArgumentParser(prog="python -m bench.bench_hostile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default=str(DEFAULT_ZOO))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prezoo-hostile-") as tmp, running_server(args.zoo, Path(tmp)) as served:
        print(report(battery(served.url, served.pid, Path(tmp), args.zoo)))


if __name__ == "__main__":
    main()
