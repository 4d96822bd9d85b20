"""The wws request/response JSON, field by field as wws 1.7.0 builds and reads it."""

from __future__ import annotations

import base64
import json

import pytest

from wasminfer_runtime import wws_answers
from wasminfer_runtime.protocol import (
    DEFAULT_CONTENT_TYPE,
    ProtocolError,
    decode_response,
    encode_request,
    request_url,
)


def _encode(body: bytes, **kw: object) -> dict[str, object]:
    raw = encode_request(
        url="http://127.0.0.1:8080/api/x?q=1",
        method="POST",
        headers=[("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")],
        body=body,
        params={"id": "x"},
        **kw,  # type: ignore[arg-type]
    )
    doc = json.loads(raw)
    assert isinstance(doc, dict)
    return doc


def test_request_fields_lowercase_names_last_value_wins() -> None:
    doc = _encode("héllo".encode())
    assert doc == {
        "url": "http://127.0.0.1:8080/api/x?q=1",
        "method": "POST",
        "headers": {"content-type": "text/plain", "x-tag": "b"},
        "body": "héllo",
        "kv": {},
        "params": {"id": "x"},
    }


def test_request_binary_body_is_empty_by_default() -> None:
    doc = _encode(bytes(range(256)))
    assert doc["body"] == "" and "base64" not in doc


def test_request_binary_body_base64_when_asked() -> None:
    payload = bytes(range(256))
    doc = _encode(payload, binary_body="base64")
    assert doc["base64"] is True
    assert isinstance(doc["body"], str) and base64.b64decode(doc["body"]) == payload
    assert "base64" not in _encode(b"text", binary_body="base64")


@pytest.mark.parametrize(("headers", "target", "url"), [
    ([("Host", "h:81")], "/a/b", "http://h:81/a/b"),
    ([("Host", "h")], "/a/b/", "http://h/a/b"),  # trailing slash trimmed
    ([("Host", "h")], "//a///b//?x=/y//&z", "http://h/a/b?x=/y//&z"),  # query kept as sent
    ([("Host", "h")], "///", "http://h/"),
    ([("Host", "h")], "/a?", "http://h/a?"),
    ([("Host", "h")], "/a%20b/%7e?q=%41", "http://h/a%20b/%7e?q=%41"),  # not decoded
    ([("Host", "h"), ("X-Forwarded-Proto", "https, http"), ("X-Forwarded-Host", "o, p")], "/", "https://o/"),
    ([("Host", "h"), ("X-Forwarded-Proto", "https"), ("Forwarded", 'for=1.2.3.4;proto=wss, host="f"')], "/",
     "wss://f/"),
    ([], "/a", "http://fallback:8080/a"),  # no Host header: the address the server listens on
    ([("Host", "bad host")], "/a?b", "/a?b"),  # no valid URL: path and query only
])
def test_request_url(headers: list[tuple[str, str]], target: str, url: str) -> None:
    assert request_url(headers=headers, host="fallback:8080", target=target) == url


def test_response_fields_and_header_order() -> None:
    out = decode_response(b'{"data": "hi", "headers": {"x_custom": "1", "Content-Length": "99", "X-B": "2"},'
                          b' "status": 201, "kv": {}}', strict=True)
    assert (out.status, out.body) == (201, b"hi")
    # content-type first (wws's default, text/html); '_' -> '-'; lowercase; content-length is the server's.
    assert out.headers == [("content-type", "text/html"), ("x-custom", "1"), ("x-b", "2")]
    assert DEFAULT_CONTENT_TYPE == "text/html"
    own = decode_response(b'{"data": "", "headers": {"a": "1", "Content-Type": "text/plain", "content_type": "x/y"},'
                          b' "status": 200, "kv": {}}')
    assert own.headers == [("content-type", "x/y"), ("a", "1")]  # one value per name: the last


def test_missing_fields_strict_and_lenient() -> None:
    for raw in (b'{"headers": {}, "status": 200}', b'{"data": "", "status": 200}', b'{"data": "", "headers": {}}',
                b'{"data": null, "headers": {}, "status": 200}', b'{"data": "", "headers": {}, "status": 200}',
                b'{"data": "", "headers": {}, "status": 200, "kv": null}'):
        with pytest.raises(ProtocolError, match="missing or null") as err:
            decode_response(raw, strict=True)
        assert err.value.answer is wws_answers.FAILED
    lenient = decode_response(b'{"data": "x"}')
    assert (lenient.status, lenient.body, lenient.headers) == (200, b"x", [("content-type", "text/html")])


