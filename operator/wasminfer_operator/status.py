"""Pure status computation: conditions with reasons, observedGeneration, and the transitions to report.

Conditions follow the standard shape. `lastTransitionTime` changes only when a condition's status
changes, so re-computing an unchanged status yields an identical object and no write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from wasminfer_operator.api import Condition, InferenceModelStatus, ModelPoolStatus, ServerState, WasmWorkerStatus
from wasminfer_operator.observe import ChildView, PodView
from wasminfer_operator.placement import Decision

READY = "Ready"
MODELS_READY = "ModelsReady"
SCHEDULED = "Scheduled"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
VERIFIED = "Verified"  # a signature policy applies: what the operator found of the signatures
DELETING = "Deleting"  # an InferenceModel whose deletion waits for the WasmWorkers using it
IN_USE = "InUse"
MOVED_BACK = "MovedBack"  # Scheduled's reason from a move back off a fallback profile until the spec changes
WORKER_CONDITIONS = (READY, MODELS_READY, SCHEDULED, PROGRESSING, DEGRADED)

Status = Literal["True", "False", "Unknown"]
Verification = tuple[Status, str, str]  # the Verified condition's status, reason and message


@dataclass(frozen=True)
class Cond:
    type: str
    status: Status
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Transition:
    """A condition that changed (or appeared in a bad state): one Kubernetes event."""

    type: str
    status: str
    reason: str
    message: str
    warning: bool

    @property
    def event_message(self) -> str:
        return f"{self.type} is {self.status} ({self.reason}): {self.message}".rstrip(": ")


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def timestamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Not ready, but on the way (a rollout, model servers loading, a pool placing its models) or as asked
# (scaled to zero): a Normal event, not a Warning.
_ON_THE_WAY = {"RollingOut", "ReplicasNotReady", "ServerStarting", "ReplicasStarting", "Placing", "ScaledToZero"}


def _is_bad(c: Cond | Condition) -> bool:
    if c.type == DEGRADED:
        return c.status == "True"
    if c.type == PROGRESSING:
        return False
    if c.type == DELETING:
        return c.reason == IN_USE
    return (c.status == "False" and c.reason not in _ON_THE_WAY) or c.reason == "FellBack"


_PENDING = ("Unknown", "Pending")


def _is_bad_wire(c: Mapping[str, Any]) -> bool:
    return _is_bad(Cond(str(c.get("type")), c.get("status", "Unknown"), str(c.get("reason", "")), str(c.get("message", ""))))


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Cond], generation: int, now: datetime) -> list[Condition]:
    """New conditions, keeping each lastTransitionTime whose status did not change."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in new:
        before = previous.get(c.type)
        since = before.get("lastTransitionTime") if before and before.get("status") == c.status else None
        out.append(
            Condition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                last_transition_time=since or timestamp(now),
                observed_generation=generation,
            )
        )
    return out


