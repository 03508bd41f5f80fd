"""`python -m server`: serve one zoo or several as one (REST API under /api, UI at /).

    python -m server [--zoo DIR|org/name|NAME ...] [--compare-zoo DIR|org/name ...] [--host 127.0.0.1]
                     [--port 7860] [--grpc-port 8001] [--admin-token-env NAME]

Each --zoo is served; without one, every shipped zoo is (today ladder-fmnist, ViT, and hytra-fmnist, HyTra). Served
zoos are one catalog (zoo.catalog): a budget picks the most accurate entry over all of them (ties: the cheaper), the
UI draws one Pareto front coloured by family, GET /api/zoo, /v2 and Hub pushes see every entry, and an entry id is
looked up in whichever zoo holds it, whose preprocessing, classes and weights serve it. They must share dataset and
classes, and no entry id may be in two of them.

`--host` and `--port` default to $PREZOO_HOST and $PREZOO_PORT when set (the Docker image sets PREZOO_HOST=0.0.0.0,
so its entrypoint is the README's command unchanged). `--grpc-port` (default $PREZOO_GRPC_PORT, else 0: off) serves
the Open Inference Protocol v2 over gRPC too, in the same process, through the same micro-batcher and limits.

The admin token (which enables POST /api/push) is read from the environment variable NAME, never from the command
line; the Hub token from HF_TOKEN. A zoo that cannot be used (served or compared), zoos that cannot be served
together, or a --cache folder that cannot be written, stops the start with one line on stderr and exit code 2.

Each --compare-zoo (a few at most) is loaded and checked like --zoo, then drawn beside the served zoos in the UI's
Pareto plot and listed under "compare" in GET /api/zoo, for comparison only: budgets, downloads and predictions use
the served zoos.

Uploads are limited per image (bytes, pixels, aspect ratio) and per request (images); every other request body to
64 KiB. A request's head must arrive within --header-timeout seconds, its body within --body-timeout of the head.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from server.compare import MAX_COMPARE_ZOOS, compare_problem
from server.images import MAX_PIXELS, ImageLimits
from server.startup import CACHE, StartError, load_zoo, onnx_runtime, served_zoos, writable_cache
from zoo.arguments import Range, zoo_source
from zoo.io import quote

if TYPE_CHECKING:
    from server.state import ServerConfig
    from zoo.catalog import Catalog
    from zoo.store import Zoo


PORTS = Range(int, 0, 65535)


def tcp_port(text: str) -> int:
    """A TCP port number, checked as zoo.arguments.Range checks numbers; what 0 means is each flag's to say."""
    try:
        return PORTS(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a TCP port (0-65535)") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", action="append", default=[], type=zoo_source, metavar="DIR|org/name|NAME",
                   help="a zoo to serve: directory, Hub repo id or shipped zoo's name; repeat to serve several as one "
                        "(one budget, one Pareto front over all) (default: every shipped zoo)")
    p.add_argument("--compare-zoo", action="append", default=[], type=zoo_source, metavar="DIR|org/name",
                   help=f"another zoo shown beside the served ones for comparison only (Pareto plot, /api/zoo); "
                        f"repeat for more, at most {MAX_COMPARE_ZOOS}")
    p.add_argument("--host", default=os.environ.get("PREZOO_HOST", "127.0.0.1"), help="default: %(default)s")
    p.add_argument("--port", type=tcp_port, default=os.environ.get("PREZOO_PORT", "7860"),
                   help="TCP port, 0 picks a free one (default: %(default)s)")
    p.add_argument("--grpc-port", type=tcp_port, default=os.environ.get("PREZOO_GRPC_PORT", "0"),
                   help="TCP port of the Open Inference Protocol v2 over gRPC (Triton's and KServe's gRPC clients) on "
                        "--host, beside HTTP; 0 turns it off (default: %(default)s)")
    p.add_argument("--admin-token-env", metavar="NAME", help="environment variable holding the admin token; "
                                                             "without it, pushing to the Hub is off")
    p.add_argument("--cache", default=str(CACHE), help="exports, sample images (default: %(default)s)")
    p.add_argument("--cache-max-mb", type=Range(int, 1, 2**24), default=2048,
                   help="size bound of the export cache in MiB; least recently used exports go first "
                        "(default: %(default)s)")
    p.add_argument("--max-batch", type=Range(int, 1, 1024), default=16, help="micro-batch size limit (images)")
    p.add_argument("--max-wait-ms", type=Range(float, 0, 1000), default=5.0,
                   help="how long a micro-batch waits to fill up")
    p.add_argument("--no-batching", action="store_true", help="one ONNX Runtime call per request")
    p.add_argument("--sessions", type=Range(int, 1, 256), default=4, help="ONNX Runtime sessions kept loaded (LRU)")
    p.add_argument("--ort-threads", type=Range(int, 1, 256),
                   help="ONNX Runtime intra-op threads (default: ORT's choice)")
    p.add_argument("--ort-spinning", choices=["on", "off"], default="off",
                   help="whether ORT's idle threads busy-wait (default: %(default)s; see bench/RESULTS.md)")
    p.add_argument("--no-profile", action="store_true",
                   help="do not time the entries on this host after start (latency budgets then use the zoo's numbers)")
    p.add_argument("--shutdown-timeout", type=Range(float, 0, 3600), default=10.0,
                   help="seconds in-flight requests get to finish on SIGTERM/SIGINT")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    limits = ImageLimits()
    p.add_argument("--max-image-bytes", type=Range(int, 1, 2**30), default=limits.max_bytes,
                   help="largest image file accepted (default: %(default)s)")
    p.add_argument("--max-image-pixels", type=Range(int, 1, 2 * MAX_PIXELS), default=limits.max_pixels,
                   help="most pixels (width x height) of an image, at most 2 x 4096 x 4096 (Pillow's own guard) "
                        "(default: %(default)s)")
    p.add_argument("--max-aspect", type=Range(float, 1, 1e6), default=limits.max_aspect,
                   help="longest side / shortest side of an image (default: %(default)s)")
    p.add_argument("--max-images", type=Range(int, 1, 1024), default=limits.max_files,
                   help="images in one /api/predict request (default: %(default)s)")
    p.add_argument("--header-timeout", type=Range(float, 0.01, 3600), default=10.0,
                   help="seconds a client has to send a request's head (default: %(default)s)")
    p.add_argument("--body-timeout", type=Range(float, 0.01, 3600), default=60.0,
                   help="seconds a client has to send a request's body after its head (default: %(default)s)")
    args = p.parse_args(argv)
    if len(args.compare_zoo) > MAX_COMPARE_ZOOS:
        p.error(f"{len(args.compare_zoo)} --compare-zoo given; at most {MAX_COMPARE_ZOOS} fit in one plot")
    return args


