"""What crosses the boundary between the runtime and a model host: framed messages and tensor arenas.

Control messages are length-prefixed JSON (never pickle: a model host parses hostile models, so
the runtime must not trust what it sends back). The hot path, one `compute` with its inputs and
outputs, is a fixed binary layout, and the tensor bytes themselves never cross the socket: they
sit in an *arena*, a memfd both processes map.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import mmap
import os
import socket
import struct
import time
from typing import Any

from wasminfer_runtime.backends.base import (
    BackendError,
    ElementType,
    InvalidModel,
    InvalidTensor,
    Signature,
    TensorInfo,
    TooLarge,
    Unsupported,
)

# The largest message is a model's bytes' description or an error text, never tensor data.
MAX_MESSAGE = 1 << 20
# Inputs plus outputs of one execution context; beyond this the arena does not grow.
MAX_ARENA_BYTES = 1 << 30
PAGE = mmap.PAGESIZE

_LEN = struct.Struct("<I")
_FIRST_READ = 65536
_now = time.perf_counter

# op byte of a context channel message
OP_CHECK = b"V"  # one input, validated by the backend once per (index, type, dims, size)
OP_COMPUTE = b"C"
OP_COMPUTE_FRESH = b"F"  # the first compute of a new user: the host context forgets earlier inputs
OP_OUTPUT_DIMS = b"D"  # the shapes of the last compute's outputs (JSON), asked for only by who needs them
REPLY_OK = b"K"
REPLY_ERR = b"E"

ETYPES = list(ElementType)
ETYPE_CODE = {e: i for i, e in enumerate(ETYPES)}

# compute: arena size, output area offset, input count; then per input its place and shape
COMPUTE_HEAD = struct.Struct("<QQH")
INPUT_HEAD = struct.Struct("<IBBQQ")  # index (any u32 a guest passes), element type, rank, offset, byte count
# reply: arena size, output count; then per output (offset, byte count)
OUTPUTS_HEAD = struct.Struct("<QH")
OUTPUT = struct.Struct("<QQ")


class HostFailure(BackendError):
    """A model host failed a call: it died, hung, or ran past the invocation's deadline."""


class HostGone(HostFailure):
    """The model host died or stopped answering while a call was in flight."""


# Exceptions a model host may report, by name; anything else arrives as BackendError.
_ERRORS: dict[str, type[BackendError]] = {
    "TooLarge": TooLarge,
    "InvalidTensor": InvalidTensor,
    "InvalidModel": InvalidModel,
    "Unsupported": Unsupported,
    "BackendError": BackendError,
}


def error_payload(err: BaseException) -> bytes:
    kind = next((k for k, cls in _ERRORS.items() if type(err) is cls), "BackendError")
    for cls in type(err).__mro__:  # subclasses the backends define travel as their nearest known base
        if cls.__name__ in _ERRORS:
            kind = cls.__name__
            break
    text = str(err) or type(err).__name__
    return json.dumps({"kind": kind, "message": text[:4000]}).encode()


def raise_error(payload: bytes) -> None:
    try:
        doc = json.loads(payload)
        cls = _ERRORS.get(str(doc.get("kind")), BackendError)
        message = str(doc.get("message", ""))
    except (ValueError, AttributeError):
        raise BackendError("the model host sent an unreadable error") from None
    raise cls(message)


