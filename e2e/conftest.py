"""Fixtures for tests against the real test control plane (see e2e/README.md).

`cluster` brings one control plane up per test session and down at the end, also when tests fail;
its processes die with the test run even if the run is killed. `namespace` gives each test a fresh
namespace. Set WASMINFER_E2E_CLUSTER=<name> to run against a cluster started by hand with
`e2e/cluster/up --name <name>` instead (it is left running).

The session's cluster has a real node (kubelet + containerd running the project's images, built
first if missing), which needs root: WASMINFER_E2E_REAL_NODE=0 leaves it out, and the tests that
need it then fail saying so."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import binaries, controlplane, images, node, state
from kube import Cluster

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under e2e/ needs the control plane: `-m "not cluster"` leaves all of it out.
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def _bin_dir(request: pytest.FixtureRequest) -> Path:
    built = binaries.built_bin_dir()
    if built is not None:
        return built
    # A cold build takes tens of minutes: show its progress instead of capturing it.
    capture: Any = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\nthe test control plane is not built yet; building it (bash e2e/cluster/build)", flush=True)
        return binaries.ensure_built()


@pytest.fixture(scope="session")
def cluster_bin_dir(request: pytest.FixtureRequest) -> Path:
    """The folder with the pinned etcd, kube-*, kubectl, kwok and helm binaries (built if missing)."""
    return _bin_dir(request)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, cluster_bin_dir: Path) -> Iterator[Cluster]:
    reuse = os.environ.get("WASMINFER_E2E_CLUSTER")
    if reuse:
        running = state.load(reuse)
        if running is None:
            raise controlplane.ClusterError(
                f"WASMINFER_E2E_CLUSTER={reuse}, but no such cluster is running: start it with "
                f"e2e/cluster/up --name {reuse}, or unset the variable"
            )
        attached = Cluster.from_state(running)
        attached.check_health()
        yield attached
        return
    real_node = os.environ.get("WASMINFER_E2E_REAL_NODE", "1") != "0"
    if real_node:
        node.check_tools()  # before building images, which needs the same root and packages
    if real_node and images.built(node.IMAGES) is None:
        # A cold image build takes minutes: show its progress instead of capturing it.
        capture: Any = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\nthe container images are not built yet; building them (make images)", flush=True)
            images.build(node.IMAGES)
    started = controlplane.up(f"pytest-{os.getpid()}", bin_dir=cluster_bin_dir, real_node=real_node)
    try:
        yield Cluster.from_state(started)
    finally:
        controlplane.down(started.name)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    cluster.check_health()
    name = cluster.new_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)
