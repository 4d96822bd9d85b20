"""WasmInfer objects for end-to-end tests: the CRDs from crds/, and YAML for workers and models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chart
import yaml
from operator_process import REPO, OperatorProcess

from kube import Cluster

SHA = "ab" * 32  # kwok runs no containers, so nothing is ever downloaded


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("inferencemodels.wasminfer.dev", "wasmworkers.wasminfer.dev", "modelpools.wasminfer.dev"):
        cluster.wait(f"crd/{crd}", "Established", timeout=60)


def worker_yaml(name: str, models: list[str] | None = None, **spec: Any) -> str:
    body = {
        "apiVersion": "wasminfer.dev/v1alpha1",
        "kind": "WasmWorker",
        "metadata": {"name": name},
        "spec": {"module": {"https": {"files": [{"url": "https://example.com/w/hello.wasm", "sha256": SHA}]}}, "route": f"/{name}", "models": models or [], **spec},
    }
    return yaml.safe_dump(body)


def model_yaml(name: str, **spec: Any) -> str:
    src = {"https": {"files": [{"url": f"https://example.com/m/{name}.onnx", "sha256": SHA}]}}
    body = {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": name}, "spec": {"format": "onnx", "source": src, **spec}}
    return yaml.safe_dump(body)


# -- a device node and a CPU node of a module's own ---------------------------------------------


def device_and_cpu_nodes_yaml(accel_node: str, cpu_node: str, label: str, device: str) -> str:
    """Two kwok nodes tainted with `label`, so no other test's pods land on them (or get cordoned):
    one with a single `device`, one without."""
    def node(name: str, role: str, extra: str) -> str:
        return f"""apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake}}
  labels: {{kubernetes.io/hostname: {name}, {label}: {role}}}
spec:
  taints: [{{key: {label}, value: "true", effect: NoSchedule}}]
status:
  capacity: {{cpu: "16", memory: 32Gi, pods: "110"{extra}}}
  allocatable: {{cpu: "16", memory: 32Gi, pods: "110"{extra}}}
"""
    return node(accel_node, "accel", f', {device}: "1"') + "---\n" + node(cpu_node, "cpu", "")


def device_and_cpu_profiles_yaml(label: str, device: str) -> str:
    """Operator profiles `e2e-accel` (one `device` per pod) and `e2e-cpu`, each on its node of
    device_and_cpu_nodes_yaml."""
    return f"""profiles:
  e2e-accel:
    device: NPU
    backends: [openvino]
    resources: {{{device}: 1}}
    nodeSelector: {{{label}: accel}}
    tolerations: [{{key: {label}, operator: Exists, effect: NoSchedule}}]
    automatic: false
  e2e-cpu:
    device: CPU
    backends: [openvino]
    nodeSelector: {{{label}: cpu}}
    tolerations: [{{key: {label}, operator: Exists, effect: NoSchedule}}]
    automatic: false
"""


@contextlib.contextmanager
def own_nodes(cluster: Cluster, folder: Path, nodes_yaml: str) -> Iterator[list[str]]:
    path = folder / "nodes.yaml"
    path.write_text(nodes_yaml)
    names = cluster.add_nodes(path)
    try:
        yield names
    finally:
        cluster.kubectl("delete", "node", *names, "--wait=false", check=False)


@contextlib.contextmanager
def own_operator(cluster: Cluster, folder: Path, config_yaml: str, prefix: str, lease: str) -> Iterator[OperatorProcess]:
    """An operator of a module's own, on namespaces starting with `prefix`, with its own Lease."""
    install_crds(cluster)
    config = folder / "operator.yaml"
    config.write_text(config_yaml)
    op = OperatorProcess(cluster.kubeconfig, folder / "operator.log", namespaces=[f"{prefix}*"], config=config,
                         lease_name=lease, lease_namespace="default")
    with op:
        op.wait_leading()
        yield op
    print(f"operator log: {op.log_path}")


@contextlib.contextmanager
def chart_operator(cluster: Cluster, folder: Path, prefix: str, config_yaml: str | None = None, release_prefix: str | None = None,
                   ) -> Iterator[OperatorProcess]:
    """An operator of a module's own on namespaces starting with `prefix`, with exactly the Helm chart's
    RBAC: authenticated as the ServiceAccount of a release watching the same namespaces (a missing
    permission fails the module's tests as Forbidden)."""
    install_crds(cluster)
    config = None
    if config_yaml is not None:
        config = folder / "operator.yaml"
        config.write_text(config_yaml)
    extra = {"prefix": release_prefix} if release_prefix else {}
    release = chart.install(cluster, {"watchNamespaces": [f"{prefix}*"]}, **extra)
    op = OperatorProcess(
        release.token_kubeconfig(folder / "operator.kubeconfig"), folder / "operator.log", namespaces=[f"{prefix}*"],
        config=config, lease_name=release.fullname, lease_namespace=release.namespace,
    )
    try:
        with op:
            op.wait_leading()
            yield op
    finally:
        release.uninstall()
    print(f"operator log: {op.log_path}")


def let_models_go(cluster: Cluster, namespace: str) -> None:
    """Take the operator's finalizer off every model of the namespace: a test's own operator has
    stopped, and nothing else would let them go, so deleting the namespace would hang."""
    for model in cluster.get_json("inferencemodels", namespace=namespace)["items"]:
        cluster.kubectl("patch", "inferencemodel", model["metadata"]["name"], "-n", namespace, "--type=merge",
                        "-p", '{"metadata": {"finalizers": null}}', check=False)
