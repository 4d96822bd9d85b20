"""The test cluster's addresses, its real node's name, and the host network of that node.

Every address comes from 198.18.0.0/15 (RFC 2544, for benchmark tests), and a blackhole route for the
whole range makes sure nothing addressed to it ever leaves this machine: the node's bridge has no
route off the machine, pod traffic is never masqueraded, raw-table rules drop whatever pods send
outside the range and whatever reaches the range from another interface, and pods reach nothing on
this host but the cluster DNS and the API server.

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
INPUT_CHAIN = "WASMINFER-E2E-INPUT"

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


def _ensure_chain(table: str, chain: str, hook: str, rules: Sequence[tuple[str, ...]], *hook_match: str) -> None:
    """Our own chain in `table` with exactly `rules`, jumped to first from `hook`."""
    if _iptables("-t", table, "-n", "-L", chain, check=False).returncode != 0:
        _iptables("-t", table, "-N", chain)
    _iptables("-t", table, "-F", chain)
    for rule in rules:
        _iptables("-t", table, "-A", chain, *rule)
    jump = (*hook_match, "-j", chain)
    if _iptables("-t", table, "-C", hook, *jump, check=False).returncode != 0:
        _iptables("-t", table, "-I", hook, "1", *jump)


def _drop_chain(table: str, chain: str, hook: str, *hook_match: str) -> None:
    while _iptables("-t", table, "-D", hook, *hook_match, "-j", chain, check=False).returncode == 0:
        pass
    if _iptables("-t", table, "-n", "-L", chain, check=False).returncode == 0:
        _iptables("-t", table, "-F", chain, check=False)
        _iptables("-t", table, "-X", chain, check=False)


def _input_rules(ports: tuple[int, ...]) -> list[tuple[str, ...]]:
    """What pods may reach on this host: answers to what the host asked them, the cluster DNS, the API
    server and the test registry; nothing else the host listens on."""
    rules: list[tuple[str, ...]] = [
        ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
        ("-d", NODE_IP, "-p", "udp", "--dport", "53", "-j", "ACCEPT"),
        ("-d", NODE_IP, "-p", "tcp", "--dport", "53", "-j", "ACCEPT"),
    ]
    for port in ports:
        rules.append(("-d", NODE_IP, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"))
    return [*rules, ("-j", "DROP")]


def setup() -> None:
    """The node's address, the routes of the test range and the guards. Idempotent."""
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
    # In the raw table, before kube-proxy's rules (which accept established and marked traffic in
    # FORWARD): pods send only into the test range, and nothing from another interface enters it.
    # (The host's own packets to the node's address come in on lo.)
    _ensure_chain("raw", GUARD_CHAIN, "PREROUTING", [
        ("-i", "lo", "-j", "RETURN"),
        ("-i", BRIDGE, "!", "-d", TEST_RANGE, "-j", "DROP"),
        ("-i", BRIDGE, "-j", "RETURN"),
        ("-d", TEST_RANGE, "-j", "DROP"),
        ("-s", TEST_RANGE, "-j", "DROP"),
    ])
    allow_host_ports()
    log.info("host network: node %s on %s, test range %s blackholed", NODE_IP, NODE_LINK, TEST_RANGE)


def allow_host_ports(*ports: int) -> None:
    """The pods' way into the host (mangle INPUT, where kube-proxy adds nothing): DNS, and the API
    server (and the test registry) once their ports are known."""
    _ensure_chain("mangle", INPUT_CHAIN, "INPUT", _input_rules(ports), "-i", BRIDGE)


def conflicts() -> list[str]:
    """What on this host already uses the names or addresses the node needs."""
    found = [f"link {link}" for link in (BRIDGE, NODE_LINK) if _link_exists(link)]
    for prefix in (TEST_RANGE, SERVICE_CIDR, POD_SUBNET):
        shown = _run("ip", "route", "show", "root", prefix, check=False).stdout.strip()
        found += [f"route {line}" for line in shown.splitlines()]
    return found


def teardown() -> list[str]:
    """Removes what `setup` and the CNI bridge added. Returns what could not be removed."""
    problems: list[str] = []
    for link in (BRIDGE, NODE_LINK):
        if _link_exists(link):
            result = _run("ip", "link", "delete", link, check=False)
            if result.returncode != 0:
                problems.append(f"link {link}: {result.stderr.strip()}")
    _run("ip", "route", "delete", "blackhole", TEST_RANGE, check=False)
    _run("ip", "route", "delete", SERVICE_CIDR, "dev", NODE_LINK, check=False)
    _drop_chain("raw", GUARD_CHAIN, "PREROUTING")
    _drop_chain("mangle", INPUT_CHAIN, "INPUT", "-i", BRIDGE)
    return problems


def leftovers() -> list[str]:
    """What of the node's network is still on the host (empty after a clean teardown)."""
    found = [f"link {link}" for link in (BRIDGE, NODE_LINK) if _link_exists(link)]
    if _run("ip", "route", "show", "exact", TEST_RANGE, "type", "blackhole", check=False).stdout.strip():
        found.append(f"route blackhole {TEST_RANGE}")
    for table, chain in (("raw", GUARD_CHAIN), ("mangle", INPUT_CHAIN)):
        if _iptables("-t", table, "-n", "-L", chain, check=False).returncode == 0:
            found.append(f"iptables chain {chain} in {table}")
    return found
