"""The chart on the real control plane: `helm install` creates everything, and the operator's
scenarios pass when it runs with nothing but the chart's RBAC (as the chart's ServiceAccount).
Taking one permission away makes the scenario fail with the API server's Forbidden message."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import Release, condition, install, log_text, operator_as, wait_condition
from kube import Cluster
from operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
CPU_EXAMPLE = ROOT / "examples" / "kubernetes" / "cpu.yaml"

pytestmark = pytest.mark.cluster


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    """A release that reconciles only the test's namespace (so tests never share an operator)."""
    rel = install(cluster, {"watchNamespaces": [namespace]})
    yield rel
    rel.uninstall()


def test_helm_install_creates_everything(cluster: Cluster) -> None:
    rel = install(cluster, wait=True)
    try:
        objs = rel.manifest()
        kinds = sorted(o["kind"] for o in objs)
        assert kinds == sorted(
            ["ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget", "ClusterRole", "ClusterRole",
             "ClusterRoleBinding", "ClusterRoleBinding", "Role", "RoleBinding"]
        )
        for o in objs:
            ns = o["metadata"].get("namespace")
            assert cluster.exists(f"{o['kind'].lower()}/{o['metadata']['name']}", namespace=ns), o["metadata"]
        for crd in ("inferencemodels.wasminfer.dev", "wasmworkers.wasminfer.dev", "modelpools.wasminfer.dev"):
            cluster.wait(f"crd/{crd}", "Established", timeout=30)
        dep = cluster.get_json(f"deployment/{rel.fullname}", namespace=rel.namespace)
        assert dep["status"].get("readyReplicas") == 2, dep["status"]
        assert json.loads(cluster.helm("status", rel.name, "-n", rel.namespace, "-o", "json").stdout)["info"]["status"] == "deployed"

        # What the ServiceAccount may do, asked of the API server's authorizer.
        assert rel.can_i("list", "wasmworkers.wasminfer.dev")
        assert rel.can_i("patch", "wasmworkers.wasminfer.dev", namespace="default") is False  # never the spec
        assert rel.can_i("patch", "wasmworkers.wasminfer.dev", namespace="default", subresource="status")
        assert rel.can_i("patch", "deployments.apps", namespace="default")
        assert rel.can_i("create", "events", namespace="default")
        assert rel.can_i("update", f"leases.coordination.k8s.io/{rel.fullname}", namespace=rel.namespace)
        # delete: only the kinds it renders (a model's model servers and a pool's replicas go with their spec).
        assert rel.can_i("delete", "statefulsets.apps", namespace="default")
        # A Secret by name only: the pull Secret an OCI source names; never a list of them.
        assert rel.can_i("get", "secrets", namespace="default")
        for verb, resource in [("delete", "pods"), ("list", "secrets"), ("watch", "secrets"), ("create", "pods"),
                               ("update", "deployments.apps"), ("list", "namespaces"), ("create", "clusterroles")]:
            assert rel.can_i(verb, resource) is False, f"the operator may {verb} {resource}"
        assert rel.can_i("update", "leases.coordination.k8s.io/another-lease", namespace=rel.namespace) is False
    finally:
        rel.uninstall()
    for o in objs:
        if o["kind"].startswith("Cluster"):
            assert not cluster.exists(f"{o['kind'].lower()}/{o['metadata']['name']}"), f"{o['kind']} left behind"


def _ready(cluster: Cluster, op: OperatorProcess, resource: str, namespace: str) -> dict[str, Any]:
    return wait_condition(cluster, op, resource, namespace, "Ready", "True")


