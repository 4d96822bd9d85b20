"""Models a guest passes to wasi-nn `load` must be self-contained: no part of them may name a file.

ONNX lets a tensor take its data from a file (data_location EXTERNAL, external_data
`location`), which ONNX Runtime and OpenVINO resolve against the process's working directory
or as an absolute path, so a guest could read any file the host can. OpenVINO IR weights are
the second builder part; the XML may not carry a DOCTYPE (entities) or name a weights file.

The runtime does not depend on the `onnx` package, so ONNX is read here with a small, strict
protobuf walker that visits every message that can hold a TensorProto. Anything it cannot read
is refused: a model that fails here would fail (or worse) in the library too. It also refuses
opset versions far beyond any real one: OpenVINO's ONNX reader takes time linear in the version
(about a second per million), so a version near 2**63 would hang it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from wasminfer_runtime.backends.base import InvalidModel
from wasminfer_runtime.config import ModelFormat

log = logging.getLogger(__name__)

# Nested messages allowed (each subgraph adds graph -> node -> attribute -> graph): deep enough
# for real control flow, shallow enough that hostile nesting costs nothing.
MAX_DEPTH = 64
# Fields read across the whole model (tensor data is skipped whole): real models have far fewer.
MAX_FIELDS = 1_000_000
# ONNX's own operator sets are numbered in the tens; no domain comes near this.
MAX_OPSET_VERSION = 1000

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# Message kinds, and per kind: field number -> (wire type, kind of the nested message or None).
# Field numbers from onnx.proto; only fields that lead to a TensorProto (or are the reason
# for a refusal) are followed. Listed fields must have their declared wire type.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING, _OPSET = range(9)
_NAMES = {_MODEL: "model", _GRAPH: "graph", _NODE: "node", _ATTRIBUTE: "attribute", _TENSOR: "tensor",
          _SPARSE: "sparse tensor", _FUNCTION: "function", _TRAINING: "training info", _OPSET: "opset import"}
_SCHEMA: dict[int, dict[int, tuple[int, int | None]]] = {
    _MODEL: {1: (_VARINT, None), 2: (_LEN, None), 3: (_LEN, None), 4: (_LEN, None), 5: (_VARINT, None),
             6: (_LEN, None), 7: (_LEN, _GRAPH), 8: (_LEN, _OPSET), 14: (_LEN, None), 20: (_LEN, _TRAINING),
             25: (_LEN, _FUNCTION), 26: (_LEN, None)},
    _TRAINING: {1: (_LEN, _GRAPH), 2: (_LEN, _GRAPH)},
    _GRAPH: {1: (_LEN, _NODE), 2: (_LEN, None), 5: (_LEN, _TENSOR), 15: (_LEN, _SPARSE)},
    _NODE: {3: (_LEN, None), 4: (_LEN, None), 5: (_LEN, _ATTRIBUTE)},
    _ATTRIBUTE: {1: (_LEN, None), 5: (_LEN, _TENSOR), 6: (_LEN, _GRAPH), 10: (_LEN, _TENSOR), 11: (_LEN, _GRAPH),
                 22: (_LEN, _SPARSE), 23: (_LEN, _SPARSE)},
    _SPARSE: {1: (_LEN, _TENSOR), 2: (_LEN, _TENSOR)},
    _FUNCTION: {1: (_LEN, None), 7: (_LEN, _NODE), 9: (_LEN, _OPSET), 11: (_LEN, _ATTRIBUTE)},
    _OPSET: {1: (_LEN, None), 2: (_VARINT, None)},
    _TENSOR: {8: (_LEN, None), 13: (_LEN, None), 14: (_VARINT, None)},
}
_NAME_FIELD = {_GRAPH: 2, _NODE: 3, _ATTRIBUTE: 1, _TENSOR: 8, _FUNCTION: 1}
_EXTERNAL_DATA, _DATA_LOCATION = 13, 14
_OP_TYPE = 4
_OPSET_VERSION = 2


def check_self_contained(fmt: ModelFormat, parts: Sequence[bytes]) -> None:
    """Raise InvalidModel (and log why) unless the model names no file and reads as its format."""
    try:
        if fmt is ModelFormat.onnx:
            for part in parts:
                _check_onnx(part)
        elif parts:
            _check_ir_xml(parts[0])  # parts[1] is the weights: raw bytes, never a name
    except InvalidModel as err:
        log.warning("a model passed to wasi-nn load was refused: %s", err)
        raise


# -- ONNX ---------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The number at `pos` and the position after it."""
    value, shift = 0, 0
    while True:
        if pos >= end:
            raise InvalidModel("an ONNX model that ends inside a number (truncated or not ONNX)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise InvalidModel("an ONNX model with a number longer than 10 bytes (not ONNX)")


class _Budget:
    """Fields read so far: a hostile model of millions of tiny fields is refused, not walked for minutes."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_FIELDS


def _check_onnx(data: bytes) -> None:
    # ONNX Runtime would take these bytes for its own flatbuffer format, not ONNX.
    if data[4:8] == b"ORTM":
        raise InvalidModel("an ORT-format model is not ONNX; `load` takes ONNX protobuf models")
    fields = _walk(bytes(data), 0, len(data), _MODEL, 0, "the model", _Budget())
    if 7 not in fields:
        raise InvalidModel("the bytes are no ONNX model (no graph)")


def _walk(data: bytes, pos: int, end: int, kind: int, depth: int, where: str, budget: _Budget) -> set[int]:
    """Check one message and everything under it; the field numbers it has."""
    if depth > MAX_DEPTH:
        raise InvalidModel(f"an ONNX model nested more than {MAX_DEPTH} messages deep")
    schema = _SCHEMA[kind]
    seen: set[int] = set()
    nested: list[tuple[int, int, int]] = []  # (kind, start, end), walked once this message's name is known
    name = ""
    start = pos
    count, allowed = 0, budget.left
    while pos < end:
        count += 1
        if count > allowed:
            raise InvalidModel(f"an ONNX model with more than {MAX_FIELDS} fields (not counting tensor data)")
        key = data[pos]
        if key < 0x80:  # the common one-byte key, read inline: this loop is the walker's whole cost
            pos += 1
        else:
            key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        declared = schema.get(number)
        if declared is not None and declared[0] != wire:
            raise InvalidModel(f"{_NAMES[kind]} field {number} has wire type {wire}, not {declared[0]} (not ONNX)")
        if wire == _VARINT:
            if pos < end and data[pos] < 0x80:
                value = data[pos]
                pos += 1
            else:
                value, pos = _varint(data, pos, end)
            if kind == _OPSET and number == _OPSET_VERSION and value > MAX_OPSET_VERSION:
                raise InvalidModel(f"an ONNX model that imports opset version {value} (at most {MAX_OPSET_VERSION})")
            if kind == _TENSOR and number == _DATA_LOCATION and value != 0:
                raise InvalidModel(f"{_tensor(where, data, start, end)} takes its data from a file "
                                   f"(data_location EXTERNAL); a model passed to load must be self-contained")
        elif wire == _LEN:
            if pos < end and data[pos] < 0x80:
                n = data[pos]
                pos += 1
            else:
                n, pos = _varint(data, pos, end)
            if n > end - pos:
                raise InvalidModel("an ONNX model with a field longer than the bytes left (truncated or not ONNX)")
            if declared is not None:
                if kind == _TENSOR and number == _EXTERNAL_DATA:
                    location = _external_location(data, pos, pos + n)
                    raise InvalidModel(f"{_tensor(where, data, start, end)} takes its data from file {location!r} "
                                       f"(external data); a model passed to load must be self-contained")
                if number == _NAME_FIELD.get(kind):
                    name = _text(data, pos, pos + n)
                if kind == _NODE and number == _OP_TYPE and data[pos:pos + n] == b"EPContext":
                    raise InvalidModel("an EPContext node (a compiled-model cache, which may be a file) "
                                       "cannot be passed to load")
                if declared[1] is not None:
                    nested.append((declared[1], pos, pos + n))
            pos += n
        elif wire == _I64 or wire == _I32:
            pos += 8 if wire == _I64 else 4
            if pos > end:
                raise InvalidModel("an ONNX model that ends inside a number (truncated or not ONNX)")
        else:
            raise InvalidModel(f"an ONNX model with wire type {wire} (not ONNX)")
        if number == 0:
            raise InvalidModel("an ONNX model with field number 0 (not ONNX)")
        seen.add(number)
    budget.left -= count
    here = f"{_NAMES[kind]} {name!r}" if name else where
    for child, cstart, cend in nested:
        _walk(data, cstart, cend, child, depth + 1, here, budget)
    return seen


def _tensor(where: str, data: bytes, pos: int, end: int) -> str:
    """How to name the tensor being read: its own name when it has one, else where it is."""
    name = _field_text(data, pos, end, _NAME_FIELD[_TENSOR])
    return f"tensor {name!r}" if name else f"a tensor in {where}"


def _external_location(data: bytes, pos: int, end: int) -> str:
    """The value of a StringStringEntryProto whose key is `location` (else the entry's key)."""
    key = _field_text(data, pos, end, 1)
    value = _field_text(data, pos, end, 2)
    return value if key == "location" else f"{key}={value}"


def _field_text(data: bytes, pos: int, end: int, wanted: int) -> str:
    """The first LEN field `wanted` of a message, as text ('' when it is absent or unreadable)."""
    try:
        while pos < end:
            key, pos = _varint(data, pos, end)
            wire = key & 7
            if wire == _VARINT:
                _, pos = _varint(data, pos, end)
            elif wire == _LEN:
                n, pos = _varint(data, pos, end)
                if key >> 3 == wanted:
                    return _text(data, pos, min(pos + n, end))
                pos += n
            elif wire == _I64 or wire == _I32:
                pos += 8 if wire == _I64 else 4
            else:
                return ""
    except InvalidModel:
        return ""
    return ""


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:min(end, start + 200)].decode("utf-8", "replace")


# -- OpenVINO IR --------------------------------------------------------------------------------

# `<!` opens a comment, a CDATA section, or a declaration (DOCTYPE, ENTITY, ...): only the
# first two are allowed. rt_info `__weights_path` is how OpenVINO names a weights file.
_DECLARATION = re.compile(rb"<!(?!--|\[CDATA\[)")
_WEIGHTS_PATH = re.compile(rb"__weights_path", re.IGNORECASE)


def _check_ir_xml(xml: bytes) -> None:
    if b"\0" in xml:
        raise InvalidModel("OpenVINO IR XML passed to load must be UTF-8 (it holds NUL bytes)")
    if _DECLARATION.search(xml):
        raise InvalidModel("OpenVINO IR XML passed to load may not hold a DOCTYPE or ENTITY declaration")
    if _WEIGHTS_PATH.search(xml):
        raise InvalidModel("OpenVINO IR XML passed to load may not name a weights file (__weights_path); "
                           "the weights are the second part")
