"""The answers wws 1.7.0 gives where no worker response is sent as is: a failed worker, a response
it cannot send, a path nothing serves.

In a wws folder (`server.wws_compat`) the server sends these; the reason is in its log line and in
the X-Wasminfer-Error header (ours: the kind of failure).
"""

from __future__ import annotations

from dataclasses import dataclass

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
