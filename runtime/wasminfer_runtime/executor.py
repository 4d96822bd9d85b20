"""Run one worker invocation: a fresh instance, WASI stdio, limits, and a verdict.

Every call gets its own Store, so nothing a guest does survives into the next request: its
memory, its WASI handles and its wasi-nn graphs and contexts die with the Store. The module is
compiled and its imports resolved once (an InstancePre); instantiating from it takes tens of
microseconds.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import wasmtime
from wasmtime import _ffi as ffi

from wasminfer_runtime import capture
from wasminfer_runtime.config import WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn.abi import MODULE_NAME as WASI_NN_MODULE
from wasminfer_runtime.wasinn.host import WasiNnHost

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

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    # wasmtime-py only offers a stdin file; the C API takes a byte vector (and owns it afterwards).
    vec = ffi.wasm_byte_vec_t()
    buf = ctypes.create_string_buffer(data, len(data))
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), ctypes.cast(buf, ctypes.POINTER(ffi.wasm_byte_t)))
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))


class WorkerExecutor:
    """A compiled worker, ready to run many times, from many threads."""

    def __init__(self, engine: RuntimeEngine, models: ModelRegistry, worker: WorkerConfig) -> None:
        self.engine = engine
        engine.add_tick_hook(capture.check_all)  # holds guest output to its limit while guests run
        self.worker = worker
        self.memory_cap = worker.limits.memory_mib * _MIB
        self.deadline_ticks = engine.ticks_for(worker.limits.timeout_seconds)
        try:
            module = engine.compile(worker.module)
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
        exports = {exp.name for exp in module.exports}
        if "_start" not in exports:
            raise WorkerLoadError(
                f"worker {worker.name!r} ({worker.module}): not a WASI command module (no `_start` export)"
            )
        linker = wasmtime.Linker(engine.engine)
        linker.define_wasi()
        self.nn: WasiNnHost | None = None
        if worker.wasi_nn.enabled:
            self.nn = WasiNnHost(models, worker.wasi_nn, engine.metrics, owner=worker.name,
                                 max_loaded_bytes=self.memory_cap)
            self.nn.define(linker)
        try:
            self._pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as err:
            raise WorkerLoadError(
                f"worker {worker.name!r} ({worker.module}): cannot link the module's imports: {_one_line(err)}"
            ) from None
        self._has_memory = "memory" in exports

    def _wasi(self, stdin: bytes, args: Sequence[str], out: capture.GuestOutput,
              err: capture.GuestOutput) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = [self.worker.module.name, *args]
        wasi.env = list(self.worker.vars.items())
        _set_stdin_bytes(wasi, stdin)
        wasi.stdout_file = out.path
        wasi.stderr_file = err.path
        for folder in self.worker.folders:
            wasi.preopen_dir(str(folder.from_), folder.to, folder.writable)
        return wasi

    def invoke(self, stdin: bytes, args: Sequence[str] = ()) -> Invocation:
        """Run `_start` once in a fresh instance; never raises for anything the guest does."""
        out, err = capture.GuestOutput("stdout"), capture.GuestOutput("stderr")
        try:
            store = wasmtime.Store(self.engine.engine)
            try:
                store.set_limits(memory_size=self.memory_cap)
                store.set_epoch_deadline(self.deadline_ticks)
                try:
                    store.set_wasi(self._wasi(stdin, args, out, err))
                except wasmtime.WasmtimeError as e:
                    verdict = _Verdict("trap", 0, f"cannot set up WASI: {_one_line(e)}")
                else:
                    verdict = self._run(store)
            finally:
                store.close()  # closes wasmtime's handles on the output files too
        finally:
            stdout, out_over = out.collect()
            stderr, err_over = err.collect()
        return self._finish(verdict, stdout, stderr, out_over, err_over)

    def _run(self, store: wasmtime.Store) -> _Verdict:
        instance: wasmtime.Instance | None = None
        session = self.nn.session() if self.nn is not None else None
        try:
            if session is not None:
                session.enter()
            try:
                instance = self._pre.instantiate(store)
                if session is not None:
                    session.attach(store, instance)
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                start(store)
            except wasmtime.ExitTrap as e:
                if e.code == 0:
                    return _Verdict("ok", 0, "")
                return self._classify_failure("exit", e.code, f"exited with code {e.code}", store, instance)
            except wasmtime.Trap as e:
                if e.trap_code is wasmtime.TrapCode.INTERRUPT:
                    secs = self.worker.limits.timeout_seconds
                    return self._classify_failure("timeout", 0, f"exceeded the {secs:g} s execution timeout",
                                                  store, instance)
                return self._classify_failure("trap", 0, f"trapped: {_trap_text(e)}", store, instance)
            except wasmtime.WasmtimeError as e:
                text = _error_text(e)
                if instance is None and "memory" in text and ("limit" in text or "exceed" in text):
                    mib = self.worker.limits.memory_mib
                    return _Verdict("memory", 0, f"needs more memory than its {mib} MiB limit at start: {text}")
                return self._classify_failure("trap", 0, f"failed: {text}", store, instance)
            return _Verdict("ok", 0, "")
        finally:
            if session is not None:
                session.close()

    def _classify_failure(self, outcome: Outcome, code: int, message: str, store: wasmtime.Store,
                          instance: wasmtime.Instance | None) -> _Verdict:
        # A failed memory.grow is not a trap in wasm: the guest sees -1 and then aborts, exits or
        # spins. If it ended badly with its memory at the cap, the cap is the cause.
        if instance is not None and self._has_memory and self._near_cap(store, instance):
            mib = self.worker.limits.memory_mib
            return _Verdict("memory", code, f"hit the {mib} MiB memory limit ({message})")
        return _Verdict(outcome, code, message)

    def _near_cap(self, store: wasmtime.Store, instance: wasmtime.Instance) -> bool:
        try:
            mem = instance.exports(store)["memory"]
        except (KeyError, wasmtime.WasmtimeError, ValueError):
            return False
        if not isinstance(mem, wasmtime.Memory):
            return False
        # Allocators grow in modest steps, so a refused growth leaves the memory close to the cap.
        headroom = self.memory_cap - mem.data_len(store)
        return headroom < min(max(self.memory_cap // 8, 64 * 1024), 8 * _MIB)

    def _finish(self, verdict: _Verdict, stdout: bytes, stderr: bytes, out_over: bool,
                err_over: bool) -> Invocation:
        outcome, message = verdict.outcome, verdict.message
        if out_over or err_over:
            stream = "stdout" if out_over else "stderr"
            note = f"wrote more than {MAX_CAPTURE_BYTES // _MIB} MiB to {stream}; the excess was refused"
            if outcome in ("ok", "exit"):
                outcome, message = "memory", note
            else:
                message = f"{message}; {note}"
        if outcome != "ok":
            log.info("worker %s: %s", self.worker.name, message)
        return Invocation(outcome, verdict.exit_code, stdout, stderr, message)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _error_text(err: wasmtime.WasmtimeError) -> str:
    text = str(err).strip()
    if "Caused by:" in text:
        return " ".join(line.strip() for line in text.splitlines() if line.strip() and "backtrace" not in line)
    return _one_line(err)


def _trap_text(trap: wasmtime.Trap) -> str:
    # wasmtime's message is "error while executing at wasm backtrace: ... Caused by: <reason>".
    text = str(trap).strip()
    if "Caused by:" in text:
        reason = text.rsplit("Caused by:", 1)[1].strip()
        return reason.splitlines()[0].strip() if reason else text
    return _one_line(trap)

