"""Where a test cluster keeps its files, and the state file that lets `down` (or the next `up`,
after a crash) find and stop every process of a cluster and remove its data folder."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel

from . import processes

KEEP_LOG_RUNS = 20


def cache_home(part: str, override_variable: str) -> Path:
    """Where one part of the test tooling keeps its cache: $override_variable, else
    $XDG_CACHE_HOME (or ~/.cache)/wasminfer/<part>."""
    override = os.environ.get(override_variable)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "wasminfer" / part


def cache_root() -> Path:
    """Same rule as e2e/cluster/build: WASMINFER_CLUSTER_CACHE, else ~/.cache/wasminfer/cluster."""
    return cache_home("cluster", "WASMINFER_CLUSTER_CACHE")


def runs_dir() -> Path:
    return cache_root() / "runs"


def logs_root() -> Path:
    return cache_root() / "logs"


class Process(BaseModel):
    component: str
    pid: int
    exe: str
    log: str
    ports: list[int] = []


class ClusterState(BaseModel):
    name: str
    # The process the cluster belongs to (a test run), with its start time so a reused pid is not
    # mistaken for it. None for a cluster started by hand, which lives until `down`.
    owner_pid: int | None = None
    owner_start: int | None = None
    data_dir: str
    log_dir: str
    bin_dir: str
    # A real node (kubelet, containerd) runs beside the fake fleet; `down` cleans the host after it.
    real_node: bool = False
    # The images the real node was given (name -> reference), as they were when it started.
    images: dict[str, str] = {}
    kubeconfig: str = ""
    server: str = ""
    # The OCI registry beside the control plane (TLS, basic auth): its folder holds its CA and login.
    registry_dir: str = ""
    processes: list[Process] = []

    def owner_alive(self) -> bool:
        if self.owner_pid is None:
            return True
        return processes.start_time(self.owner_pid) == self.owner_start and processes.is_running(
            self.owner_pid
        )

    def dead_components(self) -> list[Process]:
        return [p for p in self.processes if not processes.is_running(p.pid, p.exe)]


def state_path(name: str) -> Path:
    return runs_dir() / f"{name}.json"


def save(state: ClusterState) -> None:
    path = state_path(state.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


def load(name: str) -> ClusterState | None:
    path = state_path(name)
    if not path.exists():
        return None
    return ClusterState.model_validate_json(path.read_text())


def remove(name: str) -> None:
    state_path(name).unlink(missing_ok=True)


def all_states() -> list[ClusterState]:
    if not runs_dir().is_dir():
        return []
    return [
        ClusterState.model_validate_json(p.read_text()) for p in sorted(runs_dir().glob("*.json"))
    ]


def new_log_dir(name: str) -> Path:
    """A fresh folder for this run's component logs; only the newest runs (and those of clusters
    still recorded as running) are kept."""
    root = logs_root()
    root.mkdir(parents=True, exist_ok=True)
    in_use = {Path(s.log_dir) for s in all_states()}
    runs = sorted((p for p in root.iterdir() if p not in in_use), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - (KEEP_LOG_RUNS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    path, n = root / stem, 1
    while path.exists():
        n += 1
        path = root / f"{stem}.{n}"
    path.mkdir()
    return path
