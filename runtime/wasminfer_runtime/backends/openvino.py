"""OpenVINO backend: IR (xml + bin) and ONNX on CPU, GPU, NPU or AUTO.

Each execution context owns one infer request. Inputs are copied straight into the request's
own input tensors and outputs read straight from its output tensors; their host addresses are
fixed once shapes are known, so a set_input / compute / get_output round costs two memmoves and
the inference itself.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov
import openvino._pyopenvino as ovnative

from wasminfer_runtime.backends.base import (
    Backend,
    BackendError,
    ElementType,
    ExecutionContext,
    Graph,
    InvalidModel,
    InvalidTensor,
    ModelDims,
    ShapeBounds,
    Signature,
    TensorInfo,
    Unsupported,
    first_line,
    input_slot,
)
from wasminfer_runtime.backends.guest_models import check_self_contained
from wasminfer_runtime.config import Device, ModelConfig, ModelFormat, ModelOptions

log = logging.getLogger(__name__)

_ELEMENT_TYPES: dict[str, ElementType] = {
    "f16": ElementType.f16, "f32": ElementType.f32, "f64": ElementType.f64,
    "u8": ElementType.u8, "i32": ElementType.i32, "i64": ElementType.i64,
}

# The bound C++ method: the Python wrapper around it builds a result dict on every call.
_native_infer = ovnative.InferRequest.infer


def _element_type(t: ov.Type) -> ElementType | None:
    return _ELEMENT_TYPES.get(t.get_type_name())


def compile_properties(options: ModelOptions) -> dict[str, Any]:
    """The OpenVINO properties for a model's options (f32 unless asked: bf16 on AMX CPUs changes results)."""
    props: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": options.precision.value,
        "PERFORMANCE_HINT": options.performance_hint.value,
    }
    if options.streams is not None:
        props["NUM_STREAMS"] = str(options.streams)
    return props


@dataclass
class _Input:
    label: str  # "input 0 (name)" in messages
    etype: ElementType | None
    partial: ov.PartialShape
    model_dims: ModelDims
    tensor: ov.Tensor
    dims: tuple[int, ...] | None  # current shape; None until set for a dynamic input
    addr: int
    nbytes: int


class OpenVinoContext(ExecutionContext):
    """An infer request with its tensors' addresses worked out once; pooled by its graph.

    A pooled request still holds the previous user's input and output, so a context only
    computes once every input was set through it, and only shows outputs it computed.
    """

    def __init__(self, graph: OpenVinoGraph, request: ov.InferRequest) -> None:
        self.graph = graph
        self.request = request
        self.inputs: list[_Input] = []
        for i, port in enumerate(graph.compiled.inputs):
            tensor = request.get_input_tensor(i)
            partial = port.get_partial_shape()
            if partial.is_static:
                dims: tuple[int, ...] | None = tuple(int(d) for d in tensor.shape)
                addr, nbytes = _address(tensor), int(tensor.byte_size)
            else:
                dims, addr, nbytes = None, 0, 0
            label = f"input {i} ({_port_name(port)})"
            etype = _element_type(port.get_element_type())
            self.inputs.append(_Input(label, etype, partial, _model_dims(partial), tensor, dims, addr, nbytes))
        # Static outputs keep their buffer for the request's life; dynamic ones are looked up after compute.
        self._static_outputs: list[tuple[int, int] | None] = []
        for i, port in enumerate(graph.compiled.outputs):
            if port.get_partial_shape().is_static:
                t = request.get_output_tensor(i)
                self._static_outputs.append((_address(t), int(t.byte_size)))
            else:
                self._static_outputs.append(None)
        self._unset = set(range(len(self.inputs)))
        self._computed = False

    def reset(self) -> None:
        self._unset = set(range(len(self.inputs)))
        self._computed = False

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        slot = input_slot(self.inputs, index, etype)
        if dims != slot.dims:  # dims already set were checked then
            self._reshape(index, slot, etype, dims, nbytes)
        if nbytes != slot.nbytes:
            raise InvalidTensor(f"input {index} of shape {list(dims)} takes {slot.nbytes} bytes, not {nbytes}")
        ctypes.memmove(slot.addr, src, nbytes)
        if self._unset:
            self._unset.discard(index)

    def _reshape(self, index: int, slot: _Input, etype: ElementType, dims: tuple[int, ...], nbytes: int) -> None:
        self.graph.bounds.check_input(slot.label, slot.model_dims, etype, dims, nbytes)
        # A dimension with an interval (1..10 in an IR) has its own bounds.
        if not slot.partial.compatible(ov.PartialShape(list(dims))):
            raise InvalidTensor(f"input {index} has shape {slot.partial}, not {list(dims)}")
        try:
            slot.tensor.set_shape(list(dims))
        except RuntimeError as err:
            raise InvalidTensor(f"input {index}: cannot take shape {list(dims)}: {_reason(err)}") from None
        slot.dims = dims
        slot.addr, slot.nbytes = _address(slot.tensor), int(slot.tensor.byte_size)

    def compute(self) -> None:
        if self._unset:
            raise InvalidTensor(f"input(s) {sorted(self._unset)} were never set")
        self._computed = False  # a compute that fails shows no outputs
        try:
            _native_infer(self.request, {}, True, False)
        except RuntimeError as err:
            raise BackendError(f"inference failed: {_reason(err)}") from None
        bounds = self.graph.bounds
        for i, static in enumerate(self._static_outputs):
            nbytes = static[1] if static is not None else int(self.request.get_output_tensor(i).byte_size)
            bounds.check_output(i, nbytes)
        self._computed = True

    def output(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self._static_outputs):
            raise InvalidTensor(f"output {index} does not exist (the model has {len(self._static_outputs)})")
        if not self._computed:
            raise InvalidTensor("no output before compute")
        static = self._static_outputs[index]
        if static is not None:
            return static
        t = self.request.get_output_tensor(index)
        return _address(t), int(t.byte_size)

    def output_dims(self, index: int) -> tuple[int, ...]:
        self.output(index)  # the same checks
        return tuple(int(d) for d in self.request.get_output_tensor(index).shape)

    def cancel(self) -> bool:
        self.request.cancel()  # the running infer fails with a cancellation error
        return True

    def close(self) -> None:
        self.graph.release(self)


