"""WASI `poll_oneoff` that keeps to the invocation's deadline and wakes when the server stops.

The epoch deadline (executor.py) interrupts wasm code, never a host call: a guest sleeping in
wasmtime's own `poll_oneoff` (C `sleep()`/`nanosleep`, Go `time.Sleep`) for an hour would hold
its invocation thread for the hour. This replacement, defined over wasmtime's, sleeps until the
earliest clock subscription, the invocation's deadline or the server's stop, whichever comes
first. Woken by either of the last two, it ends the invocation with wasmtime's interrupt trap,
which the executor reports as a timeout, as it does when the epoch deadline passes.

fd subscriptions are reported ready at once: a worker's stdio is in memory and its folders are
files, which wasmtime reports ready too. Every guest pointer and length is checked against the
memory's size: a bad one returns `fault`, never touches host memory.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
import time
from dataclasses import dataclass

import wasmtime
from wasmtime import _ffi as ffi

from wasminfer_runtime import capi

log = logging.getLogger(__name__)

MODULE = "wasi_snapshot_preview1"
NAME = "poll_oneoff"

# errno values of WASI preview1
ERRNO_SUCCESS = 0
ERRNO_FAULT = 21
ERRNO_INVAL = 28

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
EVENT_CLOCK, EVENT_FD_READ, EVENT_FD_WRITE = 0, 1, 2
SUBCLOCK_ABSTIME = 1
# More subscriptions in one call get inval: each costs Python time with the GIL held, and real
# programs wait on a few fds and one timer.
MAX_SUBSCRIPTIONS = 4096

# subscription: userdata u64, tag u8, then the union at 16 (clock: id u32, timeout u64 @24,
# precision u64 @32, flags u16 @40; fd: fd u32 @16).
_SUBSCRIPTION = struct.Struct("<QB7xI4xQQH6x")
# event: userdata u64, error u16, type u8, then fd_readwrite at 16 (nbytes u64, flags u16).
_EVENT = struct.Struct("<QHB5xQH6x")
assert _SUBSCRIPTION.size == 48 and _EVENT.size == 32

_VAL_RAW_U32 = 4  # a wasmtime_val_raw_t is 16 bytes: four u32 words, an i32 in the first
_ARGS = ctypes.c_uint32 * (_VAL_RAW_U32 * 4)
_MEMORY_OFFSET = ffi.wasmtime_extern_t.of.offset
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_INTERRUPT = wasmtime.TrapCode.INTERRUPT.value


@dataclass
class Deadline:
    """One invocation's bounds, bound to its thread while it runs (see `bind`)."""

    at_ns: int  # time.monotonic_ns() when its timeout passes
    stop: threading.Event  # set when the server stops: every sleep ends at once
    # time.monotonic_ns() when the guest's monotonic clock read 0 (set once its WASI context exists)
    guest_clock_zero_ns: int = 0

    @classmethod
    def after(cls, seconds: float, stop: threading.Event) -> Deadline:
        now = time.monotonic_ns()
        return cls(now + int(seconds * 1e9), stop, now)


_local = threading.local()


def bind(deadline: Deadline | None) -> None:
    """Make `deadline` the one this thread's poll_oneoff calls keep to (None: no bound)."""
    _local.deadline = deadline


def _current() -> Deadline | None:
    return getattr(_local, "deadline", None)


class _Interrupted(Exception):
    """The invocation must end: its deadline passed or the server stops."""


class _Fault(Exception):
    """A guest pointer or length outside its memory."""


class _GuestMemory:
    def __init__(self, caller: int) -> None:
        export = ffi.wasmtime_extern_t()
        if not capi.caller_export_get(caller, b"memory", 6, ctypes.addressof(export)):
            raise _Fault()
        if ctypes.c_uint8.from_buffer(export).value != _EXTERN_MEMORY:  # `kind`, the first field
            raise _Fault()
        ctx = capi.caller_context(caller)
        at = ctypes.addressof(export) + _MEMORY_OFFSET
        self.base: int = capi.memory_data(ctx, at)
        self.size: int = capi.memory_data_size(ctx, at)

    def check(self, ptr: int, length: int) -> int:
        if ptr + length > self.size:
            raise _Fault()
        return self.base + ptr

    def read(self, ptr: int, length: int) -> bytes:
        return ctypes.string_at(self.check(ptr, length), length)

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(self.check(ptr, len(data)), data, len(data))


