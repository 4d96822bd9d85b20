"""Valid specs for the operator's unit tests to start from."""

from __future__ import annotations

from typing import Any

SHA = "ab" * 32


def https_source(*names: str) -> dict[str, Any]:
    return {"https": {"files": [{"url": f"https://models.example.com/m/{n}", "sha256": SHA} for n in names]}}


def model_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"format": "openvino", "source": https_source("model.xml", "model.bin")}
    spec.update(overrides)
    return spec


def worker_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"module": https_source("hello.wasm"), "route": "/hello"}
    spec.update(overrides)
    return spec
