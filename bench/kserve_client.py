"""KServe's Python clients (InferenceGRPCClient, InferenceRESTClient) against a v2 server, in a process of their own:
kserve's protos and tritonclient.grpc's register the same names (`inference.ServerLiveRequest` ...) in protobuf's
default pool, so no one process can import both (the second import fails).

    python -m bench.kserve_client --grpc HOST:PORT --http http://HOST:PORT --model ID --input X.npy

prints one JSON object: per client ("grpc", "rest"), per call they have (live, ready, model_ready, infer, and over
gRPC infer_typed: the values as typed fp32_contents, not raw bytes), {"ok": bool, "detail": text}, `logits` (the
infer call's, as nested lists) and `unknown_model` (the error an unknown model name gets: gRPC code or HTTP status).
Needs requirements-kserve.txt (tests/test_grpc.py, bench/bench_grpc.py). kserve is imported only after the command
line is read: importing it parses sys.argv as its model server's flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import numpy as np

TIMEOUT_S = 120


def request(model: str, x: np.ndarray, typed: bool = False) -> Any:
    """An infer request of `x`: raw bytes (binary data over REST), or typed values (a list: fp32_contents)."""
    from kserve import InferInput, InferRequest

    return InferRequest(model, [InferInput("pixel_values", list(x.shape), "FP32", x.ravel().tolist() if typed else x)])


async def call(results: dict[str, Any], name: str, run: Callable[[], Awaitable[Any]]) -> Any:
    """Run one call, note whether it answered as expected (a truthy answer), and return the answer (None if it
    raised)."""
    try:
        answer = await run()
    except Exception as e:  # the table reports any failure of the client's call, whatever it raised
        results[name] = {"ok": False, "detail": f"{type(e).__name__}: {e}"[:300]}
        return None
    results[name] = {"ok": answer is not None and answer is not False, "detail": ""}
    return answer


def logits_of(response: Any) -> np.ndarray:
    return response.outputs[0].as_numpy()


async def grpc_calls(address: str, model: str, x: np.ndarray) -> dict[str, Any]:
    from kserve import InferenceGRPCClient

    results: dict[str, Any] = {}
    client = InferenceGRPCClient(address, timeout=TIMEOUT_S)
    try:
        await call(results, "live", client.is_server_live)
        await call(results, "ready", client.is_server_ready)
        await call(results, "model_ready", lambda: client.is_model_ready(model))
        raw = await call(results, "infer", lambda: client.infer(request(model, x)))
        typed = await call(results, "infer_typed", lambda: client.infer(request(model, x, typed=True)))
        results["logits"] = logits_of(raw).tolist() if raw else None
        if raw and typed and not np.array_equal(logits_of(raw), logits_of(typed)):
            results["infer_typed"] = {"ok": False, "detail": "typed contents gave other logits than raw bytes"}
        try:
            await client.infer(request("no-such-model", x))
            results["unknown_model"] = "OK"
        except grpc.RpcError as e:
            results["unknown_model"] = e.code().name
    finally:
        await client.close()
    return results


async def rest_calls(url: str, model: str, x: np.ndarray) -> dict[str, Any]:
    from kserve import InferenceRESTClient, RESTConfig

    results: dict[str, Any] = {}
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=TIMEOUT_S, retries=0))
    try:
        await call(results, "live", lambda: client.is_server_live(url))
        await call(results, "ready", lambda: client.is_server_ready(url))
        await call(results, "model_ready", lambda: client.is_model_ready(url, model))
        raw = await call(results, "infer", lambda: client.infer(url, request(model, x), model))
        results["logits"] = logits_of(raw).tolist() if raw else None
        try:
            await client.infer(url, request("no-such-model", x), "no-such-model")
            results["unknown_model"] = "200"
        except httpx.HTTPStatusError as e:
            results["unknown_model"] = str(e.response.status_code)
    finally:
        await client.close()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.kserve_client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grpc", required=True, help="the server's gRPC address, HOST:PORT")
    p.add_argument("--http", required=True, help="the server's URL, http://HOST:PORT")
    p.add_argument("--model", required=True, help="an entry id")
    p.add_argument("--input", required=True, help="a .npy of preprocessed images, (N, C, H, W) float32")
    args = p.parse_args(argv)
    sys.argv[1:] = []  # kserve parses the command line when first imported (its model server's flags): not ours
    x = np.load(args.input).astype(np.float32)
    print(json.dumps({"grpc": asyncio.run(grpc_calls(args.grpc, args.model, x)),
                      "rest": asyncio.run(rest_calls(args.http, args.model, x))}))


if __name__ == "__main__":
    main()
