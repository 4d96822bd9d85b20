"""The command lines of the components: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, all on 127.0.0.1, with the cluster's credentials."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .credentials import SERVICE_CIDR, Credentials
from .launcher import Launcher
from .network import FAKE_POD_CIDR
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"


def start_etcd(launcher: Launcher, data_dir: Path) -> str:
    """Starts etcd and returns its client URL."""
    bin_dir = Path(launcher.cluster.bin_dir)
    etcd_dir = data_dir / "etcd"
    client_url = ""

    def make() -> tuple[list[str], str, list[int]]:
        nonlocal client_url
        # A half-initialised data folder from a failed attempt would pin the old peer URL.
        shutil.rmtree(etcd_dir, ignore_errors=True)
        client, peer = launcher.pick_port(), launcher.pick_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        argv = [
            str(bin_dir / "etcd"),
            "--name=wasminfer-test",
            f"--data-dir={etcd_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=wasminfer-test={peer_url}",
            # The data lives in a temporary folder for one run: durability buys nothing here.
            "--unsafe-no-fsync=true",
        ]
        return argv, f"{client_url}/health", [client, peer]

    launcher.start("etcd", make)
    return client_url


def start_apiserver(launcher: Launcher, files: Credentials, data_dir: Path, etcd_url: str, host: str) -> str:
    """Starts kube-apiserver on `host` and returns its URL once /readyz answers. On 127.0.0.1 the
    `kubernetes` Service has no endpoints (they may not be loopback, and nothing runs behind it);
    on the real node's address it points at the API server, as pods expect."""
    bin_dir = Path(launcher.cluster.bin_dir)
    cert, key = files.serving["kube-apiserver"]
    server = ""

    def make() -> tuple[list[str], str, list[int]]:
        nonlocal server
        port = launcher.pick_port()
        server = f"https://{host}:{port}"
        argv = [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={port}",
            f"--cert-dir={data_dir / 'apiserver'}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            f"--client-ca-file={files.ca_crt}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={files.kubelet_client[0]}",
            f"--kubelet-client-key={files.kubelet_client[1]}",
            f"--kubelet-certificate-authority={files.ca_crt}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={files.sa_pub}",
            f"--service-account-signing-key-file={files.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *(["--endpoint-reconciler-type=none"] if host == "127.0.0.1" else []),
            f"--requestheader-client-ca-file={files.front_proxy_ca}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={files.front_proxy_client[0]}",
            f"--proxy-client-key-file={files.front_proxy_client[1]}",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        return argv, f"{server}/readyz", [port]

    launcher.start("kube-apiserver", make, context=files.ssl_context())
    return server


def start_controller(
    launcher: Launcher, files: Credentials, data_dir: Path, component: str, flags: Sequence[str]
) -> None:
    """kube-controller-manager or kube-scheduler: its own kubeconfig and serving certificate."""
    bin_dir = Path(launcher.cluster.bin_dir)
    config = files.write_kubeconfig(
        data_dir / f"{component}.kubeconfig", launcher.cluster.server, component
    )
    cert, key = files.serving[component]

    def make() -> tuple[list[str], str, list[int]]:
        port = launcher.pick_port()
        argv = [
            str(bin_dir / component),
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            "--leader-elect=false",
            *flags,
        ]
        return argv, f"https://127.0.0.1:{port}/healthz", [port]

    launcher.start(component, make, context=files.ssl_context(client=False))


def start_kwok(launcher: Launcher, files: Credentials, data_dir: Path) -> None:
    bin_dir = Path(launcher.cluster.bin_dir)
    config = files.write_kubeconfig(data_dir / "kwok.kubeconfig", launcher.cluster.server, "kwok")
    home = data_dir / "kwok-home"
    home.mkdir(exist_ok=True)
    # kwok also reads ~/.kwok/kwok.yaml; a HOME of its own keeps a developer's settings out.
    env = {**os.environ, "HOME": str(home)}

    def make() -> tuple[list[str], str, list[int]]:
        port = launcher.pick_port()
        argv = [
            str(bin_dir / "kwok"),
            f"--kubeconfig={config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_SELECTOR}",
            f"--server-address=127.0.0.1:{port}",
            f"--cidr={FAKE_POD_CIDR}",
            # Without node leases the node lifecycle controller sees stale heartbeats and marks
            # every node NotReady for a few seconds each minute; leases keep the fleet Ready.
            "--node-lease-duration-seconds=40",
        ]
        return argv, f"http://127.0.0.1:{port}/healthz", [port]

    launcher.start("kwok", make, env=env)


