"""Time limits for slow HTTP clients: a connection may not take forever to send a request.

Headers: aiohttp's keep-alive timer already has the semantics of a header timeout. It is armed when
a connection opens and after each response, and when it fires it closes the connection only if no
complete request has arrived since (the handler is waiting for one). So `header_timeout_seconds`
is aiohttp's `keepalive_timeout`; the handler below only adds a 408 and a log line when the client
had begun a request (a slowloris), and closes idle keep-alive connections quietly.

Body: the server reads a worker's body within `body_timeout_seconds` (server.py), then answers
with `send_and_close`, so the rest of a late body is never waited for.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web, web_protocol

log = logging.getLogger(__name__)

# The error kind of both 408 answers.
REQUEST_TIMEOUT = "request_timeout"


def _timeout_bytes(message: str) -> bytes:
    """A whole 408 response, for a connection that has no request object (headers never completed)."""
    body = json.dumps({"error": REQUEST_TIMEOUT, "message": message}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Handler(web_protocol.RequestHandler):
    """aiohttp's connection handler, telling a client whose request headers were late why it is cut off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._begun = False  # bytes of a request whose headers are not complete yet
        self._expiring = False  # inside the keep-alive timer's callback

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while the handler waits for a request begin one, unless they complete it.
        waiter = self._waiter
        super().data_received(data)
        if waiter is not None and data:
            self._begun = not waiter.done()

    def _process_keepalive(self) -> None:
        self._expiring = True
        try:
            super()._process_keepalive()
        finally:
            self._expiring = False

    def force_close(self) -> None:
        transport = self.transport
        if self._expiring and self._begun and transport is not None and not transport.is_closing():
            seconds = self.keepalive_timeout
            log.info("client %s: request headers not complete within %g s; answering 408 and closing",
                     _peer(self.peername), seconds)
            transport.write(_timeout_bytes(f"the request headers did not arrive within {seconds:g} s"))
        super().force_close()  # closing the transport still sends what was written


def _peer(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner with `header_timeout` seconds for each request's headers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=header_timeout, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The same server (the application's handler and every setting kept), making _Handlers.
        server.__class__ = _Server
        return server


async def send_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send `response` now and close the connection, without reading the rest of the request body
    (aiohttp would otherwise drain it for up to its lingering time)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response
