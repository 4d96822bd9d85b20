"""The `wasi_ephemeral_nn` imports, defined on a wasmtime Linker as raw C-API callbacks.

Why raw: wasmtime-py's `define_func` converts every parameter through `Val` objects and looks
the memory export up by name on every call, ~100 us per inference. Here each import is a ctypes
callback registered with `wasmtime_linker_define_func_unchecked`: parameters are read straight
from wasmtime's raw value array, the guest memory's base address is fixed per instance (the
engine is configured so memories never move) and its size is re-read only when an access falls
beyond the size last seen. Calls are counted in plain ints per instance and flushed to
Prometheus when the instance ends.

Which instance a call belongs to: wasm runs on the thread that called into it and a host
callback runs on that same thread, so the executor binds the invocation's `NnSession` to the
thread for the duration of the call. Handles live in the session and die with it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from wasminfer_runtime import capi, formats
from wasminfer_runtime.backends.base import (
    Backend,
    BackendError,
    ContextFull,
    ElementType,
    EndOfSequence,
    ExecutionContext,
    Graph,
    InvalidEncoding,
    InvalidModel,
    InvalidTensor,
    PromptTooLong,
    Signature,
    TooLarge,
    Unsupported,
)
from wasminfer_runtime.config import Device, ModelFormat, WasiNnConfig
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost.client import DeadlineExceeded
from wasminfer_runtime.modelhost.wire import HostFailure
from wasminfer_runtime.models import ModelRegistry
from wasminfer_runtime.wasinn.abi import (
    MAX_DIMS,
    MODULE_NAME,
    TENSOR_SIZE,
    TENSOR_STRUCT,
    AbiError,
    Errno,
    ExecutionTarget,
    GraphEncoding,
    GuestMemory,
    element_count,
    element_type,
    encoding_name,
)
from wasminfer_runtime.wasinn.layout import NhwcInputs, reads_nhwc

log = logging.getLogger(__name__)

# Per instance: a guest that opens more than this gets too_large (each context holds buffers).
MAX_GRAPHS = 64
MAX_CONTEXTS = 64
MAX_NAME_BYTES = 1024
MAX_CONFIG_BYTES = 64 * 1024
MAX_REASONS = 8  # refusal reasons kept per instance

_CALLBACK = capi.HOST_CALLBACK
_memory_data = capi.memory_data
_memory_size = capi.memory_data_size
_VAL_RAW_U32 = 4  # a wasmtime_val_raw_t is 16 bytes: four u32 words, an i32 in the first

_string_at = ctypes.string_at
_memmove = ctypes.memmove
_u32_at = ctypes.c_uint32.from_address
_unpack_tensor = TENSOR_STRUCT.unpack
_perf_counter = time.perf_counter

_ERRNO_SLOTS = 16  # counts are kept in one flat list, 16 per import: errnos 0-8, then WasmEdge's 100-103 at 9-12


def _slot_of(errno: int) -> int:
    return errno if errno < 100 else errno - 91


def _errno_of_slot(slot: int) -> Errno:
    return Errno(slot if slot < 9 else slot + 91)


def _errno_for(err: BaseException) -> Errno:
    if isinstance(err, AbiError):
        return err.errno
    for kind, errno in _LLM_ERRNOS:
        if isinstance(err, kind):
            return errno
    if isinstance(err, TooLarge):
        return Errno.too_large
    if isinstance(err, (InvalidTensor, InvalidModel)):
        return Errno.invalid_argument
    if isinstance(err, Unsupported):
        return Errno.unsupported_operation
    return Errno.runtime_error


# WasmEdge's errnos for its LLM backends' errors.
_LLM_ERRNOS = (
    (EndOfSequence, Errno.end_of_sequence),
    (ContextFull, Errno.context_full),
    (PromptTooLong, Errno.prompt_too_long),
    (InvalidEncoding, Errno.invalid_encoding),
)

_TARGETS = {
    ExecutionTarget.cpu: Device.CPU,
    ExecutionTarget.gpu: Device.GPU,
    ExecutionTarget.tpu: Device.NPU,
    ExecutionTarget.auto: Device.AUTO,
}


class _Context:
    """An execution context handle's contents."""

    __slots__ = ("backend", "graph", "durations", "text_input")

    def __init__(self, backend: ExecutionContext, graph: Graph, durations: list[float]) -> None:
        self.backend = backend
        self.graph = graph
        self.durations = durations
        self.text_input = bool(getattr(backend, "takes_text", False))


