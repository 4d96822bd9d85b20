"""A real OCI registry (distribution, TLS from its own CA, htpasswd login) for this test session, the
reference cosign and oras CLIs, and signing keys: ours (PEM) and cosign's own key pair."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wasminfer_runtime.supply.oci import OciClient, RegistryAccess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e"))  # the test cluster's package, where the registry launcher lives
sys.path.insert(0, str(Path(__file__).resolve().parent))  # signing.py

from cluster import binaries  # noqa: E402
from cluster.registry import RegistryFiles, RunningRegistry, start_registry  # noqa: E402
from local_sigstore import LocalSigstore  # noqa: E402
from signing import COSIGN_PASSWORD, Cosign, KeyPair, pem_pair  # noqa: E402


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    found = binaries.built_bin_dir()
    if found is None:
        pytest.fail("the registry, oras and cosign are not built: run `bash e2e/cluster/build` (or `make cluster-binaries`)")
    return found


@pytest.fixture(scope="session")
def registry(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    running = start_registry(tmp_path_factory.mktemp("registry"), bin_dir)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def reg(registry: RunningRegistry) -> RegistryFiles:
    return registry.files


@pytest.fixture(scope="session")
def registry_storage(reg: RegistryFiles) -> Path:
    """The registry's own files: a test changes a blob there to play a registry that serves other bytes."""
    return reg.storage / "docker" / "registry" / "v2"


@pytest.fixture
def client(reg: RegistryFiles) -> OciClient:
    return OciClient(RegistryAccess(ca_file=reg.ca_file, auth_file=reg.docker_config, backoff_seconds=0.05))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """Our signing key (PEM, as `wasminfer sign` and `push --sign-key` take it)."""
    return pem_pair(tmp_path_factory.mktemp("keys"), "release")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key nobody trusts."""
    return pem_pair(tmp_path_factory.mktemp("other-keys"), "stranger")


@pytest.fixture(scope="session")
def cosign(bin_dir: Path, reg: RegistryFiles, tmp_path_factory: pytest.TempPathFactory) -> Cosign:
    """The reference cosign CLI, with its own key pair and the registry's login."""
    home = tmp_path_factory.mktemp("cosign")
    docker = home / "docker"
    docker.mkdir()
    (docker / "config.json").write_bytes(reg.docker_config.read_bytes())
    tool = Cosign(bin_dir / "cosign", reg.ca_file, docker, home / "cosign.key", home / "cosign.pub")
    subprocess.run([str(tool.binary), "generate-key-pair"], cwd=home, check=True, capture_output=True,
                   env={**os.environ, "COSIGN_PASSWORD": COSIGN_PASSWORD})
    return tool


@pytest.fixture(scope="module")
def sigstore() -> LocalSigstore:
    """A Sigstore of the test's own (local_sigstore.py): its CA, CT log and Rekor."""
    return LocalSigstore()


@pytest.fixture(scope="module")
def root(sigstore: LocalSigstore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That Sigstore's trusted_root.json."""
    return sigstore.trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")
