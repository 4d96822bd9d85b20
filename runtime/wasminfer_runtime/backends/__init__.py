"""Inference backends by name; each is created on first use (importing one loads its native libraries)."""

from __future__ import annotations

import threading

from wasminfer_runtime.backends.base import Backend
from wasminfer_runtime.config import BackendName

_lock = threading.Lock()
_instances: dict[BackendName, Backend] = {}


def get_backend(name: BackendName) -> Backend:
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            backend = _create(name)
            _instances[name] = backend
        return backend


def _create(name: BackendName) -> Backend:
    if name is BackendName.openvino:
        from wasminfer_runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend()
    if name is BackendName.onnxruntime:
        from wasminfer_runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name is BackendName.llamacpp:
        from wasminfer_runtime.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend()
    raise ValueError(f"unknown backend {name!r}")