def transitions(old: Sequence[Mapping[str, Any]], new: Sequence[Condition]) -> list[Transition]:
    """The changes worth an event: conditions whose status or reason changed, and new ones that
    report a problem. Waiting for the scheduler (Unknown/Pending) is part of every rollout, so
    entering or leaving it is no event unless the other side is a problem; and a rollout that ends
    as the worker turns Ready is told by Ready's event alone. A new worker posts one event
    (Available), not three, which counts with a thousand of them."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in new:
        before = previous.get(c.type)
        bad = _is_bad(c)
        if before is None:
            if bad:
                out.append(Transition(c.type, c.status, c.reason, c.message, True))
            continue
        if (before.get("status"), before.get("reason")) == (c.status, c.reason):
            continue
        pending = (before.get("status"), before.get("reason")) == _PENDING or (c.status, c.reason) == _PENDING
        if pending and not bad and not _is_bad_wire(before):
            continue
        out.append(Transition(c.type, c.status, c.reason, c.message, bad))
    if any(t.type == READY and t.status == "True" for t in out):
        out = [t for t in out if not (t.type == PROGRESSING and t.status == "False" and not t.warning)]
    return out


# Status fields that change without any condition changing: counts, messages, who uses a model.
# A change to these alone may wait a few seconds and go out with the next write (`StatusWriter`).
DETAIL_FIELDS = frozenset(
    {"replicas", "readyReplicas", "updatedReplicas", "readySummary", "modelsSummary", "workers", "workerCount", "servers"}
)


def details_only(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when `new` differs from `old` (both as written to the API) only in details: no field
    outside DETAIL_FIELDS changed, and every condition kept its status, reason and generation."""
    if not old:
        return False
    if bool(old.get("workerCount")) != bool(new.get("workerCount")):
        return False  # whether a model is in use at all is news: its deletion waits on it
    for key in set(old) | set(new):
        if key in DETAIL_FIELDS or key == "conditions" or old.get(key) == new.get(key):
            continue
        return False

    def essence(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration")) for c in status.get("conditions") or []]

    return essence(old) == essence(new)


# --- WasmWorker -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelState:
    found: bool
    ready: bool = False
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class WorkerObservation:
    """Everything the worker's status is computed from."""

    generation: int
    replicas: int = 1
    url: str | None = None
    selector: str | None = None
    spec_error: str | None = None
    model_names: Sequence[str] = ()
    models: Mapping[str, ModelState] = field(default_factory=dict)
    decision: Decision | None = None
    applied: bool = False  # the children match the current render (applied now or already)
    desired_hash: str | None = None  # render hash the Deployment should carry
    deployment: ChildView | None = None
    pods: Sequence[PodView] = ()
    apply_error: tuple[str, str] | None = None
    previous_profile: str | None = None
    module_source: tuple[bool, str, str] | None = None  # an OCI module's check: (ok, reason, message)
    artifact: str | None = None  # the pinned reference of an OCI module
    verified: Verification | None = None  # the Verified condition, when a signature policy applies


def _models_condition(obs: WorkerObservation) -> Cond:
    names = list(obs.model_names)
    if not names:
        return Cond(MODELS_READY, "True", "NoModels", "the worker uses no named models")
    missing = [n for n in names if not obs.models.get(n, ModelState(False)).found]
    if missing:
        return Cond(MODELS_READY, "False", "ModelNotFound", f"InferenceModel(s) not found in this namespace: {', '.join(missing)}")
    waiting = [n for n in names if not obs.models[n].ready]
    if waiting:
        details = "; ".join(f"{n}: {obs.models[n].reason} {obs.models[n].message}".strip() for n in waiting)
        return Cond(MODELS_READY, "False", "ModelNotReady", f"InferenceModel(s) not ready: {details}")
    return Cond(MODELS_READY, "True", "ModelsReady", f"{len(names)} model(s) ready: {', '.join(names)}")


def _current_pods(obs: WorkerObservation) -> list[PodView]:
    profile = obs.decision.profile if obs.decision else None
    return [p for p in obs.pods if not p.terminating and p.profile == profile]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _revisions(obs: WorkerObservation) -> tuple[list[PodView], list[PodView]] | None:
    """(new, old): the live pods of the Deployment's pod template and those of earlier ones.

    Told by the template hash the pods carry; None when the Deployment has none (made by an older
    operator) and the pods cannot be told apart."""
    dep = obs.deployment
    if dep is None or dep.template_hash is None:
        return None
    live = [p for p in obs.pods if not p.terminating]
    return [p for p in live if p.template_hash == dep.template_hash], [p for p in live if p.template_hash != dep.template_hash]


def _pod_counts(obs: WorkerObservation) -> str | None:
    """'1 of 2 new pods ready; 2 old pods still serving': old pods never count as progress."""
    split = _revisions(obs)
    if split is None:
        return None
    new, old = split
    msg = f"{sum(p.ready for p in new)} of {_plural(obs.replicas, 'new pod')} ready"
    unscheduled = sum(not p.scheduled for p in new)
    if unscheduled:
        msg += f" ({unscheduled} not scheduled)"
    serving = sum(p.ready for p in old)
    if serving:
        msg += f"; {_plural(serving, 'old pod')} still serving"
    if len(old) > serving:
        msg += f"; {_plural(len(old) - serving, 'old pod')} not ready"
    return msg


def _scheduled_condition(obs: WorkerObservation, models_ok: bool) -> Cond:
    d = obs.decision
    if d is None:
        reason = "WaitingForModels" if not models_ok else "Pending"
        return Cond(SCHEDULED, "Unknown", reason, "placement is decided once the models are known")
    if d.failure is not None:
        return Cond(SCHEDULED, "False", d.failure[0], d.failure[1])
    if d.switched_from is not None:
        since, why = d.unschedulable or ("", "")
        return Cond(
            SCHEDULED,
            "False",
            "FellBack",
            f"profile {d.switched_from} stayed unschedulable since {since} ({why}); moving to profile {d.profile}",
        )
    if d.moved_back_from is not None:
        return Cond(
            SCHEDULED, "Unknown", MOVED_BACK,
            f"moved back from fallback profile {d.moved_back_from} to profile {d.profile}, which has room again: {d.room}",
        )  # fmt: skip
    if d.unschedulable is not None:
        since, why = d.unschedulable
        pods = _current_pods(obs)
        stuck_count = sum(p.unschedulable_since is not None for p in pods)
        msg = f"{stuck_count} of {_plural(len(pods), 'pod')} with profile {d.profile} cannot be scheduled since {since}: {why}"
        if d.fallback_due is not None and d.profile in d.chain:
            msg += f"; falling back to profile {d.chain[d.chain.index(d.profile) + 1]} at {d.fallback_due}"
        return Cond(SCHEDULED, "False", "Unschedulable", msg)
    if obs.replicas == 0:
        return Cond(SCHEDULED, "True", "NoReplicas", "no pods requested")
    pods = _current_pods(obs)
    scheduled = [p for p in pods if p.scheduled]
    stuck = sorted((p for p in pods if p.unschedulable_since is not None), key=lambda p: (p.unschedulable_since or "", p.name))
    if stuck:
        # Reported even while other pods run: a scale-up or a new revision that cannot be placed.
        first = stuck[0]
        return Cond(
            SCHEDULED,
            "False",
            "Unschedulable",
            f"{len(stuck)} of {_plural(len(pods), 'pod')} with profile {d.profile} cannot be scheduled "
            f"since {first.unschedulable_since}: {first.unschedulable_message}",
        )
    if pods and len(scheduled) == len(pods):
        if d.fell_back:
            return Cond(SCHEDULED, "True", "FellBack", f"{len(pods)} pod(s) scheduled with fallback profile {d.profile} (profile {d.primary} could not be scheduled)")
        return Cond(SCHEDULED, "True", "Scheduled", f"{len(pods)} pod(s) scheduled with profile {d.profile}")
    # Pods not created yet count as waiting too, so the message stays put as they appear.
    total = max(len(pods), obs.replicas)
    waiting = f"{total - len(scheduled)} of {_plural(total, 'pod')}"
    return Cond(SCHEDULED, "Unknown", "Pending", f"waiting for {waiting} with profile {d.profile} to be scheduled")


def _rollout_complete(obs: WorkerObservation) -> tuple[bool, str]:
    dep = obs.deployment
    if dep is None or dep.observed_generation == 0:  # applied, and not yet taken up by its controller
        return False, "creating the Deployment"
    if dep.render_hash != obs.desired_hash or dep.observed_generation < dep.generation:
        return False, "the Deployment is being updated"
    if dep.updated_replicas < obs.replicas or dep.status_replicas > obs.replicas or dep.available_replicas < obs.replicas:
        return False, _pod_counts(obs) or f"{dep.updated_replicas}/{obs.replicas} pod(s) updated, {dep.ready_replicas} ready"
    return True, f"{obs.replicas} pod(s) up to date"


def _progressing_condition(obs: WorkerObservation, blocked: Cond | None, stalled: Cond | None) -> Cond:
    if blocked is not None:
        return Cond(PROGRESSING, "False", blocked.reason, "not rolling out: " + blocked.message)
    done, msg = _rollout_complete(obs)
    if done:
        return Cond(PROGRESSING, "False", "RolloutComplete", msg)
    if stalled is not None:
        return Cond(PROGRESSING, "False", stalled.reason, "rollout stalled: " + stalled.message)
    return Cond(PROGRESSING, "True", "RollingOut", msg)


def _deployment_stalled(obs: WorkerObservation) -> tuple[str, str] | None:
    """The Deployment's own verdict (ProgressDeadlineExceeded), once it has seen the current spec."""
    dep = obs.deployment
    if dep is None or dep.stalled is None or dep.observed_generation < dep.generation:
        return None
    if obs.desired_hash is not None and dep.render_hash != obs.desired_hash:
        return None
    return dep.stalled


def _pod_problems(obs: WorkerObservation) -> tuple[list[PodView], list[PodView]]:
    """(pods of the current revision, older pods) that cannot get ready by waiting."""
    split = _revisions(obs)
    live = [p for p in obs.pods if not p.terminating and p.problem is not None]
    if split is None:
        return live, []  # cannot tell revisions apart: every failing pod may be the rollout's
    new = {p.name for p in split[0]}
    return [p for p in live if p.name in new], [p for p in live if p.name not in new]


def _degraded_condition(obs: WorkerObservation) -> tuple[Cond, bool]:
    """Degraded, and whether it stalls the rollout (a new-revision failure or the Deployment's deadline)."""
    if obs.apply_error is not None:
        return Cond(DEGRADED, "True", obs.apply_error[0], obs.apply_error[1]), False
    if obs.deployment is not None and obs.deployment.failure:
        return Cond(DEGRADED, "True", "ReplicaFailure", obs.deployment.failure), False
    new_bad, old_bad = _pod_problems(obs)
    stalled = _deployment_stalled(obs)
    if stalled is not None:
        reason, message = stalled
        if new_bad:
            message = f"{message} (pod {new_bad[0].name}: {new_bad[0].problem[1] if new_bad[0].problem else ''})"
        counts = _pod_counts(obs)
        return Cond(DEGRADED, "True", reason, f"{message}; {counts}" if counts else message), True
    for p in new_bad + old_bad:
        assert p.problem is not None
        return Cond(DEGRADED, "True", p.problem[0], f"pod {p.name}: {p.problem[1]}"), p in new_bad
    return Cond(DEGRADED, "False", "AsExpected", "no failures seen"), False


def worker_conditions(obs: WorkerObservation) -> list[Cond]:
    if obs.spec_error is not None:
        msg = obs.spec_error
        return [
            Cond(READY, "False", "InvalidSpec", msg),
            Cond(MODELS_READY, "Unknown", "InvalidSpec", msg),
            Cond(SCHEDULED, "Unknown", "InvalidSpec", msg),
            Cond(PROGRESSING, "False", "InvalidSpec", msg),
            Cond(DEGRADED, "True", "InvalidSpec", msg),
        ]
    models = _models_condition(obs)
    module_ok = obs.module_source is None or obs.module_source[0]
    scheduled = _scheduled_condition(obs, models.status == "True" and module_ok)
    degraded, stalls = _degraded_condition(obs)
    blocked = None
    if obs.module_source is not None and not module_ok:
        blocked = Cond(READY, "False", obs.module_source[1], f"module: {obs.module_source[2]}")
    elif models.status != "True":
        blocked = models
    elif obs.decision is not None and obs.decision.failure is not None:
        blocked = scheduled
    elif obs.apply_error is not None:
        blocked = degraded
    progressing = _progressing_condition(obs, blocked, degraded if stalls else None)
    dep = obs.deployment
    ready_n = dep.ready_replicas if dep else 0
    if blocked is not None:
        ready = Cond(READY, "False", blocked.reason, blocked.message)
    elif scheduled.status == "False":
        counts = _pod_counts(obs) if scheduled.reason == "Unschedulable" else None
        ready = Cond(READY, "False", scheduled.reason, f"{scheduled.message}; {counts}" if counts else scheduled.message)
    elif degraded.status == "True":
        ready = Cond(READY, "False", degraded.reason, degraded.message)
    elif progressing.status == "True":
        ready = Cond(READY, "False", "RollingOut", progressing.message)
    elif obs.replicas == 0:
        ready = Cond(READY, "True", "ScaledToZero", "no replicas requested")
    elif ready_n < obs.replicas:
        ready = Cond(READY, "False", "ReplicasNotReady", f"{ready_n}/{obs.replicas} replicas ready")
    else:
        ready = Cond(READY, "True", "Available", f"{ready_n}/{obs.replicas} replicas ready" + (f", serving {obs.url}" if obs.url else ""))
    verified = [Cond(VERIFIED, *obs.verified)] if obs.verified is not None else []
    return [ready, models, scheduled, progressing, degraded, *verified]


def _keep_moved_back(c: Cond, old: Sequence[Mapping[str, Any]], generation: int) -> Cond:
    """After a move back, Scheduled keeps saying so while the pods are placed and once they run,
    until something else happens to placement or the spec changes."""
    before = next((o for o in old if o.get("type") == SCHEDULED), None)
    if c.type != SCHEDULED or before is None or before.get("reason") != MOVED_BACK or before.get("observedGeneration") != generation:
        return c
    if c.reason not in ("Scheduled", "Pending"):
        return c
    return Cond(SCHEDULED, c.status, MOVED_BACK, str(before.get("message", "")))


def worker_status(obs: WorkerObservation, old: Mapping[str, Any], now: datetime) -> tuple[WasmWorkerStatus, list[Transition]]:
    """The worker's new status and the transitions to report as events."""
    old_conditions = list(old.get("conditions") or [])
    new = [_keep_moved_back(c, old_conditions, obs.generation) for c in worker_conditions(obs)]
    conditions = merge_conditions(old_conditions, new, obs.generation, now)
    dep = obs.deployment
    ready_models = sum(1 for n in obs.model_names if obs.models.get(n, ModelState(False)).ready)
    profile = obs.decision.profile if obs.decision and obs.decision.profile else obs.previous_profile
    status = WasmWorkerStatus(
        observed_generation=obs.generation,
        replicas=dep.status_replicas if dep else 0,
        ready_replicas=dep.ready_replicas if dep else 0,
        updated_replicas=dep.updated_replicas if dep else 0,
        selector=obs.selector,
        url=obs.url,
        profile=profile,
        ready_summary=f"{dep.ready_replicas if dep else 0}/{obs.replicas}",
        models_summary=f"{ready_models}/{len(obs.model_names)}",
        artifact=obs.artifact,
        conditions=conditions,
    )
    return status, transitions(old_conditions, conditions)


# --- InferenceModel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingObservation:
    """A model's own model servers (spec.serving): what was decided and what the caches show."""

    replicas: int  # desired
    endpoint: str
    grpc_endpoint: str
    selector: str
    decision: Decision
    pods: Sequence[PodView] = ()
    apply_error: tuple[str, str] | None = None
    pool: str | None = None  # a ModelPool's model: `pods` are the replicas placed to hold it
    current_hash: str | None = None  # a pool's template hash: a replica of an older revision may hold another share

    @property
    def live(self) -> list[PodView]:
        return [p for p in self.pods if not p.terminating]

    @property
    def ready(self) -> int:
        return sum(1 for p in self.live if p.ready and (self.current_hash is None or p.template_hash == self.current_hash))


@dataclass(frozen=True)
class ModelObservation:
    generation: int
    spec_error: str | None = None
    backend: str | None = None
    profile: str | None = None
    profile_failure: tuple[str, str] | None = None
    source: tuple[bool, str, str] = (True, "SourceDeclared", "")  # (ok, reason, message)
    workers: Sequence[str] = ()
    deleting: bool = False  # deletion requested; `workers` (those not being deleted) hold it back
    serving: ServingObservation | None = None
    artifact: str | None = None  # an OCI source's pinned reference
    verified: Verification | None = None  # the Verified condition, when a signature policy applies


MAX_LISTED_WORKERS = 100
MAX_LISTED_SERVERS = 20


def model_condition(obs: ModelObservation) -> Cond:
    if obs.spec_error is not None:
        return Cond(READY, "False", "InvalidSpec", obs.spec_error)
    if obs.profile_failure is not None:
        return Cond(READY, "False", obs.profile_failure[0], obs.profile_failure[1])
    ok, reason, message = obs.source
    if ok and obs.serving is not None:
        return serving_condition(obs.serving)
    return Cond(READY, "True" if ok else "False", reason, message)


def serving_condition(sv: ServingObservation) -> Cond:
    """Ready once a model-server pod has the model loaded; else what keeps them from it."""
    d = sv.decision
    if d.failure is not None:
        return Cond(READY, "False", *d.failure)
    if sv.apply_error is not None:
        return Cond(READY, "False", *sv.apply_error)
    if sv.replicas == 0:
        where = f"ModelPool {sv.pool} has 0 replicas" if sv.pool is not None else "spec.serving.replicas is 0"
        return Cond(READY, "False", "ScaledToZero", f"{where}: no model server serves the model, and the workers using it wait")
    if sv.pool is not None and sv.ready >= sv.replicas:
        holders = ", ".join(p.name for p in sv.pods)
        return Cond(READY, "True", "Serving", f"held by {_plural(sv.replicas, 'replica')} of ModelPool {sv.pool}: {holders}")
    if sv.pool is None and sv.ready:
        return Cond(READY, "True", "Serving", f"{sv.ready} of {_plural(sv.replicas, 'model-server pod')} serve the model at {sv.endpoint}")
    problem = next(((p.name, p.problem) for p in sv.live if p.problem is not None), None)
    if problem is not None:
        return Cond(READY, "False", problem[1][0], f"model-server pod {problem[0]}: {problem[1][1]}")
    if d.unschedulable is not None:
        then = ""
        if d.fallback_due is not None and d.profile in d.chain[:-1]:
            then = f"; profile {d.chain[d.chain.index(d.profile) + 1]} is tried at {d.fallback_due}"
        return Cond(READY, "False", "Unschedulable", f"model-server pods cannot be placed with profile {d.profile}: {d.unschedulable[1]}{then}")
    if sv.pool is not None:
        return Cond(READY, "False", "ServerStarting", f"{sv.ready} of the {_plural(sv.replicas, 'replica')} of ModelPool {sv.pool} "
                    f"placed to hold the model have loaded it")  # fmt: skip
    return Cond(READY, "False", "ServerStarting", f"waiting for a model-server pod to load the model (0 of {sv.replicas} ready)")


def server_states(pods: Sequence[PodView], current_hash: str | None = None, shares: Mapping[str, int] | None = None) -> list[ServerState]:
    """Each pod's state; with `current_hash` a ready pod of an older revision is still Loading (it may hold
    another share); `shares`: how many models are placed on each (a pool's replicas)."""
    out = []
    for p in sorted(pods, key=lambda p: p.name)[:MAX_LISTED_SERVERS]:
        if p.terminating:
            state, message = "Terminating", ""
        elif p.ready and current_hash is not None and p.template_hash != current_hash:
            state, message = "Loading", "an older revision: it restarts with the current placement"
        elif p.ready:
            state, message = "Ready", ""
        elif p.problem is not None:
            state, message = "Failed", f"{p.problem[0]}: {p.problem[1]}"
        elif not p.scheduled:
            state, message = "Pending", p.unschedulable_message
        else:
            state, message = "Loading", ""
        out.append(ServerState(pod=p.name, node=p.node or None, state=state, message=message[:4096],
                               models=None if shares is None else shares.get(p.name, 0)))  # fmt: skip
    return out


def deleting_condition(obs: ModelObservation) -> Cond | None:
    """While a deletion waits for the workers that use the model: who they are and what to do."""
    if not obs.deleting or not obs.workers:
        return None
    workers = sorted(obs.workers)
    listed = ", ".join(workers[:MAX_LISTED_WORKERS]) + (f" and {len(workers) - MAX_LISTED_WORKERS} more" if len(workers) > MAX_LISTED_WORKERS else "")
    return Cond(
        DELETING, "True", IN_USE,
        f"deletion waits for {_plural(len(workers), 'WasmWorker')} using this model: {listed}; "
        "delete them or remove the model from their spec.models",
    )


def model_status(obs: ModelObservation, old: Mapping[str, Any], now: datetime) -> tuple[InferenceModelStatus, list[Transition]]:
    old_conditions = list(old.get("conditions") or [])
    deleting = deleting_condition(obs)
    new = [model_condition(obs)] + ([deleting] if deleting is not None else [])
    if obs.verified is not None:
        new.append(Cond(VERIFIED, *obs.verified))
    conditions = merge_conditions(old_conditions, new, obs.generation, now)
    workers = sorted(obs.workers)
    status = InferenceModelStatus(
        observed_generation=obs.generation,
        backend=obs.backend,
        profile=obs.profile,
        workers=workers[:MAX_LISTED_WORKERS],
        worker_count=len(workers),
        artifact=obs.artifact,
        conditions=conditions,
    )
    sv = obs.serving
    if sv is not None:
        status.profile = sv.decision.profile or obs.profile
        if sv.pool is None:
            status.endpoint, status.grpc_endpoint, status.selector = sv.endpoint, sv.grpc_endpoint, sv.selector
        status.replicas, status.ready_replicas = len(sv.live), sv.ready
        status.ready_summary = f"{sv.ready}/{sv.replicas}"
        status.servers = server_states(sv.pods, sv.current_hash)
    return status, transitions(old_conditions, conditions)


# --- ModelPool ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolObservation:
    generation: int
    spec_error: str | None = None
    decision: Decision | None = None
    replicas: int = 0  # desired
    copies: int = 0
    selector: str = ""
    models: Sequence[str] = ()  # placed, in order
    waiting: Mapping[str, str] = field(default_factory=dict)  # models left out for now, and why
    shares: Mapping[str, int] = field(default_factory=dict)  # replica -> models placed on it
    pods: Sequence[PodView] = ()
    current_hash: str | None = None
    apply_error: tuple[str, str] | None = None

    @property
    def live(self) -> list[PodView]:
        return [p for p in self.pods if not p.terminating]

    @property
    def ready(self) -> int:
        return sum(1 for p in self.live if p.ready and p.template_hash == self.current_hash)


def pool_condition(obs: PoolObservation) -> Cond:
    if obs.spec_error is not None:
        return Cond(READY, "False", "InvalidSpec", obs.spec_error)
    d = obs.decision
    if d is not None and d.failure is not None:
        return Cond(READY, "False", *d.failure)
    if obs.apply_error is not None:
        return Cond(READY, "False", *obs.apply_error)
    waiting = ""
    if obs.waiting:
        waiting = "; waiting for " + "; ".join(f"{m}: {why}" for m, why in sorted(obs.waiting.items())[:10])
    if not obs.models:
        return Cond(READY, "True", "NoModels", f"no InferenceModel of the namespace is placed in the pool (spec.pool){waiting}")
    if obs.replicas == 0:
        return Cond(READY, "False", "ScaledToZero", f"spec.replicas is 0: the {_plural(len(obs.models), 'model')} of the pool are not served")
    if obs.ready >= obs.replicas:
        copies = min(obs.copies, obs.replicas)
        return Cond(READY, "True", "Serving",
                    f"{_plural(obs.replicas, 'replica')} hold {_plural(len(obs.models), 'model')}, each on {copies}{waiting}")  # fmt: skip
    problem = next(((p.name, p.problem) for p in obs.live if p.problem is not None), None)
    if problem is not None:
        return Cond(READY, "False", problem[1][0], f"replica {problem[0]}: {problem[1][1]}")
    if d is not None and d.unschedulable is not None:
        return Cond(READY, "False", "Unschedulable", f"replicas cannot be placed with profile {d.profile}: {d.unschedulable[1]}")
    return Cond(READY, "False", "ReplicasStarting", f"{obs.ready} of {obs.replicas} replicas have loaded their share of the models")


def pool_status(obs: PoolObservation, old: Mapping[str, Any], now: datetime) -> tuple[ModelPoolStatus, list[Transition]]:
    old_conditions = list(old.get("conditions") or [])
    conditions = merge_conditions(old_conditions, [pool_condition(obs)], obs.generation, now)
    status = ModelPoolStatus(
        observed_generation=obs.generation,
        profile=obs.decision.profile if obs.decision is not None else None,
        replicas=len(obs.live),
        ready_replicas=obs.ready,
        ready_summary=f"{obs.ready}/{obs.replicas}",
        selector=obs.selector or None,
        model_count=len(obs.models),
        models=list(obs.models),
        servers=server_states(obs.pods, obs.current_hash, obs.shares),
        conditions=conditions,
    )
    return status, transitions(old_conditions, conditions)
