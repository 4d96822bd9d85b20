"""The protocol's gRPC messages (package `inference`), built from this table at import.

Only what `inference.GRPCInferenceService` needs for health, metadata and ModelInfer is declared. The
field numbers and types are the wire contract every client relies on (a test checks them against
Triton's client). Building the descriptors here needs no code generator, and a pool of our own keeps
them apart from any other copy of the same package loaded in the process (a client's, in tests).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
STRING, BOOL, INT64, UINT64, DOUBLE = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_DOUBLE
INT32, UINT32, FLOAT, BYTES, MESSAGE = _F.TYPE_INT32, _F.TYPE_UINT32, _F.TYPE_FLOAT, _F.TYPE_BYTES, _F.TYPE_MESSAGE
PARAMETERS = "map<InferParameter>"  # a map<string, InferParameter> field

# message -> [(field, number, type, repeated, message type)]; nested messages are "Outer.Inner".
MESSAGES: dict[str, list[tuple[str, int, int | str, bool]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, BOOL, False)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, BOOL, False)],
    "ModelReadyRequest": [("name", 1, STRING, False), ("version", 2, STRING, False)],
    "ModelReadyResponse": [("ready", 1, BOOL, False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, STRING, False), ("version", 2, STRING, False), ("extensions", 3, STRING, True)],
    "ModelMetadataRequest": [("name", 1, STRING, False), ("version", 2, STRING, False)],
    "ModelMetadataResponse.TensorMetadata": [("name", 1, STRING, False), ("datatype", 2, STRING, False), ("shape", 3, INT64, True)],
    "ModelMetadataResponse": [
        ("name", 1, STRING, False), ("versions", 2, STRING, True), ("platform", 3, STRING, False),
        ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True), ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True),
    ],
    # One of these is set (oneof parameter_choice).
    "InferParameter": [("bool_param", 1, BOOL, False), ("int64_param", 2, INT64, False), ("string_param", 3, STRING, False),
                       ("double_param", 4, DOUBLE, False), ("uint64_param", 5, UINT64, False)],
    "InferTensorContents": [
        ("bool_contents", 1, BOOL, True), ("int_contents", 2, INT32, True), ("int64_contents", 3, INT64, True),
        ("uint_contents", 4, UINT32, True), ("uint64_contents", 5, UINT64, True), ("fp32_contents", 6, FLOAT, True),
        ("fp64_contents", 7, DOUBLE, True), ("bytes_contents", 8, BYTES, True),
    ],
    "ModelInferRequest.InferInputTensor": [
        ("name", 1, STRING, False), ("datatype", 2, STRING, False), ("shape", 3, INT64, True),
        ("parameters", 4, PARAMETERS, True), ("contents", 5, "InferTensorContents", False),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", 1, STRING, False), ("parameters", 2, PARAMETERS, True)],
    "ModelInferRequest": [
        ("model_name", 1, STRING, False), ("model_version", 2, STRING, False), ("id", 3, STRING, False),
        ("parameters", 4, PARAMETERS, True), ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
        ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True), ("raw_input_contents", 7, BYTES, True),
    ],
    "ModelInferResponse.InferOutputTensor": [
        ("name", 1, STRING, False), ("datatype", 2, STRING, False), ("shape", 3, INT64, True),
        ("parameters", 4, PARAMETERS, True), ("contents", 5, "InferTensorContents", False),
    ],
    "ModelInferResponse": [
        ("model_name", 1, STRING, False), ("model_version", 2, STRING, False), ("id", 3, STRING, False),
        ("parameters", 4, PARAMETERS, True), ("outputs", 5, "ModelInferResponse.InferOutputTensor", True),
        ("raw_output_contents", 6, BYTES, True),
    ],
}  # fmt: skip

# rpc -> (request, response)
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="wasminfer_oip.proto", package=PACKAGE, syntax="proto3")
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full in MESSAGES:  # outer messages before their nested ones' users need them: create all first
        outer, _, inner = full.partition(".")
        if outer not in protos:
            protos[outer] = proto.message_type.add(name=outer)
        if inner:
            protos[full] = protos[outer].nested_type.add(name=inner)
    for full, fields in MESSAGES.items():
        msg = protos[full]
        if full == "InferParameter":
            msg.oneof_decl.add(name="parameter_choice")
        for name, number, kind, repeated in fields:
            field = msg.field.add(name=name, number=number, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if full == "InferParameter":
                field.oneof_index = 0
            if kind == PARAMETERS:
                entry = msg.nested_type.add(name="ParametersEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=MESSAGE, type_name=f".{PACKAGE}.InferParameter", label=_F.LABEL_OPTIONAL)
                field.type = MESSAGE
                field.type_name = f".{PACKAGE}.{full}.ParametersEntry"
            elif isinstance(kind, str):
                field.type = MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            else:
                field.type = kind
    return proto


POOL = descriptor_pool.DescriptorPool()
FILE = POOL.Add(_file())


def message(name: str) -> Any:
    """The message class of `name` ("ModelInferRequest", "ModelInferResponse.InferOutputTensor")."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
