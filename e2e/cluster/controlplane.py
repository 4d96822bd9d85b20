"""Bringing a test cluster up and down: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok with generated certificates, RBAC on, then the fake node fleet from nodes/,
and with `real_node` a real node beside it (node.py). Every process is recorded in the cluster's
state file as soon as it starts.

Without a real node every component listens on 127.0.0.1. With one, the API server listens on the
node's address instead (198.18.255.1, on an interface of its own that leads nowhere off this machine), so that
pods reach it through the `kubernetes` Service as in any cluster."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import binaries, images, network, node, processes, state
from .components import start_apiserver, start_controller, start_etcd, start_kwok
from .registry import start_cluster_registry
from .credentials import Credentials
from .launcher import ClusterError, Launcher, PortPicker, check_alive
from .state import ClusterState

__all__ = ["ClusterError", "add_nodes", "check_alive", "down", "new_cluster", "sweep_stale", "teardown", "up"]

log = logging.getLogger("wasminfer.e2e.cluster")

NODES_DIR = Path(__file__).resolve().parent / "nodes"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


def kubectl(cluster: ClusterState, *args: str, timeout: float = 120.0, input: str | None = None) -> str:
    result = subprocess.run(
        [str(Path(cluster.bin_dir) / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        check_alive(cluster)
        raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def wait_default_service_account(launcher: Launcher, files: Credentials) -> None:
    """Pods cannot be created in a namespace before its `default` ServiceAccount exists."""
    url = f"{launcher.cluster.server}/api/v1/namespaces/default/serviceaccounts/default"
    context = files.ssl_context()
    deadline = time.monotonic() + launcher.timeout
    while not processes.http_ok(url, context):
        launcher.check_alive()
        if time.monotonic() > deadline:
            raise ClusterError(
                "the default ServiceAccount did not appear: kube-controller-manager's serviceaccount "
                f"controller is not working; log: {launcher.log_path('kube-controller-manager')}"
            )
        time.sleep(0.25)


def add_nodes(cluster: ClusterState, nodes: Path = NODES_DIR, timeout: float = 120.0) -> list[str]:
    """Creates the Nodes defined in `nodes` (a file or a folder of YAML files) and waits until kwok
    reports them Ready. Returns their names."""
    names = kubectl(cluster, "apply", "-f", str(nodes), "-o", "name").split()
    kubectl(
        cluster, "wait", "--for=condition=Ready", *names, f"--timeout={timeout:.0f}s",
        timeout=timeout + 10,
    )
    return [n.removeprefix("node/") for n in names]


def new_cluster(name: str, bin_dir: Path, real_node: bool = False) -> ClusterState:
    """Records a cluster owned by this process, with a fresh temporary data folder and log folder."""
    cluster = ClusterState(
        name=name,
        real_node=real_node,
        owner_pid=os.getpid(),
        owner_start=processes.start_time(os.getpid()),
        data_dir=tempfile.mkdtemp(prefix=f"wasminfer-cluster-{name}-"),
        log_dir=str(state.new_log_dir(name)),
        bin_dir=str(bin_dir),
    )
    state.save(cluster)
    return cluster


def up(
    name: str = "default",
    *,
    persistent: bool = False,
    bin_dir: Path | None = None,
    nodes: Path | None = NODES_DIR,
    pick_port: PortPicker = processes.free_port,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    timeout: float = 120.0,
    real_node: bool = False,
) -> ClusterState:
    """Brings a cluster up. A `persistent` one (started by hand) outlives this process until `down`;
    otherwise it belongs to this process and its components die with it even if it is killed.
    `real_node` adds a kubelet with containerd that runs the project's images (needs root)."""
    if not _NAME.match(name):
        raise ClusterError(f"cluster name {name!r}: use lowercase letters, digits and '-'")
    for cleaned in sweep_stale():
        log.warning("cleaned up %s", cleaned)
    running = state.load(name)
    if running is not None:
        raise ClusterError(
            f"cluster {name!r} is already running (KUBECONFIG={running.kubeconfig}); "
            f"stop it first with: e2e/cluster/down --name {name}"
        )
    built: dict[str, images.Image] = {}
    if real_node:
        node.check_host()
        # Before anything starts: a cold image build takes minutes.
        built = images.build(node.IMAGES)
    started = time.monotonic()
    # Until bring-up is done the cluster belongs to this process even when persistent, so a
    # bring-up killed halfway is cleaned by the next `up`.
    cluster = new_cluster(name, bin_dir or binaries.ensure_built(), real_node=real_node)
    data_dir = Path(cluster.data_dir)
    log.info("bringing up cluster %r: data %s, logs %s", name, data_dir, cluster.log_dir)
    launcher = Launcher(
        cluster,
        die_with_parent=not persistent,
        pick_port=pick_port,
        extra_args=extra_args,
        timeout=timeout,
    )
    try:
        files = Credentials.generate(data_dir)
        if real_node:
            node.record_host(cluster)
            network.setup()
        etcd_url = start_etcd(launcher, data_dir)
        host = network.NODE_IP if real_node else "127.0.0.1"
        cluster.server = start_apiserver(launcher, files, data_dir, etcd_url, host)
        if real_node:
            network.allow_host_ports(int(cluster.server.rsplit(":", 1)[1]))
        admin = files.write_kubeconfig(data_dir / "admin.kubeconfig", cluster.server, "admin")
        cluster.kubeconfig = str(admin)
        state.save(cluster)
        start_controller(
            launcher,
            files,
            data_dir,
            "kube-controller-manager",
            [
                f"--service-account-private-key-file={files.sa_key}",
                f"--root-ca-file={files.ca_crt}",
                f"--cluster-signing-cert-file={files.ca_crt}",
                f"--cluster-signing-key-file={files.ca_key}",
                # Each controller acts as its own ServiceAccount, as in a kubeadm cluster.
                "--use-service-account-credentials=true",
            ],
        )
        start_controller(launcher, files, data_dir, "kube-scheduler", [])
        wait_default_service_account(launcher, files)
        start_kwok(launcher, files, data_dir)
        registry = start_cluster_registry(launcher, data_dir / "registry", host)
        cluster.registry_dir = str(data_dir / "registry")
        if real_node:  # the pods' fetch step pulls from it
            network.allow_host_ports(int(cluster.server.rsplit(":", 1)[1]), int(registry.address.rsplit(":", 1)[1]))
        log.info("OCI registry at %s (CA %s)", registry.address, registry.ca_file)
        if nodes is not None:
            names = add_nodes(cluster, nodes, timeout)
            log.info("nodes ready: %s", ", ".join(names))
        if real_node:
            node.start(launcher, files, built)
    except BaseException:
        log.error("bring-up of %r failed; stopping what was started (logs stay in %s)", name, cluster.log_dir)
        teardown(cluster)
        raise
    if persistent:
        cluster.owner_pid = cluster.owner_start = None
    state.save(cluster)
    elapsed = time.monotonic() - started
    log.info("cluster %r is up in %.1f s: KUBECONFIG=%s", name, elapsed, cluster.kubeconfig)
    return cluster


