"""The wasi-nn core-module ABI (`wasi_ephemeral_nn`, witx): numbers, layouts, guest memory.

Pure data and bounds checks; nothing here knows which backend runs a graph (element types are
the backend-neutral ones of `backends.base`).
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass

from wasminfer_runtime.backends.base import ElementType

MODULE_NAME = "wasi_ephemeral_nn"

U32_MAX = 0xFFFF_FFFF


class Errno(enum.IntEnum):
    success = 0
    invalid_argument = 1
    invalid_encoding = 2
    missing_memory = 3
    busy = 4
    runtime_error = 5
    unsupported_operation = 6
    too_large = 7
    not_found = 8
    # WasmEdge's, for its LLM backends (a guest's loop reads them)
    end_of_sequence = 100
    context_full = 101
    prompt_too_long = 102
    model_not_found = 103


class GraphEncoding(enum.IntEnum):
    openvino = 0
    onnx = 1
    tensorflow = 2
    pytorch = 3
    tensorflowlite = 4
    autodetect = 5
    ggml = 6  # WasmEdge's


class ExecutionTarget(enum.IntEnum):
    cpu = 0
    gpu = 1
    tpu = 2
    auto = 3  # a WasmEdge addition


# wasmtime's witx and the wasi-nn crate from 0.6 on.
WITX_TYPES: dict[int, ElementType] = {
    0: ElementType.f16, 1: ElementType.f32, 2: ElementType.f64,
    3: ElementType.u8, 4: ElementType.i32, 5: ElementType.i64,
}
# The wasi-nn crate 0.4/0.5 and WasmEdge.
LEGACY_TYPES: dict[int, ElementType] = {0: ElementType.f16, 1: ElementType.f32, 2: ElementType.u8, 3: ElementType.i32}

TENSOR_STRUCT = struct.Struct("<IIB3xII")  # dims_ptr, dims_len, type (1 byte + padding), data_ptr, data_len
TENSOR_SIZE = TENSOR_STRUCT.size  # 20
BUILDER_STRUCT = struct.Struct("<II")  # ptr, len
BUILDER_SIZE = BUILDER_STRUCT.size

# Far above any real model (8 dims is typical) and small enough that reading dims is cheap.
MAX_DIMS = 16
# A model passed to `load` has at most a few parts (IR: xml + bin; ONNX: one file).
MAX_BUILDERS = 8


class AbiError(Exception):
    """A guest request that must be answered with an errno."""

    def __init__(self, errno: Errno, reason: str) -> None:
        super().__init__(reason)
        self.errno = errno


def in_bounds(ptr: int, length: int, memory_size: int) -> bool:
    """True when [ptr, ptr+length) lies inside guest memory (both are u32 from the guest)."""
    return 0 <= ptr and 0 <= length and ptr + length <= memory_size


def element_type(code: int, data_len: int, element_count: int) -> ElementType:
    """Decide the element type of a tensor, whichever numbering the guest was compiled with.

    Codes 0 and 1 mean the same in both. For 2 and 3 the byte length tells: 2 is f64 (8 bytes
    per element) or u8 (1); 3 is u8 (1) or i32 (4).
    """
    witx, legacy = WITX_TYPES.get(code), LEGACY_TYPES.get(code)
    if witx is not None and witx is legacy:
        return witx
    candidates = [t for t in (witx, legacy) if t is not None]
    for t in candidates:
        if element_count * t.size == data_len:
            return t
    if not candidates:
        raise AbiError(Errno.invalid_argument, f"unknown tensor type {code}")
    names = " or ".join(t.value for t in candidates)
    raise AbiError(
        Errno.invalid_argument,
        f"tensor data is {data_len} bytes, which fits neither {names} for {element_count} elements",
    )


@dataclass(frozen=True)
class TensorHeader:
    dims_ptr: int
    dims_len: int
    type_code: int
    data_ptr: int
    data_len: int


def decode_tensor(raw: bytes) -> TensorHeader:
    dims_ptr, dims_len, type_code, data_ptr, data_len = TENSOR_STRUCT.unpack(raw)
    return TensorHeader(dims_ptr, dims_len, type_code, data_ptr, data_len)


def decode_dims(raw: bytes, dims_len: int) -> tuple[int, ...]:
    return struct.unpack(f"<{dims_len}I", raw)


def element_count(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def encoding_name(code: int) -> str:
    try:
        return GraphEncoding(code).name
    except ValueError:
        return f"encoding {code}"


class GuestMemory:
    """Bounds-checked access to a guest's linear memory at a host address.

    Made fresh for each host call from the memory's current base and size: `memory.grow` may
    move the memory, so no address or view outlives the call.
    """

    __slots__ = ("base", "size")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size

    def address(self, ptr: int, length: int) -> int:
        """Host address of [ptr, ptr+length), or AbiError when any byte of it is outside."""
        if ptr < 0 or length < 0 or ptr + length > self.size:
            raise AbiError(Errno.invalid_argument, f"guest range {ptr:#x}+{length} is outside its {self.size}-byte memory")
        return self.base + ptr

    def read(self, ptr: int, length: int) -> bytes:
        return ctypes.string_at(self.address(ptr, length), length)

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(self.address(ptr, len(data)), data, len(data))

    def write_u32(self, ptr: int, value: int) -> None:
        ctypes.c_uint32.from_address(self.address(ptr, 4)).value = value

    def read_tensor(self, ptr: int) -> TensorHeader:
        return decode_tensor(self.read(ptr, TENSOR_SIZE))

    def read_dims(self, header: TensorHeader) -> tuple[int, ...]:
        if header.dims_len > MAX_DIMS:
            raise AbiError(Errno.invalid_argument, f"tensor has {header.dims_len} dimensions (at most {MAX_DIMS})")
        return decode_dims(self.read(header.dims_ptr, 4 * header.dims_len), header.dims_len)

    def read_builders(self, ptr: int, count: int) -> list[bytes]:
        """The byte arrays of a graph builder list (`load`)."""
        if count == 0 or count > MAX_BUILDERS:
            raise AbiError(Errno.invalid_argument, f"{count} graph builders (1 to {MAX_BUILDERS} expected)")
        raw = self.read(ptr, BUILDER_SIZE * count)
        parts = []
        for i in range(count):
            p, n = BUILDER_STRUCT.unpack_from(raw, i * BUILDER_SIZE)
            parts.append(self.read(p, n))
        return parts