class OpenVinoGraph(Graph):
    def __init__(self, label: str, compiled: ov.CompiledModel, options: ModelOptions) -> None:
        super().__init__(label, ShapeBounds(options))
        pool_size = options.pool_size
        self.compiled = compiled
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._pool: list[OpenVinoContext] = [self._new_context() for _ in range(pool_size)]

    def signature(self) -> Signature:
        def info(port: ov.ConstOutput) -> TensorInfo:
            partial = port.get_partial_shape()
            return TensorInfo(_port_name(port), _element_type(port.get_element_type()), _model_dims(partial))

        return Signature(tuple(info(p) for p in self.compiled.inputs), tuple(info(p) for p in self.compiled.outputs))

    def _new_context(self) -> OpenVinoContext:
        try:
            return OpenVinoContext(self, self.compiled.create_infer_request())
        except RuntimeError as err:
            raise BackendError(f"cannot create an infer request: {_reason(err)}") from None

    def init_context(self) -> ExecutionContext:
        with self._lock:
            ctx = self._pool.pop() if self._pool else None
        # More concurrent contexts than the pool holds: make one; release() keeps at most pool_size.
        return ctx if ctx is not None else self._new_context()

    def release(self, ctx: OpenVinoContext) -> None:
        ctx.reset()
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(ctx)

    def close(self) -> None:
        with self._lock:
            self._pool.clear()


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self) -> None:
        self.core = ov.Core()
        self._devices = self.core.available_devices

    def _check_device(self, device: Device) -> None:
        if device is Device.AUTO:
            return
        present = {d.split(".")[0] for d in self._devices}
        if device.value not in present:
            raise Unsupported(
                f"OpenVINO device {device.value} is not available on this host (available: {', '.join(self._devices)})"
            )

    def _compile(self, label: str, model: ov.Model, device: Device, options: ModelOptions) -> ov.CompiledModel:
        self._check_device(device)
        try:
            return self.core.compile_model(model, device.value, compile_properties(options))
        except RuntimeError as err:
            raise BackendError(f"OpenVINO cannot compile {label} for {device.value}: {_reason(err)}") from None

    def load_model(self, cfg: ModelConfig) -> Graph:
        self._check_device(cfg.device)
        try:
            if cfg.format is ModelFormat.openvino:
                weights = cfg.files[1] if len(cfg.files) > 1 else cfg.files[0].with_suffix(".bin")
                model = self.core.read_model(cfg.files[0], weights if weights.is_file() else None)
            else:
                model = self.core.read_model(cfg.files[0])
        except RuntimeError as err:
            raise InvalidModel(f"OpenVINO cannot read the model: {_reason(err)}") from None
        compiled = self._compile(cfg.name, model, cfg.device, cfg.options)
        return OpenVinoGraph(cfg.name, compiled, cfg.options)

    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        check_self_contained(fmt, parts)
        try:
            if fmt is ModelFormat.openvino:
                if len(parts) not in (1, 2) or not parts[0].lstrip()[:1] == b"<":
                    raise InvalidModel("OpenVINO IR is an XML document and optionally its weights")
                weights = parts[1] if len(parts) == 2 else b""
                model = self.core.read_model(bytes(parts[0]), bytes(weights))
            else:
                if len(parts) != 1:
                    raise InvalidModel(f"an ONNX model is one byte array, not {len(parts)}")
                model = self.core.read_model(bytes(parts[0]))
        except RuntimeError as err:
            raise InvalidModel(f"OpenVINO cannot read the model: {_reason(err)}") from None
        options = ModelOptions(pool_size=1)
        compiled = self._compile("the model", model, device, options)
        return OpenVinoGraph(f"(load:{fmt.value})", compiled, options)


def _address(tensor: ov.Tensor) -> int:
    data: np.ndarray[Any, Any] = tensor.data
    return int(data.ctypes.data)


def _port_name(port: ov.ConstOutput) -> str:
    names = port.get_names()
    return min(names) if names else "unnamed"


def _model_dims(partial: ov.PartialShape) -> ModelDims:
    if partial.rank.is_dynamic:
        return None
    return [int(d.get_length()) if d.is_static else None for d in partial]


def _reason(err: BaseException) -> str:
    # OpenVINO prefixes the reason with "Exception from <source file>:<line>:" lines.
    lines = (ln.strip() for ln in str(err).splitlines())
    reasons = [ln for ln in lines if ln and not ln.startswith("Exception from ")]
    return reasons[0] if reasons else first_line(err)
