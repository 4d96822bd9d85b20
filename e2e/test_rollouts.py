"""Rollouts against the real control plane (kwok nodes, `_mocked_gpu`): a worker holding the only
device of its node rolls to a new spec instead of deadlocking on a surge pod; a pod the scheduler
refuses shows in Scheduled with the scheduler's words while an older pod still serves; and a rollout
that stops making progress turns Degraded (ProgressDeadlineExceeded) instead of RollingOut forever."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from operator_objects import device_and_cpu_nodes_yaml, device_and_cpu_profiles_yaml, own_nodes, own_operator, worker_yaml
from operator_process import OperatorProcess

from kube import Cluster

pytestmark = pytest.mark.cluster

PREFIX = "rollw-"  # namespaces this module's operator watches
NODE_LABEL = "wasminfer.dev/e2e-rollouts"
DEVICE = "example.com/accel"
DEADLINE_SECONDS = 12

NODES = device_and_cpu_nodes_yaml("rollouts-accel-1", "rollouts-cpu-1", NODE_LABEL, DEVICE)

# The accelerator profile leaves `rollout` unset: the operator's default for device profiles is
# what is under test.
OPERATOR_CONFIG = f"""
progressDeadlineSeconds: {DEADLINE_SECONDS}
""" + device_and_cpu_profiles_yaml(NODE_LABEL, DEVICE)


@pytest.fixture(scope="module")
def nodes(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with own_nodes(cluster, tmp_path_factory.mktemp("rollout-nodes"), NODES) as names:
        yield names


@pytest.fixture(scope="module")
def operator(cluster: Cluster, nodes: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with own_operator(cluster, tmp_path_factory.mktemp("rollout-operator"), OPERATOR_CONFIG, PREFIX, "rollouts") as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.new_namespace(PREFIX + request.node.name[5:30])
    yield name
    cluster.delete_namespace(name)


def worker(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = cluster.get_json("wasmworker", name, namespace=ns)
    return body


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def wait_for(cluster: Cluster, ns: str, name: str, what: str, timeout: float, **want: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """Waits until each named condition has (status, reason) for the worker's current generation."""
    last: list[Any] = [None]

    def check() -> dict[str, dict[str, Any]] | None:
        body = worker(cluster, ns, name)
        got = last[0] = conditions(body)
        generation = body["metadata"]["generation"]
        for type_, (status, reason) in want.items():
            c = got.get(type_) or {}
            if (c.get("status"), c.get("reason"), c.get("observedGeneration")) != (status, reason, generation):
                return None
        return got

    try:
        return cluster.wait_until(check, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\nlast conditions: {json.dumps(last[0], indent=1)}") from None


def pods(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", f"wasminfer.dev/worker={name}", namespace=ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_worker_on_a_one_device_node_rolls_instead_of_deadlocking_mocked_gpu(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("accel", placement={"profile": "e2e-accel"}, vars={"REVISION": "1"}), namespace=ns)
    wait_for(cluster, ns, "accel", "the worker on the one-device node", 60, Ready=("True", "Available"))
    (before,) = pods(cluster, ns, "accel")
    assert before["spec"]["nodeName"] == "rollouts-accel-1"
    strategy = cluster.get_json("deployment", "accel", namespace=ns)["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}

    # A new spec: the node's only device is held by the running pod. A surge pod would wait for it
    # forever; replacing the pod frees the device for its successor.
    cluster.kubectl("-n", ns, "patch", "wasmworker", "accel", "--type=merge", "-p", '{"spec": {"vars": {"REVISION": "2"}}}')
    got = wait_for(
        cluster, ns, "accel", "the rollout to complete on the one-device node", 60,
        Ready=("True", "Available"), Progressing=("False", "RolloutComplete"), Degraded=("False", "AsExpected"),
    )
    assert got["Scheduled"]["status"] == "True"
    (after,) = pods(cluster, ns, "accel")
    assert after["metadata"]["name"] != before["metadata"]["name"] and after["spec"]["nodeName"] == "rollouts-accel-1"


def test_unschedulable_new_pod_shows_while_the_old_one_serves_then_degraded_by_the_deadline(cluster: Cluster, ns: str) -> None:
    cluster.apply(worker_yaml("cpu", placement={"profile": "e2e-cpu"}), namespace=ns)
    wait_for(cluster, ns, "cpu", "the worker on its node", 60, Ready=("True", "Available"))
    cluster.kubectl("cordon", "rollouts-cpu-1")
    try:
        cluster.kubectl("-n", ns, "patch", "wasmworker", "cpu", "--type=merge", "-p", '{"spec": {"replicas": 2}}')
        got = wait_for(cluster, ns, "cpu", "Scheduled to show the scheduler's message", 60, Scheduled=("False", "Unschedulable"))
        message = got["Scheduled"]["message"]
        assert "1 of 2 pods with profile e2e-cpu cannot be scheduled" in message and "node(s) were unschedulable" in message, message
        assert got["Ready"]["status"] == "False" and "1 of 2 new pods ready (1 not scheduled)" in got["Ready"]["message"], got["Ready"]
        assert sum(1 for p in pods(cluster, ns, "cpu") if p["spec"].get("nodeName")) == 1, "the old pod still runs"

        # A new revision that cannot be placed either (Kubernetes applies the progress deadline to
        # rollouts, not to scaling): after progressDeadlineSeconds without progress the Deployment
        # gives up, and the worker says so instead of RollingOut forever.
        cluster.kubectl("-n", ns, "patch", "wasmworker", "cpu", "--type=merge", "-p", '{"spec": {"vars": {"REVISION": "2"}}}')
        got = wait_for(
            cluster, ns, "cpu", "Degraded=ProgressDeadlineExceeded", DEADLINE_SECONDS + 45,
            Degraded=("True", "ProgressDeadlineExceeded"), Progressing=("False", "ProgressDeadlineExceeded"),
        )
        degraded = got["Degraded"]["message"]
        assert "timed out progressing" in degraded and "0 of 2 new pods ready" in degraded and "1 old pod still serving" in degraded, degraded
        assert got["Scheduled"]["reason"] == "Unschedulable" and got["Ready"]["status"] == "False"
    finally:
        cluster.kubectl("uncordon", "rollouts-cpu-1")
    wait_for(
        cluster, ns, "cpu", "the worker to recover once the node takes pods", 60,
        Ready=("True", "Available"), Scheduled=("True", "Scheduled"), Degraded=("False", "AsExpected"),
    )
