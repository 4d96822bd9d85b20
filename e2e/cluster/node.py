"""A real node beside kwok's fleet: containerd (Debian's, with runc), the CNI bridge, kubelet,
kube-proxy in iptables mode and CoreDNS, all on this machine, so pods really run.

One real node can run on a machine at a time (it owns host-wide things: the bridges, iptables rules,
its cgroup root). Its containerd keeps images in a cache folder that outlives clusters, so the
project's images are imported once; everything else lives in the cluster's data folder and is removed
by `cleanup`, which also works after a crash, when nothing of the node is running any more.

The node is tainted, so only pods that tolerate the taint (the real-node tests) land on it, while
every other test keeps its pods on kwok's nodes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import images, network, processes, state
from .credentials import Credentials
from .launcher import ClusterError, Launcher
from .network import NODE_NAME as NODE_NAME  # the node's name, for users of this module
from .state import ClusterState

log = logging.getLogger("wasminfer.e2e.cluster")

NODE_LABEL = "wasminfer.dev/e2e-node"
NODE_LABEL_VALUE = "real"
TAINT_KEY = "wasminfer.dev/e2e-real-node"
# What a pod spec needs to land on the real node.
TOLERATION = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
NODE_SELECTOR = {NODE_LABEL: NODE_LABEL_VALUE}
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kubelet's cgroup root: every pod cgroup lives below it, so clean-up touches nothing else.
NODE_CGROUP = "wasminfer-e2e"
# Host settings the kubelet (and the CNI bridge plugin) change, put back by `cleanup`.
HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Fixed host paths the node's daemons create whatever they are told; removed if they were not there.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/opt/containerd",
    "/run/containerd",
    "/run/netns",
)
HOST_RECORD = "host-before-node.json"
CONTAINERD_NAMESPACE = "k8s.io"
PAUSE = "pause"
HOST_COMMANDS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_BIN_DIR = Path("/usr/lib/cni")


def cache_dir() -> Path:
    return state.cache_home("node", "WASMINFER_NODE_CACHE")


@dataclass(frozen=True)
class Layout:
    """Where the node's files live: under the cluster's data folder, images in the cache."""

    root: Path

    @classmethod
    def of(cls, cluster: ClusterState) -> Layout:
        return cls(Path(cluster.data_dir) / "node")

    @property
    def containerd_root(self) -> Path:
        return cache_dir() / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd-state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"


def check_tools() -> None:
    """Fails with what to install or change when this machine cannot run a real node."""
    if os.geteuid() != 0:
        raise ClusterError("a real node needs root (containers, network interfaces, iptables, cgroups)")
    missing = sorted({pkg for cmd, pkg in HOST_COMMANDS.items() if shutil.which(cmd) is None})
    missing += ["containernetworking-plugins"] if not all((CNI_BIN_DIR / p).is_file() for p in CNI_PLUGINS) else []
    if missing:
        raise ClusterError(
            f"a real node needs Debian packages that are missing: apt-get install {' '.join(missing)} "
            "(or run: bash .ci/system-packages.sh)"
        )
    if not (CGROUP_ROOT / "memory").is_dir():
        raise ClusterError(
            f"the test node needs cgroup v1 hierarchies under {CGROUP_ROOT} (as on these machines); "
            "cgroup v2 alone is not supported by its clean-up"
        )


def check_host() -> None:
    """check_tools, and fails when something else already has what the node needs (run after
    stale clusters were swept)."""
    check_tools()
    for other in state.all_states():
        if other.real_node and other.owner_alive():
            raise ClusterError(
                f"cluster {other.name!r} already runs the real node (one per machine); stop it first with "
                f"e2e/cluster/down --name {other.name}"
            )
    taken = network.conflicts() + [f"iptables chain {c}" for c in _kube_chains("iptables")]
    taken += [f"cgroup {g}" for g in _node_cgroups()]
    if taken:
        raise ClusterError(
            "this host already has what the test node would create (another Kubernetes node, or one left "
            f"by hand?): {', '.join(taken)}"
        )


def record_host(cluster: ClusterState) -> None:
    """Notes the host settings and paths the node will change, for `cleanup` to put back."""
    sysctls = {}
    for name in HOST_SYSCTLS:
        try:
            sysctls[name] = (Path("/proc/sys") / name).read_text().strip()
        except OSError:
            pass
    absent = [p for p in HOST_PATHS if not os.path.lexists(p)]
    (Path(cluster.data_dir) / HOST_RECORD).write_text(json.dumps({"sysctls": sysctls, "absent": absent}, indent=1))


def _restore_host(cluster: ClusterState) -> list[str]:
    try:
        recorded = json.loads((Path(cluster.data_dir) / HOST_RECORD).read_text())
    except (OSError, ValueError):
        return []
    problems = []
    for name, value in recorded["sysctls"].items():
        try:
            if (Path("/proc/sys") / name).read_text().strip() != value:
                (Path("/proc/sys") / name).write_text(value)
        except OSError as error:
            problems.append(f"sysctl {name} (was {value}): {error}")
    for path in recorded["absent"]:
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                problems.append(f"{path} (created by the node) could not be removed")
    return problems


# --- containerd -----------------------------------------------------------------------------------


def _containerd_config(layout: Layout, metrics_port: int, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{layout.containerd_root}"',
            f'state = "{layout.containerd_state}"',
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{layout.containerd_socket}.ttrpc"',
            "[metrics]",
            f'  address = "127.0.0.1:{metrics_port}"',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            # This machine's root lacks CAP_SYS_RESOURCE: without this, lowering a container's
            # oom_score_adj fails and every sandbox dies with runc's opaque "final child's PID" error.
            "  restrict_oom_score_adj = true",
            "  enable_selinux = false",
            # Pods' network namespaces under the state folder, not /run/netns with everybody's.
            "  netns_mounts_under_state_dir = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f'  Root = "{layout.containerd_state / "runc"}"',
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.cni_conf_dir}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def _cni_conflist(layout: Layout) -> dict[str, object]:
    return {
        "cniVersion": "0.4.0",
        "name": network.CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.BRIDGE,
                "isGateway": True,
                # Pod traffic is never masqueraded: nothing of it may leave this machine.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": network.POD_SUBNET, "gateway": network.POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def ctr(layout: Layout, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(layout.containerd_socket), "--namespace", CONTAINERD_NAMESPACE, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def start_containerd(launcher: Launcher, layout: Layout, sandbox_image: str) -> None:
    for d in (layout.containerd_root, layout.containerd_state, layout.cni_conf_dir, layout.cni_ipam_dir):
        d.mkdir(parents=True, exist_ok=True)
    (layout.cni_conf_dir / f"10-{network.CNI_NETWORK}.conflist").write_text(json.dumps(_cni_conflist(layout), indent=2))
    config = layout.root / "containerd.toml"

    def make() -> tuple[list[str], str, list[int]]:
        port = launcher.pick_port()
        config.write_text(_containerd_config(layout, port, sandbox_image))
        return ["containerd", "--config", str(config)], f"http://127.0.0.1:{port}/v1/metrics", [port]

    launcher.start("containerd", make)


IMAGE_PREFIX = "localhost/wasminfer/"


def import_images(layout: Layout, wanted: Sequence[images.Image]) -> None:
    """Imports each image archive into the node's containerd, unless it holds that image already."""
    listed = ctr(layout, "images", "list", "--quiet")
    if listed.returncode != 0:
        raise ClusterError(f"cannot list containerd's images: {listed.stderr.strip()}")
    present = set(listed.stdout.split())
    for image in wanted:
        if image.ref in present:
            log.info("image %s is already on the node", image.ref)
            continue
        started = time.monotonic()
        log.info("importing %s (%d MB) into the node's containerd", image.ref, image.size_bytes // 1_000_000)
        done = ctr(layout, "images", "import", "--no-unpack=false", str(image.archive))
        if done.returncode != 0:
            raise ClusterError(f"importing {image.archive} into containerd failed: {done.stderr.strip()}")
        refs = ctr(layout, "images", "list", "--quiet").stdout.split()
        if image.ref not in refs:
            raise ClusterError(f"containerd imported {image.archive} but does not list {image.ref}: {refs}")
        log.info("imported %s in %.1f s", image.ref, time.monotonic() - started)
    # Older builds of the project's images would pile up in the store that outlives clusters.
    keep = {image.ref for image in wanted}
    stale = [ref for ref in present if ref.startswith(IMAGE_PREFIX) and ref not in keep]
    if stale:
        ctr(layout, "images", "remove", *stale)
        log.info("removed %d older image(s) from the node: %s", len(stale), ", ".join(stale))


# --- CoreDNS, kubelet, kube-proxy -------------------------------------------------------------------

COREDNS_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "wasminfer-e2e:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "wasminfer-e2e:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "wasminfer-e2e:coredns"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "wasminfer-e2e:coredns"}
"""


def start_coredns(launcher: Launcher, files: Credentials, layout: Layout) -> None:
    kubeconfig = files.write_kubeconfig(layout.root / "coredns.kubeconfig", launcher.cluster.server, "coredns")
    corefile = layout.root / "Corefile"

    def make() -> tuple[list[str], str, list[int]]:
        ready = launcher.pick_port()
        # Only the cluster's own names resolve: no `forward`, so pods cannot look up the outside.
        corefile.write_text(
            f""".:53 {{
    bind {network.NODE_IP}
    errors
    ready 127.0.0.1:{ready}
    kubernetes {network.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} wasminfer-test
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""
        )
        argv = [str(Path(launcher.cluster.bin_dir) / "coredns"), "-conf", str(corefile)]
        return argv, f"http://127.0.0.1:{ready}/ready", [ready]

    launcher.start("coredns", make)


def _kubelet_config(files: Credentials, layout: Layout, healthz_port: int) -> dict[str, object]:
    cert, key = files.serving["kubelet"]
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(files.ca_crt)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{NODE_CGROUP}",
        "containerRuntimeEndpoint": layout.endpoint,
        "clusterDNS": [network.NODE_IP],
        "clusterDomain": network.CLUSTER_DOMAIN,
        "resolvConf": str(layout.root / "resolv.conf"),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        "maxPods": 40,
        # The disk is shared with the build caches: neither evict pods nor delete images for it.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusReportFrequency": "10s",
    }


