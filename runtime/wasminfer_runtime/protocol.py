"""The wws worker protocol: the JSON a worker reads on stdin and the JSON it writes on stdout.

Both as wws 1.7.0 builds and reads them.

Request  {url, method, headers, body, kv, params}: `url` is the full URL (request_url), `headers`
one string per lowercase name (a repeated header: its last value, as wws keeps it), `params` the
dynamic route segments, `kv` the state of the worker's key/value store ({} without one; kv.py).
`body` is the request body as text; bytes that are not UTF-8 reach the worker as "", as in wws,
unless the worker opts in to `binary_body = "base64"`: then they are sent base64-encoded, with
`"base64": true` added to the request, so binary uploads (images for a model) arrive intact.

Response {data, headers, status, kv, base64}: `data` is the body, base64 of the bytes when
`base64` is true. `strict` (wws folders) reads it as wws does: `data`, `headers`, `status` and
`kv` must be there and not null; otherwise missing ones mean "", {} and 200, and a missing `kv` is
for the server to judge (it ignores it, unless the worker has a key/value store). `kv` must be an
object of strings. `status` is an integer 0-65535: 200-999 is sent, anything else but 1xx
becomes 200 (wws's rule); 1xx is refused (wws would send an interim response and no final one).
Header names are sent lowercase, with '_' read as '-' (JavaScript workers cannot write '-' in
object keys); content-type comes first, text/html unless the worker sets one. Anything else of
the wrong type makes the response invalid; ProtocolError.answer is what wws answers then.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from wasminfer_runtime import wws_answers
from wasminfer_runtime.wws_answers import Answer

# Set by the server from the payload length; a worker's own value would be wrong or conflicting.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"})


DEFAULT_CONTENT_TYPE = "text/html"

# What a request body that is not UTF-8 becomes: "" (wws) or base64 with "base64": true.
BinaryBody = Literal["empty", "base64"]

# RFC 9110 token characters: what a header name may hold.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ProtocolError(ValueError):
    """A worker's stdout is not a valid wws response; the message says what is wrong, `answer`
    what wws sends instead."""

    def __init__(self, message: str, answer: Answer = wws_answers.FAILED) -> None:
        super().__init__(message)
        self.answer = answer


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
    binary_body: BinaryBody = "empty",
) -> bytes:
    """The stdin of one worker invocation."""
    doc: dict[str, object] = {"url": url, "method": method, "headers": {k.lower(): v for k, v in headers}}
    try:
        doc["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        if binary_body == "base64":
            doc["body"] = base64.b64encode(body).decode("ascii")
            doc["base64"] = True
        else:
            doc["body"] = ""
    doc["kv"] = dict(kv or {})
    doc["params"] = dict(params)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _preview(raw: bytes) -> str:
    text = raw[:80].decode("utf-8", "replace")
    return repr(text) + ("..." if len(raw) > 80 else "")


def decode_response(raw: bytes, *, strict: bool = False) -> WorkerResponse:
    """Parse a worker's stdout (raises ProtocolError); `strict`: fields present as wws wants them."""
    if not raw.strip():
        raise ProtocolError("the worker wrote nothing to stdout")
    try:
        # UTF-8 only (no BOM) and no NaN/Infinity: JSON as wws's parser takes it.
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"stdout is not JSON ({err}); it starts with {_preview(raw)}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"stdout is JSON but not an object; it starts with {_preview(raw)}")
    if strict:
        missing = [k for k in ("data", "headers", "status", "kv") if doc.get(k) is None]
        if missing:
            raise ProtocolError(f"{', '.join(repr(k) for k in missing)} missing or null (wws requires them)")

    status = doc.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 65535:
        raise ProtocolError(f"'status' must be an integer from 0 to 65535, got {status!r}")
    if 100 <= status <= 199:  # not a final response: the client would wait for another
        raise ProtocolError(f"'status' {status} is informational (1xx), not an answer")
    if status > 999 or status < 100:
        status = 200  # wws sends 200 for a number that is no HTTP status

    raw_headers = doc.get("headers")
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict):
        raise ProtocolError(f"'headers' must be an object of strings, got {type(raw_headers).__name__}")
    for name, value in raw_headers.items():
        if not isinstance(value, str):
            raise ProtocolError(f"header {name!r} must be a string, got {type(value).__name__}")
    data = doc.get("data")
    if data is None:
        data = ""
    if not isinstance(data, str):
        raise ProtocolError(f"'data' must be a string, got {type(data).__name__}")
    encoded = doc.get("base64", False)
    if not isinstance(encoded, bool):
        raise ProtocolError(f"'base64' must be true or false, got {encoded!r}")
    kv = _kv(doc.get("kv"))
    if _SURROGATE.search(data) or any(_SURROGATE.search(n) or _SURROGATE.search(v) for n, v in raw_headers.items()):
        raise ProtocolError("a string holds an unpaired UTF-16 surrogate escape")

    if encoded:
        try:
            body = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            body = None
        if body is None or base64.b64encode(body).decode("ascii") != data:  # canonical only, as wws
            raise ProtocolError("'base64' is true but 'data' is not valid base64", wws_answers.BAD_BASE64)
    else:
        body = data.encode("utf-8")

    # Lowercase names, one value each, content-type first (wws sets it, then the worker's replace).
    merged: dict[str, str] = {"content-type": DEFAULT_CONTENT_TYPE}
    for name, value in raw_headers.items():
        # wws turns '_' into '-': JavaScript workers cannot write '-' in object keys.
        name = name.replace("_", "-").lower()
        if not name or not _TOKEN.issuperset(name):
            raise ProtocolError(f"header name {name!r} cannot be sent", wws_answers.BAD_HEADER_NAME)
        if _CONTROL.search(value):
            raise ProtocolError(f"header {name!r} has a control character", wws_answers.BAD_HEADER_VALUE)
        if name not in _HOP_BY_HOP:
            merged[name] = value
    return WorkerResponse(status, list(merged.items()), body, kv)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Searched with the regex engine, not character by character in Python: a body can be megabytes.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # in a header value; tab is allowed


