"""The model host process: loads models with the backends and runs their inferences for the runtime.

Started by the runtime's supervisor (supervisor.py), never by hand. It listens on a socket the
runtime created and passed in; each connection is one of:
- a context channel: an execution context with its tensor arena, serving set_input checks and
  computes until the runtime closes it;
- a one-shot request: load model bytes, unload a graph, cancel a running compute.
Status lines (JSON) go to stdout, logs to stderr. When the runtime dies its end of stdin closes,
and the host exits with it.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

from wasminfer_runtime.backends import get_backend
from wasminfer_runtime.backends.base import BackendError, ExecutionContext, Graph, InvalidModel
from wasminfer_runtime.config import BackendName, Device, ModelConfig, ModelFormat
from wasminfer_runtime.modelhost import wire
from wasminfer_runtime.modelhost.caps import MemoryCap, rlimit_headroom

log = logging.getLogger("wasminfer_runtime.modelhost")

_memmove = ctypes.memmove


class Host:
    def __init__(self, name: str, poll_seconds: float) -> None:
        self.name = name
        self.poll_seconds = poll_seconds
        self.graphs: dict[int, Graph] = {}
        self.contexts: dict[int, ExecutionContext] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            raw, fds = wire.recv_with_fds(conn)
            doc = json.loads(raw)
            op = doc.get("op")
            if op == "context":
                self._context_channel(conn, int(doc["graph"]), fds.pop(), int(doc["size"]))
            elif op == "load":
                self._reply(conn, lambda: self._load(doc, fds.pop()))
            elif op == "unload":
                self._reply(conn, lambda: self._unload(int(doc["graph"])))
            elif op == "signature":
                self._reply(conn, lambda: self._signature(int(doc["graph"])))
            elif op == "cancel":
                self._reply(conn, lambda: self._cancel(int(doc["context"])))
        except (wire.HostGone, OSError, ValueError, KeyError, IndexError):
            pass  # the runtime went away or spoke nonsense: drop the connection only
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    @staticmethod
    def _reply(conn: socket.socket, call: Any) -> None:
        try:
            result = call()
        except Exception as err:  # reported to the runtime as the backend's error class
            wire.send(conn, wire.REPLY_ERR + wire.error_payload(err))
        else:
            wire.send(conn, wire.REPLY_OK + json.dumps(result).encode())

    # -- one-shot requests ---------------------------------------------------------------------

    def _load(self, doc: dict[str, Any], fd: int) -> dict[str, int]:
        sizes = [int(n) for n in doc["sizes"]]
        total = sum(sizes)
        try:
            with mmap.mmap(fd, max(total, 1), prot=mmap.PROT_READ) as m:
                parts, at = [], 0
                for n in sizes:
                    parts.append(m[at:at + n])
                    at += n
        finally:
            os.close(fd)
        backend = get_backend(BackendName(doc["backend"]))
        graph = backend.load_bytes(ModelFormat(doc["format"]), parts, Device(doc["device"]))
        with self._lock:
            gid = next(self._ids)
            self.graphs[gid] = graph
        return {"graph": gid}

    def _signature(self, gid: int) -> dict[str, Any]:
        graph = self.graphs.get(gid)
        if graph is None:
            raise InvalidModel(f"no graph {gid} in this host")
        return wire.signature_doc(graph.signature())

    def _unload(self, gid: int) -> dict[str, int]:
        with self._lock:
            graph = self.graphs.pop(gid, None)
        if graph is not None:
            graph.close()
        return {}

    def _cancel(self, cid: int) -> dict[str, bool]:
        ctx = self.contexts.get(cid)
        return {"cancelled": ctx is not None and ctx.cancel()}

    # -- context channels ----------------------------------------------------------------------

    def _context_channel(self, conn: socket.socket, gid: int, fd: int, size: int) -> None:
        graph = self.graphs.get(gid)
        if graph is None:
            os.close(fd)
            wire.send(conn, wire.REPLY_ERR + wire.error_payload(InvalidModel(f"no graph {gid} in this host")))
            return
        arena = wire.Arena(fd, size)
        try:
            ctx = graph.init_context()
        except Exception as err:
            arena.close()
            wire.send(conn, wire.REPLY_ERR + wire.error_payload(err))
            return
        with self._lock:
            cid = next(self._ids)
            self.contexts[cid] = ctx
        try:
            wire.send(conn, wire.REPLY_OK + json.dumps({"context": cid}).encode())
            self._serve_context(conn, cid, graph, arena)
        finally:
            with self._lock:
                ctx = self.contexts.pop(cid, ctx)
            ctx.close()
            arena.close()

    def _fresh_context(self, cid: int, ctx: ExecutionContext, graph: Graph) -> ExecutionContext:
        """A pooled context for a new user: nothing of the previous user's inputs or outputs."""
        fresh = graph.init_context()
        with self._lock:
            self.contexts[cid] = fresh
        ctx.close()
        return fresh

    def _serve_context(self, conn: socket.socket, cid: int, graph: Graph, arena: wire.Arena) -> None:
        ctx = self.contexts[cid]
        spinner = wire.Spinner(self.poll_seconds)
        while True:
            try:
                msg = wire.recv(conn, spinner)
            except wire.HostGone:
                return
            try:
                if msg[:1] == wire.OP_CHECK:
                    _, count = _unpack_head(msg, arena)
                    _apply_inputs(ctx, arena, msg, count)
                    reply = wire.REPLY_OK
                elif msg[:1] == wire.OP_COMPUTE_FRESH:
                    ctx = self._fresh_context(cid, ctx, graph)
                    reply = self._compute(ctx, arena, msg)
                elif msg[:1] == wire.OP_COMPUTE:
                    reply = self._compute(ctx, arena, msg)
                elif msg[:1] == wire.OP_OUTPUT_DIMS:
                    count = int(json.loads(msg[1:]))
                    reply = wire.REPLY_OK + json.dumps([list(ctx.output_dims(i)) for i in range(count)]).encode()
                else:
                    return
            except Exception as err:  # a backend error ends this call only, never the channel
                reply = wire.REPLY_ERR + wire.error_payload(err)
            wire.send(conn, reply)

    @staticmethod
    def _compute(ctx: ExecutionContext, arena: wire.Arena, msg: bytes) -> bytes:
        out_at, count = _unpack_head(msg, arena)
        _apply_inputs(ctx, arena, msg, count)
        ctx.compute()
        outputs: list[tuple[int, int]] = []
        index = 0
        while True:
            try:
                outputs.append(ctx.output(index))
            except BackendError:
                break  # past the last output
            index += 1
        need = out_at + sum(wire.round_up(n) for _, n in outputs)
        if need > arena.size:
            if need > wire.MAX_ARENA_BYTES:
                raise BackendError(f"outputs of {need - out_at} bytes exceed the {wire.MAX_ARENA_BYTES}-byte bound")
            arena.grow(need)
        parts = [wire.OUTPUTS_HEAD.pack(arena.size, len(outputs))]
        at = out_at
        for addr, n in outputs:
            _memmove(arena.addr + at, addr, n)
            parts.append(wire.OUTPUT.pack(at, n))
            at += wire.round_up(n)
        return wire.REPLY_OK + b"".join(parts)


