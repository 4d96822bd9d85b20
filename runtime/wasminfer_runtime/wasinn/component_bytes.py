"""`list<u8>` between components and Python in one copy, not one Python call per byte.

wasmtime-py converts a component list value element by element: a tensor's data or a model's
bytes cross as one `wasmtime_component_val_t` per byte, each read or written through ctypes,
about 2 s per MiB. A list of u8 is laid out as an array of those values, each with its kind byte
at offset 0 and the byte itself at the union's offset, so numpy reads or writes every byte with
one strided copy. `install` swaps that in for `list<u8>` only; every other list keeps wasmtime-py's
conversion.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from wasmtime import _ffi as ffi
from wasmtime.component import _types

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)
_PAYLOAD = ffi.wasmtime_component_val_t.of.offset  # where the u8 sits in each value
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST

_generic_to_c = _types.ListType.convert_to_c
_generic_from_c = _types.ListType.convert_from_c


def _values(data: Any, n: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The n values of a list as raw bytes (n * _VAL_SIZE), without a copy."""
    address = ctypes.cast(data, ctypes.c_void_p).value
    return np.frombuffer(memoryview((ctypes.c_uint8 * (n * _VAL_SIZE)).from_address(address or 0)), dtype=np.uint8)


def _bytes_from_c(self: _types.ListType, c: Any) -> Any:
    if not self._is_bytes():
        return _generic_from_c(self, c)
    lst = c.of.list
    n = lst.size
    try:
        return _values(lst.data, n)[_PAYLOAD::_VAL_SIZE].tobytes() if n else b""
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))  # u8 values own nothing


def _bytes_to_c(self: _types.ListType, store: Any, val: Any, ptr: Any) -> None:
    if not self._is_bytes():
        return _generic_to_c(self, store, val, ptr)
    if not isinstance(val, (bytes, bytearray, memoryview)):
        raise TypeError("expected bytes value")
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        values = _values(raw.data, n)
        values[0::_VAL_SIZE] = _U8_KIND
        values[_PAYLOAD::_VAL_SIZE] = np.frombuffer(val, dtype=np.uint8)
    ptr.contents.kind = _LIST_KIND
    ptr.contents.of.list = raw
    return None


def install() -> None:
    _types.ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
    _types.ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]
