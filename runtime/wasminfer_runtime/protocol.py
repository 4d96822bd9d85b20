"""The wws worker protocol: the JSON a worker reads on stdin and the JSON it writes on stdout.

Request  {url, method, headers, body, kv, params}: `url` is the full URL, `headers` one string per
name (repeated headers joined with ", "), `params` the dynamic route segments, `kv` the state of
the worker's key/value store ({} without one; kv.py). `body` is the request body as text. wws
hands a worker an empty body when the bytes are not UTF-8; here such a body is sent
base64-encoded instead, with `"base64": true` added to the request, so binary uploads (images for
a model) reach the worker intact. Workers that ignore the flag are unaffected for text bodies.

Response {data, headers, status, kv, base64}: `data` is the body, base64 of the bytes when
`base64` is true. Missing `headers`/`status` mean {} and 200; `kv` must be an object of strings
when present (a missing one is for the server to judge: it ignores it, unless the worker has a
key/value store); anything of the wrong type makes the response invalid (the server answers 500
naming the problem). Without a content-type header the body is sent as text/html, as wws does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Set by the server from the payload length; a worker's own value would be wrong or conflicting.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"})


DEFAULT_CONTENT_TYPE = "text/html; charset=utf-8"


class ProtocolError(ValueError):
    """A worker's stdout is not a valid wws response; the message says what is wrong."""


@dataclass(frozen=True)
class WorkerResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    kv: dict[str, str] | None = None  # the worker's new key/value state; None when it sent none


def encode_request(
    *,
    url: str,
    method: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    params: Mapping[str, str],
    kv: Mapping[str, str] | None = None,
) -> bytes:
    """The stdin of one worker invocation."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    doc: dict[str, object] = {"url": url, "method": method, "headers": merged}
    try:
        doc["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        doc["body"] = base64.b64encode(body).decode("ascii")
        doc["base64"] = True
    doc["kv"] = dict(kv or {})
    doc["params"] = dict(params)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _preview(raw: bytes) -> str:
    text = raw[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(raw) > 80 else "")


def decode_response(raw: bytes) -> WorkerResponse:
    """Parse a worker's stdout (raises ProtocolError)."""
    if not raw.strip():
        raise ProtocolError("the worker wrote nothing to stdout")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"stdout is not JSON ({err}); it starts with {_preview(raw)}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"stdout is JSON but not an object; it starts with {_preview(raw)}")

    status = doc.get("status", 200)
    # 1xx are not final responses: a worker cannot answer with one.
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ProtocolError(f"'status' must be an HTTP status code (200-599), got {status!r}")

    raw_headers = doc.get("headers", {})
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict):
        raise ProtocolError(f"'headers' must be an object of strings, got {type(raw_headers).__name__}")
    headers: list[tuple[str, str]] = []
    for name, value in raw_headers.items():
        if not isinstance(value, str):
            raise ProtocolError(f"header {name!r} must be a string, got {type(value).__name__}")
        # wws turns '_' into '-': JavaScript workers cannot write '-' in object keys.
        name = name.replace("_", "-")
        if not name or any(c in name for c in "\r\n:\0 ") or any(c in value for c in "\r\n\0"):
            raise ProtocolError(f"header {name!r} has a name or value that cannot be sent")
        if name.lower() not in _HOP_BY_HOP:
            headers.append((name, value))

    data = doc.get("data", "")
    if data is None:
        data = ""
    if not isinstance(data, str):
        raise ProtocolError(f"'data' must be a string, got {type(data).__name__}")
    encoded = doc.get("base64", False)
    if not isinstance(encoded, bool):
        raise ProtocolError(f"'base64' must be true or false, got {encoded!r}")
    if encoded:
        try:
            body = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("'base64' is true but 'data' is not valid base64") from None
    else:
        body = data.encode("utf-8", "replace")
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", DEFAULT_CONTENT_TYPE))
    return WorkerResponse(status, headers, body, _kv(doc.get("kv")))


def _kv(kv: object) -> dict[str, str] | None:
    # wws reads `kv` as a map of strings: any other value fails the response.
    if kv is None:
        return None
    if not isinstance(kv, dict):
        raise ProtocolError(f"'kv' must be an object of strings, got {type(kv).__name__}")
    for key, value in kv.items():
        if not isinstance(value, str):
            raise ProtocolError(f"kv {key!r} must be a string, got {type(value).__name__}")
    return kv