class _GraphHandle:
    __slots__ = ("graph", "owned", "nhwc")

    def __init__(self, graph: Graph, owned: bool, nhwc: bool) -> None:
        self.graph = graph
        self.owned = owned  # loaded from bytes by this instance (a named graph is shared)
        self.nhwc = nhwc  # its 4-D inputs arrive interleaved (the worker's input_layout, layout.py)


class NnSession:
    """The wasi-nn state of one instance: its memory, handles and call counts."""

    def __init__(self, host: WasiNnHost) -> None:
        self.host = host
        self.graphs: dict[int, _GraphHandle] = {}
        self.contexts: dict[int, _Context] = {}
        self._next_graph = 0
        self._next_context = 0
        self.loaded_bytes = 0  # model bytes passed to `load` by this instance
        self.failure: str | None = None  # why a model host failed a call of this instance
        self.deadline_passed = False  # a model host call was stopped at the invocation's deadline
        self.errors: list[str] = []  # why calls were refused, for `wasminfer run` to print (the first few)
        self.counts = [0] * (len(FUNCTIONS) * _ERRNO_SLOTS)
        self.durations: dict[str, list[float]] = {}
        self._tensor_cache: dict[tuple[int, bytes, int], tuple[ElementType, tuple[int, ...]]] = {}
        self.ctx = 0  # the store's context pointer
        self._mem: ffi.wasmtime_memory_t | None = None
        self._mem_addr = 0
        self.base = 0
        self.size = 0  # bytes; 0 until attached, so every access is checked against the real size

    # -- lifetime (called by the executor) ------------------------------------------------------

    def enter(self) -> None:
        _local.session = self

    def attach(self, ctx: int, memory: ffi.wasmtime_memory_t | None) -> None:
        """Bind the instance's exported memory; without one every call gets missing_memory."""
        if memory is None:
            return
        self._mem = ffi.wasmtime_memory_t.from_buffer_copy(memory)  # our own copy of the handle
        self._mem_addr = ctypes.addressof(self._mem)
        self.ctx = ctx
        self.base = _memory_data(self.ctx, self._mem_addr)
        self.size = _memory_size(self.ctx, self._mem_addr)

    def close(self) -> None:
        """Unbind from the thread, give back every handle (pooled contexts return to their graph)."""
        if getattr(_local, "session", None) is self:
            _local.session = None
        release_handles(self.contexts, self.graphs)
        self.host.record_inferences(self.durations)
        for i, n in enumerate(self.counts):
            if n:
                self.host.call_counter(i).inc(n)

    # -- guest memory ---------------------------------------------------------------------------

    def _grown(self, end: int) -> int:
        """The memory size after a possible memory.grow; AbiError when `end` is still beyond it."""
        if self._mem is None:
            raise AbiError(Errno.missing_memory, "the module exports no memory named `memory`")
        self.size = _memory_size(self.ctx, self._mem_addr)
        if end > self.size:
            raise AbiError(Errno.invalid_argument, f"guest range ends at {end:#x}, beyond its {self.size}-byte memory")
        return self.size

    def memory(self) -> GuestMemory:
        if self._mem is None:
            raise AbiError(Errno.missing_memory, "the module exports no memory named `memory`")
        self.size = _memory_size(self.ctx, self._mem_addr)
        return GuestMemory(self.base, self.size)

    # -- handles --------------------------------------------------------------------------------

    def _add_graph(self, graph: Graph, owned: bool, fmt: ModelFormat) -> int:
        if len(self.graphs) >= MAX_GRAPHS:
            raise AbiError(Errno.too_large, f"more than {MAX_GRAPHS} graphs in one instance")
        handle = self._next_graph
        self._next_graph += 1
        self.graphs[handle] = _GraphHandle(graph, owned, reads_nhwc(self.host.input_layout, fmt))
        return handle

    def _context(self, handle: int) -> _Context:
        c = self.contexts.get(handle)
        if c is None:
            raise AbiError(Errno.invalid_argument, f"no execution context {handle}")
        return c

    # -- the imports ----------------------------------------------------------------------------

    def load(self, builders_ptr: int, builders_len: int, encoding: int, target: int, graph_out: int) -> int:
        m = self.memory()
        m.address(graph_out, 4)
        fmt = self._format(encoding, m, builders_ptr, builders_len)
        backend = self.host.backend_for(fmt, encoding)
        try:
            device = _TARGETS[ExecutionTarget(target)]
        except ValueError:
            raise AbiError(Errno.invalid_argument, f"unknown execution target {target}") from None
        parts = m.read_builders(builders_ptr, builders_len)
        if len(self.graphs) >= MAX_GRAPHS:
            raise AbiError(Errno.too_large, f"more than {MAX_GRAPHS} graphs in one instance")
        graph = self.host.load_graph(backend, fmt, parts, device, self.loaded_bytes)
        self.loaded_bytes += sum(len(p) for p in parts)
        m.write_u32(graph_out, self._add_graph(graph, owned=True, fmt=fmt))
        return 0

    @staticmethod
    def _format(encoding: int, m: GuestMemory, builders_ptr: int, builders_len: int) -> ModelFormat:
        if encoding == GraphEncoding.openvino:
            return ModelFormat.openvino
        if encoding == GraphEncoding.onnx:
            return ModelFormat.onnx
        if encoding == GraphEncoding.ggml:
            return ModelFormat.ggml
        if encoding == GraphEncoding.autodetect:
            # IR is an XML document (plus weights); anything else is taken for ONNX.
            parts = m.read_builders(builders_ptr, builders_len)
            return ModelFormat.openvino if parts[0].lstrip()[:1] == b"<" else ModelFormat.onnx
        raise AbiError(Errno.invalid_encoding, f"{encoding_name(encoding)} models are not supported")

    def load_by_name(self, name_ptr: int, name_len: int, graph_out: int) -> int:
        m = self.memory()
        m.address(graph_out, 4)
        graph, fmt = self._named(m, name_ptr, name_len)
        m.write_u32(graph_out, self._add_graph(graph, owned=False, fmt=fmt))
        return 0

    def load_by_name_with_config(
        self, name_ptr: int, name_len: int, cfg_ptr: int, cfg_len: int, graph_out: int
    ) -> int:
        m = self.memory()
        m.address(graph_out, 4)
        if cfg_len > MAX_CONFIG_BYTES:
            raise AbiError(Errno.invalid_argument, f"config of {cfg_len} bytes (at most {MAX_CONFIG_BYTES})")
        raw = m.read(cfg_ptr, cfg_len)
        if raw.strip(b"\0 \t\r\n"):
            try:
                json.loads(raw.rstrip(b"\0"))
            except (ValueError, RecursionError):  # deep nesting ("[[[[...") exhausts the parser's stack
                raise AbiError(Errno.invalid_argument, "config is not JSON") from None
        # The config carries options of WasmEdge's LLM backends, the defaults of this handle's contexts;
        # OpenVINO and ONNX Runtime models take theirs from the runtime's model declaration.
        graph, fmt = self._named(m, name_ptr, name_len)
        with_defaults = getattr(graph, "with_defaults", None)
        if with_defaults is not None and raw.strip(b"\0 \t\r\n"):
            graph = with_defaults(raw)
        m.write_u32(graph_out, self._add_graph(graph, owned=False, fmt=fmt))
        return 0

    def _named(self, m: GuestMemory, name_ptr: int, name_len: int) -> tuple[Graph, ModelFormat]:
        if name_len > MAX_NAME_BYTES:
            raise AbiError(Errno.invalid_argument, f"model name of {name_len} bytes")
        try:
            name = m.read(name_ptr, name_len).decode("utf-8")
        except UnicodeDecodeError:
            raise AbiError(Errno.invalid_argument, "model name is not UTF-8") from None
        return self.host.resolve_named(name)

    def init_execution_context(self, graph: int, ctx_out: int) -> int:
        m = self.memory()
        m.address(ctx_out, 4)
        g = self.graphs.get(graph)
        if g is None:
            raise AbiError(Errno.invalid_argument, f"no graph {graph}")
        if len(self.contexts) >= MAX_CONTEXTS:
            raise AbiError(Errno.too_large, f"more than {MAX_CONTEXTS} execution contexts in one instance")
        backend_ctx = self.host.open_context(g.graph, g.nhwc)
        durations = self.durations.setdefault(g.graph.label, [])
        handle = self._next_context
        self._next_context += 1
        self.contexts[handle] = _Context(backend_ctx, g.graph, durations)
        m.write_u32(ctx_out, handle)
        return 0

    def set_input(self, ctx: int, index: int, tensor_ptr: int) -> int:
        c = self._context(ctx)
        size = self.size
        if tensor_ptr + TENSOR_SIZE > size:
            size = self._grown(tensor_ptr + TENSOR_SIZE)
        base = self.base
        dims_ptr, dims_len, code, data_ptr, data_len = _unpack_tensor(_string_at(base + tensor_ptr, TENSOR_SIZE))
        if dims_len > MAX_DIMS:
            raise AbiError(Errno.invalid_argument, f"tensor has {dims_len} dimensions (at most {MAX_DIMS})")
        dims_end = dims_ptr + 4 * dims_len
        data_end = data_ptr + data_len
        if dims_end > size or data_end > size:
            size = self._grown(max(dims_end, data_end))
        if c.text_input:  # an LLM's prompt or metadata: bytes whatever type and shape the guest gave them
            c.backend.set_input(index, ElementType.u8, (data_len,), base + data_ptr, data_len)
            return 0
        raw_dims = _string_at(base + dims_ptr, 4 * dims_len)
        key = (code, raw_dims, data_len)
        decoded = self._tensor_cache.get(key)
        if decoded is None:
            dims = struct.unpack(f"<{dims_len}I", raw_dims)
            decoded = (element_type(code, data_len, element_count(dims)), dims)
            if len(self._tensor_cache) < 64:
                self._tensor_cache[key] = decoded
        c.backend.set_input(index, decoded[0], decoded[1], base + data_ptr, data_len)
        return 0

    def compute(self, ctx: int) -> int:
        c = self._context(ctx)
        started = _perf_counter()
        c.backend.compute()
        c.durations.append(_perf_counter() - started)
        return 0

    def get_output(self, ctx: int, index: int, out_ptr: int, out_max: int, written_ptr: int) -> int:
        c = self._context(ctx)
        end = max(out_ptr + out_max, written_ptr + 4)
        if end > self.size:
            self._grown(end)
        addr, nbytes = c.backend.output(index)
        return self._copy_out(index, addr, nbytes, out_ptr, out_max, written_ptr, hasattr(c.backend, "output_single"))

    def _copy_out(self, index: int, addr: int, nbytes: int, out_ptr: int, out_max: int, written_ptr: int,
                  report_size: bool = True) -> int:
        base = self.base
        if nbytes > out_max:
            if report_size:  # what a larger buffer needs, as WasmEdge's LLM backends tell their guests
                _u32_at(base + written_ptr).value = nbytes
            raise AbiError(Errno.too_large, f"output {index} is {nbytes} bytes, the buffer {out_max}")
        _memmove(base + out_ptr, addr, nbytes)
        _u32_at(base + written_ptr).value = nbytes
        return 0

    # WasmEdge's token-at-a-time API. Backends without it (tensor models) answer with one whole inference.
    def compute_single(self, ctx: int) -> int:
        c = self._context(ctx)
        single = getattr(c.backend, "compute_single", None)
        if single is None:
            return self.compute(ctx)
        started = _perf_counter()
        single()
        c.durations.append(_perf_counter() - started)
        return 0

    def get_output_single(self, ctx: int, index: int, out_ptr: int, out_max: int, written_ptr: int) -> int:
        c = self._context(ctx)
        single = getattr(c.backend, "output_single", None)
        if single is None:
            return self.get_output(ctx, index, out_ptr, out_max, written_ptr)
        end = max(out_ptr + out_max, written_ptr + 4)
        if end > self.size:
            self._grown(end)
        addr, nbytes = single(index)
        return self._copy_out(index, addr, nbytes, out_ptr, out_max, written_ptr)

    def fini_single(self, ctx: int) -> int:
        c = self._context(ctx)
        fini = getattr(c.backend, "fini_single", None)
        if fini is not None:
            fini()
        return 0

    def unload(self, graph: int) -> int:
        g = self.graphs.pop(graph, None)
        if g is None:
            raise AbiError(Errno.invalid_argument, f"no graph {graph}")
        if g.owned and not any(c.graph is g.graph for c in self.contexts.values()):
            g.graph.close()
        return 0

    def finalize_execution_context(self, ctx: int) -> int:
        c = self.contexts.pop(ctx, None)
        if c is None:
            raise AbiError(Errno.invalid_argument, f"no execution context {ctx}")
        c.backend.close()
        return 0


