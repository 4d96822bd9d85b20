"""Bring-up and tear-down under faults, with the real binaries: a port taken meanwhile, a component
that dies, a run killed halfway. Each builds its own small cluster next to the session one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import controlplane, processes, state
from cluster.components import start_etcd
from cluster.launcher import ClusterError, Launcher, check_alive
from cluster.state import ClusterState

pytestmark = pytest.mark.cluster

E2E_DIR = Path(__file__).resolve().parent


def etcd_only(name: str, bin_dir: Path) -> tuple[ClusterState, Path]:
    cluster = controlplane.new_cluster(name, bin_dir)
    return cluster, Path(cluster.data_dir)


@pytest.fixture
def listening_socket() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_port_taken_meanwhile_is_retried_on_a_new_port(cluster_bin_dir: Path, listening_socket: int) -> None:
    cluster, data_dir = etcd_only(f"fault-port-{os.getpid()}", cluster_bin_dir)
    picks = iter([listening_socket])
    launcher = Launcher(
        cluster, die_with_parent=True, pick_port=lambda: next(picks, None) or processes.free_port()
    )
    try:
        url = start_etcd(launcher, data_dir)
        assert processes.http_ok(f"{url}/health")
        (etcd,) = cluster.processes
        assert listening_socket not in etcd.ports
        assert "address already in use" in Path(etcd.log).read_text()
    finally:
        problems = controlplane.teardown(cluster)
    assert problems == []
    assert not data_dir.exists() and state.load(cluster.name) is None
    assert not processes.is_running(etcd.pid)


def test_component_dying_at_start_is_named_with_its_log(cluster_bin_dir: Path) -> None:
    name = f"fault-dies-{os.getpid()}"
    with pytest.raises(ClusterError) as failed:
        controlplane.up(
            name,
            bin_dir=cluster_bin_dir,
            nodes=None,
            extra_args={"kube-apiserver": ["--no-such-flag=1"]},
        )
    message = str(failed.value)
    log_file = next(Path(p) for p in message.split() if p.endswith("kube-apiserver.log"))
    assert message.startswith("kube-apiserver exited with code")
    assert "unknown flag: --no-such-flag" in message  # the log's tail is quoted
    assert log_file.is_file()
    # What had started (etcd) is stopped and nothing of the cluster is left but its logs.
    assert state.load(name) is None
    assert not list(Path(tempfile.gettempdir()).glob(f"wasminfer-cluster-{name}-*"))


def test_dead_component_is_reported_with_its_log(cluster_bin_dir: Path) -> None:
    cluster, data_dir = etcd_only(f"fault-dead-{os.getpid()}", cluster_bin_dir)
    launcher = Launcher(cluster, die_with_parent=True)
    try:
        start_etcd(launcher, data_dir)
        (etcd,) = cluster.processes
        os.kill(etcd.pid, signal.SIGKILL)
        while processes.is_running(etcd.pid):
            time.sleep(0.05)
        with pytest.raises(ClusterError) as reported:
            check_alive(cluster)
        assert str(reported.value).startswith(
            f"etcd (pid {etcd.pid}) of cluster {cluster.name!r} is no longer running; log: {etcd.log}"
        )
    finally:
        assert controlplane.teardown(cluster) == []


CRASHING_RUN = """
import sys, time
from pathlib import Path
from cluster import controlplane
from cluster.components import start_etcd
from cluster.launcher import Launcher
cluster = controlplane.new_cluster(sys.argv[1], Path(sys.argv[2]))
# As a hand-started `up` halfway through: its components are meant to outlive it.
start_etcd(Launcher(cluster, die_with_parent=False), Path(cluster.data_dir))
print(cluster.processes[0].pid, flush=True)
time.sleep(600)
"""


def test_cluster_of_a_killed_run_is_cleaned_by_the_next_up(cluster_bin_dir: Path) -> None:
    name = f"fault-killed-{os.getpid()}"
    run = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN, name, str(cluster_bin_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(E2E_DIR)},
    )
    assert run.stdout is not None
    etcd_pid = int(run.stdout.readline())
    run.kill()
    run.wait()
    left = state.load(name)
    assert left is not None and processes.is_running(etcd_pid), "the killed run should leave etcd behind"

    cleaned = controlplane.sweep_stale()  # what every `up` does first

    assert any(name in line and "ended without stopping it" in line for line in cleaned), cleaned
    assert not processes.is_running(etcd_pid)
    assert not Path(left.data_dir).exists()
    assert state.load(name) is None
    assert all(processes.port_is_free(port) for port in left.processes[0].ports)