def compare_zoos(served: Catalog, sources: list[str]) -> list[Zoo]:
    """The --compare-zoo zoos, each loaded like the served ones and measured on the same dataset (top-1 on another
    dataset is no comparison)."""
    zoos = [load_zoo(source, "--compare-zoo") for source in sources]
    for source, other in zip(sources, zoos, strict=True):
        if problem := compare_problem(served, other):
            raise StartError(f"cannot use --compare-zoo {source}: {problem}")
    return zoos


def admin_token(name: str | None) -> str | None:
    if name is None:
        return None
    token = os.environ.get(name, "").strip()
    if not token:
        raise StartError(f"--admin-token-env {name}: the environment variable {name} is unset or empty")
    return token


def server_config(args: argparse.Namespace, admin: str | None, compare: list[Zoo]) -> ServerConfig:
    """The flags as the server's one settings value (server.state loads torch and ONNX Runtime: imported here, after
    the start checks)."""
    from server.inference import InferenceConfig
    from server.state import ServerConfig

    inference = InferenceConfig(micro_batching=not args.no_batching, max_batch=args.max_batch,
                                max_wait_ms=args.max_wait_ms, sessions=args.sessions, threads=args.ort_threads,
                                spinning=args.ort_spinning == "on")
    limits = ImageLimits(max_bytes=args.max_image_bytes, max_pixels=args.max_image_pixels, max_files=args.max_images,
                         max_aspect=args.max_aspect)
    return ServerConfig(admin_token=admin, hub_token=os.environ.get("HF_TOKEN") or None, inference=inference,
                        limits=limits, cache_max_bytes=args.cache_max_mb * 2**20, profile_latency=not args.no_profile,
                        compare=compare, grpc_address=grpc_address(args.host, args.grpc_port),
                        grpc_grace_s=args.shutdown_timeout)


def check_listen(host: str, port: int, flag: str) -> None:
    """StartError naming `flag` when this process cannot listen on host:port (in use, or not this machine's
    address): checked before the app is built, which takes seconds; else the gRPC server's own failure would end
    the start with a traceback from inside the app's lifespan."""
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as e:
        raise StartError(f"{flag} {port}: cannot listen on {host}:{port}: {e.strerror or e}") from None


def grpc_address(host: str, port: int) -> str | None:
    """gRPC's 'host:port' ('[::1]:port' for an IPv6 host), or None for port 0 (off)."""
    if not port:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("server").setLevel(args.log_level.upper())  # ours; libraries (ORT quantizer) stay quiet
    try:
        onnx_runtime()
        zoos, token, cache = served_zoos(args.zoo), admin_token(args.admin_token_env), writable_cache(args.cache)
        compare = compare_zoos(zoos, args.compare_zoo)
        if args.grpc_port:
            check_listen(args.host, args.grpc_port, "--grpc-port")
    except StartError as e:
        print(f"python -m server: {e}", file=sys.stderr)
        return 2
    import uvicorn  # after the checks: a bad start fails in about a second, before gradio is imported

    from server.app import create_app
    from server.protocol import DeadlineH11Protocol
    from zoo.catalog import named

    try:
        app = create_app(zoos, cache, server_config(args, token, compare))
    except ValueError as e:  # a --cache inside a folder the UI's file route serves whole
        print(f"python -m server: {e}", file=sys.stderr)
        return 2
    shown = f" beside {', '.join(other.name for other in compare)}" if compare else ""
    grpc = f"; Open Inference Protocol v2 over gRPC on {args.host}:{args.grpc_port}" if args.grpc_port else ""
    print(f"PreZoo serving {named(zoos.zoos)}{shown} on http://{args.host}:{args.port}/ (API docs: /docs){grpc}",
          file=sys.stderr)
    http = functools.partial(DeadlineH11Protocol, header_timeout=args.header_timeout, body_timeout=args.body_timeout)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=http,
                timeout_graceful_shutdown=args.shutdown_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
