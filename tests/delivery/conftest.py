"""Fixtures for the delivery checks: the pinned helm from the test control plane's build, and the
chart rendered with it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "wasminfer"
BUILD = REPO / "e2e" / "cluster" / "build"


@pytest.fixture(scope="session")
def helm_bin(request: pytest.FixtureRequest) -> Path:
    """helm from e2e/cluster/build (the same pinned binary the e2e tests use), built if missing."""
    found = subprocess.run(["bash", str(BUILD), "--bin-dir"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        capture: Any = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\nhelm is not built yet; building the pinned tools (bash e2e/cluster/build)", flush=True)
            found = subprocess.run(["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=False)
    lines = found.stdout.strip().splitlines()
    if found.returncode != 0 or not lines:
        pytest.fail(f"no helm binary: `bash {BUILD.relative_to(REPO)}` failed (it needs Go >= 1.24); see its messages")
    helm = Path(lines[-1]) / "helm"
    if not helm.is_file():
        pytest.fail(f"{helm} is missing: rebuild with `bash {BUILD.relative_to(REPO)} --force`")
    return helm


HelmRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> HelmRun:
    """Runs helm with a private home (no repositories or plugins of the user leak in)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(helm_bin), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: HelmRun) -> Render:
    """`helm template` of the chart with --set/--values arguments; returns the rendered objects."""

    def run(*args: str, namespace: str = "wasminfer-system", release: str = "wasminfer") -> list[dict[str, Any]]:
        out = helm("template", release, str(CHART), "--namespace", namespace, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    return run
