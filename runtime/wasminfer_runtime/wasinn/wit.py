"""The WIT `wasi:nn@0.2.0-rc-2024-10-28` interfaces (sdk/wit/wasi-nn.wit) for components.

The same host as the witx imports of host.py: `WasiNnHost` decides which named models a worker
may use, which backend reads a loaded model and how much a guest may load, and opens the
backends' execution contexts. What differs is the shape of the API: here graphs, contexts,
tensors and errors are resources in per-instance tables, and `compute` takes and returns named
tensors (inputs by model input name, or by index written in decimal; outputs by index for
OpenVINO models and by name for ONNX models, as wasmtime names them). A GGML model takes its
prompt and metadata JSON as U8 tensors (`prompt` or "0", `metadata` or "1") and gives the generated
text and the token counts as outputs "0" and "1", the indices of WasmEdge's GGML API; a generation
that fills the context ends there with its text, since a component cannot read outputs after an error.

Resources are host-defined (`ResourceType.host`); the component model checks every handle, so
a dropped or foreign handle traps in the guest before it reaches a function here. The functions
themselves are raw C-API callbacks (wit_linker.py) that call the session of this module. What the
component model does not check is checked here: tensor data that does not match its dimensions,
too many live resources, tensors beyond the memory the worker is allowed.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass

from wasmtime import component as cm

from wasminfer_runtime.backends.base import ContextFull, ElementType, ExecutionContext, Graph, ModelDims, Signature, Unsupported
from wasminfer_runtime.config import Device, ModelFormat
from wasminfer_runtime.modelhost.client import DeadlineExceeded
from wasminfer_runtime.modelhost.wire import HostFailure
from wasminfer_runtime.wasinn.abi import AbiError, Errno, element_count
from wasminfer_runtime.wasinn.host import (
    MAX_CONTEXTS,
    MAX_GRAPHS,
    MAX_NAME_BYTES,
    MAX_REASONS,
    WasiNnHost,
    _close_quietly,
    _errno_for,
    release_handles,
)
from wasminfer_runtime.wasinn.layout import reads_nhwc

log = logging.getLogger(__name__)

VERSION = "0.2.0-rc-2024-10-28"
INTERFACES = tuple(f"wasi:nn/{name}@{VERSION}" for name in ("tensor", "graph", "inference", "errors"))

MAX_TENSORS = 256  # live tensors per instance (inputs the guest made and outputs it has not dropped)
MAX_ERRORS = 256  # live error resources per instance; a guest that never drops them is refused more
MAX_DIMS = 8
MAX_INPUTS = 64

# Host resource type ids (distinct per resource type, so a tensor handle can never pass as a graph).
TENSOR, GRAPH, CONTEXT, ERROR = 1, 2, 3, 4

_TENSOR_TYPES = {"FP16": ElementType.f16, "FP32": ElementType.f32, "FP64": ElementType.f64,
                 "U8": ElementType.u8, "I32": ElementType.i32, "I64": ElementType.i64}
_TYPE_NAMES = {t: name for name, t in _TENSOR_TYPES.items()}
_ENCODINGS = {"openvino": ModelFormat.openvino, "onnx": ModelFormat.onnx, "ggml": ModelFormat.ggml}
_TARGETS = {"cpu": Device.CPU, "gpu": Device.GPU, "tpu": Device.NPU}
# wasmtime names OpenVINO outputs "0", "1", ...; GGML outputs keep WasmEdge's indices
_OUTPUTS_BY_INDEX = frozenset({ModelFormat.openvino, ModelFormat.ggml})

# error-code for each errno of the shared host layer
_CODES = {
    Errno.invalid_argument: "invalid-argument",
    Errno.invalid_encoding: "invalid-encoding",
    Errno.unsupported_operation: "unsupported-operation",
    Errno.too_large: "too-large",
    Errno.not_found: "not-found",
    Errno.model_not_found: "not-found",
    Errno.prompt_too_long: "too-large",
}


class WitError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Tensor:
    dims: list[int]
    type_name: str
    data: bytes


@dataclass
class _GraphEntry:
    graph: Graph
    fmt: ModelFormat
    owned: bool  # loaded from bytes by this instance; a named graph is shared
    nhwc: bool
    signature: Signature | None = None


@dataclass
class _ContextEntry:
    backend: ExecutionContext
    graph: _GraphEntry


class WitSession:
    """The wasi:nn resources of one component instance."""

    def __init__(self, host: WasiNnHost) -> None:
        self.host = host
        self.tensors: dict[int, _Tensor] = {}
        self.graphs: dict[int, _GraphEntry] = {}
        self.contexts: dict[int, _ContextEntry] = {}
        self.errors_live: dict[int, WitError] = {}
        self.tensor_bytes = 0
        self.loaded_bytes = 0
        self._next = 1
        self.errors: list[str] = []  # why calls were refused, for `wasminfer run` to print (the first few)
        self.durations: dict[str, list[float]] = {}  # inference seconds per model, for the metrics
        self.failure: str | None = None
        self.deadline_passed = False

    def enter(self) -> None:
        _local.session = self

    def close(self) -> None:
        if getattr(_local, "session", None) is self:
            _local.session = None
        release_handles(self.contexts, self.graphs)
        self.tensors.clear()
        self.errors_live.clear()
        self.host.record_inferences(self.durations)

    def _rep(self) -> int:
        rep = self._next
        self._next += 1
        return rep

    # -- tensor ---------------------------------------------------------------------------------

    def new_tensor(self, dims: list[int], type_name: str, data: bytes) -> int:
        if len(self.tensors) >= MAX_TENSORS:
            raise GuestTrap(f"more than {MAX_TENSORS} live wasi-nn tensors in one instance")
        if self.tensor_bytes + len(data) > self.host.max_loaded_bytes:
            raise GuestTrap(f"wasi-nn tensors of this instance would exceed {self.host.max_loaded_bytes} bytes (its memory limit)")
        rep = self._rep()
        self.tensors[rep] = _Tensor(list(dims), type_name, data)
        self.tensor_bytes += len(data)
        return rep

    def drop_tensor(self, rep: int) -> None:
        t = self.tensors.pop(rep, None)
        if t is not None:
            self.tensor_bytes -= len(t.data)

    def tensor(self, rep: int) -> _Tensor:
        t = self.tensors.get(rep)
        if t is None:
            raise GuestTrap(f"no wasi-nn tensor {rep}")
        return t

    # -- graph ----------------------------------------------------------------------------------

    def _add_graph(self, entry: _GraphEntry) -> int:
        if len(self.graphs) >= MAX_GRAPHS:
            raise AbiError(Errno.too_large, f"more than {MAX_GRAPHS} graphs in one instance")
        rep = self._rep()
        self.graphs[rep] = entry
        return rep

    def load(self, builders: list[bytes], encoding: str, target: str) -> int:
        fmt = _ENCODINGS.get(encoding)
        if encoding == "autodetect" and builders:
            fmt = ModelFormat.openvino if builders[0].lstrip()[:1] == b"<" else ModelFormat.onnx
        if fmt is None:
            raise AbiError(Errno.invalid_encoding, f"{encoding} models are not supported")
        if not builders:
            raise AbiError(Errno.invalid_argument, "no graph builders")
        backend = self.host.backend_for(fmt, 0)
        if len(self.graphs) >= MAX_GRAPHS:
            raise AbiError(Errno.too_large, f"more than {MAX_GRAPHS} graphs in one instance")
        graph = self.host.load_graph(backend, fmt, builders, _TARGETS[target], self.loaded_bytes)
        self.loaded_bytes += sum(len(b) for b in builders)
        return self._add_graph(_GraphEntry(graph, fmt, True, reads_nhwc(self.host.input_layout, fmt)))

    def load_by_name(self, name: str) -> int:
        if len(name.encode()) > MAX_NAME_BYTES:
            raise AbiError(Errno.invalid_argument, f"model name of {len(name.encode())} bytes")
        graph, fmt = self.host.resolve_named(name)
        return self._add_graph(_GraphEntry(graph, fmt, False, reads_nhwc(self.host.input_layout, fmt)))

    def drop_graph(self, rep: int) -> None:
        g = self.graphs.pop(rep, None)
        if g is not None and g.owned and not any(c.graph is g for c in self.contexts.values()):
            g.graph.close()

    def init_context(self, graph_rep: int) -> int:
        g = self.graphs.get(graph_rep)
        if g is None:
            raise GuestTrap(f"no wasi-nn graph {graph_rep}")
        if len(self.contexts) >= MAX_CONTEXTS:
            raise AbiError(Errno.too_large, f"more than {MAX_CONTEXTS} execution contexts in one instance")
        backend = self.host.open_context(g.graph, g.nhwc)
        rep = self._rep()
        self.contexts[rep] = _ContextEntry(backend, g)
        return rep

    def drop_context(self, rep: int) -> None:
        c = self.contexts.pop(rep, None)
        if c is None:
            return
        _close_quietly(c.backend.close)
        if c.graph.owned and not any(g is c.graph for g in self.graphs.values()) \
                and not any(o.graph is c.graph for o in self.contexts.values()):
            _close_quietly(c.graph.graph.close)  # its graph handle was dropped first

    # -- inference ------------------------------------------------------------------------------

    def compute(self, ctx_rep: int, inputs: list[tuple[str, int]]) -> list[tuple[str, _Tensor]]:
        c = self.contexts.get(ctx_rep)
        if c is None:
            raise GuestTrap(f"no wasi-nn execution context {ctx_rep}")
        tensors = []
        for name, rep in inputs:  # the inputs are moved to the host: they are gone whatever happens
            tensors.append((name, self.tensor(rep)))
            self.drop_tensor(rep)
        if len(tensors) > MAX_INPUTS:
            raise AbiError(Errno.invalid_argument, f"{len(tensors)} inputs (at most {MAX_INPUTS})")
        sig = self._signature(c.graph)
        text = bool(getattr(c.backend, "takes_text", False))
        for name, t in tensors:
            index = _input_index(sig, name)
            etype = _TENSOR_TYPES.get(t.type_name)
            if etype is None:
                raise AbiError(Errno.unsupported_operation, f"input {name!r}: {t.type_name} tensors are not supported")
            if len(t.dims) > MAX_DIMS:
                raise AbiError(Errno.invalid_argument, f"input {name!r} has {len(t.dims)} dimensions (at most {MAX_DIMS})")
            dims = tuple(t.dims)
            if text:
                etype, dims = ElementType.u8, (len(t.data),)
            elif element_count(dims) * etype.size != len(t.data):
                raise AbiError(Errno.invalid_argument, f"input {name!r}: {len(t.data)} bytes of data for "
                                                       f"{'x'.join(map(str, dims))} {t.type_name} elements")
            # the tensor's own bytes, read in place (they live until this call returns)
            c.backend.set_input(index, etype, dims, _address(t.data), len(t.data))
        started = time.perf_counter()
        try:
            c.backend.compute()
        except ContextFull:
            # A component cannot read a partial generation after an error, as a witx guest can:
            # a generation that fills the context ends there, like one that reaches n-predict.
            if not text:
                raise
        self.durations.setdefault(c.graph.graph.label, []).append(time.perf_counter() - started)
        outputs = []
        for i, info in enumerate(sig.outputs):
            addr, nbytes = c.backend.output(i)
            etype = info.etype
            if etype is None:
                raise AbiError(Errno.unsupported_operation, f"output {info.name!r} has a type wasi-nn cannot carry")
            data = ctypes.string_at(addr, nbytes)
            out_dims = _static(info.dims)
            if text:  # text out as it came in: bytes
                out_dims = [nbytes]
            elif out_dims is None:  # a dynamic shape: this inference's
                out_dims = list(c.backend.output_dims(i))
            name = str(i) if c.graph.fmt in _OUTPUTS_BY_INDEX else info.name
            outputs.append((name, _Tensor(out_dims, _TYPE_NAMES[etype], data)))
        return outputs

    def _signature(self, g: _GraphEntry) -> Signature:
        if g.signature is None:
            try:
                g.signature = g.graph.signature() if g.owned else self.host.shared_signature(g.graph)
            except Unsupported:
                raise AbiError(Errno.unsupported_operation, "this model's inputs and outputs are not known to the "
                                                            "host, which named-tensor compute needs") from None
        return g.signature

    # -- errors ---------------------------------------------------------------------------------

    def drop_error(self, rep: int) -> None:
        self.errors_live.pop(rep, None)

    def error_of(self, rep: int) -> WitError:
        e = self.errors_live.get(rep)
        if e is None:
            raise GuestTrap(f"no wasi:nn error {rep}")
        return e

    def error(self, name: str, err: BaseException) -> int:
        """An error resource for a failed call (and the log line and reason the operator sees)."""
        if len(self.errors_live) >= MAX_ERRORS:
            raise GuestTrap(f"more than {MAX_ERRORS} live wasi-nn errors in one instance (errors must be dropped)")
        if isinstance(err, DeadlineExceeded):
            self.deadline_passed = True
            code, text = "timeout", str(err)
        else:
            errno = _errno_for(err)
            code = _CODES.get(errno, "runtime-error")
            text = str(err) if isinstance(err, AbiError) or code != "runtime-error" else f"backend failure: {err}"
            if isinstance(err, HostFailure):  # the model host failed: the server reports it with the request
                self.failure = str(err)
            if code == "runtime-error":
                log.warning("worker %s: wasi:nn %s failed: %s", self.host.owner, name, err)
        if len(self.errors) < MAX_REASONS:
            self.errors.append(f"wasi:nn {name} -> {code}: {text}")
        rep = self._rep()
        self.errors_live[rep] = WitError(code, text)
        return rep


class GuestTrap(Exception):
    """A guest error that ends the invocation (a trap): a handle that is not there, too many resources."""


def _static(dims: ModelDims) -> list[int] | None:
    """A model's fixed shape, or None when any dimension is dynamic."""
    if dims is None or any(d is None for d in dims):
        return None
    return [int(d) for d in dims if d is not None]


def _address(data: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


def _input_index(sig: Signature, name: str) -> int:
    for i, info in enumerate(sig.inputs):
        if info.name == name:
            return i
    if name.isdecimal() and int(name) < len(sig.inputs):
        return int(name)
    known = ", ".join(repr(i.name) for i in sig.inputs)
    raise AbiError(Errno.invalid_argument, f"the model has no input {name!r} (its inputs: {known})")


_local = threading.local()


def current() -> WitSession | None:
    """The session of the invocation running on this thread."""
    return getattr(_local, "session", None)


def note_trap(message: str) -> None:
    """Why a wasi:nn call trapped, for the executor to report (wasmtime wraps it in its own text)."""
    _local.trap = message


def take_trap() -> str | None:
    message: str | None = getattr(_local, "trap", None)
    _local.trap = None
    return message


def define(linker: cm.Linker) -> None:
    """The four interfaces on a component linker (their state is the session bound to the thread)."""
    from wasminfer_runtime.wasinn import wit_linker  # numpy: only once a component uses wasi:nn

    wit_linker.define(linker)
