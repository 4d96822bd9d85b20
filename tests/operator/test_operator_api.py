"""The API types accept what the CRDs accept and refuse, naming the field, what they refuse."""

from __future__ import annotations

from typing import Any

import pytest
from opbuilders import SHA, https_source, model_spec, worker_spec
from pydantic import ValidationError

from wasminfer_operator import api
from wasminfer_runtime.config import BackendName, Device


def refused(model: type[api._Api], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


def test_minimal_model_gets_defaults() -> None:
    m = api.InferenceModelSpec.model_validate(model_spec())
    assert m.device is Device.CPU
    assert m.backend is None and m.resolved_backend is BackendName.openvino
    assert m.options.precision.value == "f32" and m.options.pool_size == 4
    assert m.source.file_names() == ["model.xml", "model.bin"]


def test_minimal_worker_gets_defaults() -> None:
    w = api.WasmWorkerSpec.model_validate({"module": https_source("hello.wasm")})
    assert (w.route, w.replicas, w.models) == ("/", 1, [])
    assert w.limits.memory_mib == 256 and w.limits.timeout_seconds == 30.0
    assert w.placement.profile is None and w.placement.fallbacks == []


def test_wire_form_is_camel_case() -> None:
    w = api.WasmWorkerSpec.model_validate(worker_spec(limits={"memoryMiB": 64}, placement={"nodeSelector": {"a": "b"}}))
    wire = w.wire()
    assert wire["limits"]["memoryMiB"] == 64
    assert wire["placement"]["nodeSelector"] == {"a": "b"}
    assert api.WasmWorkerSpec.model_validate(wire) == w


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({}, "set exactly one of https, configMap, pvc"),
        ({**https_source("a.xml"), "pvc": {"claimName": "c", "files": [{"path": "a"}]}}, "set exactly one of"),
        ({"https": {"files": [{"url": "http://insecure.example.com/a.xml", "sha256": SHA}]}}, "url must be an https:// URL"),
        ({"https": {"files": [{"url": "https://x.example.com/a.xml", "sha256": "XYZ"}]}}, "sha256 must be 64 lowercase hex digits"),
        ({"https": {"files": [{"url": "https://x.example.com/", "sha256": SHA}]}}, "must end in a file name"),
        ({"pvc": {"claimName": "c", "files": [{"path": "../etc/passwd"}]}}, "must not contain '..'"),
        ({"pvc": {"claimName": "c", "files": [{"path": "/abs"}]}}, "relative to the volume root"),
        ({"configMap": {"name": "Bad_Name", "files": [{"key": "a"}]}}, "configMap.name"),
    ],
)
def test_bad_sources_are_refused_with_the_field(source: dict[str, Any], needle: str) -> None:
    msg = refused(api.InferenceModelSpec, model_spec(source=source))
    assert needle in msg
    assert "source" in msg


def test_https_file_name_can_be_given_for_urls_without_one() -> None:
    src = {"https": {"files": [{"url": "https://x.example.com/download?id=7", "sha256": SHA, "name": "model.onnx"}]}}
    m = api.InferenceModelSpec.model_validate(model_spec(format="onnx", source=src))
    assert m.source.file_names() == ["model.onnx"]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"backend": "onnxruntime"}, "format openvino can only be served by backend openvino"),
        ({"format": "onnx", "backend": "onnxruntime", "device": "NPU", "source": https_source("m.onnx")}, "onnxruntime runs on device CPU or GPU"),
        ({"format": "onnx"}, "format onnx takes exactly one file"),
        ({"source": https_source("a.xml", "a.bin", "c")}, "format openvino takes two files: the model's .xml, then its .bin"),
        ({"source": https_source("a.xml")}, "format openvino takes two files"),
        ({"source": https_source("a.bin", "a.xml")}, "format openvino takes two files"),
        ({"device": "TPU"}, "device"),
        ({"options": {"streams": 0}}, "options.streams"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_inconsistent_models_are_refused(overrides: dict[str, Any], needle: str) -> None:
    assert needle in refused(api.InferenceModelSpec, model_spec(**overrides))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"route": "hello"}, "route 'hello': must start with '/'"),
        ({"route": "/[id]/[id]"}, "route '/[id]/[id]': parameter [id] appears twice"),
        ({"route": "/healthz/"}, "route /healthz/ is one the server answers itself"),
        ({"vars": {"A=B": "1"}}, "var name 'A=B' must not be empty and must not contain '=' or NUL"),
        ({"image": "Registry/Runtime:1"}, "is not an image reference"),
        ({"module": https_source("a.wasm", "b.wasm")}, "module takes exactly one file"),
        ({"replicas": -1}, "replicas"),
        ({"models": ["a", "a"]}, "must not repeat"),
        ({"env": [{"name": "X", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, "mutually exclusive"),
        ({"env": [{"name": "X", "valueFrom": {}}]}, "configMapKeyRef, secretKeyRef"),
        ({"env": [{"name": "1X", "value": "1"}]}, "env.0.name"),
        ({"folders": [{"path": "data", "emptyDir": {}}]}, "path must be absolute"),
        ({"folders": [{"path": "/d", "writable": True, "configMap": {"name": "c"}}]}, "can be writable"),
        ({"folders": [{"path": "/d"}]}, "set exactly one of"),
        ({"folders": [{"path": "/d", "emptyDir": {}}, {"path": "/d", "emptyDir": {}}]}, "same path"),
        ({"placement": {"profile": "cpu", "fallbacks": ["cpu"]}}, "fallbacks must not repeat profile"),
        ({"placement": {"profile": "Intel GPU"}}, "placement.profile"),
        ({"limits": {"memoryMiB": 0}}, "limits.memoryMiB"),
        ({"limits": {"timeoutSeconds": 0}}, "limits.timeoutSeconds"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "not a Kubernetes quantity"),
    ],
)
def test_bad_workers_are_refused(overrides: dict[str, Any], needle: str) -> None:
    assert needle in refused(api.WasmWorkerSpec, worker_spec(**overrides))


def test_worker_accepts_every_documented_field() -> None:
    w = api.WasmWorkerSpec.model_validate(
        worker_spec(
            replicas=3,
            models=["a", "b"],
            allowedBackends=["openvino"],
            vars={"K": "v"},
            env=[{"name": "T", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
            folders=[{"path": "/s", "secret": {"secretName": "s"}}, {"path": "/w", "writable": True, "emptyDir": {"sizeLimit": "1Gi"}}],
            limits={"memoryMiB": 512, "timeoutSeconds": 2.5, "maxBodyBytes": 1024},
            resources={"requests": {"cpu": "500m", "memory": 1073741824}, "limits": {"memory": "2Gi"}},
            placement={
                "profile": "intel-gpu",
                "fallbacks": ["cpu"],
                "fallbackAfterSeconds": 30,
                "nodeSelector": {"zone": "a"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"anything": ["goes"]}},
            },
            image="registry.example.com/runtime:custom",
        )
    )
    assert w.placement.affinity == {"nodeAffinity": {"anything": ["goes"]}}
    assert w.resources.requests["memory"] == 1073741824
