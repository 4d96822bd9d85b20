"""The operator survives being killed and runs as several replicas: a SIGKILL in the middle of a burst,
then changes while it is down, converge after a restart with no duplicate and no orphaned child; of
two replicas only the Lease holder acts, and the standby takes over when the holder dies, at once
when it was stopped (it releases the Lease), with no false ModelNotFound; an API server that stops
for a few seconds is ridden out by the leader."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import OperatorProcess
from operator_objects import install_crds, let_models_go, model_yaml, worker_yaml

from cluster import controlplane, processes, state
from kube import Cluster

pytestmark = pytest.mark.cluster

TOTAL = 80  # workers in the burst the operator is killed in


@pytest.fixture
def own_ns(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace no other operator of the test run watches."""
    install_crds(cluster)
    name = cluster.new_namespace("opk-" + request.node.name[5:30])
    yield name
    let_models_go(cluster, name)
    cluster.delete_namespace(name)


def operator_for(cluster: Cluster, ns: str, tmp_path: Path, tag: str) -> OperatorProcess:
    return OperatorProcess(cluster.kubeconfig, tmp_path / f"operator-{tag}.log", namespaces=[ns], lease_name=f"lease-{ns}", lease_namespace=ns)


def names(cluster: Cluster, kind: str, ns: str) -> list[str]:
    items = cluster.get_json(kind, "-l", "app.kubernetes.io/managed-by=wasminfer-operator", namespace=ns)["items"]
    return sorted(i["metadata"]["name"] for i in items if not i["metadata"].get("deletionTimestamp"))


