"""Run one worker invocation: a fresh instance, WASI stdio, limits, and a verdict.

Every call gets its own Store, so nothing a guest does survives into the next request: its
memory, its WASI handles and its wasi-nn graphs and contexts die with the Store. The module is
compiled and its imports resolved once (an InstancePre); instantiating from it takes tens of
microseconds.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import wasmtime
from wasmtime import _ffi as ffi

from wasminfer_runtime import capi, capture, deadlines, wasi_deadline
from wasminfer_runtime.config import HttpRequestsConfig, WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError, first_line
from wasminfer_runtime.http_requests import MODULE as HTTP_MODULE
from wasminfer_runtime.http_requests import HttpRequestsHost
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn.abi import MODULE_NAME as WASI_NN_MODULE
from wasminfer_runtime.wasinn.host import NnSession, WasiNnHost

log = logging.getLogger(__name__)

Outcome = Literal["ok", "exit", "trap", "timeout", "memory"]

MAX_CAPTURE_BYTES = capture.MAX_OUTPUT_BYTES
_MIB = 1024 * 1024


@dataclass(frozen=True)
class _Verdict:
    outcome: Outcome
    exit_code: int
    message: str


@dataclass(frozen=True)
class Invocation:
    outcome: Outcome  # ok: _start returned or proc_exit(0); exit: proc_exit(nonzero)
    exit_code: int
    stdout: bytes
    stderr: bytes
    message: str  # why, for every outcome but ok
    model_failure: str | None = None  # a model host failed one of its wasi-nn calls: which, and why
    nn_errors: tuple[str, ...] = ()  # why wasi-nn calls were refused (the guest saw only errnos)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class NnCallRecord(Protocol):
    """What a wasi-nn session (witx or WIT) tells about its calls when the invocation ends."""

    failure: str | None
    errors: list[str]
    deadline_passed: bool


class _WasiSetupError(Exception):
    """The WASI context of an invocation cannot be built (bad text in argv or env, a folder gone)."""


def _not_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _c_strings(items: Sequence[bytes]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * len(items))(*items)


class _WasiTemplate:
    """A worker's WASI context, encoded once: argv, env and folders; stdio varies per call."""

    def __init__(self, worker: WorkerConfig) -> None:
        # A language runtime gets its argv whole, as wws passes it (argv[0] included).
        argv = [worker.module_file.name] if worker.argv is None else worker.argv
        self.argv = [os.fsencode(a) for a in argv]
        try:
            self.env_names = _c_strings([k.encode() for k in worker.vars])
            self.env_values = _c_strings([v.encode() for v in worker.vars.values()])
        except UnicodeEncodeError:
            bad = [k for k, v in worker.vars.items() if _not_utf8(k + v)]
            raise WorkerLoadError(f"worker {worker.name!r}: vars {', '.join(bad)} are not UTF-8 text") from None
        self.folders = [(str(f.from_).encode(), f.to.encode(), f.writable) for f in worker.folders]
        self.default_argv = _c_strings(self.argv)

    def build(self, stdin: bytes, args: Sequence[str], out: capture.GuestOutput, err: capture.GuestOutput) -> int:
        """A new wasi_config_t (the caller hands it to a store, which then owns it)."""
        argv = self.default_argv if not args else _c_strings([*self.argv, *(os.fsencode(a) for a in args)])
        cfg: int = capi.wasi_config_new()
        try:
            if not capi.wasi_config_set_argv(cfg, len(argv), argv):
                raise _WasiSetupError("an argument is not UTF-8")
            if not capi.wasi_config_set_env(cfg, len(self.env_names), self.env_names, self.env_values):
                raise _WasiSetupError("an environment variable is not UTF-8")
            vec = ffi.wasm_byte_vec_t()
            capi.byte_vec_new(ctypes.addressof(vec), len(stdin), stdin)
            capi.wasi_config_set_stdin_bytes(cfg, ctypes.addressof(vec))
            if not (capi.wasi_config_set_stdout_file(cfg, out.path_bytes)
                    and capi.wasi_config_set_stderr_file(cfg, err.path_bytes)):
                raise _WasiSetupError("cannot open the output capture files")
            for host, guest, writable in self.folders:
                if not capi.wasi_config_preopen_dir(cfg, host, guest, writable):
                    raise _WasiSetupError(f"cannot open folder {host.decode(errors='replace')}")
        except BaseException:
            capi.wasi_config_delete(cfg)
            raise
        return cfg


