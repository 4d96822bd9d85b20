"""Components as workers: a WASI command component (it exports `wasi:cli/run`) runs like a core
module's `_start`, with WASI 0.2 and the WIT wasi:nn interfaces.

The worker protocol is the same: its request on stdin, its answer on stdout, the same argv, env,
folders, memory limit and timeout as a core module, and the same named models through the same
wasi-nn host. What a component cannot use here: wws's `http` imports (a component imports no core
functions), `wasi:http` (outgoing requests go through the worker's `http_requests` grant, which
only core modules can use), and the key-value store.

Nor can a component sleep. wasmtime runs a WASI 0.2 sleep (a `wasi:clocks/monotonic-clock`
subscription polled by `wasi:io/poll`) inside the host, where the epoch deadline cannot reach it,
and wasmtime-py offers no way to bound it (a core module's sleeps go through `wasi_deadline`,
which keeps them to the timeout). So the subscriptions are replaced by functions that end the
invocation with the reason: a worker cannot hold its thread past its timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import wasmtime
from wasmtime import component as cm

from wasminfer_runtime import capi, capture, deadlines
from wasminfer_runtime.config import WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine, WorkerLoadError, first_line, is_component
from wasminfer_runtime.executor import (
    _MIB,
    Invocation,
    WorkerExecutor,
    _error_text,
    _trap_text,
    _Verdict,
    _WasiSetupError,
    _WasiTemplate,
)
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn import wit
from wasminfer_runtime.wasinn.host import WasiNnHost

log = logging.getLogger(__name__)

RUN_INTERFACE = "wasi:cli/run@0.2"  # any 0.2.x
# The WASI 0.2 release wasmtime 50's `add_wasip2` defines; imports of older 0.2.x resolve to it.
WASI_P2_VERSION = "0.2.12"
MONOTONIC_CLOCK = f"wasi:clocks/monotonic-clock@{WASI_P2_VERSION}"
HOSTCALL_FUEL = "fuel allocated for hostcalls has been exhausted"
TOO_MUCH_DATA = ("one call passed more data than wasmtime lets a host call copy through its embedding API "
                 "(about 2.7 MiB): pass large models by name (load-by-name)")
NO_SLEEP = ("components cannot sleep here: a WASI 0.2 sleep cannot be stopped at the worker's timeout "
            "(wasi:clocks/monotonic-clock subscribe-duration / subscribe-instant)")


def new_executor(engine: RuntimeEngine, models: ModelRegistry, worker: WorkerConfig,
                 stopping: threading.Event | None = None) -> WorkerExecutor:
    """The executor for a worker's module: a core module's or a component's."""
    if is_component(worker.module_file):
        return ComponentExecutor(engine, models, worker, stopping)
    return WorkerExecutor(engine, models, worker, stopping)