def _make_node_cgroup() -> None:
    """The kubelet wants its cgroup root to exist in every hierarchy; cpuset needs its CPUs and
    memory nodes filled in before anything can join a child."""
    for hierarchy in CGROUP_ROOT.iterdir():
        if not (hierarchy / "cgroup.procs").is_file():
            continue  # not a v1 hierarchy (the unified one, or anything else)
        group = hierarchy / NODE_CGROUP
        group.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (group / knob).is_file() and not (group / knob).read_text().strip():
                (group / knob).write_text((hierarchy / knob).read_text())


def start_kubelet(launcher: Launcher, files: Credentials, layout: Layout) -> None:
    _make_node_cgroup()
    layout.kubelet_root.mkdir(parents=True, exist_ok=True)
    layout.pod_logs.mkdir(parents=True, exist_ok=True)
    # Pods with dnsPolicy Default get this; ClusterFirst pods get the cluster DNS.
    (layout.root / "resolv.conf").write_text(f"nameserver {network.NODE_IP}\n")
    kubeconfig = files.write_kubeconfig(layout.root / "kubelet.kubeconfig", launcher.cluster.server, "kubelet")
    config = layout.root / "kubelet.yaml"

    def make() -> tuple[list[str], str, list[int]]:
        port = launcher.pick_port()
        config.write_text(yaml.safe_dump(_kubelet_config(files, layout, port), sort_keys=False))
        argv = [
            str(Path(launcher.cluster.bin_dir) / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={layout.kubelet_root}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={network.NODE_IP}",
            f"--node-labels={NODE_LABEL}={NODE_LABEL_VALUE}",
            # Lowering its own OOM score needs CAP_SYS_RESOURCE, which this machine's root lacks.
            "--oom-score-adj=0",
        ]
        return argv, f"http://127.0.0.1:{port}/healthz", [port]

    launcher.start("kubelet", make)


def start_kube_proxy(launcher: Launcher, files: Credentials, layout: Layout) -> None:
    kubeconfig = files.write_kubeconfig(layout.root / "kube-proxy.kubeconfig", launcher.cluster.server, "kube-proxy")

    def make() -> tuple[list[str], str, list[int]]:
        healthz, metrics = launcher.pick_port(), launcher.pick_port()
        argv = [
            str(Path(launcher.cluster.bin_dir) / "kube-proxy"),
            f"--kubeconfig={kubeconfig}",
            "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}",
            f"--cluster-cidr={network.POD_SUBNET}",
            f"--healthz-bind-address=127.0.0.1:{healthz}",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--nodeport-addresses={network.NODE_IP}/32",
            # Leave the host's conntrack sysctls and its own OOM score alone (no CAP_SYS_RESOURCE).
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--oom-score-adj=0",
        ]
        return argv, f"http://127.0.0.1:{healthz}/healthz", [healthz, metrics]

    launcher.start("kube-proxy", make)


def wait_ready(cluster: ClusterState, timeout: float) -> None:
    from .controlplane import kubectl  # the control plane imports this module

    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            [str(Path(cluster.bin_dir) / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "get", "node", NODE_NAME,
             "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", "--request-timeout=10s"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if result.stdout.strip() == "True":
            return
        if time.monotonic() > deadline:
            kubectl(cluster, "get", "nodes", "-o", "wide")
            raise ClusterError(
                f"node {NODE_NAME} did not become Ready within {timeout:.0f} s: "
                f"{result.stdout.strip() or result.stderr.strip()}; kubelet log: {Path(cluster.log_dir) / 'kubelet.log'}\n"
                + processes.tail(Path(cluster.log_dir) / "kubelet.log")
            )
        time.sleep(0.5)


IMAGES = (PAUSE, "runtime", "operator")


def start(launcher: Launcher, files: Credentials, built: dict[str, images.Image]) -> None:
    """Starts the node's daemons on a control plane that is up, imports the images and waits until
    the node is Ready. The host network was set up before the API server started."""
    cluster = launcher.cluster
    from .controlplane import kubectl

    layout = Layout.of(cluster)
    layout.root.mkdir(parents=True, exist_ok=True)
    start_containerd(launcher, layout, built[PAUSE].ref)
    import_images(layout, list(built.values()))
    cluster.images = {name: image.ref for name, image in built.items()}
    state.save(cluster)
    kubectl(cluster, "apply", "-f", "-", input=COREDNS_RBAC)
    start_coredns(launcher, files, layout)
    start_kubelet(launcher, files, layout)
    start_kube_proxy(launcher, files, layout)
    wait_ready(cluster, launcher.timeout)
    log.info("node %s is Ready (%s, pods %s)", NODE_NAME, network.NODE_IP, network.POD_SUBNET)


# --- clean-up ---------------------------------------------------------------------------------------


def _stop_component(cluster: ClusterState, component: str) -> None:
    for proc in cluster.processes:
        if proc.component == component and processes.stop(proc.pid, proc.exe):
            log.info("stopped %s (pid %d)", component, proc.pid)


def _remove_pods(cluster: ClusterState, layout: Layout) -> None:
    """Stops and removes every pod sandbox through the CRI, so the CNI plugins release addresses."""
    crictl = Path(cluster.bin_dir) / "crictl"
    if not layout.containerd_socket.exists() or not crictl.exists():
        return
    for verb in ("stopp", "rmp"):
        ids = subprocess.run(
            [str(crictl), f"--runtime-endpoint={layout.endpoint}", "--timeout=30s", "pods", "--quiet"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout.split()
        if ids:
            subprocess.run(
                [str(crictl), f"--runtime-endpoint={layout.endpoint}", "--timeout=30s", verb, *ids],
                capture_output=True, text=True, timeout=120, check=False,
            )


def _node_cgroups() -> list[Path]:
    """Every cgroup under the node's cgroup root, deepest first, in every hierarchy."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / NODE_CGROUP
        if top.is_dir():
            found += [p for p in top.rglob("*") if p.is_dir()] + [top]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_processes() -> None:
    for group in _node_cgroups():
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill_shims(layout: Layout) -> None:
    """containerd's shims outlive containerd (by design): those of this node's socket are killed."""
    marker = str(layout.containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _mounts_under(roots: Sequence[Path]) -> list[str]:
    prefixes = [str(r) for r in roots]
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            out.append(point)
    return out


def _kube_chains(tool: str, table: str = "") -> list[str]:
    tables = [table] if table else ["filter", "nat", "mangle", "raw"]
    chains = []
    for t in tables:
        saved = subprocess.run([f"{tool}-save", "-t", t], capture_output=True, text=True, check=False).stdout
        chains += [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":KUBE-")]
    return chains


def _iptables_cleanup() -> None:
    """Removes the KUBE- chains kube-proxy and the kubelet made (IPv4 and IPv6) and the rules that
    jump to them, rule by rule: whatever else is in those tables stays as it is."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            saved = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True, check=False).stdout
            chains = [line[1:].split()[0] for line in saved.splitlines() if line.startswith(":KUBE-")]
            if not chains:
                continue
            jumps = [
                "-D" + line[2:]
                for line in saved.splitlines()
                if line.startswith("-A ") and not line.split()[1].startswith("KUBE-") and "KUBE-" in line
            ]
            script = [f"*{table}", *jumps, *(f"-F {c}" for c in chains), *(f"-X {c}" for c in chains), "COMMIT", ""]
            done = subprocess.run([f"{tool}-restore", "--noflush", "-w", "5"], input="\n".join(script), text=True,
                                  capture_output=True, check=False)
            if done.returncode != 0:
                log.warning("%s-restore of the %s table's KUBE- chains failed: %s", tool, table, done.stderr.strip())


def leftovers(cluster: ClusterState) -> list[str]:
    """What of this node is still on the machine; empty after `cleanup`."""
    layout = Layout.of(cluster)
    found = [f"mount {m}" for m in _mounts_under([layout.root])]
    found += [f"cgroup {g}" for g in _node_cgroups()]
    found += [f"{tool} chain {c}" for tool in ("iptables", "ip6tables") for c in _kube_chains(tool)]
    found += network.leftovers()
    marker = str(layout.containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(f"process {entry.name}")
            except OSError:
                pass
    return found


def _remove_cgroups() -> list[str]:
    problems = []
    deadline = time.monotonic() + 10
    for group in _node_cgroups():
        while True:
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as error:  # busy until the last killed process is reaped
                if time.monotonic() > deadline:
                    problems.append(f"cgroup {group}: {error}")
                    break
                time.sleep(0.1)
    return problems


def _unlink_pod_logs(layout: Layout) -> None:
    containers = Path("/var/log/containers")
    for link in containers.glob("*.log") if containers.is_dir() else []:
        if link.is_symlink() and str(layout.pod_logs) in os.readlink(link):
            link.unlink(missing_ok=True)
    results = Path("/var/lib/cni/results")
    for cached in results.glob(f"{network.CNI_NETWORK}-*") if results.is_dir() else []:
        cached.unlink(missing_ok=True)


def cleanup(cluster: ClusterState) -> list[str]:
    """Takes the node down and removes what it left on the host: pods, containers, mounts (the
    pods' network namespaces among them), the bridges and routes, iptables rules, cgroups, host
    settings and paths. Works when its daemons are running (a normal `down`) and when they died with
    a crashed run. Every step runs even if one before failed; returns what could not be removed."""
    layout = Layout.of(cluster)
    problems: list[str] = []

    def unmount() -> None:
        for point in sorted(_mounts_under([layout.root]), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    steps: list[tuple[str, Callable[[], object]]] = [
        ("stopping kube-proxy", lambda: _stop_component(cluster, "kube-proxy")),
        ("stopping the kubelet", lambda: _stop_component(cluster, "kubelet")),
        ("removing the pods through the CRI", lambda: _remove_pods(cluster, layout)),
        ("stopping CoreDNS", lambda: _stop_component(cluster, "coredns")),
        ("stopping containerd", lambda: _stop_component(cluster, "containerd")),
        ("killing containerd's shims", lambda: _kill_shims(layout)),
        ("killing the pods' processes", _kill_cgroup_processes),
        ("unmounting", unmount),
        ("removing iptables rules", _iptables_cleanup),
        ("removing the network", lambda: problems.extend(p for p in network.teardown() if not p.startswith("link "))),
        ("removing cgroups", lambda: problems.extend(_remove_cgroups())),
        ("removing pod log links", lambda: _unlink_pod_logs(layout)),
        ("restoring host settings", lambda: problems.extend(_restore_host(cluster))),
    ]
    for what, step in steps:
        try:
            step()
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            problems.append(f"{what} failed: {error}")
            log.warning("clean-up of the node: %s failed: %s", what, error)
    return problems + leftovers(cluster)
