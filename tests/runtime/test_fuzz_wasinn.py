"""Fuzzing the wasi-nn host: seeded random programs of raw import calls, run by tests/guests/nn_fuzz.c.

Each program is a sequence of raw `wasi_ephemeral_nn` calls with hostile arguments (pointers out
of bounds, near 4 GiB, unaligned or overlapping; huge lengths; stale and huge handles; ranks 0..20;
dims 0, 1, huge or overflowing; every element type, encoding and target code) and `load`s of
mutated ONNX and OpenVINO IR models (bytes flipped, inserted, deleted, truncated; protobuf fields
dropped, duplicated, swapped, spliced or given lying lengths; IR attributes and weights offsets
rewritten), so mutated models reach both backends' native loaders. Models run in model host
processes (`process` isolation), as the server runs them.

After every batch: every answer was an errno of its function's class (an out-of-bounds pointer is
`invalid_argument`, never success), the runtime process is alive, a known-good inference through
the named model and through `load` gives exactly the reference output (model hosts may die on a
mutated model, but must come back), and the runtime's RSS stays flat after a warm-up batch.

    WASMINFER_FUZZ_SECONDS=600 .venv/bin/pytest tests/runtime/test_fuzz_wasinn.py -s   # longer run
    WASMINFER_FUZZ_SEED=1234 ...              # another seed (`random`: a fresh one, printed)
    WASMINFER_FUZZ_REPLAY=WORKER:HEX ...      # only this program, as printed by a failure

By default (CI) it fuzzes for about 20 s with a fixed seed. The summary (programs, calls, errnos,
model host deaths and why) is printed; `-s` shows it.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper
from openvino import opset13 as ops

from wasminfer_runtime.backends.base import InvalidModel
from wasminfer_runtime.backends.guest_models import MAX_OPSET_VERSION, check_self_contained
from wasminfer_runtime.backends.guest_models import _varint as read_number
from wasminfer_runtime.config import BackendName, ModelFormat, WorkerConfig
from wasminfer_runtime.engine import RuntimeEngine
from wasminfer_runtime.executor import Invocation, WorkerExecutor
from wasminfer_runtime.metrics import Metrics
from wasminfer_runtime.modelhost.supervisor import ModelHost
from wasminfer_runtime.models import ModelRegistry

from .conftest import fetch_models_module, ir_model

FUZZ_SECONDS = float(os.environ.get("WASMINFER_FUZZ_SECONDS", "20"))
_SEED_ENV = os.environ.get("WASMINFER_FUZZ_SEED", "")
SEED = random.SystemRandom().randrange(1 << 32) if _SEED_ENV == "random" else int(_SEED_ENV or "20240601")
REPLAY = os.environ.get("WASMINFER_FUZZ_REPLAY", "")
BATCH = 12  # programs between two checksums
RSS_GROWTH_LIMIT = 32 * 1024 * 1024
TIMEOUT_SECONDS = 5.0  # each program's execution timeout (a hung native loader costs this much)
NAMED = "fc256"
WIDTH = 16  # the tiny models' [1, 16] f32 input and output
_MIB = 1024 * 1024

# -- the program format of nn_fuzz.c ------------------------------------------------------------

FUNCTIONS = ["load", "load_by_name", "load_by_name_with_config", "init_execution_context", "set_input", "compute",
             "get_output", "compute_single", "get_output_single", "fini_single", "unload",
             "finalize_execution_context"]
FN = {name: i for i, name in enumerate(FUNCTIONS)}
ARITY = [5, 3, 5, 2, 3, 1, 5, 1, 5, 1, 1, 1]
OP_POKE, OP_POKEV, OP_GROW, OP_DUMP, OP_FILL = 0x20, 0x21, 0x22, 0x23, 0x24
IMM, SCR, END, SLOT, DATA = range(5)
Value = tuple[int, int]  # (kind, payload)

SCRATCH = 256 * 1024
GRAPH_SLOTS = 0  # 16 u32 handles written by load*
CTX_SLOTS = 64  # 16 u32 handles written by init_execution_context
WRITTEN = 128  # bytes_written of get_output
STRUCTS = 1024  # builders, tensors, dims: [1024, 8192)
TEXT = 8192  # names and configs: [8192, 16384)
TENSORS = 16384  # input data: [16384, 131072)
OUTPUT = 131072  # output buffers: [131072, 262144)


def u32(x: int) -> int:
    return x & 0xFFFF_FFFF


def imm(x: int) -> Value:
    return IMM, u32(x)


def scr(off: int) -> Value:
    return SCR, u32(off)


def end(back: int) -> Value:
    return END, u32(back)


def slot(off: int) -> Value:
    return SLOT, u32(off)


def dat(off: int) -> Value:
    return DATA, u32(off)


class Program:
    def __init__(self) -> None:
        self.code = bytearray()
        self.data = bytearray()

    def call(self, fn: str, *values: Value) -> None:
        assert len(values) == ARITY[FN[fn]], fn
        self.code.append(FN[fn])
        for kind, payload in values:
            self.code += struct.pack("<BI", kind, payload)

    def poke(self, off: int, raw: bytes) -> None:
        self.code += struct.pack("<BII", OP_POKE, u32(off), len(raw)) + raw

    def pokev(self, off: int, value: Value) -> None:
        self.code += struct.pack("<BIBI", OP_POKEV, u32(off), *value)

    def grow(self, pages: int) -> None:
        self.code += struct.pack("<BI", OP_GROW, u32(pages))

    def dump(self, off: int, n: int) -> None:
        self.code += struct.pack("<BII", OP_DUMP, off, n)

    def fill(self, off: int, n: int, byte: int) -> None:
        self.code += struct.pack("<BIIB", OP_FILL, off, n, byte)

    def add_data(self, raw: bytes) -> int:
        self.data += b"\0" * (-len(self.data) % 8)
        at = len(self.data)
        self.data += raw
        return at

    def encode(self) -> bytes:
        return struct.pack("<I", len(self.code)) + bytes(self.code) + bytes(self.data)


# -- the models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    encoding: int  # 0 OpenVINO IR, 1 ONNX
    parts: tuple[bytes, ...]


def tiny_weights() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(16)
    return (rng.standard_normal((WIDTH, WIDTH)) / 4).astype(np.float32), rng.standard_normal(WIDTH).astype(np.float32)


def tiny_expected(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    w, b = tiny_weights()
    y: np.ndarray[Any, Any] = np.maximum(x.astype(np.float64) @ w.astype(np.float64) + b, 0).astype(np.float32)
    return y


def tiny_onnx(dynamic: bool) -> bytes:
    """relu(x @ W + b), [1, 16] f32 (or [N, 16], N dynamic)."""
    w, b = tiny_weights()
    batch: int | str = "N" if dynamic else 1
    io = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [batch, WIDTH]) for v in ("x", "y")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
             helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", io[:1], io[1:],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def tiny_ir(folder: Path, dynamic: bool) -> tuple[bytes, bytes]:
    w, b = tiny_weights()
    x = ops.parameter([-1 if dynamic else 1, WIDTH], ov.Type.f32, name="x")
    y = ops.relu(ops.add(ops.matmul(x, ops.constant(w), False, False), ops.constant(b.reshape(1, WIDTH))))
    path = folder / ("dyn.xml" if dynamic else "tiny.xml")
    ov.save_model(ov.Model([y], [x], "tiny"), path, compress_to_fp16=False)
    return path.read_bytes(), path.with_suffix(".bin").read_bytes()


@dataclass(frozen=True)
class Corpus:
    onnx: tuple[bytes, ...]  # static, dynamic
    ir: tuple[tuple[bytes, bytes], ...]

    def valid(self, rng: random.Random) -> Model:
        if rng.random() < 0.5:
            return Model(1, (rng.choice(self.onnx),))
        return Model(0, rng.choice(self.ir))


# -- mutations ----------------------------------------------------------------------------------

INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 255, 256, 1023, 1024, 4096, 65535, 65536, 0x7FFF_FFFF,
                   0x8000_0000, 0xFFFF_FFF0, 0xFFFF_FFFC, 0xFFFF_FFFE, 0xFFFF_FFFF]


def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One blind mutation: flip, set, insert, delete, duplicate, truncate or splice."""
    b = bytearray(data)
    if not b:
        return bytes(rng.randbytes(rng.randrange(1, 64)))
    i = rng.randrange(len(b))
    choice = rng.randrange(8)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            j = rng.randrange(len(b))
            b[j] ^= 1 << rng.randrange(8)
    elif choice == 1:
        b[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
    elif choice == 2:
        b[i:i] = rng.randbytes(rng.randint(1, 32))
    elif choice == 3:
        del b[i:i + rng.randint(1, 64)]
    elif choice == 4:
        n = rng.randint(1, 256)
        b[i:i] = b[i:i + n]
    elif choice == 5:
        del b[rng.randrange(len(b) + 1):]
    elif choice == 6 and other:
        j = rng.randrange(len(other))
        b = b[:i] + bytearray(other[j:j + rng.randint(1, 512)]) + b[i:]
    elif len(b) >= 4:
        struct.pack_into("<I", b, min(i, len(b) - 4), rng.choice(INTERESTING_U32))
    return bytes(b)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    return read_number(data, pos, len(data))  # the runtime's own reader: the mutator sees what it sees


@dataclass
class PbField:
    number: int
    wire: int
    value: bytes | int  # LEN: the payload; VARINT: the number; I32/I64: the raw bytes

    def encode(self, lie: int = 0) -> bytes:
        key = _varint(self.number << 3 | self.wire)
        if self.wire == 2:
            assert isinstance(self.value, bytes)
            return key + _varint(len(self.value) + lie) + self.value
        if self.wire == 0:
            assert isinstance(self.value, int)
            return key + _varint(self.value)
        assert isinstance(self.value, bytes)
        return key + self.value


def pb_fields(data: bytes) -> list[PbField] | None:
    """The fields of one protobuf message, or None when it is no well-formed message."""
    fields, pos = [], 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _read_varint(data, pos)
                fields.append(PbField(number, wire, value))
            elif wire == 2:
                n, pos = _read_varint(data, pos)
                if pos + n > len(data):
                    return None
                fields.append(PbField(number, wire, data[pos:pos + n]))
                pos += n
            elif wire in (1, 5):
                n = 8 if wire == 1 else 4
                if pos + n > len(data):
                    return None
                fields.append(PbField(number, wire, data[pos:pos + n]))
                pos += n
            else:
                return None
    except InvalidModel:
        return None
    return fields if number_ok(fields) else None


def number_ok(fields: list[PbField]) -> bool:
    return all(0 < f.number < 1 << 29 for f in fields)


def mutate_protobuf(rng: random.Random, data: bytes, other: bytes, depth: int = 0) -> bytes:
    """A structure-aware mutation of an ONNX model: fields dropped, duplicated, swapped, spliced
    from another model, varints set to edge values, lengths that lie, or the same one level down."""
    fields = pb_fields(data)
    if not fields:
        return mutate_bytes(rng, data, other)
    i = rng.randrange(len(fields))
    f = fields[i]
    choice = rng.randrange(9)
    lie_at, lie = -1, 0
    nested = [k for k, g in enumerate(fields) if g.wire == 2 and isinstance(g.value, bytes) and pb_fields(g.value)]
    if choice <= 2 and nested and depth < 6:  # descend: graph -> node -> attribute -> tensor
        k = rng.choice(nested)
        g = fields[k]
        assert isinstance(g.value, bytes)
        fields[k] = PbField(g.number, 2, mutate_protobuf(rng, g.value, other, depth + 1))
    elif choice == 3:
        del fields[i]
    elif choice == 4:
        fields.insert(rng.randrange(len(fields) + 1), f)
    elif choice == 5 and len(fields) > 1:
        j = rng.randrange(len(fields))
        fields[i], fields[j] = fields[j], fields[i]
    elif choice == 6:
        donor = pb_fields(other) or []
        if donor:
            fields.insert(rng.randrange(len(fields) + 1), rng.choice(donor))
    elif choice == 7:
        if f.wire == 0:
            f.value = rng.choice([0, 1, 2, 7, 13, 0x7FFF_FFFF, 0xFFFF_FFFF, (1 << 63) - 1, (1 << 64) - 1])
        elif f.wire == 2 and isinstance(f.value, bytes):
            f.value = mutate_bytes(rng, f.value, other)
    elif f.wire == 2:
        lie_at, lie = i, rng.choice([-1, 1, 7, 1 << 20, 1 << 31])
    return b"".join(g.encode(lie if k == lie_at else 0) for k, g in enumerate(fields))


_IR_NUMBER = re.compile(rb'="(-?\d+)"')
_IR_DIMS = re.compile(rb"<dim>(-?\d+)</dim>")
_IR_TYPES = [b"f32", b"f16", b"f64", b"bf16", b"u1", b"u4", b"i4", b"u8", b"i8", b"i32", b"i64", b"u64", b"boolean",
             b"string", b"dynamic", b"undefined", b"nf4", b"f8e4m3", b"bogus", b""]
_IR_LAYERS = [b"Parameter", b"Const", b"MatMul", b"Add", b"Relu", b"Result", b"Convolution", b"Reshape",
              b"Broadcast", b"Loop", b"If", b"Bogus"]
_IR_NUMBERS = [b"0", b"-1", b"1", b"2", b"7", b"4294967295", b"4294967296", b"18446744073709551615",
               b"99999999999999999999", b"-9223372036854775808", b"1e9", b" "]


def mutate_ir(rng: random.Random, xml: bytes, weights: bytes, other: bytes) -> tuple[bytes, bytes]:
    """An IR mutation: a number, dimension, element type or layer type rewritten, a line dropped
    or duplicated (a layer, an edge), the weights cut or flipped, or blind bytes."""
    choice = rng.randrange(8)
    if choice == 0:
        hits = list(_IR_NUMBER.finditer(xml))  # offset=, size=, id=, from-layer=, version= ...
        if hits:
            m = rng.choice(hits)
            xml = xml[:m.start(1)] + rng.choice(_IR_NUMBERS) + xml[m.end(1):]
    elif choice == 1:
        hits = list(_IR_DIMS.finditer(xml))
        if hits:
            m = rng.choice(hits)
            xml = xml[:m.start(1)] + rng.choice(_IR_NUMBERS) + xml[m.end(1):]
    elif choice == 2:
        hits = list(re.finditer(rb'(?:element_type|precision)="([^"]*)"', xml))
        if hits:
            m = rng.choice(hits)
            xml = xml[:m.start(1)] + rng.choice(_IR_TYPES) + xml[m.end(1):]
    elif choice == 3:
        hits = list(re.finditer(rb' type="([^"]*)"', xml))
        if hits:
            m = rng.choice(hits)
            xml = xml[:m.start(1)] + rng.choice(_IR_LAYERS) + xml[m.end(1):]
    elif choice == 4:
        lines = xml.split(b"\n")
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        xml = b"\n".join(lines)
    elif choice == 5:
        weights = weights[:rng.randrange(len(weights) + 1)] if rng.random() < 0.5 else mutate_bytes(rng, weights, b"")
    elif choice == 6:
        xml = mutate_bytes(rng, xml, other)
    else:
        xml = re.sub(rb"<dim>(\d+)</dim>", lambda m: b"<dim>" + rng.choice(_IR_NUMBERS) + b"</dim>", xml, count=3)
    return xml, weights


def mutated(rng: random.Random, corpus: Corpus) -> Model:
    if rng.random() < 0.5:
        data, other = rng.choice(corpus.onnx), rng.choice(corpus.onnx + tuple(x for x, _ in corpus.ir))
        for _ in range(rng.randint(1, 3)):
            data = mutate_protobuf(rng, data, other) if rng.random() < 0.6 else mutate_bytes(rng, data, other)
        return Model(1, (data,))
    xml, weights = rng.choice(corpus.ir)
    for _ in range(rng.randint(1, 3)):
        xml, weights = mutate_ir(rng, xml, weights, corpus.onnx[0])
    return Model(0, (xml, weights))


# -- the program generator ----------------------------------------------------------------------

ETYPE_SIZE = {0: 2, 1: 4, 2: 8, 3: 1, 4: 4, 5: 8}  # witx numbering (the legacy one shares 0, 1)


class Generator:
    """One program from one seeded Random: scenarios that reach deep states (a loaded graph, a
    context with inputs set) with hostile arguments mixed in, and raw calls with any arguments."""

    def __init__(self, rng: random.Random, corpus: Corpus, fc256_input: bytes) -> None:
        self.rng = rng
        self.corpus = corpus
        self.fc256_input = fc256_input
        self.p = Program()
        self.graphs = 0  # graph slots written so far
        self.contexts = 0
        self.struct_at = STRUCTS
        self.text_at = TEXT

    def program(self) -> Program:
        scenarios: list[tuple[float, Callable[[], None]]] = [
            (3, self.named_inference), (4, self.guest_load), (2, self.raw_call), (1, self.teardown),
            (0.5, self.grow), (1, self.named_with_config),
        ]
        weights = [w for w, _ in scenarios]
        for _ in range(self.rng.randint(1, 8)):
            self.rng.choices([f for _, f in scenarios], weights)[0]()
        return self.p

    # -- argument pickers ---------------------------------------------------------------------

    def hostile(self, p: float = 0.15) -> bool:
        return self.rng.random() < p

    def ptr(self, valid: Value, need: int) -> Value:
        """Usually `valid`; else out of bounds, across the end, near 4 GiB, unaligned or anywhere."""
        if not self.hostile():
            return valid
        r = self.rng
        kind, payload = valid
        return r.choice([
            imm(r.choice([0, 1, 0xFFFF_FFFF, 0xFFFF_FFFC, 0xFFFF_FFF0, 0x8000_0000, 0x7FFF_FFFF, -need])),
            imm(r.getrandbits(32)),
            end(r.choice([0, 1, 2, 3, max(0, need - 1), need, need + 1, -1, -4096])),
            (kind, u32(payload + r.choice([1, 2, 3, -1, -3]))),  # unaligned, or overlapping its neighbour
            scr(r.randrange(SCRATCH)),
            scr(SCRATCH - r.randrange(1, 8)),
            scr(GRAPH_SLOTS),  # on top of the handles
        ])

    def length(self, valid: int) -> int:
        if not self.hostile():
            return valid
        r = self.rng
        return u32(r.choice([0, 1, valid - 1, valid + 1, 2 * valid, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
                             r.getrandbits(32), r.randrange(1 << 16)]))

    def handle(self, slots_at: int, count: int) -> Value:
        """A handle the host wrote (usually the latest), or a stale, made-up or huge one."""
        r = self.rng
        if count and not self.hostile(0.2):
            return slot(slots_at + 4 * (r.choice([count - 1, r.randrange(count)]) % 16))
        return r.choice([imm(0), imm(1), imm(r.randrange(70)), imm(0xFFFF_FFFF), imm(r.getrandbits(32)),
                         slot(slots_at + 4 * r.randrange(16))])

    def new_slot(self, slots_at: int, taken: int) -> tuple[int, Value]:
        at = slots_at + 4 * (taken % 16)
        return at, self.ptr(scr(at), 4)

    def struct_room(self, n: int) -> int:
        """Scratch for a builder list, tensor or dims: fresh, or (sometimes) the previous one's."""
        if self.struct_at + n > TEXT or self.hostile(0.1):
            self.struct_at = STRUCTS + self.rng.randrange(0, 64) * 4
        at = self.struct_at
        self.struct_at += (n + 7) & ~7
        return at

    def text(self, raw: bytes) -> int:
        if self.text_at + len(raw) > TENSORS:
            self.text_at = TEXT
        at = self.text_at
        self.p.poke(at, raw)
        self.text_at += len(raw) + 1
        return at

    # -- pieces -------------------------------------------------------------------------------

    def tensor(self, dims: list[int], etype: int, data: Value, nbytes: int) -> Value:
        """Write a wasi-nn tensor (and its dims) to scratch; maybe mutate rank, dims, type, data."""
        r, p = self.rng, self.p
        if self.hostile(0.3):
            dims = self.hostile_dims(dims)
        if self.hostile(0.2):
            etype = r.choice([0, 1, 2, 3, 4, 5, 6, 7, 99, 255])
        if self.hostile(0.2):
            nbytes = self.length(nbytes)
        dims_at = self.struct_room(4 * max(1, len(dims)))
        p.poke(dims_at, struct.pack(f"<{len(dims)}I", *(u32(d) for d in dims)))
        rank = len(dims) if not self.hostile(0.1) else u32(r.choice([21, 64, 1000, 0xFFFF_FFFF, r.getrandbits(32)]))
        at = self.struct_room(20)
        p.pokev(at, self.ptr(scr(dims_at), 4 * len(dims)))
        p.pokev(at + 4, imm(rank))
        garbage = r.getrandbits(24) if self.hostile(0.3) else 0  # bytes 9..11 are padding
        p.pokev(at + 8, imm(etype | garbage << 8))
        p.pokev(at + 12, self.ptr(data, nbytes))
        p.pokev(at + 16, imm(nbytes))
        return self.ptr(scr(at), 20)

    def hostile_dims(self, dims: list[int]) -> list[int]:
        r = self.rng
        choice = r.randrange(5)
        if choice == 0:  # another rank, 0..20
            return [r.choice([1, 2, 16, 256]) for _ in range(r.randint(0, 20))]
        if choice == 1 and dims:  # one dim set to an edge
            dims = list(dims)
            dims[r.randrange(len(dims))] = r.choice([0, 1, 2, 64, 65, 257, 0xFFFF, 0x10000, 0x7FFF_FFFF, 0xFFFF_FFFF])
            return dims
        if choice == 2:  # a product that overflows 32 and 64 bits
            return [r.choice([0x10000, 0xFFFF_FFFF, 0x8000_0000])] * r.randint(2, 6)
        if choice == 3:
            return [0] * r.randint(1, 4)
        return [r.getrandbits(r.choice([1, 4, 8, 32])) for _ in range(r.randint(1, 6))]

    def inference(self, graph: Value, dims: list[int], data: Value, nbytes: int) -> None:
        """init_execution_context, set_input, compute, get_output, some of them hostile."""
        r, p = self.rng, self.p
        at, out = self.new_slot(CTX_SLOTS, self.contexts)
        self.contexts += 1
        p.call("init_execution_context", graph, out)
        ctx = self.handle(CTX_SLOTS, self.contexts)
        for _ in range(r.choice([1, 1, 1, 2])):
            index = 0 if not self.hostile() else r.choice([1, 2, 0xFFFF_FFFF, r.getrandbits(32)])
            p.call("set_input", ctx, imm(index), self.tensor(dims, 1, data, nbytes))
        p.call(r.choice(["compute", "compute", "compute_single"]), ctx)
        for _ in range(r.choice([1, 1, 2])):
            index = 0 if not self.hostile() else r.choice([1, 7, 0xFFFF_FFFF])
            cap = self.length(4 * 1024)
            out_at = OUTPUT + (0 if not self.hostile() else r.randrange(0, 128 * 1024))
            fn = r.choice(["get_output", "get_output", "get_output_single"])
            p.call(fn, ctx, imm(index), self.ptr(scr(out_at), cap), imm(cap), self.ptr(scr(WRITTEN), 4))
        if r.random() < 0.3:
            p.call(r.choice(["finalize_execution_context", "fini_single"]), ctx)

    # -- scenarios ----------------------------------------------------------------------------

    def named_inference(self) -> None:
        r, p = self.rng, self.p
        name = NAMED.encode()
        if self.hostile(0.2):
            name = r.choice([b"", b"fc25", b"fc256\0", b"FC256", b"secret", b"\xff\xfe", b"x" * 1025,
                             b"../fc256", r.randbytes(r.randint(1, 32))])
        name_at = self.text(name)
        at, out = self.new_slot(GRAPH_SLOTS, self.graphs)
        self.graphs += 1
        p.call("load_by_name", self.ptr(scr(name_at), len(name)), imm(self.length(len(name))), out)
        if r.random() < 0.5:
            src = dat(p.add_data(self.fc256_input))
        else:
            src = scr(TENSORS)
            p.fill(TENSORS, 1024, r.getrandbits(8))
        self.inference(self.handle(GRAPH_SLOTS, self.graphs), [1, 256], src, 1024)

    def guest_load(self) -> None:
        r, p = self.rng, self.p
        model = self.corpus.valid(r) if r.random() < 0.2 else mutated(r, self.corpus)
        parts = list(model.parts)
        if self.hostile(0.1):
            parts = parts[:1] if len(parts) > 1 else parts * 2
        if self.hostile(0.05):
            parts = parts * r.randint(2, 5)
        builders = self.struct_room(8 * len(parts))
        for i, part in enumerate(parts):
            p.pokev(builders + 8 * i, self.ptr(dat(p.add_data(part)), len(part)))
            p.pokev(builders + 8 * i + 4, imm(self.length(len(part))))
        encoding = model.encoding if not self.hostile(0.2) else r.choice([0, 1, 2, 3, 4, 5, 6, 255, r.getrandbits(32)])
        if encoding == model.encoding and r.random() < 0.2:
            encoding = 5  # autodetect
        target = 0 if not self.hostile() else r.choice([1, 2, 3, 4, 255, r.getrandbits(32)])
        at, out = self.new_slot(GRAPH_SLOTS, self.graphs)
        self.graphs += 1
        count = len(parts) if not self.hostile() else u32(r.choice([0, 1, 2, 3, 8, 9, 0x7FFF_FFFF, 0xFFFF_FFFF]))
        p.call("load", self.ptr(scr(builders), 8 * len(parts)), imm(count), imm(encoding), imm(target), out)
        data = r.getrandbits(32).to_bytes(4, "little") * WIDTH
        batch = 1 if not self.hostile(0.3) else r.choice([2, 64, 65, 1000])
        self.inference(self.handle(GRAPH_SLOTS, self.graphs), [batch, WIDTH], dat(p.add_data(data * batch)),
                       4 * WIDTH * batch)

    def named_with_config(self) -> None:
        r, p = self.rng, self.p
        config = r.choice([b"{}", b"", b"\0\0", b"not json", b'{"ctx-size": 1024}', b"[" * 4000,
                           r.randbytes(r.randint(1, 64)), b" " * 70000])
        cfg_at = self.text(config[:4000]) if len(config) <= 4000 else TENSORS
        if len(config) > 4000:
            p.fill(TENSORS, min(len(config), 100_000), 0x20)
        name_at = self.text(NAMED.encode())
        at, out = self.new_slot(GRAPH_SLOTS, self.graphs)
        self.graphs += 1
        p.call("load_by_name_with_config", self.ptr(scr(name_at), len(NAMED)), imm(len(NAMED)),
               self.ptr(scr(cfg_at), len(config)), imm(self.length(len(config))), out)

    def teardown(self) -> None:
        r, p = self.rng, self.p
        for _ in range(r.randint(1, 3)):
            fn = r.choice(["unload", "finalize_execution_context", "fini_single", "compute"])
            h = self.handle(GRAPH_SLOTS, self.graphs) if fn == "unload" else self.handle(CTX_SLOTS, self.contexts)
            p.call(fn, h)

    def grow(self) -> None:
        self.p.grow(self.rng.choice([0, 1, 16, 0x10000, 0xFFFF_FFFF]))

    def raw_call(self) -> None:
        """One import with arguments from anywhere: handles, pointers, lengths, codes."""
        r = self.rng
        fn = r.randrange(len(FUNCTIONS))
        pool: list[Callable[[], Value]] = [
            lambda: self.handle(GRAPH_SLOTS, self.graphs), lambda: self.handle(CTX_SLOTS, self.contexts),
            lambda: imm(r.choice(INTERESTING_U32)), lambda: imm(r.getrandbits(32)),
            lambda: scr(r.randrange(SCRATCH)), lambda: end(r.randrange(64)), lambda: dat(r.randrange(1024)),
        ]
        self.p.call(FUNCTIONS[fn], *(r.choice(pool)() for _ in range(ARITY[fn])))


# -- checking the answers -----------------------------------------------------------------------

# errnos each import may answer in this setup (a model host that dies turns calls into runtime_error);
# missing_memory (3) and busy (4) are never right here: the guest exports its memory.
ALLOWED = {
    "load": {0, 1, 2, 5, 6, 7}, "load_by_name": {0, 1, 8}, "load_by_name_with_config": {0, 1, 8},
    "init_execution_context": {0, 1, 5, 7}, "set_input": {0, 1, 5, 6, 7}, "compute": {0, 1, 5, 6, 7},
    "compute_single": {0, 1, 5, 6, 7}, "get_output": {0, 1, 5, 7}, "get_output_single": {0, 1, 5, 7},
    "fini_single": {0, 1}, "unload": {0, 1}, "finalize_execution_context": {0, 1},
}
# Guest ranges each import checks before anything else: (pointer argument, fixed size, or the
# argument holding the length). One outside the memory is always invalid_argument.
RANGES: dict[str, list[tuple[int, int, int | None]]] = {
    "load": [(4, 4, None)], "load_by_name": [(2, 4, None)], "load_by_name_with_config": [(4, 4, None)],
    "init_execution_context": [(1, 4, None)], "set_input": [(2, 20, None)],
    "get_output": [(2, 0, 3), (4, 4, None)], "get_output_single": [(2, 0, 3), (4, 4, None)],
}


def check_call(fn: str, errno: int, size: int, args: list[int]) -> str | None:
    """Why this answer is wrong, or None."""
    if errno not in ALLOWED[fn]:
        return f"errno {errno} is not one {fn} may answer ({sorted(ALLOWED[fn])})"
    for at, fixed, length_at in RANGES.get(fn, []):
        length = fixed if length_at is None else args[length_at]
        if args[at] + length > size and errno != 1:
            return f"argument {at} ({args[at]:#x}+{length}) lies outside the {size}-byte memory, yet errno {errno}"
    if fn == "load" and args[4] + 4 <= size:
        if args[2] not in (0, 1, 5) and errno != 2:
            return f"encoding {args[2]} is unsupported, yet errno {errno}"
        if errno == 0 and not (1 <= args[1] <= 8 and args[3] <= 3 and args[0] + 8 * args[1] <= size):
            return "load succeeded with impossible builders or target"
    return None


@dataclass
class Stats:
    programs: int = 0
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    deaths: list[str] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def summary(self, seed: int, seconds: float) -> str:
        by_fn: dict[str, Counter[int]] = {}
        for (fn, e), n in self.calls.items():
            by_fn.setdefault(fn, Counter())[e] += n
        lines = [f"wasi-nn fuzz: seed {seed}, {self.programs} programs, {sum(self.calls.values())} calls "
                 f"in {seconds:.1f} s; outcomes {dict(self.outcomes)}"]
        for fn, c in sorted(by_fn.items()):
            lines.append(f"  {fn}: " + ", ".join(f"errno {e} x{n}" for e, n in sorted(c.items())))
        lines.append(f"  model host deaths: {len(self.deaths)}")
        lines += [f"    {d}" for d in self.deaths]
        if self.rss:
            lines.append(f"  runtime RSS: {self.rss[0] / _MIB:.1f} MiB after warm-up, "
                         f"{max(self.rss) / _MIB:.1f} MiB at most, {self.rss[-1] / _MIB:.1f} MiB at the end")
        return "\n".join(lines)


def parse_run(result: Invocation, stats: Stats) -> list[str]:
    """Check every answer of one program; the problems found."""
    problems = []
    lines = result.stdout.decode(errors="replace").splitlines()
    for line in lines:
        parts = line.split()
        if not parts or parts[0] != "call":
            continue
        try:
            fn, errno, size, args = parts[1], int(parts[2]), int(parts[3]), [int(a, 16) for a in parts[4:]]
        except (IndexError, ValueError):
            problems.append(f"unreadable line {line!r}")
            continue
        if fn not in ALLOWED or len(args) != ARITY[FN[fn]]:
            problems.append(f"unreadable line {line!r}")
            continue
        stats.calls[fn, errno] += 1
        why = check_call(fn, errno, size, args)
        if why:
            problems.append(f"{line}: {why}")
    stats.outcomes[result.outcome] += 1
    if result.outcome not in ("ok", "trap", "memory", "timeout"):
        problems.append(f"outcome {result.outcome}: {result.message}")
    if result.outcome == "ok" and (not lines or lines[-1] != "end"):
        problems.append(f"the guest ended without `end`: {result.message}")
    return problems


class Unexpected(logging.Handler):
    """Exceptions an import raised that are none of the errors it answers with an errno (the host
    logs them as `raised`): each one is a bug, even when the guest got runtime_error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "raised" in str(record.msg):
            self.records.append(record)

    def take(self) -> list[str]:
        found = [f"{r.getMessage()}: {r.exc_info[1]!r}" if r.exc_info else r.getMessage() for r in self.records]
        self.records.clear()
        return found


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- the known-good programs --------------------------------------------------------------------


def checksum_program(model: Model | None, x: bytes) -> bytes:
    """load (or load_by_name) -> init -> set_input -> compute -> get_output, then dump the output."""
    p = Program()
    if model is None:
        p.poke(TEXT, NAMED.encode())
        p.call("load_by_name", scr(TEXT), imm(len(NAMED)), scr(GRAPH_SLOTS))
        dims = [1, 256]
    else:
        for i, part in enumerate(model.parts):
            p.pokev(STRUCTS + 8 * i, dat(p.add_data(part)))
            p.pokev(STRUCTS + 8 * i + 4, imm(len(part)))
        p.call("load", scr(STRUCTS), imm(len(model.parts)), imm(model.encoding), imm(0), scr(GRAPH_SLOTS))
        dims = [1, WIDTH]
    p.call("init_execution_context", slot(GRAPH_SLOTS), scr(CTX_SLOTS))
    p.poke(STRUCTS + 512, struct.pack("<2I", *dims))
    p.pokev(STRUCTS + 256, scr(STRUCTS + 512))
    p.pokev(STRUCTS + 260, imm(2))
    p.pokev(STRUCTS + 264, imm(1))
    p.pokev(STRUCTS + 268, dat(p.add_data(x)))
    p.pokev(STRUCTS + 272, imm(len(x)))
    p.call("set_input", slot(CTX_SLOTS), imm(0), scr(STRUCTS + 256))
    p.call("compute", slot(CTX_SLOTS))
    p.call("get_output", slot(CTX_SLOTS), imm(0), scr(OUTPUT), imm(4096), scr(WRITTEN))
    p.dump(OUTPUT, len(x))
    return p.encode()


def dumped(result: Invocation) -> bytes:
    lines = result.stdout.decode().splitlines()
    calls = [ln for ln in lines if ln.startswith("call ")]
    assert result.outcome == "ok" and all(ln.split()[2] == "0" for ln in calls), (result.message, lines)
    return bytes.fromhex(next(ln for ln in lines if ln.startswith("dump ")).split()[1])


# -- the test -----------------------------------------------------------------------------------


@dataclass
class Fuzz:
    registry: ModelRegistry
    workers: dict[str, WorkerExecutor]  # "ov": ONNX and IR on OpenVINO; "ort": ONNX on ONNX Runtime
    corpus: Corpus
    named_input: bytes


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory, models: Path, guests: Path) -> Iterator[Fuzz]:
    folder = tmp_path_factory.mktemp("fuzz")
    corpus = Corpus((tiny_onnx(False), tiny_onnx(True)), (tiny_ir(folder, False), tiny_ir(folder, True)))
    metrics = Metrics()
    registry = ModelRegistry(metrics, "process")
    registry.load(ir_model(NAMED, models / NAMED))
    engine = RuntimeEngine(tmp_path_factory.mktemp("cache"), metrics)
    engine.start()
    workers = {}
    for key, backends in (("ov", ["openvino", "onnxruntime"]), ("ort", ["onnxruntime", "openvino"])):
        cfg = WorkerConfig.model_validate({
            "name": f"fuzz-{key}", "module": guests / "nn_fuzz.wasm", "route": f"/fuzz-{key}",
            "limits": {"timeout_seconds": TIMEOUT_SECONDS},
            "wasi_nn": {"enabled": True, "allowed_backends": backends, "models": [NAMED]},
        })
        workers[key] = WorkerExecutor(engine, registry, cfg)
    x = (np.arange(256, dtype=np.float32) / 256.0).reshape(1, 256)
    try:
        yield Fuzz(registry, workers, corpus, x.tobytes())
    finally:
        engine.close()
        registry.close()


def guest_host(registry: ModelRegistry, worker: WorkerExecutor) -> ModelHost:
    """The model host of a worker's `load`s (created, not started, if it has none yet)."""
    backend = registry.guest_backend(worker.worker.name, BackendName.openvino,
                                     worker.worker.wasi_nn.allowed_backends, worker.memory_cap)
    host = getattr(backend, "host")
    assert isinstance(host, ModelHost)
    return host


class Checksums:
    """Known-good inferences and their first answers: each later answer must be exactly the same."""

    def __init__(self, fz: Fuzz) -> None:
        self.fz = fz
        xt = np.linspace(-1, 1, WIDTH, dtype=np.float32).reshape(1, WIDTH)
        self.cases = {
            "named fc256": ("ov", checksum_program(None, fz.named_input)),
            "load IR on OpenVINO": ("ov", checksum_program(Model(0, fz.corpus.ir[0]), xt.tobytes())),
            "load ONNX on ONNX Runtime": ("ort", checksum_program(Model(1, (fz.corpus.onnx[0],)), xt.tobytes())),
        }
        self.reference = {name: self.run(name) for name in self.cases}
        w, b = fetch_models_module().fc256_weights()
        x = np.frombuffer(fz.named_input, np.float32).reshape(1, 256)
        fc = (x.astype(np.float64) @ w.T.astype(np.float64) + b).astype(np.float32)
        np.testing.assert_allclose(np.frombuffer(self.reference["named fc256"], np.float32).reshape(1, 256), fc,
                                   rtol=1e-5, atol=1e-5)
        for name in ("load IR on OpenVINO", "load ONNX on ONNX Runtime"):
            np.testing.assert_allclose(np.frombuffer(self.reference[name], np.float32).reshape(1, WIDTH),
                                       tiny_expected(xt), rtol=1e-5, atol=1e-5)

    def run(self, name: str) -> bytes:
        key, program = self.cases[name]
        named = self.fz.registry.host(NAMED)
        assert named is not None
        named.wait_ready(60)  # a named model's host that died is back within its backoff
        settle(guest_host(self.fz.registry, self.fz.workers[key]))
        return dumped(self.fz.workers[key].invoke(program))

    def check(self) -> list[str]:
        return [f"the {name} checksum changed" for name in self.cases if self.run(name) != self.reference[name]]


def settle(host: ModelHost) -> None:
    """Wait until the supervisor has noticed a host that was just killed (at a deadline) or died:
    until then the host still reads `ready`, and a load in that moment fails instead of respawning it."""
    until = time.monotonic() + 10
    while host.state == "ready" and (host.pid is None or host._kill_reason) and time.monotonic() < until:
        time.sleep(0.01)


def programs(fz: Fuzz) -> Iterator[tuple[int, str, bytes]]:
    """(index, worker, program) for programs 0, 1, ...; each from its own Random, so one can be rebuilt alone."""
    if REPLAY:
        key, _, hexdata = REPLAY.partition(":")
        yield 0, key, bytes.fromhex(hexdata)
        return
    for i in itertools.count():
        generator = Generator(random.Random(f"{SEED}/{i}"), fz.corpus, fz.named_input)
        yield i, ("ov", "ort")[i % 2], generator.program().encode()


class HostWatch:
    """Model host deaths, noticed between programs: the named model's restarts, the load hosts' respawns."""

    def __init__(self, fz: Fuzz) -> None:
        named = fz.registry.host(NAMED)
        assert named is not None
        self.named = named
        self.loads = [guest_host(fz.registry, w) for w in fz.workers.values()]
        self.seen = {h.name: self.died(h) for h in [named, *self.loads]}

    def died(self, host: ModelHost) -> int:
        """Deaths so far: a named host restarts after each; a load host is respawned by the next load."""
        if host is self.named:
            return host.restarts + (host.state == "failed")
        return max(0, host.generation - 1) + (host.state == "stopped" and host.generation > 0)

    def deaths(self) -> list[str]:
        found = []
        for h in [self.named, *self.loads]:
            n = self.died(h)
            found += [f"{h.name}: {h.reason or 'already respawned by a later load'}"] * (n - self.seen[h.name])
            self.seen[h.name] = n
        return found


@pytest.mark.timeout(max(300, int(FUZZ_SECONDS) + 300))
def test_fuzzed_wasi_nn_calls_and_models_never_break_the_runtime(fuzz: Fuzz) -> None:
    fz = fuzz
    stats = Stats()
    unexpected = Unexpected()
    logging.getLogger("wasminfer_runtime.wasinn").addHandler(unexpected)
    try:
        fuzz_for(fz, stats, unexpected)
    finally:
        logging.getLogger("wasminfer_runtime.wasinn").removeHandler(unexpected)


def fuzz_for(fz: Fuzz, stats: Stats, unexpected: Unexpected) -> None:
    checksums = Checksums(fz)
    watch = HostWatch(fz)
    started = time.monotonic()
    print(f"\nwasi-nn fuzz: seed {SEED} (WASMINFER_FUZZ_SEED={SEED} reproduces), {FUZZ_SECONDS:g} s")
    source = programs(fz)
    batch, last = 0, -1
    while True:
        todo = list(itertools.islice(source, BATCH))
        for index, key, program in todo:
            t0 = time.monotonic()
            result = fz.workers[key].invoke(program)
            took = time.monotonic() - t0
            problems = parse_run(result, stats) + unexpected.take()
            if took > TIMEOUT_SECONDS + 15:
                problems.append(f"the program ran {took:.1f} s, far past its {TIMEOUT_SECONDS:g} s timeout")
            stats.deaths += [f"program {index} (fuzz-{key}): {d}" for d in watch.deaths()]
            stats.programs += 1
            last = index
            if problems:
                pytest.fail(failure(index, key, program, problems, result, stats, started))
        batch += 1
        problems = checksums.check()
        stats.deaths += [f"by program {last}: {d}" for d in watch.deaths()]
        if batch > 1:  # the first batch warms up caches, pools and arenas
            stats.rss.append(rss_bytes())
        growth = max(stats.rss, default=0) - (stats.rss[0] if stats.rss else 0)
        if growth > RSS_GROWTH_LIMIT:
            problems.append(f"the runtime's RSS grew by {growth / _MIB:.1f} MiB after the warm-up batch "
                            f"(limit {RSS_GROWTH_LIMIT // _MIB} MiB)")
        if problems:
            pytest.fail(f"seed {SEED}, after batch {batch} (programs up to {last}): " + "; ".join(problems)
                        + "\n" + stats.summary(SEED, time.monotonic() - started))
        if len(todo) < BATCH or (time.monotonic() - started >= FUZZ_SECONDS and batch >= 3):
            break
    print(stats.summary(SEED, time.monotonic() - started))
    assert stats.programs > 0


def failure(index: int, key: str, program: bytes, problems: list[str], result: Invocation, stats: Stats,
            started: float) -> str:
    tail = result.stdout.decode(errors="replace").splitlines()[-20:]
    return "\n".join([
        f"seed {SEED}, program {index} on worker fuzz-{key}: " + "; ".join(problems[:10]),
        f"outcome {result.outcome}: {result.message}",
        "last lines of its output:", *tail,
        f"replay: WASMINFER_FUZZ_REPLAY={key}:{program.hex()}",
        stats.summary(SEED, time.monotonic() - started),
    ])


def test_a_load_refuses_absurd_opset_versions_at_once() -> None:
    """Found by the fuzzer: OpenVINO's ONNX reader takes time linear in an opset version (a second
    per million), so one near 2**63 hangs it; the model is refused before it reaches a backend."""
    model = onnx.load_from_string(tiny_onnx(False))
    check_self_contained(ModelFormat.onnx, [model.SerializeToString()])
    for version in (MAX_OPSET_VERSION + 1, (1 << 63) - 1, -1):
        model.opset_import[0].version = version
        with pytest.raises(InvalidModel, match="opset version"):
            check_self_contained(ModelFormat.onnx, [model.SerializeToString()])