def release_handles(contexts: dict[int, Any], graphs: dict[int, Any]) -> None:
    """Give back an instance's execution contexts (pooled ones return to their graph) and the graphs
    it loaded from bytes; a named graph is shared and stays."""
    for c in contexts.values():
        _close_quietly(c.backend.close)
    for g in graphs.values():
        if g.owned:
            _close_quietly(g.graph.close)
    contexts.clear()
    graphs.clear()


def _close_quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception:
        log.exception("releasing a wasi-nn resource failed")


_local = threading.local()

# (import name, arity, implementation); the index is the function's slot in NnSession.counts.
FUNCTIONS: list[tuple[str, int, Callable[..., int]]] = [
    ("load", 5, NnSession.load),
    ("load_by_name", 3, NnSession.load_by_name),
    ("load_by_name_with_config", 5, NnSession.load_by_name_with_config),
    ("init_execution_context", 2, NnSession.init_execution_context),
    ("set_input", 3, NnSession.set_input),
    ("compute", 1, NnSession.compute),
    ("get_output", 5, NnSession.get_output),
    ("compute_single", 1, NnSession.compute_single),
    ("get_output_single", 5, NnSession.get_output_single),
    ("fini_single", 1, NnSession.fini_single),
    ("unload", 1, NnSession.unload),
    ("finalize_execution_context", 1, NnSession.finalize_execution_context),
]


