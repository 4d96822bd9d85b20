"""The ABI layer alone: tensor numbering decisions, struct layout, bounds checks."""

from __future__ import annotations

import ctypes
import struct

import pytest

from wasminfer_runtime.backends.base import ElementType
from wasminfer_runtime.wasinn.abi import (
    TENSOR_SIZE,
    AbiError,
    Errno,
    GuestMemory,
    decode_tensor,
    element_type,
)


@pytest.mark.parametrize(
    ("code", "data_len", "count", "expected"),
    [
        (0, 8, 4, ElementType.f16),  # the same in both numberings
        (1, 16, 4, ElementType.f32),
        (2, 32, 4, ElementType.f64),  # wasmtime/witx: f64
        (2, 4, 4, ElementType.u8),  # wasi-nn 0.4/0.5 and WasmEdge: u8
        (3, 4, 4, ElementType.u8),  # witx: u8
        (3, 16, 4, ElementType.i32),  # legacy: i32
        (4, 16, 4, ElementType.i32),  # witx only
        (5, 32, 4, ElementType.i64),
    ],
)
def test_both_tensor_numberings_are_told_apart_by_length(
    code: int, data_len: int, count: int, expected: ElementType
) -> None:
    assert element_type(code, data_len, count) is expected


def test_a_length_that_fits_no_numbering_is_invalid() -> None:
    with pytest.raises(AbiError) as err:
        element_type(3, 7, 4)
    assert err.value.errno is Errno.invalid_argument
    assert "u8 or i32" in str(err.value)


def test_unknown_type_code_is_invalid() -> None:
    with pytest.raises(AbiError) as err:
        element_type(17, 4, 1)
    assert err.value.errno is Errno.invalid_argument


def test_tensor_struct_reads_one_type_byte_and_skips_padding() -> None:
    raw = struct.pack("<IIB3sII", 0x100, 2, 1, b"\xde\xad\xbe", 0x200, 1024)
    assert len(raw) == TENSOR_SIZE == 20
    t = decode_tensor(raw)
    assert (t.dims_ptr, t.dims_len, t.type_code, t.data_ptr, t.data_len) == (0x100, 2, 1, 0x200, 1024)


def test_guest_memory_refuses_every_range_not_wholly_inside() -> None:
    buf = ctypes.create_string_buffer(64)
    mem = GuestMemory(ctypes.addressof(buf), 64)
    mem.write(60, b"abcd")
    assert mem.read(60, 4) == b"abcd"
    for ptr, length in [(61, 4), (64, 1), (0xFFFFFFF0, 16), (0, 0xFFFFFFFF), (65, 0)]:
        with pytest.raises(AbiError) as err:
            mem.read(ptr, length)
        assert err.value.errno is Errno.invalid_argument
    with pytest.raises(AbiError):
        mem.write_u32(62, 7)


def test_dims_and_builder_counts_are_capped_before_reading() -> None:
    buf = ctypes.create_string_buffer(64)
    mem = GuestMemory(ctypes.addressof(buf), 64)
    huge_dims = decode_tensor(struct.pack("<IIB3xII", 0, 0xFFFFFFFF, 1, 0, 0))
    with pytest.raises(AbiError):
        mem.read_dims(huge_dims)
    for count in (0, 9, 0x7FFFFFFF):
        with pytest.raises(AbiError):
            mem.read_builders(0, count)
