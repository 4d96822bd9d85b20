"""Admission and the runtime agree on routes and var names: what `kubectl apply` accepts, the runtime serves.

Each value goes three ways: the generated CRD schema (its `pattern` and CEL rules, as crdcheck reads
them), the operator's models (what it reads every object with), and the runtime: the runtime.yaml
render.py writes, read by parse_runtime_config and given to the server's route table. A value one
accepts and another refuses fails the test. The one rule a regex cannot say (a parameter name used
twice in a route) is marked `status`: the schema takes it, the operator reports InvalidSpec.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from crdcheck import admission_errors, unchecked_rules
from opbuilders import SHA, model_spec, worker_spec
from pydantic import ValidationError

from wasminfer_operator import api, crdgen
from wasminfer_operator.profiles import load_operator_config
from wasminfer_operator.render import ObjectRef, render_worker
from wasminfer_runtime.config import ConfigError, parse_runtime_config
from wasminfer_runtime.server import build_routes

REF = ObjectRef("routes", "team-a", "uid-1")
SPEC_SCHEMA: dict[str, Any] = crdgen.wasm_worker_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
IM_SCHEMA: dict[str, Any] = crdgen.inference_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

OK, REFUSED, STATUS = "ok", "refused", "status"

ROUTES = [
    ("/", OK),
    ("/hello", OK),
    ("/[...all]", OK),
    ("/a/[b]/c", OK),
    ("/a/", OK),
    ("/a//b/", OK),
    ("/[...all]/", OK),
    ("/[id]", OK),
    ("/[_]/[ID9]", OK),
    ("/users/[user]/posts/[post]", OK),
    ("/[a]/b/[...rest]", OK),
    ("/héllo/ünïcode", OK),
    ("/a%20b/%", OK),
    ("/a b", OK),
    ("/a.b-c_~!$&'()*+,;=:@", OK),
    ("/a\tb\n", OK),
    ("//healthz", OK),
    ("/healthzx", OK),
    ("/metrics/x", OK),
    ("/" + "a" * 1023, OK),
    ("", REFUSED),
    ("hello", REFUSED),
    ("[id]", REFUSED),
    ("/[id", REFUSED),
    ("/id]", REFUSED),
    ("/[id]x", REFUSED),
    ("/x[id]", REFUSED),
    ("/[[id]]", REFUSED),
    ("/[]", REFUSED),
    ("/[...]", REFUSED),
    ("/[....a]", REFUSED),
    ("/[i-d]", REFUSED),
    ("/[a b]", REFUSED),
    ("/[é]", REFUSED),
    ("/[...all]/x", REFUSED),
    ("/a/[...b]/c", REFUSED),
    ("/[...a]/[...b]", REFUSED),
    ("/healthz", REFUSED),
    ("/healthz/", REFUSED),
    ("/readyz", REFUSED),
    ("/metrics//", REFUSED),
    ("/" + "a" * 1024, REFUSED),
    ("/[id]/[id]", STATUS),
    ("/[a]/[...a]", STATUS),
    ("/[x]/y/[x]/", STATUS),
]

VAR_NAMES = [
    ("A", OK),
    ("my_var", OK),
    ("_x9", OK),
    ("9LIVES", OK),
    ("my-key", OK),
    ("a.b", OK),
    ("a b", OK),
    ("é", OK),
    ("%", OK),
    ("$HOME", OK),
    ("x" * 5000, OK),
    ("", REFUSED),
    ("=", REFUSED),
    ("A=B", REFUSED),
    ("A\x00B", REFUSED),
]


def operator_accepts(spec: dict[str, Any]) -> bool:
    try:
        api.WasmWorkerSpec.model_validate(spec)
    except ValidationError:
        return False
    return True


def runtime_accepts(spec: dict[str, Any], route: str | None = None, vars: dict[str, str] | None = None) -> bool:
    """Whether the runtime serves the runtime.yaml rendered for `spec`, with `route` or `vars` put in
    its place when the operator's models refuse the value (so that render.py cannot take it)."""
    if not operator_accepts(spec):
        spec = worker_spec()
    out = render_worker(REF, api.WasmWorkerSpec.model_validate(spec), [], "cpu", load_operator_config(env={}))
    data = yaml.safe_load(out.config_map["data"]["runtime.yaml"])
    worker = data["workers"][0]
    worker["route"] = route if route is not None else worker["route"]
    worker["vars"] = vars if vars is not None else worker.get("vars", {})
    try:
        build_routes(parse_runtime_config(data, "runtime.yaml"))
    except ConfigError:
        return False
    return True


