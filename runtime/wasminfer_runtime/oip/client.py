"""A named model on a model server, behind the Backend interface: the guest's calls become Open
Inference Protocol requests (REST with binary tensor data, or gRPC with raw contents).

`set_input` checks the tensor against the model's metadata and copies it; `compute` is one request
on a kept-alive connection, within the model's timeout and the invocation's deadline; outputs are
read in place from the answer. A request is never sent twice: a kept-alive connection the server
closed while idle is seen before sending and replaced, and once a request went out, the model may
have run it. Errors keep the server's reason: a tensor it refuses is an invalid argument, anything else a
runtime error.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Sequence
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
MAX_HEADER_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024  # per recv: a larger request makes Python allocate (and the kernel map) that much each time
MAX_GRPC_OUTPUTS = 16  # the gRPC answer's cap counts this many outputs of max_output_bytes
WAIT_LOG_EVERY_SECONDS = 30.0  # while a model server is not ready yet, say so this often


class NotSent(BackendError):
    """The request never reached the server whole: another server holding the model may take it."""


class _Conn:
    """One kept-alive HTTP/1.1 connection to the model server.

    Requests are written in one send and answers parsed here, not with http.client: on loopback it
    cost about 250 us more per inference (headers and body sent apart, headers parsed by the email
    package), more than the whole rest of the remote path. Answers carry Content-Length or chunked
    bodies, as any HTTP/1.1 server sends them."""

    def __init__(self, host: str, port: int, where: str) -> None:
        self.host, self.port, self.where = host, port, where
        self.sock: socket.socket | None = None
        self.buf = b""

    def _open(self, timeout: float) -> socket.socket:
        sock = self.sock
        if sock is not None:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:  # the server closed it while idle (or sent what nothing asked for): a new one
                self.close()
                sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=min(timeout, CONNECT_TIMEOUT_SECONDS))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock, self.buf = sock, b""
        sock.settimeout(timeout)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.buf = b""

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float,
                max_body: int = 1 << 30) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request; never sent twice (once sent, the model may have run it). An answer longer than
        `max_body` is refused before it is read."""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body or b'')}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            sock = self._open(timeout)
            sock.sendall(message)
        except OSError as err:  # not connected, or not all sent: the server cannot have run it
            self.close()
            raise NotSent(f"{self.where} unreachable: {err.strerror or err}") from None
        try:
            return self._response(sock, max_body)
        except TimeoutError:
            self.close()
            raise BackendError(f"{self.where} did not answer within {timeout:.3g} s") from None
        except (ConnectionResetError, BrokenPipeError, EOFError) as err:
            self.close()
            raise BackendError(f"{self.where} closed the connection before answering{': ' + str(err) if str(err) else ''}") from None
        except OSError as err:
            self.close()
            raise BackendError(f"{self.where} unreachable: {err.strerror or err}") from None
        except ValueError as err:
            self.close()
            raise BackendError(f"{self.where}: not an HTTP answer: {err}") from None

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _response(self, sock: socket.socket, max_body: int) -> tuple[int, dict[str, str], bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise ValueError("headers too long")
            self._fill(sock)
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4 :]
        version, status, *_ = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(f"status line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = self._chunked(sock, max_body)
        else:
            length = int(headers.get("content-length", "0"))
            if length > max_body:
                raise ValueError(f"an answer of {length} bytes, more than the {max_body} it may take")
            while len(self.buf) < length:
                self._fill(sock)
            data, self.buf = self.buf[:length], self.buf[length:]
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            self.close()
        return int(status), headers, data

    def _line(self, sock: socket.socket) -> bytes:
        while (eol := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise ValueError("line too long")
            self._fill(sock)
        line, self.buf = self.buf[:eol], self.buf[eol + 2 :]
        return line

    def _chunked(self, sock: socket.socket, max_body: int) -> bytes:
        parts = []
        total = 0
        while (size := int(self._line(sock).split(b";")[0], 16)) > 0:
            total += size
            if total > max_body:
                raise ValueError(f"an answer of more than the {max_body} bytes it may take")
            while len(self.buf) < size + 2:
                self._fill(sock)
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2 :]
        while self._line(sock):  # trailers, up to the empty line
            pass
        return b"".join(parts)


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error") or data[:300].decode(errors="replace"))
    except (ValueError, AttributeError):
        return data[:300].decode(errors="replace")


# One inference's outputs: (shape, buffer, offset, length) each, in the model's output order.
Outputs = list[tuple[tuple[int, ...], bytes, int, int]]
# One inference's inputs: (name, datatype, shape, bytes), in the model's input order.
Inputs = Sequence[tuple[str, str, tuple[int, ...], bytes]]


class _RestLink:
    """A context's way to the server over REST: its own kept-alive connection."""

    def __init__(self, transport: RestTransport, max_output_bytes: int) -> None:
        self.t = transport
        self.max_output_bytes = max_output_bytes
        self.conn = _Conn(transport.host, transport.port, transport.where)

    def infer(self, inputs: Inputs, outputs: Sequence[TensorInfo], timeout: float) -> Outputs:
        header = json.dumps({
            "inputs": [{"name": n, "shape": list(shape), "datatype": dt, "parameters": {BINARY_DATA_SIZE: len(data)}}
                       for n, dt, shape, data in inputs],
            "parameters": {BINARY_DATA_OUTPUT: True},
        }, separators=(",", ":")).encode()  # fmt: skip
        body = b"".join([header, *(data for *_, data in inputs)])
        headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
        # The outputs may take max_output_bytes each (checked once they are read), plus their JSON.
        limit = self.max_output_bytes * len(outputs) + MAX_HEADER_BYTES
        status, resp_headers, data = self.conn.request("POST", self.t.path + "/infer", body, headers, timeout, limit)
        if status != 200:
            reason = f"{self.t.where} answered {status}: {_error_text(data)}"
            if status == 400:
                raise InvalidTensor(reason)
            raise BackendError(reason)
        try:
            n = int(resp_headers.get(HEADER_LENGTH.lower(), len(data)))
            doc = json.loads(data[:n])
            offset = n
            placed: dict[str, tuple[tuple[int, ...], bytes, int, int]] = {}
            for out in doc["outputs"]:  # binary outputs follow the JSON in the order it lists them
                size = int(out["parameters"][BINARY_DATA_SIZE])
                placed[out["name"]] = (tuple(int(d) for d in out["shape"]), data, offset, size)
                offset += size
            if offset != len(data):
                raise ValueError(f"{len(data) - offset} bytes unaccounted for")
            return [placed[info.name] for info in outputs]
        except (ValueError, KeyError, TypeError) as err:
            raise BackendError(f"{self.t.where}: its answer cannot be read: {err}") from None

    def cancel(self) -> bool:
        sock = self.conn.sock
        if sock is None:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked read fails at once
        except OSError:
            pass
        return True

    def close(self) -> None:
        self.conn.close()


class RestTransport:
    def __init__(self, host: str, port: int, remote_name: str) -> None:
        self.host, self.port = host, port
        self.path = f"/v2/models/{quote(remote_name, safe='')}"
        self.where = f"model {remote_name!r} on http://{host}:{port}"

    def metadata_if_ready(self, timeout: float) -> tuple[dict[str, Any] | None, str]:
        """The model's metadata once the server has it ready; else None and why not."""
        conn = _Conn(self.host, self.port, self.where)
        try:
            status, _, data = conn.request("GET", self.path + "/ready", None, {}, timeout)
            if status == 200:
                status, _, data = conn.request("GET", self.path, None, {}, timeout)
                if status == 200:
                    return dict(json.loads(data)), ""
            return None, f"{status}: {_error_text(data)}"
        finally:
            conn.close()

    def link(self, max_output_bytes: int) -> _RestLink:
        return _RestLink(self, max_output_bytes)

    def close(self) -> None:
        pass


class _GrpcLink:
    """A context's way to the server over gRPC: calls on the graph's one channel."""

    def __init__(self, transport: GrpcTransport) -> None:
        self.t = transport
        self.call: Any = None

    def infer(self, inputs: Inputs, outputs: Sequence[TensorInfo], timeout: float) -> Outputs:
        import grpc

        req = self.t.request_type(model_name=self.t.remote_name)
        for name, datatype, shape, data in inputs:
            req.inputs.add(name=name, datatype=datatype, shape=list(shape))
            req.raw_input_contents.append(data)
        try:
            self.call = self.t.infer.future(req, timeout=timeout)
            resp = self.call.result()
        except grpc.RpcError as err:
            code, details = err.code(), err.details()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidTensor(f"{self.t.where}: {details}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise BackendError(f"{self.t.where} did not answer within {timeout:.3g} s") from None
            raise BackendError(f"{self.t.where}: {code.name}: {details}") from None
        except grpc.FutureCancelledError:
            raise BackendError(f"{self.t.where}: the call was cancelled") from None
        finally:
            self.call = None
        by_name = {o.name: (tuple(int(d) for d in o.shape), raw) for o, raw in zip(resp.outputs, resp.raw_output_contents)}
        try:
            return [(by_name[i.name][0], by_name[i.name][1], 0, len(by_name[i.name][1])) for i in outputs]
        except KeyError as err:
            raise BackendError(f"{self.t.where}: its answer lacks output {err}") from None

    def cancel(self) -> bool:
        call = self.call
        return bool(call is not None and call.cancel())

    def close(self) -> None:
        pass


class GrpcTransport:
    def __init__(self, host: str, port: int, remote_name: str, max_receive: int) -> None:
        import grpc

        from wasminfer_runtime.oip.grpc_schema import SERVICE, message

        self.remote_name = remote_name
        self.where = f"model {remote_name!r} on grpc://{host}:{port}"
        self.channel = grpc.insecure_channel(f"{host}:{port}", options=[("grpc.max_receive_message_length", max_receive)])

        def rpc(method: str, request: str, response: str) -> Any:
            return self.channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=message(request).SerializeToString,
                                            response_deserializer=message(response).FromString)  # fmt: skip

        self.request_type = message("ModelInferRequest")
        self.infer = rpc("ModelInfer", "ModelInferRequest", "ModelInferResponse")
        self._ready = rpc("ModelReady", "ModelReadyRequest", "ModelReadyResponse")
        self._metadata = rpc("ModelMetadata", "ModelMetadataRequest", "ModelMetadataResponse")
        self._ready_request = message("ModelReadyRequest")(name=remote_name)
        self._metadata_request = message("ModelMetadataRequest")(name=remote_name)

    def metadata_if_ready(self, timeout: float) -> tuple[dict[str, Any] | None, str]:
        import grpc

        try:
            if not self._ready(self._ready_request, timeout=timeout).ready:
                return None, "not ready"
            meta = self._metadata(self._metadata_request, timeout=timeout)
        except grpc.RpcError as err:
            return None, f"{err.code().name}: {err.details()}"

        def tensors(items: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return {"inputs": tensors(meta.inputs), "outputs": tensors(meta.outputs)}, ""

    def link(self, max_output_bytes: int) -> _GrpcLink:
        return _GrpcLink(self)

    def close(self) -> None:
        self.channel.close()


class RemoteModelGraph(Graph):
    """A model on one model server, or on several that all hold it; its signature comes from the
    first server's metadata. Contexts take the servers in turn, and a call that could not reach its
    server goes to the next (REST; over gRPC a call is never moved)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.name, ShapeBounds(cfg.options))
        assert cfg.remote is not None
        self.transports: list[RestTransport | GrpcTransport] = []
        for url in cfg.remote.addresses:
            parts = urlsplit(url)
            host, port = parts.hostname or "", parts.port or 80
            if parts.scheme == "grpc":
                # A model's outputs, each within max_output_bytes; gRPC takes at most 2 GiB - 1.
                limit = min((1 << 31) - 1, cfg.options.max_output_bytes * MAX_GRPC_OUTPUTS + MAX_HEADER_BYTES)
                self.transports.append(GrpcTransport(host, port, cfg.remote_name, limit))
            else:
                self.transports.append(RestTransport(host, port, cfg.remote_name))
        self.timeout = cfg.remote.timeout_seconds
        self.pool_size = cfg.options.pool_size
        self._pool: list[RemoteModelContext] = []
        self._lock = threading.Lock()
        self._turn = 0
        self._signature: Signature | None = None

    def where(self) -> str:
        if len(self.transports) == 1:
            return self.transports[0].where
        return f"{self.transports[0].where} and {len(self.transports) - 1} more server(s)"

    def next_transport(self) -> int:
        with self._lock:
            self._turn = (self._turn + 1) % len(self.transports)
            return self._turn

    def wait_ready(self, stop: threading.Event | None = None) -> None:
        """Block until a server says the model is ready, then read its metadata (the signature)."""
        next_log = time.monotonic()
        delay = 0.1
        while True:
            reasons = []
            for transport in self.transports:
                try:
                    meta, why = transport.metadata_if_ready(self.timeout)
                    if meta is not None:
                        self._signature = _signature(meta)
                        return
                except BackendError as err:
                    why = str(err)
                except (ValueError, KeyError, TypeError) as err:
                    raise BackendError(f"{transport.where}: its metadata cannot be read: {err}") from None
                reasons.append(why if len(self.transports) == 1 else f"{transport.where}: {why}")
            if time.monotonic() >= next_log:
                log.info("model %s: waiting for %s (%s)", self.label, self.where(), "; ".join(reasons))
                next_log = time.monotonic() + WAIT_LOG_EVERY_SECONDS
            if stop is not None and stop.wait(delay):
                raise BackendError(f"{self.where()}: stopped while waiting for it")
            if stop is None:
                time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def signature(self) -> Signature:
        if self._signature is None:
            raise BackendError(f"{self.where()} has not answered yet")
        return self._signature

    def init_context(self) -> ExecutionContext:
        with self._lock:
            ctx = self._pool.pop() if self._pool else None
        return ctx if ctx is not None else RemoteModelContext(self, self.next_transport())

    def release(self, ctx: RemoteModelContext) -> None:
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(ctx)
                return
        ctx.link.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for ctx in pool:
            ctx.link.close()
        for transport in self.transports:
            transport.close()


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
    def __init__(self, graph: RemoteModelGraph, transport: int) -> None:
        self.graph = graph
        self.transport = transport
        self.link: _RestLink | _GrpcLink = graph.transports[transport].link(graph.bounds.max_output_bytes)
        sig = graph.signature()
        self.inputs = [_Slot(i) for i in sig.inputs]
        self.outputs_info = sig.outputs
        self.outputs: list[tuple[int, int, tuple[int, ...]]] = []  # (address, length, shape)
        self._keep: list[bytes] = []  # the buffers the output addresses point into

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        slot = input_slot(self.inputs, index, etype)
        if dims != slot.dims:
            self.graph.bounds.check_input(f"input {index} ({slot.info.name})", slot.info.dims, etype, dims, nbytes)
        elif math.prod(dims) * etype.size != nbytes:  # dims already set were checked then; the size may not be
            raise InvalidTensor(f"input {index} of shape {list(dims)} takes {math.prod(dims) * etype.size} bytes, not {nbytes}")
        slot.dims = dims
        slot.data = ctypes.string_at(src, nbytes)

    def compute(self) -> None:
        unset = [i for i, s in enumerate(self.inputs) if s.dims is None]
        if unset:
            raise InvalidTensor(f"input(s) {unset} were never set")
        self.outputs, self._keep = [], []
        if any(info.etype is None for info in self.outputs_info):
            raise BackendError(f"{self.graph.where()} has an output of a datatype wasi-nn cannot pass")
        left = deadlines.remaining()
        timeout = self.graph.timeout if left is None else min(self.graph.timeout, left)
        if timeout <= 0:
            raise BackendError(f"{self.graph.where()}: no time left for the inference")
        inputs = [(s.info.name, datatype_name(s.etype), s.dims or (), s.data) for s in self.inputs]
        for attempt in range(len(self.graph.transports)):
            try:
                results = self.link.infer(inputs, self.outputs_info, timeout)
                break
            except NotSent as err:
                if attempt + 1 == len(self.graph.transports):
                    raise
                log.info("model %s: %s; trying the next server", self.graph.label, err)
                self.link.close()
                self.transport = (self.transport + 1) % len(self.graph.transports)
                self.link = self.graph.transports[self.transport].link(self.graph.bounds.max_output_bytes)
        for i, (_, _, _, size) in enumerate(results):
            self.graph.bounds.check_output(i, size)
        outputs = []
        for shape, buf, offset, size in results:
            base = int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf else 0
            outputs.append((base + offset, size, shape))
            self._keep.append(buf)
        self.outputs = outputs

    def output(self, index: int) -> tuple[int, int]:
        if not self.outputs:
            raise InvalidTensor("no output before compute")
        if not 0 <= index < len(self.outputs):
            raise InvalidTensor(f"output {index} does not exist (the model has {len(self.outputs)})")
        addr, size, _ = self.outputs[index]
        return addr, size

    def output_dims(self, index: int) -> tuple[int, ...]:
        self.output(index)
        return self.outputs[index][2]

    def cancel(self) -> bool:
        return self.link.cancel()

    def close(self) -> None:
        for s in self.inputs:
            s.dims, s.data = None, b""
        self.outputs, self._keep = [], []
        self.graph.release(self)