def _raise_failure(error: int, trap: int) -> None:
    """Raise what wasmtime reported, as wasmtime-py's own exceptions (ExitTrap, Trap, WasmtimeError)."""
    if error:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t)))
    if trap:
        raise wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t)))


_FUNC_OFFSET = ffi.wasmtime_extern_t.of.offset  # where an extern's func / memory handle starts


class WorkerExecutor:
    """A compiled worker, ready to run many times, from many threads."""

    def __init__(self, engine: RuntimeEngine, models: ModelRegistry, worker: WorkerConfig,
                 stopping: threading.Event | None = None) -> None:
        self.engine = engine
        # Set when the server stops: guests asleep in WASI calls wake and end as timeouts.
        self.stopping = stopping if stopping is not None else threading.Event()
        self.current_stdout: capture.GuestOutput | None = None  # the running invocation's (one at a time: `run`)
        engine.add_tick_hook(capture.check_all)  # holds guest output to its limit while guests run
        self.worker = worker
        self.memory_cap = worker.limits.memory_mib * _MIB
        self.deadline_ticks = engine.ticks_for(worker.limits.timeout_seconds)
        try:
            module = engine.compile(worker.module_file)
        except WorkerLoadError as err:
            raise WorkerLoadError(f"worker {worker.name!r}: {err}") from None
        self.module = module
        imports = {(imp.module, imp.name) for imp in module.imports}
        wants_nn = any(mod == WASI_NN_MODULE for mod, _ in imports)
        if wants_nn and not worker.wasi_nn.enabled:
            raise WorkerLoadError(
                f"worker {worker.name!r} ({worker.module}): the module imports {WASI_NN_MODULE} but wasi-nn is not "
                "enabled for this worker (set features.wasi_nn / wasi_nn.enabled)"
            )
        exports = {exp.name: exp.type for exp in module.exports}
        if not isinstance(exports.get("_start"), wasmtime.FuncType):
            raise WorkerLoadError(
                f"worker {worker.name!r} ({worker.module}): not a WASI command module (no `_start` export)"
            )
        linker = wasmtime.Linker(engine.engine)
        linker.define_wasi()
        wasi_deadline.define(linker)  # sleeps that keep to the timeout (the epoch deadline cannot)
        self.nn: WasiNnHost | None = None
        if worker.wasi_nn.enabled:
            self.nn = WasiNnHost(models, worker.wasi_nn, engine.metrics, owner=worker.name,
                                 max_loaded_bytes=self.memory_cap)
            self.nn.define(linker)
        self.http: HttpRequestsHost | None = None
        if worker.http_requests is not None or any(mod == HTTP_MODULE for mod, _ in imports):
            # As in wws, every module may import `http` (wws's kits all do); without the grant no host is
            # allowed, so each call answers not-allowed and nothing is sent.
            grant = worker.http_requests or HttpRequestsConfig(allowed_hosts=[])
            self.http = HttpRequestsHost(grant, worker.name, self.stopping)
            self.http.define(linker)
        try:
            self._pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as err:
            raise WorkerLoadError(
                f"worker {worker.name!r} ({worker.module}): cannot link the module's imports: {first_line(err)}"
            ) from None
        self._pre_ptr = capi.address(self._pre.ptr())
        self._engine_ptr = capi.address(engine.engine.ptr())
        self._has_memory = isinstance(exports.get("memory"), wasmtime.MemoryType)
        self._wasi = _WasiTemplate(worker)

    def invoke(self, stdin: bytes, args: Sequence[str] = ()) -> Invocation:
        """Run `_start` once in a fresh instance; never raises for anything the guest does."""
        out, err = capture.GuestOutput.take("stdout"), capture.GuestOutput.take("stderr")
        self.current_stdout = out
        deadline = wasi_deadline.Deadline.after(self.worker.limits.timeout_seconds, self.stopping)
        wasi_deadline.bind(deadline)
        deadlines.bind(time.monotonic() + self.worker.limits.timeout_seconds)
        session = self.nn.session() if self.nn is not None else None
        try:
            store = capi.store_new(self._engine_ptr, None, None)
            try:
                ctx = capi.store_context(store)
                capi.store_limiter(store, self.memory_cap, -1, -1, -1, -1)
                capi.context_set_epoch_deadline(ctx, self.deadline_ticks)
                verdict = self._run(ctx, stdin, args, out, err, deadline, session)
            finally:
                capi.store_delete(store)  # closes wasmtime's handles on the output files too
        finally:
            wasi_deadline.bind(None)
            deadlines.bind(None)
            self.current_stdout = None
            stdout, out_over = out.collect()
            stderr, err_over = err.collect()
        return self._conclude(verdict, stdout, stderr, out_over, err_over, session)

    def _run(self, ctx: int, stdin: bytes, args: Sequence[str], out: capture.GuestOutput,
             err: capture.GuestOutput, deadline: wasi_deadline.Deadline, session: NnSession | None) -> _Verdict:
        try:
            error = capi.context_set_wasi(ctx, self._wasi.build(stdin, args, out, err))
            _raise_failure(error, 0)
        except (_WasiSetupError, wasmtime.WasmtimeError) as e:
            return _Verdict("trap", 0, f"cannot set up WASI: {first_line(e)}")
        deadline.guest_clock_zero_ns = time.monotonic_ns()  # the guest's monotonic clock starts with its context
        instance = ffi.wasmtime_instance_t()
        export = ffi.wasmtime_extern_t()
        trap = ctypes.c_void_p()
        trap_at, export_at = ctypes.addressof(trap), ctypes.addressof(export)
        memory: ffi.wasmtime_memory_t | None = None
        instantiated = False
        try:
            if session is not None:
                session.enter()
            try:
                error = capi.instance_pre_instantiate(self._pre_ptr, ctx, ctypes.addressof(instance), trap_at)
                _raise_failure(error, trap.value or 0)
                instantiated = True
                memory = self._memory(ctx, instance)
                if session is not None:
                    session.attach(ctx, memory)
                capi.instance_export_get(ctx, ctypes.addressof(instance), b"_start", 6, export_at)
                error = capi.func_call(ctx, export_at + _FUNC_OFFSET, None, 0, None, 0, trap_at)
                _raise_failure(error, trap.value or 0)
            except wasmtime.ExitTrap as e:
                if e.code == 0:
                    return _Verdict("ok", 0, "")
                return self._classify_failure("exit", e.code, f"exited with code {e.code}", ctx, memory)
            except wasmtime.Trap as e:
                if e.trap_code is wasmtime.TrapCode.INTERRUPT:  # the epoch deadline, or poll_oneoff's
                    secs = self.worker.limits.timeout_seconds
                    why = ("was stopped: the server is shutting down" if self.stopping.is_set()
                           else f"exceeded the {secs:g} s execution timeout")
                    return self._classify_failure("timeout", 0, why, ctx, memory)
                return self._classify_failure("trap", 0, f"trapped: {_trap_text(e)}", ctx, memory)
            except wasmtime.WasmtimeError as e:
                text = _error_text(e)
                if not instantiated and "memory" in text and ("limit" in text or "exceed" in text):
                    mib = self.worker.limits.memory_mib
                    return _Verdict("memory", 0, f"needs more memory than its {mib} MiB limit at start: {text}")
                return self._classify_failure("trap", 0, f"failed: {text}", ctx, memory)
            return _Verdict("ok", 0, "")
        finally:
            if session is not None:
                session.close()

    def _memory(self, ctx: int, instance: ffi.wasmtime_instance_t) -> ffi.wasmtime_memory_t | None:
        """The instance's exported `memory`, or None when the module exports none."""
        if not self._has_memory:
            return None
        export = ffi.wasmtime_extern_t()
        if not capi.instance_export_get(ctx, ctypes.addressof(instance), b"memory", 6, ctypes.addressof(export)):
            return None
        return export.of.memory

    def _classify_failure(self, outcome: Outcome, code: int, message: str, ctx: int,
                          memory: ffi.wasmtime_memory_t | None) -> _Verdict:
        # A failed memory.grow is not a trap in wasm: the guest sees -1 and then aborts, exits or
        # spins. If it ended badly with its memory at the cap, the cap is the cause.
        if memory is not None and self._near_cap(ctx, memory):
            mib = self.worker.limits.memory_mib
            return _Verdict("memory", code, f"hit the {mib} MiB memory limit ({message})")
        return _Verdict(outcome, code, message)

    def _near_cap(self, ctx: int, memory: ffi.wasmtime_memory_t) -> bool:
        # Allocators grow in modest steps, so a refused growth leaves the memory close to the cap.
        headroom: int = self.memory_cap - capi.memory_data_size(ctx, ctypes.addressof(memory))
        return headroom < min(max(self.memory_cap // 8, 64 * 1024), 8 * _MIB)

    def _conclude(self, verdict: _Verdict, stdout: bytes, stderr: bytes, out_over: bool, err_over: bool,
                  session: NnCallRecord | None) -> Invocation:
        """The invocation's result, with what its wasi-nn calls saw (a model host's failure, refusals)."""
        failure = session.failure if session is not None else None
        nn_errors = tuple(session.errors) if session is not None else ()
        if session is not None and session.deadline_passed and verdict.outcome != "timeout":
            secs = self.worker.limits.timeout_seconds
            verdict = _Verdict("timeout", 0, f"exceeded the {secs:g} s execution timeout in a wasi-nn call")
        return self._finish(verdict, stdout, stderr, out_over, err_over, failure, nn_errors)

    def _finish(self, verdict: _Verdict, stdout: bytes, stderr: bytes, out_over: bool,
                err_over: bool, model_failure: str | None = None, nn_errors: tuple[str, ...] = ()) -> Invocation:
        outcome, message = verdict.outcome, verdict.message
        if out_over or err_over:
            stream = "stdout" if out_over else "stderr"
            note = f"wrote more than {MAX_CAPTURE_BYTES // _MIB} MiB to {stream}; the excess was refused"
            if outcome in ("ok", "exit"):
                outcome, message = "memory", note
            else:
                message = f"{message}; {note}"
        read_only = [f.to for f in self.worker.folders if not f.writable]
        if outcome != "ok" and read_only:  # a refused write is a common cause; the guest saw only an errno
            message = f"{message} (its read-only folders: {', '.join(read_only)})"
        if outcome != "ok":  # the server reports it with the request; `run` leaves stderr to the guest
            log.debug("worker %s: %s", self.worker.name, message)
        return Invocation(outcome, verdict.exit_code, stdout, stderr, message, model_failure, nn_errors)


def _error_text(err: wasmtime.WasmtimeError) -> str:
    text = str(err).strip()
    if "Caused by:" in text:
        return " ".join(line.strip() for line in text.splitlines() if line.strip() and "backtrace" not in line)
    return first_line(err)


def _trap_text(trap: wasmtime.Trap) -> str:
    # wasmtime's message is "error while executing at wasm backtrace: ... Caused by: <reason>".
    text = str(trap).strip()
    if "Caused by:" in text:
        reason = text.rsplit("Caused by:", 1)[1].strip()
        return reason.splitlines()[0].strip() if reason else text
    return first_line(trap)

