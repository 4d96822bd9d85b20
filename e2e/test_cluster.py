"""The test control plane is a real cluster: the scheduler honours extended resources and taints,
the API server runs CEL validation, the controller manager collects garbage, and the node fleet
is there with its capacities. GPUs are kwok-simulated nodes, hence `_mocked_gpu` in test names."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from kube import Cluster, KubectlError

pytestmark = pytest.mark.cluster

FLEET = {
    "cpu-1": {"cpu": "16"},
    "cpu-2": {"cpu": "16"},
    "gpu-nvidia-1": {"nvidia.com/gpu": "8"},
    "gpu-intel-1": {"gpu.intel.com/i915": "2"},
    "npu-intel-1": {"npu.intel.com/accel": "1"},
}


def deployment(name: str, resources: dict[str, int], tolerate_nvidia: bool) -> str:
    toleration = (
        "      tolerations:\n"
        "        - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
        if tolerate_nvidia
        else ""
    )
    limits = ", ".join(f"{k}: {v}" for k, v in resources.items())
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{toleration}      containers:
        - name: worker
          image: registry.invalid/wasminfer-runtime:test   # kwok runs no containers: never pulled
          resources: {{limits: {{{limits}}}}}
"""


def only_pod(cluster: Cluster, namespace: str, app: str) -> dict[str, Any]:
    def one() -> dict[str, Any] | None:
        pods = cluster.get_json("pods", "-l", f"app={app}", namespace=namespace)
        items: list[dict[str, Any]] = pods["items"]
        return items[0] if len(items) == 1 else None

    return cluster.wait_until(one, timeout=60, what=f"the pod of deployment {app}")


def unschedulable_message(cluster: Cluster, namespace: str, app: str) -> str:
    """Waits for the scheduler's verdict on the deployment's pod and returns why it cannot place it."""

    def verdict() -> str | None:
        pod = only_pod(cluster, namespace, app)
        for condition in pod.get("status", {}).get("conditions", []):
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                assert condition["reason"] == "Unschedulable", condition
                message: str = condition["message"]
                return message
        assert "nodeName" not in pod["spec"], f"pod was scheduled onto {pod['spec'].get('nodeName')}"
        return None

    return cluster.wait_until(verdict, timeout=60, what=f"the scheduler to reject the pod of {app}")


