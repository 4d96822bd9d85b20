"""The few wasmtime C-API functions the runtime calls directly, with argument types chosen for speed.

wasmtime-py wraps every C function with pointer-typed arguments; building those pointer objects
costs microseconds on paths that run per wasi-nn call. These prototypes take and return plain
integers. They come from a second handle on wasmtime-py's own library so wasmtime-py's prototypes
stay as it set them.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _ffi as ffi

_lib = ctypes.CDLL(str(ffi.filename))
_size_t = ctypes.c_size_t
_vp = ctypes.c_void_p


def _fn(name: str, restype: type | None, *argtypes: type) -> Any:
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


# size_t callback(void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *args_and_results, size_t n)
HOST_CALLBACK = ctypes.CFUNCTYPE(_size_t, _size_t, _size_t, _size_t, _size_t)

linker_define_func_unchecked = _fn(
    "wasmtime_linker_define_func_unchecked", _size_t,
    _vp, ctypes.c_char_p, _size_t, ctypes.c_char_p, _size_t, _vp, _vp, _vp, _vp,
)
trap_new = _fn("wasmtime_trap_new", _size_t, ctypes.c_char_p, _size_t)
memory_data = _fn("wasmtime_memory_data", _size_t, _size_t, _size_t)
memory_data_size = _fn("wasmtime_memory_data_size", _size_t, _size_t, _size_t)


def address(obj: Any) -> int:
    """The integer address behind a ctypes pointer, array or function."""
    value = ctypes.cast(obj, _vp).value
    return int(value or 0)