def verdicts(spec: dict[str, Any], **put: Any) -> tuple[bool, bool, bool]:
    return not admission_errors(SPEC_SCHEMA, spec), operator_accepts(spec), runtime_accepts(spec, **put)


def test_the_rules_on_these_fields_are_all_evaluated() -> None:
    assert unchecked_rules(SPEC_SCHEMA["properties"]["route"]) == []
    assert unchecked_rules(SPEC_SCHEMA["properties"]["vars"]) == []


@pytest.mark.parametrize(("route", "expected"), ROUTES, ids=[repr(r[:24]) for r, _ in ROUTES])
def test_routes(route: str, expected: str) -> None:
    crd, operator, runtime = verdicts(worker_spec(route=route), route=route)
    assert operator == runtime, f"the operator {'accepts' if operator else 'refuses'} {route!r}, the runtime does not"
    if expected == STATUS:
        assert crd and not runtime, "a repeated parameter name: only the operator's status can say it"
    else:
        assert crd == runtime, f"admission {'accepts' if crd else 'refuses'} {route!r}, the runtime does not"
        assert runtime == (expected == OK)


@pytest.mark.parametrize(("name", "expected"), VAR_NAMES, ids=[repr(n[:24]) for n, _ in VAR_NAMES])
def test_var_names(name: str, expected: str) -> None:
    crd, operator, runtime = verdicts(worker_spec(vars={name: "v"}), vars={name: "v"})
    assert crd == operator == runtime == (expected == OK), (crd, operator, runtime)


def test_a_var_name_that_is_not_utf8_is_refused_by_the_runtime() -> None:
    assert not runtime_accepts(worker_spec(), vars={"\udcff": "v"})


def test_a_repeated_parameter_is_reported_with_the_runtimes_message() -> None:
    with pytest.raises(ValidationError, match=r"route '/\[id\]/\[id\]': parameter \[id\] appears twice"):
        api.WasmWorkerSpec.model_validate(worker_spec(route="/[id]/[id]"))


DIGEST = "sha256:" + "0a" * 32
IMAGES = [
    ("ghcr.io/wasminfer/runtime:0.1.0", True),
    ("runtime", True),
    ("localhost:5000/a/b", True),
    (f"registry.example.com:5000/team/runtime:1.2@{DIGEST}", True),
    (f"runtime@{DIGEST}", True),
    ("[::1]:5000/x:y", True),
    ("Registry.Example.com/team/a__b--c.d:V1_x-2", True),
    ("Runtime", False),
    ("team/Runtime", False),
    ("runtime:", False),
    (":1.0", False),
    ("a b", False),
    ("runtime:1 0", False),
    ("runtime@sha256:abc", False),
    ("-runtime", False),
    ("runtime_", False),
    ("https://ghcr.io/x", False),
    ("ghcr.io/x:" + "t" * 129, False),
    ("", False),
]


@pytest.mark.parametrize(("image", "valid"), IMAGES)
def test_image_references(image: str, valid: bool) -> None:
    spec = worker_spec(image=image)
    assert (not admission_errors(SPEC_SCHEMA, spec)) == operator_accepts(spec) == valid


@pytest.mark.parametrize(
    ("source", "valid"),
    [
        ({"configMap": {"name": "m", "files": [{"key": "m.xml"}, {"key": "m.bin"}]}}, True),
        ({"configMap": {"name": "m", "files": [{"key": "m.xml"}]}}, False),
        ({"configMap": {"name": "m", "files": [{"key": "m.bin"}, {"key": "m.xml"}]}}, False),
        ({"pvc": {"claimName": "c", "files": [{"path": "ir/m.xml"}, {"path": "ir/m.bin"}]}}, True),
        ({"pvc": {"claimName": "c", "files": [{"path": "ir/m.xml"}, {"path": "ir/m.onnx"}]}}, False),
        ({"https": {"files": [{"url": "https://h/m.xml?sig=1", "sha256": SHA}, {"url": "https://h/w", "sha256": SHA, "name": "m.bin"}]}}, True),
        ({"https": {"files": [{"url": "https://h/m.xml", "sha256": SHA}, {"url": "https://h/m.bin.gz", "sha256": SHA}]}}, False),
    ],
)
def test_an_openvino_model_names_its_xml_and_its_bin(source: dict[str, Any], valid: bool) -> None:
    spec = model_spec(source=source)
    try:
        api.InferenceModelSpec.model_validate(spec)
    except ValidationError as err:
        assert not valid and "format openvino takes two files: the model's .xml, then its .bin" in str(err)
    else:
        assert valid
    assert not admission_errors(IM_SCHEMA, spec), "the schema alone takes it: the CEL rule below decides"
    assert any("then its .bin" in r["message"] for r in IM_SCHEMA["x-kubernetes-validations"])
