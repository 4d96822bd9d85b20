"""Real HTTP on loopback against a served wws folder: routing, the protocol, limits, hostile guests."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from wasminfer_runtime.server import with_overrides
from wasminfer_runtime.wws import load_wws_folder

from .support import HOSTILE, ServerThread, metric, put_worker, request, wait_ready

HOSTILE_LIMITS = "[limits]\ntimeout_seconds = 0.5\nmemory_mib = 32\n"

# What each hostile guest must get: HTTP status and error kind.
EXPECTED = {
    "hostile_loop": (504, "timeout"),
    "hostile_memory": (500, "memory"),
    "hostile_trap": (500, "trap"),
    "hostile_badjson": (500, "invalid_response"),
    "hostile_huge": (500, "memory"),  # output past the host's capture cap
    "hostile_exit": (500, "exit"),
}


@pytest.fixture(scope="module")
def site(guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    put_worker(root, "hello.wasm", guests["hello"], 'name = "hello"\n[vars]\nGREETING = "$SERVE_TEST_GREETING"\n')
    put_worker(root, "api/[name].wasm", guests["greet"], 'name = "greet"\n')
    put_worker(root, "items/[id].wasm", guests["hello"], 'name = "items"\n')
    put_worker(root, "files/[...path].wasm", guests["hello"], 'name = "files"\n')
    put_worker(root, "small.wasm", guests["hello"], 'name = "small"\n[limits]\nmax_body_bytes = 1024\n')
    for name in HOSTILE:
        # The flood needs time to write 64 MiB: it must meet the output cap, not the timeout.
        limits = HOSTILE_LIMITS.replace("0.5", "20") if name == "hostile_huge" else HOSTILE_LIMITS
        put_worker(root, f"hostile/{name.removeprefix('hostile_')}.wasm", guests[name], f'name = "{name}"\n{limits}')
    put_worker(root, "slow.wasm", guests["hostile_loop"], 'name = "slow"\n[limits]\ntimeout_seconds = 3\n')
    put_worker(root, "narrow.wasm", guests["hostile_loop"],
               'name = "narrow"\n[limits]\ntimeout_seconds = 3\nmax_concurrency = 1\nmax_queued = 1\n')
    public = root / "public"
    (public / "items").mkdir(parents=True)
    (public / "index.html").write_text("<h1>index</h1>")
    (public / "hello.html").write_text("static hello: shadowed by the /hello worker")
    (public / "items" / "special").mkdir()
    (public / "items" / "special" / "index.html").write_text("special item page")
    (public / "style.css").write_text("body{}")
    (public / ".secret").write_text("nope")
    # Links that lead out of public/, reached only through the fallbacks: a folder's index and
    # the `.html` of an extensionless path.
    outside = root / "private"
    outside.mkdir()
    (outside / "secret.html").write_text("SECRET outside public")
    (public / "leak").mkdir()
    (public / "leak" / "index.html").symlink_to(outside / "secret.html")
    (public / "about.html").symlink_to(outside / "secret.html")
    return root


@pytest.fixture(scope="module")
def url(site: Path) -> Iterator[str]:
    cfg = load_wws_folder(site, env={"SERVE_TEST_GREETING": "Hi from the host env"})
    with ServerThread(cfg) as server:
        wait_ready(server.url)
        yield server.url


def test_fixed_route_gets_the_wws_request(url: str) -> None:
    reply = request(url + "/hello?x=1&y=two", headers={"User-Agent": "serve-test/1"})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-worker"] == "hello"
    doc = reply.json()
    assert doc == {
        "message": "Hi from the host env",
        "method": "GET",
        "path": "/hello",
        "url": f"{url}/hello?x=1&y=two",
        "params": {},
        "user_agent": "serve-test/1",
        "body_bytes": 0,
        "body": "",
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_worker(url: str, method: str) -> None:
    reply = request(url + "/hello", method=method, body=b"payload" if method != "OPTIONS" else None)
    assert reply.status == 200, reply.body
    assert reply.json()["method"] == method


def test_dynamic_route_gets_params(url: str) -> None:
    reply = request(url + "/api/ada%20lovelace?shout=1")
    assert reply.status == 200, reply.body
    assert reply.body == b"HELLO, ADA LOVELACE!\n"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    doc = request(url + "/items/42/").json()
    assert doc["params"] == {"id": "42"} and doc["path"] == "/items/42"  # wws trims the slash


def test_a_catch_all_route_gets_the_rest_of_the_path(url: str) -> None:
    doc = request(url + "/files/a/b/c.txt").json()
    assert doc["params"] == {"path": "a/b/c.txt"}
    assert request(url + "/files/one").json()["params"] == {"path": "one"}
    assert request(url + "/files").status == 404  # a catch-all takes one segment or more, as in wws


def test_static_files_sit_between_fixed_and_dynamic_routes(url: str) -> None:
    # A fixed worker route beats public/hello.html ...
    assert request(url + "/hello").json()["method"] == "GET"
    # ... a static file beats a dynamic route (public/items/special/index.html vs items/[id].wasm) ...
    special = request(url + "/items/special")
    assert (special.status, special.body) == (200, b"special item page")
    # ... and a dynamic route takes the rest.
    assert request(url + "/items/other").json()["params"] == {"id": "other"}
    index = request(url + "/")
    assert (index.status, index.body) == (200, b"<h1>index</h1>")
    css = request(url + "/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    for hostile in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/.secret", "/x%00y", "/style.css%00"):
        reply = request(url + hostile)
        assert reply.status == 404 and b"nope" not in reply.body, hostile


def test_text_and_binary_bodies_reach_the_worker(url: str) -> None:
    text = "naïve ✓".encode()
    doc = request(url + "/hello", method="POST", body=text).json()
    assert (doc["body_bytes"], doc["body"]) == (len(text), "naïve ✓")
    binary = b"\x00\xff\xfeabc\x80"
    doc = request(url + "/hello", method="POST", body=binary).json()
    # Not UTF-8: "" as wws sends it (binary_body = "base64" opts in to the bytes, test_wws_details.py).
    assert (doc["body_bytes"], doc["body"]) == (0, "")


def test_body_over_the_limit_is_413(url: str) -> None:
    assert request(url + "/small", method="POST", body=b"x" * 1024).status == 200
    for chunked in (False, True):
        reply = request(url + "/small", method="POST", body=b"x" * 1025, chunked=chunked)
        assert reply.status == 413, (chunked, reply.body)
        doc = reply.json()
        assert doc["worker"] == "small" and doc["error"] == "body_too_large" and "1024" in doc["message"]
    assert request(url + "/small").status == 200


@pytest.fixture(scope="module")
def json_url(site: Path) -> Iterator[str]:
    """The same folder with our JSON errors (wws_compat off), which name the kind of failure."""
    cfg = with_overrides(load_wws_folder(site, env={"SERVE_TEST_GREETING": "x"}), wws_compat=False)
    with ServerThread(cfg) as server:
        wait_ready(server.url)
        yield server.url


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_guest_gets_its_error_and_the_next_request_is_served(url: str, json_url: str, name: str) -> None:
    status, kind = EXPECTED[name]
    path = f"/hostile/{name.removeprefix('hostile_')}"
    for _ in range(2):  # the worker is not poisoned by its own failure either
        reply = request(url + path, method="POST", body=b"{}")
        assert reply.status == status, reply.body[:300]
        if status == 500:  # wws's answer, and no header of ours: the reason is in the log
            assert reply.body == b"<p>There was an error running this function</p>"
            assert "x-wasminfer-error" not in reply.headers
        else:
            doc = reply.json()
            assert doc["worker"] == name and doc["error"] == kind and name in doc["message"], doc
        hello = request(url + "/hello")
        assert hello.status == 200 and hello.json()["path"] == "/hello"
    reply = request(json_url + path, method="POST", body=b"{}")
    assert (reply.status, reply.headers["x-wasminfer-error"], reply.json()["error"]) == (status, kind, kind)


def test_a_looping_guest_does_not_block_others(url: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        loops = [pool.submit(request, url + "/hostile/loop") for _ in range(2)]
        hellos = list(pool.map(lambda i: request(url + f"/api/n{i}"), range(20)))
        assert all(r.status == 200 for r in hellos)
        assert [r.body for r in hellos] == [f"Hello, n{i}!\n".encode() for i in range(20)]
        assert [f.result().status for f in loops] == [504, 504]


def test_unknown_path_is_wws_404(url: str) -> None:
    reply = request(url + "/nothing/here")
    assert (reply.status, reply.body) == (404, b"")
    assert "x-wasminfer-error" not in reply.headers and "content-type" not in reply.headers


def test_health_and_metrics_count_requests(url: str) -> None:
    assert request(url + "/healthz").json() == {"status": "alive"}
    ready = request(url + "/readyz")
    assert ready.status == 200 and ready.json()["ready"] is True
    before_ok = metric(url, "wasminfer_requests_total", worker="greet", status="200")
    before_trap = metric(url, "wasminfer_requests_total", worker="hostile_trap", status="500")
    before_hist = metric(url, "wasminfer_request_duration_seconds_count", worker="greet", status="200")
    for i in range(3):
        assert request(url + f"/api/m{i}").status == 200
    assert request(url + "/hostile/trap").status == 500
    assert metric(url, "wasminfer_requests_total", worker="greet", status="200") == before_ok + 3
    assert metric(url, "wasminfer_requests_total", worker="hostile_trap", status="500") == before_trap + 1
    assert metric(url, "wasminfer_request_duration_seconds_count", worker="greet", status="200") == before_hist + 3
    assert metric(url, "wasminfer_worker_ready", worker="greet") == 1.0
    text = request(url + "/metrics").body.decode()
    assert json.dumps("x") and "wasminfer_request_duration_seconds_bucket" in text



@pytest.mark.parametrize("path", ["/leak/", "/leak", "/about"])
def test_no_fallback_serves_a_file_through_a_link_out_of_public(url: str, path: str) -> None:
    reply = request(url + path)
    assert reply.status == 404 and b"SECRET" not in reply.body, (reply.status, reply.body[:200])


def _raw_request(url: str, raw: bytes) -> tuple[int, bytes]:
    """One request written byte for byte (http.client would refuse the bytes these tests send)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_header_that_is_not_utf8_gets_400_naming_it(url: str) -> None:
    status, body = _raw_request(url, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n")
    assert status == 400, body
    doc = json.loads(body)
    assert doc["error"] == "bad_request" and "x-name" in doc["message"].lower() and "UTF-8" in doc["message"]
    assert request(url + "/hello").status == 200


def test_a_path_that_is_not_utf8_is_served_as_written(url: str) -> None:
    """An escape that does not decode to UTF-8 stays as it was written (`%E9`), as text."""
    status, body = _raw_request(url, b"GET /api/caf%E9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"Hello, caf%E9!\n")
    assert request(url + "/api/ok").status == 200


def test_one_worker_never_takes_every_thread(url: str) -> None:
    """Eight slow requests on a pool of eight threads: the worker gets seven at most, so another
    worker's request is answered while all of them still run."""
    with ThreadPoolExecutor(9) as pool:
        slow = [pool.submit(request, url + "/slow") for _ in range(8)]
        time.sleep(0.5)  # all eight have arrived
        hello = request(url + "/hello")
        still_running = sum(not f.done() for f in slow)
        assert hello.status == 200
        assert still_running == 8, f"hello was answered only after {8 - still_running} slow request(s) ended"
        assert sorted(f.result().status for f in slow) == [504] * 8  # the eighth waited its turn


def test_a_full_worker_answers_503_busy_with_retry_after(url: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(request, url + "/narrow") for _ in range(2)]  # one runs, one waits
        time.sleep(0.5)
        refused = request(url + "/narrow")
        assert refused.status == 503 and refused.headers.get("retry-after") == "1", refused.body
        assert refused.json()["error"] == "busy" and "1 request(s)" in refused.json()["message"]
        assert [f.result().status for f in running] == [504, 504]
    assert metric(url, "wasminfer_requests_total", worker="narrow", status="503") >= 1.0
