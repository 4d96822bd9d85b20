"""Finding (or building) the pinned control-plane binaries through e2e/cluster/build."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parent / "build"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "kubelet",
    "kube-proxy",
    "crictl",
    "coredns",
    "registry",
    "oras",
    "cosign",
)


class BuildError(RuntimeError):
    pass


def built_bin_dir() -> Path | None:
    """The bin folder when a complete build is in the cache, else None (nothing is built)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--bin-dir"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip().splitlines()[-1])


def ensure_built() -> Path:
    """Builds whatever is missing (progress goes to this process's stderr) and returns the bin folder."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise BuildError(
            f"building the test control plane failed (exit {result.returncode}); the messages above "
            f"say which component; retry with: bash {BUILD_SCRIPT.relative_to(BUILD_SCRIPT.parents[2])}"
        )
    bin_dir = Path(lines[-1])
    missing = [c for c in COMPONENTS if not (bin_dir / c).is_file()]
    if missing:
        raise BuildError(f"{bin_dir} lacks {', '.join(missing)}; rebuild: bash e2e/cluster/build --force")
    return bin_dir
