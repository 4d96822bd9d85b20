"""Graphs and execution contexts of a model host, seen from the runtime through the Backend interface.

A RemoteContext owns one connection to its host and one tensor arena. `set_input` copies the
guest's bytes into the arena; the first time an (input, type, shape, size) is seen, the host's
backend validates it, so errors reach the guest from `set_input` exactly as they would in
process. `compute` is then one round trip: the inputs' places go out, the outputs' places come
back, and `output` points into the arena. Contexts are pooled per graph, connection and all.
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import threading
import time
from collections.abc import Sequence

from wasminfer_runtime import deadlines
from wasminfer_runtime.backends.base import (
    BackendError,
    ElementType,
    ExecutionContext,
    Graph,
    InvalidTensor,
    ShapeBounds,
    Signature,
)
from wasminfer_runtime.modelhost import wire

_memmove = ctypes.memmove
_INITIAL_ARENA = 64 * 1024
_KEEP_ARENA = 4 * 1024 * 1024  # a pooled context keeps at most this much arena
_MAX_CHECKED = 256  # validated input signatures remembered per context
CANCEL_GRACE_SECONDS = 1.0  # how long a cancelled compute may take to give up before its host is killed


class HostDown(wire.HostFailure):
    """The model host is not running (it crashed, or is restarting)."""


class HostEndpoint:
    """A model host as its callers see it: where to connect, which life of it this is, how to end it.

    The runtime's own hosts (supervisor.ModelHost) and, in a serving process, the hosts of named
    models that the pod's supervisor runs (link.HostLink) are both this.
    """

    name: str
    generation: int  # counts the host's starts: contexts and graphs of an earlier one are stale
    poll_seconds: float  # see wire.Spinner

    def connect(self) -> socket.socket:
        raise NotImplementedError

    def gone_error(self, what: str, err: BaseException | None = None) -> HostDown:
        """Why a call failed, for the guest."""
        raise NotImplementedError

    def dial(self, path: str) -> socket.socket:
        """A connection to the host listening at `path`."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as err:
            sock.close()
            raise self.gone_error("connect", err) from None
        return sock

    def kill(self, reason: str) -> None:
        """End the host now (it hangs); whoever runs it starts it again."""
        raise NotImplementedError

    def request(self, doc: dict[str, object], fds: Sequence[int] = ()) -> dict[str, object]:
        """A one-shot request (load, unload, cancel), bounded by the invocation's deadline."""
        sock = self.connect()
        try:
            left = deadlines.remaining()
            sock.settimeout(None if left is None else max(left, 0.001))  # 0 would mean non-blocking
            wire.send_json(sock, doc, list(fds) or None)
            return reply_json(wire.recv(sock))
        except TimeoutError:
            self.kill(f"a {doc.get('op')} ran past the invocation's deadline")
            raise DeadlineExceeded(f"the model host {self.name}: {doc.get('op')} ran past the invocation's "
                                   "deadline; the host was restarted") from None
        except (OSError, wire.HostGone) as err:
            raise self.gone_error(str(doc.get("op")), err) from None
        finally:
            sock.close()

    def cancel(self, context: int) -> bool:
        try:
            with deadlines.bound(time.monotonic() + 1.0):
                return bool(self.request({"op": "cancel", "context": context}).get("cancelled"))
        except BackendError:
            return False

    def unload(self, graph: int) -> None:
        try:
            self.request({"op": "unload", "graph": graph})
        except BackendError:
            pass  # the host is gone, and the graph with it


