"""ONNX Runtime backend: ONNX models on the CPU, or on CUDA when the host has that provider.

One InferenceSession per graph (`run` is thread-safe); each execution context owns its input
arrays, so concurrent guests never share a buffer.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from wasminfer_runtime.backends.base import (
    Backend,
    BackendError,
    ElementType,
    ExecutionContext,
    Graph,
    InvalidModel,
    InvalidTensor,
    ShapeBounds,
    Signature,
    TensorInfo,
    Unsupported,
    first_line,
    input_slot,
)
from wasminfer_runtime.backends.guest_models import check_self_contained
from wasminfer_runtime.config import Device, ModelConfig, ModelFormat, ModelOptions, Precision

log = logging.getLogger(__name__)

_ORT_TYPES: dict[str, ElementType] = {
    "tensor(float16)": ElementType.f16, "tensor(float)": ElementType.f32, "tensor(double)": ElementType.f64,
    "tensor(uint8)": ElementType.u8, "tensor(int32)": ElementType.i32, "tensor(int64)": ElementType.i64,
}
_DTYPES: dict[ElementType, Any] = {
    ElementType.f16: np.float16, ElementType.f32: np.float32, ElementType.f64: np.float64,
    ElementType.u8: np.uint8, ElementType.i32: np.int32, ElementType.i64: np.int64,
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def providers_for(device: Device, available: Sequence[str]) -> list[str]:
    """Execution providers for a device: CUDA on GPU (or AUTO when present), else the CPU."""
    if device is Device.CPU:
        return [CPU]
    if device is Device.GPU:
        if CUDA not in available:
            raise Unsupported("ONNX Runtime has no CUDA execution provider on this host (device GPU)")
        return [CUDA, CPU]
    if device is Device.AUTO:
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise Unsupported(f"ONNX Runtime cannot run on device {device.value}")


class _Input:
    __slots__ = ("name", "label", "etype", "shape", "array", "dims")

    def __init__(self, index: int, name: str, etype: ElementType | None, shape: list[int | None]) -> None:
        self.name = name
        self.label = f"input {index} ({name})"
        self.etype = etype
        self.shape = shape  # None for a dynamic dimension
        self.array: np.ndarray[Any, Any] | None = None
        self.dims: tuple[int, ...] | None = None


class OnnxRuntimeContext(ExecutionContext):
    def __init__(self, graph: OnnxRuntimeGraph) -> None:
        self.graph = graph
        self.inputs = [
            _Input(n, i.name, _ORT_TYPES.get(i.type), _static_dims(i.shape)) for n, i in enumerate(graph.session.get_inputs())
        ]
        for slot in self.inputs:
            if slot.etype is not None and all(d is not None for d in slot.shape):
                self._allocate(slot, tuple(int(d) for d in slot.shape if d is not None))
        self.feed: dict[str, np.ndarray[Any, Any]] = {}
        self.run_options = ort.RunOptions()
        self.results: list[np.ndarray[Any, Any]] = []

    @staticmethod
    def _allocate(slot: _Input, dims: tuple[int, ...]) -> None:
        assert slot.etype is not None
        slot.array = np.empty(dims, dtype=_DTYPES[slot.etype])
        slot.dims = dims

    def set_input(self, index: int, etype: ElementType, dims: tuple[int, ...], src: int, nbytes: int) -> None:
        slot = input_slot(self.inputs, index, etype)
        if dims != slot.dims:  # dims already set were checked then
            self.graph.bounds.check_input(slot.label, slot.shape, etype, dims, nbytes)
            self._allocate(slot, dims)
        array = slot.array
        assert array is not None
        if nbytes != array.nbytes:
            raise InvalidTensor(f"input {index} of shape {list(dims)} takes {array.nbytes} bytes, not {nbytes}")
        ctypes.memmove(array.ctypes.data, src, nbytes)
        self.feed[slot.name] = array

    def compute(self) -> None:
        if len(self.feed) != len(self.inputs):
            missing = [i for i, s in enumerate(self.inputs) if s.name not in self.feed]
            raise InvalidTensor(f"input(s) {missing} were never set")
        self.results = []  # a compute that fails shows no outputs
        self.run_options.terminate = False
        try:
            outputs = self.graph.session.run(None, self.feed, self.run_options)
        except Exception as err:  # onnxruntime raises its own exception classes from C++
            raise BackendError(f"inference failed: {first_line(err)}") from None
        results = [np.ascontiguousarray(o) for o in outputs]
        bounds = self.graph.bounds
        for i, r in enumerate(results):
            bounds.check_output(i, int(r.nbytes))
        self.results = results

    def output(self, index: int) -> tuple[int, int]:
        if not self.results:
            raise InvalidTensor("no output before compute")
        if not 0 <= index < len(self.results):
            raise InvalidTensor(f"output {index} does not exist (the model has {len(self.results)})")
        array = self.results[index]
        return int(array.ctypes.data), int(array.nbytes)

    def output_dims(self, index: int) -> tuple[int, ...]:
        self.output(index)  # the same checks
        return tuple(int(d) for d in self.results[index].shape)

    def cancel(self) -> bool:
        self.run_options.terminate = True  # the running session.run fails soon after
        return True

    def close(self) -> None:
        self.feed.clear()
        self.results = []


class OnnxRuntimeGraph(Graph):
    def __init__(self, label: str, session: ort.InferenceSession, options: ModelOptions) -> None:
        super().__init__(label, ShapeBounds(options))
        self.session = session

    def init_context(self) -> ExecutionContext:
        return OnnxRuntimeContext(self)

    def signature(self) -> Signature:
        def info(arg: Any) -> TensorInfo:
            shape = arg.shape if isinstance(arg.shape, list) else None  # None: even the rank is unknown
            return TensorInfo(arg.name, _ORT_TYPES.get(arg.type), None if shape is None else _static_dims(shape))

        return Signature(tuple(info(a) for a in self.session.get_inputs()), tuple(info(a) for a in self.session.get_outputs()))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self) -> None:
        self.available = ort.get_available_providers()

    def _session(self, model: str | bytes, device: Device) -> ort.InferenceSession:
        providers = providers_for(device, self.available)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are noise for users
        try:
            return ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime's own exception classes
            raise InvalidModel(f"ONNX Runtime cannot load the model: {first_line(err)}") from None

    def load_model(self, cfg: ModelConfig) -> Graph:
        if cfg.format is not ModelFormat.onnx:
            raise Unsupported(f"ONNX Runtime serves ONNX models, not {cfg.format.value}")
        if cfg.options.precision is not Precision.f32:
            raise Unsupported(
                f"ONNX Runtime runs a model in the precision it was exported in; options.precision "
                f"{cfg.options.precision.value} needs the openvino backend"
            )
        session = self._session(str(cfg.files[0]), cfg.device)
        log.info("model %s runs on %s", cfg.name, session.get_providers()[0])
        return OnnxRuntimeGraph(cfg.name, session, cfg.options)

    def load_bytes(self, fmt: ModelFormat, parts: Sequence[bytes], device: Device) -> Graph:
        if fmt is not ModelFormat.onnx:
            raise Unsupported(f"ONNX Runtime serves ONNX models, not {fmt.value}")
        if len(parts) != 1:
            raise InvalidModel(f"an ONNX model is one byte array, not {len(parts)}")
        check_self_contained(fmt, parts)
        return OnnxRuntimeGraph("(load:onnx)", self._session(bytes(parts[0]), device), ModelOptions())


def _static_dims(shape: Sequence[object]) -> list[int | None]:
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]
