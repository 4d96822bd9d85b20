"""OCI sources and signature policies in the API and in what the operator renders: the pods pull the
pinned digest with the pull Secret and CA mounted for the fetch step only, and every policy (the
namespace's from the operator configuration, the resource's own) reaches the fetch step's plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from opbuilders import SHA, model_spec, worker_spec
from pydantic import ValidationError

from wasminfer_operator import api
from wasminfer_operator.artifacts import pin_source
from wasminfer_operator.profiles import OperatorConfig, load_operator_config, parse_operator_config
from wasminfer_operator.render import NamedModel, ObjectRef, Rendered, render_worker
from wasminfer_operator.trust import NAMESPACE_POLICY, SPEC_POLICY, inline_key_name
from wasminfer_runtime.config import parse_runtime_config
from wasminfer_runtime.fetch import FetchPlan

REF = ObjectRef("hello", "team-a", "0f3c-uid")
DIGEST = "sha256:" + "cd" * 32
MODULE_REF = "registry.example.com:5000/demo/hello:v1"
MODEL_REF = "registry.example.com:5000/models/mobilenet:2024"


def pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def oci(reference: str, **extra: Any) -> dict[str, Any]:
    return {"oci": {"reference": reference, **extra}}


@pytest.fixture
def cfg() -> OperatorConfig:
    return load_operator_config(env={})


def render(cfg: OperatorConfig, model: NamedModel, **overrides: Any) -> Rendered:
    spec = api.WasmWorkerSpec.model_validate(worker_spec(models=[model.name], **overrides))
    return render_worker(REF, spec, [model], "cpu", cfg)


def plan_of(r: Rendered) -> FetchPlan:
    return FetchPlan.model_validate(yaml.safe_load(r.config_map["data"]["fetch.yaml"]))


def test_a_pinned_oci_module_and_model_are_pulled_by_the_fetch_step_with_their_secret_and_ca(cfg: OperatorConfig) -> None:
    ns_key = pem()
    cfg = parse_operator_config({"signatures": {"team-a": {"keys": [ns_key]}}}, "test")
    model_source = api.InferenceModelSpec.model_validate(model_spec(source=oci(MODEL_REF, pullSecret="regcred")))
    model = NamedModel("mobilenet", pin_source(model_source, f"{MODEL_REF}@{DIGEST}"))
    worker = worker_spec(
        module=oci(MODULE_REF, pullSecret="regcred", ca={"name": "registry-ca", "key": "ca.crt"}),
        signatures={"keys": [{"name": "release-keys", "key": "cosign.pub"}]},
    )
    spec = pin_source(api.WasmWorkerSpec.model_validate({**worker, "models": ["mobilenet"]}), f"{MODULE_REF}@{DIGEST}")
    r = render_worker(REF, spec, [model], "cpu", cfg)
    plan = plan_of(r)
    assert plan.files == []
    by_kind = {a.kind: a for a in plan.artifacts}
    assert by_kind["folder"].oci == f"{MODEL_REF}@{DIGEST}" and str(by_kind["folder"].dest) == "/var/lib/wasminfer/models/mobilenet"
    module = by_kind["module"]
    assert module.oci == f"{MODULE_REF}@{DIGEST}" and str(module.dest) == "/var/lib/wasminfer/modules/hello.wasm"
    pod = r.deployment["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    assert secret_volume["secret"] == {"secretName": "regcred"}, "one volume for the Secret both sources name"
    mount = f"/var/run/wasminfer/registry/{secret_volume['name']}"
    assert str(module.registry_config) == f"{mount}/.dockerconfigjson" == str(by_kind["folder"].registry_config)
    assert str(module.ca_file).endswith("/ca.crt") and module.ca_file is not None
    fetch = next(c for c in pod["initContainers"] if c["name"] == "fetch")
    runtime = next(c for c in pod["containers"] if c["name"] == "runtime")
    assert {"name": secret_volume["name"], "mountPath": mount, "readOnly": True} in fetch["volumeMounts"]
    assert mount not in {m["mountPath"] for m in runtime["volumeMounts"]}, "the runtime never sees the registry login"
    # the namespace's policy applies to both; the worker's own to its module only
    assert [(p.origin, p.required) for p in module.policies] == [(NAMESPACE_POLICY, True), (SPEC_POLICY, True)]
    assert [p.origin for p in by_kind["folder"].policies] == [NAMESPACE_POLICY]
    assert str(module.policies[0].keys[0]) == f"/etc/wasminfer/{inline_key_name(ns_key)}"
    assert r.config_map["data"][inline_key_name(ns_key)] == ns_key, "the namespace's key travels in the pod's ConfigMap"
    assert str(module.policies[1].keys[0]).endswith("/cosign.pub")
    runtime_cfg = parse_runtime_config(yaml.safe_load(r.config_map["data"]["runtime.yaml"]), "rendered")
    assert runtime_cfg.models[0].folder == Path("/var/lib/wasminfer/models/mobilenet") and runtime_cfg.models[0].files == []
    assert runtime_cfg.workers[0].module == Path("/var/lib/wasminfer/modules/hello.wasm")


def test_a_new_digest_rolls_the_pods_and_the_same_digest_does_not(cfg: OperatorConfig) -> None:
    model = NamedModel("m", api.InferenceModelSpec.model_validate(model_spec(format="onnx", source=oci(MODEL_REF))))
    spec = api.WasmWorkerSpec.model_validate(worker_spec(module=oci(MODULE_REF), models=["m"]))
    hashes = [render_worker(REF, pin_source(spec, f"{MODULE_REF}@{d}"), [model], "cpu", cfg).config_hash
              for d in (DIGEST, DIGEST, "sha256:" + "ef" * 32)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_file_signatures_reach_the_fetch_plan(cfg: OperatorConfig) -> None:
    signed = {"https": {"files": [{"url": "https://m.example.com/hello.wasm", "sha256": SHA, "signature": "MEUCIQ=="}]}}
    model = NamedModel("m", api.InferenceModelSpec.model_validate(model_spec(
        format="onnx", source={"configMap": {"name": "w", "files": [{"key": "m.onnx", "signature": "MEQCIA=="}]}},
        signatures={"keys": [{"name": "k", "key": "a.pub"}], "required": False},
    )))  # fmt: skip
    plan = plan_of(render(cfg, model, module=signed))
    by_name = {f.label: f for f in plan.files}
    assert by_name["hello.wasm"].signature == "MEUCIQ==" and by_name["hello.wasm"].policies == [], "no policy: nothing asked"
    assert by_name["m.onnx"].signature == "MEQCIA==" and [(p.origin, p.required) for p in by_name["m.onnx"].policies] == [(SPEC_POLICY, False)]


def test_a_keyless_policy_reaches_the_fetch_step_with_its_trusted_root_mounted(cfg: OperatorConfig) -> None:
    bundle = "eyJtZWRpYVR5cGUiOiAiYXBwbGljYXRpb24vdm5kLmRldi5zaWdzdG9yZS5idW5kbGUudjAuMytqc29uIn0="
    module = {"pvc": {"claimName": "files", "files": [{"path": "w.wasm", "signature": bundle}]}}
    keyless = {"sigstore": {"trustedRoot": {"name": "sigstore", "key": "trusted_root.json"},
                            "identities": [{"identity": "release@example.com", "issuer": "https://accounts.example.com"}]}}
    spec = api.WasmWorkerSpec.model_validate(worker_spec(module=module, signatures=keyless))
    r = render_worker(REF, spec, [], "cpu", cfg)
    (step,) = plan_of(r).files
    (policy,) = step.policies
    assert step.signature == bundle and policy.keys == [] and policy.origin == SPEC_POLICY
    assert str(policy.trusted_root).endswith("/trusted_root.json")
    assert [(i.identity, i.issuer) for i in policy.identities] == [("release@example.com", "https://accounts.example.com")]
    volume = next(v for v in r.deployment["spec"]["template"]["spec"]["volumes"] if v.get("configMap", {}).get("name") == "sigstore")
    assert str(policy.trusted_root) == f"/var/run/wasminfer/sources/{volume['name']}/trusted_root.json"


@pytest.mark.parametrize(("spec", "message"), [
    (model_spec(source=oci("registry.example.com/models/m")), "String should match pattern"),
    (model_spec(source=oci("models/m:v1")), "String should match pattern"),
    (model_spec(source=oci(MODEL_REF, layer=DIGEST)), "oci.layer chooses a module's Wasm layer"),
    (model_spec(source={**oci(MODEL_REF), "https": {"files": [{"url": "https://x/m.xml", "sha256": SHA}]}}), "set exactly one of"),
    (model_spec(source=oci(MODEL_REF), signatures={"keys": []}), "set keys, sigstore or both"),
])  # fmt: skip
def test_bad_oci_sources_and_policies_are_refused_with_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        api.InferenceModelSpec.model_validate(spec)


def test_a_keyless_namespace_policy_travels_in_the_pods_configmap(cfg: OperatorConfig) -> None:
    root = json.dumps({"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": []})
    identity = {"identity": "release@example.com", "issuer": "https://accounts.example.com"}
    cfg = parse_operator_config({"signatures": {"*": {"sigstore": {"trustedRoot": root, "identities": [identity]}}}}, "test")
    module = {"pvc": {"claimName": "files", "files": [{"path": "w.wasm", "signature": "eyJ9"}]}}
    r = render_worker(REF, api.WasmWorkerSpec.model_validate(worker_spec(module=module)), [], "cpu", cfg)
    (policy,) = plan_of(r).files[0].policies
    assert policy.origin == NAMESPACE_POLICY and policy.keys == [] and policy.identities[0].identity == "release@example.com"
    assert policy.trusted_root is not None and r.config_map["data"][policy.trusted_root.name] == root
    with pytest.raises(Exception, match="trustedRoot is not a Sigstore trusted root"):
        parse_operator_config({"signatures": {"*": {"sigstore": {"trustedRoot": "{}", "identities": [identity]}}}}, "test")
    with pytest.raises(Exception, match="set keys, sigstore or both"):
        parse_operator_config({"signatures": {"*": {"required": True}}}, "test")


def test_a_namespace_policy_with_a_key_that_is_not_pem_is_refused() -> None:
    with pytest.raises(Exception, match=r"keys\[0\] is not a PEM public key"):
        parse_operator_config({"signatures": {"*": {"keys": ["not a key"]}}}, "operator.yaml")
    cfg = parse_operator_config({"signatures": {"*": {"keys": [pem()], "required": False}}}, "operator.yaml")
    assert cfg.signatures_for("anywhere") is not None and cfg.signatures_for("anywhere").required is False  # type: ignore[union-attr]