class RemoteContext(ExecutionContext):
    def __init__(self, graph: RemoteGraph) -> None:
        self.graph = graph
        self.host = graph.host
        self.generation = self.host.generation
        self.arena = wire.Arena.create(_INITIAL_ARENA)
        self.used = 0  # inputs occupy [0, used); outputs are written after
        self.slots: dict[int, tuple[int, int]] = {}  # input index -> (offset, capacity)
        self.pending: dict[int, bytes] = {}  # input index -> its descriptor in the compute message
        self.checked: set[tuple[int, ElementType, tuple[int, ...], int]] = set()
        self.outputs: list[tuple[int, int]] = []
        self.output_shapes: list[tuple[int, ...]] | None = None  # asked for after a compute, when needed
        self.fresh = True
        self.broken = False
        self.spinner = wire.Spinner(self.host.poll_seconds)
        try:
            self.sock = self.host.connect()
            try:
                wire.send_json(self.sock, {"op": "context", "graph": graph.gid, "size": self.arena.size},
                               [self.arena.fd])
            except OSError as err:  # the host died after it accepted
                self.sock.close()
                raise self.host.gone_error(f"model {graph.label!r}", err) from None
            doc = reply_json(self._recv(None))
            self.cid = int(str(doc["context"]))
        except BaseException:
            self.arena.close()
            raise

    # -- the Backend interface -------------------------------------------------------------------

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        self._usable()
        slot = self.slots.get(index)
        undo = None
        if slot is None or slot[1] < nbytes:
            undo = (self.used, slot)
            slot = self._allocate(index, nbytes)
        _memmove(self.arena.addr + slot[0], src, nbytes)
        desc = wire.INPUT_HEAD.pack(index, wire.ETYPE_CODE[etype], len(dims), slot[0], nbytes)
        desc += struct.pack(f"<{len(dims)}I", *dims)
        key = (index, etype, dims, nbytes)
        if key not in self.checked:
            try:
                self._call(wire.OP_CHECK + wire.COMPUTE_HEAD.pack(self.arena.size, self.used, 1) + desc,
                           "set_input")
            except BackendError:
                if undo is not None:  # a refused input keeps no room in the arena
                    self._undo_allocation(index, *undo)
                raise
            if len(self.checked) < _MAX_CHECKED:
                self.checked.add(key)
        self.pending[index] = desc

    def compute(self) -> None:
        self._usable()
        op = wire.OP_COMPUTE_FRESH if self.fresh else wire.OP_COMPUTE
        head = wire.COMPUTE_HEAD.pack(self.arena.size, self.used, len(self.pending))
        self.outputs = []
        self.output_shapes = None
        reply = self._call(op + head + b"".join(self.pending.values()), "compute")
        self.fresh = False
        _, count = wire.OUTPUTS_HEAD.unpack_from(reply, 1)
        size = self.arena.file_size()  # what the host grew it to; it cannot shrink it (sealed)
        if size > wire.MAX_ARENA_BYTES:
            self.broken = True
            raise BackendError(f"the model host grew the tensor arena to {size} bytes")
        if size != self.arena.size:
            self.arena.remap(size)
        self.outputs = [wire.OUTPUT.unpack_from(reply, 1 + wire.OUTPUTS_HEAD.size + i * wire.OUTPUT.size)
                        for i in range(count)]
        for offset, n in self.outputs:
            if offset + n > self.arena.size:
                self.outputs = []
                raise BackendError("the model host placed an output outside the tensor arena")

    def output(self, index: int) -> tuple[int, int]:
        if not self.outputs:
            raise InvalidTensor("no output before compute")
        if not 0 <= index < len(self.outputs):
            raise InvalidTensor(f"output {index} does not exist (the model has {len(self.outputs)})")
        offset, n = self.outputs[index]
        return self.arena.addr + offset, n

    def output_dims(self, index: int) -> tuple[int, ...]:
        self.output(index)  # the same checks
        if self.output_shapes is None:
            self._usable()
            reply = self._call(wire.OP_OUTPUT_DIMS + str(len(self.outputs)).encode(), "output shapes")
            try:
                self.output_shapes = [tuple(int(d) for d in dims) for dims in json.loads(reply[1:])]
            except (ValueError, TypeError):
                raise BackendError("the model host sent output shapes that are not JSON") from None
        if index >= len(self.output_shapes):
            raise BackendError("the model host sent too few output shapes")
        return self.output_shapes[index]

    def close(self) -> None:
        self.graph.release(self)

    # -- internals -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Ready for the next user: no inputs, no outputs, and a fresh context on the host side."""
        self.pending.clear()
        self.outputs = []
        self.output_shapes = None
        self.fresh = True
        if self.arena.size > _KEEP_ARENA:  # a large request's pages go back to the system
            self.arena.release(0)
            self.slots.clear()
            self.used = 0

    def healthy(self) -> bool:
        return not self.broken and self.generation == self.host.generation

    def shut(self) -> None:
        """Close the connection (the host gives its context back) and the arena."""
        try:
            self.sock.close()
        finally:
            self.arena.close()

    def _usable(self) -> None:
        if not self.healthy():
            raise self.host.gone_error(f"model {self.graph.label!r}")

    def _allocate(self, index: int, nbytes: int) -> tuple[int, int]:
        offset = self.used
        end = offset + wire.round_up(nbytes)
        if end > wire.MAX_ARENA_BYTES:
            raise InvalidTensor(f"input {index} of {nbytes} bytes: the inputs would exceed "
                                f"{wire.MAX_ARENA_BYTES} bytes")
        if end > self.arena.size:
            self.arena.grow(min(wire.MAX_ARENA_BYTES, max(end, 2 * self.arena.size)))
        self.used = end
        self.slots[index] = (offset, end - offset)
        return self.slots[index]

    def _undo_allocation(self, index: int, used: int, previous: tuple[int, int] | None) -> None:
        self.used = used
        if previous is None:
            self.slots.pop(index, None)
        else:
            self.slots[index] = previous
        self.pending.pop(index, None)
        self.arena.release(used)

    def _call(self, msg: bytes, what: str) -> bytes:
        try:
            wire.send(self.sock, msg)
            left = deadlines.remaining()
            reply = self._recv(None if left is None else max(left, 0.001))  # 0 would mean non-blocking
        except OSError as err:
            self.broken = True
            raise self.host.gone_error(f"model {self.graph.label!r} ({what})", err) from None
        if reply[:1] == wire.REPLY_ERR:
            wire.raise_error(reply[1:])
        if reply[:1] != wire.REPLY_OK:
            self.broken = True
            raise BackendError(f"the model host of {self.graph.label!r} broke the protocol")
        return reply

    def _recv(self, timeout: float | None) -> bytes:
        """The next reply; past the deadline the compute is cancelled, or its host killed."""
        self.sock.settimeout(timeout)
        try:
            return wire.recv(self.sock, self.spinner)
        except TimeoutError:
            pass
        except (wire.HostGone, ConnectionError):  # EOF, or a reset from a host that died mid-call
            self.broken = True
            raise self.host.gone_error(f"model {self.graph.label!r}") from None
        self.broken = True  # a late reply would answer the wrong call: this channel is done
        cancelled = self.host.cancel(self.cid)
        self.sock.settimeout(CANCEL_GRACE_SECONDS)
        try:
            if cancelled:
                wire.recv(self.sock)
                raise DeadlineExceeded(f"model {self.graph.label!r}: cancelled at the invocation's deadline")
        except (TimeoutError, wire.HostGone):
            pass
        self.host.kill(f"a call on model {self.graph.label!r} ran past its deadline and could not be cancelled")
        raise DeadlineExceeded(f"model {self.graph.label!r}: the call ran past the invocation's deadline; "
                               "its model host was restarted")