def teardown(cluster: ClusterState) -> list[str]:
    """Stops every process of the cluster (last started first), removes its data folder and state
    file. Returns problems found (ports still taken, what the real node left on the host), empty
    when nothing is left behind."""
    node_problems = node.cleanup(cluster) if cluster.real_node else []
    for proc in reversed(cluster.processes):
        if processes.stop(proc.pid, proc.exe):
            log.info("stopped %s (pid %d)", proc.component, proc.pid)
    if node_problems:
        # Kept, with its data folder (the node's record of the host), so `down` can try again.
        log.error("the real node left things on the host; `e2e/cluster/down --name %s` tries again", cluster.name)
    else:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        state.remove(cluster.name)
    problems = [
        f"port {port} of {proc.component} is still in use"
        for proc in cluster.processes
        for port in proc.ports
        if not processes.port_is_free(port)
    ]
    if not node_problems and Path(cluster.data_dir).exists():
        problems.append(f"data folder {cluster.data_dir} could not be removed")
    return problems + [f"the real node left {p}" for p in node_problems]


def down(name: str = "default") -> ClusterState | None:
    """Stops the named cluster; None when no such cluster is recorded."""
    cluster = state.load(name)
    if cluster is None:
        return None
    dead = cluster.dead_components()
    for proc in dead:
        log.warning("%s had stopped before `down`; see its log %s", proc.component, proc.log)
    problems = teardown(cluster)
    if problems:
        raise ClusterError(f"cluster {name!r} stopped, but: " + "; ".join(problems))
    log.info("cluster %r is down; its logs stay in %s", name, cluster.log_dir)
    return cluster


def sweep_stale() -> list[str]:
    """Tears down clusters left by runs that died (their owner is gone), and hand-started ones with a
    component that died. Returns a description of each one cleaned."""
    cleaned = []
    for cluster in state.all_states():
        dead = cluster.dead_components()
        if cluster.owner_pid is not None:
            if cluster.owner_alive():
                continue  # belongs to a live run, which stops it itself
            why = f"its run (pid {cluster.owner_pid}) ended without stopping it"
        elif dead:
            why = "components had died: " + ", ".join(f"{p.component} (log {p.log})" for p in dead)
        else:
            continue
        teardown(cluster)
        cleaned.append(f"stale cluster {cluster.name!r}: {why}")
    return cleaned
