"""The Helm chart on the test control plane, and the operator running with exactly its RBAC.

`install` puts a release of charts/wasminfer on the cluster with the pinned helm. `operator_as` runs
`wasminfer-operator` out of cluster, authenticated as the release's ServiceAccount: a kubeconfig
carrying a token the API server issues for that ServiceAccount (TokenRequest, what a pod gets). The
Python clients (kubernetes, kopf) ignore a kubeconfig's `as:` impersonation field, so a token is how
the operator process gets the ServiceAccount's identity, and every request it makes is authorized
by the chart's Roles alone. A permission the chart lacks surfaces as the API server's Forbidden.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kube import Cluster
from operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "wasminfer"


@dataclass
class Release:
    cluster: Cluster
    name: str
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def fullname(self) -> str:
        return self.name if "wasminfer" in self.name else f"{self.name}-wasminfer"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def manifest(self) -> list[dict[str, Any]]:
        out = self.cluster.helm("get", "manifest", self.name, "-n", self.namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def can_i(self, verb: str, resource: str, namespace: str | None = None, subresource: str | None = None) -> bool:
        """`kubectl auth can-i` as the release's ServiceAccount (kubectl honours impersonation)."""
        ns = ["-n", namespace] if namespace else ["--all-namespaces"]
        sub = [f"--subresource={subresource}"] if subresource else []
        result = self.cluster.kubectl("auth", "can-i", verb, resource, *ns, *sub, f"--as={self.user}", check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {result.stdout}{result.stderr}"
        return answer == "yes"

    def token_kubeconfig(self, path: Path, hours: int = 2) -> Path:
        """A kubeconfig that authenticates as the release's ServiceAccount with a fresh token."""
        token = self.cluster.kubectl(
            "create", "token", self.service_account, "-n", self.namespace, f"--duration={hours}h"
        ).stdout.strip()
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
        server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": server}],
            "users": [{"name": self.user, "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "test", "user": self.user}}],
            "current-context": "operator",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "2m", check=False)
        self.cluster.delete_namespace(self.namespace)


def install(cluster: Cluster, values: dict[str, Any] | None = None, prefix: str = "wasminfer", wait: bool = False) -> Release:
    """A release in a namespace of its own (created by helm); with `wait`, helm waits until the
    operator's pods are ready."""
    suffix = uuid.uuid4().hex[:6]
    release = Release(cluster, f"{prefix}-{suffix}", f"{prefix}-system-{suffix}", values or {})
    values_file = cluster.log_dir / f"values-{release.name}.yaml"
    values_file.write_text(yaml.safe_dump(release.values))
    cluster.helm(
        "install", release.name, str(CHART), "--namespace", release.namespace, "--create-namespace",
        "--values", str(values_file), *(("--wait", "--timeout", "3m") if wait else ()),
    )
    return release


def operator_as(release: Release, namespaces: list[str], workdir: Path) -> OperatorProcess:
    """`wasminfer-operator` out of cluster (not started yet), authenticated as the release's
    ServiceAccount, with the configuration the chart rendered, watching `namespaces` and electing
    its leader through the release's Lease."""
    kubeconfig = release.token_kubeconfig(workdir / f"{release.name}.kubeconfig")
    cm = release.cluster.get_json(f"configmap/{release.fullname}-config", namespace=release.namespace)
    config = workdir / f"{release.name}-operator.yaml"
    config.write_text(cm["data"]["config.yaml"])
    return OperatorProcess(
        kubeconfig,
        workdir / f"operator-{release.name}.log",
        namespaces=namespaces,
        config=config,
        lease_name=release.fullname,
        lease_namespace=release.namespace,
        extra_args=["--log-format", "text"],
    )


def log_text(op: OperatorProcess) -> str:
    return op.log_path.read_text(errors="replace") if op.log_path.exists() else ""


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            found: dict[str, Any] = c
            return found
    return None


def wait_condition(
    cluster: Cluster, op: OperatorProcess, resource: str, namespace: str, kind: str, status: str, reason: str | None = None, timeout: float = 90
) -> dict[str, Any]:
    """Waits until `resource` has condition `kind` with `status` (and `reason`) for its current
    generation; returns the object. On timeout the error carries the operator's log."""

    def check() -> dict[str, Any] | None:
        assert op.alive(), f"the operator exited:\n{op.tail()}"
        obj = cluster.get_json(resource, namespace=namespace)
        c = condition(obj, kind)
        if c is None or c["status"] != status or (reason is not None and c["reason"] != reason):
            return None
        if obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    try:
        return cluster.wait_until(check, timeout=timeout, what=f"{resource} {kind}={status} {reason or ''}".strip())
    except AssertionError as err:
        current = cluster.get_json(resource, namespace=namespace).get("status")
        raise AssertionError(f"{err}\nstatus now: {json.dumps(current, indent=1)}\noperator log:\n{op.tail()}") from None