def _failed(session: NnSession, name: str, err: BaseException) -> int:
    """The errno for an exception raised by an import; logs what the operator should see."""
    if isinstance(err, EndOfSequence):  # how a token stream ends, not a failure
        return int(Errno.end_of_sequence)
    if isinstance(err, (AbiError, InvalidTensor, InvalidModel, Unsupported, ContextFull, PromptTooLong)):
        errno = _errno_for(err)
        log.debug("worker %s: wasi-nn %s -> %s: %s", session.host.owner, name, errno.name, err)
        if len(session.errors) < MAX_REASONS:
            session.errors.append(f"wasi-nn {name} -> {errno.name}: {err}")
        return int(errno)
    if isinstance(err, DeadlineExceeded):
        session.deadline_passed = True
        log.info("worker %s: wasi-nn %s: %s", session.host.owner, name, err)
        return int(Errno.runtime_error)
    if isinstance(err, HostFailure):
        session.failure = str(err)
        log.warning("worker %s: wasi-nn %s failed: %s", session.host.owner, name, err)
        return int(Errno.runtime_error)
    if isinstance(err, BackendError):
        log.warning("worker %s: wasi-nn %s failed: %s", session.host.owner, name, err)
        return int(Errno.runtime_error)
    log.error("worker %s: wasi-nn %s raised", session.host.owner, name, exc_info=err)
    return int(Errno.runtime_error)


