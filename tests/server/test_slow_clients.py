"""Slow clients on real sockets: late headers (slowloris) and a trickling body are cut off in time,
while other clients keep being served."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wasminfer_runtime.server import with_overrides
from wasminfer_runtime.wws import load_wws_folder

from .support import Reply, ServerThread, put_worker, request, wait_ready

pytestmark = pytest.mark.timeout(60)

# Generous: the server is told 1 s for headers and for bodies.
CUT_WITHIN = 5.0


@pytest.fixture
def url(guests: dict[str, Path], tmp_path: Path, serve: Callable[..., ServerThread]) -> str:
    # One invocation at a time and no queue: a request that held the slot while its body
    # trickles in would make every other request to the worker 503.
    put_worker(tmp_path, "hello.wasm", guests["hello"], "[limits]\nmax_concurrency = 1\nmax_queued = 0\n")
    cfg = with_overrides(load_wws_folder(tmp_path), header_timeout_seconds=1, body_timeout_seconds=1)
    server = serve(cfg)
    wait_ready(server.url)
    return server.url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_to_eof(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection (a reset after its data counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


class _Trickle:
    """One connection sending `head`, then `payload` a byte per step until the server answers or closes."""

    def __init__(self, url: str, payload: bytes, head: bytes = b"") -> None:
        self.sock = _connect(url)
        self.opened = time.monotonic()
        self.sock.sendall(head)
        self.payload = payload
        self.sent = 0
        self.closed_after: float | None = None
        self.received = b""

    def step(self) -> None:
        """Send the next byte, unless the server has answered or closed meanwhile."""
        if self.closed_after is not None:
            return
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            try:
                self.sock.sendall(self.payload[self.sent:self.sent + 1])
                self.sent += 1
                return
            except OSError:
                pass  # closed by the server between the check and the send
        self.received = _read_to_eof(self.sock)
        self.closed_after = time.monotonic() - self.opened
        self.sock.close()


def _run_trickles(trickles: list[_Trickle], interval: float, deadline: float) -> None:
    while any(t.closed_after is None for t in trickles) and time.monotonic() < deadline:
        for t in trickles:
            t.step()
        time.sleep(interval)
    for t in trickles:
        t.sock.close()


class _Steady:
    """A normal client in a thread: one request to /hello after another, all of which must succeed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.replies: list[Reply] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.replies.append(request(self.url + "/hello", "POST", body=b"steady", timeout=10))
            time.sleep(0.1)

    def __enter__(self) -> _Steady:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)

    def check(self) -> None:
        assert len(self.replies) >= 3, "the normal client made too few requests"
        for reply in self.replies:
            assert reply.status == 200, reply.body
            assert reply.json()["body"] == "steady"


def _status_and_body(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_slowloris_connections_are_cut_off_while_others_are_served(url: str) -> None:
    # Headers that never end, one byte at a time.
    slow_headers = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    with _Steady(url) as steady:
        trickles = [_Trickle(url, slow_headers) for _ in range(20)]
        _run_trickles(trickles, 0.3, time.monotonic() + 2 * CUT_WITHIN)
    steady.check()
    for t in trickles:
        assert t.closed_after is not None and 0.5 < t.closed_after < CUT_WITHIN, (
            f"a slowloris connection lasted {t.closed_after} s (it sent {t.sent} bytes)")
        status, doc = _status_and_body(t.received)
        assert status == 408
        assert doc["error"] == "request_timeout"


def test_trickling_body_gets_408_and_holds_no_worker_slot(url: str) -> None:
    head = b"POST /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n"
    body = _Trickle(url, b"x" * 1000, head=head)
    with _Steady(url) as steady:  # the worker's only slot stays free while the body trickles
        _run_trickles([body], 0.3, time.monotonic() + 2 * CUT_WITHIN)
    steady.check()
    assert body.closed_after is not None and body.closed_after < CUT_WITHIN, f"the body trickled for {body.closed_after} s"
    status, doc = _status_and_body(body.received)
    assert status == 408
    assert doc["error"] == "request_timeout" and doc["worker"] == "hello"


def test_slow_client_within_the_limits_is_served_then_idle_closes_quietly(url: str) -> None:
    sock = _connect(url)
    # Three requests on one keep-alive connection, 0.6 s apart: the header time starts again
    # after each response. Each request arrives in pieces, its headers and body each within 1 s.
    for i in range(3):
        if i:
            time.sleep(0.6)
        body = f"slow {i}".encode()
        pieces = [b"POST /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                  f"Content-Length: {len(body)}\r\n\r\n".encode(), body[:3], body[3:]]
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.1)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(65536)
        head, _, rest = response.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += sock.recv(65536)
        assert head.split()[1] == b"200", response
        assert json.loads(rest)["body"] == body.decode()
    # Then idle: closed after the header time, with no 408 for a request that never began.
    t0 = time.monotonic()
    assert _read_to_eof(sock) == b""
    assert time.monotonic() - t0 < CUT_WITHIN
    sock.close()