def _unpack_head(msg: bytes, arena: wire.Arena) -> tuple[int, int]:
    """Map the arena at the size the runtime gave it; (output area offset, input count)."""
    size, out_at, count = wire.COMPUTE_HEAD.unpack_from(msg, 1)
    if size > wire.MAX_ARENA_BYTES or out_at > size:
        raise BackendError(f"a tensor arena of {size} bytes")
    arena.remap(size)
    return out_at, count


def _apply_inputs(ctx: ExecutionContext, arena: wire.Arena, msg: bytes, count: int) -> None:
    at = 1 + wire.COMPUTE_HEAD.size
    for _ in range(count):
        index, code, rank, offset, nbytes = wire.INPUT_HEAD.unpack_from(msg, at)
        at += wire.INPUT_HEAD.size
        dims = struct.unpack_from(f"<{rank}I", msg, at)
        at += 4 * rank
        if offset + nbytes > arena.size or code >= len(wire.ETYPES):
            raise BackendError(f"input {index} lies outside the tensor arena")
        ctx.set_input(index, wire.ETYPES[code], dims, arena.addr + offset, nbytes)


def _status(**doc: Any) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _watch_parent() -> None:
    """Exit when the runtime is gone (stdin closes), so no host outlives it."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wasminfer-model-host")
    p.add_argument("--name", required=True)
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--backends", default="", help="backends to import before the memory cap applies")
    p.add_argument("--model", help="a named model's configuration (JSON) to load at start")
    p.add_argument("--memory-bytes", type=int, default=0)
    p.add_argument("--cap", default="none", help="how the memory cap applies: cgroup:PATH, rlimit or none")
    p.add_argument("--poll-seconds", type=float, default=0.0, help="see wire.Spinner")
    args = p.parse_args(argv)
    # The lifeline alone ends a host: a Ctrl-C or SIGTERM sent to the whole process group must not
    # take the model away while the runtime drains its requests.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=os.environ.get("WASMINFER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s model-host[{args.name}] %(message)s")
    cap = MemoryCap.parse(args.cap, args.memory_bytes)
    cap.join()
    host = Host(args.name, args.poll_seconds)
    cfg = ModelConfig.model_validate_json(args.model) if args.model else None
    for name in filter(None, args.backends.split(",")):
        get_backend(BackendName(name))  # native libraries count in the baseline, not against the cap
    # Only now: OpenVINO's Core forks a probe, and a fork taken while another thread runs can hang.
    threading.Thread(target=_watch_parent, daemon=True, name="lifeline").start()
    cap.apply_rlimit(rlimit_headroom())
    listener = socket.socket(fileno=args.listen_fd)
    if cfg is not None:
        started = time.perf_counter()
        try:
            graph = get_backend(cfg.resolved_backend).load_model(cfg)
        except MemoryError:
            _status(event="failed", error=f"needs more memory than its {cap.describe()}")
            return 1
        except BackendError as err:
            _status(event="failed", error=str(err))
            return 1
        host.graphs[0] = graph
        _status(event="ready", seconds=round(time.perf_counter() - started, 3))
    else:
        _status(event="ready", seconds=0)
    host.serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