@pytest.mark.parametrize(("sent", "got"), [(0, 200), (99, 200), (200, 200), (404, 404), (600, 600), (999, 999),
                                           (1000, 200), (65535, 200)])
def test_status_outside_http_becomes_200(sent: int, got: int) -> None:
    assert decode_response(b'{"data": "", "status": %d}' % sent).status == got


def test_response_base64_both_ways() -> None:
    payload = b"\x89PNG\x00\xff"
    raw = json.dumps({"data": base64.b64encode(payload).decode(), "base64": True,
                      "headers": {"content-type": "image/png"}, "status": 200, "kv": {}})
    out = decode_response(raw.encode())
    assert out.body == payload and out.headers == [("content-type", "image/png")]
    assert decode_response(b'{"data": "aGk=", "base64": false}').body == b"aGk="
    assert decode_response(b'{"data": "aGk="}').body == b"aGk="


@pytest.mark.parametrize("data", ["%%%", "aGk", "aGk=\n", "aR==", "a GsK"])
def test_base64_that_is_not_canonical_gets_wws_503(data: str) -> None:
    with pytest.raises(ProtocolError, match="not valid base64") as err:
        decode_response(json.dumps({"data": data, "base64": True, "headers": {"a b": "c"}}).encode())
    assert err.value.answer is wws_answers.BAD_BASE64  # before any header is looked at, as wws


@pytest.mark.parametrize(("headers", "answer"), [
    ({"a b": "c"}, wws_answers.BAD_HEADER_NAME),
    ({"a:b": "c"}, wws_answers.BAD_HEADER_NAME),
    ({"": "c"}, wws_answers.BAD_HEADER_NAME),
    ({"a": "b\r\nSet-Cookie: x=1"}, wws_answers.BAD_HEADER_VALUE),
    ({"a": "b\x00"}, wws_answers.BAD_HEADER_VALUE),
    ({"a": "b\x7f"}, wws_answers.BAD_HEADER_VALUE),
])
def test_unsendable_headers(headers: dict[str, str], answer: wws_answers.Answer) -> None:
    with pytest.raises(ProtocolError, match="header") as err:
        decode_response(json.dumps({"data": "", "headers": headers}).encode())
    assert err.value.answer is answer


def test_sendable_header_values() -> None:
    out = decode_response(json.dumps({"data": "", "headers": {"a": "tab\there", "b": "héllo"}}).encode())
    assert out.headers[1:] == [("a", "tab\there"), ("b", "héllo")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "wrote nothing"),
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),  # a BOM
        (b'{"data": "x"} trailing', "not JSON"),
        (b'{"data": "x", "status": NaN}', "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"data": "x", "status": 101}', "informational"),
        (b'{"data": "x", "status": -1}', "'status' must be an integer"),
        (b'{"data": "x", "status": 65536}', "'status' must be an integer"),
        (b'{"data": "x", "status": 200.0}', "'status' must be an integer"),
        (b'{"data": "x", "status": "200"}', "'status' must be an integer"),
        (b'{"data": "x", "status": true}', "'status' must be an integer"),
        (b'{"data": 5}', "'data' must be a string"),
        (b'{"data": "\\ud800"}', "surrogate"),
        (b'{"data": "x", "headers": []}', "'headers' must be an object"),
        (b'{"data": "x", "headers": {"a": 1}}', "header 'a' must be a string"),
        (b'{"data": "x", "base64": "yes"}', "'base64' must be true or false"),
        (b'{"data": "x", "base64": null}', "'base64' must be true or false"),
    ],
)
def test_invalid_responses_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        decode_response(raw)
    assert err.value.answer is wws_answers.FAILED


@pytest.mark.parametrize(("name", "ctype", "disposition"), [
    ("notes.txt", "text/plain; charset=utf-8", 'inline; filename="notes.txt"'),
    ("app.js", "application/javascript; charset=utf-8", 'inline; filename="app.js"'),
    ("data.json", "application/json", 'inline; filename="data.json"'),
    ("logo.png", "image/png", 'inline; filename="logo.png"'),
    ("bundle.zip", "application/zip", 'attachment; filename="bundle.zip"'),
    ("noext", "application/octet-stream", 'attachment; filename="noext"'),
    ('a"b.txt', "text/plain; charset=utf-8", 'inline; filename="a\\"b.txt"'),
    ("café menu.html", "text/html; charset=utf-8",
     "inline; filename=\"café menu.html\"; filename*=UTF-8''caf%C3%A9%20menu.html"),
])
def test_static_files_get_wws_content_type_and_disposition(name: str, ctype: str, disposition: str) -> None:
    assert wws_answers.static_file_headers(name) == [("Content-Type", ctype), ("Content-Disposition", disposition)]
