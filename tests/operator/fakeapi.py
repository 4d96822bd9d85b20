"""A small Kubernetes API server on loopback for the operator's unit tests: it keeps Leases (get,
create, replace with resourceVersion conflicts), answers other writes by echoing their body, and
records every request. It can be made to fail on demand: answer 503, hang, or stop listening."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LEASE = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?")


class FakeAPI:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.bodies: list[tuple[str, str, Any]] = []  # (method, path, JSON body) of the requests with one
        self.mode = "ok"  # ok | error (503) | hang
        self.lock = threading.Lock()
        self.released = threading.Event()  # ends hung requests
        self._version = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAPI:
        """Listens (again, on the same port after `stop`)."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _any(self) -> None:
                api.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stops listening: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.released.set()
        self.stop()

    def lease_requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return [r for r in self.requests if LEASE.match(r[1])]

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))  # fmt: skip
        return path

    # --- serving ---

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length)) if length else None
        with self.lock:
            self.requests.append((h.command, h.path))
            if body is not None:
                self.bodies.append((h.command, h.path, body))
            mode = self.mode
        if mode == "hang":
            self.released.wait(60)
            h.close_connection = True
            return
        if mode == "error":
            return self._send(h, 503, {"kind": "Status", "code": 503, "reason": "ServiceUnavailable"})
        m = LEASE.match(h.path)
        if m is None:
            if h.command in ("POST", "PUT", "PATCH"):
                return self._send(h, 201 if h.command == "POST" else 200, body or {})
            return self._send(h, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        with self.lock:
            status, answer = self._lease(h.command, m.group(1), m.group(2), body)
        self._send(h, status, answer)

    def _lease(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "POST":
            name = body["metadata"]["name"]
            if (ns, name) in self.leases:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
            return 201, self._store(ns, name, body)
        current = self.leases.get((ns, name or ""))
        if current is None:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        if method == "GET":
            return 200, current
        if method == "PUT":
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, {"kind": "Status", "code": 409, "reason": "Conflict"}
            return 200, self._store(ns, name or "", body)
        return 405, {"kind": "Status", "code": 405}

    def _store(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        stored = {**body, "metadata": {**body.get("metadata", {}), "name": name, "namespace": ns, "resourceVersion": str(self._version)}}
        self.leases[(ns, name)] = stored
        return stored

    def set_holder(self, ns: str, name: str, holder: str) -> None:
        """Another replica writes the Lease."""
        with self.lock:
            lease = self.leases[(ns, name)]
            self._store(ns, name, {**lease, "spec": {**lease["spec"], "holderIdentity": holder}})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
