"""Status: conditions with reasons for every situation, stable timestamps, events only on transitions."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

from wasminfer_operator.observe import ChildView, PodView, child_view, pod_view
from wasminfer_operator.placement import Decision
from wasminfer_operator.names import TEMPLATE_HASH
from wasminfer_operator.status import (
    ModelObservation,
    ModelState,
    WorkerObservation,
    details_only,
    model_status,
    worker_status,
)

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def deployment(replicas: int = 2, ready: int = 2, updated: int = 2, render_hash: str = "h1", **kw: Any) -> ChildView:
    kw = {"generation": 1, "observed_generation": 1, **kw}
    return ChildView(
        "Deployment", "hello", "hello", "uid", render_hash, replicas=replicas,
        status_replicas=replicas, ready_replicas=ready, updated_replicas=updated, available_replicas=ready, **kw,
    )


def pod(profile: str = "cpu", scheduled: bool = True, ready: bool = True, problem: tuple[str, str] | None = None, name: str = "p") -> PodView:
    return PodView(name, "hello", profile, scheduled, None if scheduled else "2030-01-01T11:59:00Z", "" if scheduled else "0/5 nodes: Insufficient gpu", ready, False, problem)


HEALTHY = WorkerObservation(
    generation=3,
    replicas=2,
    url="http://hello.ns.svc/hello",
    selector="wasminfer.dev/worker=hello",
    model_names=["m"],
    models={"m": ModelState(True, True, "SourceDeclared", "")},
    decision=Decision(profile="cpu", chain=("cpu",)),
    applied=True,
    desired_hash="h1",
    deployment=deployment(),
    pods=[pod(name="a"), pod(name="b")],
)


def conds(obs: WorkerObservation, old: dict[str, Any] | None = None, now: datetime = T0) -> dict[str, tuple[str, str, str]]:
    status, _ = worker_status(obs, old or {}, now)
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


def test_healthy_worker() -> None:
    status, changes = worker_status(HEALTHY, {}, T0)
    c = {x.type: (x.status, x.reason) for x in status.conditions}
    assert c == {
        "Ready": ("True", "Available"),
        "ModelsReady": ("True", "ModelsReady"),
        "Scheduled": ("True", "Scheduled"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert all(x.observed_generation == 3 for x in status.conditions)
    assert (status.observed_generation, status.replicas, status.ready_replicas) == (3, 2, 2)
    assert (status.ready_summary, status.models_summary, status.profile) == ("2/2", "1/1", "cpu")
    assert status.selector == "wasminfer.dev/worker=hello" and status.url == "http://hello.ns.svc/hello"
    assert changes == [], "a healthy new worker produces no warnings"


def test_missing_model_waits_with_a_clear_reason() -> None:
    obs = dataclasses.replace(HEALTHY, models={}, decision=None, applied=False, deployment=None, pods=[])
    c = conds(obs)
    assert c["Ready"][:2] == ("False", "ModelNotFound") and "m" in c["Ready"][2]
    assert c["ModelsReady"][:2] == ("False", "ModelNotFound")
    assert c["Scheduled"][:2] == ("Unknown", "WaitingForModels")
    assert c["Progressing"][:2] == ("False", "ModelNotFound")
    status, changes = worker_status(obs, {}, T0)
    assert status.models_summary == "0/1"
    assert {(x.type, x.reason, x.warning) for x in changes} == {("Ready", "ModelNotFound", True), ("ModelsReady", "ModelNotFound", True)}


def test_model_not_ready_carries_the_models_reason() -> None:
    obs = dataclasses.replace(HEALTHY, models={"m": ModelState(True, False, "SourceNotFound", "ConfigMap w not found")}, decision=None)
    c = conds(obs)
    assert c["Ready"][:2] == ("False", "ModelNotReady") and "SourceNotFound ConfigMap w not found" in c["Ready"][2]


def test_rolling_out_then_complete() -> None:
    obs = dataclasses.replace(HEALTHY, deployment=deployment(ready=0, updated=0), pods=[pod(ready=False)])
    c = conds(obs)
    assert c["Progressing"][:2] == ("True", "RollingOut") and c["Ready"][:2] == ("False", "RollingOut")
    stale = dataclasses.replace(HEALTHY, desired_hash="h2")
    assert conds(stale)["Progressing"] == ("True", "RollingOut", "the Deployment is being updated")
    assert conds(dataclasses.replace(HEALTHY, deployment=None))["Progressing"] == ("True", "RollingOut", "creating the Deployment")


def test_unschedulable_then_fell_back() -> None:
    waiting = Decision(
        profile="intel-gpu", chain=("intel-gpu", "cpu"), unschedulable=("2030-01-01T11:59:00Z", "0/5 nodes: Insufficient gpu"),
        retry_after=60, fallback_due="2030-01-01T12:01:00Z",
    )
    obs = dataclasses.replace(HEALTHY, decision=waiting, deployment=deployment(ready=0), pods=[pod("intel-gpu", scheduled=False, ready=False)])
    c = conds(obs)
    assert c["Scheduled"][:2] == ("False", "Unschedulable")
    assert "Insufficient gpu" in c["Scheduled"][2] and "falling back to profile cpu at 2030-01-01T12:01:00Z" in c["Scheduled"][2]
    assert c["Ready"][:2] == ("False", "Unschedulable")
    assert conds(obs, now=T1) == c, "the message does not change while waiting (no status churn)"

    switched = dataclasses.replace(waiting, profile="cpu", switched_from="intel-gpu", retry_after=None, fallback_due=None)
    before, _ = worker_status(obs, {}, T0)
    status, changes = worker_status(dataclasses.replace(obs, decision=switched), before.wire(), T1)
    sched = next(x for x in status.conditions if x.type == "Scheduled")
    assert (sched.status, sched.reason) == ("False", "FellBack") and "moving to profile cpu" in sched.message
    assert ("Scheduled", "FellBack", True) in {(x.type, x.reason, x.warning) for x in changes}

    landed = Decision(profile="cpu", chain=("intel-gpu", "cpu"))
    c = conds(dataclasses.replace(HEALTHY, decision=landed))
    assert c["Scheduled"][:2] == ("True", "FellBack") and "fallback profile cpu" in c["Scheduled"][2]
    assert c["Ready"][:2] == ("True", "Available")


def test_conflicting_models_block_the_worker() -> None:
    d = Decision(profile=None, failure=("ConflictingModels", "the models need different device profiles"))
    c = conds(dataclasses.replace(HEALTHY, decision=d, applied=False))
    assert c["Scheduled"][:2] == ("False", "ConflictingModels") and c["Ready"][:2] == ("False", "ConflictingModels")


def test_degraded_by_failed_fetch_or_conflict() -> None:
    bad_pod = pod(ready=False, problem=("FetchFailed", "init container fetch: sha256 mismatch"))
    c = conds(dataclasses.replace(HEALTHY, deployment=deployment(ready=1), pods=[pod(name="a"), bad_pod]))
    assert c["Degraded"][:2] == ("True", "FetchFailed") and "sha256 mismatch" in c["Degraded"][2]
    assert c["Ready"][:2] == ("False", "FetchFailed")
    c = conds(dataclasses.replace(HEALTHY, apply_error=("ChildConflict", "Service hello exists"), applied=False))
    assert c["Degraded"][:2] == ("True", "ChildConflict") and c["Ready"][:2] == ("False", "ChildConflict")


def test_invalid_spec() -> None:
    c = conds(WorkerObservation(generation=1, spec_error="spec.route: route must start with '/'"))
    assert c["Ready"] == ("False", "InvalidSpec", "spec.route: route must start with '/'")


def test_scaled_to_zero_is_ready() -> None:
    c = conds(dataclasses.replace(HEALTHY, replicas=0, deployment=deployment(replicas=0, ready=0, updated=0), pods=[]))
    assert c["Ready"][:2] == ("True", "ScaledToZero") and c["Scheduled"][:2] == ("True", "NoReplicas")


def test_transition_times_kept_while_status_holds_and_events_on_change() -> None:
    first, _ = worker_status(HEALTHY, {}, T0)
    again, changes = worker_status(HEALTHY, first.wire(), T1)
    assert again == first and changes == [], "recomputing an unchanged status changes nothing"
    scaled = dataclasses.replace(HEALTHY, replicas=3, deployment=deployment(replicas=3, ready=2, updated=2))
    later, changes = worker_status(scaled, first.wire(), T1)
    times = {c.type: c.last_transition_time for c in later.conditions}
    assert times["ModelsReady"] == "2030-01-01T12:00:00Z" and times["Ready"] == "2030-01-01T12:05:00Z"
    assert {(x.type, x.status, x.reason, x.warning) for x in changes} == {
        ("Ready", "False", "RollingOut", False),
        ("Progressing", "True", "RollingOut", False),
    }


def waiting_pod() -> PodView:
    """A pod the scheduler has not looked at yet."""
    return dataclasses.replace(pod(scheduled=False, ready=False), unschedulable_since=None, unschedulable_message="")


def test_a_new_worker_posts_one_event_on_its_way_to_ready() -> None:
    """Creating, waiting for the scheduler and rolling out are in the conditions; the one event is
    the worker turning Ready. A thousand new workers are a thousand events, not three thousand."""
    new = dataclasses.replace(HEALTHY, replicas=1, deployment=None, pods=[])
    unobserved = dataclasses.replace(new, deployment=deployment(replicas=1, ready=0, updated=0, observed_generation=0))
    pending = dataclasses.replace(new, deployment=deployment(replicas=1, ready=0, updated=0), pods=[waiting_pod()])
    placed = dataclasses.replace(pending, pods=[pod(ready=False)])
    ready = dataclasses.replace(new, deployment=deployment(replicas=1, ready=1, updated=1), pods=[pod()])
    old: dict[str, Any] = {}
    posted = []
    for step in (new, unobserved, pending, placed, ready):
        status, changes = worker_status(step, old, T1)
        old = status.wire()
        posted += [(x.type, x.status, x.reason) for x in changes]
    assert posted == [("Ready", "True", "Available")]
    # Recovering from a problem is news, even through the wait for the scheduler.
    stuck = dataclasses.replace(pending, pods=[pod(scheduled=False, ready=False)])
    bad, _ = worker_status(stuck, {}, T0)
    assert conds(stuck)["Scheduled"][:2] == ("False", "Unschedulable")
    _, changes = worker_status(placed, bad.wire(), T1)
    assert ("Scheduled", "True", "Scheduled") in {(x.type, x.status, x.reason) for x in changes}


def test_messages_stay_put_while_a_new_worker_waits() -> None:
    """Each message that changes is a status write: a new worker's messages change when its state does,
    not as the Deployment and its pods appear."""
    new = dataclasses.replace(HEALTHY, replicas=1, deployment=None, pods=[])
    unobserved = dataclasses.replace(new, deployment=deployment(replicas=1, ready=0, updated=0, observed_generation=0))
    assert conds(new)["Progressing"] == conds(unobserved)["Progressing"] == ("True", "RollingOut", "creating the Deployment")
    pending = dataclasses.replace(unobserved, pods=[waiting_pod()])
    assert conds(new)["Scheduled"] == conds(pending)["Scheduled"] == ("Unknown", "Pending", "waiting for 1 of 1 pod with profile cpu to be scheduled")


def test_details_only_changes_are_told_apart_from_condition_changes() -> None:
    first = worker_status(dataclasses.replace(HEALTHY, deployment=deployment(ready=1)), {}, T0)[0].wire()
    more_ready = worker_status(dataclasses.replace(HEALTHY, deployment=deployment(ready=1, updated=1)), first, T0)[0].wire()
    assert first != more_ready and details_only(first, more_ready), "a count and a message changed, no condition"
    healthy = worker_status(HEALTHY, first, T0)[0].wire()
    assert not details_only(first, healthy), "Ready turned True"
    assert not details_only({}, first), "the first status"
    assert not details_only(healthy, worker_status(dataclasses.replace(HEALTHY, generation=4), healthy, T0)[0].wire()), "a new generation"
    moved = worker_status(dataclasses.replace(HEALTHY, decision=Decision(profile="intel-gpu", chain=("intel-gpu",))), healthy, T0)[0].wire()
    assert healthy["profile"] != moved["profile"] and not details_only(healthy, moved)
    model = model_status(ModelObservation(generation=1, backend="openvino", profile="cpu"), {}, T0)[0].wire()
    used = model_status(ModelObservation(generation=1, backend="openvino", profile="cpu", workers=["a"]), model, T0)[0].wire()
    assert used["workerCount"] == 1 and not details_only(model, used), "a model coming into use is news"
    more = model_status(ModelObservation(generation=1, backend="openvino", profile="cpu", workers=["a", "b"]), used, T0)[0].wire()
    assert details_only(used, more) and not details_only(used, model), "who else uses it is a detail; the last user leaving is not"


def test_model_status() -> None:
    obs = ModelObservation(generation=2, backend="openvino", profile="cpu", source=(True, "SourceResolved", "ConfigMap w holds model.xml"), workers=["b", "a"])
    status, changes = model_status(obs, {}, T0)
    (ready,) = status.conditions
    assert (ready.type, ready.status, ready.reason, ready.observed_generation) == ("Ready", "True", "SourceResolved", 2)
    assert (status.workers, status.worker_count, status.backend, status.profile) == (["a", "b"], 2, "openvino", "cpu")
    assert changes == []
    lost = dataclasses.replace(obs, source=(False, "SourceNotFound", "ConfigMap w not found"))
    status2, changes = model_status(lost, status.wire(), T1)
    assert status2.conditions[0].reason == "SourceNotFound"
    assert [(x.reason, x.warning) for x in changes] == [("SourceNotFound", True)]
    no_profile = ModelObservation(generation=1, profile_failure=("NoDeviceProfile", "no device profile provides device NPU"))
    assert model_status(no_profile, {}, T0)[0].conditions[0].reason == "NoDeviceProfile"
    many = dataclasses.replace(obs, workers=[f"w{i:03}" for i in range(150)])
    s, _ = model_status(many, {}, T0)
    assert len(s.workers) == 100 and s.worker_count == 150


def test_deleted_model_in_use_says_which_workers_hold_it() -> None:
    obs = ModelObservation(generation=3, source=(True, "SourceDeclared", ""), workers=["b", "a"])
    status, _ = model_status(obs, {}, T0)
    assert [c.type for c in status.conditions] == ["Ready"], "no Deleting condition before a deletion"
    held = dataclasses.replace(obs, deleting=True)
    status2, changes = model_status(held, status.wire(), T1)
    ready, deleting = status2.conditions
    assert ready.status == "True", "the model stays usable while its deletion waits"
    assert (deleting.type, deleting.status, deleting.reason) == ("Deleting", "True", "InUse")
    assert "2 WasmWorkers using this model: a, b" in deleting.message and "spec.models" in deleting.message
    assert [(x.type, x.reason, x.warning) for x in changes] == [("Deleting", "InUse", True)]
    assert "a, b" in changes[0].event_message
    one_left, changes = model_status(dataclasses.replace(held, workers=["b"]), status2.wire(), T1)
    assert "1 WasmWorker using this model: b;" in one_left.conditions[1].message and changes == []
    crowd = dataclasses.replace(held, workers=[f"w{i:03}" for i in range(103)])
    assert model_status(crowd, {}, T0)[0].conditions[1].message.count(", ") == 99
    assert "and 3 more" in model_status(crowd, {}, T0)[0].conditions[1].message
    unused = dataclasses.replace(held, workers=[])
    assert [c.type for c in model_status(unused, {}, T0)[0].conditions] == ["Ready"]


# --- rollouts: every pod counted, new and old revisions apart, stalls reported ---------------------


def rev_pod(name: str, template: str, ready: bool = True, scheduled: bool = True, message: str = "", problem: tuple[str, str] | None = None) -> PodView:
    since = None if scheduled or not message else "2030-01-01T11:58:00Z"
    return PodView(name, "hello", "cpu", scheduled, since, message, ready, False, problem, template_hash=template)


def rolling(ready: int, updated: int, **kw: Any) -> ChildView:
    return dataclasses.replace(deployment(ready=ready, updated=updated, template_hash="t2"), **kw)


def test_rollout_counts_new_and_old_pods_apart() -> None:
    # Two old pods serve; one new pod is ready, one is starting: old pods are not progress.
    pods = [rev_pod("o1", "t1"), rev_pod("o2", "t1"), rev_pod("n1", "t2"), rev_pod("n2", "t2", ready=False)]
    obs = dataclasses.replace(HEALTHY, deployment=dataclasses.replace(rolling(ready=3, updated=2), status_replicas=4, available_replicas=3), pods=pods)
    c = conds(obs)
    assert c["Progressing"] == ("True", "RollingOut", "1 of 2 new pods ready; 2 old pods still serving")
    assert c["Ready"] == ("False", "RollingOut", "1 of 2 new pods ready; 2 old pods still serving")
    done = dataclasses.replace(HEALTHY, deployment=rolling(ready=2, updated=2), pods=[rev_pod("n1", "t2"), rev_pod("n2", "t2")])
    assert conds(done)["Progressing"][:2] == ("False", "RolloutComplete")


def test_unschedulable_new_pod_shows_while_old_pods_run() -> None:
    # Scaling up onto a cordoned node: the running pod must not hide the one the scheduler refuses.
    msg = "0/6 nodes are available: 1 node(s) were unschedulable, 5 node(s) didn't match Pod's node affinity/selector."
    pods = [rev_pod("n1", "t2"), rev_pod("n2", "t2", ready=False, scheduled=False, message=msg)]
    obs = dataclasses.replace(HEALTHY, deployment=rolling(ready=1, updated=2, available_replicas=1), pods=pods)
    c = conds(obs)
    assert c["Scheduled"] == ("False", "Unschedulable", f"1 of 2 pods with profile cpu cannot be scheduled since 2030-01-01T11:58:00Z: {msg}")
    assert c["Ready"][:2] == ("False", "Unschedulable") and msg in c["Ready"][2] and "1 of 2 new pods ready (1 not scheduled)" in c["Ready"][2]
    _, changes = worker_status(obs, {}, T0)
    assert ("Scheduled", "Unschedulable", True) in {(x.type, x.reason, x.warning) for x in changes}
    # Not yet looked at by the scheduler: pending, with the count.
    waiting = dataclasses.replace(obs, pods=[rev_pod("n1", "t2"), rev_pod("n2", "t2", ready=False, scheduled=False)])
    assert conds(waiting)["Scheduled"] == ("Unknown", "Pending", "waiting for 1 of 2 pods with profile cpu to be scheduled")


def test_progress_deadline_exceeded_is_degraded_not_rolling_out() -> None:
    stalled = ("ProgressDeadlineExceeded", 'ReplicaSet "hello-5d8f" has timed out progressing.')
    pods = [rev_pod("o1", "t1"), rev_pod("n1", "t2", ready=False, scheduled=False, message="0/6 nodes are available: 1 Insufficient npu.intel.com/accel.")]
    obs = dataclasses.replace(HEALTHY, replicas=1, deployment=rolling(ready=1, updated=1, stalled=stalled, replicas=1), pods=pods)
    c = conds(obs)
    assert c["Degraded"] == ("True", "ProgressDeadlineExceeded", 'ReplicaSet "hello-5d8f" has timed out progressing.; 0 of 1 new pod ready (1 not scheduled); 1 old pod still serving')
    assert c["Progressing"][:2] == ("False", "ProgressDeadlineExceeded") and c["Progressing"][2].startswith("rollout stalled: ")
    assert c["Ready"][0] == "False"
    _, changes = worker_status(obs, {}, T0)
    assert ("Degraded", "ProgressDeadlineExceeded", True) in {(x.type, x.reason, x.warning) for x in changes}
    # A verdict about an older spec (the Deployment has not seen the new one yet) does not count.
    stale = dataclasses.replace(obs, deployment=dataclasses.replace(obs.deployment, observed_generation=0)) if obs.deployment else obs
    assert conds(stale)["Degraded"][0] == "False" and conds(stale)["Progressing"][:2] == ("True", "RollingOut")
    assert conds(dataclasses.replace(obs, desired_hash="h2"))["Degraded"][0] == "False"


def test_crash_loop_of_a_new_pod_stalls_the_rollout_and_an_old_one_does_not() -> None:
    crash = ("CrashLoopBackOff", "container runtime: model mobilenet failed to load")
    pods = [rev_pod("o1", "t1"), rev_pod("n1", "t2", ready=False, problem=crash)]
    obs = dataclasses.replace(HEALTHY, replicas=1, deployment=rolling(ready=1, updated=1, replicas=1), pods=pods)
    c = conds(obs)
    assert c["Degraded"] == ("True", "CrashLoopBackOff", "pod n1: container runtime: model mobilenet failed to load")
    assert c["Progressing"] == ("False", "CrashLoopBackOff", "rollout stalled: pod n1: container runtime: model mobilenet failed to load")
    # The old revision crashes while the fix rolls out: degraded, but the rollout goes on.
    fixing = dataclasses.replace(obs, pods=[rev_pod("o1", "t1", ready=False, problem=crash), rev_pod("n1", "t2", ready=False)])
    c = conds(fixing)
    assert c["Degraded"][:2] == ("True", "CrashLoopBackOff") and c["Progressing"][:2] == ("True", "RollingOut")


def test_views_read_the_deadline_and_the_revision() -> None:
    body: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"name": "hello", "generation": 2, "labels": {"wasminfer.dev/worker": "hello"}},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {TEMPLATE_HASH: "t2"}}}},
        "status": {
            "observedGeneration": 2,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": 'ReplicaSet "hello-5d8f" has timed out progressing.'},
            ],
        },
    }
    view = child_view(body)
    assert view.stalled == ("ProgressDeadlineExceeded", 'ReplicaSet "hello-5d8f" has timed out progressing.') and view.template_hash == "t2"
    body["status"]["conditions"][1] = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    assert child_view(body).stalled is None
    p = pod_view({"metadata": {"name": "hello-1", "labels": {"wasminfer.dev/worker": "hello"}, "annotations": {TEMPLATE_HASH: "t1"}}})
    assert p.template_hash == "t1"
