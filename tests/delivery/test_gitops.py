"""The GitOps example: models in sync wave 0, workers in wave 1, Applications pointing at real paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wasminfer_operator.api import InferenceModelSpec, WasmWorkerSpec

from .conftest import REPO

GITOPS = REPO / "examples" / "gitops"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def inference_objects() -> list[dict[str, Any]]:
    return [d for f in sorted((GITOPS / "inference").glob("*.yaml")) for d in docs(f)]


def wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_models_sync_before_workers() -> None:
    objs = inference_objects()
    models = [o for o in objs if o["kind"] == "InferenceModel"]
    workers = [o for o in objs if o["kind"] == "WasmWorker"]
    assert models and workers
    assert {wave(m) for m in models} == {0}
    assert {wave(w) for w in workers} == {1}
    assert all("argocd.argoproj.io/sync-wave" in o["metadata"]["annotations"] for o in objs)


def test_example_objects_are_valid_and_workers_find_their_models() -> None:
    objs = inference_objects()
    names = {o["metadata"]["name"] for o in objs if o["kind"] == "InferenceModel"}
    for o in objs:
        spec_type = InferenceModelSpec if o["kind"] == "InferenceModel" else WasmWorkerSpec
        spec_type.model_validate(o["spec"])  # the operator's own parser (the e2e suite asks the API server too)
        if o["kind"] == "WasmWorker":
            assert set(o["spec"].get("models", [])) <= names, o["metadata"]["name"]


def test_applications_point_at_this_repository() -> None:
    apps = [d for f in sorted(GITOPS.glob("*.yaml")) for d in docs(f)]
    assert {a["kind"] for a in apps} == {"Application"}
    for app in apps:
        path = app["spec"]["source"]["path"]
        assert (REPO / path).is_dir(), f"{app['metadata']['name']}: {path} does not exist"
    operator = next(a for a in apps if a["spec"]["source"]["path"] == "charts/wasminfer")
    inference = next(a for a in apps if a["spec"]["source"]["path"] == "examples/gitops/inference")
    assert wave(operator) < wave(inference), "the operator (and its CRDs) must sync first"
