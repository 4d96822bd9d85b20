"""The WIT wasi:nn functions on a component linker, as raw C-API callbacks.

Why raw (as host.py does for the witx imports): wasmtime-py's component functions rebuild the
function's type from C on every call and convert every value through Python objects, which
costs more than 1 ms per inference on fc256. The WIT types are fixed, so each callback here
reads its arguments straight from wasmtime's value array and writes its result in place; byte
lists are copied with one strided numpy copy each way.

Ownership follows wasmtime's C API: the callee owns its arguments (every string, list and
resource handle read here is freed here, and the field cleared), and the caller owns what is
written to `results`. Resource types and their destructors are defined through wasmtime-py.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime import component as cm

from wasminfer_runtime.wasinn import wit
from wasminfer_runtime.wasinn.abi import MAX_BUILDERS

log = logging.getLogger(__name__)

_Val = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(_Val)
_PAYLOAD = _Val.of.offset  # where the scalar of a value sits
_KIND = {name: getattr(ffi, f"WASMTIME_COMPONENT_{name}").value
         for name in ("U8", "U32", "STRING", "LIST", "TUPLE", "ENUM", "RESULT", "RESOURCE", "BOOL")}
_ResourceAnyPtr = ctypes.POINTER(ffi.wasmtime_component_resource_any_t)
_ResourceHostPtr = ctypes.POINTER(ffi.wasmtime_component_resource_host_t)

_CALLBACK = ffi.wasmtime_component_func_callback_t
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()  # NULL: the callbacks live as long as the process


class _Abort(Exception):
    """Ends the call with a trap carrying this message."""


# -- values in ---------------------------------------------------------------------------------


def _values(data: Any, n: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The raw bytes of n values of a list, without a copy."""
    address = ctypes.cast(data, ctypes.c_void_p).value or 0
    return np.frombuffer(memoryview((ctypes.c_uint8 * (n * _VAL_SIZE)).from_address(address)), dtype=np.uint8)


def _take_bytes(val: Any) -> bytes:
    """A list<u8> argument, freed."""
    lst = val.of.list
    n = lst.size
    data = _values(lst.data, n)[_PAYLOAD::_VAL_SIZE].tobytes() if n else b""
    ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))
    return data


def _take_u32s(val: Any) -> list[int]:
    lst = val.of.list
    if lst.size > wit.MAX_DIMS:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))
        raise wit.GuestTrap(f"a tensor with {lst.size} dimensions (at most {wit.MAX_DIMS})")
    items = [lst.data[i].of.u32 for i in range(lst.size)]
    ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))
    return items


def _take_name(vec: Any) -> str:
    """A string or enum case argument, freed."""
    text = ctypes.string_at(vec.data, vec.size).decode("utf-8") if vec.size else ""
    ffi.wasm_byte_vec_delete(ctypes.byref(vec))
    return text


def _rep_of(ctx: Any, any_ptr: Any) -> int:
    """The host representation of a resource handle (borrowed or owned); the handle is not freed."""
    host = _ResourceHostPtr()
    err = ffi.wasmtime_component_resource_any_to_host(ctx, any_ptr, ctypes.byref(host))
    if err:
        raise wit.GuestTrap("a wasi:nn resource that this host did not make")
    rep = int(ffi.wasmtime_component_resource_host_rep(host))
    ffi.wasmtime_component_resource_host_delete(host)
    return rep


def _take_rep(ctx: Any, val: Any) -> int:
    any_ptr = ffi.take_pointer(val.of, "resource")
    try:
        return _rep_of(ctx, any_ptr)
    finally:
        ffi.wasmtime_component_resource_any_delete(any_ptr)


def _take_named_tensors(ctx: Any, val: Any) -> list[tuple[str, int]]:
    """list<tuple<string, own<tensor>>>, freed (the handles' resources move to the host)."""
    lst = val.of.list
    try:
        if lst.size > wit.MAX_INPUTS:
            raise wit.GuestTrap(f"{lst.size} inputs to compute (at most {wit.MAX_INPUTS})")
        out = []
        for i in range(lst.size):
            fields = lst.data[i].of.tuple
            name_vec = fields.data[0].of.string
            name = ctypes.string_at(name_vec.data, name_vec.size).decode("utf-8", errors="replace")
            out.append((name, _rep_of(ctx, fields.data[1].of.resource)))
        return out
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))


# -- values out --------------------------------------------------------------------------------


