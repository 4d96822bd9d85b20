"""The credentials of one test cluster, generated for each run: a CA, serving certificates, client
certificates per component (identity = CN and O), the service-account signing key, the aggregation
layer's front-proxy CA, and kubeconfigs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from . import kubeconfig, pki
from .network import NODE_IP, NODE_NAME, SERVICE_CIDR, SERVICE_FIRST_IP

__all__ = ["SERVICE_CIDR", "Credentials"]


@dataclass
class Credentials:
    """The generated certificates, keys and kubeconfigs of one cluster (under its data folder)."""

    pki_dir: Path
    ca: pki.CertKey
    ca_crt: Path
    ca_key: Path
    sa_key: Path
    sa_pub: Path
    admin_crt: Path
    admin_key: Path
    front_proxy_ca: Path
    front_proxy_client: tuple[Path, Path]
    serving: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    clients: dict[str, pki.CertKey] = field(default_factory=dict)
    # The API server's client certificate towards kubelets (logs, exec, port-forward).
    kubelet_client: tuple[Path, Path] = (Path(), Path())

    @classmethod
    def generate(cls, data_dir: Path) -> Credentials:
        pki_dir = data_dir / "pki"
        pki_dir.mkdir(mode=0o700)
        ca = pki.new_ca()
        ca_crt, ca_key = ca.write(pki_dir, "ca")
        sa_key, sa_pub = pki.write_service_account_keys(pki_dir)
        # The admin is a real user in system:masters, so RBAC impersonation works as in production.
        admin = pki.issue(ca, "wasminfer-admin", organizations=("system:masters",))
        admin_crt, admin_key = admin.write(pki_dir, "admin")
        # The aggregation layer's own CA: extension API servers trust requests proxied with it.
        front_proxy = pki.new_ca("wasminfer-test-front-proxy-ca")
        front_proxy_ca, _ = front_proxy.write(pki_dir, "front-proxy-ca")
        front_proxy_client = pki.issue(front_proxy, "front-proxy-client").write(pki_dir, "front-proxy-client")
        files = cls(
            pki_dir, ca, ca_crt, ca_key, sa_key, sa_pub, admin_crt, admin_key,
            front_proxy_ca, front_proxy_client,
        )
        files.clients = {
            "admin": admin,
            "kube-controller-manager": pki.issue(ca, "system:kube-controller-manager"),
            "kube-scheduler": pki.issue(ca, "system:kube-scheduler"),
            "kwok": pki.issue(ca, "wasminfer:kwok", organizations=("system:masters",)),
            # The real node's daemons, each with the identity Kubernetes' own roles expect: the
            # Node authorizer for the kubelet, system:node-proxier for kube-proxy.
            "kubelet": pki.issue(ca, f"system:node:{NODE_NAME}", organizations=("system:nodes",)),
            "kube-proxy": pki.issue(ca, "system:kube-proxy"),
            "coredns": pki.issue(ca, "wasminfer-e2e:coredns"),
        }
        files.kubelet_client = pki.issue(ca, "kube-apiserver-kubelet-client", organizations=("system:masters",)).write(
            pki_dir, "apiserver-kubelet-client"
        )
        apiserver_dns = (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
        for component, dns in (
            ("kube-apiserver", apiserver_dns),
            ("kube-controller-manager", ("localhost",)),
            ("kube-scheduler", ("localhost",)),
        ):
            ips = ("127.0.0.1", NODE_IP, SERVICE_FIRST_IP) if component == "kube-apiserver" else ("127.0.0.1",)
            cert = pki.issue(ca, component, dns_names=dns, ip_addresses=ips, server=True)
            files.serving[component] = cert.write(pki_dir, f"{component}-serving")
        kubelet = pki.issue(ca, NODE_NAME, dns_names=(NODE_NAME,), ip_addresses=(NODE_IP,), server=True)
        files.serving["kubelet"] = kubelet.write(pki_dir, "kubelet-serving")
        return files

    def ssl_context(self, client: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_crt))
        if client:
            context.load_cert_chain(str(self.admin_crt), str(self.admin_key))
        return context

    def write_kubeconfig(self, path: Path, server: str, user: str) -> Path:
        return kubeconfig.write(path, server, self.ca.cert_pem, user, self.clients[user])


