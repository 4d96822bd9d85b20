"""The wasmtime C-API functions the runtime calls directly, with argument types chosen for speed.

wasmtime-py wraps every C function with pointer-typed arguments; building those pointer objects
costs microseconds on paths that run per request or per wasi-nn call. These prototypes take and
return plain integers (addresses). They come from a second handle on wasmtime-py's own library so
wasmtime-py's prototypes stay as it set them. Like every ctypes call into a CDLL, each releases
the GIL while it runs, so wasm executes in parallel with the event loop.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _ffi as ffi

_lib = ctypes.CDLL(str(ffi.filename))
_size_t = ctypes.c_size_t
_vp = ctypes.c_void_p
_bool = ctypes.c_bool
_i64 = ctypes.c_int64
_str = ctypes.c_char_p


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
trap_new_code = _fn("wasmtime_trap_new_code", _size_t, ctypes.c_uint8)
caller_context = _fn("wasmtime_caller_context", _size_t, _size_t)
caller_export_get = _fn("wasmtime_caller_export_get", _bool, _size_t, _str, _size_t, _size_t)
engine_increment_epoch = _fn("wasmtime_engine_increment_epoch", None, _size_t)
memory_data = _fn("wasmtime_memory_data", _size_t, _size_t, _size_t)
memory_data_size = _fn("wasmtime_memory_data_size", _size_t, _size_t, _size_t)

# One invocation: a store, its WASI context, an instance and a call (see executor.py).
store_new = _fn("wasmtime_store_new", _size_t, _vp, _vp, _vp)
store_context = _fn("wasmtime_store_context", _size_t, _size_t)
store_limiter = _fn("wasmtime_store_limiter", None, _size_t, _i64, _i64, _i64, _i64, _i64)
store_delete = _fn("wasmtime_store_delete", None, _size_t)
context_set_epoch_deadline = _fn("wasmtime_context_set_epoch_deadline", None, _size_t, ctypes.c_uint64)
context_set_wasi = _fn("wasmtime_context_set_wasi", _size_t, _size_t, _size_t)  # owns the config after
wasi_config_new = _fn("wasi_config_new", _size_t)
wasi_config_delete = _fn("wasi_config_delete", None, _size_t)
wasi_config_set_argv = _fn("wasi_config_set_argv", _bool, _size_t, _size_t, _vp)
wasi_config_set_env = _fn("wasi_config_set_env", _bool, _size_t, _size_t, _vp, _vp)
wasi_config_set_stdin_bytes = _fn("wasi_config_set_stdin_bytes", None, _size_t, _vp)  # owns the bytes after
wasi_config_set_stdout_file = _fn("wasi_config_set_stdout_file", _bool, _size_t, _str)
wasi_config_set_stderr_file = _fn("wasi_config_set_stderr_file", _bool, _size_t, _str)
wasi_config_preopen_dir = _fn("wasi_config_preopen_dir", _bool, _size_t, _str, _str, _bool)
byte_vec_new = _fn("wasm_byte_vec_new", None, _vp, _size_t, _str)  # copies the bytes
instance_pre_instantiate = _fn("wasmtime_instance_pre_instantiate", _size_t, _size_t, _size_t, _vp, _vp)
instance_export_get = _fn("wasmtime_instance_export_get", _bool, _size_t, _vp, _str, _size_t, _vp)
func_call = _fn("wasmtime_func_call", _size_t, _size_t, _vp, _vp, _size_t, _vp, _size_t, _vp)


def address(obj: Any) -> int:
    """The integer address behind a ctypes pointer, array or function."""
    value = ctypes.cast(obj, _vp).value
    return int(value or 0)