def _put_bytes(slot: Any, data: bytes) -> None:
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(data))
    if data:
        values = _values(raw.data, len(data))
        values[0::_VAL_SIZE] = _KIND["U8"]
        values[_PAYLOAD::_VAL_SIZE] = np.frombuffer(data, dtype=np.uint8)
    slot.kind = _KIND["LIST"]
    slot.of.list = raw


def _put_u32s(slot: Any, items: list[int]) -> None:
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(items))
    for i, v in enumerate(items):
        raw.data[i].kind = _KIND["U32"]
        raw.data[i].of.u32 = v
    slot.kind = _KIND["LIST"]
    slot.of.list = raw


def _put_text(slot: Any, kind: str, text: str) -> None:
    slot.kind = _KIND[kind]
    if kind == "ENUM":
        slot.of.enumeration = ffi.str_to_capi(text)
    else:
        slot.of.string = ffi.str_to_capi(text)


def _put_own(ctx: Any, slot: Any, rep: int, kind: int) -> None:
    host = ffi.wasmtime_component_resource_host_new(True, rep, kind)
    any_ptr = _ResourceAnyPtr()
    err = ffi.wasmtime_component_resource_host_to_any(ctx, host, ctypes.byref(any_ptr))
    ffi.wasmtime_component_resource_host_delete(host)
    if err:
        raise RuntimeError(str(WasmtimeError._from_ptr(err)))
    slot.kind = _KIND["RESOURCE"]
    slot.of.resource = any_ptr


def _put_result(slot: Any, ok: bool, fill: Callable[[Any], None]) -> None:
    payload = _Val()
    fill(payload)
    slot.kind = _KIND["RESULT"]
    slot.of.result.is_ok = ok
    slot.of.result.val = ffi.wasmtime_component_val_new(ctypes.byref(payload))


def _put_outputs(ctx: Any, slot: Any, outputs: list[tuple[str, int]]) -> None:
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, len(outputs))
    for i, (name, rep) in enumerate(outputs):
        fields = ffi.wasmtime_component_valtuple_t()
        ffi.wasmtime_component_valtuple_new_uninit(fields, 2)
        _put_text(fields.data[0], "STRING", name)
        _put_own(ctx, fields.data[1], rep, wit.TENSOR)
        raw.data[i].kind = _KIND["TUPLE"]
        raw.data[i].of.tuple = fields
    slot.kind = _KIND["LIST"]
    slot.of.list = raw


# -- the functions -----------------------------------------------------------------------------


def _session() -> wit.WitSession:
    s = wit.current()
    if s is None:
        raise _Abort("wasi:nn called outside an invocation")
    return s


def _trap(message: str) -> int:
    wit.note_trap(message)
    return int(ctypes.cast(ffi.wasmtime_error_new(message.encode()), ctypes.c_void_p).value or 0)


def _callback(name: str, body: Callable[[Any, Any, Any], None]) -> Any:
    def call(env: Any, ctx: Any, ty: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
        try:
            body(ctx, args, results)
        except (wit.GuestTrap, _Abort) as err:
            return _trap(str(err))
        except Exception as err:  # a bug here must not unwind into wasmtime
            log.exception("wasi:nn %s failed in the host", name)
            return _trap(f"wasi:nn {name} failed in the host: {err}")
        return 0

    return _CALLBACK(call)


def _fallible(ctx: Any, slot: Any, name: str, kind: int, make: Callable[[wit.WitSession], int]) -> None:
    """result<own<resource>, error>: the resource, or an error resource saying why."""
    s = _session()
    try:
        rep = make(s)
    except (wit.GuestTrap, _Abort):
        raise
    except Exception as err:
        error = s.error(name, err)
        _put_result(slot, False, lambda p: _put_own(ctx, p, error, wit.ERROR))
        return
    _put_result(slot, True, lambda p: _put_own(ctx, p, rep, kind))


def _tensor_new(ctx: Any, args: Any, results: Any) -> None:
    dims = _take_u32s(args[0])
    ty = _take_name(args[1].of.enumeration)
    data = _take_bytes(args[2])
    _put_own(ctx, results[0], _session().new_tensor(dims, ty, data), wit.TENSOR)


def _tensor_dimensions(ctx: Any, args: Any, results: Any) -> None:
    _put_u32s(results[0], list(_session().tensor(_take_rep(ctx, args[0])).dims))


def _tensor_ty(ctx: Any, args: Any, results: Any) -> None:
    _put_text(results[0], "ENUM", _session().tensor(_take_rep(ctx, args[0])).type_name)


def _tensor_data(ctx: Any, args: Any, results: Any) -> None:
    _put_bytes(results[0], _session().tensor(_take_rep(ctx, args[0])).data)


def _load(ctx: Any, args: Any, results: Any) -> None:
    outer = args[0].of.list
    if outer.size > MAX_BUILDERS:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(outer))
        raise wit.GuestTrap(f"{outer.size} graph builders (at most {MAX_BUILDERS})")
    builders = [_values(outer.data[i].of.list.data, outer.data[i].of.list.size)[_PAYLOAD::_VAL_SIZE].tobytes()
                for i in range(outer.size)]
    ffi.wasmtime_component_vallist_delete(ctypes.byref(outer))
    encoding = _take_name(args[1].of.enumeration)
    target = _take_name(args[2].of.enumeration)
    _fallible(ctx, results[0], "load", wit.GRAPH, lambda s: s.load(builders, encoding, target))


