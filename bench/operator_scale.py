"""Operator at scale: 1,000 WasmWorkers and 100 InferenceModels on the real test control plane.

    python bench/operator_scale.py [--workers 1000] [--models 100] [--cluster NAME]

Starts a test control plane (or attaches to `e2e/cluster/up --name NAME`), adds a kwok node with
room for every pod, runs `wasminfer-operator` out of cluster, creates the models and workers with
one `kubectl create`, and measures from the first object created until every worker has its
Deployment, until every worker (and model) has a status for its generation, and until every worker
is Ready (kwok reports the pods Running). The operator's peak RSS is read from /proc (VmHWM). Then
the operator is killed and restarted to measure a cold start over the existing objects. The
baseline is the API server itself: how long `kubectl create` of the same objects takes.
Goals: every Deployment and status within 60 s; peak RSS within 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from cluster import controlplane, state  # noqa: E402
from kube import Cluster  # noqa: E402
from kubernetes import client, config  # noqa: E402
from operator_objects import install_crds, model_yaml, worker_yaml  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

GOAL_SECONDS = 60.0
GOAL_RSS_MB = 200.0

BENCH_NODE = """
apiVersion: v1
kind: Node
metadata:
  name: bench-cpu-big
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: bench-cpu-big}
status:
  capacity: {cpu: "4000", memory: 16Ti, pods: "5000"}
  allocatable: {cpu: "4000", memory: 16Ti, pods: "5000"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake}
