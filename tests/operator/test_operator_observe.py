"""Compact views of watched pods and Deployments keep exactly what status needs."""

from __future__ import annotations

from typing import Any

from wasminfer_operator.observe import child_view, object_view, pod_view

LABELS = {"wasminfer.dev/worker": "hello", "wasminfer.dev/profile": "intel-gpu", "app.kubernetes.io/managed-by": "wasminfer-operator"}


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "hello-abc", "labels": LABELS}, "spec": {}, "status": status}


def test_unschedulable_pod() -> None:
    v = pod_view(
        pod(
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/5 nodes are available: 5 Insufficient gpu.intel.com/i915.",
                    "lastTransitionTime": "2030-01-01T00:00:00Z",
                }
            ],
        )
    )
    assert (v.worker, v.profile, v.scheduled, v.ready) == ("hello", "intel-gpu", False, False)
    assert v.unschedulable_since == "2030-01-01T00:00:00Z" and "Insufficient" in v.unschedulable_message


def test_running_ready_pod() -> None:
    body = pod(conditions=[{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}])
    body["spec"]["nodeName"] = "cpu-1"
    v = pod_view(body)
    assert v.scheduled and v.ready and v.unschedulable_since is None and v.problem is None


def test_failed_fetch_is_reported_with_its_message() -> None:
    v = pod_view(
        pod(
            initContainerStatuses=[
                {
                    "name": "fetch",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "1 of 2 file(s) failed:\nhttps://x/m.bin: sha256 mismatch"}},
                }
            ]
        )
    )
    assert v.problem is not None and v.problem[0] == "FetchFailed" and "sha256 mismatch" in v.problem[1]


def test_crash_looping_runtime() -> None:
    v = pod_view(pod(containerStatuses=[{"name": "runtime", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]))
    assert v.problem == ("CrashLoopBackOff", "container runtime: back-off")


def test_killed_runtime_is_reported_until_it_is_ready_again() -> None:
    killed = {"name": "runtime", "ready": False, "started": False, "restartCount": 1, "state": {"running": {}},
              "lastState": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": "2030-01-01T00:00:00Z"}}}
    unready = {"type": "Ready", "status": "False", "lastTransitionTime": "2030-01-01T00:00:01Z"}
    v = pod_view(pod(conditions=[unready], containerStatuses=[killed]))
    assert v.problem is not None and v.problem[0] == "ContainerRestarted"
    assert "exited with code 137 (Error)" in v.problem[1] and "restarted 1 time(s)" in v.problem[1]
    # Started again (its startup probe passed) and still loading: still the restart's doing.
    assert pod_view(pod(conditions=[unready], containerStatuses=[{**killed, "started": True}])).problem is not None
    back = pod_view(pod(conditions=[{"type": "Ready", "status": "True"}], containerStatuses=[{**killed, "ready": True}]))
    assert back.ready and back.problem is None


def test_an_old_restart_does_not_explain_a_new_readiness_failure() -> None:
    old = {"name": "runtime", "ready": False, "started": True, "restartCount": 1, "state": {"running": {}},
           "lastState": {"terminated": {"exitCode": 137, "finishedAt": "2030-01-01T00:00:00Z"}}}
    later = {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": "2030-01-01T05:00:00Z"}
    assert pod_view(pod(conditions=[later], containerStatuses=[old])).problem is None


def test_the_runtimes_own_reason_is_passed_on_and_a_log_tail_is_not() -> None:
    def restarted(code: int, message: str) -> dict[str, Any]:
        return {"name": "runtime", "ready": False, "started": False, "restartCount": 2, "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {"terminated": {"exitCode": code, "message": message, "finishedAt": "2030-01-01T00:00:00Z"}}}

    unready = {"type": "Ready", "status": "False", "lastTransitionTime": "2030-01-01T00:00:00Z"}
    said = pod_view(pod(conditions=[unready], containerStatuses=[restarted(3, "failed to load: worker w: /m.wasm: bad magic\n")]))
    assert said.problem is not None
    assert said.problem[1].startswith("container runtime exited with code 3: failed to load: worker w: /m.wasm: bad magic;")
    tail = pod_view(pod(conditions=[unready], containerStatuses=[restarted(137, "INFO a log line\nINFO another\n")]))
    assert tail.problem is not None and "log line" not in tail.problem[1]


def test_pod_of_a_node_that_stopped_reporting() -> None:
    body = pod(
        conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": "2030-01-01T00:00:00Z"}],
        containerStatuses=[{"name": "runtime", "ready": True, "state": {"running": {}}}],
    )
    body["spec"]["nodeName"] = "real-1"
    v = pod_view(body)
    assert v.problem is not None and v.problem[0] == "NodeNotReady" and "node real-1 stopped reporting" in v.problem[1]
    # A pod that is simply starting (containers not ready yet) is not a node problem, nor one whose
    # readiness gates are not met (the kubelet gives that one a reason).
    starting = pod(conditions=[{"type": "Ready", "status": "False"}], containerStatuses=[{"name": "runtime", "ready": False}])
    assert pod_view(starting).problem is None
    gated = pod(conditions=[{"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady"}],
                containerStatuses=[{"name": "runtime", "ready": True}])
    assert pod_view(gated).problem is None


def test_deployment_view() -> None:
    body = {
        "kind": "Deployment",
        "metadata": {
            "name": "hello",
            "generation": 3,
            "labels": LABELS,
            "annotations": {"wasminfer.dev/render-hash": "abc"},
            "ownerReferences": [{"uid": "u1", "controller": True}],
        },
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "availableReplicas": 1,
            "conditions": [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}],
        },
    }
    v = child_view(body)
    assert (v.kind, v.worker, v.owner_uid, v.render_hash) == ("Deployment", "hello", "u1", "abc")
    assert (v.generation, v.observed_generation, v.replicas, v.ready_replicas, v.updated_replicas) == (3, 3, 2, 1, 2)
    assert v.failure == "exceeded quota"


def test_object_view() -> None:
    v = object_view({"kind": "WasmWorker", "metadata": {"namespace": "ns", "name": "w", "uid": "u", "generation": 4, "deletionTimestamp": "x"}, "spec": {"a": 1}})
    assert v.key == ("ns", "w") and v.generation == 4 and v.deleting and v.status == {}
    assert v.reference() == {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"namespace": "ns", "name": "w", "uid": "u"}}
    assert v.finalizers == ()
    held = object_view({"kind": "InferenceModel", "metadata": {"name": "m", "finalizers": ["wasminfer.dev/in-use-protection", "x/y"]}})
    assert held.finalizers == ("wasminfer.dev/in-use-protection", "x/y")
