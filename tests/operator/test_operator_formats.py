"""Admission, the operator and the runtime read one table of formats, backends and devices, and one
declaration of the model options and worker limits.

Every (format, backend, device) goes three ways: the generated CRD's CEL rules (evaluated by crdcheck's
CEL subset), the operator's InferenceModelSpec, and the runtime's runtime.yaml validation. The answer is
the table in wasminfer_runtime.formats, and all three must give it, with its message. Then every bound of
ModelOptions, WorkerLimits and memoryMiB, and one past it each way, goes to the CRD schema, the operator
and the runtime: what one accepts the others accept.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from crdcheck import admission_errors, cel_holds, cel_supported
from opbuilders import https_source, model_spec
from pydantic import BaseModel, ValidationError

from wasminfer_operator import api, crdgen
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_runtime import formats
from wasminfer_runtime.config import BackendName, ConfigError, Device, Limits, ModelConfig, ModelFormat, ModelOptions
from wasminfer_runtime.config import parse_runtime_config

IM_SCHEMA: dict[str, Any] = crdgen.inference_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
WW_SCHEMA: dict[str, Any] = crdgen.wasm_worker_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

FILES = {fmt: [f"model{suffix}" for suffix in formats.MODEL_FILES[fmt]] for fmt in ModelFormat}  # model.xml, model.onnx, ...
COMBINATIONS = list(itertools.product(ModelFormat, [None, *BackendName], Device))


def table_says(fmt: ModelFormat, backend: BackendName | None, device: Device) -> bool:
    """The answer, read from the table's data itself: a backend that reads the format, on its device."""
    resolved = formats.READERS[fmt][0] if backend is None else backend
    return resolved in formats.READERS[fmt] and device in formats.DEVICES[resolved]


def _id(combo: tuple[ModelFormat, BackendName | None, Device]) -> str:
    fmt, backend, device = combo
    return f"{fmt.value}-{backend.value if backend else 'default'}-{device.value}"


def test_the_table_rules_are_in_the_crd_and_evaluated_here() -> None:
    rules = {r["message"]: r["rule"] for r in IM_SCHEMA["x-kubernetes-validations"]}
    for backend in BackendName:
        if set(formats.DEVICES[backend]) != set(Device):
            assert formats.device_message(backend) in rules
    for fmt in ModelFormat:
        if set(formats.READERS[fmt]) != set(BackendName):
            assert formats.format_message(fmt) in rules
    for message in [formats.device_message(b) for b in BackendName] + [formats.format_message(f) for f in ModelFormat]:
        if message in rules:
            assert cel_supported(rules[message]), rules[message]


@pytest.mark.parametrize(("fmt", "backend", "device"), COMBINATIONS, ids=[_id(c) for c in COMBINATIONS])
def test_crd_operator_and_runtime_agree_with_the_table(fmt: ModelFormat, backend: BackendName | None, device: Device) -> None:
    expected = table_says(fmt, backend, device)
    message = formats.check(fmt, backend, device)
    assert (message is None) == expected

    # (a) The CRD: the API server applies the schema's default for device, so it is always given here.
    spec = model_spec(format=fmt.value, device=device.value, source=https_source(*FILES[fmt]))
    if backend is not None:
        spec["backend"] = backend.value
    for rule in [r["rule"] for r in IM_SCHEMA["x-kubernetes-validations"] if cel_supported(r["rule"])]:
        assert cel_holds(rule, spec) is not None, f"crdcheck could not evaluate {rule}"
    errors = admission_errors(IM_SCHEMA, spec)
    assert (errors == []) == expected, errors
    if message is not None:
        assert f"spec: Invalid value: {message}" in errors

    # (b) The operator's model.
    try:
        api.InferenceModelSpec.model_validate(spec)
        operator_ok, operator_error = True, ""
    except ValidationError as err:
        operator_ok, operator_error = False, str(err)
    assert operator_ok == expected, operator_error
    if message is not None:
        assert message in operator_error

    # (c) The runtime's runtime.yaml, naming the key that is wrong.
    model: dict[str, Any] = {"name": "m", "format": fmt.value, "device": device.value, "files": FILES[fmt]}
    if backend is not None:
        model["backend"] = backend.value
    try:
        cfg = parse_runtime_config({"models": [model]}, "runtime.yaml")
        runtime_ok, runtime_error = True, ""
    except ConfigError as err:
        runtime_ok, runtime_error = False, str(err)
    assert runtime_ok == expected, runtime_error
    if message is not None:
        key = "device" if formats.backend_error(fmt, backend or formats.default_backend(fmt)) is None else "backend"
        assert f"runtime.yaml: invalid configuration\n  models.0.{key}: Value error, {message}" == runtime_error
    else:
        assert cfg.models[0].resolved_backend is (backend or formats.default_backend(fmt))


