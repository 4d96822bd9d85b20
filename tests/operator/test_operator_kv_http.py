"""A WasmWorker's key/value store and outbound HTTP grant: what admission accepts, the runtime accepts.

Admission is checked against the generated CRD's OpenAPI schema (these fields carry no CEL rule, so
the schema is all the API server checks), with the subset of OpenAPI validation the CRDs use; the
operator's own models (the Python twin) must refuse and accept the same values.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from crdcheck import admission_errors
from opbuilders import worker_spec
from pydantic import ValidationError
from yarl import URL

from wasminfer_operator import api, crdgen
from wasminfer_operator.profiles import load_operator_config
from wasminfer_operator.render import ObjectRef, render_worker
from wasminfer_runtime.config import HTTP_METHODS, HttpRequestsConfig, Limits, RuntimeConfig, parse_runtime_config
from wasminfer_runtime.http_requests import Policy

REF = ObjectRef("fetcher", "team-a", "uid-1")
SPEC_SCHEMA: dict[str, Any] = crdgen.wasm_worker_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def twin_error(spec: dict[str, Any]) -> str | None:
    try:
        api.WasmWorkerSpec.model_validate(spec)
    except ValidationError as err:
        return str(err)
    return None


def rendered(spec: dict[str, Any]) -> RuntimeConfig:
    """The runtime.yaml the operator renders for `spec`, read by the runtime's own parser."""
    out = render_worker(REF, api.WasmWorkerSpec.model_validate(spec), [], "cpu", load_operator_config(env={}))
    return parse_runtime_config(yaml.safe_load(out.config_map["data"]["runtime.yaml"]), "runtime.yaml")


def node(*path: str) -> dict[str, Any]:
    schema = SPEC_SCHEMA
    for name in path:
        schema = schema["items"] if name == "[]" else schema["properties"][name]
    return schema


# --- rendering ---------------------------------------------------------------------------------


def test_both_grants_render_into_runtime_yaml_which_the_runtime_accepts() -> None:
    spec = worker_spec(
        kv={"namespace": "counter"},
        limits={"maxKvBytes": 4096},
        httpRequests={
            "allowedHosts": ["api.example.com", "[::1]"],
            "allowedMethods": ["GET", "HEAD"],
            "allowHttp": True,
            "timeoutSeconds": 2.5,
            "maxRequestBodyBytes": 1000,
            "maxResponseBodyBytes": 2000,
        },
    )
    assert admission_errors(SPEC_SCHEMA, spec) == []
    out = render_worker(REF, api.WasmWorkerSpec.model_validate(spec), [], "cpu", load_operator_config(env={}))
    (w,) = yaml.safe_load(out.config_map["data"]["runtime.yaml"])["workers"]
    assert w["kv"] == {"namespace": "counter"}
    assert w["limits"]["max_kv_bytes"] == 4096
    assert w["http_requests"] == {
        "allowed_hosts": ["api.example.com", "[::1]"],
        "allowed_methods": ["GET", "HEAD"],
        "allow_http": True,
        "timeout_seconds": 2.5,
        "max_request_body_bytes": 1000,
        "max_response_body_bytes": 2000,
    }
    (parsed,) = rendered(spec).workers
    assert parsed.kv is not None and parsed.kv.namespace == "counter"
    assert parsed.http_requests is not None and parsed.http_requests.allowed_methods == ["GET", "HEAD"]


def test_without_the_fields_the_worker_has_neither() -> None:
    (w,) = rendered(worker_spec()).workers
    assert w.kv is None and w.http_requests is None
    assert w.limits.max_kv_bytes == Limits().max_kv_bytes


def test_defaults_are_the_runtimes() -> None:
    """What the API server fills in is what the runtime would assume."""
    grant = node("httpRequests")["properties"]
    runtime = HttpRequestsConfig()
    assert grant["allowedMethods"]["default"] == runtime.allowed_methods
    assert grant["allowHttp"]["default"] is runtime.allow_http
    assert grant["timeoutSeconds"]["default"] == runtime.timeout_seconds
    assert grant["maxRequestBodyBytes"]["default"] == runtime.max_request_body_bytes
    assert grant["maxResponseBodyBytes"]["default"] == runtime.max_response_body_bytes
    assert node("limits", "maxKvBytes")["default"] == Limits().max_kv_bytes
    (w,) = rendered(worker_spec(httpRequests={"allowedHosts": ["a.example.com"]})).workers
    assert w.http_requests == HttpRequestsConfig(allowed_hosts=["a.example.com"])


# --- admission ---------------------------------------------------------------------------------


