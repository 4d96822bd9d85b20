"""Argo CD health checks on objects the real operator wrote, on the real API server.

The operator runs as the chart's ServiceAccount; the test drives InferenceModels and WasmWorkers
into Healthy, Progressing and Degraded states, saves each object as Argo CD would read it into
`<cluster log dir>/argocd-status/` (and into tests/delivery/fixtures/ with
WASMINFER_UPDATE_FIXTURES=1), and runs the Lua checks on it with a Lua 5.1 interpreter. A second
test syncs the GitOps example wave by wave, as Argo CD does, moving to the workers only once the
checks call every model Healthy."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from chart import Release, install, operator_as
from kube import Cluster
from operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "delivery" / "fixtures"
GITOPS = ROOT / "examples" / "gitops" / "inference"
CPU_EXAMPLE = ROOT / "examples" / "kubernetes" / "cpu.yaml"

pytestmark = pytest.mark.cluster


def _lua_module() -> ModuleType:
    """tests/delivery/argocd_lua.py: the same runner the unit tests use."""
    path = ROOT / "tests" / "delivery" / "argocd_lua.py"
    spec = importlib.util.spec_from_file_location("argocd_lua", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("argocd_lua", module)
    spec.loader.exec_module(module)
    return module


lua = _lua_module()


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    rel = install(cluster, {"watchNamespaces": [namespace]})
    yield rel
    rel.uninstall()


@pytest.fixture
def operator(release: Release, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    with operator_as(release, [namespace], tmp_path) as op:
        op.wait_leading()
        yield op


def _model(name: str, source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": name},
            "spec": {"format": "onnx", "source": source, **spec}}


def _worker(name: str, models: list[str], **spec: Any) -> dict[str, Any]:
    module = {"https": {"files": [{"url": "https://models.example.com/workers/classify.wasm", "sha256": "0" * 64}]}}
    return {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": name},
            "spec": {"module": module, "route": f"/{name}", "models": models, **spec}}


def _https(name: str) -> dict[str, Any]:
    return {"https": {"files": [{"url": f"https://models.example.com/{name}/model.onnx", "sha256": "1" * 64}]}}


class Capture:
    def __init__(self, cluster: Cluster, namespace: str, op: OperatorProcess) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.op = op
        self.dir = cluster.log_dir / "argocd-status"
        self.dir.mkdir(exist_ok=True)
        self.update = os.environ.get("WASMINFER_UPDATE_FIXTURES") == "1"
        self.checked: list[str] = []

    def when(self, resource: str, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.op.alive(), f"the operator exited:\n{self.op.tail()}"
            obj = self.cluster.get_json(resource, namespace=self.namespace)
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                return None
            return obj if predicate(obj) else None

        try:
            return self.cluster.wait_until(check, timeout=90, what=f"{resource}: {what}")
        except AssertionError as err:
            now = self.cluster.get_json(resource, namespace=self.namespace).get("status")
            raise AssertionError(f"{err}\nstatus: {json.dumps(now, indent=1)}\noperator log:\n{self.op.tail()}") from None

    def save_and_check(self, obj: dict[str, Any], state: str, detail: str) -> None:
        fixture = lua.as_fixture(obj)
        name = lua.fixture_name(fixture, state, detail)
        text = yaml.safe_dump(fixture, sort_keys=False)
        (self.dir / name).write_text(text)
        if self.update:
            (FIXTURES / name).write_text(text)
        got, want = lua.health_of(fixture), lua.expected_health(fixture, state)
        assert got == want, f"{name}: the health check says {got}, expected {want}"
        self.checked.append(name)


def _cond(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return lua.condition(obj, kind) or {}


def test_health_checks_on_objects_written_by_the_operator(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cap = Capture(cluster, namespace, operator)
    payload = "model bytes"
    cluster.kubectl("create", "configmap", "weights", "-n", namespace, f"--from-literal=model.onnx={payload}")
    cluster.apply(yaml.safe_dump_all([
        _model("https-model", _https("https-model")),
        _model("missing-configmap", {"configMap": {"name": "not-there", "files": [{"key": "model.onnx"}]}}),
        _model("wrong-digest", {"configMap": {"name": "weights", "files": [{"key": "model.onnx", "sha256": "2" * 64}]}}),
        _model("intel-gpu-model", _https("intel"), device="GPU", backend="openvino"),
        _model("nvidia-gpu-model", _https("nvidia"), device="GPU", backend="onnxruntime"),
    ]), namespace)

    def ready(reason: str | None = None, status: str = "True") -> Callable[[dict[str, Any]], bool]:
        return lambda o: _cond(o, "Ready").get("status") == status and (reason is None or _cond(o, "Ready").get("reason") == reason)

    cap.save_and_check(cap.when("inferencemodel/https-model", ready("SourceDeclared"), "Ready"), "healthy", "https-source")
    cap.save_and_check(cap.when("inferencemodel/missing-configmap", ready("SourceNotFound", "False"), "SourceNotFound"),
                       "progressing", "source-not-found")
    cap.save_and_check(cap.when("inferencemodel/wrong-digest", ready("ChecksumMismatch", "False"), "ChecksumMismatch"),
                       "degraded", "checksum-mismatch")

    # The model appears: the same object turns Healthy.
    cluster.kubectl("create", "configmap", "not-there", "-n", namespace, f"--from-literal=model.onnx={payload}")
    cap.when("inferencemodel/missing-configmap", ready("SourceResolved"), "Ready once the ConfigMap exists")

    # Workers.
    cluster.kubectl("create", "deployment", "taken", "-n", namespace, "--image=registry.example/someone-else:1")
    cluster.apply(yaml.safe_dump_all([
        _worker("serving", ["https-model"], replicas=1),
        _worker("waiting", ["model-that-comes-later"]),
        _worker("taken", ["https-model"]),
        _worker("conflicted", ["intel-gpu-model", "nvidia-gpu-model"]),
        _worker("crowded", [], replicas=3, placement={"profile": "intel-npu"}),  # one NPU in the fleet
    ]), namespace)
    cap.save_and_check(cap.when("wasmworker/serving", ready("Available"), "Ready"), "healthy", "available")
    cap.save_and_check(
        cap.when("wasmworker/waiting", lambda o: _cond(o, "ModelsReady").get("reason") == "ModelNotFound", "ModelNotFound"),
        "progressing", "model-not-found",
    )
    cap.save_and_check(
        cap.when("wasmworker/taken", lambda o: _cond(o, "Degraded").get("reason") == "ChildConflict", "ChildConflict"),
        "degraded", "child-conflict",
    )
    cap.save_and_check(
        cap.when("wasmworker/conflicted", lambda o: _cond(o, "Scheduled").get("reason") == "ConflictingModels", "ConflictingModels"),
        "degraded", "conflicting-models",
    )
    crowded = cap.when(
        "wasmworker/crowded",
        lambda o: _cond(o, "Ready").get("status") == "False" and _cond(o, "Degraded").get("status") == "False"
        and _cond(o, "Ready").get("reason") in ("RollingOut", "ReplicasNotReady", "Unschedulable")
        and cluster.get_json("deployment/crowded", namespace=namespace).get("status", {}).get("availableReplicas", 0) >= 1,
        "some pods placed, the others waiting for an NPU",
    )
    cap.save_and_check(crowded, "progressing", "waiting-for-devices")

    # The late model arrives and the waiting worker recovers by itself.
    cluster.apply(json.dumps(_model("model-that-comes-later", _https("later"))), namespace)
    cap.when("wasmworker/waiting", ready("Available"), "Ready after its model appeared")

    assert len(cap.checked) == 8, cap.checked


def _sync_wave(cluster: Cluster, namespace: str, op: OperatorProcess, objs: list[dict[str, Any]]) -> None:
    """Apply one wave and wait, as Argo CD does, until the health checks call all of it Healthy."""
    cluster.apply(yaml.safe_dump_all(objs), namespace)

    def healthy() -> list[str] | None:
        assert op.alive(), op.tail()
        states = []
        for o in objs:
            live = cluster.get_json(f"{o['kind'].lower()}/{o['metadata']['name']}", namespace=namespace)
            h = lua.health_of(lua.as_fixture(live))
            states.append(f"{o['kind']}/{o['metadata']['name']}: {h.status} ({h.message})")
            if h.status != "Healthy":
                return None
        return states

    try:
        cluster.wait_until(healthy, timeout=120, what="the wave to be Healthy")
    except AssertionError as err:
        raise AssertionError(f"{err}\noperator log:\n{op.tail()}") from None


def test_gitops_example_syncs_models_then_workers(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    objs = [d for f in sorted(GITOPS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    # The API server accepts every object as written (schema and CEL rules).
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(GITOPS))
    waves: dict[int, list[dict[str, Any]]] = {}
    for o in objs:
        waves.setdefault(int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]), []).append(o)
    assert sorted(waves) == [0, 1]
    assert {o["kind"] for o in waves[0]} == {"InferenceModel"} and {o["kind"] for o in waves[1]} == {"WasmWorker"}
    _sync_wave(cluster, namespace, operator, waves[0])
    assert not cluster.get_json("wasmworkers", namespace=namespace)["items"], "workers were created before wave 1"
    _sync_wave(cluster, namespace, operator, waves[1])
    # The NVIDIA model's worker followed its model to the GPU node.
    resnet = cluster.get_json("wasmworker/resnet", namespace=namespace)
    assert resnet["status"]["profile"] == "nvidia-gpu", resnet["status"]