def _clock_wake_ns(clock_id: int, timeout: int, flags: int, deadline: Deadline | None, now_ns: int) -> int | None:
    """When (time.monotonic_ns()) a clock subscription fires; None for a clock WASI guests may not wait on."""
    if clock_id not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
        return None  # the CPU-time clocks, which wasmtime refuses too
    if not flags & SUBCLOCK_ABSTIME:
        relative = timeout
    elif clock_id == CLOCK_REALTIME:
        relative = timeout - time.time_ns()
    else:
        # The guest's monotonic clock counts from its WASI context's creation.
        zero = deadline.guest_clock_zero_ns if deadline is not None else 0
        relative = timeout - (now_ns - zero)
    return now_ns + max(0, relative)


def _sleep_until(wake_ns: int, deadline: Deadline | None) -> None:
    """Sleep until wake_ns; raise _Interrupted when the deadline or the server's stop comes first."""
    if deadline is None:
        delay = (wake_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        return
    limit = min(wake_ns, deadline.at_ns)
    delay = (limit - time.monotonic_ns()) / 1e9
    if deadline.stop.wait(delay) if delay > 0 else deadline.stop.is_set():
        raise _Interrupted()
    if wake_ns > deadline.at_ns:
        raise _Interrupted()


def poll_oneoff(caller: int, in_ptr: int, out_ptr: int, nsubscriptions: int, nevents_ptr: int) -> int:
    """The WASI call: an errno; raises _Interrupted when the invocation must end instead."""
    if nsubscriptions == 0 or nsubscriptions > MAX_SUBSCRIPTIONS:
        return ERRNO_INVAL
    try:
        memory = _GuestMemory(caller)
        raw = memory.read(in_ptr, nsubscriptions * _SUBSCRIPTION.size)
        memory.check(out_ptr, nsubscriptions * _EVENT.size)
        memory.check(nevents_ptr, 4)
    except _Fault:
        return ERRNO_FAULT
    deadline = _current()
    now = time.monotonic_ns()
    clocks: list[tuple[int, int]] = []  # (userdata, wake ns)
    ready: list[bytes] = []  # fd events
    for i in range(nsubscriptions):
        userdata, tag, word, timeout, _precision, flags = _SUBSCRIPTION.unpack_from(raw, i * _SUBSCRIPTION.size)
        if tag == EVENT_CLOCK:
            wake = _clock_wake_ns(word, timeout, flags, deadline, now)
            if wake is None:
                return ERRNO_INVAL
            clocks.append((userdata, wake))
        elif tag in (EVENT_FD_READ, EVENT_FD_WRITE):
            ready.append(_EVENT.pack(userdata, ERRNO_SUCCESS, tag, 0, 0))
        else:
            return ERRNO_INVAL
    if not ready:
        _sleep_until(min(wake for _, wake in clocks), deadline)
        now = time.monotonic_ns()
    events = ready + [_EVENT.pack(u, ERRNO_SUCCESS, EVENT_CLOCK, 0, 0) for u, wake in clocks if wake <= now]
    memory.write(out_ptr, b"".join(events))  # both checked above
    memory.write(nevents_ptr, struct.pack("<I", len(events)))
    return ERRNO_SUCCESS


def _callback(env: int, caller: int, raw: int, n: int) -> int:
    args = _ARGS.from_address(raw)
    try:
        args[0] = poll_oneoff(caller, args[0], args[4], args[8], args[12])
    except _Interrupted:
        return int(capi.trap_new_code(_INTERRUPT))
    except BaseException as err:  # a host bug ends this invocation, never the server
        log.exception("poll_oneoff failed")
        msg = f"poll_oneoff failed in the host: {err}".encode()
        return int(capi.trap_new(msg, len(msg)))
    return 0


# Created once per process and kept alive here: the Linkers hold a raw pointer to it.
_TRAMPOLINE = capi.HOST_CALLBACK(_callback)


def define(linker: wasmtime.Linker) -> None:
    """Replace the poll_oneoff that `linker.define_wasi()` defined."""
    i32 = wasmtime.ValType.i32()
    ty = wasmtime.FuncType([i32] * 4, [i32])  # fresh per linker: a type remembers its first engine
    module, name = MODULE.encode(), NAME.encode()
    linker.allow_shadowing = True
    try:
        err = capi.linker_define_func_unchecked(
            capi.address(linker.ptr()), module, len(module), name, len(name),
            capi.address(ty.ptr()), capi.address(_TRAMPOLINE), None, None,
        )
    finally:
        linker.allow_shadowing = False
    if err:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))