class DeadlineExceeded(wire.HostFailure):
    """A call into a model host outlived the invocation's deadline."""


class RemoteGraph(Graph):
    def __init__(self, host: HostEndpoint, gid: int, label: str, bounds: ShapeBounds, pool_size: int,
                 owned: bool) -> None:
        super().__init__(label, bounds)  # the host's backend applies the bounds
        self.host = host
        self.gid = gid
        self.pool_size = pool_size
        self.owned = owned  # loaded from a guest's bytes: dies with its host, unloaded on close
        self.generation = host.generation
        self._pool: list[RemoteContext] = []
        self._lock = threading.Lock()
        self._signature: Signature | None = None

    def init_context(self) -> ExecutionContext:
        if self.owned and self.generation != self.host.generation:
            raise self.host.gone_error(f"model {self.label!r}")
        while True:
            with self._lock:
                ctx = self._pool.pop() if self._pool else None
            if ctx is None:
                return RemoteContext(self)
            if ctx.healthy():
                return ctx
            ctx.shut()

    def signature(self) -> Signature:
        if self._signature is None:
            self._signature = wire.signature_from_doc(self.host.request({"op": "signature", "graph": self.gid}))
        return self._signature

    def release(self, ctx: RemoteContext) -> None:
        ctx.reset()
        if ctx.healthy():
            with self._lock:
                if len(self._pool) < self.pool_size:
                    self._pool.append(ctx)
                    return
        ctx.shut()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for ctx in pool:
            ctx.shut()
        if self.owned and self.generation == self.host.generation:
            self.host.unload(self.gid)


def reply_json(reply: bytes) -> dict[str, object]:
    if reply[:1] == wire.REPLY_ERR:
        wire.raise_error(reply[1:])
    try:
        doc = json.loads(reply[1:])
    except ValueError:
        raise BackendError("the model host sent a reply that is not JSON") from None
    if reply[:1] != wire.REPLY_OK or not isinstance(doc, dict):
        raise BackendError("the model host broke the protocol")
    return doc
