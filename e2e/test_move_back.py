"""Moving back from a fallback against the real control plane (kwok nodes, `_mocked_gpu`): a worker
whose accelerator node is cordoned falls back to CPU, stays there while the node stays cordoned, and
returns to the accelerator profile once the node is uncordoned, saying so in an event and in its
Scheduled condition. Its own tainted nodes and an operator with short move-back timings keep it
under a minute."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from operator_objects import device_and_cpu_nodes_yaml, device_and_cpu_profiles_yaml, own_nodes, own_operator, worker_yaml
from operator_process import OperatorProcess

from kube import Cluster

pytestmark = pytest.mark.cluster

PREFIX = "mvbk-"  # namespaces this module's operator watches
NODE_LABEL = "wasminfer.dev/e2e-move-back"
DEVICE = "example.com/accel"
ACCEL_NODE = "moveback-accel-1"
CPU_NODE = "moveback-cpu-1"
HOLD_OFF, STABLE, CHECK = 4, 3, 1  # moveBackAfterSeconds, moveBackStableSeconds, moveBackCheckSeconds

NODES = device_and_cpu_nodes_yaml(ACCEL_NODE, CPU_NODE, NODE_LABEL, DEVICE)

OPERATOR_CONFIG = f"""
moveBackAfterSeconds: {HOLD_OFF}
moveBackStableSeconds: {STABLE}
moveBackCheckSeconds: {CHECK}
""" + device_and_cpu_profiles_yaml(NODE_LABEL, DEVICE)


@pytest.fixture(scope="module")
def nodes(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with own_nodes(cluster, tmp_path_factory.mktemp("move-back-nodes"), NODES) as names:
        yield names


@pytest.fixture(scope="module")
def operator(cluster: Cluster, nodes: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with own_operator(cluster, tmp_path_factory.mktemp("move-back-operator"), OPERATOR_CONFIG, PREFIX, "move-back") as op:
        yield op


@pytest.fixture
def ns(cluster: Cluster, operator: OperatorProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.new_namespace(PREFIX + request.node.name[5:30])
    yield name
    cluster.delete_namespace(name)


def wait_for(cluster: Cluster, ns: str, name: str, what: str, timeout: float, **want: tuple[str, str]) -> dict[str, Any]:
    """Waits until each named condition has (status, reason) for the current generation; returns the worker."""
    last: list[Any] = [None]

    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.get_json("wasmworker", name, namespace=ns)
        got = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
        last[0] = got
        generation = body["metadata"]["generation"]
        for type_, (status, reason) in want.items():
            c = got.get(type_) or {}
            if (c.get("status"), c.get("reason"), c.get("observedGeneration")) != (status, reason, generation):
                return None
        return body

    try:
        return cluster.wait_until(check, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\nlast conditions: {json.dumps(last[0], indent=1)}") from None


def the_pod(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    items = cluster.get_json("pods", "-l", f"wasminfer.dev/worker={name}", namespace=ns)["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in live]
    pod: dict[str, Any] = live[0]
    return pod


def test_falls_back_while_the_accelerator_node_is_cordoned_and_moves_back_once_uncordoned_mocked_gpu(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("cordon", ACCEL_NODE)
    try:
        placement = {"profile": "e2e-accel", "fallbacks": ["e2e-cpu"], "fallbackAfterSeconds": 3}
        cluster.apply(worker_yaml("mover", placement=placement), namespace=ns)
        body = wait_for(cluster, ns, "mover", "the fallback to e2e-cpu", 45, Scheduled=("True", "FellBack"), Ready=("True", "Available"))
        fell_back = time.monotonic()
        assert body["status"]["profile"] == "e2e-cpu"
        assert the_pod(cluster, ns, "mover")["spec"]["nodeName"] == CPU_NODE

        # Past the hold-off and the stable period the cordoned node still has no room: no move.
        time.sleep(max(HOLD_OFF + STABLE + 3 * CHECK - (time.monotonic() - fell_back), 0))
        body = cluster.get_json("wasmworker", "mover", namespace=ns)
        assert body["status"]["profile"] == "e2e-cpu", body["status"]
        assert the_pod(cluster, ns, "mover")["spec"]["nodeName"] == CPU_NODE
    finally:
        cluster.kubectl("uncordon", ACCEL_NODE)

    body = wait_for(cluster, ns, "mover", "the move back to e2e-accel", 45, Scheduled=("True", "MovedBack"), Ready=("True", "Available"))
    assert body["status"]["profile"] == "e2e-accel"
    scheduled = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
    assert "fallback profile e2e-cpu to profile e2e-accel" in scheduled["message"] and ACCEL_NODE in scheduled["message"], scheduled
    pod = the_pod(cluster, ns, "mover")
    assert pod["spec"]["nodeName"] == ACCEL_NODE and pod["metadata"]["labels"]["wasminfer.dev/profile"] == "e2e-accel"

    events = cluster.get_json("events", "--field-selector", "involvedObject.name=mover", namespace=ns)["items"]
    moved = [e for e in events if e["reason"] == "MovedBack"]
    assert moved and all(e["type"] == "Normal" for e in moved), [(e["type"], e["reason"]) for e in events]
    assert any("e2e-cpu" in e["message"] and "e2e-accel" in e["message"] for e in moved), [e["message"] for e in moved]
    assert ("Warning", "FellBack") in {(e["type"], e["reason"]) for e in events}
