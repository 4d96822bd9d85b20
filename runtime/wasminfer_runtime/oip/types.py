"""Open Inference Protocol (v2) types, apart from any transport.

A request's tensors arrive as JSON data or as raw little-endian bytes (REST's binary tensor data
extension, gRPC's raw_input_contents); either way they become `Tensor`s holding raw bytes, which is
what the backends take. Outputs leave the same way. Every refusal is an `OipError` with the HTTP
status the REST transport answers with; gRPC maps the same statuses to its codes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wasminfer_runtime.backends.base import ElementType, ModelDims

# The protocol's datatypes this server passes to its backends, and their element types.
DATATYPES: dict[str, ElementType] = {
    "FP16": ElementType.f16,
    "FP32": ElementType.f32,
    "FP64": ElementType.f64,
    "UINT8": ElementType.u8,
    "INT32": ElementType.i32,
    "INT64": ElementType.i64,
}
DATATYPE_OF: dict[ElementType, str] = {e: name for name, e in DATATYPES.items()}
NUMPY_DTYPE: dict[ElementType, str] = {
    ElementType.f16: "<f2",
    ElementType.f32: "<f4",
    ElementType.f64: "<f8",
    ElementType.u8: "u1",
    ElementType.i32: "<i4",
    ElementType.i64: "<i8",
}
# Datatypes the protocol defines that no backend here takes: refused with a clear message.
KNOWN_DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                   "FP16", "FP32", "FP64", "BF16", "BYTES"}  # fmt: skip

BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
HEADER_LENGTH = "Inference-Header-Content-Length"
# What a request may hold: far more than any model here takes, and far less than the host's memory.
MAX_ELEMENTS = 1 << 28


class OipError(Exception):
    """A refused request: `status` is the HTTP status, the message goes into {"error": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def datatype_name(etype: ElementType | None) -> str:
    """The protocol's name for an element type ("BYTES" stands for one no backend here passes)."""
    return DATATYPE_OF.get(etype, "BYTES") if etype is not None else "BYTES"


def metadata_shape(dims: ModelDims) -> list[int]:
    """A model shape as the protocol writes it: -1 for a dynamic dimension (and [-1] for an unknown rank)."""
    if dims is None:
        return [-1]
    return [-1 if d is None else int(d) for d in dims]


@dataclass
class Tensor:
    """A named tensor as raw bytes: what crosses between a transport and the data plane."""

    name: str
    etype: ElementType
    shape: tuple[int, ...]
    data: bytes | memoryview
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def datatype(self) -> str:
        return DATATYPE_OF[self.etype]


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    model: str
    version: str
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_outputs: bool  # the default for outputs not named in `outputs`
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    model: str
    version: str
    id: str | None
    outputs: list[tuple[Tensor, bool]]  # (tensor, as binary)


# -- parsing (REST JSON; gRPC fills the same dataclasses from its messages) -----------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInputJson(_Lenient):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutputJson(_Lenient):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequestJson(_Lenient):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInputJson]
    outputs: list[RequestOutputJson] | None = None


def element_type(datatype: str, what: str) -> ElementType:
    etype = DATATYPES.get(datatype)
    if etype is None:
        if datatype in KNOWN_DATATYPES:
            raise OipError(400, f"{what}: datatype {datatype} is not supported here (supported: {', '.join(DATATYPES)})")
        raise OipError(400, f"{what}: unknown datatype {datatype!r}")
    return etype


def check_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise OipError(400, f"{what}: shape {list(shape)} has a negative or non-integer dimension")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise OipError(400, f"{what}: shape {list(shape)} has {count} elements, more than {MAX_ELEMENTS}")
    return tuple(int(d) for d in shape)


def check_unique(inputs: Sequence[Tensor]) -> None:
    names = [t.name for t in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OipError(400, f"input(s) given twice: {', '.join(dupes)}")


def byte_size(etype: ElementType, shape: Sequence[int]) -> int:
    return math.prod(shape) * etype.size


def json_data_to_bytes(data: Any, etype: ElementType, shape: tuple[int, ...], what: str) -> bytes:
    """Row-major tensor data from JSON (flat or nested lists) as little-endian bytes."""
    if data is None:
        raise OipError(400, f"{what}: neither data nor parameters.{BINARY_DATA_SIZE}")
    try:
        array = np.asarray(data, dtype=NUMPY_DTYPE[etype])
    except (ValueError, TypeError, OverflowError) as err:
        raise OipError(400, f"{what}: data is not a list of {DATATYPE_OF[etype]} values ({err})") from None
    if array.size != math.prod(shape):
        raise OipError(400, f"{what}: data has {array.size} elements; shape {list(shape)} takes {math.prod(shape)}")
    return array.tobytes()


def bytes_to_json_data(data: bytes | memoryview, etype: ElementType) -> list[Any]:
    values: list[Any] = np.frombuffer(data, dtype=NUMPY_DTYPE[etype]).tolist()
    return values


def parse_rest_request(model: str, version: str, header: bytes, binary: memoryview | None) -> InferRequest:
    """A REST inference request: the JSON header, then (binary extension) the raw input bytes in order."""
    try:
        doc = InferRequestJson.model_validate_json(header)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise OipError(400, f"invalid inference request: {where + ': ' if where else ''}{first['msg']}") from None
    offset = 0
    inputs = []
    for i, inp in enumerate(doc.inputs):
        what = f"input {inp.name!r}"
        etype = element_type(inp.datatype, what)
        shape = check_shape(inp.shape, what)
        size = inp.parameters.get(BINARY_DATA_SIZE)
        if size is not None:
            if binary is None:
                raise OipError(400, f"{what}: parameters.{BINARY_DATA_SIZE} without binary data after the JSON header")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise OipError(400, f"{what}: parameters.{BINARY_DATA_SIZE} {size!r} runs past the {len(binary)} bytes sent")
            want = byte_size(etype, shape)
            if size != want:
                raise OipError(400, f"{what}: {size} bytes sent; shape {list(shape)} of {inp.datatype} takes {want}")
            data: bytes | memoryview = binary[offset : offset + size]
            offset += size
            if inp.data is not None:
                raise OipError(400, f"{what}: both data and parameters.{BINARY_DATA_SIZE}")
        else:
            data = json_data_to_bytes(inp.data, etype, shape, what)
        inputs.append(Tensor(inp.name, etype, shape, data, inp.parameters))
    if binary is not None and offset != len(binary):
        raise OipError(400, f"{len(binary) - offset} bytes after the JSON header belong to no input")
    check_unique(inputs)
    binary_default = _flag(doc.parameters.get(BINARY_DATA_OUTPUT, False), f"parameters.{BINARY_DATA_OUTPUT}")
    outputs = None
    if doc.outputs is not None:
        outputs = []
        for out in doc.outputs:
            flag = out.parameters.get(BINARY_DATA, binary_default)
            outputs.append(RequestedOutput(out.name, _flag(flag, f"output {out.name!r}: parameters.{BINARY_DATA}")))
    return InferRequest(model, version, doc.id, inputs, outputs, binary_default, doc.parameters)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise OipError(400, f"{what} must be true or false, not {value!r}")
    return value


def rest_response(resp: InferResponse) -> tuple[bytes, int | None]:
    """The REST body of a response: JSON, then the binary outputs in order; and the JSON's length
    when binary data follows it (the Inference-Header-Content-Length header), else None."""
    outputs = []
    blobs: list[bytes | memoryview] = []
    for tensor, binary in resp.outputs:
        out: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            out["parameters"] = {BINARY_DATA_SIZE: len(tensor.data)}
            blobs.append(tensor.data)
        else:
            out["data"] = bytes_to_json_data(tensor.data, tensor.etype)
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": resp.model, "model_version": resp.version, "outputs": outputs}
    if resp.id is not None:
        doc["id"] = resp.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