def test_operator_scenarios_pass_as_the_chart_service_account(
    cluster: Cluster, namespace: str, release: Release, tmp_path: Path
) -> None:
    with operator_as(release, [namespace], tmp_path) as op:
        # A model fetched over HTTPS and a worker using it (watch streams, apply, status, events).
        cluster.kubectl("apply", "-n", namespace, "-f", str(CPU_EXAMPLE))
        _ready(cluster, op, "inferencemodel/mobilenet", namespace)
        worker = _ready(cluster, op, "wasmworker/classify-cpu", namespace)
        assert worker["status"]["readyReplicas"] == 2
        for child in ("deployment/classify-cpu", "service/classify-cpu", "configmap/classify-cpu-runtime"):
            assert cluster.exists(child, namespace=namespace), child

        # Leader election went through the release's Lease.
        op.wait_leading()
        lease = cluster.get_json(f"lease/{release.fullname}", namespace=release.namespace)
        assert lease["spec"].get("holderIdentity"), lease["spec"]

        # kubectl scale through the /scale subresource; the Deployment follows.
        cluster.kubectl("scale", "-n", namespace, "wasmworker/classify-cpu", "--replicas=3")
        cluster.wait_until(
            lambda: cluster.get_json("deployment/classify-cpu", namespace=namespace)["spec"]["replicas"] == 3,
            timeout=60, what="the Deployment scaled to 3",
        )

        # A model read from a ConfigMap (configmaps get) and one on a claim (persistentvolumeclaims get).
        payload = "not really a model, but bytes with a known digest"
        cluster.kubectl("create", "configmap", "tiny-model", "-n", namespace, f"--from-literal=model.onnx={payload}")
        digest = hashlib.sha256(payload.encode()).hexdigest()
        models = [
            {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "from-configmap"},
             "spec": {"format": "onnx", "source": {"configMap": {"name": "tiny-model", "files": [{"key": "model.onnx", "sha256": digest}]}}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}},
            {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "from-claim"},
             "spec": {"format": "onnx", "source": {"pvc": {"claimName": "models", "files": [{"path": "m/model.onnx"}]}}}},
        ]
        cluster.apply(yaml.safe_dump_all(models), namespace)
        cm_model = _ready(cluster, op, "inferencemodel/from-configmap", namespace)
        assert (condition(cm_model, "Ready") or {}).get("reason") == "SourceResolved", cm_model["status"]
        _ready(cluster, op, "inferencemodel/from-claim", namespace)

        # A worker waiting for a model that does not exist yet recovers when it appears.
        late_worker = {
            "apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": "late"},
            "spec": {"module": {"configMap": {"name": "tiny-model", "files": [{"key": "model.onnx"}]}},
                     "route": "/late", "models": ["late-model"]},
        }
        cluster.apply(json.dumps(late_worker), namespace)
        wait_condition(cluster, op, "wasmworker/late", namespace, "ModelsReady", "False", "ModelNotFound")
        late_model = {**models[0], "metadata": {"name": "late-model"}}
        cluster.apply(json.dumps(late_model), namespace)
        _ready(cluster, op, "wasmworker/late", namespace)

        # Events reached the API (events create).
        events = cluster.get_json("events", namespace=namespace)["items"]
        assert [e for e in events if e["involvedObject"]["kind"] == "WasmWorker" and e.get("reportingComponent") == "wasminfer-operator"], events

        # Deleting the worker removes its children (ownerReferences, garbage collection).
        cluster.kubectl("delete", "-n", namespace, "wasmworker/classify-cpu", "--wait=true", "--timeout=60s")
        cluster.wait_until(
            lambda: not cluster.exists("deployment/classify-cpu", namespace=namespace) and not cluster.exists("configmap/classify-cpu-runtime", namespace=namespace),
            timeout=60, what="the children of the deleted worker to go",
        )
        assert op.alive(), op.tail()
        log = log_text(op)
        for word in ("forbidden", "Forbidden", "Not enough permissions"):
            assert word not in log, f"the operator hit a permission problem:\n{op.tail(80)}"


@pytest.mark.parametrize("verb", ["patch", "create"])
def test_a_missing_permission_fails_with_the_forbidden_message(
    cluster: Cluster, namespace: str, release: Release, tmp_path: Path, verb: str
) -> None:
    """Server-side apply needs patch, and create for an object that does not exist yet: take one
    away and the worker reports the API server's refusal."""
    role = cluster.get_json(f"clusterrole/{release.fullname}-workloads")
    rules = role["rules"]
    (index,) = [i for i, r in enumerate(rules) if r["resources"] == ["deployments"]]
    verbs = [v for v in rules[index]["verbs"] if v != verb]
    patch = [{"op": "replace", "path": f"/rules/{index}/verbs", "value": verbs}]
    cluster.kubectl("patch", f"clusterrole/{release.fullname}-workloads", "--type=json", "-p", json.dumps(patch))
    assert release.can_i(verb, "deployments.apps", namespace=namespace) is False

    with operator_as(release, [namespace], tmp_path) as op:
        cluster.kubectl("apply", "-n", namespace, "-f", str(CPU_EXAMPLE))
        worker = wait_condition(cluster, op, "wasmworker/classify-cpu", namespace, "Degraded", "True", "ApplyFailed")
    degraded = condition(worker, "Degraded")
    assert degraded is not None
    forbidden = (
        f'deployments.apps "classify-cpu" is forbidden: User "{release.user}" cannot {verb} resource "deployments" '
        f'in API group "apps" in the namespace "{namespace}"'
    )
    assert forbidden in degraded["message"], degraded
    ready = condition(worker, "Ready")
    assert ready is not None and ready["status"] == "False" and forbidden in ready["message"]