def _load_by_name(ctx: Any, args: Any, results: Any) -> None:
    name = _take_name(args[0].of.string)
    _fallible(ctx, results[0], "load-by-name", wit.GRAPH, lambda s: s.load_by_name(name))


def _init_context(ctx: Any, args: Any, results: Any) -> None:
    graph = _take_rep(ctx, args[0])
    _fallible(ctx, results[0], "init-execution-context", wit.CONTEXT, lambda s: s.init_context(graph))


def _compute(ctx: Any, args: Any, results: Any) -> None:
    context = _take_rep(ctx, args[0])
    inputs = _take_named_tensors(ctx, args[1])
    s = _session()
    try:
        outputs = s.compute(context, inputs)
    except (wit.GuestTrap, _Abort):
        raise
    except Exception as err:
        error = s.error("compute", err)
        _put_result(results[0], False, lambda p: _put_own(ctx, p, error, wit.ERROR))
        return
    reps = [(name, s.new_tensor(t.dims, t.type_name, t.data)) for name, t in outputs]
    _put_result(results[0], True, lambda p: _put_outputs(ctx, p, reps))


def _error_code(ctx: Any, args: Any, results: Any) -> None:
    _put_text(results[0], "ENUM", _session().error_of(_take_rep(ctx, args[0])).code)


def _error_data(ctx: Any, args: Any, results: Any) -> None:
    _put_text(results[0], "STRING", str(_session().error_of(_take_rep(ctx, args[0]))))


# (interface, function, body); created once per process and kept alive here (linkers hold raw pointers).
_FUNCTIONS = [
    (0, "[constructor]tensor", _tensor_new),
    (0, "[method]tensor.dimensions", _tensor_dimensions),
    (0, "[method]tensor.ty", _tensor_ty),
    (0, "[method]tensor.data", _tensor_data),
    (1, "load", _load),
    (1, "load-by-name", _load_by_name),
    (1, "[method]graph.init-execution-context", _init_context),
    (2, "[method]graph-execution-context.compute", _compute),
    (3, "[method]error.code", _error_code),
    (3, "[method]error.data", _error_data),
]
_CALLBACKS = [_callback(name, body) for _, name, body in _FUNCTIONS]

_RESOURCES = [
    (0, "tensor", wit.TENSOR, wit.WitSession.drop_tensor),
    (1, "graph", wit.GRAPH, wit.WitSession.drop_graph),
    (2, "graph-execution-context", wit.CONTEXT, wit.WitSession.drop_context),
    (3, "error", wit.ERROR, wit.WitSession.drop_error),
]


def _dropper(drop: Callable[[wit.WitSession, int], None]) -> Callable[[Any, int], None]:
    def dtor(store: Any, rep: int) -> None:
        s = wit.current()
        if s is not None:
            drop(s, rep)

    return dtor


def define(linker: cm.Linker) -> None:
    with linker.root() as root:
        for index, interface in enumerate(wit.INTERFACES):
            with root.add_instance(interface) as inst:
                for i, name, kind, drop in _RESOURCES:
                    if i == index:
                        inst.add_resource(name, cm.ResourceType.host(kind), _dropper(drop))
                for (i, name, _), cb in zip(_FUNCTIONS, _CALLBACKS):
                    if i != index:
                        continue
                    encoded = name.encode()
                    err = ffi.wasmtime_component_linker_instance_add_func(
                        inst.ptr(), ctypes.create_string_buffer(encoded), len(encoded), cb, None, _NO_FINALIZER)
                    if err:
                        raise RuntimeError(f"cannot define wasi:nn {name}")
