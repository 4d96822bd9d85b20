"""The answers wws 1.7.0 gives where no worker response is sent as is: a failed worker, a response
it cannot send, a path nothing serves.

In a wws folder (`server.wws_compat`) the server sends these, and static files with the headers
wws's file service gives them; the reason for an error is in the server's log line (a runtime.yaml
also gets the kind of failure in the X-Wasminfer-Error header, which wws does not send).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from urllib.parse import quote

ERROR_HEADER = "X-Wasminfer-Error"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str | None  # None: wws sends none (our HTTP server adds one to a non-empty body)
    body: bytes


# A worker that traps, exits, runs out of memory or prints no valid response JSON.
FAILED = Answer(500, "text/html", b"<p>There was an error running this function</p>")
# `base64` is true but `data` is not base64.
BAD_BASE64 = Answer(503, None, b"There was an error running the worker")
# A header the worker returned that HTTP cannot carry: the HTTP library's own error text.
BAD_HEADER_NAME = Answer(500, "text/plain; charset=utf-8", b"invalid HTTP header name")
BAD_HEADER_VALUE = Answer(500, "text/plain; charset=utf-8", b"failed to parse header value")
# No worker route and no static file: empty, with no content type.
NOT_FOUND = Answer(404, None, b"")
# Not GET or HEAD, no worker route, and the folder has public/: its static file service refuses.
METHOD_NOT_ALLOWED = Answer(405, "text/plain; charset=utf-8", b"Request did not meet this resource's requirements.")


# Content types that wws's file service sends with `; charset=utf-8`.
_UTF8_TEXT = frozenset({"application/javascript", "text/html", "text/css", "text/plain", "text/csv",
                        "text/tab-separated-values"})
# Where Python's table and the one wws uses disagree on a common extension.
_TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".wasm": "application/wasm"}
_INLINE_APPLICATION = frozenset({"javascript", "json", "wasm"})
_ATTR_CHARS = "!#$&+-.^_`|~"  # kept as they are in an RFC 8187 value, beside letters and digits
_MIME = mimetypes.MimeTypes()  # Python's own table only, not the machine's: the same answer everywhere


def static_file_headers(name: str) -> list[tuple[str, str]]:
    """Content-Type and Content-Disposition of a static file named `name`, as wws sends them:
    inline for text, images, audio, video, JavaScript, JSON and Wasm, attachment otherwise."""
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    ctype = _TYPES.get(suffix) or _MIME.guess_type(name, strict=False)[0] or "application/octet-stream"
    major, _, minor = ctype.partition("/")
    inline = major in ("text", "image", "audio", "video") or (major == "application" and minor in _INLINE_APPLICATION)
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    disposition = f'{"inline" if inline else "attachment"}; filename="{escaped}"'
    if not name.isascii():
        disposition += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHARS)
    if ctype in _UTF8_TEXT:
        ctype += "; charset=utf-8"
    return [("Content-Type", ctype), ("Content-Disposition", disposition)]