def request_url(*, headers: Iterable[tuple[str, str]], host: str, target: str) -> str:
    """`url` as wws builds it: scheme and host (from Forwarded, X-Forwarded-Proto/-Host, or
    Host), the request target's path as sent with trailing and repeated slashes removed (wws
    normalizes the path before its handlers see it), and its query as sent. When the scheme or the
    host cannot make a URL, the path and query alone."""
    fwd_proto = fwd_host = x_proto = x_host = host_header = None
    for name, value in headers:
        name = name.lower()
        if name == "forwarded":
            for pair in value.replace(",", ";").split(";"):
                key, eq, val = pair.partition("=")
                key, val = key.strip().lower(), val.strip().strip('"')
                if eq and key == "proto" and fwd_proto is None:
                    fwd_proto = val
                elif eq and key == "host" and fwd_host is None:
                    fwd_host = val
        elif name == "x-forwarded-proto" and x_proto is None:
            x_proto = value.split(",")[0].strip()
        elif name == "x-forwarded-host" and x_host is None:
            x_host = value.split(",")[0].strip()
        elif name == "host" and host_header is None:
            host_header = value
    scheme = fwd_proto or x_proto or "http"
    authority = fwd_host or x_host or host_header or host
    path, sep, query = target.partition("?")
    path = re.sub("/{2,}", "/", path.rstrip("/")) or "/"
    rest = f"{path}{sep}{query}"
    if not _SCHEME.fullmatch(scheme) or not _AUTHORITY.fullmatch(authority):
        return rest
    return f"{scheme}://{authority}{rest}"


_SCHEME = re.compile(r"[A-Za-z0-9+.-]{1,64}")
_AUTHORITY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@\[\]%]+")


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
