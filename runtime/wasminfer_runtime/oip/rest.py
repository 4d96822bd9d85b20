"""The Open Inference Protocol over HTTP/REST (aiohttp), with the binary tensor data extension.

A body whose JSON header is followed by raw tensor bytes says so with the
Inference-Header-Content-Length header, as Triton's clients send by default; the answer is built the
same way when any output is asked for in binary. gzip and deflate request bodies are inflated by
aiohttp, and answers are compressed when the client accepts it. Errors are {"error": message}.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.oip.dataplane import DataPlane
from wasminfer_runtime.oip.types import HEADER_LENGTH, OipError, parse_rest_request, rest_response

log = logging.getLogger(__name__)

PLANE_KEY = web.AppKey("plane", DataPlane)
METRICS_KEY = web.AppKey("metrics", Metrics)
MAX_BYTES_KEY = web.AppKey("max_request_bytes", int)


class Gate:
    """At most `limit` inference requests at a time, from reading the body to the answer: bodies may
    be large, so a flood of them is answered 503 before it is read, not held in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


GATE_KEY = web.AppKey("gate", Gate)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(doc: Any, status: int = 200) -> web.Response:
    """JSON with the bare `application/json` type: KServe's client reads an error's message only then."""
    return web.Response(body=json.dumps(doc, separators=(",", ":")).encode(), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OipError as err:
        return error(err.status, err.message)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body over {request.app[MAX_BYTES_KEY]} bytes (--max-request-bytes)")
    except web.HTTPException as err:  # no such path, or a method the path does not take
        if err.status < 400:
            raise
        return error(err.status, f"{request.method} {request.path}: {err.reason}")


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


async def live(request: web.Request) -> web.Response:
    ok = request.app[PLANE_KEY].live()
    return json_response({"live": ok}, status=200 if ok else 503)


async def ready(request: web.Request) -> web.Response:
    ok = request.app[PLANE_KEY].ready()
    return json_response({"ready": ok}, status=200 if ok else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[PLANE_KEY].server_metadata())


async def model_metadata(request: web.Request) -> web.Response:
    return json_response(request.app[PLANE_KEY].model_metadata(*_model(request)))


async def model_ready(request: web.Request) -> web.Response:
    model, version = _model(request)
    ok = request.app[PLANE_KEY].model_ready(model, version)
    return json_response({"name": model, "ready": ok}, status=200 if ok else 503)


async def infer(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE_KEY]
    if gate.active >= gate.limit:
        busy = error(503, f"the server already has {gate.active} inference request(s) in hand (--max-requests)")
        busy.headers["Retry-After"] = "1"
        return busy
    gate.active += 1
    try:
        return await _infer(request)
    finally:
        gate.active -= 1


async def _infer(request: web.Request) -> web.StreamResponse:
    model, version = _model(request)
    body = await request.read()
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        header, binary = body, None
    else:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise OipError(400, f"{HEADER_LENGTH} {length!r} is not a length within the {len(body)}-byte body")
        view = memoryview(body)
        header, binary = view[:n].tobytes(), view[n:]
    req = parse_rest_request(model, version, header, binary)
    resp = await request.app[PLANE_KEY].infer(req)
    payload, json_length = rest_response(resp)
    out = web.Response(body=payload, content_type="application/octet-stream" if json_length is not None else "application/json")
    if json_length is not None:
        out.headers[HEADER_LENGTH] = str(json_length)
    out.enable_compression()  # aiohttp compresses only what the request's Accept-Encoding takes
    return out


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(plane: DataPlane, metrics_: Metrics, max_request_bytes: int, max_requests: int) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=max_request_bytes)
    app[PLANE_KEY] = plane
    app[METRICS_KEY] = metrics_
    app[MAX_BYTES_KEY] = max_request_bytes
    app[GATE_KEY] = Gate(max_requests)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix, model_metadata)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", infer)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
