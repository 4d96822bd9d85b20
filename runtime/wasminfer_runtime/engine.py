"""One wasmtime Engine per process: epoch interruption, and compiled modules cached on disk.

Compiling a module with Cranelift takes from milliseconds to seconds; loading a compiled artifact
is a memory map. The cache key is the module's sha256, the wasmtime version and the engine
settings, so a different wasmtime or configuration never loads a stale artifact.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar
from pathlib import Path

import wasmtime
from wasmtime import component
from wasmtime import _ffi as ffi

from wasminfer_runtime.metrics import Metrics

log = logging.getLogger(__name__)

# An epoch tick every 10 ms: timeouts are precise to ~10 ms at the cost of one atomic increment.
EPOCH_TICK_SECONDS = 0.010

# Everything set on the wasmtime Config; part of the cache key.
_ENGINE_SETTINGS: dict[str, object] = {
    "epoch_interruption": True,
    "cranelift_opt_level": "speed",
    "parallel_compilation": True,
    # The wasi-nn host caches a memory's base address for the instance's life (see wasinn/host.py).
    "memory_may_move": False,
}

# Instances come from a pool of pre-reserved slots. A request's instance would otherwise map
# fresh memory and fault in every page it touches (~0.4 ms per MiB); a warm slot is zeroed in
# place (its first linear_memory_keep_resident bytes) instead: what a new instance must see.
MAX_CONCURRENT_INSTANCES = 256  # per engine; each slot reserves address space, not memory
_POOLING: dict[str, int] = {
    "total_core_instances": MAX_CONCURRENT_INSTANCES,
    "total_memories": MAX_CONCURRENT_INSTANCES,
    "total_tables": MAX_CONCURRENT_INSTANCES,
    "max_memory_size": 4096 * 1024 * 1024,  # the largest memory limit a worker may have
    "table_elements": 100_000,  # Go guests have large function tables
    "linear_memory_keep_resident": 4 * 1024 * 1024,
    "table_keep_resident": 64 * 1024,
    "max_unused_warm_slots": 16,  # at most 16 x 4 MiB stay resident while idle
}


_C = TypeVar("_C", wasmtime.Module, component.Component)  # what the module cache holds


class WorkerLoadError(Exception):
    """A worker's module cannot be compiled or linked; the message names the worker and the file."""


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wasminfer"


def _wasmtime_version() -> str:
    return importlib.metadata.version("wasmtime")


class RuntimeEngine:
    """The wasmtime Engine all workers share, its epoch ticker and its module cache."""

    def __init__(self, cache_dir: Path | None, metrics: Metrics) -> None:
        self.metrics = metrics
        self.cache_dir = (cache_dir or default_cache_dir()) / "modules"
        config = wasmtime.Config()
        for name, value in _ENGINE_SETTINGS.items():
            setattr(config, name, value)
        _use_pooling_allocator(config)
        self.engine = wasmtime.Engine(config)
        settings = ",".join(f"{k}={v}" for k, v in sorted({**_ENGINE_SETTINGS, **_POOLING}.items()))
        self._cache_salt = f"wasmtime={_wasmtime_version()};{settings}".encode()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tick_hooks: list[Callable[[], None]] = []

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` on the ticker thread after every epoch tick (once, however often added)."""
        with self._lock:
            if hook not in self._tick_hooks:
                self._tick_hooks.append(hook)

    # -- epoch ticker ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the epoch ticker; until then a store's deadline never passes."""
        with self._lock:
            if self._ticker is not None:
                return
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="wasminfer-epoch", daemon=True)
            self._ticker.start()

    def close(self) -> None:
        with self._lock:
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            self._stop.set()
            ticker.join()

    def __enter__(self) -> RuntimeEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_SECONDS):
            self.engine.increment_epoch()
            for hook in self._tick_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("epoch tick hook %r failed", hook)

    @staticmethod
    def ticks_for(seconds: float) -> int:
        """Epoch ticks for a timeout; one more tick so a deadline is never early."""
        return max(1, int(seconds / EPOCH_TICK_SECONDS + 0.999999)) + 1

    # -- compilation ----------------------------------------------------------------------------

    def cache_key(self, wasm: bytes) -> str:
        h = hashlib.sha256(wasm)
        h.update(b"\0")
        h.update(self._cache_salt)
        return h.hexdigest()

    def compile(self, module_path: Path) -> wasmtime.Module:
        """Compile a module, or load it from the disk cache (raises WorkerLoadError)."""
        try:
            wasm = module_path.read_bytes()
        except OSError as err:
            raise WorkerLoadError(f"{module_path}: cannot read module: {err.strerror or err}") from None
        return self.compile_bytes(wasm, str(module_path))

    def compile_bytes(self, wasm: bytes, source: str) -> wasmtime.Module:
        return self._compile_cached(wasm, source, "", wasmtime.Module, wasmtime.Module.deserialize_file)

    def compile_component(self, path: Path) -> component.Component:
        """Compile a component, or load it from the disk cache (raises WorkerLoadError)."""
        try:
            wasm = path.read_bytes()
        except OSError as err:
            raise WorkerLoadError(f"{path}: cannot read component: {err.strerror or err}") from None
        return self._compile_cached(wasm, str(path), "component", component.Component,
                                    component.Component.deserialize_file)

    def _compile_cached(self, wasm: bytes, source: str, kind: str, compile_new: Callable[[wasmtime.Engine, bytes], _C],
                        deserialize: Callable[[wasmtime.Engine, str], _C]) -> _C:
        """A module or component from the disk cache, else compiled and cached."""
        cached = self.cache_dir / f"{self.cache_key(wasm)}{'.' + kind if kind else ''}.cwasm"
        if cached.is_file():
            try:
                compiled = deserialize(self.engine, str(cached))
                log.debug("loaded %s from the module cache (%s)", source, cached.name)
                return compiled
            except wasmtime.WasmtimeError as err:
                log.warning("module cache entry %s is unusable (%s); recompiling %s", cached, err, source)
        try:
            compiled = compile_new(self.engine, wasm)
        except wasmtime.WasmtimeError as err:
            raise WorkerLoadError(f"{source}: not a valid WebAssembly {kind or 'module'}: {first_line(err)}") from None
        self._store_in_cache(cached, compiled, source)
        return compiled

    def _store_in_cache(self, path: Path, module: wasmtime.Module | component.Component, source: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)  # atomic: concurrent runtimes never read half a file
        except OSError as err:
            log.warning("cannot write module cache %s for %s: %s", path, source, err)


def is_component(path: Path) -> bool:
    """Whether a .wasm file is a component (layer 1) rather than a core module (layer 0)."""
    try:
        with path.open("rb") as f:
            header = f.read(8)
    except OSError:
        return False  # compiling it reports why it cannot be read
    return header[:4] == b"\0asm" and header[6:8] == b"\x01\x00"


def _use_pooling_allocator(config: wasmtime.Config) -> None:
    # wasmtime-py has no wrapper for the pooling allocator; its C API does.
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        for name, value in _POOLING.items():
            getattr(ffi, f"wasmtime_pooling_allocation_config_{name}_set")(pool, value)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)


def first_line(err: BaseException) -> str:
    """The first line of an error's message, for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
