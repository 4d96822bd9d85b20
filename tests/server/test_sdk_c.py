"""The C guest SDK (sdk/c/wws.h): request parsing and response writing, run in real wasmtime."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasminfer_runtime.config import WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.executor import WorkerExecutor
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.protocol import decode_response


@pytest.fixture(scope="module")
def hello(guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerExecutor]:
    metrics = Metrics()
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    worker = WorkerConfig(name="hello", module=guests["hello"], route="/hello", vars={"GREETING": "sdk"})
    yield WorkerExecutor(engine, ModelRegistry(metrics), worker)
    engine.close()


def _run(executor: WorkerExecutor, stdin: bytes) -> tuple[int, Any]:
    inv = executor.invoke(stdin)
    assert inv.outcome == "ok", inv.message
    out = decode_response(inv.stdout)  # the SDK always writes a valid wws response
    return out.status, json.loads(out.body)


def test_fields_escapes_and_case_insensitive_headers(hello: WorkerExecutor) -> None:
    stdin = (
        b'{"url":"https://example.test:8443/a/b?c=d#frag","method":"PUT",'
        b'"headers":{"User-Agent":"ua \\"quoted\\" \\\\ \\u00e9","x-n":"1"},'
        b'"body":"\\u00e9\\ud83d\\ude00 \\ud800 tab\\tnl\\n\\u0000end","kv":{"k":[1,{"deep":null},true,-2.5e3]},'
        b'"params":{"id":"\\u2713","n":7,"skip":null}}'
    )
    status, doc = _run(hello, stdin)
    assert status == 200
    assert doc["method"] == "PUT"
    assert doc["path"] == "/a/b" and doc["url"] == "https://example.test:8443/a/b?c=d#frag"
    assert doc["user_agent"] == 'ua "quoted" \\ é'
    # Lone surrogates become U+FFFD; a NUL inside the body is kept (lengths, not C strings).
    assert doc["body"] == "é😀 \ufffd tab\tnl\n\u0000end"
    assert doc["body_bytes"] == len("é😀 \ufffd tab\tnl\n\u0000end".encode())
    assert doc["params"] == {"id": "✓"}  # non-string params are skipped
    assert doc["message"] == "sdk"


def test_missing_fields_have_defaults(hello: WorkerExecutor) -> None:
    status, doc = _run(hello, b'  {}  ')
    assert status == 200
    assert (doc["method"], doc["url"], doc["path"], doc["body"], doc["params"]) == ("GET", "/", "/", "", {})


def test_base64_body_is_decoded(hello: WorkerExecutor) -> None:
    payload = bytes(range(32, 127)) * 3 + b"\x00"
    stdin = json.dumps({"body": base64.b64encode(payload).decode(), "base64": True}).encode()
    _, doc = _run(hello, stdin)
    assert doc["body_bytes"] == len(payload)
    assert doc["body"] == payload.decode()


def test_large_body(hello: WorkerExecutor) -> None:
    body = "x" * (3 * 1024 * 1024)
    _, doc = _run(hello, json.dumps({"body": body}).encode())
    assert doc["body_bytes"] == len(body)


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"not json",
        b"[]",
        b'{"method": "GET"',
        b'{"method": "GET"} trailing',
        b'{"method": "GE\x01T"}',
        b'{"body": "\\x41"}',
        b'{"body": "\\u12"}',
        b'{"body": "abc", "base64": true}',
        b'{"body": "ab=c", "base64": true}',
        b'{"kv": ' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"headers": {"a": "b",}}',
    ],
)
def test_malformed_requests_get_a_400_not_a_crash(hello: WorkerExecutor, stdin: bytes) -> None:
    status, doc = _run(hello, stdin)
    assert status == 400 and "not a wws request" in doc["error"]


def test_nesting_within_the_limit_is_fine(hello: WorkerExecutor) -> None:
    status, _ = _run(hello, b'{"extra": ' + b"[" * 60 + b"]" * 60 + b', "method": "POST"}')
    assert status == 200


def test_the_store_is_returned_whole_with_the_workers_changes(
    guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    metrics = Metrics()
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    try:
        worker = WorkerConfig(name="kv", module=guests["sdk_kv"], route="/kv")
        executor = WorkerExecutor(engine, ModelRegistry(metrics), worker)
        stdin = b'{"url":"/kv","method":"GET","headers":{},"body":"","kv":{"visits":"41","keep":"x\\"y","drop":"1"},"params":{}}'
        inv = executor.invoke(stdin)
        assert inv.outcome == "ok", inv.message
        out = decode_response(inv.stdout)
        assert out.body == b"41"
        assert out.kv == {"visits": "42", "keep": 'x"y'}  # untouched keys kept, "drop" removed
        inv = executor.invoke(b'{"url":"/kv","method":"GET","headers":{},"body":"","kv":{},"params":{}}')
        assert decode_response(inv.stdout).kv == {"visits": "1"}
    finally:
        engine.close()


def test_a_worker_that_ignores_the_store_returns_it_unchanged(hello: WorkerExecutor) -> None:
    inv = hello.invoke(b'{"url":"/hello","method":"GET","headers":{},"body":"","kv":{"a":"1","b":""},"params":{}}')
    assert inv.outcome == "ok", inv.message
    assert decode_response(inv.stdout).kv == {"a": "1", "b": ""}