def _outside(name: str) -> int:
    msg = f"wasi-nn {name} called outside an invocation".encode()
    return int(capi.trap_new(msg, len(msg)))


def _make_trampoline(fid: int, name: str, arity: int, impl: Callable[..., int]) -> Any:
    """A C callback for one import: the session bound to this thread, the i32 arguments, an errno."""
    words = ctypes.c_uint32 * (_VAL_RAW_U32 * arity)
    slot = fid * _ERRNO_SLOTS
    from_address = words.from_address
    end = _VAL_RAW_U32 * arity
    get_session = _local.__getattribute__

    def callback(env: int, caller: int, raw: int, n: int) -> int:
        try:
            s: NnSession = get_session("session")
        except AttributeError:
            return _outside(name)
        if s is None:
            return _outside(name)
        v = from_address(raw)
        try:
            e = impl(s, *v[0:end:_VAL_RAW_U32])  # each i32 is the first word of a 16-byte value
        except BaseException as err:
            e = _failed(s, name, err)
        v[0] = e
        s.counts[slot + _slot_of(e)] += 1
        return 0

    return _CALLBACK(callback)


# Created once per process and kept alive here: the Linkers hold raw pointers to them.
_TRAMPOLINES = [_make_trampoline(fid, name, arity, impl) for fid, (name, arity, impl) in enumerate(FUNCTIONS)]


