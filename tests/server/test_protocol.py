"""The wws request/response JSON."""

from __future__ import annotations

import base64
import json

import pytest

from wasminfer_runtime.protocol import DEFAULT_CONTENT_TYPE, ProtocolError, decode_response, encode_request


def _encode(body: bytes) -> dict[str, object]:
    raw = encode_request(
        url="http://127.0.0.1:8080/api/x?q=1",
        method="POST",
        headers=[("Content-Type", "text/plain"), ("X-Tag", "a"), ("x-tag", "b")],
        body=body,
        params={"id": "x"},
    )
    doc = json.loads(raw)
    assert isinstance(doc, dict)
    return doc


def test_request_carries_text_body_and_merged_headers() -> None:
    doc = _encode("héllo".encode())
    assert doc == {
        "url": "http://127.0.0.1:8080/api/x?q=1",
        "method": "POST",
        "headers": {"content-type": "text/plain", "x-tag": "a, b"},
        "body": "héllo",
        "kv": {},
        "params": {"id": "x"},
    }


def test_request_binary_body_is_base64_and_flagged() -> None:
    payload = bytes(range(256))
    doc = _encode(payload)
    assert doc["base64"] is True
    assert isinstance(doc["body"], str) and base64.b64decode(doc["body"]) == payload


def test_response_fields_and_defaults() -> None:
    out = decode_response(b'{"data": "hi", "headers": {"x_custom": "1", "Content-Length": "99"}, "status": 201, "kv": {}}')
    assert out.status == 201
    assert out.body == b"hi"
    # '_' -> '-' as wws does; content-length is the server's business; wws's default content type.
    assert out.headers == [("x-custom", "1"), ("content-type", DEFAULT_CONTENT_TYPE)]
    minimal = decode_response(b'{"data": ""}')
    assert (minimal.status, minimal.body) == (200, b"")


def test_response_base64_body() -> None:
    payload = b"\x89PNG\x00\xff"
    raw = json.dumps({"data": base64.b64encode(payload).decode(), "base64": True,
                      "headers": {"content-type": "image/png"}, "status": 200, "kv": {}})
    out = decode_response(raw.encode())
    assert out.body == payload and out.headers == [("content-type", "image/png")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "wrote nothing"),
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"data": "x", "status": 99}', "'status' must be an HTTP status"),
        (b'{"data": "x", "status": 101}', "'status' must be an HTTP status"),
        (b'{"data": "x", "status": 600}', "'status' must be an HTTP status"),
        (b'{"data": "x", "status": "200"}', "'status' must be an HTTP status"),
        (b'{"data": "x", "status": true}', "'status' must be an HTTP status"),
        (b'{"data": 5}', "'data' must be a string"),
        (b'{"data": "x", "headers": []}', "'headers' must be an object"),
        (b'{"data": "x", "headers": {"a": 1}}', "header 'a' must be a string"),
        (b'{"data": "x", "headers": {"a": "b\\r\\nSet-Cookie: x=1"}}', "cannot be sent"),
        (b'{"data": "x", "headers": {"a b": "c"}}', "cannot be sent"),
        (b'{"data": "%%%", "base64": true}', "not valid base64"),
        (b'{"data": "x", "base64": "yes"}', "'base64' must be true or false"),
    ],
)
def test_invalid_responses_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_response(raw)
