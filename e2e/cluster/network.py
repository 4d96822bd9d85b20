"""The test cluster's addresses, its real node's name, and the host network of that node.

Every address comes from 198.18.0.0/15 (RFC 2544, for benchmark tests), and a blackhole route for the
whole range makes sure nothing addressed to it ever leaves this machine: the node's bridge has no
route off the machine, pod traffic is never masqueraded, and a forward rule drops any packet from the
bridge to another interface.

| what                         | where                                          |
| ---------------------------- | ---------------------------------------------- |
| real node (portless bridge)  | 198.18.255.1, on `wi-node0`                    |
| real node's pods (bridge)    | 198.18.0.0/24, gateway 198.18.0.1 on `wi-cni0` |
| kwok's fake pods             | 198.18.128.0/17 (never answer; blackholed)     |
| Services                     | 198.19.0.0/16; the `kubernetes` one 198.19.0.1 |
| cluster DNS (CoreDNS)        | 198.18.255.1:53                                |
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from collections.abc import Sequence

log = logging.getLogger("wasminfer.e2e.cluster")

NODE_NAME = "real-1"
TEST_RANGE = "198.18.0.0/15"
NODE_IP = "198.18.255.1"
NODE_LINK = "wi-node0"
POD_SUBNET = "198.18.0.0/24"
POD_GATEWAY = "198.18.0.1"
BRIDGE = "wi-cni0"
FAKE_POD_CIDR = "198.18.128.0/17"
SERVICE_CIDR = "198.19.0.0/16"
SERVICE_FIRST_IP = "198.19.0.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "wasminfer-e2e"
GUARD_CHAIN = "WASMINFER-E2E"

for _net in (POD_SUBNET, FAKE_POD_CIDR, SERVICE_CIDR, f"{NODE_IP}/32"):
    assert ipaddress.ip_network(_net).subnet_of(ipaddress.ip_network(TEST_RANGE))  # type: ignore[arg-type]


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _link_exists(name: str) -> bool:
    return _run("ip", "link", "show", name, check=False).returncode == 0


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("iptables", "-w", "5", *args, check=check)


def _guard_rules() -> Sequence[tuple[str, ...]]:
    return (
        # Pods may talk to each other and to the host, never through the host to anywhere else.
        ("-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"),
    )


def setup() -> None:
    """The node's address, the routes of the test range and the forward guard. Idempotent."""
    if not _link_exists(NODE_LINK):
        # A bridge without ports does what a dummy interface would (holds an address, forwards
        # nothing), and works on kernels built without the dummy driver, as these VMs' are.
        _run("ip", "link", "add", NODE_LINK, "type", "bridge")
    _run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_LINK)
    _run("ip", "link", "set", NODE_LINK, "up")
    # More specific routes win: the bridge's /24 (added by the CNI plugin) and the Service range,
    # which the host reaches through kube-proxy's DNAT; everything else in the range goes nowhere.
    _run("ip", "route", "replace", "blackhole", TEST_RANGE)
    _run("ip", "route", "replace", SERVICE_CIDR, "dev", NODE_LINK, "src", NODE_IP)
    if _iptables("-n", "-L", GUARD_CHAIN, check=False).returncode != 0:
        _iptables("-N", GUARD_CHAIN)
    _iptables("-F", GUARD_CHAIN)
    for rule in _guard_rules():
        _iptables("-A", GUARD_CHAIN, *rule)
    if _iptables("-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode != 0:
        _iptables("-I", "FORWARD", "1", "-j", GUARD_CHAIN)
    log.info("host network: node %s on %s, test range %s blackholed", NODE_IP, NODE_LINK, TEST_RANGE)


def teardown() -> list[str]:
    """Removes what `setup` and the CNI bridge added. Returns what could not be removed."""
    problems: list[str] = []
    for link in (BRIDGE, NODE_LINK):
        if _link_exists(link):
            result = _run("ip", "link", "delete", link, check=False)
            if result.returncode != 0:
                problems.append(f"link {link}: {result.stderr.strip()}")
    for route in (("blackhole", TEST_RANGE), (SERVICE_CIDR,)):
        _run("ip", "route", "delete", *route, check=False)
    while _iptables("-D", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode == 0:
        pass
    if _iptables("-n", "-L", GUARD_CHAIN, check=False).returncode == 0:
        _iptables("-F", GUARD_CHAIN, check=False)
        _iptables("-X", GUARD_CHAIN, check=False)
    return problems


def leftovers() -> list[str]:
    """What of the node's network is still on the host (empty after a clean teardown)."""
    found = [f"link {link}" for link in (BRIDGE, NODE_LINK) if _link_exists(link)]
    routes = _run("ip", "route", "show", check=False).stdout
    found += [f"route {line.strip()}" for line in routes.splitlines() if "198.18." in line or "198.19." in line]
    rules = _run("iptables-save", check=False).stdout
    found += [f"iptables: {line}" for line in rules.splitlines() if GUARD_CHAIN in line or "KUBE-" in line]
    return found
