"""The wws key/value store: `[data.kv] namespace` in a worker's TOML (runtime.yaml: `kv`), one
in-memory store per namespace, read into the request's `kv` and replaced by the response's."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wasminfer_runtime.config import ConfigError, load_runtime_config, parse_runtime_config
from wasminfer_runtime.protocol import ProtocolError, decode_response, encode_request
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_ready


def _kv(namespace: str, extra: str = "") -> str:
    return f'[data]\n[data.kv]\nnamespace = "{namespace}"\n{extra}'


def _count(url: str, body: bytes | None = None) -> str:
    reply = request(url, method="POST" if body else "GET", body=body)
    assert reply.status == 200, reply.body
    return reply.body.decode()


def test_namespaces_are_shared_by_name_isolated_otherwise_and_off_without_data_kv(
    guests: dict[str, Path], tmp_path: Path
) -> None:
    module = guests["kv_counter"]
    put_worker(tmp_path, "counter.wasm", module, _kv("shared"))
    put_worker(tmp_path, "api/other.wasm", module, _kv("shared"))
    put_worker(tmp_path, "alone.wasm", module, _kv("alone"))
    put_worker(tmp_path, "plain.wasm", module)  # no [data.kv]: no store at all
    with ServerThread(load_wws_folder(tmp_path)) as server:
        wait_ready(server.url)
        u = server.url
        assert _count(u + "/counter") == "counter=0 keys=0"
        assert _count(u + "/counter") == "counter=1 keys=1"
        assert _count(u + "/api/other") == "counter=2 keys=1"  # another worker, the same namespace
        assert _count(u + "/counter") == "counter=3 keys=1"
        assert _count(u + "/alone") == "counter=0 keys=0"  # another namespace starts empty
        assert _count(u + "/alone") == "counter=1 keys=1"
        # Without [data.kv] a worker sees {} and what it returns goes nowhere.
        assert _count(u + "/plain") == "counter=0 keys=0"
        assert _count(u + "/plain") == "counter=0 keys=0"
        assert _count(u + "/counter") == "counter=4 keys=1"
        assert _count(u + "/alone") == "counter=2 keys=1"


def test_refused_writes_keep_the_state_and_other_requests_are_served(
    guests: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # A runtime.yaml's workers (JSON errors; a wws folder gets wws's own error page).
    module = str(guests["kv_counter"])
    cfg = parse_runtime_config({"workers": [
        {"name": "w", "module": module, "route": "/w", "kv": {"namespace": "n"}, "limits": {"max_kv_bytes": 1000}},
        {"name": "v", "module": module, "route": "/v", "kv": {"namespace": "n"}},
    ]}, "test")
    with ServerThread(cfg) as server:
        wait_ready(server.url)
        u = server.url
        assert _count(u + "/w") == "counter=0 keys=0"
        # A store of 5000 bytes from the worker limited to 1000, beside a good request.
        with ThreadPoolExecutor(2) as pool, caplog.at_level(logging.WARNING):
            big = pool.submit(request, u + "/w", "POST", b"pad 5000")
            good = pool.submit(request, u + "/v")
            bad, ok = big.result(), good.result()
        assert ok.status == 200 and ok.body == b"counter=1 keys=1", ok.body
        assert bad.status == 500, bad.body
        doc = bad.json()
        assert (doc["error"], doc["worker"]) == ("kv_too_large", "w"), doc
        # "counter", its one-digit value, "pad" and 5000 x.
        assert "5011 bytes" in doc["message"] and "limit of 1000 bytes" in doc["message"], doc
        assert any("worker 'w'" in r.getMessage() and "limit of 1000 bytes (limits.max_kv_bytes)" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        # The other worker of the namespace has the default limit (1 MiB).
        assert _count(u + "/v", b"pad 5000") == "counter=2 keys=1"
        assert _count(u + "/w") == "counter=3 keys=2"
        # A response without kv, or with a value that is not a string, is invalid and writes nothing.
        for body, message in ((b"nokv", "returned no 'kv'"), (b"badkv", "kv 'counter' must be a string")):
            reply = request(u + "/w", "POST", body)
            assert reply.status == 500 and reply.json()["error"] == "invalid_response", reply.body
            assert message in reply.json()["message"], reply.body
        assert _count(u + "/w") == "counter=4 keys=1"


def test_protocol_carries_kv_both_ways() -> None:
    doc = json.loads(encode_request(url="http://h/", method="GET", headers=[], body=b"", params={},
                                    kv={"a": "1", "é": "ü"}))
    assert doc["kv"] == {"a": "1", "é": "ü"}
    assert json.loads(encode_request(url="http://h/", method="GET", headers=[], body=b"", params={}))["kv"] == {}
    assert decode_response(b'{"data": "", "kv": {"a": "1"}}').kv == {"a": "1"}
    assert decode_response(b'{"data": ""}').kv is None
    assert decode_response(b'{"data": "", "kv": null}').kv is None
    for raw, message in ((b'{"kv": []}', "'kv' must be an object of strings, got list"),
                         (b'{"kv": {"a": 1}}', "kv 'a' must be a string, got int"),
                         (b'{"kv": {"a": null}}', "kv 'a' must be a string, got NoneType")):
        with pytest.raises(ProtocolError, match=message):
            decode_response(raw)


def test_data_kv_in_a_worker_toml(tmp_path: Path) -> None:
    (tmp_path / "a.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (tmp_path / "a.toml").write_text(_kv("todos", "[limits]\nmax_kv_bytes = 4096\n"))
    (tmp_path / "b.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (tmp_path / "b.toml").write_text("[data]\n")  # a [data] table without kv grants no store, as in wws
    cfg = load_wws_folder(tmp_path)
    assert cfg.worker_errors == {}
    a, b = sorted(cfg.workers, key=lambda w: w.name)
    assert a.kv is not None and a.kv.namespace == "todos" and a.limits.max_kv_bytes == 4096
    assert b.kv is None and b.limits.max_kv_bytes == 1024 * 1024


BAD_KV = [
    ("no namespace", "[data.kv]\n", "data.kv.namespace: Field required"),
    ("empty namespace", '[data.kv]\nnamespace = ""\n', "data.kv.namespace: String should have at least 1 character"),
    ("namespace not a string", "[data.kv]\nnamespace = 5\n", "data.kv.namespace: Input should be a valid string"),
    ("kv not a table", '[data]\nkv = "todos"\n', "data.kv: Input should be a valid dictionary"),
    ("unknown key", '[data.kv]\nnamespace = "x"\nttl = 5\n', "data.kv.ttl: Extra inputs are not permitted"),
    ("negative limit", '[limits]\nmax_kv_bytes = -1\n', "limits.max_kv_bytes: Input should be greater than or equal to 0"),
]


@pytest.mark.parametrize(("toml", "message"), [c[1:] for c in BAD_KV], ids=[c[0] for c in BAD_KV])
def test_bad_data_kv_names_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "w.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (tmp_path / "w.toml").write_text(toml)
    text = load_wws_folder(tmp_path).worker_errors["w"]
    assert str((tmp_path / "w.toml").resolve()) in text and message in text, text


def test_runtime_yaml_kv(tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    worker = "workers:\n  - {name: w, module: w.wasm, route: /w, kv: %s}\n"
    path.write_text(worker % "{namespace: todos}")
    (w,) = load_runtime_config(path).workers
    assert w.kv is not None and w.kv.namespace == "todos"
    path.write_text(worker % "{namespace: ''}")
    with pytest.raises(ConfigError, match=r"runtime\.yaml: invalid configuration\n  workers\.0\.kv\.namespace: String"):
        load_runtime_config(path)