def workers(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    return {w["metadata"]["name"]: w for w in cluster.get_json("wasmworkers", namespace=ns)["items"]}


def settled(cluster: Cluster, ns: str) -> bool:
    for w in workers(cluster, ns).values():
        st = w.get("status") or {}
        ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
        if st.get("observedGeneration") != w["metadata"]["generation"] or ready.get("status") != "True":
            return False
    return True


def test_killed_mid_burst_then_restarted_converges_without_duplicates_or_orphans(cluster: Cluster, own_ns: str, tmp_path: Path) -> None:
    ns = own_ns
    first = operator_for(cluster, ns, tmp_path, "first").start()
    first.wait_leading()
    docs = [model_yaml("shared")] + [worker_yaml(f"w{i:02}", ["shared"]) for i in range(TOTAL)]
    # The burst is still being created when the operator dies: the kill lands in its middle
    # however fast the operator keeps up.
    burst = subprocess.Popen(["kubectl", "create", "-n", ns, "-f", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cluster.env, text=True)
    assert burst.stdin is not None and burst.stderr is not None
    burst.stdin.write("---\n".join(docs))
    burst.stdin.close()
    cluster.wait_until(lambda: len(names(cluster, "deployments", ns)) >= 1, 60, "the first Deployment", interval=0.05)
    first.kill()
    done_before_kill = len(names(cluster, "deployments", ns))
    assert burst.wait(timeout=120) == 0, f"kubectl create failed: {burst.stderr.read()}"
    assert done_before_kill < TOTAL, "killed in the middle of the burst"

    # While no operator runs: delete some workers, change others, add new ones.
    cluster.kubectl("delete", "wasmworker", "w00", "w01", f"w{TOTAL - 1}", "-n", ns)
    for w in ("w02", f"w{TOTAL - 2}"):
        cluster.kubectl("patch", "wasmworker", w, "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 2, "route": "/changed"}}')
    cluster.apply("---\n".join(worker_yaml(f"n{i}", ["shared"]) for i in range(3)), namespace=ns)

    second = operator_for(cluster, ns, tmp_path, "second").start()
    try:
        cluster.wait_until(lambda: settled(cluster, ns), 180, "every worker Ready at its current generation")
        expected = sorted(workers(cluster, ns))
        assert len(expected) == TOTAL
        cluster.wait_until(lambda: names(cluster, "deployments", ns) == expected, 60, "one Deployment per worker, none for deleted ones")
        assert names(cluster, "services", ns) == expected
        assert names(cluster, "configmaps", ns) == sorted(f"{w}-runtime" for w in expected)
        uids = {n: w["metadata"]["uid"] for n, w in workers(cluster, ns).items()}
        for dep in cluster.get_json("deployments", namespace=ns)["items"]:
            (owner,) = dep["metadata"]["ownerReferences"]
            assert owner["uid"] == uids[dep["metadata"]["name"]]
        cluster.wait_until(lambda: len(names(cluster, "pods", ns)) == TOTAL + 2, 60, f"{TOTAL + 2} pods (two workers have 2 replicas)")
        changed = yaml.safe_load(cluster.get_json("configmap", "w02-runtime", namespace=ns)["data"]["runtime.yaml"])
        assert changed["workers"][0]["route"] == "/changed"
        assert cluster.get_json("deployment", f"w{TOTAL - 2}", namespace=ns)["spec"]["replicas"] == 2
        model = cluster.get_json("inferencemodel", "shared", namespace=ns)["status"]
        assert model["workerCount"] == TOTAL and "w00" not in model["workers"]
    finally:
        second.stop()


def test_only_the_lease_holder_acts_and_the_standby_takes_over(cluster: Cluster, own_ns: str, tmp_path: Path) -> None:
    ns = own_ns
    a = operator_for(cluster, ns, tmp_path, "a").start()
    b = operator_for(cluster, ns, tmp_path, "b").start()
    try:
        a.wait_live()
        b.wait_live()
        cluster.wait_until(lambda: a.leading() or b.leading(), 60, "one replica to lead")
        time.sleep(3)
        assert a.leading() != b.leading(), "exactly one replica leads"
        leader, standby = (a, b) if a.leading() else (b, a)
        cluster.apply(worker_yaml("first"), namespace=ns)
        cluster.wait("wasmworker/first", "Ready", timeout=60, namespace=ns)
        standby_report = (standby.health() or {})["reconciler"]
        assert standby_report["leading"] is False and standby_report["reconciles"] == 0, standby_report
        lease = cluster.get_json("lease", f"lease-{ns}", namespace=ns)
        assert lease["spec"]["holderIdentity"]

        leader.kill()
        standby.wait_leading(timeout=60)
        cluster.apply(worker_yaml("second"), namespace=ns)
        cluster.wait("wasmworker/second", "Ready", timeout=60, namespace=ns)
        assert cluster.get_json("lease", f"lease-{ns}", namespace=ns)["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"]
    finally:
        a.stop()
        b.stop()


def test_a_stopped_leader_hands_over_at_once_and_its_successor_raises_no_false_alarm(cluster: Cluster, own_ns: str, tmp_path: Path) -> None:
    """SIGTERM (a rollout of the operator) releases the Lease: the next replica takes it without
    waiting out the lease duration, then re-checks every worker before its model index is filled
    without reporting ModelNotFound."""
    ns = own_ns
    long_lease = 30  # a successor that had to wait for expiry would wait this long

    def replica(tag: str) -> OperatorProcess:
        return OperatorProcess(cluster.kubeconfig, tmp_path / f"operator-{tag}.log", namespaces=[ns],
                               lease_name=f"lease-{ns}", lease_namespace=ns, lease_duration=long_lease)  # fmt: skip

    first = replica("first").start()
    second = replica("second")
    try:
        first.wait_leading()
        cluster.apply(model_yaml("shared"), namespace=ns)
        cluster.wait("inferencemodel/shared", "Ready", timeout=60, namespace=ns)
        cluster.apply("---\n".join(worker_yaml(f"w{i}", ["shared"]) for i in range(10)), namespace=ns)
        cluster.wait_until(lambda: len(workers(cluster, ns)) == 10 and settled(cluster, ns), 120, "10 workers Ready")
        assert first.stop() == 0, first.tail()
        assert not cluster.get_json("lease", f"lease-{ns}", namespace=ns)["spec"].get("holderIdentity"), "released"

        began = time.monotonic()
        second.start()
        second.wait_leading(timeout=long_lease)
        took = time.monotonic() - began
        assert took < long_lease / 2, f"took {took:.1f} s to lead: the Lease was not released"
        cluster.apply(worker_yaml("after"), namespace=ns)  # the successor acts
        cluster.wait("wasmworker/after", "Ready", timeout=60, namespace=ns)
        time.sleep(3)  # its re-check of every worker is done by now; a false alarm would show
        events = cluster.get_json("events", namespace=ns)["items"]
        alarms = [(e["involvedObject"]["name"], e["reason"], e["message"]) for e in events if e["reason"] == "ModelNotFound"]
        assert alarms == [], alarms
        assert settled(cluster, ns), {n: (w.get("status") or {}).get("conditions") for n, w in workers(cluster, ns).items()}
        assert "ModelNotFound" not in second.tail(400)
    finally:
        second.stop()
        first.stop()


def test_the_leader_rides_out_an_api_server_stopped_for_seconds(cluster_bin_dir: Path, tmp_path: Path) -> None:
    """kube-apiserver stops for ~5 s and starts again (connections refused, watches broken) on a
    cluster of the test's own: the operator keeps running and its Lease, then reconciles changes."""
    own_state = controlplane.up(f"opblip-{os.getpid()}", bin_dir=cluster_bin_dir, nodes=None)
    own = Cluster.from_state(own_state)
    op: OperatorProcess | None = None
    try:
        install_crds(own)
        ns = own.new_namespace("blip")
        # The renew deadline (lease duration - 1) outlasts the 5 s stop plus the API server's restart.
        op = OperatorProcess(own.kubeconfig, tmp_path / "operator.log", namespaces=[ns], lease_name="lease-blip", lease_namespace=ns, lease_duration=40)
        op.start()
        op.wait_leading()
        own.apply(worker_yaml("before"), namespace=ns)
        own.wait_until(lambda: names(own, "deployments", ns) == ["before"], 60, "the first worker's Deployment")
        holder = own.get_json("lease", "lease-blip", namespace=ns)["spec"]["holderIdentity"]

        (apiserver,) = [p for p in own_state.processes if p.component == "kube-apiserver"]
        argv = [a.decode() for a in Path(f"/proc/{apiserver.pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        assert processes.stop(apiserver.pid, apiserver.exe)
        time.sleep(5)
        assert op.alive(), f"the operator exited while the API server was down:\n{op.tail()}"
        apiserver.pid = processes.start(argv, Path(apiserver.log), die_with_parent=True).pid
        state.save(own_state)
        own.wait_until(lambda: own.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, 60, "the API server to answer again")

        own.apply(worker_yaml("after"), namespace=ns)
        own.wait_until(lambda: names(own, "deployments", ns) == ["after", "before"], 60, "the Deployment of a worker created after the outage")
        assert op.alive() and op.leading(), op.tail()
        assert own.get_json("lease", "lease-blip", namespace=ns)["spec"]["holderIdentity"] == holder
        assert "steps down" not in op.log_path.read_text(errors="replace")
    finally:
        if op is not None:
            op.stop()
        controlplane.teardown(own_state)
