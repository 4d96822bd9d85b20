"""Generate the CustomResourceDefinitions in `crds/` from the pydantic API types.

`python -m wasminfer_operator.crdgen` rewrites `crds/*.yaml`; `--check` only compares (a test does too).
Pydantic's JSON Schema is made *structural* as the API server requires: `$ref`s inlined, `Optional`
unions flattened, titles dropped, numeric exclusive bounds turned into OpenAPI v3.0 booleans.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from wasminfer_operator import api
from wasminfer_operator.names import PART_OF_LABEL

HEADER = "# Generated from operator/wasminfer_operator/api.py by `python -m wasminfer_operator.crdgen`. Do not edit.\n"
REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"

_DROP = {"title", "additionalProperties"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node of pydantic's output, rewritten as a structural OpenAPI v3 node."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = _structural(target, defs)
        merged.update(_structural(node, defs))
        return _ordered(merged)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) < len(node["anyOf"]):  # Optional[X]: absence already means "unset"
            del node["anyOf"]
            if node.get("default", 0) is None:
                del node["default"]
            if len(options) == 1:
                inner = _structural(options[0], defs)
                inner.update(_structural(node, defs))
                return _ordered(inner)
            node["anyOf"] = options
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and value is None:
            continue
        if key == "format" and value not in ("date-time", "int32", "int64", "byte"):
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if "properties" in out:
        out.setdefault("type", "object")
    return _ordered(out)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """description and type first, then the rest alphabetically: stable, readable YAML."""
    head = [k for k in ("description", "type") if k in node]
    return {k: node[k] for k in head + sorted(k for k in node if k not in head)}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _condition_column(name: str, field: str, description: str) -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="Ready")].{field}', "description": description}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

NAME_RULE = {
    "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting with a letter) of at most 63 characters",
}

SERVING_NAME_RULE = {
    "rule": f"!has(self.spec.serving) || self.metadata.name.size() <= {api.SERVING_NAME_MAX}",
    "message": api.SERVING_NAME_MESSAGE,
    "fieldPath": ".spec.serving",
}


def crd(
    *,
    kind: str,
    plural: str,
    short: str,
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    spec_replicas: str,
    root_rules: tuple[dict[str, str], ...] = (),
) -> dict[str, Any]:
    """`spec_replicas`: the field the /scale subresource sets."""
    subresources: dict[str, Any] = {
        "status": {},
        "scale": {"specReplicasPath": spec_replicas, "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"},
    }
    root: dict[str, Any] = {
        "description": description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object: wasminfer.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind of the object: {kind}."},
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}},
            "spec": schema_of(spec),
            "status": schema_of(status),
        },
        "x-kubernetes-validations": [NAME_RULE, *root_rules],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}", "labels": {PART_OF_LABEL: "wasminfer"}},
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["wasminfer"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def inference_model_crd() -> dict[str, Any]:
    return crd(
        kind="InferenceModel",
        plural="inferencemodels",
        short="im",
        description="A named model (OpenVINO IR or ONNX) that WasmWorkers of the same namespace preload and share, or "
        "call on model servers of its own (spec.serving). Ready means its definition is valid and its source can be "
        "resolved (ConfigMap keys present and matching their sha256, claim present; https files are checked against "
        "their sha256 when pods fetch them), and with spec.serving that a model server has it loaded. The /scale "
        "subresource sets spec.serving.replicas.",
        spec=api.InferenceModelSpec,
        status=api.InferenceModelStatus,
        columns=[
            {"name": "Format", "type": "string", "jsonPath": ".spec.format"},
            {"name": "Backend", "type": "string", "jsonPath": ".status.backend"},
            {"name": "Device", "type": "string", "jsonPath": ".spec.device"},
            {"name": "Profile", "type": "string", "jsonPath": ".status.profile", "priority": 1},
            _condition_column("Ready", "status", "Whether the model can be used."),
            _condition_column("Reason", "reason", "Why the model is (not) ready."),
            {"name": "Workers", "type": "integer", "jsonPath": ".status.workerCount", "description": "WasmWorkers using the model."},
            {"name": "Serving", "type": "string", "jsonPath": ".status.readySummary", "description": "Ready/desired model-server pods."},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1, "description": "Model servers' address."},
            _AGE,
        ],
        spec_replicas=".spec.serving.replicas",
        root_rules=(SERVING_NAME_RULE,),
    )


def wasm_worker_crd() -> dict[str, Any]:
    return crd(
        kind="WasmWorker",
        plural="wasmworkers",
        short="ww",
        description="A WebAssembly worker (wws protocol) served by WasmInfer runtime pods on the device profile its models "
        "need, with the named InferenceModels it uses preloaded. The operator renders a Deployment, a Service and a "
        "ConfigMap holding the runtime configuration; status reports readiness, placement and the reasons.",
        spec=api.WasmWorkerSpec,
        status=api.WasmWorkerStatus,
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": ".status.readySummary", "description": "Ready/desired replicas."},
            {"name": "Models", "type": "string", "jsonPath": ".status.modelsSummary", "description": "Ready/named models."},
            {"name": "Profile", "type": "string", "jsonPath": ".status.profile", "description": "Device profile in use."},
            {"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "In-cluster URL of the route."},
            _condition_column("Reason", "reason", "Why the worker is (not) ready."),
            _AGE,
        ],
        spec_replicas=".spec.replicas",
    )


POOL_NAME_RULE = {"rule": f"self.metadata.name.size() <= {api.POOL_NAME_MAX}", "message": api.POOL_NAME_MESSAGE}


def model_pool_crd() -> dict[str, Any]:
    return crd(
        kind="ModelPool",
        plural="modelpools",
        short="mp",
        description="Model-server replicas shared by many InferenceModels of the namespace (those naming the pool in "
        "spec.pool): each model is loaded by spec.copies of the replicas, chosen by consistent hashing with bounded "
        "load, and WasmWorkers using a model call the replicas holding it. The operator renders a StatefulSet, a "
        "headless Service and a ConfigMap; status reports the replicas, the models and each replica's share.",
        spec=api.ModelPoolSpec,
        status=api.ModelPoolStatus,
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": ".status.readySummary", "description": "Ready/desired replicas."},
            {"name": "Models", "type": "integer", "jsonPath": ".status.modelCount", "description": "InferenceModels in the pool."},
            {"name": "Copies", "type": "integer", "jsonPath": ".spec.copies", "description": "Replicas holding each model."},
            {"name": "Profile", "type": "string", "jsonPath": ".status.profile", "description": "Device profile in use."},
            _condition_column("Reason", "reason", "Why the pool is (not) ready."),
            _AGE,
        ],
        spec_replicas=".spec.replicas",
        root_rules=(POOL_NAME_RULE,),
    )


def render_all() -> dict[str, str]:
    """File name -> YAML text of every generated CRD."""
    out = {}
    for doc in (inference_model_crd(), wasm_worker_crd(), model_pool_crd()):
        name = f"{doc['metadata']['name']}.yaml"
        out[name] = HEADER + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasminfer_operator.crdgen", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_CRDS, help="folder of the CRD YAML files (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.check and stale:
        print("out of date (run `python -m wasminfer_operator.crdgen`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