def test_no_cel_rule_on_these_fields() -> None:
    """So the OpenAPI schema checked here is the whole of what the API server checks."""
    text = yaml.safe_dump([node("kv"), node("httpRequests"), node("limits", "maxKvBytes")])
    assert "x-kubernetes-validations" not in text


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"kv": {"namespace": ""}}, "spec.kv.namespace", "at least 1 chars"),
        ({"kv": {"namespace": "n" * 254}}, "spec.kv.namespace", "Too long"),
        ({"kv": {}}, "spec.kv.namespace", "Required value"),
        ({"httpRequests": {"allowedMethods": ["get"]}}, "spec.httpRequests.allowedMethods[0]", "Unsupported value: 'get'"),
        ({"httpRequests": {"allowedMethods": ["GET", "CONNECT"]}}, "spec.httpRequests.allowedMethods[1]", "Unsupported value"),
        ({"httpRequests": {"allowedMethods": ["GET", "GET"]}}, "spec.httpRequests.allowedMethods", "Duplicate value"),
        ({"httpRequests": {"allowedHosts": ["https://api.example.com"]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": ["api.example.com:443"]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": ["cafe.de:443"]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": ["api.example.com/v1"]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": ["*.example.com"]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": [""]}}, "spec.httpRequests.allowedHosts[0]", "should match"),
        ({"httpRequests": {"allowedHosts": [f"h{i}.example.com" for i in range(65)]}}, "spec.httpRequests.allowedHosts", "at most 64"),
        ({"httpRequests": {"timeoutSeconds": 0}}, "spec.httpRequests.timeoutSeconds", "greater than 0"),
        ({"httpRequests": {"timeoutSeconds": 3601}}, "spec.httpRequests.timeoutSeconds", "less than or equal to 3600"),
        ({"httpRequests": {"maxRequestBodyBytes": -1}}, "spec.httpRequests.maxRequestBodyBytes", "greater than or equal to 0"),
        ({"httpRequests": {"maxResponseBodyBytes": 2**30 + 1}}, "spec.httpRequests.maxResponseBodyBytes", "less than or equal to 1073741824"),
        ({"limits": {"maxKvBytes": -1}}, "spec.limits.maxKvBytes", "greater than or equal to 0"),
        ({"limits": {"maxKvBytes": 2**30 + 1}}, "spec.limits.maxKvBytes", "less than or equal to 1073741824"),
    ],
)
def test_admission_refuses_with_the_field_and_reason(overrides: dict[str, Any], field: str, reason: str) -> None:
    spec = worker_spec(**overrides)
    errs = admission_errors(SPEC_SCHEMA, spec)
    assert any(e.startswith(f"{field}: ") and reason in e for e in errs), errs
    # The operator's models refuse it too, naming the field (pydantic's dotted form of the path).
    twin = twin_error(spec)
    assert twin is not None and re.sub(r"\[(\d+)\]", r".\1", field.removeprefix("spec.")) in twin, twin


# Host names admission accepts: each must be one the runtime's policy lets a request reach.
ACCEPTED_HOSTS = [
    ("api.example.com", "https://api.example.com/x"),
    ("API.Example.COM", "https://api.example.com:8443/x"),
    ("localhost", "http://localhost:8080/"),
    ("svc_1.team-a.svc.cluster.local", "https://svc_1.team-a.svc.cluster.local/"),
    ("10.0.0.7", "https://10.0.0.7/"),
    ("::1", "https://[::1]:9000/"),
    ("[2001:db8::1]", "https://[2001:DB8::1]/"),
    ("xn--bcher-kva.example", "https://bücher.example/"),
    ("a" * 63 + ".example.com", f"https://{'a' * 63}.example.com/"),
]


@pytest.mark.parametrize(("host", "url"), ACCEPTED_HOSTS)
def test_accepted_hosts_are_hosts_the_runtime_matches(host: str, url: str) -> None:
    spec = worker_spec(httpRequests={"allowedHosts": [host], "allowHttp": True})
    assert admission_errors(SPEC_SCHEMA, spec) == []
    assert twin_error(spec) is None
    (w,) = rendered(spec).workers
    assert w.http_requests is not None
    Policy(w.http_requests).check(URL(url), "GET")  # raises Refused if the host would never match


def _edges(schema: dict[str, Any]) -> list[int | float]:
    """The extreme values a numeric schema node admits."""
    low, high = schema["minimum"], schema["maximum"]
    if schema.get("exclusiveMinimum"):
        low = low + (1 if schema["type"] == "integer" else 0.001)
    return [low, high]


def test_the_runtime_accepts_every_value_admission_accepts() -> None:
    """The extremes of every bound, every method, the longest namespace: admitted, rendered, parsed."""
    grant = node("httpRequests")
    numeric = ("timeoutSeconds", "maxRequestBodyBytes", "maxResponseBodyBytes")
    specs = [
        worker_spec(
            kv={"namespace": "n" * node("kv", "namespace")["maxLength"]},
            limits={"maxKvBytes": _edges(node("limits", "maxKvBytes"))[i]},
            httpRequests={
                "allowedHosts": [h for h, _ in ACCEPTED_HOSTS],
                "allowedMethods": list(grant["properties"]["allowedMethods"]["items"]["enum"]),
                **{name: _edges(grant["properties"][name])[i] for name in numeric},
            },
        )
        for i in (0, 1)
    ]
    specs.append(worker_spec(kv={"namespace": "x"}, httpRequests={"allowedMethods": []}))
    for spec in specs:
        assert admission_errors(SPEC_SCHEMA, spec) == []
        assert twin_error(spec) is None
        (w,) = rendered(spec).workers
        assert w.kv is not None and w.kv.namespace == spec["kv"]["namespace"]
        assert w.http_requests is not None
        assert w.http_requests.allowed_methods == spec["httpRequests"]["allowedMethods"]
    assert specs[0]["httpRequests"]["allowedMethods"] == list(HTTP_METHODS)