def pinned_versions() -> dict[str, str]:
    lines = (Path(__file__).parent / "cluster" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_binaries_on_path_are_the_pinned_versions(cluster: Cluster) -> None:
    pinned = pinned_versions()
    path = cluster.env["PATH"]
    assert shutil.which("kubectl", path=path) == str(cluster.bin_dir / "kubectl")
    assert shutil.which("helm", path=path) == str(cluster.bin_dir / "helm")
    versions = json.loads(
        subprocess.run(
            ["kubectl", "version", "-o", "json"], env=cluster.env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert versions["clientVersion"]["gitVersion"] == pinned["K8S_VERSION"]
    assert versions["serverVersion"]["gitVersion"] == pinned["K8S_VERSION"]
    helm = subprocess.run(
        ["helm", "version", "--short"], env=cluster.env, capture_output=True, text=True, check=False
    )
    assert helm.stdout.startswith(pinned["HELM_VERSION"]), helm


def test_kubectl_get_nodes_shows_the_fleet_with_capacities(cluster: Cluster) -> None:
    table = cluster.kubectl("get", "nodes").stdout
    for name in FLEET:
        row = next((line for line in table.splitlines() if line.split()[0] == name), None)
        assert row is not None, f"{name} missing from `kubectl get nodes`:\n{table}"
        assert row.split()[1] == "Ready", row

    columns = (
        "NAME:.metadata.name,CPU:.status.capacity.cpu,NVIDIA:.status.capacity.nvidia\\.com/gpu,"
        "INTEL_GPU:.status.capacity.gpu\\.intel\\.com/i915,NPU:.status.capacity.npu\\.intel\\.com/accel"
    )
    wide = cluster.kubectl("get", "nodes", "-o", f"custom-columns={columns}").stdout
    rows = {line.split()[0]: line.split() for line in wide.splitlines()[1:]}
    assert rows["gpu-nvidia-1"][2] == "8", wide
    assert rows["gpu-intel-1"][3] == "2", wide
    assert rows["npu-intel-1"][4] == "1", wide
    assert rows["cpu-1"][2:] == ["<none>", "<none>", "<none>"], wide

    nodes = {n["metadata"]["name"]: n for n in cluster.nodes()}
    for name, capacity in FLEET.items():
        for resource, amount in capacity.items():
            assert nodes[name]["status"]["allocatable"][resource] == amount, (name, resource)
    nvidia = nodes["gpu-nvidia-1"]
    assert nvidia["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert nvidia["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert nodes["gpu-intel-1"]["metadata"]["labels"]["intel.feature.node.kubernetes.io/gpu"] == "true"
    assert nodes["npu-intel-1"]["metadata"]["labels"]["intel.feature.node.kubernetes.io/npu"] == "true"


def test_gpu_pod_with_toleration_runs_on_the_nvidia_node_mocked_gpu(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("cuda-worker", {"nvidia.com/gpu": 1}, tolerate_nvidia=True), namespace)
    cluster.wait("deployment/cuda-worker", "Available", timeout=90, namespace=namespace)
    pod = only_pod(cluster, namespace, "cuda-worker")
    assert pod["spec"]["nodeName"] == "gpu-nvidia-1"
    assert pod["status"]["phase"] == "Running"


def test_gpu_pod_without_toleration_stays_pending_unschedulable_mocked_gpu(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(deployment("untolerated", {"nvidia.com/gpu": 1}, tolerate_nvidia=False), namespace)
    message = unschedulable_message(cluster, namespace, "untolerated")
    assert "untolerated taint" in message and "nvidia.com/gpu" in message, message
    assert only_pod(cluster, namespace, "untolerated")["status"]["phase"] == "Pending"


def test_more_gpus_than_exist_stay_pending_mocked_gpu(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("greedy", {"nvidia.com/gpu": 9}, tolerate_nvidia=True), namespace)
    message = unschedulable_message(cluster, namespace, "greedy")
    assert "Insufficient nvidia.com/gpu" in message, message
    assert only_pod(cluster, namespace, "greedy")["status"]["phase"] == "Pending"


@pytest.mark.parametrize(
    ("resource", "node"),
    [("gpu.intel.com/i915", "gpu-intel-1"), ("npu.intel.com/accel", "npu-intel-1")],
)
def test_intel_accelerator_pod_lands_on_its_node_mocked_gpu(
    cluster: Cluster, namespace: str, resource: str, node: str
) -> None:
    cluster.apply(deployment("intel-worker", {resource: 1}, tolerate_nvidia=False), namespace)
    cluster.wait("deployment/intel-worker", "Available", timeout=90, namespace=namespace)
    assert only_pod(cluster, namespace, "intel-worker")["spec"]["nodeName"] == node


def test_crd_cel_rule_rejects_bad_object_with_its_message(cluster: Cluster, namespace: str) -> None:
    group = f"e2e{uuid.uuid4().hex[:8]}.wasminfer.dev"
    crd = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: scalers.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: scalers, singular: scaler, kind: Scaler}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                minReplicas: {{type: integer}}
                maxReplicas: {{type: integer}}
              x-kubernetes-validations:
                - rule: self.minReplicas <= self.maxReplicas
                  message: minReplicas must not exceed maxReplicas
"""
    cluster.apply(crd)
    try:
        cluster.wait(f"crd/scalers.{group}", "Established", timeout=60)

        def scaler(name: str, low: int, high: int) -> str:
            return (
                f"apiVersion: {group}/v1\nkind: Scaler\nmetadata: {{name: {name}}}\n"
                f"spec: {{minReplicas: {low}, maxReplicas: {high}}}\n"
            )

        cluster.apply(scaler("good", 1, 3), namespace)
        with pytest.raises(KubectlError) as rejected:
            cluster.apply(scaler("bad", 5, 2), namespace)
        assert "minReplicas must not exceed maxReplicas" in rejected.value.stderr
        assert cluster.exists(f"scalers.{group}", "good", namespace=namespace)
        assert not cluster.exists(f"scalers.{group}", "bad", namespace=namespace)
    finally:
        cluster.kubectl("delete", "crd", f"scalers.{group}", "--wait=false")


def test_deleting_a_namespace_removes_its_objects(cluster: Cluster) -> None:
    doomed = cluster.new_namespace("doomed")
    cluster.kubectl("create", "configmap", "settings", "--from-literal=a=1", "-n", doomed)
    cluster.apply(deployment("cpu-worker", {"cpu": 1}, tolerate_nvidia=False), doomed)
    cluster.wait("deployment/cpu-worker", "Available", timeout=90, namespace=doomed)

    cluster.kubectl("delete", "namespace", doomed, "--wait=false")
    # The namespace disappears only after the namespace controller has deleted everything in it.
    cluster.wait(f"namespace/{doomed}", "delete", timeout=120)
    for kind in ("configmaps", "deployments", "replicasets", "pods"):
        left = cluster.get_json(kind, "--all-namespaces", "--field-selector", f"metadata.namespace={doomed}")
        assert left["items"] == [], f"{kind} left behind in deleted namespace {doomed}"


def test_deleting_an_owner_removes_its_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = cluster.get_json("configmap", "owner", namespace=namespace)["metadata"]["uid"]
    cluster.apply(
        f"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
    - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner_uid}}}
data: {{a: "1"}}
""",
        namespace,
    )
    cluster.kubectl("create", "configmap", "bystander", "-n", namespace)

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    cluster.wait_until(
        lambda: not cluster.exists("configmap", "dependent", namespace=namespace),
        timeout=60,
        what="the garbage collector to delete the dependent ConfigMap",
    )
    assert cluster.exists("configmap", "bystander", namespace=namespace)
