"""Operator at scale: 1,000 WasmWorkers and 100 InferenceModels on the real test control plane.

    python bench/operator_scale.py [--workers 1000] [--models 100] [--cluster NAME]

Starts a test control plane (or attaches to `e2e/cluster/up --name NAME`), adds a kwok node with
room for every pod, runs `wasminfer-operator` out of cluster, creates the models and workers with
one `kubectl create`, and measures from the first object created until every worker has its
Deployment, until every worker (and model) has a status for its generation, and until every worker
is Ready (kwok reports the pods Running). The operator's peak RSS is read from /proc (VmHWM). Then
the operator is killed and restarted to measure a cold start over the existing objects. The
baseline is the API server itself: how long `kubectl create` of the same objects takes.
Goals: every Deployment and status within 30 s; peak RSS within 150 MB.

Two more measures:
- idle API requests: with 50 Ready workers (and 5 models) in a namespace of their own, the requests
  the API server completes in one quiet minute (apiserver_request_total), by verb and resource;
- the child caches: `operator_caches.py` fills the caches of the 1,000 workers' children once with
  kopf indexes and once with the hand-made informers, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from cluster import controlplane, state  # noqa: E402
from kube import Cluster  # noqa: E402
from kubernetes import client, config  # noqa: E402
from operator_objects import install_crds, model_yaml, worker_yaml  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402
from wasminfer_operator import api  # noqa: E402
from wasminfer_operator.profiles import load_operator_config  # noqa: E402
from wasminfer_operator.render import NamedModel, ObjectRef, render_worker  # noqa: E402

GOAL_SECONDS = 30.0
GOAL_RSS_MB = 150.0
IDLE_WORKERS = 50
KUBE_THREADS = 16  # the operator's API threads (its --concurrency default)
IDLE_SECONDS = 60.0
IDLE_SETTLE_SECONDS = 60.0

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


def request_counts(cluster: Cluster) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource), read from the API server's /metrics."""
    out: dict[tuple[str, str], float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        fields = dict(part.split("=", 1) for part in labels.split('",') if "=" in part)
        verb, resource = fields.get("verb", "").strip('"'), fields.get("resource", "").strip('"')
        out[(verb, resource)] = out.get((verb, resource), 0.0) + float(value)
    return out


def rendered_children(ns: str, model_docs: list[str], worker_docs: list[str]) -> list[dict[str, Any]]:
    """What the operator writes for the workers, rendered by its own render functions: every
    worker's ConfigMap, Service and Deployment (without owner references, since nothing owns them)."""
    cfg = load_operator_config(env={})
    models = {}
    for doc in model_docs:
        body = yaml.safe_load(doc)
        models[body["metadata"]["name"]] = api.InferenceModelSpec.model_validate(body["spec"])
    out = []
    for i, doc in enumerate(worker_docs):
        body = yaml.safe_load(doc)
        spec = api.WasmWorkerSpec.model_validate(body["spec"])
        named = [NamedModel(m, models[m]) for m in spec.models]
        rendered = render_worker(ObjectRef(body["metadata"]["name"], ns, f"floor-{i}"), spec, named, "cpu", cfg)
        for child in rendered.children:
            child["metadata"].pop("ownerReferences", None)
            out.append(child)
    return out


def floor(cluster: Cluster, ns: str, objects: Path, children: list[dict[str, Any]], threads: int) -> float:
    """Seconds until the objects and their children exist when the user's kubectl creates the
    objects while a stand-in for an operator that costs nothing and writes no status applies the
    children, as many at once as the operator's API threads."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = threads
    api_client = client.ApiClient(configuration)
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    methods = {"ConfigMap": core.patch_namespaced_config_map, "Service": core.patch_namespaced_service, "Deployment": apps.patch_namespaced_deployment}

    def apply(child: dict[str, Any]) -> None:
        meta = child["metadata"]
        methods[child["kind"]](meta["name"], ns, child, field_manager="bench-floor", _content_type="application/apply-patch+yaml", _preload_content=False)

    t0 = time.monotonic()
    user = subprocess.Popen([str(cluster.bin_dir / "kubectl"), "create", "-n", ns, "-f", str(objects)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cluster.env)  # fmt: skip
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(apply, children))
    _, err = user.communicate(timeout=600)
    if user.returncode != 0:
        raise SystemExit(f"floor: kubectl create failed: {err[-2000:]}")
    return time.monotonic() - t0


def drop_namespace(cluster: Cluster, ns: str) -> None:
    """Delete a namespace and wait until it is gone, letting its models go first (with no operator
    running, their in-use finalizer would hold the namespace): a namespace still being emptied
    would load the API server during the next measurement."""
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    held = "jsonpath={range .items[?(@.metadata.finalizers)]}{.metadata.name}{'\\n'}{end}"
    for name in cluster.kubectl("get", "inferencemodels", "-n", ns, "-o", held).stdout.split():
        cluster.kubectl("patch", "-n", ns, "inferencemodel", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    cluster.kubectl("wait", "--for=delete", f"namespace/{ns}", "--timeout=600s", timeout=620)
    settle(cluster)


def settle(cluster: Cluster, quiet_writes: float = 10.0, window: float = 3.0, timeout: float = 180.0) -> None:
    """Wait until the control plane is quiet (fewer than `quiet_writes` writes in `window` seconds):
    its controllers go on cleaning up after a deleted namespace (endpoints, replica sets) for a while."""
    reads = {"GET", "LIST", "WATCH", "WATCHLIST"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = request_counts(cluster)
        time.sleep(window)
        after = request_counts(cluster)
        writes = sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] not in reads)
        if writes < quiet_writes:
            return
    say(f"the control plane was not quiet after {timeout:.0f} s; measuring anyway")


def per_worker(counts: dict[tuple[str, str], float], workers: int, at_least: float = 0.05) -> str:
    rows = sorted(((n / workers, verb, resource) for (verb, resource), n in counts.items() if n / workers >= at_least), reverse=True)
    return ", ".join(f"{verb} {resource or '(non-resource)'} {share:.2f}" for share, verb, resource in rows)


def quiet_minute(cluster: Cluster) -> dict[tuple[str, str], float]:
    """The requests the API server completes in IDLE_SECONDS, by (verb, resource)."""
    before = request_counts(cluster)
    time.sleep(IDLE_SECONDS)
    after = request_counts(cluster)
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def idle_requests(cluster: Cluster, tmp: Path) -> tuple[float, float, dict[tuple[str, str], float]]:
    """API requests per minute while an operator watches 50 Ready workers, and the same minute once
    it has stopped (the control plane's own: kwok, controllers, node leases). The operator's share
    is the difference."""
    ns = f"bench-idle-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = [model_yaml(f"m{i}") for i in range(5)] + [worker_yaml(f"w{i:02}", [f"m{i % 5}"]) for i in range(IDLE_WORKERS)]
    manifest = tmp / "idle.yaml"
    manifest.write_text("---\n".join(docs))
    # The Lease timings of a production install (15/10/2 s), not the e2e tests' short ones.
    op = OperatorProcess(cluster.kubeconfig, tmp / "operator-idle.log", namespaces=[ns], lease_name="bench-idle", lease_namespace=ns,
                         lease_duration=15, extra_args=["--renew-deadline", "10", "--retry-period", "2"])  # fmt: skip
    op.start()
    try:
        op.wait_leading()
        cluster.kubectl("create", "-n", ns, "-f", str(manifest), timeout=300)
        watcher = Watcher(cluster.kubeconfig, ns)
        wait_for("idle phase: workers Ready", watcher.ready, IDLE_WORKERS, time.monotonic(), 300)
        # Let the control plane settle too: its garbage collector reads each new owner once
        # (GET wasmworkers) as the children appear, for a while after the workers are Ready.
        time.sleep(IDLE_SETTLE_SECONDS)
        say(f"idle phase: counting API requests for {IDLE_SECONDS:.0f} s with the operator")
        running = quiet_minute(cluster)
    finally:
        op.stop()
    time.sleep(5)
    say(f"idle phase: counting API requests for {IDLE_SECONDS:.0f} s without it")
    stopped = quiet_minute(cluster)
    drop_namespace(cluster, ns)
    per_minute = 60.0 / IDLE_SECONDS
    share = {k: (v - stopped.get(k, 0.0)) * per_minute for k, v in running.items() if v - stopped.get(k, 0.0) > 0.5}
    result = sum(running.values()) * per_minute, sum(stopped.values()) * per_minute, share
    say(f"idle phase: {result[0]:.0f} requests/min with the operator, {result[1]:.0f} without; its share by verb and resource: {share}")
    return result


def cache_variants(cluster: Cluster, ns: str, expect: int) -> dict[str, dict[str, Any]]:
    """Both ways of caching the children, each in a fresh process: seconds to fill, peak RSS."""
    out: dict[str, dict[str, Any]] = {}
    for variant in ("kopf", "handmade"):
        say(f"child caches: filling with {variant}")
        try:
            run = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "operator_caches.py"), "--kubeconfig", str(cluster.kubeconfig),
                 "--namespace", ns, "--variant", variant, "--expect", str(expect)],
                capture_output=True, text=True, timeout=300, env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            say(f"child caches ({variant}): no answer in 300 s: {str(err.stderr or '')[-1500:]}")
            continue
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        progress = [line for line in run.stderr.splitlines() if line.startswith(variant)]
        if run.returncode != 0 or not lines:
            say(f"child caches ({variant}) failed: {lines[-1:]} {progress[-3:]} {run.stderr[-1500:]}")
            continue
        out[variant] = json.loads(lines[-1])
        say(f"child caches ({variant}): {out[variant]}")
    return out


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
        idle = idle_requests(cluster, tmp) if args.idle else None
        ns = f"bench-scale-{uuid.uuid4().hex[:6]}"
        cluster.kubectl("create", "namespace", ns)
        model_docs = [model_yaml(f"m{i:03}") for i in range(args.models)]
        worker_docs = [worker_yaml(f"w{i:04}", [f"m{i % args.models:03}"]) for i in range(args.workers)]
        docs = model_docs + worker_docs
        manifest = tmp / "objects.yaml"
        manifest.write_text("---\n".join(docs))

        # Baseline: the API server creating the same objects, with no operator running.
        base_ns = f"{ns}-baseline"
        cluster.kubectl("create", "namespace", base_ns)
        t0 = time.monotonic()
        cluster.kubectl("create", "-n", base_ns, "-f", str(manifest), timeout=600)
        baseline = time.monotonic() - t0
        say(f"baseline: kubectl create of {len(docs)} objects took {baseline:.1f} s")
        drop_namespace(cluster, base_ns)

        # The floor: the same objects with every child the operator would write, created at once
        # by two clients and no operator. No operator can finish before the API server has done this.
        floor_ns = f"{ns}-floor"
        cluster.kubectl("create", "namespace", floor_ns)
        children = rendered_children(floor_ns, model_docs, worker_docs)
        floor_seconds = floor(cluster, floor_ns, manifest, children, KUBE_THREADS)
        say(f"floor: the objects and their {3 * args.workers} children, created by kubectl and 16 threads with no operator, took {floor_seconds:.1f} s")
        drop_namespace(cluster, floor_ns)

        op = OperatorProcess(cluster.kubeconfig, tmp / "operator.log", namespaces=[ns], lease_name="bench", lease_namespace=ns)
        op.start()
        op.wait_leading()
        idle_rss = op.peak_rss_kib()
        sampler = RssSampler(op.pid)
        sampler.start()
        watcher = Watcher(cluster.kubeconfig, ns)

        cpu_before = cpu_seconds(op.pid)
        requests_before = request_counts(cluster)
        start = time.monotonic()
        cluster.kubectl("create", "-n", ns, "-f", str(manifest), timeout=600)
        created = time.monotonic() - start
        say(f"created {len(docs)} objects in {created:.1f} s")
        deploy = wait_for("Deployments", watcher.deployments, args.workers, start, args.timeout)
        worker_status = wait_for("worker status", lambda: watcher.with_status("wasmworkers"), args.workers, start, args.timeout)
        model_status = wait_for("model status", lambda: watcher.with_status("inferencemodels"), args.models, start, args.timeout)
        # Everything the API server answered meanwhile (the objects, the operator, the controllers,
        # the scheduler, kwok): which writes each worker sets off.
        requests_during = {k: v - requests_before.get(k, 0.0) for k, v in request_counts(cluster).items()}
        say("API requests per worker until every status, by verb and resource: " + per_worker(requests_during, args.workers))
        if not args.full:
            quick_rss, quick_cpu = op.peak_rss_kib(), cpu_seconds(op.pid) - cpu_before
            op.stop()
            drop_namespace(cluster, ns)
            print(f"\nDeployments {seconds(deploy, args.workers)}, worker status {seconds(worker_status, args.workers)}, "
                  f"model status {seconds(model_status, args.models)}, peak RSS {quick_rss / 1024:.0f} MB, operator CPU {quick_cpu:.1f} s, "
                  f"floor {floor_seconds:.1f} s, baseline {baseline:.1f} s (--quick: stopped here)")
            return 0
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
        caches = cache_variants(cluster, ns, args.workers) if args.caches else {}
        drop_namespace(cluster, ns)
        if added_node:
            cluster.kubectl("delete", "node", "bench-cpu-big", "--wait=false")
    finally:
        if owned:
            controlplane.down(cluster.name)

    mb = 1024.0
    rows = [
        ("kubectl create of the objects, no operator (baseline)", f"{baseline:.1f} s", "", ""),
        (f"floor: the objects and their {3 * args.workers} children by kubectl and 16 threads, no operator", f"{floor_seconds:.1f} s", "", f"{floor_seconds / baseline:.2f}x baseline"),
        ("kubectl create of the objects, operator running", f"{created:.1f} s", "", f"{created / baseline:.2f}x baseline"),
        (f"every worker has its Deployment ({args.workers})", seconds(deploy, args.workers), f"<= {GOAL_SECONDS:.0f} s", f"{deploy[0] / GOAL_SECONDS:.2f} of goal, {deploy[0] / floor_seconds:.2f}x floor"),
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
    for variant, got in caches.items():
        rows.append((f"child caches of {args.workers} workers via {variant}: filled", f"{got['seconds']:.1f} s", "", ""))
        rows.append((f"child caches via {variant}: peak RSS (fresh process, {got['base_mb']:.0f} MB before)", f"{got['peak_mb']:.0f} MB", "", ""))
    if idle is not None:
        rows.append((f"idle API requests/min, {IDLE_WORKERS} Ready workers, operator running", f"{idle[0]:.0f}", "", ""))
        rows.append(("idle API requests/min, operator stopped (the control plane's own)", f"{idle[1]:.0f}", "", ""))
        rows.append(("idle API requests/min: the operator's share", f"{idle[0] - idle[1]:.0f}", "", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\noperator scale: {args.workers} WasmWorkers, {args.models} InferenceModels, one namespace")
    print(f"{'measure'.ljust(width)}  {'value':>14}  {'goal':>9}  ratio")
    for name, value, goal, ratio in rows:
        print(f"{name.ljust(width)}  {value:>14}  {goal:>9}  {ratio}")
    in_time = all(r[1] >= n and r[0] <= GOAL_SECONDS for r, n in ((deploy, args.workers), (worker_status, args.workers), (model_status, args.models)))
    met = in_time and peak_rss / mb <= GOAL_RSS_MB and restart_rss / mb <= GOAL_RSS_MB
    if idle is not None:
        print("the operator's idle requests/min by verb and resource: " + ", ".join(f"{v} {r or '(non-resource)'} {n:.0f}" for (v, r), n in sorted(idle[2].items(), key=lambda kv: -kv[1])))
    print(f"\ngoals (<= {GOAL_SECONDS:.0f} s to Deployments and status, <= {GOAL_RSS_MB:.0f} MB peak RSS): {'met' if met else 'NOT met'}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--cluster", help="attach to a cluster started with e2e/cluster/up --name NAME")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a phase after this many seconds")
    parser.add_argument("--no-idle", dest="idle", action="store_false", help="skip the idle API requests phase")
    parser.add_argument("--no-caches", dest="caches", action="store_false", help="skip comparing the child caches")
    parser.add_argument("--quick", dest="full", action="store_false",
                        help="stop once every status is written (no Ready, restart or cache phases; implies --no-idle)")  # fmt: skip
    args = parser.parse_args()
    if not args.full:
        args.idle = args.caches = False
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
