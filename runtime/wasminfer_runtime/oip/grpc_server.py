"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, grpc.aio).

ModelInfer takes tensors as raw_input_contents (what Triton's and KServe's clients send) or as typed
contents, and answers with raw_output_contents, as Triton does. Refusals carry the same messages as
over REST, with the gRPC code for the REST status.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from wasminfer_runtime.oip.dataplane import DataPlane
from wasminfer_runtime.oip.grpc_schema import METHODS, SERVICE, message
from wasminfer_runtime.oip.types import (
    NUMPY_DTYPE,
    InferRequest,
    OipError,
    RequestedOutput,
    Tensor,
    byte_size,
    check_shape,
    check_unique,
    element_type,
)

log = logging.getLogger(__name__)

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
         500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip
# Typed contents per datatype; FP16 has none in the protocol and travels as raw bytes only.
CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents",
                  "UINT8": "uint_contents"}  # fmt: skip

Msg = Any


def parameter(p: Msg) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def to_request(msg: Msg) -> InferRequest:
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise OipError(400, f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} input(s)")
    inputs = []
    for i, inp in enumerate(msg.inputs):
        what = f"input {inp.name!r}"
        etype = element_type(inp.datatype, what)
        shape = check_shape(list(inp.shape), what)
        if raw:
            data = raw[i]
            want = byte_size(etype, shape)
            if len(data) != want:
                raise OipError(400, f"{what}: {len(data)} bytes sent; shape {list(shape)} of {inp.datatype} takes {want}")
        else:
            field = CONTENTS_FIELD.get(inp.datatype)
            if field is None:
                raise OipError(400, f"{what}: {inp.datatype} travels in raw_input_contents only")
            values = getattr(inp.contents, field)
            count = math.prod(shape)
            if len(values) != count:
                raise OipError(400, f"{what}: contents has {len(values)} elements; shape {list(shape)} takes {count}")
            data = np.asarray(values, dtype=NUMPY_DTYPE[etype]).tobytes()
        inputs.append(Tensor(inp.name, etype, shape, data, {k: parameter(v) for k, v in inp.parameters.items()}))
    check_unique(inputs)
    outputs = [RequestedOutput(o.name, True) for o in msg.outputs] if len(msg.outputs) else None
    params = {k: parameter(v) for k, v in msg.parameters.items()}
    return InferRequest(msg.model_name, msg.model_version, msg.id or None, inputs, outputs, True, params)


class Servicer:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        return message("ServerLiveResponse")(live=self.plane.live())

    async def ServerReady(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        return message("ServerReadyResponse")(ready=self.plane.ready())

    async def ModelReady(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        return message("ModelReadyResponse")(ready=self.plane.model_ready(req.name, req.version))

    async def ServerMetadata(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        return message("ServerMetadataResponse")(**self.plane.server_metadata())

    async def ModelMetadata(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        return message("ModelMetadataResponse")(**self.plane.model_metadata(req.name, req.version))

    async def ModelInfer(self, req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        resp = await self.plane.infer(to_request(req))
        out = message("ModelInferResponse")(model_name=resp.model, model_version=resp.version, id=resp.id or "")
        for tensor, _ in resp.outputs:
            out.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
            out.raw_output_contents.append(bytes(tensor.data))
        return out


def _handler(fn: Callable[[Msg, grpc.aio.ServicerContext], Awaitable[Msg]], request: str, response: str) -> grpc.RpcMethodHandler:
    async def call(req: Msg, ctx: grpc.aio.ServicerContext) -> Msg:
        try:
            return await fn(req, ctx)
        except OipError as err:
            await ctx.abort(CODES.get(err.status, grpc.StatusCode.UNKNOWN), err.message)
            raise  # not reached: abort raises

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=message(request).FromString, response_serializer=message(response).SerializeToString
    )


def build_server(plane: DataPlane, max_message_bytes: int, max_requests: int) -> grpc.aio.Server:
    servicer = Servicer(plane)
    handlers = {name: _handler(getattr(servicer, name), req, resp) for name, (req, resp) in METHODS.items()}
    # Calls beyond max_requests at once get RESOURCE_EXHAUSTED from grpc itself, before their messages are held.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)],
                             maximum_concurrent_rpcs=max_requests)  # fmt: skip
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    return server
