"""Compact views of the objects the operator watches (pure functions of their bodies).

The watch caches keep these views, not whole bodies: a few hundred bytes per object keeps the
operator small with thousands of workers, and the reconciler needs nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wasminfer_operator.names import (
    API_VERSION,
    MODEL_POOL_LABEL,
    MODEL_SERVER_LABEL,
    PROFILE_LABEL,
    RENDER_HASH,
    TEMPLATE_HASH,
    WORKER_LABEL,
    pool_group,
    server_group,
)
from wasminfer_runtime.config import LOAD_FAILURE_EXIT

# Container states that mean the pod will not get ready by waiting.
BAD_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in _get(obj, "status", "conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


@dataclass(frozen=True)
class ObjectView:
    """A custom resource: identity, generation, spec and status as the API returned them."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool
    finalizers: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def reference(self) -> dict[str, Any]:
        """The object's identity as a body stub, which kopf turns into an event's involvedObject."""
        return {"apiVersion": API_VERSION, "kind": self.kind, "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid}}


def object_view(body: Mapping[str, Any]) -> ObjectView:
    meta = body.get("metadata") or {}
    return ObjectView(
        kind=str(body.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion", "")),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(str(f) for f in meta.get("finalizers") or ()),
    )


@dataclass(frozen=True)
class ChildView:
    """A ConfigMap, Service or Deployment the operator rendered (found by its labels)."""

    kind: str
    name: str
    worker: str  # the WasmWorker it belongs to, or ""
    owner_uid: str | None
    render_hash: str | None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0  # desired, from the spec
    status_replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    failure: str | None = None  # a ReplicaFailure condition's message (quota, admission)
    stalled: tuple[str, str] | None = None  # (reason, message) of Progressing=False: ProgressDeadlineExceeded
    template_hash: str | None = None  # the pod template's TEMPLATE_HASH: pods with another one are older
    server: str = ""  # the InferenceModel whose model servers it is, or ""
    pool: str = ""  # the ModelPool whose replicas it is, or ""

    @property
    def group(self) -> str:
        """What it is cached under: its worker, its model's model servers, or its pool."""
        return _group(self.worker, self.server, self.pool)


def _group(worker: str, server: str, pool: str) -> str:
    return worker or (server_group(server) if server else pool_group(pool) if pool else "")


def child_view(body: Mapping[str, Any]) -> ChildView:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    view = ChildView(
        kind=str(body.get("kind", "")),
        name=str(meta.get("name", "")),
        worker=str(labels.get(WORKER_LABEL, "")),
        owner_uid=controller_uid(meta),
        render_hash=annotations.get(RENDER_HASH),
        server=str(labels.get(MODEL_SERVER_LABEL, "")),
        pool=str(labels.get(MODEL_POOL_LABEL, "")),
    )
    if view.kind not in ("Deployment", "StatefulSet"):
        return view
    status = body.get("status") or {}
    failure = _condition(body, "ReplicaFailure")
    progressing = _condition(body, "Progressing") or {}
    stalled = None
    if progressing.get("status") == "False":
        stalled = (str(progressing.get("reason") or "ProgressDeadlineExceeded"), str(progressing.get("message", "")))
    return ChildView(
        kind=view.kind,
        name=view.name,
        worker=view.worker,
        owner_uid=view.owner_uid,
        render_hash=view.render_hash,
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(_get(body, "spec", "replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        failure=str(failure.get("message", "")) if failure and failure.get("status") == "True" else None,
        stalled=stalled,
        template_hash=(_get(body, "spec", "template", "metadata", "annotations") or {}).get(TEMPLATE_HASH),
        server=view.server,
        pool=view.pool,
    )


@dataclass(frozen=True)
class PodView:
    name: str
    worker: str
    profile: str | None
    scheduled: bool
    unschedulable_since: str | None  # lastTransitionTime of PodScheduled=False/Unschedulable
    unschedulable_message: str
    ready: bool
    terminating: bool
    problem: tuple[str, str] | None  # (reason, message) when the pod cannot get ready by waiting
    template_hash: str | None = None  # the TEMPLATE_HASH it was created with (None: older operator)
    server: str = ""  # the InferenceModel it serves (a model server's pod), or ""
    node: str = ""
    pool: str = ""  # the ModelPool it is a replica of, or ""

    @property
    def group(self) -> str:
        return _group(self.worker, self.server, self.pool)


def _container_problem(statuses: list[Mapping[str, Any]], init: bool) -> tuple[str, str] | None:
    for cs in statuses:
        name = cs.get("name", "?")
        waiting = _get(cs, "state", "waiting") or {}
        terminated = _get(cs, "state", "terminated") or {}
        last = _get(cs, "lastState", "terminated") or {}
        if init and terminated and terminated.get("exitCode", 0) != 0:
            return ("FetchFailed", f"init container {name}: {(terminated.get('message') or terminated.get('reason') or '').strip()}")
        if waiting.get("reason") in BAD_WAITING:
            detail = (last.get("message") or waiting.get("message") or "").strip()
            if init:
                return ("FetchFailed", f"init container {name}: {waiting['reason']}: {detail}".rstrip(": "))
            return (str(waiting["reason"]), f"container {name}: {detail}".rstrip(": "))
    return None


# How long after a container ended its pod may turn unready for that end to count as the cause:
# lastState keeps the last exit forever, and an old one must not explain a new readiness failure.
RESTART_WINDOW_SECONDS = 15


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _restart_problem(statuses: list[Mapping[str, Any]], ready: Mapping[str, Any]) -> tuple[str, str] | None:
    """A container that died and is not serving again yet: the kubelet restarts it, and until it
    answers its probes the pod serves nothing."""
    for cs in statuses:
        last = _get(cs, "lastState", "terminated") or {}
        if not last or cs.get("ready") or last.get("exitCode", 0) == 0:
            continue
        ended, unready = _timestamp(last.get("finishedAt")), _timestamp(ready.get("lastTransitionTime"))
        recent = ended is not None and unready is not None and (unready - ended).total_seconds() <= RESTART_WINDOW_SECONDS
        if cs.get("started") is True and not recent:
            continue  # up again since; whatever keeps it unready now is not that exit
        how = f" ({last['reason']})" if last.get("reason") else ""
        # Only the runtime's own termination log is passed on: for other exits the message is the
        # tail of the log (FallbackToLogsOnError), too long and too noisy for a condition.
        message = (last.get("message") or "").strip()
        said = f": {message.splitlines()[0][:1000]}" if message and last.get("exitCode") == LOAD_FAILURE_EXIT else ""
        return (
            "ContainerRestarted",
            f"container {cs.get('name', '?')} exited with code {last.get('exitCode')}{how}{said}; "
            f"restarted {cs.get('restartCount', 0)} time(s), not ready yet",
        )
    return None


def _node_problem(body: Mapping[str, Any], ready: Mapping[str, Any]) -> tuple[str, str] | None:
    """Ready=False while every container still says ready: only the node lifecycle controller
    writes that, when the pod's node stops reporting (its kubelet is gone or cut off)."""
    statuses = _get(body, "status", "containerStatuses") or []
    # The kubelet always gives a reason (ReadinessGatesNotReady, ContainersNotReady, ...); the node
    # lifecycle controller flips the status and leaves the reason it found.
    if ready.get("status") != "False" or ready.get("reason") or not statuses or not all(cs.get("ready") for cs in statuses):
        return None
    node = _get(body, "spec", "nodeName") or "?"
    return ("NodeNotReady", f"node {node} stopped reporting (NotReady since {ready.get('lastTransitionTime', '?')}); its pods are not served")


def pod_view(body: Mapping[str, Any]) -> PodView:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    sched = _condition(body, "PodScheduled") or {}
    ready = _condition(body, "Ready") or {}
    unschedulable = sched.get("status") == "False" and sched.get("reason") == "Unschedulable"
    status = body.get("status") or {}
    problem = (
        _container_problem(status.get("initContainerStatuses") or [], init=True)
        or _container_problem(status.get("containerStatuses") or [], init=False)
        or _restart_problem(status.get("containerStatuses") or [], ready)
        or _node_problem(body, ready)
    )
    return PodView(
        name=str(meta.get("name", "")),
        worker=str(labels.get(WORKER_LABEL, "")),
        profile=labels.get(PROFILE_LABEL),
        scheduled=sched.get("status") == "True" or bool(_get(body, "spec", "nodeName")),
        unschedulable_since=sched.get("lastTransitionTime") if unschedulable else None,
        unschedulable_message=str(sched.get("message", "")) if unschedulable else "",
        ready=ready.get("status") == "True",
        terminating=bool(meta.get("deletionTimestamp")),
        problem=problem,
        template_hash=annotations.get(TEMPLATE_HASH),
        server=str(labels.get(MODEL_SERVER_LABEL, "")),
        node=str(_get(body, "spec", "nodeName") or ""),
        pool=str(labels.get(MODEL_POOL_LABEL, "")),
    )
