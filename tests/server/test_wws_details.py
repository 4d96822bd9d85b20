"""What a client and a worker see of a wws folder, detail by detail, as wws 1.7.0 shows it.

Each expectation is wws's behaviour: the request JSON it builds (last value of a repeated header,
lowercase names, "" for a body that is not UTF-8, the URL with its path normalized), how it reads a
worker's response (all fields required, 0 or 1000 as status -> 200, '_' in header names), the
headers it sends (content-type first, text/html by default, lowercase names) and its answers for a
failed worker, a bad response and a path nothing serves.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from wasminfer_runtime.server import with_overrides
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_ready

FAILED_PAGE = b"<p>There was an error running this function</p>"


def _folder(root: Path, guests: dict[str, Path], public: bool) -> Path:
    put_worker(root, "mirror.wasm", guests["wws_mirror"])
    put_worker(root, "api/[id].wasm", guests["wws_mirror"])
    put_worker(root, "binary.wasm", guests["wws_mirror"], 'binary_body = "base64"\n')
    put_worker(root, "trap.wasm", guests["hostile_trap"])
    put_worker(root, "badjson.wasm", guests["hostile_badjson"])
    if public:
        (root / "public" / "sub").mkdir(parents=True)
        (root / "public" / "404.html").write_text("<h1>custom 404</h1>")
        (root / "public" / "about.html").write_text("about")
        (root / "public" / "sub" / "index.html").write_text("sub index")
    return root


@pytest.fixture(scope="module")
def site(guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A wws folder without public/, served by `serve DIR`."""
    root = _folder(tmp_path_factory.mktemp("wws"), guests, public=False)
    with ServerThread(load_wws_folder(root)) as server:
        wait_ready(server.url)
        yield server.url


