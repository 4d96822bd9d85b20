"""Memory caps of model hosts: a cgroup where the runtime may create one, RLIMIT_AS otherwise.

- cgroup v2: a child group under the runtime's own, when its `memory` controller is enabled for
  children (a delegated subtree, a systemd unit with Delegate=yes). Counts RSS, page cache and
  the tensor arenas; an overrun is an OOM kill of that host only.
- cgroup v1: a child of the runtime's memory cgroup, when that hierarchy is writable (a root
  process on a v1 host).
- RLIMIT_AS otherwise (the usual case in a container, where /sys/fs/cgroup is read-only): the
  host's address space after its backends are imported, plus the cap, plus room for thread
  stacks. An overrun is a failed allocation: the load or inference fails, the host lives.

The runtime decides where (`plan`); the host joins its cgroup before it imports anything
(`MemoryCap.join`), or sets RLIMIT_AS once its backends are imported (`apply_rlimit`); the runtime
removes the group when the host is gone.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
# What a host is charged before any model: measured 15-17 MiB (its Python and the backends'
# libraries are mostly file pages cached before it joins); loading a backend's plugin on the first
# compile adds page cache, which the kernel reclaims before it kills anything.
CGROUP_BASELINE_BYTES = 64 * _MIB
MALLOC_ARENAS = "2"  # glibc reserves 64 MiB of address space per arena; RLIMIT_AS counts reservations


def rlimit_headroom() -> int:
    """Address space a host reserves without using it: thread stacks and malloc arenas."""
    threads = 2 * (os.cpu_count() or 1) + 16
    return threads * 8 * _MIB + int(MALLOC_ARENAS) * 64 * _MIB + 128 * _MIB


@dataclass(frozen=True)
class MemoryCap:
    kind: str  # "cgroup-v2", "cgroup-v1", "rlimit" or "none"
    limit: int  # bytes the models may use
    path: Path | None = None  # the cgroup directory

    @classmethod
    def parse(cls, spec: str, limit: int) -> MemoryCap:
        kind, _, path = spec.partition(":")
        return cls(kind, limit, Path(path) if path else None)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind

    def describe(self) -> str:
        if self.kind == "none":
            return "no memory cap of its own"
        how = {"cgroup-v2": "cgroup v2 memory.max", "cgroup-v1": "cgroup v1 memory.limit_in_bytes",
               "rlimit": "RLIMIT_AS"}[self.kind]
        return f"{self.limit // _MIB} MiB memory cap ({how})"

    def join(self) -> None:
        """Enter the cgroup, first thing: memory charged before joining would stay outside it."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def apply_rlimit(self, headroom: int) -> None:
        """Set RLIMIT_AS once the backends are imported: their address space is the baseline."""
        if self.kind == "rlimit":
            limit = _address_space() + self.limit + headroom
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def remove(self) -> None:
        """Delete the host's cgroup once the host has exited (it must be empty)."""
        if self.path is None:
            return
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass  # removed already
        except OSError as err:
            log.warning("cannot remove cgroup %s: %s", self.path, err)


def plan(name: str, limit: int) -> MemoryCap:
    """The cap a new host gets: a fresh cgroup when possible, RLIMIT_AS otherwise."""
    if limit <= 0:
        return MemoryCap("none", 0)
    group = _own_memory_cgroup()
    if group is not None:
        kind, parent = group
        path = parent / f"wasminfer-model-{name}-{os.getpid()}"
        try:
            if path.exists():
                path.rmdir()
            path.mkdir()
            if kind == "cgroup-v2":
                (path / "memory.max").write_text(str(limit + CGROUP_BASELINE_BYTES))
                swap = path / "memory.swap.max"  # without this an overrun swaps instead of failing
                if swap.exists():
                    swap.write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(limit + CGROUP_BASELINE_BYTES))
            return MemoryCap(kind, limit, path)
        except OSError as err:
            log.info("no cgroup for model host %s (%s); using RLIMIT_AS", name, err)
            _rmdir_quietly(path)
    return MemoryCap("rlimit", limit)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _own_memory_cgroup() -> tuple[str, Path] | None:
    """(kind, directory) of this process's memory cgroup, when children can be created there."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = _mountpoint("cgroup", "memory")
            if base is not None:
                d = base / rel.lstrip("/")
                if (d / "memory.limit_in_bytes").exists() and os.access(d, os.W_OK):
                    return "cgroup-v1", d
    for line in lines:
        if line.startswith("0::"):
            base = _mountpoint("cgroup2", None)
            if base is None:
                return None
            d = base / line[3:].lstrip("/")
            try:
                enabled = (d / "cgroup.subtree_control").read_text().split()
            except OSError:
                return None
            if "memory" in enabled and os.access(d, os.W_OK):
                return "cgroup-v2", d
    return None


def _mountpoint(fstype: str, option: str | None) -> Path | None:
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for m in mounts:
        left, _, right = m.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] != fstype:
            continue
        if option is None or option in fields[2].split(","):
            return Path(left.split()[4])
    return None


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0
