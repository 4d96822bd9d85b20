"""Which model format runs on which backend and device: the one table every check reads.

The runtime's `runtime.yaml` validation, its wasi-nn host (which backend a guest's `load` goes to),
the operator's API types and the CEL rules generated into the CRDs, and the operator's placement all
ask this module, so a device added to a backend here is admitted, served and placed at once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class ModelFormat(str, enum.Enum):
    openvino = "openvino"  # OpenVINO IR: model.xml + model.bin
    onnx = "onnx"
    ggml = "ggml"  # a GGUF file (llama.cpp)


class BackendName(str, enum.Enum):
    openvino = "openvino"
    onnxruntime = "onnxruntime"
    llamacpp = "llamacpp"


class Device(str, enum.Enum):
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"
    AUTO = "AUTO"


# Format -> the backends that read it, in order of preference: the first is the default backend.
# OpenVINO reads both IR and ONNX, so it is the default for both.
READERS: Mapping[ModelFormat, tuple[BackendName, ...]] = {
    ModelFormat.openvino: (BackendName.openvino,),
    ModelFormat.onnx: (BackendName.openvino, BackendName.onnxruntime),
    ModelFormat.ggml: (BackendName.llamacpp,),
}

# Format -> the suffixes of its files, the one a backend reads first: how a model folder pulled from a
# registry is read.
MODEL_FILES: Mapping[ModelFormat, tuple[str, ...]] = {
    ModelFormat.openvino: (".xml", ".bin"),
    ModelFormat.onnx: (".onnx",),
    ModelFormat.ggml: (".gguf",),
}

# Backend -> the devices it runs models on. GPU is an Intel GPU for OpenVINO, an NVIDIA GPU (CUDA) for
# ONNX Runtime and llama.cpp; AUTO lets OpenVINO pick.
DEVICES: Mapping[BackendName, tuple[Device, ...]] = {
    BackendName.openvino: (Device.CPU, Device.GPU, Device.NPU, Device.AUTO),
    BackendName.onnxruntime: (Device.CPU, Device.GPU),
    BackendName.llamacpp: (Device.CPU, Device.GPU),
}

# Formats a model host process serves (model_isolation: process). A GGML model's token streams do not
# cross the model host's wire: it loads in the serving process that uses it.
HOSTED: frozenset[ModelFormat] = frozenset({ModelFormat.openvino, ModelFormat.onnx})

# Devices every node has (AUTO falls back to the CPU): a model on them needs no device profile.
RUNS_ANYWHERE: frozenset[Device] = frozenset({Device.CPU, Device.AUTO})


def readers(fmt: ModelFormat) -> tuple[BackendName, ...]:
    """The backends that read `fmt`, preferred first."""
    return READERS[fmt]


def default_backend(fmt: ModelFormat) -> BackendName:
    return READERS[fmt][0]


def devices(backend: BackendName) -> tuple[Device, ...]:
    return DEVICES[backend]


def needs_no_profile(device: Device) -> bool:
    """Whether a model on `device` runs on any node (so on the default profile)."""
    return device in RUNS_ANYWHERE


def _either(values: tuple[enum.Enum, ...]) -> str:
    names = [str(v.value) for v in values]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def backend_error(fmt: ModelFormat, backend: BackendName) -> str | None:
    """Why `backend` cannot serve `fmt`; None when it can."""
    if backend in READERS[fmt]:
        return None
    return format_message(fmt)


def device_error(backend: BackendName, device: Device) -> str | None:
    """Why `backend` cannot run on `device`; None when it can."""
    if device in DEVICES[backend]:
        return None
    return device_message(backend)


def format_message(fmt: ModelFormat) -> str:
    """The refusal of a backend that does not read `fmt` (also the CRD's CEL message)."""
    return f"format {fmt.value} can only be served by backend {_either(READERS[fmt])}"


def device_message(backend: BackendName) -> str:
    """The refusal of a device `backend` does not run on (also the CRD's CEL message)."""
    return f"backend {backend.value} runs on device {_either(DEVICES[backend])} only"


def check(fmt: ModelFormat, backend: BackendName | None, device: Device) -> str | None:
    """Why a model of `fmt` on `backend` (None: the format's default) and `device` cannot run; None if it can."""
    resolved = default_backend(fmt) if backend is None else backend
    return backend_error(fmt, resolved) or device_error(resolved, device)
