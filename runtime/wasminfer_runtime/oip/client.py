"""A named model on a model server, behind the Backend interface: the guest's calls become Open
Inference Protocol requests (REST, binary tensor data).

`set_input` checks the tensor against the model's metadata and copies it; `compute` is one request
on a kept-alive connection, within the model's timeout and the invocation's deadline; outputs are
read in place from the answer. A request is never sent twice: a kept-alive connection the server
closed while idle is seen before sending and replaced, and once a request went out, the model may
have run it. Errors keep the server's reason: a tensor it refuses is an invalid argument, anything else a
runtime error.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import logging
import select
import socket
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from wasminfer_runtime import deadlines
from wasminfer_runtime.backends.base import (
    BackendError,
    ElementType,
    ExecutionContext,
    Graph,
    InvalidTensor,
    ShapeBounds,
    Signature,
    TensorInfo,
    input_slot,
)
from wasminfer_runtime.config import ModelConfig
from wasminfer_runtime.oip.types import BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, DATATYPES, HEADER_LENGTH, datatype_name

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
WAIT_LOG_EVERY_SECONDS = 30.0  # while a model server is not ready yet, say so this often


class _Conn:
    """One kept-alive HTTP connection to the model server."""

    def __init__(self, host: str, port: int, where: str) -> None:
        self.host, self.port, self.where = host, port, where
        self.http: http.client.HTTPConnection | None = None

    def open(self, timeout: float) -> http.client.HTTPConnection:
        if self.http is not None and self.http.sock is not None:
            readable, _, _ = select.select([self.http.sock], [], [], 0)
            if readable:  # the server closed it while idle (or sent what nothing asked for): a new one
                self.close()
        if self.http is None or self.http.sock is None:
            self.http = http.client.HTTPConnection(self.host, self.port, timeout=min(timeout, CONNECT_TIMEOUT_SECONDS))
            self.http.connect()
            assert self.http.sock is not None
            self.http.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.http.sock is not None
        self.http.sock.settimeout(timeout)
        return self.http

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, str], bytes]:
        """One request; never sent twice (once sent, the model may have run it)."""
        try:
            conn = self.open(timeout)
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError:
            self.close()
            raise BackendError(f"{self.where} did not answer within {timeout:.3g} s") from None
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.IncompleteRead) as err:
            self.close()
            raise BackendError(f"{self.where} closed the connection before answering: {err}") from None
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise BackendError(f"{self.where} unreachable: {getattr(err, 'strerror', None) or err}") from None
        if resp.will_close:
            self.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error") or data[:300].decode(errors="replace"))
    except (ValueError, AttributeError):
        return data[:300].decode(errors="replace")


class RemoteModelGraph(Graph):
    """A model on a model server; its signature comes from the server's metadata."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.name, ShapeBounds(cfg.options))
        assert cfg.remote is not None
        parts = urlsplit(cfg.remote.url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.remote_name = cfg.remote_name
        self.timeout = cfg.remote.timeout_seconds
        self.path = f"/v2/models/{quote(self.remote_name, safe='')}"
        self.pool_size = cfg.options.pool_size
        self._pool: list[RemoteModelContext] = []
        self._lock = threading.Lock()
        self._signature: Signature | None = None

    def where(self) -> str:
        return f"model {self.remote_name!r} on http://{self.host}:{self.port}"

    def wait_ready(self, stop: threading.Event | None = None) -> None:
        """Block until the server says the model is ready, then read its metadata (the signature)."""
        conn = _Conn(self.host, self.port, self.where())
        next_log = time.monotonic()
        delay = 0.1
        try:
            while True:
                try:
                    status, _, data = conn.request("GET", self.path + "/ready", None, {}, self.timeout)
                    if status == 200:
                        status, _, data = conn.request("GET", self.path, None, {}, self.timeout)
                        if status == 200:
                            self._signature = _signature(json.loads(data))
                            return
                    why = f"{status}: {_error_text(data)}"
                except BackendError as err:
                    why = str(err)
                except (ValueError, KeyError, TypeError) as err:
                    raise BackendError(f"{self.where()}: its metadata cannot be read: {err}") from None
                if time.monotonic() >= next_log:
                    log.info("model %s: waiting for %s (%s)", self.label, self.where(), why)
                    next_log = time.monotonic() + WAIT_LOG_EVERY_SECONDS
                if stop is not None and stop.wait(delay):
                    raise BackendError(f"{self.where()}: stopped while waiting for it")
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            conn.close()

    def signature(self) -> Signature:
        if self._signature is None:
            raise BackendError(f"{self.where()} has not answered yet")
        return self._signature

    def init_context(self) -> ExecutionContext:
        with self._lock:
            ctx = self._pool.pop() if self._pool else None
        return ctx if ctx is not None else RemoteModelContext(self)

    def release(self, ctx: RemoteModelContext) -> None:
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(ctx)
                return
        ctx.conn.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for ctx in pool:
            ctx.conn.close()


def _signature(meta: dict[str, Any]) -> Signature:
    def infos(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
        out = []
        for t in items:
            shape = [int(d) for d in t["shape"]]
            dims = None if shape == [-1] else [None if d < 0 else d for d in shape]
            out.append(TensorInfo(str(t["name"]), DATATYPES.get(str(t["datatype"])), dims))
        return tuple(out)

    return Signature(infos(meta["inputs"]), infos(meta["outputs"]))


class _Slot:
    __slots__ = ("info", "etype", "dims", "data")

    def __init__(self, info: TensorInfo) -> None:
        self.info = info
        self.etype = info.etype
        self.dims: tuple[int, ...] | None = None
        self.data = b""


class RemoteModelContext(ExecutionContext):
    def __init__(self, graph: RemoteModelGraph) -> None:
        self.graph = graph
        self.conn = _Conn(graph.host, graph.port, graph.where())
        sig = graph.signature()
        self.inputs = [_Slot(i) for i in sig.inputs]
        self.outputs_info = sig.outputs
        self.body = b""
        self.base = 0  # address of self.body
        self.outputs: list[tuple[int, int, tuple[int, ...]]] = []  # (offset, length, shape)

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        slot = input_slot(self.inputs, index, etype)
        if dims != slot.dims:
            self.graph.bounds.check_input(f"input {index} ({slot.info.name})", slot.info.dims, etype, dims, nbytes)
        else:
            count = 1
            for d in dims:
                count *= d
            if count * etype.size != nbytes:
                raise InvalidTensor(f"input {index} of shape {list(dims)} takes {count * etype.size} bytes, not {nbytes}")
        slot.dims = dims
        slot.data = ctypes.string_at(src, nbytes)

    def compute(self) -> None:
        unset = [i for i, s in enumerate(self.inputs) if s.dims is None]
        if unset:
            raise InvalidTensor(f"input(s) {unset} were never set")
        self.outputs = []
        header = json.dumps({
            "inputs": [{"name": s.info.name, "shape": list(s.dims or ()), "datatype": datatype_name(s.etype),
                        "parameters": {BINARY_DATA_SIZE: len(s.data)}} for s in self.inputs],
            "parameters": {BINARY_DATA_OUTPUT: True},
        }, separators=(",", ":")).encode()  # fmt: skip
        body = b"".join([header, *(s.data for s in self.inputs)])
        headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
        left = deadlines.remaining()
        timeout = self.graph.timeout if left is None else min(self.graph.timeout, left)
        if timeout <= 0:
            raise BackendError(f"{self.graph.where()}: no time left for the inference")
        status, resp_headers, data = self.conn.request("POST", self.graph.path + "/infer", body, headers, timeout)
        if status != 200:
            reason = f"{self.graph.where()} answered {status}: {_error_text(data)}"
            if status == 400:
                raise InvalidTensor(reason)
            raise BackendError(reason)
        self._read_outputs(resp_headers, data)

    def _read_outputs(self, headers: dict[str, str], data: bytes) -> None:
        try:
            n = int(headers.get(HEADER_LENGTH.lower(), len(data)))
            doc = json.loads(data[:n])
            by_name = {o["name"]: o for o in doc["outputs"]}
            offset = n
            placed: dict[str, tuple[int, int, tuple[int, ...]]] = {}
            for out in doc["outputs"]:  # binary outputs follow the JSON in the order it lists them
                size = int(out["parameters"][BINARY_DATA_SIZE])
                placed[out["name"]] = (offset, size, tuple(int(d) for d in out["shape"]))
                offset += size
            if offset != len(data):
                raise ValueError(f"{len(data) - offset} bytes unaccounted for")
            outputs = [placed[info.name] for info in self.outputs_info if info.name in by_name]
        except (ValueError, KeyError, TypeError) as err:
            raise BackendError(f"{self.graph.where()}: its answer cannot be read: {err}") from None
        if len(outputs) != len(self.outputs_info):
            raise BackendError(f"{self.graph.where()}: its answer lacks outputs")
        for i, (_, size, _) in enumerate(outputs):
            self.graph.bounds.check_output(i, size)
        self.body = data
        self.base = int(np.frombuffer(data, dtype=np.uint8).ctypes.data) if data else 0
        self.outputs = outputs

    def output(self, index: int) -> tuple[int, int]:
        if not self.outputs:
            raise InvalidTensor("no output before compute")
        if not 0 <= index < len(self.outputs):
            raise InvalidTensor(f"output {index} does not exist (the model has {len(self.outputs)})")
        offset, size, _ = self.outputs[index]
        return self.base + offset, size

    def output_dims(self, index: int) -> tuple[int, ...]:
        self.output(index)
        return self.outputs[index][2]

    def cancel(self) -> bool:
        http_conn = self.conn.http
        sock = http_conn.sock if http_conn is not None else None
        if sock is None:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked read fails at once
        except OSError:
            pass
        return True

    def close(self) -> None:
        for s in self.inputs:
            s.dims, s.data = None, b""
        self.outputs, self.body, self.base = [], b"", 0
        self.graph.release(self)