class WasiNnHost:
    """What one worker may do with wasi-nn, and the imports that enforce it."""

    def __init__(self, models: ModelRegistry, cfg: WasiNnConfig, metrics: Metrics, owner: str,
                 max_loaded_bytes: int = 256 * 1024 * 1024) -> None:
        self.models = models
        self.allowed_models = frozenset(cfg.models)
        self.allowed_backends = list(cfg.allowed_backends)
        self.input_layout = cfg.input_layout
        self.metrics = metrics
        self.owner = owner
        self.max_loaded_bytes = max_loaded_bytes
        # Where an LLM context's stream-stdout prints its tokens: `wasminfer run` sets its own stdout;
        # a served worker's tokens are not printed (its stdout is its HTTP response).
        self.llm_stdout: Callable[[bytes], None] | None = None
        # Prometheus children, looked up once: `labels()` costs microseconds on every request.
        self._calls: dict[int, Any] = {}
        self._inference: dict[str, Any] = {}
        self._signatures: dict[int, tuple[Graph, Signature]] = {}  # named graphs' (they outlive every instance)

    def call_counter(self, slot: int) -> Any:
        """The wasi_nn_calls child for a slot of NnSession.counts (function x errno)."""
        child = self._calls.get(slot)
        if child is None:
            fn = FUNCTIONS[slot // _ERRNO_SLOTS][0]
            child = self._calls[slot] = self.metrics.wasi_nn_calls.labels(fn, _errno_of_slot(slot % _ERRNO_SLOTS).name)
        return child

    def record_inferences(self, durations: dict[str, list[float]]) -> None:
        """An ended instance's inference times, per model, into the Prometheus histogram."""
        for label, seconds in durations.items():
            hist = self.inference_histogram(label)
            for d in seconds:
                hist.observe(d)

    def inference_histogram(self, model: str) -> Any:
        child = self._inference.get(model)
        if child is None:
            child = self._inference[model] = self.metrics.inference_seconds.labels(model)
        return child

    def define(self, linker: wasmtime.Linker) -> None:
        module = MODULE_NAME.encode()
        linker_ptr = capi.address(linker.ptr())
        # Fresh types per linker: a function type remembers the first engine it was used with.
        i32 = wasmtime.ValType.i32()
        types = {arity: wasmtime.FuncType([i32] * arity, [i32]) for arity in {a for _, a, _ in FUNCTIONS}}
        for (name, arity, _), cb in zip(FUNCTIONS, _TRAMPOLINES):
            err = capi.linker_define_func_unchecked(
                linker_ptr, module, len(module), name.encode(), len(name),
                capi.address(types[arity].ptr()), capi.address(cb), None, None,
            )
            if err:
                raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))

    def session(self) -> NnSession:
        return NnSession(self)

    # -- what both wasi-nn frontends (these witx imports, the WIT interfaces of wit.py) share ---------

    def resolve_named(self, name: str) -> tuple[Graph, ModelFormat]:
        """The named model `name` and its format; AbiError when this worker may not use it."""
        found = self.named_graph(name)
        if found is None:
            if name in self.allowed_models and self.models.is_missing(name):
                raise AbiError(Errno.model_not_found, f"model {name!r}: its file is missing")
            raise AbiError(Errno.not_found, f"no model named {name!r} for this worker")
        return found

    def load_graph(self, backend: Backend, fmt: ModelFormat, parts: list[bytes], device: Device, loaded: int) -> Graph:
        """A model a guest passed as bytes, after `loaded` bytes already passed by its instance."""
        # Compiled models live in host memory: what a guest may load is bounded by its own memory limit.
        size = sum(len(p) for p in parts)
        if loaded + size > self.max_loaded_bytes:
            raise AbiError(Errno.too_large, f"models loaded by this instance would exceed "
                                            f"{self.max_loaded_bytes} bytes (its memory limit)")
        return backend.load_bytes(fmt, parts, device)

    def shared_signature(self, graph: Graph) -> Signature:
        """A named graph's inputs and outputs, derived once for all instances of this worker."""
        held = self._signatures.get(id(graph))
        if held is None or held[0] is not graph:
            held = self._signatures[id(graph)] = (graph, graph.signature())
        return held[1]

    def open_context(self, graph: Graph, nhwc: bool) -> ExecutionContext:
        backend_ctx = graph.init_context()
        if hasattr(backend_ctx, "stdout"):  # an LLM context's stream-stdout
            backend_ctx.stdout = self.llm_stdout
        return NhwcInputs(backend_ctx) if nhwc else backend_ctx

    def named_graph(self, name: str) -> tuple[Graph, ModelFormat] | None:
        """A named model this worker may use, and its format."""
        if name not in self.allowed_models:
            return None
        graph, cfg = self.models.get(name), self.models.config(name)
        return None if graph is None or cfg is None else (graph, cfg.format)

    def backend_for(self, fmt: ModelFormat, encoding: int) -> Backend:
        """The first allowed backend that reads `fmt` (the worker's order is its preference)."""
        for name in self.allowed_backends:
            if name in formats.readers(fmt):
                return self.models.guest_backend(self.owner, name, self.allowed_backends, self.max_loaded_bytes)
        allowed = ", ".join(b.value for b in self.allowed_backends) or "none"
        raise AbiError(
            Errno.invalid_encoding,
            f"{encoding_name(encoding)} models need a backend this worker may not use (allowed: {allowed})",
        )
