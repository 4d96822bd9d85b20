"""Helpers for the serving tests: guest sources, models, wws folders, a real server in a thread, HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web

from wasminfer_runtime.config import RuntimeConfig
from wasminfer_runtime.server import start_server, with_overrides

ROOT = Path(__file__).resolve().parents[2]


def wasminfer_command() -> list[str]:
    """The `wasminfer` command as installed beside this Python."""
    exe = Path(sys.executable).parent / "wasminfer"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "wasminfer_runtime"]

HOSTILE = ["hostile_loop", "hostile_memory", "hostile_trap", "hostile_badjson", "hostile_huge", "hostile_exit"]

# Source of every guest these tests use, by short name.
GUEST_SOURCES = {
    "hello": ROOT / "examples" / "hello.c",
    "greet": ROOT / "examples" / "api" / "[name].c",
    "nn_named": ROOT / "bench" / "guests" / "nn_named.c",
    "nn_load": ROOT / "tests" / "guests" / "nn_load.c",
    "wws_component": ROOT / "tests" / "guests" / "wws_component.c",
    **{name: ROOT / "tests" / "guests" / f"{name}.c" for name in HOSTILE},
    "hostile_sleep": ROOT / "tests" / "guests" / "hostile_sleep.c",
    "write_file": ROOT / "tests" / "guests" / "write_file.c",
    "tiny_runtime": ROOT / "tests" / "guests" / "tiny_runtime.c",
    "http_fetch": ROOT / "tests" / "guests" / "http_fetch.c",
    "kv_counter": ROOT / "tests" / "guests" / "kv_counter.c",
    "sdk_kv": ROOT / "tests" / "guests" / "sdk_kv.c",
    "wws_mirror": ROOT / "tests" / "guests" / "wws_mirror.c",
}


# -- models --------------------------------------------------------------------------------------


def write_matmul_chain(folder: Path, layers: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """An ONNX model y = x @ W0 @ W1 ... (random weights); returns the weights for a reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(layers)]
    nodes, inits, prev = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return weights


def guest_input_pattern(elems: int) -> np.ndarray:
    """The input nn_named.c makes up when the request body is not a tensor."""
    return (np.arange(elems) % 251).astype(np.float32) / np.float32(251.0)


# -- wws folders ---------------------------------------------------------------------------------


def put_worker(site: Path, rel: str, module: Path, toml: str | None = None) -> Path:
    """Place a module in a wws folder at `rel` (e.g. "api/[id].wasm"), with an optional TOML."""
    dest = site / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module, dest)
    if toml is not None:
        dest.with_suffix(".toml").write_text(toml)
    return dest


# -- a real server on loopback, in a thread ------------------------------------------------------


class ServerThread:
    """`wasminfer serve` in-process: its own event loop in a thread, HTTP on 127.0.0.1:<free port>."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = with_overrides(cfg, host="127.0.0.1", port=0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> ServerThread:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(start_server(self.cfg, threads=8), self.loop)
        self.runner, self.url = fut.result(timeout=60)
        return self

    def stop(self) -> None:
        if not self.thread.is_alive():  # stopped already (a test may stop it before its fixture does)
            return
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout: float = 30, chunked: bool = False,
) -> Reply:
    """One real HTTP request (a fresh connection each time, like an outside client)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if chunked:
            conn.request(method, path, body=iter([body or b""]), headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def wait_loaded(url: str, timeout: float = 30) -> Reply:
    """/readyz once nothing is loading any more (well or badly)."""
    deadline = time.monotonic() + timeout
    while request(url + "/readyz").json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return request(url + "/readyz")


def wait_ready(url: str, timeout: float = 60) -> Reply:
    deadline = time.monotonic() + timeout
    reply = request(url + "/readyz")
    while reply.status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        reply = request(url + "/readyz")
    assert reply.status == 200, f"server not ready after {timeout} s: {reply.body.decode()}"
    return reply


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when the labelled series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = request(url + "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