class ComponentExecutor(WorkerExecutor):
    """A compiled component, instantiated afresh for every invocation."""

    def __init__(self, engine: RuntimeEngine, models: ModelRegistry, worker: WorkerConfig,
                 stopping: threading.Event | None = None) -> None:
        self.engine = engine
        self.stopping = stopping if stopping is not None else threading.Event()
        self.current_stdout = None
        engine.add_tick_hook(capture.check_all)
        self.worker = worker
        self.memory_cap = worker.limits.memory_mib * _MIB
        self.deadline_ticks = engine.ticks_for(worker.limits.timeout_seconds)
        self.http = None
        try:
            self.component = engine.compile_component(worker.module_file)
        except WorkerLoadError as err:
            raise WorkerLoadError(f"worker {worker.name!r}: {err}") from None
        what = f"worker {worker.name!r} ({worker.module})"
        imports = self.component.type.imports(engine.engine)
        if any(name.startswith("wasi:nn/") for name in imports) and not worker.wasi_nn.enabled:
            raise WorkerLoadError(f"{what}: the component imports wasi:nn but wasi-nn is not enabled for this worker "
                                  "(set features.wasi_nn / wasi_nn.enabled)")
        runs = [name for name in self.component.type.exports(engine.engine) if name.startswith(RUN_INTERFACE)]
        if not runs:
            raise WorkerLoadError(f"{what}: not a WASI command component (no wasi:cli/run export)")
        run_interface = self.component.get_export_index(runs[0])
        run = self.component.get_export_index("run", run_interface) if run_interface is not None else None
        if run is None:
            raise WorkerLoadError(f"{what}: its {runs[0]} export has no `run` function")
        self._run_index = run
        self.linker = cm.Linker(engine.engine)
        self.linker.add_wasip2()
        _refuse_sleeps(self.linker)
        self.nn: WasiNnHost | None = None
        if worker.wasi_nn.enabled:
            self.nn = WasiNnHost(models, worker.wasi_nn, engine.metrics, owner=worker.name,
                                 max_loaded_bytes=self.memory_cap)
            wit.define(self.linker)
        self._wasi = _WasiTemplate(worker)
        self._check_links()

    def _check_links(self) -> None:
        """Every import is an interface this host provides; else the worker fails to load, naming them."""
        missing = [name for name in self.component.type.imports(self.engine.engine)
                   if not name.startswith(("wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:filesystem/", "wasi:random/",
                                           "wasi:sockets/", "wasi:nn/"))]
        if missing:
            raise WorkerLoadError(f"worker {self.worker.name!r} ({self.worker.module}): cannot link the component's "
                                  f"imports: {', '.join(sorted(missing))} are not provided to components")

    def invoke(self, stdin: bytes, args: Sequence[str] = ()) -> Invocation:
        out, err = capture.GuestOutput.take("stdout"), capture.GuestOutput.take("stderr")
        self.current_stdout = out
        deadlines.bind(time.monotonic() + self.worker.limits.timeout_seconds)
        session = wit.WitSession(self.nn) if self.nn is not None else None
        try:
            store = wasmtime.Store(self.engine.engine)
            try:
                store.set_limits(memory_size=self.memory_cap)
                store.set_epoch_deadline(self.deadline_ticks)
                verdict = self._run_component(store, stdin, args, out, err, session)
            finally:
                store.close()  # closes wasmtime's handles on the output files too
        finally:
            deadlines.bind(None)
            self.current_stdout = None
            stdout, out_over = out.collect()
            stderr, err_over = err.collect()
        return self._conclude(verdict, stdout, stderr, out_over, err_over, session)

    def _run_component(self, store: wasmtime.Store, stdin: bytes, args: Sequence[str], out: capture.GuestOutput,
                       err: capture.GuestOutput, session: wit.WitSession | None) -> _Verdict:
        try:
            # The C API's WASI setter, through the store's raw context: wasmtime-py's WasiConfig cannot take stdin bytes.
            error = capi.context_set_wasi(capi.address(store._context()), self._wasi.build(stdin, args, out, err))
            if error:
                return _Verdict("trap", 0, "cannot set up WASI")
        except _WasiSetupError as e:
            return _Verdict("trap", 0, f"cannot set up WASI: {first_line(e)}")
        if session is not None:
            session.enter()
        wit.take_trap()  # nothing left from an earlier invocation on this thread
        instantiated = False
        try:
            instance = self.linker.instantiate(store, self.component)
            instantiated = True
            run = instance.get_func(store, self._run_index)
            if run is None:
                return _Verdict("trap", 0, "its wasi:cli/run export is not a function")
            result = run(store)
            if isinstance(result, cm.Variant) and result.tag == "err":
                return _Verdict("exit", 1, "exited with code 1")  # wasi:cli/run's error, as wasmtime reports it
            return _Verdict("ok", 0, "")
        except wasmtime.ExitTrap as e:
            if e.code == 0:
                return _Verdict("ok", 0, "")
            return _Verdict("exit", e.code, f"exited with code {e.code}")
        except wasmtime.Trap as e:
            if e.trap_code is wasmtime.TrapCode.INTERRUPT:
                secs = self.worker.limits.timeout_seconds
                why = ("was stopped: the server is shutting down" if self.stopping.is_set()
                       else f"exceeded the {secs:g} s execution timeout")
                return _Verdict("timeout", 0, why)
            return _Verdict("trap", 0, f"trapped: {_trap_text(e)}")
        except wasmtime.WasmtimeError as e:
            trapped = wit.take_trap()  # a wasi:nn call that ended the invocation, and why
            if trapped is not None:
                return _Verdict("trap", 0, f"trapped: {trapped}")
            text = _error_text(e)
            if "wasm trap: interrupt" in text:
                secs = self.worker.limits.timeout_seconds
                return _Verdict("timeout", 0, f"exceeded the {secs:g} s execution timeout")
            if not instantiated and "memory" in text and ("limit" in text or "exceed" in text):
                mib = self.worker.limits.memory_mib
                return _Verdict("memory", 0, f"needs more memory than its {mib} MiB limit at start: {text}")
            if HOSTCALL_FUEL in text:
                return _Verdict("trap", 0, f"trapped: {TOO_MUCH_DATA}")
            cause = text.partition("Caused by:")[2].strip()
            return _Verdict("trap", 0, f"failed: {cause or text}")
        except wit.GuestTrap as e:  # raised by a wasi:nn or wasi:clocks function; wasmtime-py re-raises it here
            return _Verdict("trap", 0, f"trapped: {e}")
        except Exception as e:
            log.exception("worker %s: a host function of the component failed", self.worker.name)
            return _Verdict("trap", 0, f"failed in the host: {first_line(e)}")
        finally:
            if session is not None:
                session.close()


def _refuse_sleeps(linker: cm.Linker) -> None:
    def refuse(store: object, *args: object) -> None:
        raise wit.GuestTrap(NO_SLEEP)

    linker.allow_shadowing = True  # replaces these two of add_wasip2's functions, keeps the rest
    with linker.root() as root, root.add_instance(MONOTONIC_CLOCK) as clock:
        clock.add_func("subscribe-duration", refuse)
        clock.add_func("subscribe-instant", refuse)
    linker.allow_shadowing = False
