"""The remote-model client against model servers that answer differently from ours: chunked bodies,
connections closed after each answer, an answer that breaks off, refusals. A small aiohttp server
stands in for them (a real HTTP server, on loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from wasminfer_runtime.backends.base import BackendError, ElementType, InvalidTensor
from wasminfer_runtime.config import ModelConfig
from wasminfer_runtime.oip.client import RemoteModelGraph

META = {"name": "double", "versions": ["1"], "platform": "x",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}  # fmt: skip


class Server:
    """Answers for model `double`: y = 2x, in the style `mode` asks for."""

    def __init__(self) -> None:
        self.mode = "plain"
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "double", "ready": True})

    async def meta(self, request: web.Request) -> web.Response:
        return web.json_response(META)

    async def infer(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        n = int(request.headers["Inference-Header-Content-Length"])
        doc = json.loads(body[:n])
        (inp,) = doc["inputs"]
        x = np.frombuffer(body[n:], dtype="<f4")
        if self.mode == "refuse":
            return web.json_response({"error": "input 'x': values must be finite"}, status=400)
        y = (2 * x).astype("<f4").tobytes()
        if self.mode == "huge":  # far more than the model's outputs may take
            y = y * 65536
            inp["shape"] = [inp["shape"][0] * 65536, 4]
        header = json.dumps({"model_name": "double", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": inp["shape"], "parameters": {"binary_data_size": len(y)}}]}).encode()
        headers = {"Inference-Header-Content-Length": str(len(header))}
        if self.mode == "close":
            headers["Connection"] = "close"
        if self.mode in ("chunked", "broken"):
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(header)
            if self.mode == "broken":
                assert request.transport is not None
                request.transport.close()  # the answer breaks off in the middle
                return resp
            for i in range(0, len(y), 7):  # many small chunks
                await resp.write(y[i : i + 7])
            await resp.write_eof()
            return resp
        return web.Response(body=header + y, headers=headers, content_type="application/octet-stream")

    def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/models/double/ready", self.ready)
        app.router.add_get("/v2/models/double", self.meta)
        app.router.add_post("/v2/models/double/infer", self.infer)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def up() -> None:
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = self.runner.addresses[0][1]

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def stop(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def graph(server: Server) -> Iterator[RemoteModelGraph]:
    cfg = ModelConfig.model_validate({"name": "double", "format": "onnx", "remote": {"url": f"http://127.0.0.1:{server.port}", "timeout_seconds": 5}})
    g = RemoteModelGraph(cfg)
    g.wait_ready()
    yield g
    g.close()


def run(graph: RemoteModelGraph, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    import ctypes

    ctx = graph.init_context()
    try:
        ctx.set_input(0, ElementType.f32, tuple(x.shape), int(x.ctypes.data), x.nbytes)
        ctx.compute()
        addr, n = ctx.output(0)
        return np.frombuffer(ctypes.string_at(addr, n), dtype="<f4").copy(), ctx.output_dims(0)
    finally:
        ctx.close()


@pytest.mark.parametrize("mode", ["plain", "chunked", "close"])
def test_answers_however_the_server_frames_them(server: Server, graph: RemoteModelGraph, mode: str) -> None:
    server.mode = mode
    for batch in (1, 3, 2):  # several on one connection (or one each, when the server closes them)
        x = np.arange(4 * batch, dtype=np.float32).reshape(batch, 4)
        y, dims = run(graph, x)
        assert dims == (batch, 4) and y.tolist() == (2 * x).ravel().tolist()


def test_checks_happen_before_anything_is_sent(server: Server, graph: RemoteModelGraph) -> None:
    server.mode = "plain"
    before = server.requests
    ctx = graph.init_context()
    try:
        x = np.zeros((1, 5), dtype=np.float32)
        with pytest.raises(InvalidTensor, match="dimension 1 is 5; the model fixes it at 4"):
            ctx.set_input(0, ElementType.f32, (1, 5), int(x.ctypes.data), x.nbytes)
        with pytest.raises(InvalidTensor, match="takes f32, not i64"):
            ctx.set_input(0, ElementType.i64, (1, 4), int(x.ctypes.data), 32)
        with pytest.raises(InvalidTensor, match="never set"):
            ctx.compute()
    finally:
        ctx.close()
    assert server.requests == before


def test_refusals_and_broken_answers_are_errors_with_the_reason(server: Server, graph: RemoteModelGraph) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    server.mode = "refuse"
    with pytest.raises(InvalidTensor, match="answered 400: input 'x': values must be finite"):
        run(graph, x)
    server.mode = "broken"
    before = server.requests
    with pytest.raises(BackendError, match="closed the connection before answering"):
        run(graph, x)
    assert server.requests == before + 1, "sent once, not again"
    server.mode = "plain"
    assert run(graph, x)[0].tolist() == [2.0] * 4, "the next call connects again"


def test_an_answer_larger_than_the_outputs_may_be_is_refused_unread(server: Server) -> None:
    cfg = ModelConfig.model_validate({"name": "double", "format": "onnx", "options": {"max_output_bytes": 1024},
                                      "remote": {"url": f"http://127.0.0.1:{server.port}", "timeout_seconds": 5}})  # fmt: skip
    g = RemoteModelGraph(cfg)
    g.wait_ready()
    x = np.ones((1, 4), dtype=np.float32)
    try:
        server.mode = "huge"
        with pytest.raises(BackendError, match=r"an answer of 1048\d+ bytes, more than the 66560 it may take"):
            run(g, x)
        server.mode = "plain"
        assert run(g, x)[0].tolist() == [2.0] * 4
    finally:
        server.mode = "plain"
        g.close()


def test_an_unreachable_server_is_a_clear_error(server: Server) -> None:
    cfg = ModelConfig.model_validate({"name": "double", "format": "onnx", "remote": {"url": "http://127.0.0.1:9", "timeout_seconds": 1}})
    g = RemoteModelGraph(cfg)
    stop = threading.Event()
    stop.set()
    with pytest.raises(BackendError, match="stopped while waiting"):
        g.wait_ready(stop)
    meta: Any = g.transports[0].metadata_if_ready  # the reason it waits
    with pytest.raises(BackendError, match="unreachable"):
        meta(1.0)