@pytest.fixture(scope="module")
def public_site(guests: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = _folder(tmp_path_factory.mktemp("wws_public"), guests, public=True)
    with ServerThread(load_wws_folder(root)) as server:
        wait_ready(server.url)
        yield server.url


def _send(url: str, method: str, target: str, headers: list[tuple[str, str]],
          body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
    """One request with headers exactly as given (repeats, case, Host); the response's headers
    as they came, in order."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def _reply(url: str, doc: object | bytes, path: str = "/mirror") -> tuple[int, list[tuple[str, str]], bytes]:
    """The server's answer when the worker's stdout is `doc`."""
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return _send(url, "POST", path, [("Host", "x"), ("X-Reply", "raw")], raw)


def _worker_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The response headers the worker and wws decide (not the HTTP server's Date, Server, length)."""
    return [(k, v) for k, v in headers if k.lower() not in ("date", "server", "content-length")]


# -- the request JSON ----------------------------------------------------------------------------


def test_request_json_as_wws_builds_it(site: str) -> None:
    status, _, body = _send(site, "GET", "/mirror//?b=2&a=%20x&a=3", [
        ("Host", "example.com:81"), ("X-Tag", "first"), ("x-tag", "last"), ("User-Agent", "t")])
    assert status == 200
    doc = json.loads(body)
    # The path as wws's router sees it (trailing and repeated slashes gone), the query as sent.
    assert doc == {
        "url": "http://example.com:81/mirror?b=2&a=%20x&a=3",
        "method": "GET",
        "headers": {"host": "example.com:81", "x-tag": "last", "user-agent": "t"},
        "body": "",
        "kv": {},
        "params": {},
    }
    assert list(doc) == ["url", "method", "headers", "body", "kv", "params"]


def test_request_url_honours_forwarding_headers(site: str) -> None:
    forwarded = json.loads(_send(site, "GET", "/api/7/", [
        ("Host", "inner:8080"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "outer.example")])[2])
    assert forwarded["url"] == "https://outer.example/api/7"
    assert forwarded["params"] == {"id": "7"}
    rfc = json.loads(_send(site, "GET", "/mirror", [("Host", "inner"), ("Forwarded", 'proto=https;host="a.example"')])[2])
    assert rfc["url"] == "https://a.example/mirror"


def test_binary_body_is_empty_as_in_wws_unless_the_worker_opts_in(site: str) -> None:
    payload = b"\x89PNG\xff\x00\x01"
    doc = json.loads(_send(site, "POST", "/mirror", [("Host", "h")], payload)[2])
    assert doc["body"] == "" and "base64" not in doc
    opted = json.loads(_send(site, "POST", "/binary", [("Host", "h")], payload)[2])
    assert opted["base64"] is True and base64.b64decode(opted["body"]) == payload
    text = json.loads(_send(site, "POST", "/binary", [("Host", "h")], "é".encode())[2])
    assert text["body"] == "é" and "base64" not in text


def test_head_runs_the_worker_and_sends_no_body(site: str) -> None:
    status, headers, body = _send(site, "HEAD", "/mirror", [("Host", "h")])
    get_status, _, get_body = _send(site, "GET", "/mirror", [("Host", "h")])
    assert (status, body, get_status) == (200, b"", 200)
    # The worker saw HEAD (one letter more than GET in the JSON it mirrors); only the body is left out.
    assert dict(headers)["Content-Length"] == str(len(get_body) + 1)
    assert ("content-type", "application/json") in headers


# -- the worker's response -----------------------------------------------------------------------


def test_response_headers_content_type_first_lowercase(site: str) -> None:
    status, headers, body = _reply(site, {"data": "hi", "headers": {"X_Custom": "1", "Cache-Control": "no-store"},
                                          "status": 201, "kv": {}})
    assert (status, body) == (201, b"hi")
    assert _worker_headers(headers) == [("content-type", "text/html"), ("x-custom", "1"), ("cache-control", "no-store")]
    _, headers, _ = _reply(site, {"data": "{}", "headers": {"x-a": "1", "Content-Type": "application/json"},
                                  "status": 200, "kv": {}})
    assert _worker_headers(headers) == [("content-type", "application/json"), ("x-a", "1")]


@pytest.mark.parametrize(("sent", "got"), [(0, 200), (99, 200), (1000, 200), (65535, 200), (404, 404), (799, 799)])
def test_status_out_of_http_range_becomes_200(site: str, sent: int, got: int) -> None:
    assert _reply(site, {"data": "x", "headers": {}, "status": sent, "kv": {}})[0] == got


def test_base64_flag_both_ways(site: str) -> None:
    payload = bytes(range(256))
    status, headers, body = _reply(site, {"data": base64.b64encode(payload).decode(), "base64": True,
                                          "headers": {"content-type": "application/octet-stream"}, "status": 200, "kv": {}})
    assert (status, body) == (200, payload)
    # Without the flag (false or missing) data is the body as text, even when it looks like base64.
    assert _reply(site, {"data": "aGk=", "base64": False, "headers": {}, "status": 200, "kv": {}})[2] == b"aGk="
    assert _reply(site, {"data": "aGk=", "headers": {}, "status": 200, "kv": {}})[2] == b"aGk="


def test_bad_base64_is_wws_503(site: str) -> None:
    status, headers, body = _reply(site, {"data": "%%%", "base64": True, "headers": {}, "status": 200, "kv": {}})
    assert (status, body) == (503, b"There was an error running the worker")
    assert "X-Wasminfer-Error" not in dict(headers) and "Content-Type" not in dict(headers)  # wws sends neither


@pytest.mark.parametrize("doc", [
    b"not json",
    {"data": "x", "headers": {}, "kv": {}},  # no status: wws requires every field
    {"data": "x", "status": 200, "kv": {}},  # no headers
    {"headers": {}, "status": 200, "kv": {}},  # no data
    {"data": "x", "headers": {"a": 1}, "status": 200, "kv": {}},  # a header that is not a string
    {"data": "x", "headers": {}, "status": -1, "kv": {}},
    {"data": "x", "headers": {}, "status": "200", "kv": {}},
    {"data": "x", "headers": {}, "status": 200, "kv": {}, "base64": "yes"},
])
def test_invalid_response_is_wws_failure_page(site: str, doc: object) -> None:
    status, headers, body = _reply(site, doc)
    assert (status, body) == (500, FAILED_PAGE)
    assert _worker_headers(headers) == [("content-type", "text/html")]  # no header of ours: the reason is logged


@pytest.mark.parametrize(("headers", "text"), [
    ({"a b": "c"}, b"invalid HTTP header name"),
    ({"x-a": "b\r\nset-cookie: x=1"}, b"failed to parse header value"),
])
def test_unsendable_header_is_http_library_error(site: str, headers: dict[str, str], text: bytes) -> None:
    status, got, body = _reply(site, {"data": "x", "headers": headers, "status": 200, "kv": {}})
    assert (status, body) == (500, text)
    assert dict(got)["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("path", ["/trap", "/badjson"])
def test_failed_worker_is_wws_failure_page(site: str, path: str) -> None:
    status, headers, body = _send(site, "GET", path, [("Host", "h")])
    assert (status, body) == (500, FAILED_PAGE)
    assert _worker_headers(headers) == [("content-type", "text/html")]
    assert not any(k.lower() == "server" for k, _ in headers)  # no answer names our software
    assert request(site + "/mirror").status == 200  # and the next request is served


# -- paths nothing serves ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_not_found_without_public_is_empty(site: str, method: str) -> None:
    status, headers, body = _send(site, method, "/nothing", [("Host", "h")])
    assert (status, body) == (404, b"")
    names = [k.lower() for k, _ in headers]
    assert "content-type" not in names
    assert dict(headers).get("Content-Length", "0") == "0"  # HEAD: aiohttp leaves the length out


def test_not_found_with_public_sends_404_html_as_wws(public_site: str) -> None:
    # wws sends public/404.html as a plain file: status 200.
    status, headers, body = _send(public_site, "GET", "/nothing", [("Host", "h")])
    assert (status, body) == (200, b"<h1>custom 404</h1>")
    assert dict(headers)["Content-Type"].startswith("text/html")
    # wws does not look for NAME.html; a folder's index.html is served.
    assert _send(public_site, "GET", "/about", [("Host", "h")])[2] == b"<h1>custom 404</h1>"
    assert _send(public_site, "GET", "/sub/", [("Host", "h")])[2] == b"sub index"


def test_not_found_other_methods_with_public_is_405(public_site: str) -> None:
    status, headers, body = _send(public_site, "POST", "/nothing", [("Host", "h")], b"x")
    assert (status, body) == (405, b"Request did not meet this resource's requirements.")
    assert dict(headers)["content-type"] == "text/plain; charset=utf-8"


# -- runtime.yaml: our own answers ---------------------------------------------------------------


def test_without_wws_compat_errors_are_json(guests: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "site"
    put_worker(root, "trap.wasm", guests["hostile_trap"])
    put_worker(root, "mirror.wasm", guests["wws_mirror"])
    cfg = with_overrides(load_wws_folder(root), wws_compat=False)
    with ServerThread(cfg) as server:
        wait_ready(server.url)
        trap = request(server.url + "/trap")
        assert trap.status == 500 and trap.json()["error"] == "trap"
        assert trap.headers["x-wasminfer-error"] == "trap"
        missing = request(server.url + "/nothing")
        assert missing.status == 404 and missing.json()["error"] == "not_found"
        # Missing fields take their defaults outside wws's strict reading.
        lenient = request(server.url + "/mirror", "POST", b'{"data": "ok"}', {"X-Reply": "raw"})
        assert (lenient.status, lenient.body, lenient.headers["content-type"]) == (200, b"ok", "text/html")
