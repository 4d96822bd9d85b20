"""Outbound HTTP (wws's `http` import): a C guest calls it through the real server, against an
upstream aiohttp server on 127.0.0.1 started here."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from wasminfer_runtime.config import ConfigError, HttpRequestsConfig, load_runtime_config
from wasminfer_runtime.http_requests import HttpError, Policy, Refused
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_loaded

FETCH_TOML = """
[features.http_requests]
allowed_hosts = ["127.0.0.1"]
allowed_methods = ["GET", "POST"]
allow_http = true
timeout_seconds = 0.5
max_response_body_bytes = 1000
"""
STRICT_TOML = """
[features.http_requests]
allowed_hosts = ["127.0.0.1"]
"""
SHORT_TOML = """
[features.http_requests]
allowed_hosts = ["127.0.0.1"]
allow_http = true
[limits]
timeout_seconds = 0.5
"""
SLOW_SECONDS = 3.0


@dataclass
class Upstream:
    """An HTTP server the workers call; it records the paths it was asked for."""

    url: str = ""
    port: int = 0
    seen: list[str] = field(default_factory=list)
    slow_started: threading.Event = field(default_factory=threading.Event)


def _app(up: Upstream) -> web.Application:
    async def record(req: web.Request) -> None:
        up.seen.append(f"{req.method} {req.path}")

    async def hello(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=203, text="hello from upstream", headers={
            "X-Upstream": "yes", "X-Echo": req.headers.get("X-Test", "-"),
            "X-Agent": req.headers.get("User-Agent", "none"),
        })

    async def echo(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=201, body=req.method.encode() + b":" + await req.read())

    async def redirect(req: web.Request) -> web.Response:
        await record(req)
        n = int(req.match_info["n"])
        raise web.HTTPFound(f"/redirect/{n - 1}" if n > 1 else "/hello")

    async def loop(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPFound("/loop")

    async def away(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPFound(f"http://localhost:{up.port}/hello")

    async def see_other(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPSeeOther("/echo")

    async def big(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(body=b"x" * 2000)

    async def slow(req: web.Request) -> web.Response:
        await record(req)
        up.slow_started.set()
        await asyncio.sleep(SLOW_SECONDS)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/away", away)
    app.router.add_post("/see-other", see_other)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-upstream", daemon=True)
    thread.start()
    runner = web.AppRunner(_app(up), shutdown_timeout=0.2, handler_cancellation=True)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        up.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    up.url = f"http://127.0.0.1:{up.port}"
    yield up
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[str]:
    site = tmp_path_factory.mktemp("site")
    put_worker(site, "fetch.wasm", guests["http_fetch"], FETCH_TOML)
    put_worker(site, "strict.wasm", guests["http_fetch"], STRICT_TOML)
    put_worker(site, "short.wasm", guests["http_fetch"], SHORT_TOML)
    put_worker(site, "denied.wasm", guests["http_fetch"])  # no grant
    put_worker(site, "hello.wasm", guests["hello"])
    with ServerThread(load_wws_folder(site)) as srv:
        wait_loaded(srv.url)
        yield srv.url


def fetch(server: str, url: str, worker: str = "fetch", method: str = "GET", body: bytes | None = None,
          **headers: str) -> Any:
    sent = {"x-url": url, "x-method": method, **{k.replace("_", "-"): v for k, v in headers.items()}}
    reply = request(f"{server}/{worker}", "POST" if body else "GET", body=body, headers=sent)
    assert reply.status == 200, reply.body
    return reply.json()


def refused(doc: Any, error: HttpError) -> str:
    assert doc["ok"] is False and doc["error"] == int(error), doc
    return str(doc["message"])


def test_an_allowed_get_returns_status_headers_and_body(server: str, upstream: Upstream) -> None:
    doc = fetch(server, upstream.url + "/hello", x_send_header="X-Test: 42")
    assert doc["ok"] is True and doc["status"] == 203 and doc["has_body"] is True
    assert doc["body"] == "hello from upstream"
    headers = dict(doc["headers"])
    assert headers["x-upstream"] == "yes" and headers["x-echo"] == "42"
    assert headers["x-agent"] == "none"  # as reqwest, which wws uses: no User-Agent
    assert headers["content-length"] == "19"


def test_a_post_sends_its_body(server: str, upstream: Upstream) -> None:
    doc = fetch(server, upstream.url + "/echo", method="POST", body=b"payload \x01 bytes")
    assert doc["ok"] is True and doc["status"] == 201
    assert doc["body"] == "POST:payload \x01 bytes"


def test_a_host_not_allowed_is_refused_before_any_request(server: str, upstream: Upstream) -> None:
    before = len(upstream.seen)
    message = refused(fetch(server, f"http://localhost:{upstream.port}/hello"), HttpError.not_allowed)
    assert "'localhost'" in message and "allowed_hosts" in message
    assert len(upstream.seen) == before


def test_a_method_not_allowed_is_refused(server: str, upstream: Upstream) -> None:
    before = len(upstream.seen)
    message = refused(fetch(server, upstream.url + "/echo", method="PUT"), HttpError.not_allowed)
    assert "PUT" in message and "allowed_methods" in message
    assert len(upstream.seen) == before


def test_http_is_refused_without_allow_http(server: str, upstream: Upstream) -> None:
    message = refused(fetch(server, upstream.url + "/hello", worker="strict"), HttpError.not_allowed)
    assert "allow_http" in message
    # Not a URL at all: invalid-request.
    refused(fetch(server, "/hello"), HttpError.invalid_request)


def test_redirects_are_followed_up_to_a_loop(server: str, upstream: Upstream) -> None:
    doc = fetch(server, upstream.url + "/redirect/3")
    assert doc["ok"] is True and doc["status"] == 203 and doc["body"] == "hello from upstream"
    assert upstream.seen[-4:] == ["GET /redirect/3", "GET /redirect/2", "GET /redirect/1", "GET /hello"]

    before = len(upstream.seen)
    refused(fetch(server, upstream.url + "/loop"), HttpError.redirect_loop)
    assert upstream.seen[before:] == ["GET /loop"] * 10  # 9 redirects followed, the 10th refused

    # A redirect answers a POST with a GET of the new place (303), as reqwest does.
    doc = fetch(server, upstream.url + "/see-other", method="POST", body=b"dropped")
    assert doc["ok"] is True and doc["body"] == "GET:"

    # Every hop passes the worker's checks: a redirect to a host not allowed is refused.
    before = len(upstream.seen)
    message = refused(fetch(server, upstream.url + "/away"), HttpError.not_allowed)
    assert "'localhost'" in message
    assert upstream.seen[before:] == ["GET /away"]


def test_a_response_over_the_cap_is_refused(server: str, upstream: Upstream) -> None:
    message = refused(fetch(server, upstream.url + "/big"), HttpError.invalid_response_body)
    assert "1000" in message


def test_a_slow_upstream_gets_the_timeout_error(server: str, upstream: Upstream) -> None:
    started = time.monotonic()
    message = refused(fetch(server, upstream.url + "/slow"), HttpError.timeout)
    assert "0.5 s" in message and time.monotonic() - started < SLOW_SECONDS


def test_the_worker_deadline_bounds_the_call(server: str, upstream: Upstream) -> None:
    started = time.monotonic()
    reply = request(f"{server}/short", headers={"x-url": upstream.url + "/slow"})
    assert reply.status == 504 and reply.json()["error"] == "timeout", reply.body
    assert time.monotonic() - started < SLOW_SECONDS


def test_a_worker_without_the_grant_loads_and_every_call_is_refused(server: str, upstream: Upstream) -> None:
    # As in wws, which links `http` for every module (its kits all import it): no host is allowed.
    before = len(upstream.seen)
    message = refused(fetch(server, upstream.url + "/hello", worker="denied"), HttpError.not_allowed)
    assert "'127.0.0.1'" in message and "allowed_hosts" in message
    assert len(upstream.seen) == before


def test_other_requests_are_served_while_a_call_waits(server: str, upstream: Upstream) -> None:
    upstream.slow_started.clear()
    answers: list[Any] = []
    waiting = threading.Thread(target=lambda: answers.append(fetch(server, upstream.url + "/slow")))
    waiting.start()
    try:
        assert upstream.slow_started.wait(10)
        reply = request(f"{server}/hello")
        assert reply.status == 200 and reply.json()["path"] == "/hello"
    finally:
        waiting.join(10)
    refused(answers[0], HttpError.timeout)


@pytest.mark.parametrize("how", ["uri-ptr", "ret-ptr", "utf8", "method"])
def test_a_guest_breaking_the_abi_traps_and_the_next_request_is_served(
    server: str, upstream: Upstream, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(upstream.seen)
    headers = {"x-url": upstream.url + "/hello", "x-hostile": how}
    if how == "method":
        headers["x-method"] = "9"
    with caplog.at_level(logging.WARNING, logger="wasminfer_runtime.server"):
        reply = request(f"{server}/fetch", headers=headers)
    assert reply.status == 500, reply.body
    assert "http send-http-request: " in caplog.text  # the log says why (the answer is wws's page)
    assert len(upstream.seen) == before  # nothing was sent
    assert fetch(server, upstream.url + "/hello")["ok"] is True


def test_config_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    put_worker(tmp_path, "w.wasm", _empty_module(tmp_path),
               '[features.http_requests]\nallowed_methods = ["get"]\n')
    cfg = load_wws_folder(tmp_path)
    why = cfg.worker_errors["w"]
    assert str(tmp_path / "w.toml") in why and "features.http_requests.allowed_methods" in why and "'get'" in why

    yaml_path = tmp_path / "runtime.yaml"
    yaml_path.write_text(json.dumps({"workers": [{"name": "w", "module": "w.wasm", "route": "/w",
                                                  "http_requests": {"allowed_hosts": "example.com"}}]}))
    with pytest.raises(ConfigError) as err:
        load_runtime_config(yaml_path)
    assert str(yaml_path) in str(err.value) and "workers.0.http_requests.allowed_hosts" in str(err.value)

    yaml_path.write_text(json.dumps({"workers": [{"name": "w", "module": "w.wasm", "route": "/w",
                                                  "http_requests": {"allowed_hosts": ["example.com"]}}]}))
    granted = load_runtime_config(yaml_path).workers[0].http_requests
    assert granted is not None and granted.allowed_hosts == ["example.com"] and granted.allow_http is False
    assert granted.allowed_methods == ["GET", "POST", "PUT", "PATCH", "DELETE"]  # wws's default


def _empty_module(folder: Path) -> Path:
    path = folder / "_empty.wasm"
    path.write_bytes(b"\0asm\x01\0\0\0")
    return path


@pytest.mark.parametrize(("allowed", "url"), [
    ("2001:0db8::1", "https://[2001:db8::1]/"),
    ("[2001:DB8::1]", "https://[2001:db8:0::1]/"),
    ("::ffff:10.0.0.1", "https://[::ffff:a00:1]/"),
    ("Example.COM", "https://example.com/"),
])
def test_allowed_hosts_match_whatever_way_an_address_is_written(allowed: str, url: str) -> None:
    Policy(HttpRequestsConfig(allowed_hosts=[allowed])).check(URL(url), "GET")  # raises Refused otherwise
    with pytest.raises(Refused):
        Policy(HttpRequestsConfig(allowed_hosts=[allowed])).check(URL("https://[2001:db8::2]/"), "GET")