ADMITTED = [c for c in COMBINATIONS if table_says(*c)]


@pytest.mark.parametrize(("fmt", "backend", "device"), ADMITTED, ids=[_id(c) for c in ADMITTED])
def test_placement_serves_what_the_table_admits(fmt: ModelFormat, backend: BackendName | None, device: Device) -> None:
    """An admitted model runs anywhere (CPU, AUTO) or has a built-in device profile for its device and backend:
    a device added to a backend in the table fails here until a profile provides it."""
    cfg = OperatorConfig()
    resolved = backend or formats.default_backend(fmt)
    profile = cfg.profile_for_model(device, resolved)
    assert profile is not None
    if formats.needs_no_profile(device):
        assert profile == cfg.default_profile
    else:
        assert cfg.profiles[profile].serves(device, resolved)


# --- declared once: ModelOptions, WorkerLimits, memoryMiB -------------------------------------------


def _runtime_bounds(model: type[BaseModel], name: str) -> list[float]:
    out: list[float] = []
    for meta in model.model_fields[name].metadata:
        for key in ("gt", "ge", "lt", "le"):
            if getattr(meta, key, None) is not None:
                out.append(getattr(meta, key))
    return out


def _schema_bounds(node: dict[str, Any]) -> list[float]:
    return [node[k] for k in ("minimum", "maximum") if k in node]


def _candidates(runtime: type[BaseModel], name: str, node: dict[str, Any]) -> list[Any]:
    """Each bound either side declares, and one past it each way; every value of an enum and one more."""
    if "enum" in node:
        return [*node["enum"], "bogus"]
    bounds = _runtime_bounds(runtime, name) + _schema_bounds(node)
    assert bounds, f"{name}: no bounds on either side"
    values = {b + d for b in bounds for d in (-1, 0, 1)}
    if node.get("type") == "number":
        values |= {b + d for b in bounds for d in (-0.5, 0.5)}
    return sorted(values)


# (API model, its CRD schema node, the runtime model, the runtime key of each API field)
SHARED = [
    (api.ModelOptions, IM_SCHEMA["properties"]["options"], ModelOptions, {n: n for n in api.ModelOptions.model_fields}),
    (api.WorkerLimits, WW_SCHEMA["properties"]["limits"], Limits, {n: n for n in api.WorkerLimits.model_fields}),
]
CASES = [(a, node, r, field, key) for a, node, r, keys in SHARED for field, key in keys.items()]


def _alias(model: type[BaseModel], field: str) -> str:
    return model.model_fields[field].alias or field


def _accepts(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("api_model", "node", "runtime", "field", "key"), CASES, ids=[f"{c[0].__name__}.{c[3]}" for c in CASES])
def test_api_options_and_limits_take_the_runtime_defaults_and_bounds(
    api_model: type[BaseModel], node: dict[str, Any], runtime: type[BaseModel], field: str, key: str
) -> None:
    wire = _alias(api_model, field)
    prop = node["properties"][wire]
    default = runtime.model_fields[key].get_default(call_default_factory=True)
    assert getattr(api_model.model_validate({}), field) == default
    assert prop.get("default") == (None if default is None else getattr(default, "value", default))
    for value in _candidates(runtime, key, prop):
        verdicts = {
            "runtime": _accepts(runtime, {key: value}),
            "operator": _accepts(api_model, {wire: value}),
            "crd": admission_errors(prop, value) == [],
        }
        assert len(set(verdicts.values())) == 1, f"{field} = {value!r}: {verdicts}"


def test_model_memory_mib_takes_the_runtime_bounds() -> None:
    prop = IM_SCHEMA["properties"]["memoryMiB"]
    for value in _candidates(ModelConfig, "memory_mib", prop):
        runtime = _accepts(ModelConfig, {"name": "m", "format": "onnx", "files": ["m.onnx"], "memory_mib": value})
        operator = _accepts(api.InferenceModelSpec, model_spec(memoryMiB=value))
        crd = admission_errors(prop, value) == []
        assert runtime == operator == crd, f"memoryMiB = {value}: runtime {runtime}, operator {operator}, crd {crd}"
