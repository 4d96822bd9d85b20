"""The chart's RBAC grants exactly the API access the operator's code uses: nothing missing (the
operator would hit Forbidden), nothing extra (least privilege), no wildcards."""

from __future__ import annotations

import pytest

from wasminfer_operator import kube

from . import rbac_scan
from .conftest import Render
from .rbac_scan import Access


def _diff(need: dict[Access, str], granted: dict[Access, list[str]]) -> str:
    missing = [f"  missing {a}  (needed by {need[a]})" for a in sorted(set(need) - set(granted))]
    extra = [f"  extra   {a}  (granted by {', '.join(granted[a])})" for a in sorted(set(granted) - set(need))]
    return "\n".join(missing + extra)


MODES = {
    "cluster-wide": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "namespace-patterns": ["--set", "watchNamespaces={team-*,!team-test}"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rbac_grants_exactly_what_the_operator_uses(render: Render, mode: str) -> None:
    objs = render(*MODES[mode], namespace="wasminfer-system")
    granted = rbac_scan.granted_access(objs, "wasminfer", "wasminfer-system")
    need = rbac_scan.required_access(clusterwide=mode == "cluster-wide")
    assert set(granted) == set(need), "chart RBAC differs from the operator's use:\n" + _diff(need, granted)


def test_namespaced_mode_grants_workload_access_only_in_watched_namespaces(render: Render) -> None:
    objs = render("--set", "watchNamespaces={team-a}", namespace="ops")
    bindings = {(b["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"]) for b in objs if b["kind"].endswith("Binding")}
    assert bindings == {
        ("ClusterRoleBinding", None, "wasminfer-discovery"),
        ("RoleBinding", "team-a", "wasminfer-workloads"),
        ("RoleBinding", "ops", "wasminfer-leader-election"),
    }


def test_namespace_patterns_are_granted_cluster_wide(render: Render) -> None:
    """A pattern cannot name its namespaces in advance: the workload access is bound cluster-wide."""
    objs = render("--set", "watchNamespaces={team-*}")
    bindings = {(b["kind"], b["roleRef"]["name"]) for b in objs if b["kind"].endswith("Binding")}
    assert ("ClusterRoleBinding", "wasminfer-workloads") in bindings
    args = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-*" in args


def test_lease_access_is_limited_to_the_operators_lease(render: Render) -> None:
    role = next(o for o in render() if o["kind"] == "Role")
    named = [r for r in role["rules"] if "get" in r["verbs"] or "update" in r["verbs"]]
    assert named and all(r.get("resourceNames") == ["wasminfer"] for r in named)
    dep = next(o for o in render() if o["kind"] == "Deployment")
    assert "--lease-name=wasminfer" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_operators_declared_permissions_match_its_code() -> None:
    """kube.PERMISSIONS documents the operator's access; it must say what the code does."""
    declared = {Access(g, r, v) for g, r, verbs in kube.PERMISSIONS for v in verbs}
    need = rbac_scan.required_access(clusterwide=False)
    assert declared == set(need), _diff(need, {a: ["kube.PERMISSIONS"] for a in declared})


def test_the_scan_sees_server_side_apply_and_watches() -> None:
    """Guards the scan itself: it must find the operator's known calls, or it proves nothing."""
    need = rbac_scan.required_access(clusterwide=True)
    assert Access("apps", "deployments", "create") in need  # apply that creates
    assert Access("apps", "deployments", "watch") in need
    assert Access("wasminfer.dev", "wasmworkers/status", "patch") in need
    assert Access("coordination.k8s.io", "leases", "update") in need
    assert Access("", "namespaces", "list") not in need  # cluster-wide kopf does not list namespaces
