"""Can a worker's pods schedule under a profile right now? A read-only estimate from nodes and pods.

Pure: given the pod spec the worker would get under the profile (rendered, so the check and the
pods use the same selector, affinity, tolerations and requests), the nodes, and the pods bound to
them, count how many such pods fit. The operator asks before it moves a worker back from a fallback
profile; nothing is created, so the running pods are never disturbed.

What it checks, as the scheduler's filters do: the node is Ready and not cordoned, matches the
pod's nodeSelector and required node affinity (matchExpressions on labels, matchFields on
metadata.name), every NoSchedule/NoExecute taint is tolerated, and for each resource the pod
requests (CPU, memory, the device, one of the node's `pods`), allocatable minus what the pods on
the node request leaves room. What it does not see: pod (anti-)affinity, topology spread, volume
topology, host ports, preemption, pods nominated but not yet bound, scheduler plugins and DRA. It
is an estimate: another workload can take the room between the check and the move (the fallback
deadline then applies again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

# Taint effects that keep a pod off a node (PreferNoSchedule only lowers a score).
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


def _quantity(value: Any) -> Decimal:
    try:
        q: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
        return q
    except (ValueError, TypeError):
        return Decimal(0)


def _add(into: dict[str, Decimal], requests: Mapping[str, Any]) -> None:
    for name, value in requests.items():
        into[name] = into.get(name, Decimal(0)) + _quantity(value)


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the scheduler reserves for a pod: the larger of its containers' sum and each init
    container's request, per resource, plus its overhead and one `pods` slot."""
    total: dict[str, Decimal] = {}
    for c in pod_spec.get("containers") or []:
        _add(total, (c.get("resources") or {}).get("requests") or {})
    for c in pod_spec.get("initContainers") or []:
        for name, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[name] = max(total.get(name, Decimal(0)), _quantity(value))
    _add(total, pod_spec.get("overhead") or {})
    total["pods"] = Decimal(1)
    return {k: v for k, v in total.items() if v > 0}


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    ready: bool
    cordoned: bool
    taints: Sequence[Mapping[str, Any]]
    allocatable: Mapping[str, Decimal] = field(default_factory=dict)


def node_view(body: Mapping[str, Any]) -> NodeView:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return NodeView(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        cordoned=bool(spec.get("unschedulable")),
        taints=list(spec.get("taints") or []),
        allocatable={k: _quantity(v) for k, v in (status.get("allocatable") or {}).items()},
    )


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    if toleration.get("operator") == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def _expression(expr: Mapping[str, Any], value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def _term(term: Mapping[str, Any], node: NodeView) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no node
    return all(_expression(e, node.labels.get(str(e.get("key")))) for e in exprs) and all(
        _expression(f, node.name if f.get("key") == "metadata.name" else None) for f in fields
    )


def unfit_reason(pod_spec: Mapping[str, Any], node: NodeView) -> str | None:
    """Why the pod can never go to the node as it is now (resources aside); None when it can."""
    if not node.ready:
        return "not Ready"
    if node.cordoned:
        return "cordoned"
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return f"without label {key}={value}"
    affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = required.get("nodeSelectorTerms")
    if terms is not None and not any(_term(t, node) for t in terms):
        return "outside the node affinity"
    tolerations = pod_spec.get("tolerations") or []
    for taint in node.taints:
        if taint.get("effect") in BLOCKING_EFFECTS and not any(_tolerates(t, taint) for t in tolerations):
            return f"with untolerated taint {taint.get('key')}"
    return None


def used_on_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    """What the pods bound to a node reserve there; pods that ended (Succeeded, Failed) hold nothing."""
    used: dict[str, Decimal] = {}
    for p in pods:
        if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        _add(used, pod_requests(p.get("spec") or {}))
    return used


def fits_on(requests: Mapping[str, Decimal], node: NodeView, used: Mapping[str, Decimal]) -> tuple[int, list[str]]:
    """How many more pods with `requests` the node holds, and the resources too short for one more."""
    counts, short = [], []
    for name, want in sorted(requests.items()):
        free = node.allocatable.get(name, Decimal(0)) - used.get(name, Decimal(0))
        n = max(int(free // want), 0)
        counts.append(n)
        if n == 0:
            short.append(name)
    return (min(counts) if counts else 0), short


@dataclass(frozen=True)
class Room:
    fits: int  # pods of the worker that fit, counted up to the replicas wanted
    wanted: int
    detail: str  # where, or why not

    @property
    def enough(self) -> bool:
        return self.fits >= self.wanted


def room_for(
    pod_spec: Mapping[str, Any],
    replicas: int,
    nodes: Iterable[NodeView],
    pods_on: Mapping[str, Iterable[Mapping[str, Any]]],
) -> Room:
    """Whether all `replicas` pods (at least one) fit on the nodes as they are. `pods_on` maps a
    node name to the pods bound to it; a node that could take the pod but is missing from it was
    not read, and counts for nothing."""
    wanted = max(replicas, 1)
    requests = pod_requests(pod_spec)
    found = 0
    places: list[str] = []
    refusals: dict[str, int] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        why = unfit_reason(pod_spec, node)
        if why is None:
            if node.name not in pods_on:
                continue
            n, short = fits_on(requests, node, used_on_node(pods_on[node.name]))
            if n > 0:
                found += n
                places.append(f"{node.name} ({n})")
                if found >= wanted:
                    break
                continue
            why = "without free " + ", ".join(short)
        refusals[why] = refusals.get(why, 0) + 1
    if found >= wanted:
        return Room(found, wanted, f"room for {wanted} pod(s) on {', '.join(places)}")
    why_not = "; ".join(f"{n} node(s) {why}" for why, n in sorted(refusals.items())) or "no nodes"
    return Room(found, wanted, f"room for {found} of {wanted} pod(s): {why_not}")


def candidate_nodes(pod_spec: Mapping[str, Any], nodes: Iterable[NodeView]) -> list[NodeView]:
    """Nodes the pod could go to, resources aside: those whose pods the check must read."""
    return [n for n in nodes if unfit_reason(pod_spec, n) is None]