def send(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    frame = _LEN.pack(len(payload)) + payload
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


class Spinner:
    """How long a channel polls for its next message before it sleeps in the kernel.

    On a VM, a process that sleeps for the answer pays for its own wake-up and often for the idle
    vCPU's; polling briefly keeps a fast inference's round trip short, at the price of the CPU it
    burns. A channel polls only while its answers come within the budget, so a slow model or an
    idle channel costs nothing. Budget 0: never poll.
    """

    __slots__ = ("limit", "budget")

    def __init__(self, seconds: float) -> None:
        self.limit = self.budget = seconds

    def wait(self, sock: socket.socket) -> bytes:
        """The first bytes of the next message (b"" on EOF)."""
        if self.budget:
            timeout = sock.gettimeout()
            if timeout is not None:
                sock.settimeout(None)  # a socket with a timeout polls before every read
            end = _now() + self.budget
            try:
                while True:
                    try:
                        return sock.recv(_FIRST_READ, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if _now() >= end:
                            break
            finally:
                if timeout is not None:
                    sock.settimeout(timeout)
        started = _now()
        first = sock.recv(_FIRST_READ)
        self.budget = self.limit if _now() - started < self.limit else 0.0
        return first


def recv(sock: socket.socket, spinner: Spinner | None = None) -> bytes:
    """One framed message; HostGone on EOF or a frame that breaks the protocol.

    Each side sends one message and waits for the answer, so a read never takes the start of
    the next message: the first read takes the length and, usually, the whole body at once.
    """
    first = spinner.wait(sock) if spinner is not None else sock.recv(_FIRST_READ)
    if len(first) < 4:
        if not first:
            raise HostGone("the model host closed the connection")
        first += _recv_exact(sock, 4 - len(first))
    (n,) = _LEN.unpack_from(first)
    if n > MAX_MESSAGE:
        raise HostGone(f"a {n}-byte message")
    body = first[4:]
    if len(body) < n:
        body += _recv_exact(sock, n - len(body))
    elif len(body) > n:
        raise HostGone("a message arrived before its answer was asked for")
    return body


def recv_with_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4 + MAX_MESSAGE, 4)
    if len(msg) < 4:
        for fd in fds:
            os.close(fd)
        raise HostGone("connection closed")
    (n,) = _LEN.unpack(msg[:4])
    body = msg[4:]
    if n > MAX_MESSAGE or len(body) > n:
        for fd in fds:
            os.close(fd)
        raise HostGone("bad frame")
    if len(body) < n:
        body += _recv_exact(sock, n - len(body))
    return body, fds


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise HostGone("the model host closed the connection")
        got += k
    return bytes(buf)


def send_json(sock: socket.socket, doc: dict[str, Any], fds: list[int] | None = None) -> None:
    send(sock, json.dumps(doc).encode(), fds)


def round_up(n: int) -> int:
    return max(PAGE, -(-n // PAGE) * PAGE)


class Arena:
    """A shared memfd mapping; `addr` moves when it is remapped to a new size.

    The file is sealed against shrinking: a map never reaches past the end of its file, so
    neither side can make the other fault (SIGBUS) by truncating it. Memory goes back to the
    system with `release`, which frees pages and keeps the size.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = 0
        self._map: mmap.mmap | None = None
        self.addr = 0
        self.remap(size)

    @classmethod
    def create(cls, size: int, name: str = "wasminfer-tensors") -> Arena:
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        size = round_up(size)
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        return cls(fd, size)

    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def remap(self, size: int) -> None:
        if size == self.size and self._map is not None:
            return
        if self._map is not None:
            self._map.close()
            self._map = None
        self._map = mmap.mmap(self.fd, size)
        view = ctypes.c_char.from_buffer(self._map)
        self.addr = ctypes.addressof(view)
        del view  # without a live export the map can be closed or replaced later
        self.size = size

    def grow(self, size: int) -> None:
        """Make the file (both sides see it) at least `size` bytes and remap here."""
        size = round_up(size)
        if size <= self.size:
            return
        if self._map is not None:
            self._map.close()
            self._map = None
        os.ftruncate(self.fd, size)
        self.remap(size)

    def release(self, keep: int) -> None:
        """Give the pages past `keep` back to the system (their contents become zeros)."""
        keep = round_up(keep) if keep else 0
        if self._map is not None and keep < self.size:
            self._map.madvise(mmap.MADV_REMOVE, keep, self.size - keep)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        os.close(self.fd)
        self.addr = self.size = 0


def signature_doc(sig: Signature) -> dict[str, Any]:
    """A model's inputs and outputs as JSON (the `signature` request's reply)."""

    def info(t: TensorInfo) -> list[Any]:
        return [t.name, None if t.etype is None else t.etype.value, None if t.dims is None else list(t.dims)]

    return {"inputs": [info(t) for t in sig.inputs], "outputs": [info(t) for t in sig.outputs]}


def signature_from_doc(doc: dict[str, Any]) -> Signature:
    def info(item: list[Any]) -> TensorInfo:
        name, etype, dims = item
        return TensorInfo(str(name), None if etype is None else ElementType(etype),
                          None if dims is None else tuple(None if d is None else int(d) for d in dims))

    return Signature(tuple(info(i) for i in doc["inputs"]), tuple(info(o) for o in doc["outputs"]))