"""


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Watcher:
    """Polls the API (not kubectl: listing 1,000 objects must not be the bottleneck)."""

    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.ns = ns
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _items(self, resp: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(resp.data)["items"]
        return items

    def deployments(self) -> int:
        resp = self.apps.list_namespaced_deployment(self.ns, label_selector="app.kubernetes.io/managed-by=wasminfer-operator", _preload_content=False)
        return len(self._items(resp))

    def custom_objects(self, plural: str) -> list[dict[str, Any]]:
        return self._items(self.custom.list_namespaced_custom_object("wasminfer.dev", "v1alpha1", self.ns, plural, _preload_content=False))

    def with_status(self, plural: str) -> int:
        return sum(1 for o in self.custom_objects(plural) if (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"])

    def ready(self) -> int:
        def is_ready(o: dict[str, Any]) -> bool:
            conds = (o.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        return sum(1 for o in self.custom_objects("wasmworkers") if is_ready(o))


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]))
            except OSError:
                return


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(what: str, fn: Callable[[], int], target: int, start: float, timeout: float) -> tuple[float, int]:
    """(seconds from `start` until fn() reached target, or the timeout; the count reached)."""
    last_report = 0.0
    while True:
        n = fn()
        now = time.monotonic()
        if n >= target:
            say(f"{what}: {n}/{target} after {now - start:.1f} s")
            return now - start, n
        if now - last_report > 5:
            say(f"{what}: {n}/{target} ({now - start:.0f} s)")
            last_report = now
        if now - start > timeout:
            say(f"{what}: only {n}/{target} after {timeout:.0f} s")
            return now - start, n
        time.sleep(0.3)


def seconds(result: tuple[float, int], target: int) -> str:
    t, n = result
    return f"{t:.1f} s" if n >= target else f"{n}/{target} in {t:.0f} s"


def attach_or_start(name: str | None) -> tuple[Cluster, bool]:
    if name:
        running = state.load(name)
        if running is None:
            raise SystemExit(f"no running cluster named {name!r}: start one with e2e/cluster/up --name {name}")
        return Cluster.from_state(running), False
    say("starting a test control plane (e2e/cluster)")
    return Cluster.from_state(controlplane.up(f"bench-{os.getpid()}")), True


def run(args: argparse.Namespace) -> int:
    cluster, owned = attach_or_start(args.cluster or os.environ.get("WASMINFER_E2E_CLUSTER"))
    tmp = Path(tempfile.mkdtemp(prefix="wasminfer-bench-"))
    try:
        node = tmp / "bench-node.yaml"
        node.write_text(BENCH_NODE)
        added_node = not cluster.exists("node", "bench-cpu-big")
        if added_node:
            cluster.add_nodes(node)
        install_crds(cluster)
        ns = f"bench-scale-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", ns)
        docs = [model_yaml(f"m{i:03}") for i in range(args.models)]
        docs += [worker_yaml(f"w{i:04}", [f"m{i % args.models:03}"]) for i in range(args.workers)]
        manifest = tmp / "objects.yaml"
        manifest.write_text("---\n".join(docs))

        # Baseline: the API server creating the same objects, with no operator running.
        base_ns = f"{ns}-baseline"
        cluster.kubectl("create", "namespace", base_ns)
        t0 = time.monotonic()
        cluster.kubectl("create", "-n", base_ns, "-f", str(manifest), timeout=600)
        baseline = time.monotonic() - t0
        say(f"baseline: kubectl create of {len(docs)} objects took {baseline:.1f} s")
        cluster.kubectl("delete", "namespace", base_ns, "--wait=false")

        op = OperatorProcess(cluster.kubeconfig, tmp / "operator.log", namespaces=[ns], lease_name="bench", lease_namespace=ns)
        op.start()
        op.wait_leading()
        idle_rss = op.peak_rss_kib()
        sampler = RssSampler(op.pid)
        sampler.start()
        watcher = Watcher(cluster.kubeconfig, ns)

        cpu_before = cpu_seconds(op.pid)
        start = time.monotonic()
        cluster.kubectl("create", "-n", ns, "-f", str(manifest), timeout=600)
        created = time.monotonic() - start
        say(f"created {len(docs)} objects in {created:.1f} s")
        deploy = wait_for("Deployments", watcher.deployments, args.workers, start, args.timeout)
        worker_status = wait_for("worker status", lambda: watcher.with_status("wasmworkers"), args.workers, start, args.timeout)
        model_status = wait_for("model status", lambda: watcher.with_status("inferencemodels"), args.models, start, args.timeout)
        ready = wait_for("workers Ready", watcher.ready, args.workers, start, args.timeout)
        peak_rss = op.peak_rss_kib()
        cpu_used = cpu_seconds(op.pid) - cpu_before
        sampler.stopped.set()
        health = (op.health() or {}).get("reconciler", {})

        # Cold start over everything that now exists: list, cache, re-check every object.
        op.kill()
        restarted = OperatorProcess(cluster.kubeconfig, tmp / "operator-restart.log", namespaces=[ns], lease_name="bench-restart", lease_namespace=ns)
        t1 = time.monotonic()
        restarted.start()
        restarted.wait_leading()

        def rechecked() -> int:
            r = (restarted.health() or {}).get("reconciler", {})
            return int(r.get("reconciles", 0)) if r.get("queued", 1) == 0 else 0

        restart = wait_for("reconciles after restart", rechecked, args.workers + args.models, t1, args.timeout)
        restart_rss = restarted.peak_rss_kib()
        restarted.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        if added_node:
            cluster.kubectl("delete", "node", "bench-cpu-big", "--wait=false")
    finally:
        if owned:
            controlplane.down(cluster.name)

    mb = 1024.0
    rows = [
        ("kubectl create of the objects, no operator (baseline)", f"{baseline:.1f} s", "", ""),
        ("kubectl create of the objects, operator running", f"{created:.1f} s", "", f"{created / baseline:.2f}x baseline"),
        (f"every worker has its Deployment ({args.workers})", seconds(deploy, args.workers), f"<= {GOAL_SECONDS:.0f} s", f"{deploy[0] / GOAL_SECONDS:.2f} of goal"),
        (f"every worker has its status ({args.workers})", seconds(worker_status, args.workers), f"<= {GOAL_SECONDS:.0f} s", f"{worker_status[0] / GOAL_SECONDS:.2f} of goal"),
        (f"every model has its status ({args.models})", seconds(model_status, args.models), f"<= {GOAL_SECONDS:.0f} s", f"{model_status[0] / GOAL_SECONDS:.2f} of goal"),
        ("every worker Ready (kwok pods Running)", seconds(ready, args.workers), "", f"{ready[0] / baseline:.2f}x baseline"),
        ("operator RSS idle, before the objects", f"{idle_rss / mb:.0f} MB", "", ""),
        ("operator peak RSS (VmHWM)", f"{peak_rss / mb:.0f} MB", f"<= {GOAL_RSS_MB:.0f} MB", f"{peak_rss / mb / GOAL_RSS_MB:.2f} of goal"),
        ("operator RSS median while working", f"{sorted(sampler.samples)[len(sampler.samples) // 2] / mb:.0f} MB" if sampler.samples else "-", "", ""),
        ("operator CPU time until every worker Ready", f"{cpu_used:.1f} s", "", f"{cpu_used / ready[0]:.2f} cores"),
        ("reconciles done (coalesced from watch events)", str(health.get("reconciles", "?")), "", ""),
        ("restart: every object re-checked", seconds(restart, args.workers + args.models), "", ""),
        ("restart: peak RSS", f"{restart_rss / mb:.0f} MB", f"<= {GOAL_RSS_MB:.0f} MB", f"{restart_rss / mb / GOAL_RSS_MB:.2f} of goal"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\noperator scale: {args.workers} WasmWorkers, {args.models} InferenceModels, one namespace")
    print(f"{'measure'.ljust(width)}  {'value':>14}  {'goal':>9}  ratio")
    for name, value, goal, ratio in rows:
        print(f"{name.ljust(width)}  {value:>14}  {goal:>9}  {ratio}")
    in_time = all(r[1] >= n and r[0] <= GOAL_SECONDS for r, n in ((deploy, args.workers), (worker_status, args.workers), (model_status, args.models)))
    met = in_time and peak_rss / mb <= GOAL_RSS_MB and restart_rss / mb <= GOAL_RSS_MB
    print(f"\ngoals (<= {GOAL_SECONDS:.0f} s to Deployments and status, <= {GOAL_RSS_MB:.0f} MB peak RSS): {'met' if met else 'NOT met'}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--cluster", help="attach to a cluster started with e2e/cluster/up --name NAME")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a phase after this many seconds")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
